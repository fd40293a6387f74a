//! How big the key space is on disk: what `/metrics`, `/v1/status` and the
//! storage quota report and check.
//!
//! The measure is RocksDB's own accounting of the state-machine column
//! families (current keys, history, the change feed, sessions and their
//! metadata): the live SST files plus the memtables not yet flushed. The Raft
//! log is left out: it is purged behind every snapshot, so it is not what an
//! operator can shrink with compaction. Deleting keys and compacting history
//! leaves tombstones that count until RocksDB compacts them away; the
//! physical compactor runs `compact_range` after each compaction for that.

use rocksdb::DB;
use serde::Serialize;

use crate::db::{cf, CF_SM_META, SM_DATA_CFS};

/// The key space's size on disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DbSize {
    /// Bytes of live SST files.
    pub sst_bytes: u64,
    /// Bytes of memtables (written, not yet flushed to SST files).
    pub memtable_bytes: u64,
}

impl DbSize {
    /// SST files plus memtables: the figure the quota is checked against.
    pub fn total(&self) -> u64 {
        self.sst_bytes.saturating_add(self.memtable_bytes)
    }
}

fn key_space_cfs() -> impl Iterator<Item = &'static str> {
    SM_DATA_CFS.iter().copied().chain([CF_SM_META])
}

/// Measures the key space from RocksDB's properties (cheap: no I/O).
pub fn measure(db: &DB) -> DbSize {
    let mut size = DbSize::default();
    for name in key_space_cfs() {
        let Ok(handle) = cf(db, name) else { continue };
        let prop = |p| {
            db.property_int_value_cf(handle, p)
                .ok()
                .flatten()
                .unwrap_or(0)
        };
        size.sst_bytes += prop(rocksdb::properties::LIVE_SST_FILES_SIZE);
        size.memtable_bytes += prop(rocksdb::properties::CUR_SIZE_ALL_MEM_TABLES);
    }
    size
}

/// Compacts the key space's column families over their whole range, so the
/// space held by deleted keys and compacted history is given back. Blocking:
/// run it off the async threads.
pub fn defragment(db: &DB) {
    for name in key_space_cfs() {
        if let Ok(handle) = cf(db, name) {
            db.compact_range_cf(handle, None::<&[u8]>, None::<&[u8]>);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_grows_with_writes_and_shrinks_after_delete_and_defragment() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = crate::db::open(dir.path()).map_err(std::io::Error::other)?;
        let empty = measure(&db);
        let kv = cf(&db, crate::db::CF_KV)?;
        let value = vec![7u8; 4096];
        for i in 0..512u32 {
            db.put_cf(kv, i.to_be_bytes(), &value)
                .map_err(std::io::Error::other)?;
        }
        let full = measure(&db);
        assert!(
            full.total() >= empty.total() + 512 * 4096,
            "{empty:?} {full:?}"
        );
        for i in 0..512u32 {
            db.delete_cf(kv, i.to_be_bytes())
                .map_err(std::io::Error::other)?;
        }
        defragment(&db);
        let after = measure(&db);
        assert!(after.total() < full.total() / 2, "{full:?} {after:?}");
        Ok(())
    }
}
