//! The Raft state machine: applies committed entries to the MVCC key space in
//! RocksDB, builds snapshots and installs them.
//!
//! Each `apply` call writes all of its entries' changes, the last applied log
//! id, the membership and the MVCC counters in one atomic RocksDB write, so the
//! applied state on disk always matches the data on disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{IteratorMode, WriteBatch, DB};
use tokio::sync::watch;

use super::snapshot::{self, SnapshotFile, SnapshotHeader};
use crate::codec;
use crate::db::{cf, io_err, CF_SESSIONS, CF_SM_META, SM_DATA_CFS};
use crate::kv::alarms::{self, SharedAlarms};
use crate::kv::auth::{self, SharedAuth};
use crate::kv::gate::InstallGate;
use crate::kv::index::KeyIndex;
use crate::kv::mvcc::{self, ApplyBatch, MvccState, MVCC_STATE_KEY};
use crate::kv::sessions::{self, SessionTable};
use crate::kv::types::CommandResponse;
use crate::kv::Applied;
use crate::metrics::Metrics;
use crate::raft::types::{LogId, SnapshotMeta, StoredMembership, TypeConfig};

const APPLIED_KEY: &[u8] = b"applied";
/// Present while a snapshot is being installed; found at open, it means the
/// install was interrupted and the state machine must be rebuilt.
const INSTALLING_KEY: &[u8] = b"installing";
/// How often the current snapshot is looked up again when a build replaced it
/// meanwhile.
const SNAPSHOT_LOOKUP_ATTEMPTS: usize = 5;
/// Records per RocksDB write when loading a snapshot.
const INSTALL_BATCH_RECORDS: usize = 4096;

/// The RocksDB-backed state machine.
pub struct StateMachine {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
    /// Held while a snapshot is built, installed or looked up, so that these
    /// never remove each other's files or read a half-installed state.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    gate: InstallGate,
    applied: Option<LogId>,
    membership: StoredMembership,
    mvcc: MvccState,
    /// Every live key's revisions, version and digest, so writes need not
    /// read them from RocksDB; rebuilt from the `kv` column family at open
    /// and after an install, updated after each applied batch is written.
    index: KeyIndex,
    /// The client session table; its rows are written with every applied
    /// batch that changes it.
    sessions: SessionTable,
    /// Tokens and roles, shared with the HTTP layer, which checks tokens
    /// against it; updated as entries apply and reloaded after an install.
    auth: SharedAuth,
    /// Active alarms, shared with the request paths, which refuse writes
    /// that add data while a `nospace` alarm is active.
    alarms: SharedAlarms,
    applied_tx: watch::Sender<Applied>,
    /// Apply latency and snapshot counts go here.
    metrics: Arc<Metrics>,
    /// The data directory's free space: when a write fails for lack of
    /// space, the reserve file is deleted so the database can flush.
    space: Option<Arc<super::space::DiskSpace>>,
}

/// Builds snapshot files from a consistent RocksDB snapshot.
pub struct SnapshotBuilder {
    db: Arc<DB>,
    snapshot_dir: PathBuf,
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    metrics: Arc<Metrics>,
}

fn snapshot_path(dir: &Path, last: &Option<LogId>) -> PathBuf {
    let n = last.as_ref().map_or(0, |id| id.index + 1);
    dir.join(format!("snap-{n:020}.snap"))
}

fn snapshot_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "snap"))
        .collect();
    files.sort();
    Ok(files)
}

/// Removes every snapshot file but `keep`, and leftover temporary files.
fn remove_other_snapshots(dir: &Path, keep: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let is_snap = path.extension().is_some_and(|x| x == "snap" || x == "tmp");
        if is_snap && path != keep {
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove old snapshot");
            }
        }
    }
    Ok(())
}

fn load_applied(db: &DB) -> io::Result<(Option<LogId>, StoredMembership)> {
    match db
        .get_cf(cf(db, CF_SM_META)?, APPLIED_KEY)
        .map_err(io_err)?
    {
        Some(bytes) => Ok(codec::decode(&bytes)?),
        None => Ok((None, StoredMembership::default())),
    }
}

/// Deletes everything in the state machine's column families and metadata.
fn clear_state(db: &DB) -> io::Result<()> {
    for name in SM_DATA_CFS.iter().chain([CF_SM_META].iter()) {
        let handle = cf(db, name)?;
        let first = db.iterator_cf(handle, IteratorMode::Start).next();
        let last = db.iterator_cf(handle, IteratorMode::End).next();
        if let (Some(first), Some(last)) = (first, last) {
            let (first, _) = first.map_err(io_err)?;
            let (last, _) = last.map_err(io_err)?;
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(handle, &first, &last);
            batch.delete_cf(handle, &last);
            db.write(batch).map_err(io_err)?;
        }
    }
    Ok(())
}

impl StateMachine {
    /// Opens the state machine on `db`, keeping snapshot files in `snapshot_dir`.
    /// Finishes the clean-up of an interrupted snapshot install.
    pub fn open(db: Arc<DB>, snapshot_dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&snapshot_dir)?;
        // Partial files from before a restart: snapshots being written or received.
        for entry in fs::read_dir(&snapshot_dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|x| x == "tmp" || x == "recv") {
                fs::remove_file(&path)?;
            }
        }
        if db
            .get_cf(cf(&db, CF_SM_META)?, INSTALLING_KEY)
            .map_err(io_err)?
            .is_some()
        {
            tracing::warn!("a snapshot install was interrupted; the state machine will be rebuilt");
            clear_state(&db)?;
            crate::db::sync_wal(&db).map_err(io_err)?;
        }
        let (applied, membership) = load_applied(&db)?;
        let mvcc = mvcc::load_state(&db)?;
        let index = KeyIndex::load(&db)?;
        let sessions = sessions::load_table(&db)?;
        let auth = std::sync::Arc::new(std::sync::RwLock::new(auth::load_table(&db)?));
        let alarms = std::sync::Arc::new(std::sync::RwLock::new(alarms::load_table(&db)?));
        let (applied_tx, _) = watch::channel(Applied {
            log_index: applied.as_ref().map_or(0, |id| id.index),
            revision: mvcc.revision,
            compact_revision: mvcc.compact_revision,
            state_hash: mvcc.state_hash,
        });
        Ok(StateMachine {
            db,
            snapshot_dir,
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            gate: InstallGate::default(),
            applied,
            membership,
            mvcc,
            index,
            sessions,
            auth,
            alarms,
            applied_tx,
            metrics: Arc::new(Metrics::default()),
            space: None,
        })
    }

    /// The tokens and roles, as this state machine keeps them up to date.
    pub fn auth(&self) -> SharedAuth {
        self.auth.clone()
    }

    /// The active alarms, as this state machine keeps them up to date.
    pub fn alarms(&self) -> SharedAlarms {
        self.alarms.clone()
    }

    /// The same state machine, counting applies and snapshots into `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Self {
        let mut sm = StateMachine { metrics, ..self };
        sm.record_tables();
        sm
    }

    /// Sets the session table's and key index's metrics from their state,
    /// and counts what the session table did since the last call.
    fn record_tables(&mut self) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let m = &self.metrics;
        let events = self.sessions.take_events();
        m.session_replays.inc_by(events.replayed);
        m.sessions_expired.inc_by(events.expired);
        m.sessions_evicted.inc_by(events.evicted);
        m.session_clients.set(gauge(self.sessions.clients() as u64));
        m.session_results.set(gauge(self.sessions.results() as u64));
        m.session_result_bytes.set(gauge(self.sessions.bytes()));
        m.key_index_keys.set(gauge(self.index.len() as u64));
    }

    /// The same state machine, releasing `space`'s reserve file when a
    /// write fails for lack of space.
    pub fn with_space(self, space: Option<Arc<super::space::DiskSpace>>) -> Self {
        StateMachine { space, ..self }
    }

    /// A receiver of the applied position, updated after every applied batch.
    pub fn subscribe(&self) -> watch::Receiver<Applied> {
        self.applied_tx.subscribe()
    }

    /// The gate that readers of this state machine's key space must pass
    /// (see [`InstallGate`]).
    pub fn install_gate(&self) -> InstallGate {
        self.gate.clone()
    }

    fn publish(&self) {
        let applied = Applied {
            log_index: self.applied.as_ref().map_or(0, |id| id.index),
            revision: self.mvcc.revision,
            compact_revision: self.mvcc.compact_revision,
            state_hash: self.mvcc.state_hash,
        };
        self.applied_tx.send_replace(applied);
    }
}

/// The header of a snapshot of the state machine as `snap` sees it: the
/// applied log id, the membership and the MVCC counters, all from `snap`.
/// Snapshot builds and backups share it.
pub(crate) fn snapshot_header(db: &DB, snap: &rocksdb::Snapshot<'_>) -> io::Result<SnapshotHeader> {
    let meta_cf = cf(db, CF_SM_META)?;
    let (applied, membership): (Option<LogId>, StoredMembership) =
        match snap.get_cf(meta_cf, APPLIED_KEY).map_err(io_err)? {
            Some(bytes) => codec::decode(&bytes)?,
            None => (None, StoredMembership::default()),
        };
    let mvcc: MvccState = match snap.get_cf(meta_cf, MVCC_STATE_KEY).map_err(io_err)? {
        Some(bytes) => codec::decode(&bytes)?,
        None => MvccState::default(),
    };
    Ok(SnapshotHeader {
        meta: SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        },
        mvcc,
    })
}

/// Whether `snap` shows a snapshot install in progress (or interrupted): its
/// key space is then partial and must not be copied anywhere.
pub(crate) fn install_in_progress(db: &DB, snap: &rocksdb::Snapshot<'_>) -> io::Result<bool> {
    Ok(snap
        .get_cf(cf(db, CF_SM_META)?, INSTALLING_KEY)
        .map_err(io_err)?
        .is_some())
}

/// Replaces the state machine's contents with a snapshot file, which the
/// caller has verified.
/// The `installing` marker brackets the work so a crash part-way is detected
/// at the next open.
fn load_snapshot(db: &DB, path: &Path) -> io::Result<SnapshotHeader> {
    fail::fail_point!("snapshot-install", |_| Err(io::Error::other(
        "failpoint snapshot-install"
    )));
    let meta_cf = cf(db, CF_SM_META)?;
    clear_state(db)?;
    db.put_cf(meta_cf, INSTALLING_KEY, b"1").map_err(io_err)?;
    let handles = SM_DATA_CFS
        .iter()
        .map(|n| cf(db, n))
        .collect::<io::Result<Vec<_>>>()?;
    let mut batch = WriteBatch::default();
    let mut count = 0usize;
    let header = snapshot::for_each_record(path, |index, k, v| {
        batch.put_cf(handles[index], k, v);
        count += 1;
        if count.is_multiple_of(INSTALL_BATCH_RECORDS) {
            db.write(std::mem::take(&mut batch)).map_err(io_err)?;
        }
        Ok(())
    })?;
    let applied = (&header.meta.last_log_id, &header.meta.last_membership);
    batch.put_cf(meta_cf, APPLIED_KEY, codec::encode(&applied)?);
    batch.put_cf(meta_cf, MVCC_STATE_KEY, codec::encode(&header.mvcc)?);
    batch.delete_cf(meta_cf, INSTALLING_KEY);
    db.write(batch).map_err(io_err)?;
    crate::db::sync_wal(db).map_err(io_err)?;
    Ok(header)
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(
        &mut self,
    ) -> Result<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>, io::Error> {
        let db = self.db.clone();
        let dir = self.snapshot_dir.clone();
        let _lock = self.snapshot_lock.clone().lock_owned().await;
        let metrics = self.metrics.clone();
        tokio::task::spawn_blocking(move || {
            fail::fail_point!("snapshot-build");
            let snap = db.snapshot();
            let header = snapshot_header(&db, &snap)?;
            let (meta, mvcc) = (header.meta.clone(), header.mvcc);
            let path = snapshot_path(&dir, &meta.last_log_id);
            snapshot::write(&db, &snap, &header, &path)?;
            // Tests pause here to overlap an install with a build.
            fail::fail_point!("snapshot-build-written");
            remove_other_snapshots(&dir, &path)?;
            metrics.snapshot_builds.inc();
            metrics
                .snapshot_build_bytes
                .inc_by(fs::metadata(&path).map_or(0, |m| m.len()));
            tracing::info!(path = %path.display(), revision = mvcc.revision, "built snapshot");
            Ok(openraft::Snapshot {
                meta,
                snapshot: SnapshotFile { path },
            })
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        // Read back from RocksDB: report only what is stored, never an
        // in-memory position ahead of it.
        load_applied(&self.db)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let started = std::time::Instant::now();
        let db = self.db.clone();
        let mut batch = ApplyBatch::with_index(&db, self.mvcc, &self.index);
        let mut responders = Vec::new();
        let mut applied = self.applied;
        let mut membership = self.membership.clone();
        // Written once, after every entry: each session row's last change.
        let mut session_rows = sessions::SessionRows::default();
        while let Some((entry, responder)) = entries.try_next().await? {
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Normal(crate::kv::Command::Auth(command)) => CommandResponse::Auth(
                    auth::apply_command(&self.auth, &db, batch.write_batch(), command)?,
                ),
                EntryPayload::Normal(crate::kv::Command::Alarm(command)) => {
                    let changed =
                        alarms::apply_command(&self.alarms, &db, batch.write_batch(), command)?;
                    for alarm in &changed {
                        tracing::warn!(member = alarm.member, alarm = %alarm.kind, command = %command, "alarm changed");
                    }
                    CommandResponse::Alarms(changed)
                }
                EntryPayload::Normal(command) => sessions::apply_entry_into(
                    &mut self.sessions,
                    &mut batch,
                    entry.log_id.index,
                    command,
                    &mut session_rows,
                )?,
                EntryPayload::Membership(m) => {
                    membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    CommandResponse::None
                }
            };
            applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responders.push((responder, response));
            }
        }
        self.applied = applied;
        self.membership = membership;
        if !session_rows.is_empty() {
            session_rows.write(batch.write_batch(), cf(&self.db, CF_SESSIONS)?);
        }
        let meta = cf(&self.db, CF_SM_META)?;
        let encoded = codec::encode(&(&self.applied, &self.membership))?;
        batch.write_batch().put_cf(meta, APPLIED_KEY, encoded);
        let (write_batch, mvcc, index_update) = batch.finish_indexed()?;
        fail::fail_point!("apply", |_| Err(io::Error::other("failpoint apply")));
        if let Err(e) = self.db.write(write_batch).map_err(io_err) {
            if let Some(space) = self
                .space
                .as_ref()
                .filter(|_| super::space::is_no_space(&e))
            {
                // Give RocksDB room to flush and the node room to restart;
                // the monitor raises the nospace alarm.
                space.release_now();
                space.wake();
            }
            return Err(e);
        }
        self.mvcc = mvcc;
        self.index.update(index_update);
        self.record_tables();
        // Publish, then respond: once a client has its answer, the change is
        // readable and the node's applied revision already includes it.
        self.publish();
        for (responder, response) in responders {
            responder.send(response);
        }
        self.metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
            metrics: self.metrics.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotFile,
    ) -> Result<(), io::Error> {
        if snapshot::read_header(&snapshot.path)?.meta.last_log_id != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot file does not match the snapshot meta it was sent with",
            ));
        }
        // Verify the whole file before it replaces anything.
        let path = snapshot.path.clone();
        tokio::task::spawn_blocking(move || snapshot::for_each_record(&path, |_, _, _| Ok(())))
            .await
            .map_err(io::Error::other)??;
        // No build runs meanwhile (it would remove this file, or snapshot a
        // half-installed state), and no reader sees the key space until the
        // install is complete.
        let _lock = self.snapshot_lock.clone().lock_owned().await;
        let final_path = snapshot_path(&self.snapshot_dir, &meta.last_log_id);
        if snapshot.path != final_path {
            fs::rename(&snapshot.path, &final_path)?;
            snapshot::sync_dir(&self.snapshot_dir)?;
        }
        let db = self.db.clone();
        let path = final_path.clone();
        let installing = self.gate.begin_install();
        let loaded = tokio::task::spawn_blocking(move || {
            let header = load_snapshot(&db, &path)?;
            Ok::<_, io::Error>((header, KeyIndex::load(&db)?))
        })
        .await;
        let (header, index) = match loaded {
            Ok(Ok(loaded)) => loaded,
            Ok(Err(e)) => {
                // The state is cleared or partly loaded: the `installing`
                // marker makes the next open rebuild it. Keep readers out.
                std::mem::forget(installing);
                return Err(e);
            }
            Err(e) => {
                std::mem::forget(installing);
                return Err(io::Error::other(e));
            }
        };
        self.applied = header.meta.last_log_id;
        self.membership = header.meta.last_membership;
        self.mvcc = header.mvcc;
        self.index = index;
        self.sessions = sessions::load_table(&self.db)?;
        let loaded = auth::load_table(&self.db)?;
        match self.auth.write() {
            Ok(mut table) => *table = loaded,
            Err(_) => return Err(io::Error::other("the auth table lock is poisoned")),
        }
        let loaded = alarms::load_table(&self.db)?;
        match self.alarms.write() {
            Ok(mut table) => *table = loaded,
            Err(_) => return Err(io::Error::other("the alarm table lock is poisoned")),
        }
        self.record_tables();
        remove_other_snapshots(&self.snapshot_dir, &final_path)?;
        self.metrics.snapshot_installs.inc();
        self.metrics
            .snapshot_install_bytes
            .inc_by(fs::metadata(&final_path).map_or(0, |m| m.len()));
        tracing::info!(revision = self.mvcc.revision, "installed snapshot");
        self.publish();
        drop(installing);
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<openraft::alias::SnapshotOf<TypeConfig, SnapshotFile>>, io::Error> {
        // Not under the snapshot lock, which a build holds for long: apply
        // must not wait for it. A build may replace the newest file between
        // the listing and the read; list again then.
        for _ in 0..SNAPSHOT_LOOKUP_ATTEMPTS {
            let Some(path) = snapshot_files(&self.snapshot_dir)?.pop() else {
                return Ok(None);
            };
            match snapshot::read_header(&path) {
                Ok(header) => {
                    return Ok(Some(openraft::Snapshot {
                        meta: header.meta,
                        snapshot: SnapshotFile { path },
                    }))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(
            "the newest snapshot file kept disappearing while it was looked up",
        ))
    }
}

#[cfg(test)]
#[path = "state_machine_test.rs"]
mod tests;
