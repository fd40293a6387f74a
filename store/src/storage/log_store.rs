//! The Raft log in RocksDB, with group commit.
//!
//! `append` writes the entries (unsynced) and hands the completion callback to
//! one flusher thread. The flusher takes every callback waiting at that moment,
//! syncs the WAL once, and completes them all: many appends, one fsync. openraft
//! learns an entry is durable only from that callback, so nothing is
//! acknowledged before it is on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use rocksdb::{Direction, IteratorMode, WriteBatch, DB};

use super::db::{cf, io_err, CF_RAFT_LOG, CF_RAFT_META};
use crate::codec;
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
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
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
    db.flush_wal(true).map_err(io_err)
}

/// The group-commit loop: one WAL sync per burst of appends.
fn run_flusher(db: Arc<DB>, rx: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        fail::fail_point!("log-sync");
        let result = sync_wal(&db);
        if let Err(e) = &result {
            tracing::error!(error = %e, "log sync failed");
        }
        for callback in waiting {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            };
            callback.io_completed(r);
        }
    }
}

impl LogStore {
    /// Opens the log store on `db` and starts its flusher thread.
    pub fn new(db: Arc<DB>) -> io::Result<Self> {
        let (tx, rx) = mpsc::channel();
        let flusher_db = db.clone();
        std::thread::Builder::new()
            .name("ballast-log-sync".into())
            .spawn(move || run_flusher(flusher_db, rx))?;
        let mut store = LogStore {
            db,
            last_index: None,
            flusher: tx,
        };
        store.last_index = store.last_log_id()?.map(|id| id.index);
        Ok(store)
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
