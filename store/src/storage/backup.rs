//! Backups: a consistent copy of a node's applied state (`GET /v1/snapshot`),
//! wrapped in an envelope that tools verify without this crate.
//!
//! Envelope layout (integers little-endian):
//!
//! ```text
//! magic "BALLBKUP" (8 bytes)
//! header length (u32)
//! header (JSON, BackupHeader)
//! snapshot file (header.snapshot_bytes bytes: the format of `storage::snapshot`)
//! xxh3-64 of every byte before it (u64)
//! ```
//!
//! The snapshot file inside is the one Raft snapshots use, written by the
//! same writer from one RocksDB snapshot; it carries its own checksum and the
//! state digest that reading it verifies. `ballastctl` checks the envelope's
//! checksum, the header and the inner file's checksum; `ballastd restore`
//! checks all of that and the state digest.
//!
//! A backup never sees a half-installed key space: its RocksDB snapshot is
//! taken through the state machine's install gate (no install ran while it
//! was taken) and the snapshot must not carry the `installing` marker. Unlike
//! a Raft snapshot build it does not take the snapshot lock, so a backup of a
//! large key space never holds up a snapshot install, and it writes its file
//! to its own directory, where no snapshot clean-up removes it.

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rocksdb::DB;
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::snapshot::{self, SnapshotHeader};
use super::state_machine::{install_in_progress, snapshot_header};
use crate::db::{CF_KV, SM_DATA_CFS};
use crate::kv::gate::InstallGate;

/// First bytes of a backup file.
pub const BACKUP_MAGIC: &[u8; 8] = b"BALLBKUP";
/// The envelope format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
/// Largest envelope header a reader accepts; a real one is a few hundred
/// bytes, so a larger length means a corrupt file.
pub const MAX_BACKUP_HEADER_BYTES: usize = 64 * 1024;
/// Bytes read at a time when hashing or copying a file.
const CHUNK_BYTES: usize = 1 << 20;

/// The envelope header: what the backup holds, readable without decoding
/// the snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// Envelope format ([`BACKUP_FORMAT`]).
    pub format: u32,
    /// The cluster the backup was taken from (hex).
    pub cluster_id: String,
    /// The node that served it.
    pub node_id: u64,
    /// Key-space revision of the copy.
    pub revision: u64,
    /// Oldest revision whose history the copy holds.
    pub compact_revision: u64,
    /// Live keys at `revision`.
    pub key_count: u64,
    /// Digest of the key space (hex), as `/v1/status` reports it.
    pub state_hash: String,
    /// Length of the snapshot file that follows the header.
    pub snapshot_bytes: u64,
    /// When the copy was taken, seconds since the Unix epoch.
    pub created_unix_secs: u64,
}

/// A file removed when dropped (unless it was already).
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
}

impl TempFile {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file now. Readers that have it open keep reading (Unix);
    /// where removing an open file fails, the drop tries again.
    pub fn remove_now(&self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove a backup file")
            }
        }
    }
}

/// A built backup, ready to stream: `prefix`, the snapshot file, `trailer`.
#[derive(Debug)]
pub struct Backup {
    /// The envelope header.
    pub header: BackupHeader,
    /// Magic, header length and header.
    pub prefix: Vec<u8>,
    /// The snapshot file; removed when the backup is dropped.
    pub file: TempFile,
    /// xxh3-64 of the prefix and the snapshot file: the envelope's trailer.
    pub checksum: u64,
}

impl Backup {
    /// Bytes of the whole envelope.
    pub fn total_bytes(&self) -> u64 {
        self.prefix.len() as u64 + self.header.snapshot_bytes + 8
    }

    /// The trailer bytes.
    pub fn trailer(&self) -> [u8; 8] {
        self.checksum.to_le_bytes()
    }
}

/// Why a backup could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A snapshot install is running; try again once it is over.
    #[error("a snapshot install is in progress on this node")]
    Installing,
    /// Storage failed.
    #[error("storage: {0}")]
    Io(#[from] io::Error),
}

/// Holds a node's one backup slot until dropped.
#[derive(Debug)]
pub struct BackupSlot {
    busy: Arc<AtomicBool>,
}

impl Drop for BackupSlot {
    fn drop(&mut self) {
        self.busy.store(false, Ordering::Release);
    }
}

/// What a node needs to take backups: its database, the state machine's
/// install gate, a directory of its own, and the one-at-a-time slot.
#[derive(Clone)]
pub struct BackupSource {
    db: Arc<DB>,
    gate: InstallGate,
    dir: PathBuf,
    busy: Arc<AtomicBool>,
}

impl std::fmt::Debug for BackupSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupSource")
            .field("dir", &self.dir)
            .field("busy", &self.busy.load(Ordering::Relaxed))
            .finish()
    }
}

impl BackupSource {
    /// Backups of `db`, read through `gate`, with temporary files in `dir`.
    pub fn new(db: Arc<DB>, gate: InstallGate, dir: PathBuf) -> Self {
        BackupSource {
            db,
            gate,
            dir,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The slot, unless a backup holds it.
    pub fn try_claim(&self) -> Option<BackupSlot> {
        self.busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| BackupSlot {
                busy: self.busy.clone(),
            })
    }

    /// Completes when no snapshot install is running.
    pub async fn wait_idle(&self) {
        self.gate.wait_idle().await
    }

    /// Builds a backup (blocking: call from a blocking thread). The caller
    /// holds the slot, so any file left in the directory is a leftover of a
    /// crash and is removed first.
    pub fn build(
        &self,
        _slot: &BackupSlot,
        cluster_id: u128,
        node_id: u64,
    ) -> Result<Backup, BackupError> {
        fs::create_dir_all(&self.dir)?;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.is_file() {
                fs::remove_file(&path)?;
            }
        }
        let created_unix_secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let file = TempFile {
            path: self.dir.join(format!("backup-{created_unix_secs}.snap")),
        };
        let snap = self
            .gate
            .read(|| self.db.snapshot())
            .map_err(|_| BackupError::Installing)?;
        if install_in_progress(&self.db, &snap)? {
            return Err(BackupError::Installing);
        }
        let header = snapshot_header(&self.db, &snap)?;
        snapshot::write(&self.db, &snap, &header, file.path())?;
        drop(snap);
        let key_count = verify_and_count(file.path())?;
        let snapshot_bytes = fs::metadata(file.path())?.len();
        let header = envelope_header(
            &header,
            cluster_id,
            node_id,
            key_count,
            snapshot_bytes,
            created_unix_secs,
        );
        let prefix = encode_prefix(&header)?;
        let mut hasher = Xxh3::new();
        hasher.update(&prefix);
        hash_file(file.path(), &mut hasher)?;
        Ok(Backup {
            header,
            prefix,
            file,
            checksum: hasher.digest(),
        })
    }
}

/// Reads a whole snapshot file, verifying its checksum and state digest;
/// returns its count of live keys.
pub fn verify_and_count(path: &Path) -> io::Result<u64> {
    let kv_index = SM_DATA_CFS.iter().position(|n| *n == CF_KV);
    let mut keys = 0u64;
    snapshot::for_each_record(path, |index, _, _| {
        if Some(index) == kv_index {
            keys += 1;
        }
        Ok(())
    })?;
    Ok(keys)
}

/// The envelope header of a snapshot file with `header`.
pub fn envelope_header(
    header: &SnapshotHeader,
    cluster_id: u128,
    node_id: u64,
    key_count: u64,
    snapshot_bytes: u64,
    created_unix_secs: u64,
) -> BackupHeader {
    BackupHeader {
        format: BACKUP_FORMAT,
        cluster_id: format!("{cluster_id:032x}"),
        node_id,
        revision: header.mvcc.revision,
        compact_revision: header.mvcc.compact_revision,
        key_count,
        state_hash: format!("{:032x}", header.mvcc.state_hash),
        snapshot_bytes,
        created_unix_secs,
    }
}

/// Magic, header length and header.
pub fn encode_prefix(header: &BackupHeader) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(header).map_err(io::Error::other)?;
    let len = u32::try_from(json.len())
        .ok()
        .filter(|l| *l as usize <= MAX_BACKUP_HEADER_BYTES)
        .ok_or_else(|| io::Error::other("backup header too large"))?;
    let mut prefix = Vec::with_capacity(12 + json.len());
    prefix.extend_from_slice(BACKUP_MAGIC);
    prefix.extend_from_slice(&len.to_le_bytes());
    prefix.extend_from_slice(&json);
    Ok(prefix)
}

fn hash_file(path: &Path, hasher: &mut Xxh3) -> io::Result<()> {
    let mut r = File::open(path)?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        hasher.update(&buf[..n]);
    }
}

fn invalid(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Reads a backup file's envelope: checks the magic, the header, the length
/// and the trailer, and copies the snapshot file inside to `snapshot_out`.
/// The snapshot file itself is verified by whoever loads it.
pub fn unwrap_envelope(path: &Path, snapshot_out: &Path) -> io::Result<BackupHeader> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::with_capacity(CHUNK_BYTES, file);
    let mut hasher = Xxh3::new();
    let mut fixed = [0u8; 12];
    r.read_exact(&mut fixed).map_err(|_| {
        invalid(format!(
            "{size} bytes is too short for a ballast backup file"
        ))
    })?;
    if &fixed[..8] != BACKUP_MAGIC {
        return Err(invalid("not a ballast backup file (wrong magic)"));
    }
    hasher.update(&fixed);
    let mut len = [0u8; 4];
    len.copy_from_slice(&fixed[8..]);
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_BACKUP_HEADER_BYTES {
        return Err(invalid(format!(
            "backup header length {len} is over {MAX_BACKUP_HEADER_BYTES}: the file is corrupt"
        )));
    }
    let mut json = vec![0u8; len];
    r.read_exact(&mut json)
        .map_err(|_| invalid("the backup file ends inside its header: it is truncated"))?;
    hasher.update(&json);
    let header: BackupHeader = serde_json::from_slice(&json)
        .map_err(|e| invalid(format!("the backup header is not valid: {e}")))?;
    if header.format != BACKUP_FORMAT {
        return Err(invalid(format!(
            "backup format {} is not supported (this build reads {BACKUP_FORMAT})",
            header.format
        )));
    }
    let expected = 12 + len as u64 + header.snapshot_bytes + 8;
    if size != expected {
        return Err(invalid(format!(
            "the backup file has {size} bytes, its header says {expected}: it is truncated or \
             corrupt"
        )));
    }
    let mut out = io::BufWriter::with_capacity(CHUNK_BYTES, File::create(snapshot_out)?);
    let mut remaining = header.snapshot_bytes;
    let mut buf = vec![0u8; CHUNK_BYTES];
    while remaining > 0 {
        let want = remaining.min(CHUNK_BYTES as u64) as usize;
        r.read_exact(&mut buf[..want])?;
        hasher.update(&buf[..want]);
        io::Write::write_all(&mut out, &buf[..want])?;
        remaining -= want as u64;
    }
    let out = out.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    let mut trailer = [0u8; 8];
    r.read_exact(&mut trailer)?;
    if u64::from_le_bytes(trailer) != hasher.digest() {
        return Err(invalid("backup checksum mismatch: the file is corrupt"));
    }
    Ok(header)
}
