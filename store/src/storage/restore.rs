//! `ballastd restore`: a fresh data directory holding the key space of a
//! backup file or of a stopped node's data directory, for a member of a
//! new cluster.
//!
//! - The key space, its history and its revision counters are copied as
//!   they are, through the snapshot format (`storage::snapshot`), whose
//!   reader verifies the checksum and the state digest.
//! - The client session table (`kv::sessions`) is not restored: the new
//!   cluster starts with no sessions, so a client retrying a write it sent
//!   to the old cluster is refused (`session_expired`) and reports the write
//!   as indeterminate, rather than applying it on top of a state that may or
//!   may not hold it.
//! - Tokens and roles (`kv::auth`) are restored: a cluster restored from a
//!   backup of a cluster with auth on enforces the same tokens.
//! - Alarms (`kv::alarms`) are not restored: they describe the disks of the
//!   members of the old cluster; the new members raise their own.
//! - The Raft side is empty: no log, no vote, no applied log id or
//!   membership. Started with `--initial-cluster`, the node runs openraft's
//!   `initialize`, which requires exactly that, and the new cluster's first
//!   writes continue at the restored revision + 1.
//! - The node gets a new cluster id ([`restored_cluster_id`]), computed
//!   alike by every member restored from the same state with the same
//!   token and members, and different from the old cluster's, so old and
//!   restored nodes refuse each other's peer traffic. It is stored as the
//!   node's identity, so a normal start picks it up.
//! - The directory is built in a staging folder inside the target and moved
//!   into place with one rename of its `db` folder: a failed or interrupted
//!   restore never leaves something a node would start on.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rocksdb::{Options, WriteBatch, DB};

use super::backup::{self, BackupHeader};
use super::identity::{self, Identity};
use super::snapshot::{self, SnapshotHeader};
use super::state_machine::{install_in_progress, snapshot_header};
use crate::config::{parse_initial_cluster, ConfigError};
use crate::db::{
    self as database, cf, io_err, CF_ALARMS, CF_AUTH, CF_KV, CF_SESSIONS, CF_SM_META, SM_DATA_CFS,
};
use crate::kv::mvcc::{MvccState, MVCC_STATE_KEY};
use crate::raft::identity::cluster_id_for;
use crate::raft::types::{Member, NodeId};

/// Folder inside the target where the restore is staged.
const STAGING_DIR: &str = ".restore";
/// Records per RocksDB write when loading.
const LOAD_BATCH_RECORDS: usize = 4096;
/// Bytes per RocksDB write when loading: with large values, the record
/// count alone would hold most of the key space in one batch.
const LOAD_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Where the restored key space comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreSource {
    /// A backup file (`ballastctl snapshot save`).
    Snapshot(PathBuf),
    /// The data directory of a stopped node; read only, never changed.
    DataDir(PathBuf),
}

/// What to restore, and for which member of which new cluster.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The node id of the restored member.
    pub node_id: NodeId,
    /// The data directory to create (absent or empty).
    pub data_dir: PathBuf,
    /// The new cluster's members, `ID=CLIENT_ADDR/PEER_ADDR,...`.
    pub initial_cluster: String,
    /// The new cluster's token.
    pub cluster_token: String,
    /// Where the key space comes from.
    pub source: RestoreSource,
    /// The operator's acknowledgement that this forms a new cluster.
    pub new_cluster: bool,
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreReport {
    /// The new cluster's id.
    pub cluster_id: u128,
    /// The restored revision.
    pub revision: u64,
    /// The restored compact revision.
    pub compact_revision: u64,
    /// Digest of the restored key space.
    pub state_hash: u128,
    /// Live keys restored.
    pub key_count: u64,
}

/// Why a restore was refused or failed. Nothing is left in the target
/// directory in any case.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// `--new-cluster` was not given.
    #[error(
        "restoring forms a new cluster with a new cluster id; pass --new-cluster to confirm \
         (the old cluster's nodes must not be started again alongside it)"
    )]
    NotAcknowledged,
    /// The member list or node id is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The target data directory already holds something.
    #[error(
        "the data directory {0} is not empty; restore only into a new or empty directory \
         (nothing was changed)"
    )]
    TargetNotEmpty(PathBuf),
    /// The backup file or the source data directory is unusable.
    #[error("cannot restore from {path}: {message}")]
    Source {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Writing the new data directory failed.
    #[error("writing {path}: {source}")]
    Write {
        /// What was being written.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// The cluster id of a cluster restored from the state `mvcc` by `members`
/// with `token`: different from any cluster formed normally (a different
/// domain), and the same on every member restored from the same state.
pub fn restored_cluster_id(
    token: &str,
    members: &BTreeMap<NodeId, Member>,
    mvcc: &MvccState,
) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(b"ballast-restored-cluster-v1\0");
    h.update(&cluster_id_for(token, members).to_le_bytes());
    h.update(&mvcc.revision.to_le_bytes());
    h.update(&mvcc.compact_revision.to_le_bytes());
    h.update(&mvcc.state_hash.to_le_bytes());
    h.digest128()
}

fn source_err(path: &Path, e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Source {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn write_err(path: &Path) -> impl FnOnce(io::Error) -> RestoreError + '_ {
    move |source| RestoreError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// Builds the data directory `options.data_dir` (blocking). See the module
/// docs for what it holds.
pub fn restore(options: &RestoreOptions) -> Result<RestoreReport, RestoreError> {
    if !options.new_cluster {
        return Err(RestoreError::NotAcknowledged);
    }
    let members = parse_initial_cluster(&options.initial_cluster)?;
    if options.node_id == 0 || !members.contains_key(&options.node_id) {
        return Err(ConfigError::Invalid(format!(
            "node {} is not in --initial-cluster ({})",
            options.node_id,
            members
                .keys()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into());
    }
    let target = &options.data_dir;
    let created = match fs::read_dir(target) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::TargetNotEmpty(target.clone()));
            }
            false
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(target).map_err(write_err(target))?;
            true
        }
        Err(e) => return Err(write_err(target)(e)),
    };
    let staging = target.join(STAGING_DIR);
    let result = fs::create_dir(&staging)
        .map_err(write_err(&staging))
        .and_then(|()| build(options, &members, &staging));
    let result = result.and_then(|report| {
        commit(target, &staging)?;
        Ok(report)
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&staging);
        if created {
            let _ = fs::remove_dir_all(target);
        }
    }
    result
}

/// Moves the staged `db` into the target and removes the staging folder.
fn commit(target: &Path, staging: &Path) -> Result<(), RestoreError> {
    let db_dir = target.join("db");
    fs::rename(staging.join("db"), &db_dir).map_err(write_err(&db_dir))?;
    snapshot::sync_dir(target).map_err(write_err(target))?;
    fs::remove_dir_all(staging).map_err(write_err(staging))?;
    snapshot::sync_dir(target).map_err(write_err(target))
}

fn build(
    options: &RestoreOptions,
    members: &BTreeMap<NodeId, Member>,
    staging: &Path,
) -> Result<RestoreReport, RestoreError> {
    let snap_path = staging.join("source.snap");
    let envelope = match &options.source {
        RestoreSource::Snapshot(file) => {
            Some(backup::unwrap_envelope(file, &snap_path).map_err(|e| source_err(file, e))?)
        }
        RestoreSource::DataDir(dir) => {
            snapshot_of_data_dir(dir, &snap_path)?;
            None
        }
    };
    let source_path = match &options.source {
        RestoreSource::Snapshot(p) | RestoreSource::DataDir(p) => p.as_path(),
    };
    let db_dir = staging.join("db");
    let db = database::open(&db_dir)
        .map_err(|e| write_err(&db_dir)(io::Error::other(e.into_string())))?;
    let (header, key_count) = load(&db, &snap_path).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => source_err(source_path, e),
        _ => write_err(&db_dir)(e),
    })?;
    if let Some(envelope) = envelope {
        check_envelope(&envelope, &header, key_count).map_err(|m| source_err(source_path, m))?;
    }
    let cluster_id = restored_cluster_id(&options.cluster_token, members, &header.mvcc);
    identity::store(
        &db,
        &Identity {
            cluster_id,
            node_id: options.node_id,
        },
    )
    .map_err(write_err(&db_dir))?;
    close(db).map_err(write_err(&db_dir))?;
    fs::remove_file(&snap_path).map_err(write_err(&snap_path))?;
    Ok(RestoreReport {
        cluster_id,
        revision: header.mvcc.revision,
        compact_revision: header.mvcc.compact_revision,
        state_hash: header.mvcc.state_hash,
        key_count,
    })
}

/// Syncs and closes the new database.
fn close(db: Arc<DB>) -> io::Result<()> {
    db.flush().map_err(io_err)?;
    crate::db::sync_wal(&db).map_err(io_err)?;
    drop(db);
    Ok(())
}

/// The envelope header must describe the snapshot it carries.
fn check_envelope(
    envelope: &BackupHeader,
    inner: &SnapshotHeader,
    key_count: u64,
) -> Result<(), String> {
    let state_hash = format!("{:032x}", inner.mvcc.state_hash);
    if envelope.revision != inner.mvcc.revision
        || envelope.compact_revision != inner.mvcc.compact_revision
        || envelope.state_hash != state_hash
        || envelope.key_count != key_count
    {
        return Err(format!(
            "the backup header (revision {}, compact revision {}, {} keys, state {}) does not \
             match the snapshot inside (revision {}, compact revision {}, {key_count} keys, \
             state {state_hash})",
            envelope.revision,
            envelope.compact_revision,
            envelope.key_count,
            envelope.state_hash,
            inner.mvcc.revision,
            inner.mvcc.compact_revision,
        ));
    }
    Ok(())
}

/// Writes a snapshot file of the applied state in the data directory `dir`,
/// opened read-only.
fn snapshot_of_data_dir(dir: &Path, out: &Path) -> Result<(), RestoreError> {
    let db_dir = dir.join("db");
    if !db_dir.join("CURRENT").is_file() {
        return Err(source_err(
            dir,
            "not a ballast data directory (it has no db/ folder with a RocksDB database)",
        ));
    }
    let opts = Options::default();
    let names = DB::list_cf(&opts, &db_dir).map_err(|e| source_err(dir, e.into_string()))?;
    let db = DB::open_cf_for_read_only(&opts, &db_dir, &names, false)
        .map_err(|e| source_err(dir, e.into_string()))?;
    // Data directories of earlier builds have no session table (it is not
    // restored anyway), no auth table (auth was off) and no alarm table.
    for name in SM_DATA_CFS
        .iter()
        .chain([CF_SM_META].iter())
        .filter(|n| **n != CF_SESSIONS && **n != CF_AUTH && **n != CF_ALARMS)
    {
        cf(&db, name).map_err(|e| source_err(dir, e))?;
    }
    let snap = db.snapshot();
    if install_in_progress(&db, &snap).map_err(|e| source_err(dir, e))? {
        return Err(source_err(
            dir,
            "a snapshot install was interrupted in this data directory: its key space is \
             partial",
        ));
    }
    let header = snapshot_header(&db, &snap).map_err(|e| source_err(dir, e))?;
    snapshot::write(&db, &snap, &header, out).map_err(|e| match e.kind() {
        io::ErrorKind::InvalidInput => source_err(dir, e),
        _ => write_err(out)(e),
    })
}

/// Loads a snapshot file's records into the empty state machine of `db`,
/// with its MVCC counters and no applied log id or membership, and without
/// the client sessions (see the module docs). Fails (`InvalidData`) on a
/// corrupt file. Returns the header and the live keys.
fn load(db: &DB, path: &Path) -> io::Result<(SnapshotHeader, u64)> {
    let handles = SM_DATA_CFS
        .iter()
        .map(|n| cf(db, n))
        .collect::<io::Result<Vec<_>>>()?;
    let kv_index = SM_DATA_CFS.iter().position(|n| *n == CF_KV);
    let sessions_index = SM_DATA_CFS.iter().position(|n| *n == CF_SESSIONS);
    // Alarms describe the disks of the cluster the backup came from, not
    // of the one restored from it.
    let alarms_index = SM_DATA_CFS.iter().position(|n| *n == CF_ALARMS);
    let mut batch = WriteBatch::default();
    let mut count = 0usize;
    let mut keys = 0u64;
    let header = snapshot::for_each_record(path, |index, k, v| {
        if Some(index) == sessions_index || Some(index) == alarms_index {
            return Ok(());
        }
        if Some(index) == kv_index {
            keys += 1;
        }
        batch.put_cf(handles[index], k, v);
        count += 1;
        if count.is_multiple_of(LOAD_BATCH_RECORDS) || batch.size_in_bytes() >= LOAD_BATCH_BYTES {
            db.write(std::mem::take(&mut batch)).map_err(io_err)?;
        }
        Ok(())
    })?;
    batch.put_cf(
        cf(db, CF_SM_META)?,
        MVCC_STATE_KEY,
        crate::codec::encode(&header.mvcc)?,
    );
    db.write(batch).map_err(io_err)?;
    Ok((header, keys))
}

#[cfg(test)]
#[path = "restore_test.rs"]
mod tests;
