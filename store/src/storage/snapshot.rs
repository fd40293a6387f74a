//! Snapshot files: a consistent dump of the state machine's column families.
//!
//! Layout: the magic `BALLSNAP`, a length-prefixed versioned header (Raft
//! snapshot meta and MVCC counters), then records `cf u8 | key len u32 | key |
//! value len u32 | value`, an end marker `0xFF`, and an xxh3-64 checksum of
//! everything before it. Files are written to a temporary name, synced and
//! renamed, so a snapshot file either exists whole or not at all.
//!
//! Format versions (the header's first byte):
//! - 1, written by earlier builds: records of `kv`, `history` and `changes`.
//! - 2, written by earlier builds: records of `history` and `changes` only.
//!   The current key space is each key's latest `history` entry, so the
//!   reader rebuilds the `kv` records from `history` instead of the file
//!   carrying every live value twice.
//! - 3, written by earlier builds: as 2, plus the records of `sessions` (the
//!   client session table, `kv::sessions`) after `changes`. A file of an
//!   earlier format installs with an empty session table.
//! - 4, written by earlier builds: as 3, plus the records of `auth` (tokens
//!   and roles, `kv::auth`) after `sessions`. A file of an earlier format
//!   installs with an empty auth table (auth off).
//! - 5 ([`SNAPSHOT_VERSION`]): as 4, plus the records of `alarms` (the
//!   active alarms, `kv::alarms`) after `auth`. A file of an earlier format
//!   installs with no alarm active.
//!
//! All five are read. An earlier build refuses a file of a later format as
//! an unsupported format version rather than installing rows it cannot read.
//! Reading also checks that the key space it yields hashes to the header's
//! state digest.
//!
//! Every field is at most [`MAX_RECORD_FIELD_BYTES`], for the writer and the
//! reader alike: the writer refuses a larger one, so every file it completes
//! can be read back.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, DB};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use crate::codec;
use crate::db::{
    cf, io_err, CF_ALARMS, CF_AUTH, CF_CHANGES, CF_HISTORY, CF_KV, CF_SESSIONS, SM_DATA_CFS,
};
use crate::kv::limits::{MAX_VALUE_BYTES_CEILING, REQUEST_SLACK_BYTES};
use crate::kv::mvcc::{entry_hash, split_history_key, MvccState, Record};
use crate::raft::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"BALLSNAP";
const END: u8 = 0xFF;
/// Format version of the files this build writes (see the module docs).
pub const SNAPSHOT_VERSION: u8 = 5;
/// Format version of the files of earlier builds, which carry `kv`.
const SNAPSHOT_VERSION_WITH_KV: u8 = 1;
/// Format version of the files of earlier builds without `kv` and without
/// `sessions`.
const SNAPSHOT_VERSION_WITHOUT_SESSIONS: u8 = 2;
/// Format version of the files of earlier builds without `auth`.
const SNAPSHOT_VERSION_WITHOUT_AUTH: u8 = 3;
/// Format version of the files of earlier builds without `alarms`.
const SNAPSHOT_VERSION_WITHOUT_ALARMS: u8 = 4;
/// Most bytes a stored record's encoding adds to the key or value it holds: a
/// version byte, an option tag, a length and three revision varints around a
/// value; a NUL and a revision after a `history` key.
const RECORD_ENCODING_BYTES: usize = 64;
/// Largest key or value of a snapshot record (and largest header), for the
/// writer and the reader alike.
///
/// Every key and value in the state machine came in one command, and no node
/// accepts a command larger than its request limit: `--max-value-bytes` (at
/// most `MAX_VALUE_BYTES_CEILING`) plus `REQUEST_SLACK_BYTES`. A stored
/// record adds at most `RECORD_ENCODING_BYTES`. So every `kv` and `history`
/// record fits, whatever limits the nodes ran with, and so does every
/// `changes` row (a key and a revision). Only a `changes` row of the shape
/// earlier builds wrote (every record of a revision in one row) can be
/// larger; the writer refuses it with an error that says so.
pub const MAX_RECORD_FIELD_BYTES: usize =
    MAX_VALUE_BYTES_CEILING + REQUEST_SLACK_BYTES + RECORD_ENCODING_BYTES;
const _: () = assert!(MAX_RECORD_FIELD_BYTES <= u32::MAX as usize);

/// The data of a snapshot: a complete snapshot file on disk.
#[derive(Debug, Clone)]
pub struct SnapshotFile {
    /// Where the file is.
    pub path: PathBuf,
}

/// What a snapshot file starts with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// Raft's view: last included log id and membership.
    pub meta: SnapshotMeta,
    /// Revision counters and digest at that point.
    pub mvcc: MvccState,
}

/// Writes and hashes at once.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Xxh3,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Reads and hashes at once.
struct HashingReader<R: Read> {
    inner: R,
    hasher: Xxh3,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

/// Writes one length-prefixed field; callers have checked it against
/// [`MAX_RECORD_FIELD_BYTES`].
fn write_field<W: Write>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .ok()
        .filter(|&l| l as usize <= MAX_RECORD_FIELD_BYTES)
        .ok_or_else(|| io::Error::other("snapshot field over the record limit"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

fn read_field<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_RECORD_FIELD_BYTES {
        return Err(invalid_data(format!(
            "snapshot field of {len} bytes is over the record limit of \
             {MAX_RECORD_FIELD_BYTES} bytes: the file is corrupt"
        )));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Refuses a record the reader could not read back, naming what it is.
fn check_record(cf_name: &str, key: &[u8], value: &[u8]) -> io::Result<()> {
    for (what, len) in [("key", key.len()), ("value", value.len())] {
        if len <= MAX_RECORD_FIELD_BYTES {
            continue;
        }
        let legacy = match <[u8; 8]>::try_from(key) {
            Ok(rev) if cf_name == CF_CHANGES => format!(
                " (the changes row of revision {}, in the shape of earlier builds; it \
                 is removed once history is compacted past that revision)",
                u64::from_be_bytes(rev)
            ),
            _ => String::new(),
        };
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot write a snapshot: a {len}-byte {what} in column family {cf_name} is \
                 over the snapshot record limit of {MAX_RECORD_FIELD_BYTES} bytes{legacy}"
            ),
        ));
    }
    Ok(())
}

fn encode_header(header: &SnapshotHeader) -> io::Result<Vec<u8>> {
    postcard::to_extend(header, vec![SNAPSHOT_VERSION])
        .map_err(|e| codec::CodecError::from(e).into())
}

/// Decodes the header field: the format version and the header.
fn decode_header(bytes: &[u8]) -> io::Result<(u8, SnapshotHeader)> {
    match bytes.first() {
        Some(&SNAPSHOT_VERSION_WITH_KV) => Ok((SNAPSHOT_VERSION_WITH_KV, codec::decode(bytes)?)),
        Some(
            &v @ (SNAPSHOT_VERSION_WITHOUT_SESSIONS
            | SNAPSHOT_VERSION_WITHOUT_AUTH
            | SNAPSHOT_VERSION_WITHOUT_ALARMS
            | SNAPSHOT_VERSION),
        ) => Ok((
            v,
            postcard::from_bytes(&bytes[1..]).map_err(codec::CodecError::from)?,
        )),
        Some(v) => Err(invalid_data(format!(
            "snapshot format version {v} is not supported (this build reads \
             {SNAPSHOT_VERSION_WITH_KV} to {SNAPSHOT_VERSION})"
        ))),
        None => Err(invalid_data("empty snapshot header")),
    }
}

fn cf_index(name: &str) -> usize {
    SM_DATA_CFS
        .iter()
        .position(|n| *n == name)
        .unwrap_or(usize::MAX)
}

/// Syncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Dumps the state-machine column families as seen by `snap` into a new file at
/// `path` (via a temporary file, synced, then renamed).
///
/// Fails, leaving no file, if a record is over [`MAX_RECORD_FIELD_BYTES`].
pub fn write(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    header: &SnapshotHeader,
    path: &Path,
) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    if let Err(e) = write_file(db, snap, header, &tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn write_file(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    header: &SnapshotHeader,
    tmp: &Path,
) -> io::Result<()> {
    let file = File::create(tmp)?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC)?;
    write_field(&mut w, &encode_header(header)?)?;
    for (index, name) in SM_DATA_CFS.iter().enumerate() {
        // Rebuilt from `history` when read.
        if *name == CF_KV {
            continue;
        }
        // A data directory of an earlier build, opened read-only to be
        // restored from, has no session, auth or alarm table: they are empty.
        if (*name == CF_SESSIONS || *name == CF_AUTH || *name == CF_ALARMS)
            && db.cf_handle(name).is_none()
        {
            continue;
        }
        let handle = cf(db, name)?;
        for item in snap.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
            check_record(name, &k, &v)?;
            w.write_all(&[index as u8])?;
            write_field(&mut w, &k)?;
            write_field(&mut w, &v)?;
        }
    }
    w.write_all(&[END])?;
    let checksum = w.hasher.digest();
    let mut inner = w.inner;
    inner.write_all(&checksum.to_le_bytes())?;
    let file = inner.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Reads just the header of a snapshot file.
pub fn read_header(path: &Path) -> io::Result<SnapshotHeader> {
    let mut r = BufReader::new(File::open(path)?);
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a ballast snapshot file",
        ));
    }
    Ok(decode_header(&read_field(&mut r)?)?.1)
}

/// Rebuilds the `kv` records a version-2 file leaves out, and sums the state
/// digest of the key space a file yields.
struct KeySpace {
    kv_index: usize,
    /// The `history` key being walked and its latest entry so far.
    walking: Option<(Vec<u8>, Vec<u8>)>,
    hash: u128,
}

impl KeySpace {
    fn live(&mut self, key: &[u8], record: &Record) -> io::Result<()> {
        let key = std::str::from_utf8(key).map_err(|e| invalid_data(e.to_string()))?;
        self.hash = self.hash.wrapping_add(entry_hash(key, record));
        Ok(())
    }

    /// A `kv` record of a version-1 file.
    fn kv(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        let record: Record = codec::decode(value)?;
        self.live(key, &record)
    }

    /// A `history` record of a version-2 file. Entries come in key order and
    /// each key's in revision order, so a key's last entry is its current
    /// state.
    fn history(
        &mut self,
        raw: &[u8],
        value: &[u8],
        each: &mut impl FnMut(usize, Vec<u8>, Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let (key, _) = split_history_key(raw)?;
        if self.walking.as_ref().is_some_and(|(k, _)| k != key) {
            self.finish_key(each)?;
        }
        self.walking = Some((key.to_vec(), value.to_vec()));
        Ok(())
    }

    /// Emits the `kv` record of the key being walked, unless it is deleted.
    fn finish_key(
        &mut self,
        each: &mut impl FnMut(usize, Vec<u8>, Vec<u8>) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some((key, latest)) = self.walking.take() else {
            return Ok(());
        };
        if let Some(record) = codec::decode::<Option<Record>>(&latest)? {
            self.live(&key, &record)?;
            each(self.kv_index, key, codec::encode(&record)?)?;
        }
        Ok(())
    }
}

/// Walks every record of a snapshot file, calling `each(cf_index, key, value)`
/// (`cf_index` into [`SM_DATA_CFS`]), the `kv` records rebuilt from `history`
/// included for a version-2 file; verifies the checksum and the state digest
/// at the end. Returns the header.
///
/// Callers that must not act on a corrupt file call this once with a no-op
/// `each` before loading.
pub fn for_each_record(
    path: &Path,
    mut each: impl FnMut(usize, Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<SnapshotHeader> {
    let mut r = HashingReader {
        inner: BufReader::with_capacity(1 << 20, File::open(path)?),
        hasher: Xxh3::new(),
    };
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a ballast snapshot file",
        ));
    }
    let (version, header) = decode_header(&read_field(&mut r)?)?;
    let history_index = cf_index(CF_HISTORY);
    let sessions_index = cf_index(CF_SESSIONS);
    let auth_index = cf_index(CF_AUTH);
    let alarms_index = cf_index(CF_ALARMS);
    let mut space = KeySpace {
        kv_index: cf_index(CF_KV),
        walking: None,
        hash: 0,
    };
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        if tag[0] == END {
            break;
        }
        let index = tag[0] as usize;
        if index >= SM_DATA_CFS.len() {
            return Err(invalid_data("unknown column family in snapshot"));
        }
        let k = read_field(&mut r)?;
        let v = read_field(&mut r)?;
        if index == sessions_index && version < SNAPSHOT_VERSION_WITHOUT_AUTH {
            return Err(invalid_data(format!(
                "a version-{version} snapshot holds no sessions records"
            )));
        }
        if index == auth_index && version < SNAPSHOT_VERSION_WITHOUT_ALARMS {
            return Err(invalid_data(format!(
                "a version-{version} snapshot holds no auth records"
            )));
        }
        if index == alarms_index && version < SNAPSHOT_VERSION {
            return Err(invalid_data(format!(
                "a version-{version} snapshot holds no alarm records"
            )));
        }
        if version == SNAPSHOT_VERSION_WITH_KV {
            if index == space.kv_index {
                space.kv(&k, &v)?;
            }
        } else if index == space.kv_index {
            return Err(invalid_data(format!(
                "a version-{version} snapshot holds no kv records"
            )));
        } else if index == history_index {
            space.history(&k, &v, &mut each)?;
        } else {
            space.finish_key(&mut each)?;
        }
        each(index, k, v)?;
    }
    space.finish_key(&mut each)?;
    let expected = r.hasher.digest();
    let mut stored = [0u8; 8];
    r.inner.read_exact(&mut stored)?;
    if u64::from_le_bytes(stored) != expected {
        return Err(invalid_data("snapshot checksum mismatch"));
    }
    if space.hash != header.mvcc.state_hash {
        return Err(invalid_data(format!(
            "the key space in the snapshot hashes to {:032x}, its header says {:032x}",
            space.hash, header.mvcc.state_hash
        )));
    }
    Ok(header)
}

#[cfg(test)]
#[path = "snapshot_test.rs"]
mod tests;
