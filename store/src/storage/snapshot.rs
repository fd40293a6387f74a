//! Snapshot files: a consistent dump of the state machine's column families.
//!
//! Layout: the magic `BALLSNAP`, a length-prefixed versioned header (Raft
//! snapshot meta and MVCC counters), then records `cf u8 | key len u32 | key |
//! value len u32 | value`, an end marker `0xFF`, and an xxh3-64 checksum of
//! everything before it. Files are written to a temporary name, synced and
//! renamed, so a snapshot file either exists whole or not at all.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use rocksdb::{IteratorMode, DB};
use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::Xxh3;

use super::db::{cf, io_err, SM_DATA_CFS};
use crate::codec;
use crate::kv::mvcc::MvccState;
use crate::raft::types::SnapshotMeta;

const MAGIC: &[u8; 8] = b"BALLSNAP";
const END: u8 = 0xFF;
/// Largest header or record field accepted when reading, to fail cleanly on a
/// corrupt length instead of allocating it.
const MAX_FIELD: u32 = 64 * 1024 * 1024;

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

fn write_field<W: Write>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    let len =
        u32::try_from(bytes.len()).map_err(|_| io::Error::other("snapshot field over 4 GiB"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(bytes)
}

fn read_field<R: Read>(r: &mut R) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FIELD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot field length is corrupt",
        ));
    }
    let mut buf = vec![0u8; len as usize];
    r.read_exact(&mut buf)?;
    Ok(buf)
}

/// Syncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Dumps the state-machine column families as seen by `snap` into a new file at
/// `path` (via a temporary file, synced, then renamed).
pub fn write(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    header: &SnapshotHeader,
    path: &Path,
) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let file = File::create(&tmp)?;
    let mut w = HashingWriter {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Xxh3::new(),
    };
    w.write_all(MAGIC)?;
    write_field(&mut w, &codec::encode(header)?)?;
    for (index, name) in SM_DATA_CFS.iter().enumerate() {
        let handle = cf(db, name)?;
        for item in snap.iterator_cf(handle, IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
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
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
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
    Ok(codec::decode(&read_field(&mut r)?)?)
}

/// Walks every record of a snapshot file, calling `each(cf_index, key, value)`,
/// and verifies the checksum at the end. Returns the header.
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
    let header: SnapshotHeader = codec::decode(&read_field(&mut r)?)?;
    loop {
        let mut tag = [0u8; 1];
        r.read_exact(&mut tag)?;
        if tag[0] == END {
            break;
        }
        let index = tag[0] as usize;
        if index >= SM_DATA_CFS.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unknown column family in snapshot",
            ));
        }
        let k = read_field(&mut r)?;
        let v = read_field(&mut r)?;
        each(index, k, v)?;
    }
    let expected = r.hasher.digest();
    let mut stored = [0u8; 8];
    r.inner.read_exact(&mut stored)?;
    if u64::from_le_bytes(stored) != expected {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "snapshot checksum mismatch",
        ));
    }
    Ok(header)
}
