//! The replica's last-known-good copy on disk (static stability).
//!
//! Format: the magic bytes `BLSTRPL1`, then postcard of a `u32` format version,
//! then postcard of the versioned body. Written atomically: a temporary file
//! in the same directory is written and fsynced, renamed over the old file,
//! and the directory is fsynced, so a crash leaves either the old or the new
//! copy, never a torn one.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::snapshot::ReplicaSnapshot;
use crate::types::KeyValue;

/// The file's name inside the cache directory.
pub(crate) const CACHE_FILE: &str = "replica.cache";
const MAGIC: &[u8; 8] = b"BLSTRPL1";
/// Bumped whenever the body's layout changes; older versions stay readable.
const FORMAT_VERSION: u32 = 1;

#[derive(Serialize)]
struct BodyRef<'a> {
    prefix: &'a str,
    revision: u64,
    kvs: Vec<KvRef<'a>>,
}

#[derive(Serialize)]
struct KvRef<'a> {
    key: &'a str,
    value: &'a [u8],
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

#[derive(Deserialize)]
struct BodyV1 {
    prefix: String,
    revision: u64,
    kvs: Vec<KvV1>,
}

#[derive(Deserialize)]
struct KvV1 {
    key: String,
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

/// Why a cache file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CacheError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a replica cache: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path} holds prefix {found:?}, not {wanted:?}")]
    OtherPrefix {
        path: PathBuf,
        found: String,
        wanted: String,
    },
}

/// Encodes a snapshot.
pub(crate) fn encode(prefix: &str, snap: &ReplicaSnapshot) -> Result<Vec<u8>, postcard::Error> {
    let body = BodyRef {
        prefix,
        revision: snap.revision,
        kvs: snap
            .kvs
            .values()
            .map(|kv| KvRef {
                key: &kv.key,
                value: &kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
            })
            .collect(),
    };
    let mut out = MAGIC.to_vec();
    out.extend(postcard::to_stdvec(&FORMAT_VERSION)?);
    out.extend(postcard::to_stdvec(&body)?);
    Ok(out)
}

/// Decodes a file's bytes; returns the prefix and the snapshot.
fn decode(path: &Path, bytes: &[u8]) -> Result<(String, ReplicaSnapshot), CacheError> {
    let corrupt = |why: String| CacheError::Corrupt {
        path: path.to_owned(),
        why,
    };
    let rest = bytes
        .strip_prefix(MAGIC.as_slice())
        .ok_or_else(|| corrupt("bad magic".to_owned()))?;
    let (version, rest) =
        postcard::take_from_bytes::<u32>(rest).map_err(|e| corrupt(format!("version: {e}")))?;
    match version {
        1 => {
            let body: BodyV1 =
                postcard::from_bytes(rest).map_err(|e| corrupt(format!("body: {e}")))?;
            let kvs = body.kvs.into_iter().map(|kv| KeyValue {
                key: kv.key,
                value: kv.value,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                version: kv.version,
            });
            Ok((body.prefix, ReplicaSnapshot::from_kvs(body.revision, kvs)))
        }
        other => Err(corrupt(format!("unknown format version {other}"))),
    }
}

/// Loads the cache of `prefix` from `dir`; `Ok(None)` when there is none.
pub(crate) fn load(dir: &Path, prefix: &str) -> Result<Option<ReplicaSnapshot>, CacheError> {
    let path = dir.join(CACHE_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CacheError::Io { path, source }),
    };
    let (found, snap) = decode(&path, &bytes)?;
    if found != prefix {
        return Err(CacheError::OtherPrefix {
            path,
            found,
            wanted: prefix.to_owned(),
        });
    }
    Ok(Some(snap))
}

/// Writes `bytes` as the cache in `dir`, atomically and durably.
pub(crate) fn store(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{CACHE_FILE}.tmp"));
    {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CACHE_FILE))?;
    // The rename itself must survive a crash.
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_junk() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        assert!(load(dir.path(), "/a/")?.is_none());
        let snap = ReplicaSnapshot::from_kvs(
            9,
            [KeyValue {
                key: "/a/b".into(),
                value: vec![0, 159, 1],
                create_revision: 2,
                mod_revision: 9,
                version: 4,
            }],
        );
        store(dir.path(), &encode("/a/", &snap)?)?;
        assert_eq!(load(dir.path(), "/a/")?, Some(snap));
        assert!(matches!(
            load(dir.path(), "/b/"),
            Err(CacheError::OtherPrefix { .. })
        ));
        fs::write(dir.path().join(CACHE_FILE), b"BLSTRPL1\x07junk")?;
        assert!(matches!(
            load(dir.path(), "/a/"),
            Err(CacheError::Corrupt { .. })
        ));
        Ok(())
    }
}
