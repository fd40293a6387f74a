//! Prefix reads in bounded steps over one RocksDB snapshot: [`RangeScan`].
//!
//! [`KvReader::range`](super::KvReader::range) collects a whole prefix in
//! memory, which is fine for configuration prefixes and ruinous for a
//! 300 MB one. A `RangeScan` instead holds one RocksDB snapshot (taken
//! through the install gate, see [`KvReader::range_scan`](super::KvReader::range_scan))
//! and hands the key-values to a visitor a few at a time: each
//! [`RangeScan::step`] opens a fresh iterator on the snapshot, seeks past
//! the last key handed out, and stops as soon as the visitor says so. No
//! iterator outlives a step (a long-lived RocksDB iterator pins memtables
//! and files); only the snapshot does, and a snapshot is what makes every
//! step read the same revision however long the caller takes between
//! steps: writes, compaction and a snapshot install that run meanwhile are
//! invisible to it.

use std::io;

use rocksdb::{Direction, IteratorMode, ReadOptions, Snapshot, DB};

use super::mvcc::{split_history_key, Record};
use crate::codec;
use crate::db::{cf, io_err, CF_HISTORY, CF_KV};

fn utf8(raw: &[u8]) -> io::Result<&str> {
    std::str::from_utf8(raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// What a visitor wants after seeing one key-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// It took the key-value; hand out the next.
    Take,
    /// It did not take this key-value; the next step starts with it again.
    Stop,
}

/// A prefix read in progress (see the module docs).
pub struct RangeScan<'a> {
    db: &'a DB,
    snap: Snapshot<'a>,
    /// `None`: the current key space (`kv`); `Some(r)`: history as of `r`.
    at: Option<u64>,
    revision: u64,
    cursor: Cursor,
}

/// Where a scan stands.
struct Cursor {
    prefix: String,
    /// Where the next step seeks to (inclusive).
    resume: Vec<u8>,
    /// Key-values still allowed by the caller's limit.
    remaining: Option<usize>,
    finished: bool,
    more: bool,
}

impl<'a> RangeScan<'a> {
    /// A scan of `prefix` on `snap`: the current key space when `at` is
    /// `None`, otherwise the key space as of revision `at`. `revision` is
    /// the revision that reflects (the caller checked it against the
    /// compact and current revisions).
    pub(crate) fn new(
        db: &'a DB,
        snap: Snapshot<'a>,
        prefix: &str,
        at: Option<u64>,
        revision: u64,
        limit: Option<usize>,
    ) -> Self {
        RangeScan {
            db,
            snap,
            at,
            revision,
            cursor: Cursor {
                prefix: prefix.to_owned(),
                resume: prefix.as_bytes().to_vec(),
                remaining: limit,
                finished: false,
                more: false,
            },
        }
    }

    /// The revision every key-value of this scan reflects.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Whether every key-value was handed out (or the limit was reached).
    pub fn finished(&self) -> bool {
        self.cursor.finished
    }

    /// Once finished: whether the limit cut the result short.
    pub fn more(&self) -> bool {
        self.cursor.more
    }

    /// Hands key-values, in key order, to `visit` until it answers
    /// [`Visit::Stop`] or the scan is finished. Returns how many it took.
    pub fn step(&mut self, visit: impl FnMut(&str, &Record) -> Visit) -> io::Result<usize> {
        if self.cursor.finished {
            return Ok(0);
        }
        match self.at {
            None => self.step_current(visit),
            Some(at) => self.step_history(at, visit),
        }
    }

    fn step_current(&mut self, mut visit: impl FnMut(&str, &Record) -> Visit) -> io::Result<usize> {
        let kv_cf = cf(self.db, CF_KV)?;
        let cursor = &mut self.cursor;
        let iter = self.snap.iterator_cf_opt(
            kv_cf,
            ReadOptions::default(),
            IteratorMode::From(&cursor.resume, Direction::Forward),
        );
        let mut taken = 0;
        for item in iter {
            let (k, v) = item.map_err(io_err)?;
            if !k.starts_with(cursor.prefix.as_bytes()) {
                break;
            }
            let record: Record = codec::decode(&v)?;
            // The smallest key after `k`.
            let after = [&k[..], &[0]].concat();
            if !cursor.hand_out(&k, after, &record, &mut visit)? {
                return Ok(taken);
            }
            taken += 1;
        }
        cursor.finished = true;
        Ok(taken)
    }

    fn step_history(
        &mut self,
        at: u64,
        mut visit: impl FnMut(&str, &Record) -> Visit,
    ) -> io::Result<usize> {
        let history_cf = cf(self.db, CF_HISTORY)?;
        let cursor = &mut self.cursor;
        let iter = self.snap.iterator_cf_opt(
            history_cf,
            ReadOptions::default(),
            IteratorMode::From(&cursor.resume, Direction::Forward),
        );
        let mut taken = 0;
        // The key being walked and its latest version at or before `at`
        // (`None`: a tombstone, or no version that old).
        let mut walking: Option<(Vec<u8>, Option<Record>)> = None;
        // Every history entry of a key sorts below the key followed by
        // 0x01 (its entries are `key NUL revision`), and every later key at
        // or above it (keys hold no NUL).
        let after = |key: &[u8]| [key, &[1]].concat();
        for item in iter {
            let (raw, value) = item.map_err(io_err)?;
            let (user_key, rev) = split_history_key(&raw)?;
            if !user_key.starts_with(cursor.prefix.as_bytes()) {
                break;
            }
            if walking.as_ref().is_some_and(|(k, _)| k != user_key) {
                if let Some((key, Some(record))) = walking.take() {
                    if !cursor.hand_out(&key, after(&key), &record, &mut visit)? {
                        return Ok(taken);
                    }
                    taken += 1;
                }
            }
            let entry = walking.get_or_insert_with(|| (user_key.to_vec(), None));
            if rev <= at {
                entry.1 = codec::decode(&value)?;
            }
        }
        if let Some((key, Some(record))) = walking.take() {
            if !cursor.hand_out(&key, after(&key), &record, &mut visit)? {
                return Ok(taken);
            }
            taken += 1;
        }
        cursor.finished = true;
        Ok(taken)
    }
}

impl Cursor {
    /// Offers the live key-value `key` to `visit`; false when the step must
    /// end (the visitor stopped, or the limit is reached with this
    /// key-value left over). `after` is where the scan goes on once `key`
    /// is taken.
    fn hand_out(
        &mut self,
        key: &[u8],
        after: Vec<u8>,
        record: &Record,
        visit: &mut impl FnMut(&str, &Record) -> Visit,
    ) -> io::Result<bool> {
        if self.remaining == Some(0) {
            // One more key-value exists: the limit cut the result short.
            self.finished = true;
            self.more = true;
            return Ok(false);
        }
        if visit(utf8(key)?, record) == Visit::Stop {
            self.resume = key.to_vec();
            return Ok(false);
        }
        if let Some(r) = self.remaining.as_mut() {
            *r -= 1;
        }
        self.resume = after;
        Ok(true)
    }
}
