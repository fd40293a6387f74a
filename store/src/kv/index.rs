//! The in-memory key index: for every live key, what a write needs to know
//! about its current version without reading RocksDB (etcd's `treeIndex`).
//!
//! A put must know the key's `create_revision` and `version` to build the
//! new record, its `mod_revision` for the change feed, and the digest
//! contribution of the record it replaces to keep the running
//! [`MvccState::state_hash`](super::mvcc::MvccState) up to date. Without the
//! index each of these costs a point lookup in the `kv` column family
//! (memtable skip-list search, then block cache or disk). With it, a plain
//! put or a compare on a version or revision reads nothing from RocksDB;
//! only what needs the old value (`prev_kv`, a compare on the value, a
//! delete, a transaction's get) still reads it.
//!
//! The index holds exactly the `kv` column family's keys and never anything
//! else:
//! - it is built from `kv` when the state machine opens (which covers a
//!   restore, done offline before the node starts) and again after a
//!   snapshot install ([`KeyIndex::load`]);
//! - an applied batch updates it only once that batch's RocksDB write has
//!   succeeded ([`KeyIndex::update`] with what
//!   [`ApplyBatch::finish_indexed`](super::mvcc::ApplyBatch::finish_indexed)
//!   returns), so a failed write leaves it as the disk is;
//! - physical compaction removes `history` entries and `changes` rows only,
//!   never `kv` rows, so it does not touch the index.
//!
//! Memory: one [`IndexEntry`] (40 bytes) and the key (its UTF-8 bytes on the
//! heap, behind a 16-byte boxed `str`) per live key, in a hash table with a
//! control byte per slot and up to 1/8 of its slots free: about 64 bytes
//! plus the key's length, plus the allocator's rounding of the key. A
//! million live keys of 32 bytes take about 100 MB; keys are at most
//! `--max-key-bytes` (4096 by default), so the key count the `--quota-bytes`
//! key space can hold bounds the index.

use std::collections::HashMap;
use std::io;

use rocksdb::{IteratorMode, DB};

use super::mvcc::{entry_hash, Record};
use crate::codec;
use crate::db::{cf, io_err, CF_KV};

/// What the index knows about one live key: the record's revisions and
/// version, and its contribution to the state digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Revision that created the key.
    pub create_revision: u64,
    /// Revision of the key's last write.
    pub mod_revision: u64,
    /// Writes since creation.
    pub version: u64,
    /// [`entry_hash`] of the key and record, as two halves so the entry
    /// needs only 8-byte alignment (a `u128` would pad it to 48 bytes).
    hash: [u64; 2],
}

impl IndexEntry {
    /// The entry of `key` holding `record`.
    pub fn of(key: &str, record: &Record) -> Self {
        Self::with_hash(record, entry_hash(key, record))
    }

    /// The entry of a record whose [`entry_hash`] is already known.
    pub fn with_hash(record: &Record, hash: u128) -> Self {
        IndexEntry {
            create_revision: record.create_revision,
            mod_revision: record.mod_revision,
            version: record.version,
            hash: [hash as u64, (hash >> 64) as u64],
        }
    }

    /// The record's [`entry_hash`].
    pub fn hash(&self) -> u128 {
        u128::from(self.hash[0]) | (u128::from(self.hash[1]) << 64)
    }
}

/// Changes to apply to the index once their batch is on disk: key → its
/// new entry, or `None` when the batch deleted it.
pub type IndexUpdate = Vec<(String, Option<IndexEntry>)>;

/// The in-memory key index (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyIndex {
    keys: HashMap<Box<str>, IndexEntry>,
}

impl KeyIndex {
    /// An empty index (an empty key space).
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds the index from the `kv` column family of `db`.
    pub fn load(db: &DB) -> io::Result<Self> {
        let mut keys = HashMap::new();
        for item in db.iterator_cf(cf(db, CF_KV)?, IteratorMode::Start) {
            let (k, v) = item.map_err(io_err)?;
            let key = std::str::from_utf8(&k)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let record: Record = codec::decode(&v)?;
            keys.insert(Box::from(key), IndexEntry::of(key, &record));
        }
        keys.shrink_to_fit();
        Ok(KeyIndex { keys })
    }

    /// The entry of `key`, if it is live.
    pub fn get(&self, key: &str) -> Option<&IndexEntry> {
        self.keys.get(key)
    }

    /// Live keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is live.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The state digest of the indexed key space: the wrapping sum of every
    /// entry's hash, which equals [`MvccState::state_hash`] when the index
    /// matches the disk.
    ///
    /// [`MvccState::state_hash`]: super::mvcc::MvccState::state_hash
    pub fn state_hash(&self) -> u128 {
        self.keys
            .values()
            .fold(0u128, |acc, e| acc.wrapping_add(e.hash()))
    }

    /// Applies the changes of a batch that has been written.
    pub fn update(&mut self, update: IndexUpdate) {
        for (key, entry) in update {
            match entry {
                Some(e) => {
                    if let Some(slot) = self.keys.get_mut(key.as_str()) {
                        *slot = e;
                    } else {
                        self.keys.insert(key.into_boxed_str(), e);
                    }
                }
                None => {
                    self.keys.remove(key.as_str());
                }
            }
        }
    }
}
