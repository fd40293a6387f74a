//! The MVCC key space on RocksDB: applying commands, and reading at the current
//! or a past revision.
//!
//! Layout (column families from [`crate::db`]):
//! - `kv`: user key → [`Record`] (the latest state, for fast current reads);
//! - `history`: user key, NUL, big-endian revision → `Option<Record>` (None is a
//!   tombstone), for reads at past revisions;
//! - `changes`: big-endian revision, big-endian event index → a [`ChangeRow`]:
//!   which key that event of the revision changed and the revision of the
//!   key's previous version. The watch machinery streams these as
//!   [`Change`]s, whose records are read back from `history`
//!   ([`KvReader::changes`]), so a value is stored once per version, not
//!   again in the change feed.
//!
//! Keys never contain NUL (validation refuses it), so `key NUL revision` sorts
//! every version of a key together, in revision order, before any longer key.
//!
//! Builds before the current `changes` shape stored the whole
//! `Vec<Change>` of a revision, full records included, under the bare
//! revision. Such rows are still read (they need nothing from `history`);
//! a row of the current shape carries [`CHANGE_ROW_VERSION`] instead of
//! [`codec::FORMAT_VERSION`], so an earlier build refuses it clearly.

use std::collections::{BTreeMap, HashSet};
use std::io;
use std::ops::Bound;

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::error::KvError;
use super::gate::{InstallGate, Installing};
use super::index::{IndexEntry, IndexUpdate, KeyIndex};
use super::range::RangeScan;
use super::types::{
    Command, CommandResponse, CompactRefusal, Compare, CompareTarget, KeyValue, TxnOp,
    TxnOpResponse, TxnRequest,
};
use crate::codec;
use crate::db::{cf, io_err, CF_CHANGES, CF_HISTORY, CF_KV, CF_SM_META};

/// Key in `sm_meta` holding the [`MvccState`].
pub const MVCC_STATE_KEY: &[u8] = b"mvcc";

/// A key's stored state (the key itself is the RocksDB key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Value bytes.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    /// Revision that created the key.
    pub create_revision: u64,
    /// Revision of the last write.
    pub mod_revision: u64,
    /// Writes since creation.
    pub version: u64,
}

impl Record {
    fn into_kv(self, key: String) -> KeyValue {
        KeyValue {
            key,
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

/// One event of a revision: a put (with the new record) or a delete.
///
/// Earlier builds persisted a revision's events as a `Vec<Change>`; this
/// build rebuilds them from `ChangeRow`s and `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The key.
    pub key: String,
    /// The new record, or `None` for a delete.
    pub kv: Option<Record>,
    /// The record before the change, if the key existed.
    pub prev: Option<Record>,
}

/// Format version of a `changes` row of the current shape ([`ChangeRow`]).
/// Rows of the earlier shape (a whole `Vec<Change>`) carry
/// [`codec::FORMAT_VERSION`] (1).
pub const CHANGE_ROW_VERSION: u8 = 2;

/// One event of a revision as `changes` stores it, under [`change_key`]. The
/// records are not repeated here: the new one is the key's `history` entry at
/// the event's revision (a tombstone for a delete), the previous one its entry
/// at `prev_revision`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeRow<'a> {
    /// The key that changed.
    pub key: &'a str,
    /// `mod_revision` of the key's version before the change; 0 when the key
    /// did not exist.
    pub prev_revision: u64,
}

/// Builds the `changes` key of event `index` of `revision`.
pub fn change_key(revision: u64, index: u32) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..8].copy_from_slice(&revision.to_be_bytes());
    k[8..].copy_from_slice(&index.to_be_bytes());
    k
}

/// A `changes` row, in either shape.
#[derive(Debug)]
pub enum StoredChange<'a> {
    /// One event (the current shape, key [`change_key`]).
    Event(ChangeRow<'a>),
    /// Every event of a revision with full records, as builds before
    /// [`CHANGE_ROW_VERSION`] wrote them under the bare revision.
    Legacy(Vec<Change>),
}

fn invalid_data(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn encode_change_row(row: &ChangeRow<'_>) -> io::Result<Vec<u8>> {
    postcard::to_extend(row, vec![CHANGE_ROW_VERSION])
        .map_err(|e| codec::CodecError::from(e).into())
}

/// The revision of a `changes` row, from its key.
pub fn change_revision(raw_key: &[u8]) -> io::Result<u64> {
    raw_key
        .get(..8)
        .and_then(|r| <[u8; 8]>::try_from(r).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| invalid_data("malformed changes key"))
}

/// Decodes a `changes` row: its revision and its contents.
pub fn decode_change<'a>(raw_key: &[u8], value: &'a [u8]) -> io::Result<(u64, StoredChange<'a>)> {
    let revision = change_revision(raw_key)?;
    match (raw_key.len(), value.first()) {
        (12, Some(&CHANGE_ROW_VERSION)) => Ok((
            revision,
            StoredChange::Event(
                postcard::from_bytes(&value[1..]).map_err(codec::CodecError::from)?,
            ),
        )),
        (8, _) => Ok((revision, StoredChange::Legacy(codec::decode(value)?))),
        (12, found) => Err(invalid_data(format!(
            "changes row of revision {revision} has format version {found:?}, \
             expected {CHANGE_ROW_VERSION}"
        ))),
        _ => Err(invalid_data("malformed changes key")),
    }
}

/// Revision counters and the running state digest, persisted with every
/// applied batch in the same RocksDB write as the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MvccState {
    /// Revision of the last committed mutation (0 for an empty store).
    pub revision: u64,
    /// Oldest revision still readable.
    pub compact_revision: u64,
    /// Order-independent digest of the live key space: the wrapping sum of a
    /// 128-bit hash of every (key, record). Two nodes that applied the same log
    /// have equal digests; it is updated incrementally on every write.
    pub state_hash: u128,
}

/// Digest contribution of one live key.
pub fn entry_hash(key: &str, record: &Record) -> u128 {
    let mut buf = Vec::with_capacity(key.len() + record.value.len() + 40);
    buf.extend_from_slice(&(key.len() as u64).to_le_bytes());
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(&record.create_revision.to_le_bytes());
    buf.extend_from_slice(&record.mod_revision.to_le_bytes());
    buf.extend_from_slice(&record.version.to_le_bytes());
    buf.extend_from_slice(&record.value);
    xxhash_rust::xxh3::xxh3_128(&buf)
}

/// Builds the `history` key for (key, revision).
pub fn history_key(key: &str, revision: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 9);
    k.extend_from_slice(key.as_bytes());
    k.push(0);
    k.extend_from_slice(&revision.to_be_bytes());
    k
}

/// Splits a `history` key into (user key bytes, revision).
pub fn split_history_key(raw: &[u8]) -> io::Result<(&[u8], u64)> {
    if raw.len() < 9 || raw[raw.len() - 9] != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "malformed history key",
        ));
    }
    let (key, rest) = raw.split_at(raw.len() - 9);
    let mut rev = [0u8; 8];
    rev.copy_from_slice(&rest[1..]);
    Ok((key, u64::from_be_bytes(rev)))
}

fn utf8_key(raw: &[u8]) -> io::Result<String> {
    String::from_utf8(raw.to_vec()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads the persisted MVCC counters (defaults for a new store).
pub fn load_state(db: &DB) -> io::Result<MvccState> {
    match db
        .get_cf(cf(db, CF_SM_META)?, MVCC_STATE_KEY)
        .map_err(io_err)?
    {
        Some(bytes) => Ok(codec::decode(&bytes)?),
        None => Ok(MvccState::default()),
    }
}

/// Applies commands to the key space, collecting every write into one RocksDB
/// `WriteBatch` so that a batch of Raft entries lands atomically, together with
/// the state machine's metadata.
///
/// Reads inside the batch see the batch's own earlier writes through an
/// overlay of pending records.
///
/// Given the state machine's [`KeyIndex`] ([`ApplyBatch::with_index`]), a
/// write learns a key's current revisions, version and digest from it
/// instead of reading the `kv` column family, and a key the index does not
/// hold is known to be absent without a read.
pub struct ApplyBatch<'a> {
    db: &'a DB,
    /// The index of the key space as RocksDB holds it before this batch;
    /// `None` reads every current record from RocksDB.
    index: Option<&'a KeyIndex>,
    batch: WriteBatch,
    /// Writes of this batch not yet in RocksDB: key → record (None = deleted).
    pending: BTreeMap<String, Option<Written>>,
    state: MvccState,
}

/// A record written by the batch, with its digest contribution (computed
/// once, when it is written).
struct Written {
    record: Record,
    hash: u128,
}

/// Writes collected while applying one command at one revision.
struct RevisionWriter {
    revision: u64,
    /// The events so far: key and the revision of its previous version.
    changes: Vec<(String, u64)>,
    /// Keys already in `changes`: a revision holds one event per key.
    written: HashSet<String>,
}

impl<'a> ApplyBatch<'a> {
    /// Starts a batch on top of `state` (the persisted counters).
    pub fn new(db: &'a DB, state: MvccState) -> Self {
        ApplyBatch {
            db,
            index: None,
            batch: WriteBatch::default(),
            pending: BTreeMap::new(),
            state,
        }
    }

    /// Starts a batch on top of `state` that takes what it knows of current
    /// keys from `index`, which must match `db`'s `kv` column family. Finish
    /// it with [`ApplyBatch::finish_indexed`] and, once the write batch is
    /// written, apply the returned update to the index.
    pub fn with_index(db: &'a DB, state: MvccState, index: &'a KeyIndex) -> Self {
        ApplyBatch {
            index: Some(index),
            ..Self::new(db, state)
        }
    }

    /// Gives access to the underlying write batch, so the caller can add its
    /// own metadata to the same atomic write.
    pub fn write_batch(&mut self) -> &mut WriteBatch {
        &mut self.batch
    }

    /// Finishes the batch: stores the counters and returns the write batch.
    pub fn finish(mut self) -> io::Result<(WriteBatch, MvccState)> {
        let meta = cf(self.db, CF_SM_META)?;
        self.batch
            .put_cf(meta, MVCC_STATE_KEY, codec::encode(&self.state)?);
        Ok((self.batch, self.state))
    }

    /// Finishes the batch like [`ApplyBatch::finish`], also returning the
    /// changes to the key index that the batch makes once written.
    pub fn finish_indexed(mut self) -> io::Result<(WriteBatch, MvccState, IndexUpdate)> {
        let update = std::mem::take(&mut self.pending)
            .into_iter()
            .map(|(key, w)| {
                let entry = w.map(|w| IndexEntry::with_hash(&w.record, w.hash));
                (key, entry)
            })
            .collect();
        let (batch, state) = self.finish()?;
        Ok((batch, state, update))
    }

    /// The current record of `key`, value included.
    fn current(&self, key: &str) -> io::Result<Option<Record>> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending.as_ref().map(|w| w.record.clone()));
        }
        if self.index.is_some_and(|index| index.get(key).is_none()) {
            return Ok(None);
        }
        match self
            .db
            .get_cf(cf(self.db, CF_KV)?, key.as_bytes())
            .map_err(io_err)?
        {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// What a write needs of the current record of `key`: from this batch's
    /// writes, else the index, else RocksDB.
    fn current_entry(&self, key: &str) -> io::Result<Option<IndexEntry>> {
        if let Some(pending) = self.pending.get(key) {
            return Ok(pending
                .as_ref()
                .map(|w| IndexEntry::with_hash(&w.record, w.hash)));
        }
        if let Some(index) = self.index {
            return Ok(index.get(key).copied());
        }
        Ok(self.current(key)?.map(|r| IndexEntry::of(key, &r)))
    }

    /// Current records under `prefix`, in key order, pending writes included.
    fn current_prefix(&self, prefix: &str) -> io::Result<BTreeMap<String, Record>> {
        let mut out = scan_current(self.db, None, prefix, None)?.0;
        let range = self
            .pending
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded));
        for (key, record) in range.take_while(|(k, _)| k.starts_with(prefix)) {
            match record {
                Some(w) => out.insert(key.clone(), w.record.clone()),
                None => out.remove(key),
            };
        }
        Ok(out)
    }

    fn current_matching(&self, key: &str, prefix: bool) -> io::Result<Vec<(String, Record)>> {
        if prefix {
            Ok(self.current_prefix(key)?.into_iter().collect())
        } else {
            Ok(self
                .current(key)?
                .map(|r| (key.to_string(), r))
                .into_iter()
                .collect())
        }
    }

    fn begin(&self) -> RevisionWriter {
        RevisionWriter {
            revision: self.state.revision + 1,
            changes: Vec::new(),
            written: HashSet::new(),
        }
    }

    /// Ends a command: if it wrote anything, its revision becomes current and
    /// its events are recorded under that revision, one row each.
    fn commit(&mut self, w: RevisionWriter) -> io::Result<u64> {
        if w.changes.is_empty() {
            return Ok(self.state.revision);
        }
        let changes_cf = cf(self.db, CF_CHANGES)?;
        for (index, (key, prev_revision)) in w.changes.iter().enumerate() {
            let index = u32::try_from(index)
                .map_err(|_| io::Error::other("more than 2^32 events in one revision"))?;
            let row = ChangeRow {
                key,
                prev_revision: *prev_revision,
            };
            self.batch.put_cf(
                changes_cf,
                change_key(w.revision, index),
                encode_change_row(&row)?,
            );
        }
        self.state.revision = w.revision;
        Ok(w.revision)
    }

    fn write(
        &mut self,
        w: &mut RevisionWriter,
        key: &str,
        new: Option<Record>,
        prev: Option<&IndexEntry>,
    ) -> io::Result<()> {
        let kv_cf = cf(self.db, CF_KV)?;
        let history_cf = cf(self.db, CF_HISTORY)?;
        if let Some(p) = prev {
            self.state.state_hash = self.state.state_hash.wrapping_sub(p.hash());
        }
        let written = match new {
            Some(record) => {
                let hash = entry_hash(key, &record);
                self.state.state_hash = self.state.state_hash.wrapping_add(hash);
                self.batch
                    .put_cf(kv_cf, key.as_bytes(), codec::encode(&record)?);
                Some(Written { record, hash })
            }
            None => {
                self.batch.delete_cf(kv_cf, key.as_bytes());
                None
            }
        };
        self.batch.put_cf(
            history_cf,
            history_key(key, w.revision),
            codec::encode(&written.as_ref().map(|w| &w.record))?,
        );
        self.pending.insert(key.to_string(), written);
        // Validation keeps a key to one write per revision. Should a command
        // bypass it, the revision still holds one event for the key: from its
        // state before the revision to its state after.
        if w.written.insert(key.to_string()) {
            w.changes
                .push((key.to_string(), prev.map_or(0, |p| p.mod_revision)));
        }
        Ok(())
    }

    /// Writes `value` to `key`; returns the previous record (value
    /// included) when `want_prev` asks for it and the key existed.
    fn put(
        &mut self,
        w: &mut RevisionWriter,
        key: &str,
        value: &[u8],
        want_prev: bool,
    ) -> io::Result<Option<Record>> {
        let prev = self.current_entry(key)?;
        // Only the previous value needs the record itself (a RocksDB read
        // unless this batch wrote the key).
        let prev_record = match prev {
            Some(_) if want_prev => self.current(key)?,
            _ => None,
        };
        let record = match &prev {
            Some(p) => Record {
                value: value.to_vec(),
                create_revision: p.create_revision,
                mod_revision: w.revision,
                version: p.version + 1,
            },
            None => Record {
                value: value.to_vec(),
                create_revision: w.revision,
                mod_revision: w.revision,
                version: 1,
            },
        };
        self.write(w, key, Some(record), prev.as_ref())?;
        Ok(prev_record)
    }

    fn delete(
        &mut self,
        w: &mut RevisionWriter,
        key: &str,
        prefix: bool,
    ) -> io::Result<Vec<KeyValue>> {
        let victims = self.current_matching(key, prefix)?;
        let mut deleted = Vec::with_capacity(victims.len());
        for (k, record) in victims {
            let prev = IndexEntry::of(&k, &record);
            self.write(w, &k, None, Some(&prev))?;
            deleted.push(record.into_kv(k));
        }
        Ok(deleted)
    }

    fn compare_holds(&self, c: &Compare) -> io::Result<bool> {
        // Only a compare on the value needs the record itself.
        if let CompareTarget::Value(v) = &c.target {
            return Ok(match self.current(&c.key)? {
                None => false,
                Some(r) => c.op.holds(r.value.as_slice().cmp(v.as_slice())),
            });
        }
        let current = self.current_entry(&c.key)?;
        let ordering = match (&c.target, &current) {
            (CompareTarget::Value(_), _) => return Ok(false),
            (CompareTarget::Version(v), r) => r.as_ref().map_or(0, |r| r.version).cmp(v),
            (CompareTarget::ModRevision(v), r) => r.as_ref().map_or(0, |r| r.mod_revision).cmp(v),
            (CompareTarget::CreateRevision(v), r) => {
                r.as_ref().map_or(0, |r| r.create_revision).cmp(v)
            }
        };
        Ok(c.op.holds(ordering))
    }

    fn txn(&mut self, txn: &TxnRequest) -> io::Result<CommandResponse> {
        let mut succeeded = true;
        for c in &txn.compare {
            if !self.compare_holds(c)? {
                succeeded = false;
                break;
            }
        }
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut w = self.begin();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            responses.push(match op {
                TxnOp::Put { key, value } => {
                    self.put(&mut w, key, value, false)?;
                    TxnOpResponse::Put {
                        revision: w.revision,
                    }
                }
                TxnOp::Delete { key, prefix } => {
                    let deleted = self.delete(&mut w, key, *prefix)?.len() as u64;
                    TxnOpResponse::Delete { deleted }
                }
                TxnOp::Get { key, prefix } => {
                    let kvs = self
                        .current_matching(key, *prefix)?
                        .into_iter()
                        .map(|(k, r)| r.into_kv(k))
                        .collect();
                    TxnOpResponse::Get { kvs }
                }
            });
        }
        let revision = self.commit(w)?;
        Ok(CommandResponse::Txn {
            succeeded,
            revision,
            responses,
        })
    }

    /// Applies one command. Only storage failures are errors; everything the
    /// caller asked for, including a failed compare, is a response.
    pub fn apply(&mut self, command: &Command) -> io::Result<CommandResponse> {
        match command {
            Command::Put {
                key,
                value,
                prev_kv,
            } => {
                let mut w = self.begin();
                let prev = self.put(&mut w, key, value, *prev_kv)?;
                let revision = self.commit(w)?;
                Ok(CommandResponse::Put {
                    revision,
                    prev_kv: prev.map(|r| r.into_kv(key.clone())),
                })
            }
            Command::Delete {
                key,
                prefix,
                prev_kv,
            } => {
                let mut w = self.begin();
                let deleted = self.delete(&mut w, key, *prefix)?;
                let revision = self.commit(w)?;
                Ok(CommandResponse::Delete {
                    revision,
                    deleted: deleted.len() as u64,
                    prev_kvs: if *prev_kv { deleted } else { Vec::new() },
                })
            }
            Command::Txn(txn) => self.txn(txn),
            Command::Compact { revision } => {
                let state = &mut self.state;
                let refused = if *revision <= state.compact_revision {
                    Some(CompactRefusal::AlreadyCompacted)
                } else if *revision > state.revision {
                    Some(CompactRefusal::FutureRevision)
                } else {
                    state.compact_revision = *revision;
                    None
                };
                Ok(CommandResponse::Compact {
                    revision: state.revision,
                    compact_revision: state.compact_revision,
                    refused,
                })
            }
            // Applied through the session table (`kv::sessions::apply_entry_into`),
            // which hands only the write inside to this batch.
            Command::Session(_) => Err(io::Error::other(
                "a session command reached the key space without the session table",
            )),
            // Applied to the auth table by the state machine.
            Command::Auth(_) => Err(io::Error::other(
                "an auth command reached the key space without the auth table",
            )),
            // Applied to the alarm table by the state machine.
            Command::Alarm(_) => Err(io::Error::other(
                "an alarm command reached the key space without the alarm table",
            )),
        }
    }
}

/// Result of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeResult {
    /// Revision the read reflects.
    pub revision: u64,
    /// Matching key-values in key order.
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut the result short.
    pub more: bool,
}

/// Why a read failed: the caller's request, or the disk.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request cannot be served (compacted or future revision).
    #[error(transparent)]
    Kv(#[from] KvError),
    /// Storage failed.
    #[error("storage: {0}")]
    Storage(#[from] io::Error),
    /// A snapshot install ran during the read; read again after it.
    #[error(transparent)]
    Installing(#[from] Installing),
}

/// Scans current records under `prefix` (up to `limit`), reading through `snap`
/// when given. Returns the records and whether more were left.
fn scan_current(
    db: &DB,
    snap: Option<&rocksdb::Snapshot<'_>>,
    prefix: &str,
    limit: Option<usize>,
) -> io::Result<(BTreeMap<String, Record>, bool)> {
    let kv_cf = cf(db, CF_KV)?;
    let mode = IteratorMode::From(prefix.as_bytes(), Direction::Forward);
    let iter = match snap {
        Some(s) => s.iterator_cf(kv_cf, mode),
        None => db.iterator_cf(kv_cf, mode),
    };
    let mut out = BTreeMap::new();
    for item in iter {
        let (k, v) = item.map_err(io_err)?;
        if !k.starts_with(prefix.as_bytes()) {
            break;
        }
        if limit.is_some_and(|l| out.len() >= l) {
            return Ok((out, true));
        }
        out.insert(utf8_key(&k)?, codec::decode(&v)?);
    }
    Ok((out, false))
}

/// Read-only access to the key space, each call on one consistent RocksDB
/// snapshot so the revision it reports matches the data it returns.
#[derive(Clone)]
pub struct KvReader {
    db: std::sync::Arc<DB>,
    gate: InstallGate,
}

impl KvReader {
    /// A reader over `db`.
    pub fn new(db: std::sync::Arc<DB>) -> Self {
        KvReader {
            db,
            gate: InstallGate::default(),
        }
    }

    /// The same reader, refusing reads that overlap an install through `gate`
    /// (the state machine's).
    pub fn with_gate(self, gate: InstallGate) -> Self {
        KvReader { gate, ..self }
    }

    /// The install gate reads pass through.
    pub fn gate(&self) -> &InstallGate {
        &self.gate
    }

    /// The key space's size on disk (for metrics, status and the quota).
    pub fn size(&self) -> crate::kv::size::DbSize {
        crate::kv::size::measure(&self.db)
    }

    /// The counters as of now.
    pub fn state(&self) -> io::Result<MvccState> {
        load_state(&self.db)
    }

    fn check_revision(state: &MvccState, revision: Option<u64>) -> Result<Option<u64>, KvError> {
        match revision {
            None | Some(0) => Ok(None),
            Some(r) if r > state.revision => Err(KvError::FutureRevision {
                requested: r,
                current: state.revision,
            }),
            Some(r) if r < state.compact_revision => Err(KvError::Compacted {
                requested: r,
                compact_revision: state.compact_revision,
            }),
            Some(r) if r == state.revision => Ok(None),
            Some(r) => Ok(Some(r)),
        }
    }

    /// Reads one key, now or at a past `revision`. Returns the revision the
    /// read reflects with the key-value, if it existed then.
    pub fn get(
        &self,
        key: &str,
        revision: Option<u64>,
    ) -> Result<(u64, Option<KeyValue>), ReadError> {
        self.gate.read(|| self.get_unguarded(key, revision))?
    }

    fn get_unguarded(
        &self,
        key: &str,
        revision: Option<u64>,
    ) -> Result<(u64, Option<KeyValue>), ReadError> {
        let snap = self.db.snapshot();
        let state = state_at(&self.db, &snap)?;
        match Self::check_revision(&state, revision)? {
            None => {
                let kv_cf = cf(&self.db, CF_KV)?;
                let kv = match snap.get_cf(kv_cf, key.as_bytes()).map_err(io_err)? {
                    Some(bytes) => Some(
                        codec::decode::<Record>(&bytes)
                            .map_err(io::Error::from)?
                            .into_kv(key.to_string()),
                    ),
                    None => None,
                };
                Ok((state.revision, kv))
            }
            Some(at) => {
                let found = history_prefix(&self.db, &snap, key, at, true, None)?;
                Ok((at, found.0.into_iter().next()))
            }
        }
    }

    /// Reads every key under `prefix` (all keys for an empty prefix), now or at
    /// a past `revision`, at most `limit` of them.
    pub fn range(
        &self,
        prefix: &str,
        limit: Option<usize>,
        revision: Option<u64>,
    ) -> Result<RangeResult, ReadError> {
        self.gate
            .read(|| self.range_unguarded(prefix, limit, revision))?
    }

    fn range_unguarded(
        &self,
        prefix: &str,
        limit: Option<usize>,
        revision: Option<u64>,
    ) -> Result<RangeResult, ReadError> {
        let snap = self.db.snapshot();
        let state = state_at(&self.db, &snap)?;
        match Self::check_revision(&state, revision)? {
            None => {
                let (records, more) = scan_current(&self.db, Some(&snap), prefix, limit)?;
                Ok(RangeResult {
                    revision: state.revision,
                    kvs: records.into_iter().map(|(k, r)| r.into_kv(k)).collect(),
                    more,
                })
            }
            Some(at) => {
                let (kvs, more) = history_prefix(&self.db, &snap, prefix, at, false, limit)?;
                Ok(RangeResult {
                    revision: at,
                    kvs,
                    more,
                })
            }
        }
    }

    /// Starts a prefix read that hands its key-values out in steps (see
    /// [`RangeScan`]): one RocksDB snapshot, taken through the install gate,
    /// serves every step, so the whole read reflects one revision however
    /// long it runs. The gate only needs to pass while the snapshot is
    /// taken: a snapshot taken when no install ran holds a complete key
    /// space, and an install that starts later writes (deletes ranges and
    /// loads records) where the snapshot does not see. Installs never wait
    /// for a scan.
    pub fn range_scan(
        &self,
        prefix: &str,
        limit: Option<usize>,
        revision: Option<u64>,
    ) -> Result<RangeScan<'_>, ReadError> {
        let snap = self.gate.read(|| self.db.snapshot())?;
        let state = state_at(&self.db, &snap)?;
        let (at, revision) = match Self::check_revision(&state, revision)? {
            None => (None, state.revision),
            Some(at) => (Some(at), at),
        };
        Ok(RangeScan::new(&self.db, snap, prefix, at, revision, limit))
    }

    /// The events of revision `revision`, in the order they were applied, if
    /// still retained (`None` for a revision that changed nothing, is
    /// compacted, or is in the future).
    ///
    /// Rebuilt on one RocksDB snapshot from the revision's `changes` rows and
    /// the `history` entries they name: compaction keeps, for every retained
    /// row, the key's entry at that revision and its previous version (see
    /// [`compact_step`]), so `prev` is there whenever the key existed before.
    pub fn changes(&self, revision: u64) -> io::Result<Option<Vec<Change>>> {
        let snap = self.db.snapshot();
        changes_at(&self.db, &snap, revision)
    }

    /// Recomputes the state digest from scratch (for consistency checks; it
    /// reads every key).
    pub fn recompute_hash(&self) -> io::Result<u128> {
        let (records, _) = scan_current(&self.db, None, "", None)?;
        Ok(records
            .iter()
            .fold(0u128, |acc, (k, r)| acc.wrapping_add(entry_hash(k, r))))
    }
}

/// The events of `revision` as `snap` sees them (see [`KvReader::changes`]).
fn changes_at(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    revision: u64,
) -> io::Result<Option<Vec<Change>>> {
    let changes_cf = cf(db, CF_CHANGES)?;
    let history_cf = cf(db, CF_HISTORY)?;
    let start = revision.to_be_bytes();
    let mut opts = ReadOptions::default();
    if let Some(next) = revision.checked_add(1) {
        opts.set_iterate_upper_bound(next.to_be_bytes());
    }
    let mut events = Vec::new();
    let mut found = false;
    for item in snap.iterator_cf_opt(
        changes_cf,
        opts,
        IteratorMode::From(&start, Direction::Forward),
    ) {
        let (raw, value) = item.map_err(io_err)?;
        if !raw.starts_with(&start) {
            break;
        }
        found = true;
        let row = match decode_change(&raw, &value)?.1 {
            StoredChange::Legacy(changes) => return Ok(Some(changes)),
            StoredChange::Event(row) => row,
        };
        let entry = |rev: u64| -> io::Result<Option<Option<Record>>> {
            snap.get_cf(history_cf, history_key(row.key, rev))
                .map_err(io_err)?
                .map(|bytes| codec::decode(&bytes).map_err(io::Error::from))
                .transpose()
        };
        let kv = entry(revision)?.ok_or_else(|| {
            invalid_data(format!(
                "history of key {:?} at revision {revision} is missing",
                row.key
            ))
        })?;
        // Compaction never removes a retained event's previous version; if
        // it is gone all the same, the event goes without it, as etcd sends
        // no prev_kv once the previous revision is compacted.
        let prev = match row.prev_revision {
            0 => None,
            rev => entry(rev)?.flatten(),
        };
        events.push(Change {
            key: row.key.to_string(),
            kv,
            prev,
        });
    }
    Ok(found.then_some(events))
}

fn state_at(db: &DB, snap: &rocksdb::Snapshot<'_>) -> io::Result<MvccState> {
    match snap
        .get_cf(cf(db, CF_SM_META)?, MVCC_STATE_KEY)
        .map_err(io_err)?
    {
        Some(bytes) => Ok(codec::decode(&bytes)?),
        None => Ok(MvccState::default()),
    }
}

/// Reads keys as of revision `at` from the history. With `exact`, only the key
/// `key` itself; otherwise every key starting with `key`.
fn history_prefix(
    db: &DB,
    snap: &rocksdb::Snapshot<'_>,
    key: &str,
    at: u64,
    exact: bool,
    limit: Option<usize>,
) -> io::Result<(Vec<KeyValue>, bool)> {
    let history_cf = cf(db, CF_HISTORY)?;
    let mut opts = ReadOptions::default();
    if exact {
        opts.set_iterate_upper_bound(history_key(key, u64::MAX));
    }
    let start: Vec<u8> = if exact {
        history_key(key, 0)
    } else {
        key.as_bytes().to_vec()
    };
    let iter = snap.iterator_cf_opt(
        history_cf,
        opts,
        IteratorMode::From(&start, Direction::Forward),
    );
    let mut out = Vec::new();
    // The latest version at or before `at` of the key being walked.
    let mut current: Option<(Vec<u8>, Option<Record>)> = None;
    let flush =
        |entry: Option<(Vec<u8>, Option<Record>)>, out: &mut Vec<KeyValue>| -> io::Result<()> {
            if let Some((k, Some(record))) = entry {
                out.push(record.into_kv(utf8_key(&k)?));
            }
            Ok(())
        };
    for item in iter {
        let (raw, value) = item.map_err(io_err)?;
        let (user_key, rev) = split_history_key(&raw)?;
        if exact && user_key != key.as_bytes() {
            continue;
        }
        if !user_key.starts_with(key.as_bytes()) {
            break;
        }
        let same_key = current
            .as_ref()
            .is_some_and(|(k, _)| k.as_slice() == user_key);
        if !same_key {
            flush(current.take(), &mut out)?;
            if limit.is_some_and(|l| out.len() >= l) {
                // A further key exists; whether it was live at `at` decides `more`.
                return Ok((out, more_live_after(&raw, at, snap, history_cf, key)?));
            }
            current = Some((user_key.to_vec(), None));
        }
        if rev <= at {
            let record: Option<Record> = codec::decode(&value)?;
            current = Some((user_key.to_vec(), record));
        }
    }
    flush(current.take(), &mut out)?;
    Ok((out, false))
}

/// Whether any key at or after history key `from` under `prefix` was live at `at`.
fn more_live_after(
    from: &[u8],
    at: u64,
    snap: &rocksdb::Snapshot<'_>,
    history_cf: &rocksdb::ColumnFamily,
    prefix: &str,
) -> io::Result<bool> {
    let iter = snap.iterator_cf(history_cf, IteratorMode::From(from, Direction::Forward));
    let mut walking: Option<(Vec<u8>, bool)> = None;
    for item in iter {
        let (raw, value) = item.map_err(io_err)?;
        let (user_key, rev) = split_history_key(&raw)?;
        if !user_key.starts_with(prefix.as_bytes()) {
            break;
        }
        if walking
            .as_ref()
            .is_some_and(|(k, _)| k.as_slice() != user_key)
        {
            if walking.as_ref().is_some_and(|(_, live)| *live) {
                return Ok(true);
            }
            walking = None;
        }
        let live = walking.as_ref().is_some_and(|(_, l)| *l);
        let live = if rev <= at {
            codec::decode::<Option<Record>>(&value)?.is_some()
        } else {
            live
        };
        walking = Some((user_key.to_vec(), live));
    }
    Ok(walking.is_some_and(|(_, live)| live))
}

/// Key in `sm_meta` holding how far history has been physically removed.
pub const PHYSICAL_COMPACT_KEY: &[u8] = b"physical_compact";

/// How far history has been physically removed (0 = nothing yet): the
/// `changes` rows below it are gone, and below it `history` keeps only each
/// key's latest version (unless that is a tombstone).
pub fn physical_compact_revision(db: &DB) -> io::Result<u64> {
    match db
        .get_cf(cf(db, CF_SM_META)?, PHYSICAL_COMPACT_KEY)
        .map_err(io_err)?
    {
        Some(bytes) => Ok(codec::decode(&bytes)?),
        None => Ok(0),
    }
}

/// One bounded step of physical compaction, from physical compact revision
/// `lo` to `hi`: for every key changed in revisions `[lo, hi)`, deletes its
/// history entries below `hi` except the latest one (and that one too if it
/// is a tombstone); deletes the `changes` rows of `[lo, hi)`; and records `hi`
/// as the physical compact revision, all in one write.
///
/// What stays is exactly what the reads and events at or above `hi` need:
/// - a read at revision `r >= hi` needs each key's latest entry at or before
///   `r`: either an entry at or above `hi` (never removed) or the latest
///   entry below `hi` (kept unless a tombstone, which reads as absent);
/// - a retained `changes` row at `r >= hi` needs its key's entry at `r`
///   (at or above `hi`) and the previous version, the key's latest entry
///   below `r`: at or above `hi`, or else the latest below `hi`, which is a
///   live record (a previous version always is) and so kept.
///
/// Keys changed only below `lo` were compacted by earlier steps (steps cover
/// `[0, hi)` without gaps), so looking at `[lo, hi)` finds every key with
/// something to remove. Callers keep `hi` at or below the logical compact
/// revision. Returns the number of history entries deleted.
pub fn compact_step(db: &DB, lo: u64, hi: u64) -> io::Result<usize> {
    let changes_cf = cf(db, CF_CHANGES)?;
    let history_cf = cf(db, CF_HISTORY)?;
    let mut keys = std::collections::BTreeSet::new();
    let start = lo.to_be_bytes();
    let mut opts = ReadOptions::default();
    opts.set_iterate_upper_bound(hi.to_be_bytes());
    for item in db.iterator_cf_opt(
        changes_cf,
        opts,
        IteratorMode::From(&start, Direction::Forward),
    ) {
        let (raw, value) = item.map_err(io_err)?;
        if change_revision(&raw)? >= hi {
            break;
        }
        match decode_change(&raw, &value)?.1 {
            StoredChange::Event(row) => {
                keys.insert(row.key.to_string());
            }
            StoredChange::Legacy(changes) => keys.extend(changes.into_iter().map(|c| c.key)),
        }
    }
    let mut batch = WriteBatch::default();
    let mut deleted = 0;
    for key in keys {
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(history_key(&key, hi));
        let from = history_key(&key, 0);
        let mut entries: Vec<(Box<[u8]>, bool)> = Vec::new();
        for item in db.iterator_cf_opt(
            history_cf,
            opts,
            IteratorMode::From(&from, Direction::Forward),
        ) {
            let (raw, value) = item.map_err(io_err)?;
            let live = codec::decode::<Option<Record>>(&value)?.is_some();
            entries.push((raw, live));
        }
        let keep_last = entries.last().is_some_and(|(_, live)| *live);
        let remove = if keep_last {
            entries.len() - 1
        } else {
            entries.len()
        };
        for (raw, _) in entries.into_iter().take(remove) {
            batch.delete_cf(history_cf, raw);
            deleted += 1;
        }
    }
    // Rows of both shapes (`revision` and `revision, index`) of `[lo, hi)`
    // sort between these bounds.
    batch.delete_range_cf(changes_cf, lo.to_be_bytes(), hi.to_be_bytes());
    batch.put_cf(
        cf(db, CF_SM_META)?,
        PHYSICAL_COMPACT_KEY,
        codec::encode(&hi)?,
    );
    db.write(batch).map_err(io_err)?;
    Ok(deleted)
}
