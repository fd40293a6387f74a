//! [`RangeScan`] against [`KvReader::range`]: the same key-values, in the
//! same order, at the same revision, however the scan is cut into steps;
//! and a scan keeps reading its snapshot while the key space changes or is
//! replaced under it.

use std::sync::Arc;

use proptest::prelude::*;
use rocksdb::{WriteBatch, DB};
use tempfile::TempDir;

use super::gate::InstallGate;
use super::mvcc::{load_state, ApplyBatch, MvccState};
use super::{Command, KeyValue, KvReader, RangeScan, ReadError, Visit};
use crate::db::{self, cf, SM_DATA_CFS};

struct Store {
    db: Arc<DB>,
    reader: KvReader,
    gate: InstallGate,
    state: MvccState,
    _dir: TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(dir.path()).expect("open rocksdb");
        let state = load_state(&db).expect("load state");
        let gate = InstallGate::default();
        Store {
            reader: KvReader::new(db.clone()).with_gate(gate.clone()),
            gate,
            db,
            state,
            _dir: dir,
        }
    }

    fn apply(&mut self, commands: &[Command]) {
        let mut batch = ApplyBatch::new(&self.db, self.state);
        for c in commands {
            batch.apply(c).expect("apply");
        }
        let (write_batch, state) = batch.finish().expect("finish");
        self.db.write(write_batch).expect("write batch");
        self.state = state;
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        self.apply(&[Command::Put {
            key: key.into(),
            value: value.to_vec(),
            prev_kv: false,
        }]);
    }

    /// What a snapshot install does to the data before it loads the new
    /// records: every state machine column family emptied by range deletes.
    fn clear_like_an_install(&self) {
        for name in SM_DATA_CFS {
            let handle = cf(&self.db, name).expect("cf");
            let mut batch = WriteBatch::default();
            batch.delete_range_cf(handle, [0u8].as_slice(), [0xffu8; 64].as_slice());
            self.db.write(batch).expect("clear");
        }
    }
}

/// Reads the whole scan, `per_step` key-values per step.
fn drain(scan: &mut RangeScan<'_>, per_step: usize) -> Vec<KeyValue> {
    let mut out = Vec::new();
    while !scan.finished() {
        let mut in_step = 0;
        let taken = scan
            .step(|key, record| {
                if in_step == per_step {
                    return Visit::Stop;
                }
                in_step += 1;
                out.push(KeyValue {
                    key: key.to_owned(),
                    value: record.value.clone(),
                    create_revision: record.create_revision,
                    mod_revision: record.mod_revision,
                    version: record.version,
                });
                Visit::Take
            })
            .expect("step");
        assert!(taken > 0 || scan.finished(), "a step made no progress");
    }
    out
}

#[derive(Debug, Clone)]
enum Op {
    Put(u8, u8),
    Delete(u8),
    DeletePrefix(u8),
}

fn key(k: u8) -> String {
    // Keys that prefix one another ("a/1", "a/1x") and sort around NUL-free
    // neighbours, to exercise the seek past a taken key.
    let stem = ["a/1", "a/1x", "a/2", "b/1", "a/10", "a", "ab"][usize::from(k % 7)];
    format!("{stem}{}", k / 7)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(k, v)| Op::Put(k % 40, v)),
        2 => any::<u8>().prop_map(|k| Op::Delete(k % 40)),
        1 => any::<u8>().prop_map(|k| Op::DeletePrefix(k % 7)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn steps_read_what_a_whole_range_reads(
        ops in prop::collection::vec(op(), 1..60),
        per_step in 1usize..5,
        limit in prop::option::of(0usize..12),
        prefix in prop::sample::select(vec!["", "a", "a/1", "a/", "b", "zz"]),
    ) {
        let mut store = Store::new();
        for op in &ops {
            let cmd = match op {
                Op::Put(k, v) => Command::Put { key: key(*k), value: vec![*v; usize::from(*v % 5)], prev_kv: false },
                Op::Delete(k) => Command::Delete { key: key(*k), prefix: false, prev_kv: false },
                Op::DeletePrefix(k) => Command::Delete { key: key(*k)[..1].to_string(), prefix: true, prev_kv: false },
            };
            store.apply(&[cmd]);
        }
        let limit = limit.filter(|l| *l > 0);
        // Now, and at every past revision.
        for revision in std::iter::once(None).chain((1..=store.state.revision).map(Some)) {
            let whole = store.reader.range(prefix, limit, revision).expect("range");
            let mut scan = store.reader.range_scan(prefix, limit, revision).expect("scan");
            prop_assert_eq!(scan.revision(), whole.revision);
            let stepped = drain(&mut scan, per_step);
            prop_assert_eq!(&stepped, &whole.kvs, "revision {:?}", revision);
            prop_assert_eq!(scan.more(), whole.more, "revision {:?}", revision);
        }
    }
}

#[test]
fn a_scan_reads_its_snapshot_while_writes_and_an_install_run() {
    let mut store = Store::new();
    for i in 0..500 {
        store.put(&format!("fill/{i:04}"), format!("v{i}").as_bytes());
    }
    let expected = store.reader.range("fill/", None, None).expect("range");
    let reader = store.reader.clone();
    let mut scan = reader.range_scan("fill/", None, None).expect("scan");
    let mut seen = Vec::new();
    let mut steps = 0;
    while !scan.finished() {
        let mut n = 0;
        scan.step(|key, record| {
            if n == 7 {
                return Visit::Stop;
            }
            n += 1;
            seen.push((key.to_owned(), record.mod_revision));
            Visit::Take
        })
        .expect("step");
        steps += 1;
        match steps {
            // Writes, new keys in the middle of the range, deletes.
            3 => {
                for i in 0..500 {
                    store.put(&format!("fill/{i:04}"), b"changed");
                    store.put(&format!("fill/{i:04}x"), b"new");
                }
                store.apply(&[Command::Delete {
                    key: "fill/03".into(),
                    prefix: true,
                    prev_kv: false,
                }]);
            }
            // A snapshot install: the gate turns odd, the data goes.
            10 => {
                let installing = store.gate.begin_install();
                store.clear_like_an_install();
                drop(installing);
            }
            _ => {}
        }
    }
    assert!(steps > 10);
    let expected: Vec<(String, u64)> = expected
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.mod_revision))
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn a_scan_cannot_start_during_an_install() {
    let store = Store::new();
    let installing = store.gate.begin_install();
    assert!(matches!(
        store.reader.range_scan("", None, None),
        Err(ReadError::Installing(_))
    ));
    drop(installing);
    assert!(store.reader.range_scan("", None, None).is_ok());
}
