//! The Raft log in RocksDB, with group commit.
//!
//! `append` writes the entries (unsynced) and hands the completion callback to
//! one flusher thread. The flusher takes every callback waiting at that moment,
//! syncs the WAL once, and completes them all: many appends, one fsync. openraft
//! learns an entry is durable only from that callback, so nothing is
//! acknowledged before it is on disk.
//!
//! The flusher owns a handle on the database, so it must be gone before the
//! database closes: it stops once the `LogStore` is dropped (which openraft
//! does when its core task ends), after it has synced and completed every
//! callback still queued, and [`LogFlusher::wait`] lets shutdown wait for that.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use crate::codec;
use crate::db::{cf, io_err, CF_RAFT_LOG, CF_RAFT_META};
use crate::metrics::Metrics;
use crate::raft::types::{Entry, LogId, TypeConfig, Vote};
use crate::raft::wire::APPEND_BATCH_BYTES;

const VOTE_KEY: &[u8] = b"vote";
const LAST_PURGED_KEY: &[u8] = b"last_purged";
const COMMITTED_KEY: &[u8] = b"committed";

/// The RocksDB-backed Raft log store.
pub struct LogStore {
    db: Arc<DB>,
    /// Index of the last entry written, to assert the log stays contiguous.
    last_index: Option<u64>,
    /// The only sender: dropping the store is what stops the flusher.
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
    handle: LogFlusher,
}

/// What the flusher thread did, reported when it has stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlusherReport {
    /// WAL syncs done.
    pub syncs: u64,
    /// Syncs that failed; their callbacks were completed with the error.
    pub failed_syncs: u64,
    /// Callbacks completed (every one handed to the flusher).
    pub callbacks: u64,
}

/// A handle on a [`LogStore`]'s flusher thread, to wait for it at shutdown.
#[derive(Clone)]
pub struct LogFlusher {
    /// Set by the thread as its last act, after it dropped its database handle.
    /// Still `None` with the sender gone means the thread panicked.
    done: tokio::sync::watch::Receiver<Option<FlusherReport>>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl LogFlusher {
    /// Waits until the flusher has stopped: the `LogStore` was dropped, every
    /// queued callback was synced and completed, and the thread no longer
    /// holds the database. `None` if the thread panicked.
    pub async fn wait(&self) -> Option<FlusherReport> {
        let mut done = self.done.clone();
        let report = match done.wait_for(Option::is_some).await {
            Ok(report) => *report,
            Err(_) => None,
        };
        // The thread has nothing left to do but return: joining is immediate.
        if !self.join_thread() {
            return None;
        }
        report
    }

    /// Blocks until the flusher thread has ended (the `LogStore` must have
    /// been dropped, or this waits forever): for synchronous drops in tests,
    /// so that no thread still holds (or is closing) a database when its
    /// directory is removed or the process exits. `None` if the thread
    /// panicked.
    #[cfg(test)]
    pub fn join(&self) -> Option<FlusherReport> {
        if !self.join_thread() {
            return None;
        }
        *self.done.borrow()
    }

    /// Joins the thread (once; later calls return at once). False if it
    /// panicked.
    fn join_thread(&self) -> bool {
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        thread.is_none_or(|t| t.join().is_ok())
    }
}

/// Reads log entries and the vote; cheap to clone.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<DB>,
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn entry_index(raw: &[u8]) -> io::Result<u64> {
    let bytes: [u8; 8] = raw
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "malformed log key"))?;
    Ok(u64::from_be_bytes(bytes))
}

fn get_meta<T: serde::de::DeserializeOwned>(db: &DB, key: &[u8]) -> io::Result<Option<T>> {
    match db.get_cf(cf(db, CF_RAFT_META)?, key).map_err(io_err)? {
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Syncs the shared WAL.
fn sync_wal(db: &DB) -> io::Result<()> {
    crate::db::sync_wal(db).map_err(io_err)
}

/// The group-commit loop: one WAL sync per burst of appends. Runs until every
/// sender is gone; `recv` hands out what is still queued before it reports
/// that, so no callback is ever dropped uncompleted.
fn run_flusher(
    db: Arc<DB>,
    rx: mpsc::Receiver<IOFlushed<TypeConfig>>,
    metrics: Arc<Metrics>,
) -> FlusherReport {
    let mut report = FlusherReport::default();
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        fail::fail_point!("log-sync");
        let started = std::time::Instant::now();
        let result = sync_wal(&db);
        metrics
            .wal_sync_seconds
            .observe(started.elapsed().as_secs_f64());
        report.syncs += 1;
        if let Err(e) = &result {
            report.failed_syncs += 1;
            metrics.wal_sync_failures.inc();
            tracing::error!(error = %e, "log sync failed");
        }
        for callback in waiting {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            callback.io_completed(r);
            report.callbacks += 1;
        }
    }
    report
}

impl LogStore {
    /// Opens the log store on `db` and starts its flusher thread.
    #[cfg(test)]
    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        Self::with_metrics(db, Arc::new(Metrics::default()))
    }

    /// Opens the log store on `db`, timing its WAL syncs into `metrics`.
    pub fn with_metrics(db: Arc<DB>, metrics: Arc<Metrics>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let (done_tx, done) = tokio::sync::watch::channel(None);
        let flusher_db = db.clone();
        let thread = std::thread::Builder::new()
            .name("ballast-log-sync".into())
            .spawn(move || {
                let report = run_flusher(flusher_db, rx, metrics);
                // `run_flusher` has dropped its database handle by now.
                done_tx.send_replace(Some(report));
            })?;
        let mut store = LogStore {
            db,
            last_index: None,
            flusher: tx,
            handle: LogFlusher {
                done,
                thread: Arc::new(Mutex::new(Some(thread))),
            },
        };
        store.last_index = store.last_log_id()?.map(|id| id.index);
        Ok(store)
    }

    /// A handle to wait for the flusher thread once this store is dropped.
    pub fn flusher(&self) -> LogFlusher {
        self.handle.clone()
    }

    fn last_log_id(&self) -> io::Result<Option<LogId>> {
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        let last = match self.db.iterator_cf(log_cf, IteratorMode::End).next() {
            Some(item) => {
                let (_, value) = item.map_err(io_err)?;
                Some(codec::decode::<Entry>(&value)?.log_id)
            }
            None => None,
        };
        match last {
            Some(id) => Ok(Some(id)),
            None => get_meta(&self.db, LAST_PURGED_KEY),
        }
    }

    fn put_meta<T: serde::Serialize>(&self, key: &[u8], value: &T) -> io::Result<()> {
        let meta = cf(&self.db, CF_RAFT_META)?;
        self.db
            .put_cf(meta, key, codec::encode(value)?)
            .map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        let from = index_key(start);
        let mut out = Vec::new();
        for item in self
            .db
            .iterator_cf(log_cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(io_err)?;
            let index = entry_index(&key)?;
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = codec::decode(&value)?;
            if entry.log_id.index != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "log entry stored at {index} has index {}",
                        entry.log_id.index
                    ),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        get_meta(&self.db, VOTE_KEY)
    }

    /// Entries from `start` for one AppendEntries message: at most
    /// [`APPEND_BATCH_BYTES`] of them, but always at least one, so that an
    /// entry of the largest allowed size travels alone and every message fits
    /// the peer frame cap.
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        let from = index_key(start);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for item in self
            .db
            .iterator_cf(log_cf, IteratorMode::From(&from, Direction::Forward))
        {
            let (key, value) = item.map_err(io_err)?;
            let index = entry_index(&key)?;
            if index >= end {
                break;
            }
            // Entries purged before `start` may be missing at the beginning;
            // a hole after the first entry found is corruption.
            if let Some(prev) = out.last().map(|e: &Entry| e.log_id.index) {
                if index != prev + 1 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("log hole: entry {index} follows entry {prev}"),
                    ));
                }
            }
            if !out.is_empty() && bytes + value.len() > APPEND_BATCH_BYTES {
                break;
            }
            bytes += value.len();
            out.push(codec::decode::<Entry>(&value)?);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        LogReader {
            db: self.db.clone(),
        }
        .try_get_log_entries(range)
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        get_meta(&self.db, VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged_log_id: Option<LogId> = get_meta(&self.db, LAST_PURGED_KEY)?;
        let last_log_id = self.last_log_id()?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            db: self.db.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.put_meta(VOTE_KEY, vote)?;
        // A vote must be durable before it is acted upon.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || sync_wal(&db))
            .await
            .map_err(io::Error::other)?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Not synced: openraft treats it as a hint that speeds up restart.
        self.put_meta(COMMITTED_KEY, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(get_meta::<Option<LogId>>(&self.db, COMMITTED_KEY)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        let mut last = self.last_index;
        for entry in entries {
            let index = entry.log_id.index;
            if let Some(prev) = last {
                if index != prev + 1 {
                    return Err(io::Error::other(format!(
                        "non-contiguous append: entry {index} after {prev}"
                    )));
                }
            }
            last = Some(index);
            batch.put_cf(log_cf, index_key(index), codec::encode(&entry)?);
        }
        // Written before returning so that readers see the entries at once;
        // made durable by the flusher, which then completes `callback`.
        self.db.write(batch).map_err(io_err)?;
        self.last_index = last;
        self.flusher
            .send(callback)
            .map_err(|_| io::Error::other("log flusher thread has stopped"))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.as_ref().map_or(0, |id| id.index + 1);
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        self.db
            .delete_range_cf(log_cf, index_key(from), index_key(u64::MAX))
            .map_err(io_err)?;
        // `delete_range` leaves the key u64::MAX itself; it can never be used.
        self.last_index = match last_log_id {
            Some(id) => Some(id.index),
            None => get_meta::<LogId>(&self.db, LAST_PURGED_KEY)?.map(|id| id.index),
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Persist last_purged first (in the same atomic write as the delete):
        // a restart must never see a gap without knowing it was purged.
        let meta = cf(&self.db, CF_RAFT_META)?;
        let log_cf = cf(&self.db, CF_RAFT_LOG)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(meta, LAST_PURGED_KEY, codec::encode(&log_id)?);
        batch.delete_range_cf(log_cf, index_key(0), index_key(log_id.index + 1));
        self.db.write(batch).map_err(io_err)?;
        if self.last_index.is_none_or(|last| last < log_id.index) {
            self.last_index = Some(log_id.index);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::blank_ent;
    use openraft::type_config::TypeConfigExt;

    use super::*;
    use crate::db;

    /// Dropping the store stops the flusher, but only after it has synced and
    /// completed every callback still queued; then nothing but the caller
    /// holds the database.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_store_completes_every_callback_and_releases_the_db() -> io::Result<()> {
        let dir = tempfile::TempDir::new()?;
        let db = db::open(&dir.path().join("db")).map_err(io_err)?;
        let mut store = LogStore::new(db.clone())?;
        let flusher = store.flusher();
        let mut acks = Vec::new();
        for index in 1..=50 {
            let (tx, rx) = TypeConfig::oneshot();
            store
                .append(
                    [blank_ent::<TypeConfig>(1, 1, index)],
                    IOFlushed::signal(tx),
                )
                .await?;
            acks.push(rx);
        }
        drop(store);
        let report = flusher
            .wait()
            .await
            .ok_or_else(|| io::Error::other("the flusher thread panicked"))?;
        assert_eq!(report.callbacks, 50);
        assert_eq!(report.failed_syncs, 0);
        assert!(report.syncs >= 1);
        for ack in acks {
            ack.await.map_err(io::Error::other)??;
        }
        assert_eq!(
            Arc::strong_count(&db),
            1,
            "the flusher released the database"
        );
        Ok(())
    }
}
