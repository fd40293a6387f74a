//! Property tests: the MVCC key space on RocksDB against a plain `BTreeMap`
//! model with etcd's semantics, and determinism across batch boundaries.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use rocksdb::DB;
use tempfile::TempDir;

use super::index::KeyIndex;
use super::mvcc::{
    compact_step, entry_hash, load_state, physical_compact_revision, ApplyBatch, Change, MvccState,
    RangeResult, Record,
};
use super::types::CompactRefusal;
use super::{
    Command, CommandResponse, Compare, CompareOp, CompareTarget, KeyValue, KvError, KvReader,
    Limits, ReadError, TxnOp, TxnOpResponse, TxnRequest,
};
use crate::db;

// ---------------------------------------------------------------- the model

/// A live key of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelKv {
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
}

impl ModelKv {
    fn kv(&self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }

    fn record(&self) -> Record {
        Record {
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
        }
    }
}

type Map = BTreeMap<String, ModelKv>;

/// etcd's key space, as plainly as it can be written.
struct Model {
    map: Map,
    revision: u64,
    /// `snapshots[r]` is the key space as of revision `r` (index 0: empty).
    snapshots: Vec<Map>,
    /// Reads and change logs below this revision are gone.
    compact: u64,
}

fn op_holds(op: CompareOp, ordering: Ordering) -> bool {
    match op {
        CompareOp::Equal => ordering == Ordering::Equal,
        CompareOp::NotEqual => ordering != Ordering::Equal,
        CompareOp::Less => ordering == Ordering::Less,
        CompareOp::Greater => ordering == Ordering::Greater,
    }
}

fn matching(map: &Map, key: &str, prefix: bool) -> Vec<KeyValue> {
    if prefix {
        map.iter()
            .filter(|(k, _)| k.starts_with(key))
            .map(|(k, v)| v.kv(k))
            .collect()
    } else {
        map.get(key).map(|v| v.kv(key)).into_iter().collect()
    }
}

fn model_put(map: &mut Map, key: &str, value: &[u8], revision: u64) -> Option<KeyValue> {
    let prev = map.get(key).cloned();
    let next = match &prev {
        Some(p) => ModelKv {
            value: value.to_vec(),
            create_revision: p.create_revision,
            mod_revision: revision,
            version: p.version + 1,
        },
        None => ModelKv {
            value: value.to_vec(),
            create_revision: revision,
            mod_revision: revision,
            version: 1,
        },
    };
    map.insert(key.to_string(), next);
    prev.map(|p| p.kv(key))
}

fn model_delete(map: &mut Map, key: &str, prefix: bool) -> Vec<KeyValue> {
    let victims = matching(map, key, prefix);
    for kv in &victims {
        map.remove(&kv.key);
    }
    victims
}

impl Model {
    fn new() -> Self {
        Model {
            map: Map::new(),
            revision: 0,
            snapshots: vec![Map::new()],
            compact: 0,
        }
    }

    /// etcd: a value compare on a missing key fails whatever the operator
    /// (there is no value to compare); the numeric targets read 0 for it.
    fn compare(&self, c: &Compare) -> bool {
        let kv = self.map.get(&c.key);
        let number =
            |f: fn(&ModelKv) -> u64, operand: u64| op_holds(c.op, kv.map_or(0, f).cmp(&operand));
        match &c.target {
            CompareTarget::Value(v) => {
                kv.is_some_and(|kv| op_holds(c.op, kv.value.as_slice().cmp(v.as_slice())))
            }
            CompareTarget::Version(v) => number(|kv| kv.version, *v),
            CompareTarget::ModRevision(v) => number(|kv| kv.mod_revision, *v),
            CompareTarget::CreateRevision(v) => number(|kv| kv.create_revision, *v),
        }
    }

    /// Applies `cmd` and returns the response the store must give.
    fn apply(&mut self, cmd: &Command) -> CommandResponse {
        let rev = self.revision + 1;
        let mut next = self.map.clone();
        let (wrote, response) = match cmd {
            Command::Put {
                key,
                value,
                prev_kv,
            } => {
                let prev = model_put(&mut next, key, value, rev);
                let response = CommandResponse::Put {
                    revision: rev,
                    prev_kv: prev.filter(|_| *prev_kv),
                };
                (true, response)
            }
            Command::Delete {
                key,
                prefix,
                prev_kv,
            } => {
                let deleted = model_delete(&mut next, key, *prefix);
                let wrote = !deleted.is_empty();
                let response = CommandResponse::Delete {
                    revision: if wrote { rev } else { self.revision },
                    deleted: deleted.len() as u64,
                    prev_kvs: if *prev_kv { deleted } else { Vec::new() },
                };
                (wrote, response)
            }
            Command::Txn(txn) => {
                let succeeded = txn.compare.iter().all(|c| self.compare(c));
                let ops = if succeeded {
                    &txn.success
                } else {
                    &txn.failure
                };
                let mut wrote = false;
                let mut responses = Vec::new();
                for op in ops {
                    responses.push(match op {
                        TxnOp::Put { key, value } => {
                            model_put(&mut next, key, value, rev);
                            wrote = true;
                            TxnOpResponse::Put { revision: rev }
                        }
                        TxnOp::Delete { key, prefix } => {
                            let deleted = model_delete(&mut next, key, *prefix).len() as u64;
                            wrote |= deleted > 0;
                            TxnOpResponse::Delete { deleted }
                        }
                        TxnOp::Get { key, prefix } => TxnOpResponse::Get {
                            kvs: matching(&next, key, *prefix),
                        },
                    });
                }
                let response = CommandResponse::Txn {
                    succeeded,
                    revision: if wrote { rev } else { self.revision },
                    responses,
                };
                (wrote, response)
            }
            Command::Compact { revision } => {
                let refused = if *revision <= self.compact {
                    Some(CompactRefusal::AlreadyCompacted)
                } else if *revision > self.revision {
                    Some(CompactRefusal::FutureRevision)
                } else {
                    self.compact = *revision;
                    None
                };
                let response = CommandResponse::Compact {
                    revision: self.revision,
                    compact_revision: self.compact,
                    refused,
                };
                (false, response)
            }
            Command::Session(_) => unreachable!("the model applies no session commands"),
            Command::Auth(_) => unreachable!("the model applies no auth commands"),
            Command::Alarm(_) => unreachable!("the model applies no alarm commands"),
        };
        if wrote {
            self.map = next;
            self.revision = rev;
            self.snapshots.push(self.map.clone());
        }
        response
    }

    fn hash(&self) -> u128 {
        self.map.iter().fold(0u128, |acc, (k, v)| {
            acc.wrapping_add(entry_hash(k, &v.record()))
        })
    }

    /// The key space a read at `revision` (None or 0: now) sees, with the
    /// revision the read reports; `Err` with the current revision when it is
    /// in the future.
    fn at(&self, revision: Option<u64>) -> Result<(u64, &Map), u64> {
        match revision {
            None | Some(0) => Ok((self.revision, &self.map)),
            Some(r) if r > self.revision => Err(self.revision),
            Some(r) => Ok((r, &self.snapshots[r as usize])),
        }
    }

    /// `Some(compact revision)` when a read at `revision` must be refused as
    /// compacted (the store checks "future" first).
    fn compacted(&self, revision: Option<u64>) -> Option<u64> {
        match revision {
            Some(r) if r != 0 && r <= self.revision && r < self.compact => Some(self.compact),
            _ => None,
        }
    }

    /// The events of revision `r`: every key whose state differs from `r - 1`.
    fn changes(&self, r: u64) -> Vec<Change> {
        let (before, after) = (&self.snapshots[r as usize - 1], &self.snapshots[r as usize]);
        let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
        keys.sort();
        keys.dedup();
        keys.into_iter()
            .filter(|k| before.get(*k) != after.get(*k))
            .map(|k| Change {
                key: k.clone(),
                kv: after.get(k).map(ModelKv::record),
                prev: before.get(k).map(ModelKv::record),
            })
            .collect()
    }
}

// ------------------------------------------------------------- strategies

/// Keys from a small alphabet, so that prefixes overlap and keys collide.
const KEYS: [&str; 8] = ["a", "a/b", "a/c", "a/b/c", "ab", "b", "b/a", "c"];
/// Prefixes, including the empty one (everything) and one matching nothing.
const PREFIXES: [&str; 8] = ["", "a", "a/", "a/b", "ab", "b", "c", "d"];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS.to_vec()).prop_map(str::to_string)
}

/// A key, or a prefix (with `true`).
fn key_or_prefix() -> impl Strategy<Value = (String, bool)> {
    prop_oneof![
        3 => key().prop_map(|k| (k, false)),
        2 => prop::sample::select(PREFIXES.to_vec()).prop_map(|p| (p.to_string(), true)),
    ]
}

/// Values: a few fixed ones (so value compares hit), empty, non-UTF-8, random.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(Vec::new()),
        Just(b"x".to_vec()),
        Just(b"y".to_vec()),
        Just(vec![0xff, 0x00]),
        prop::collection::vec(any::<u8>(), 0..6),
    ]
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        value().prop_map(CompareTarget::Value),
        (0u64..4).prop_map(CompareTarget::Version),
        (0u64..24).prop_map(CompareTarget::ModRevision),
        (0u64..24).prop_map(CompareTarget::CreateRevision),
    ];
    let op = prop::sample::select(vec![
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ]);
    (key(), target, op).prop_map(|(key, target, op)| Compare { key, target, op })
}

fn txn_op() -> impl Strategy<Value = TxnOp> {
    prop_oneof![
        (key(), value()).prop_map(|(key, value)| TxnOp::Put { key, value }),
        key_or_prefix().prop_map(|(key, prefix)| TxnOp::Delete { key, prefix }),
        key_or_prefix().prop_map(|(key, prefix)| TxnOp::Get { key, prefix }),
    ]
}

fn command() -> impl Strategy<Value = Command> {
    let txn = (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(txn_op(), 0..4),
        prop::collection::vec(txn_op(), 0..4),
    )
        .prop_map(|(compare, success, failure)| {
            Command::Txn(TxnRequest {
                compare,
                success,
                failure,
            })
        });
    prop_oneof![
        4 => (key(), value(), any::<bool>()).prop_map(|(key, value, prev_kv)| Command::Put { key, value, prev_kv }),
        2 => (key_or_prefix(), any::<bool>())
            .prop_map(|((key, prefix), prev_kv)| Command::Delete { key, prefix, prev_kv }),
        3 => txn,
    ]
}

/// Which revision a read asks for.
#[derive(Debug, Clone)]
enum At {
    /// No revision (now).
    Now,
    /// `revision=0`, which also means now.
    Zero,
    /// A revision in `1..=current`, picked by index.
    Past(Index),
    /// `current + n`, which must be refused.
    Future(u64),
}

impl At {
    fn resolve(&self, current: u64) -> Option<u64> {
        match self {
            At::Now => None,
            At::Zero => Some(0),
            At::Past(i) if current == 0 => Some(i.index(1) as u64),
            At::Past(i) => Some(i.index(current as usize) as u64 + 1),
            At::Future(n) => Some(current + n),
        }
    }
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        2 => Just(At::Now),
        1 => Just(At::Zero),
        4 => any::<Index>().prop_map(At::Past),
        1 => (1u64..3).prop_map(At::Future),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// Commands applied in one `ApplyBatch` (one RocksDB write).
    Batch(Vec<Command>),
    /// Compact to a revision picked among 0 ..= current + 1, then remove the
    /// history physically in steps of the given size.
    Compact(Index, u64),
    Get(String, At),
    Range(String, Option<usize>, At),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => prop::collection::vec(command(), 1..2).prop_map(Step::Batch),
        2 => prop::collection::vec(command(), 2..5).prop_map(Step::Batch),
        2 => (key(), at()).prop_map(|(k, a)| Step::Get(k, a)),
        1 => (any::<Index>(), 1u64..4).prop_map(|(i, n)| Step::Compact(i, n)),
        2 => (
            prop::sample::select(PREFIXES.to_vec()),
            prop::option::of(0usize..4),
            at()
        )
            .prop_map(|(p, l, a)| Step::Range(p.to_string(), l, a)),
    ]
}

// ----------------------------------------------------------------- harness

/// A fresh database in a temporary directory.
struct Store {
    db: Arc<DB>,
    reader: KvReader,
    state: MvccState,
    /// The key index batches read current keys from, as the state machine
    /// keeps it; `None` reads them from RocksDB.
    index: Option<KeyIndex>,
    _dir: TempDir,
}

impl Store {
    fn new() -> Store {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = db::open(dir.path()).expect("open rocksdb");
        let state = load_state(&db).expect("load state");
        Store {
            reader: KvReader::new(db.clone()),
            db,
            state,
            index: None,
            _dir: dir,
        }
    }

    /// A store whose batches go through a key index.
    fn indexed() -> Store {
        let mut store = Store::new();
        store.index = Some(KeyIndex::load(&store.db).expect("load index"));
        store
    }

    /// Applies `commands` as one batch, written atomically.
    fn apply(&mut self, commands: &[Command]) -> Vec<CommandResponse> {
        let (responses, write_batch, state, update) = {
            let mut batch = match &self.index {
                Some(index) => ApplyBatch::with_index(&self.db, self.state, index),
                None => ApplyBatch::new(&self.db, self.state),
            };
            let responses: Vec<CommandResponse> = commands
                .iter()
                .map(|c| batch.apply(c).expect("apply"))
                .collect();
            let (write_batch, state, update) = batch.finish_indexed().expect("finish");
            (responses, write_batch, state, update)
        };
        self.db.write(write_batch).expect("write batch");
        self.state = state;
        if let Some(index) = &mut self.index {
            index.update(update);
        }
        responses
    }

    /// Checks that the index (if any) holds exactly what the `kv` column
    /// family holds, and sums to the state digest.
    fn check_index(&self) -> Result<(), TestCaseError> {
        if let Some(index) = &self.index {
            let on_disk = KeyIndex::load(&self.db).expect("load index");
            prop_assert_eq!(index, &on_disk, "index against the kv column family");
            prop_assert_eq!(index.state_hash(), self.state.state_hash);
        }
        Ok(())
    }
}

fn accepted(cmd: &Command) -> bool {
    Limits::default().check_command(cmd).is_ok()
}

fn check_future<T: std::fmt::Debug>(
    result: Result<T, ReadError>,
    requested: Option<u64>,
    current: u64,
) -> Result<(), TestCaseError> {
    match result {
        Err(ReadError::Kv(KvError::FutureRevision {
            requested: r,
            current: c,
        })) => {
            prop_assert_eq!(Some(r), requested);
            prop_assert_eq!(c, current);
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "a read at future revision {requested:?} (current {current}) gave {other:?}"
        ))),
    }
}

fn check_compacted<T: std::fmt::Debug>(
    result: Result<T, ReadError>,
    requested: Option<u64>,
    compact: u64,
) -> Result<(), TestCaseError> {
    match result {
        Err(ReadError::Kv(KvError::Compacted {
            requested: r,
            compact_revision: c,
        })) => {
            prop_assert_eq!(Some(r), requested);
            prop_assert_eq!(c, compact);
            Ok(())
        }
        other => Err(TestCaseError::fail(format!(
            "a read at compacted revision {requested:?} (compact {compact}) gave {other:?}"
        ))),
    }
}

fn run_against_model(steps: &[Step], indexed: bool) -> Result<(), TestCaseError> {
    let mut store = if indexed {
        Store::indexed()
    } else {
        Store::new()
    };
    let mut model = Model::new();
    for step in steps {
        match step {
            Step::Batch(commands) => {
                let commands: Vec<Command> =
                    commands.iter().filter(|c| accepted(c)).cloned().collect();
                let expected: Vec<CommandResponse> =
                    commands.iter().map(|c| model.apply(c)).collect();
                let actual = store.apply(&commands);
                prop_assert_eq!(&actual, &expected, "responses to {:?}", commands);
                prop_assert_eq!(store.state.revision, model.revision);
                prop_assert_eq!(store.state.compact_revision, model.compact);
                prop_assert_eq!(
                    store.state.state_hash,
                    model.hash(),
                    "incremental hash vs model"
                );
                let persisted = store.reader.state().expect("state");
                prop_assert_eq!(persisted, store.state, "persisted counters");
                store.check_index()?;
            }
            Step::Compact(index, step) => {
                let target = index.index(model.revision as usize + 2) as u64;
                let cmd = Command::Compact { revision: target };
                let expected = model.apply(&cmd);
                let actual = store.apply(std::slice::from_ref(&cmd));
                prop_assert_eq!(&actual[0], &expected, "compact to {}", target);
                let mut done = physical_compact_revision(&store.db).expect("physical");
                while done < model.compact {
                    let hi = (done + step).min(model.compact);
                    compact_step(&store.db, done, hi).expect("compact step");
                    done = hi;
                }
                store.check_index()?;
            }
            Step::Get(key, at) => {
                let revision = at.resolve(model.revision);
                let actual = store.reader.get(key, revision);
                if let Some(compact) = model.compacted(revision) {
                    check_compacted(actual, revision, compact)?;
                    continue;
                }
                match model.at(revision) {
                    Ok((rev, map)) => {
                        let expected = (rev, map.get(key).map(|v| v.kv(key)));
                        let actual = actual.map_err(|e| {
                            TestCaseError::fail(format!("get {key} at {revision:?}: {e}"))
                        })?;
                        prop_assert_eq!(actual, expected, "get {} at {:?}", key, revision);
                    }
                    Err(current) => check_future(actual, revision, current)?,
                }
            }
            Step::Range(prefix, limit, at) => {
                let revision = at.resolve(model.revision);
                let actual = store.reader.range(prefix, *limit, revision);
                if let Some(compact) = model.compacted(revision) {
                    check_compacted(actual, revision, compact)?;
                    continue;
                }
                match model.at(revision) {
                    Ok((rev, map)) => {
                        let all = matching(map, prefix, true);
                        let cut = limit.unwrap_or(usize::MAX);
                        let expected = RangeResult {
                            revision: rev,
                            more: all.len() > cut,
                            kvs: all.into_iter().take(cut).collect(),
                        };
                        let actual = actual.map_err(|e| {
                            TestCaseError::fail(format!(
                                "range {prefix:?} limit {limit:?} at {revision:?}: {e}"
                            ))
                        })?;
                        prop_assert_eq!(
                            actual,
                            expected,
                            "range {:?} limit {:?} at {:?}",
                            prefix,
                            limit,
                            revision
                        );
                    }
                    Err(current) => check_future(actual, revision, current)?,
                }
            }
        }
    }

    // The incremental digest equals a full recompute, and the change log of
    // every revision holds exactly the keys that revision changed.
    prop_assert_eq!(
        store.reader.recompute_hash().expect("recompute"),
        store.state.state_hash
    );
    for r in model.compact.max(1)..=model.revision {
        let mut actual = store
            .reader
            .changes(r)
            .expect("changes")
            .unwrap_or_default();
        actual.sort_by(|a, b| a.key.cmp(&b.key));
        prop_assert_eq!(actual, model.changes(r), "changes of revision {}", r);
    }
    prop_assert_eq!(
        store.reader.changes(model.revision + 1).expect("changes"),
        None
    );
    Ok(())
}

/// Applies `commands` one per batch on one store and in chunks of `chunks`
/// sizes on another (as two nodes may split the same log differently); both
/// must give the same responses and end in the same state.
fn run_determinism(commands: &[Command], chunks: &[usize]) -> Result<(), TestCaseError> {
    let commands: Vec<Command> = commands.iter().filter(|c| accepted(c)).cloned().collect();
    let mut one = Store::new();
    let mut two = Store::indexed();
    let singles: Vec<CommandResponse> = commands
        .iter()
        .flat_map(|c| one.apply(std::slice::from_ref(c)))
        .collect();
    let mut chunked = Vec::new();
    let mut rest = commands.as_slice();
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (head, tail) = rest.split_at(n);
        chunked.extend(two.apply(head));
        rest = tail;
    }
    prop_assert_eq!(&singles, &chunked);
    prop_assert_eq!(one.state, two.state);
    let all_one = one.reader.range("", None, None).expect("range");
    let all_two = two.reader.range("", None, None).expect("range");
    prop_assert_eq!(&all_one, &all_two);
    for r in 1..one.state.revision {
        let past_one = one.reader.range("", None, Some(r)).expect("range");
        let past_two = two.reader.range("", None, Some(r)).expect("range");
        prop_assert_eq!(past_one, past_two, "history at revision {}", r);
    }
    prop_assert_eq!(
        one.reader.recompute_hash().expect("recompute"),
        two.state.state_hash
    );
    Ok(())
}

/// Applies `steps` to a store that reads current keys from RocksDB and to
/// one that reads them from the key index: every answer, the counters and
/// the whole key space and history must be the same, and after every step
/// the index must hold exactly the `kv` column family. A `Get` step reopens
/// the indexed store's index from disk, as a restart or a snapshot install
/// does.
fn run_with_and_without_index(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut plain = Store::new();
    let mut indexed = Store::indexed();
    for step in steps {
        match step {
            Step::Batch(commands) => {
                let commands: Vec<Command> =
                    commands.iter().filter(|c| accepted(c)).cloned().collect();
                let a = plain.apply(&commands);
                let b = indexed.apply(&commands);
                prop_assert_eq!(a, b, "responses to {:?}", commands);
            }
            Step::Compact(index, step) => {
                let target = index.index(plain.state.revision as usize + 2) as u64;
                let cmd = Command::Compact { revision: target };
                let a = plain.apply(std::slice::from_ref(&cmd));
                let b = indexed.apply(std::slice::from_ref(&cmd));
                prop_assert_eq!(&a, &b, "compact to {}", target);
                for store in [&plain, &indexed] {
                    let mut done = physical_compact_revision(&store.db).expect("physical");
                    while done < store.state.compact_revision {
                        let hi = (done + step).min(store.state.compact_revision);
                        compact_step(&store.db, done, hi).expect("compact step");
                        done = hi;
                    }
                }
            }
            Step::Get(..) => {
                indexed.index = Some(KeyIndex::load(&indexed.db).expect("reload index"));
            }
            Step::Range(prefix, limit, at) => {
                let revision = at.resolve(plain.state.revision);
                let a = plain.reader.range(prefix, *limit, revision).ok();
                let b = indexed.reader.range(prefix, *limit, revision).ok();
                prop_assert_eq!(a, b, "range {:?} at {:?}", prefix, revision);
            }
        }
        prop_assert_eq!(plain.state, indexed.state);
        indexed.check_index()?;
    }
    let all_plain = plain.reader.range("", None, None).expect("range");
    let all_indexed = indexed.reader.range("", None, None).expect("range");
    prop_assert_eq!(all_plain, all_indexed);
    for r in plain.state.compact_revision.max(1)..=plain.state.revision {
        prop_assert_eq!(
            plain.reader.changes(r).expect("changes"),
            indexed.reader.changes(r).expect("changes"),
            "changes of revision {}",
            r
        );
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        // Failures print the minimal case; no regression files in the source tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn mvcc_matches_a_btreemap_model(steps in prop::collection::vec(step(), 1..30)) {
        run_against_model(&steps, false)?;
    }

    #[test]
    fn mvcc_with_the_key_index_matches_a_btreemap_model(
        steps in prop::collection::vec(step(), 1..30),
    ) {
        run_against_model(&steps, true)?;
    }

    #[test]
    fn the_key_index_changes_no_answer_and_matches_the_disk(
        steps in prop::collection::vec(step(), 1..30),
    ) {
        run_with_and_without_index(&steps)?;
    }

    #[test]
    fn same_commands_give_the_same_state_whatever_the_batching(
        commands in prop::collection::vec(command(), 1..40),
        chunks in prop::collection::vec(1usize..6, 1..8),
    ) {
        run_determinism(&commands, &chunks)?;
    }
}

/// A few hand-written etcd cases the properties rely on, pinned explicitly.
#[test]
fn value_compare_on_a_missing_key_fails_for_every_operator() {
    let mut store = Store::new();
    for op in [
        CompareOp::Equal,
        CompareOp::NotEqual,
        CompareOp::Less,
        CompareOp::Greater,
    ] {
        let txn = Command::Txn(TxnRequest {
            compare: vec![Compare {
                key: "missing".into(),
                target: CompareTarget::Value(b"x".to_vec()),
                op,
            }],
            success: vec![],
            failure: vec![TxnOp::Get {
                key: "missing".into(),
                prefix: false,
            }],
        });
        let responses = store.apply(&[txn]);
        assert!(
            matches!(
                &responses[0],
                CommandResponse::Txn {
                    succeeded: false,
                    revision: 0,
                    ..
                }
            ),
            "{op:?}: {responses:?}"
        );
    }
}

#[test]
fn txn_ops_see_earlier_ops_of_their_branch_and_share_one_revision() {
    let mut store = Store::new();
    let put = |key: &str, value: &[u8]| TxnOp::Put {
        key: key.into(),
        value: value.to_vec(),
    };
    let get = |key: &str, prefix: bool| TxnOp::Get {
        key: key.into(),
        prefix,
    };
    let responses = store.apply(&[
        Command::Put {
            key: "a/x".into(),
            value: b"old".to_vec(),
            prev_kv: false,
        },
        Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![
                get("a/", true),
                put("a/y", b"1"),
                TxnOp::Delete {
                    key: "a/x".into(),
                    prefix: false,
                },
                get("a/", true),
            ],
            failure: vec![],
        }),
    ]);
    let CommandResponse::Txn {
        succeeded: true,
        revision: 2,
        responses,
    } = &responses[1]
    else {
        panic!("unexpected {responses:?}");
    };
    let keys = |r: &TxnOpResponse| match r {
        TxnOpResponse::Get { kvs } => kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
        other => panic!("not a get: {other:?}"),
    };
    assert_eq!(keys(&responses[0]), ["a/x"]);
    assert_eq!(responses[1], TxnOpResponse::Put { revision: 2 });
    assert_eq!(responses[2], TxnOpResponse::Delete { deleted: 1 });
    assert_eq!(keys(&responses[3]), ["a/y"]);
}

/// Physical compaction keeps exactly what reads and events at or above the
/// compact revision need: everything from it on, and each key's latest
/// version below it (unless deleted).
#[test]
fn physical_compaction_keeps_what_permitted_reads_need() {
    let mut store = Store::new();
    let put = |k: &str, v: &str| Command::Put {
        key: k.into(),
        value: v.as_bytes().to_vec(),
        prev_kv: false,
    };
    let del = |k: &str| Command::Delete {
        key: k.into(),
        prefix: false,
        prev_kv: false,
    };
    // r1 a=1, r2 b=1, r3 a=2, r4 delete b, r5 c=1, r6 a=3
    for c in [
        put("a", "1"),
        put("b", "1"),
        put("a", "2"),
        del("b"),
        put("c", "1"),
        put("a", "3"),
    ] {
        store.apply(&[c]);
    }
    store.apply(&[Command::Compact { revision: 4 }]);
    compact_step(&store.db, 0, 2).expect("step");
    compact_step(&store.db, 2, 4).expect("step");
    assert_eq!(physical_compact_revision(&store.db).expect("physical"), 4);

    let at4 = store.reader.range("", None, Some(4)).expect("range at 4");
    let got: Vec<(String, Vec<u8>, u64)> = at4
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect();
    assert_eq!(got, vec![("a".to_string(), b"2".to_vec(), 3)]);
    let at5 = store.reader.range("", None, Some(5)).expect("range at 5");
    assert_eq!(at5.kvs.len(), 2);
    assert_eq!(
        store
            .reader
            .get("a", Some(4))
            .expect("get")
            .1
            .map(|kv| kv.value),
        Some(b"2".to_vec())
    );
    assert_eq!(store.reader.get("b", Some(4)).expect("get").1, None);
    assert!(matches!(
        store.reader.get("a", Some(3)),
        Err(ReadError::Kv(KvError::Compacted { .. }))
    ));

    // What is physically left: a@3 (a's latest below 4), a@6, c@5, and b@2
    // and b@4: revision 4 (b's delete) is still watchable, and its event
    // needs the tombstone and, for prev_kv, the version it deleted.
    assert_eq!(
        history_left(&store),
        versions(&[("a", 3), ("a", 6), ("b", 2), ("b", 4), ("c", 5)])
    );
    // The change log keeps revision 4 on, for watches from the compact revision.
    assert!(store.reader.changes(3).expect("changes").is_none());
    assert_eq!(
        store.reader.changes(4).expect("changes"),
        Some(vec![Change {
            key: "b".into(),
            kv: None,
            prev: Some(rec("1", 2, 2, 1)),
        }])
    );

    // Past revision 4, b's history has nothing left to serve.
    store.apply(&[Command::Compact { revision: 5 }]);
    compact_step(&store.db, 4, 5).expect("step");
    assert_eq!(
        history_left(&store),
        versions(&[("a", 3), ("a", 6), ("c", 5)])
    );
    assert!(store.reader.changes(4).expect("changes").is_none());
}

fn rec(value: &str, create_revision: u64, mod_revision: u64, version: u64) -> Record {
    Record {
        value: value.as_bytes().to_vec(),
        create_revision,
        mod_revision,
        version,
    }
}

fn versions(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, r)| (k.to_string(), *r)).collect()
}

/// The (key, revision) of every `history` entry, in order.
fn history_left(store: &Store) -> Vec<(String, u64)> {
    let history = db::cf(&store.db, db::CF_HISTORY).expect("cf");
    store
        .db
        .iterator_cf(history, rocksdb::IteratorMode::Start)
        .map(|item| {
            let (k, _) = item.expect("item");
            let rev = u64::from_be_bytes(k[k.len() - 8..].try_into().expect("8 bytes"));
            let key = std::str::from_utf8(&k[..k.len() - 9]).expect("utf8");
            (key.to_string(), rev)
        })
        .collect()
}

// ------------------------------------------- the change feed, rebuilt

fn put(key: &str, value: &str) -> Command {
    Command::Put {
        key: key.into(),
        value: value.as_bytes().to_vec(),
        prev_kv: false,
    }
}

fn delete(key: &str, prefix: bool) -> Command {
    Command::Delete {
        key: key.into(),
        prefix,
        prev_kv: false,
    }
}

fn event(key: &str, kv: Option<Record>, prev: Option<Record>) -> Change {
    Change {
        key: key.into(),
        kv,
        prev,
    }
}

/// Every `changes` row: (revision, raw key length, raw value length).
fn change_rows(store: &Store) -> Vec<(u64, usize, usize)> {
    let changes = db::cf(&store.db, db::CF_CHANGES).expect("cf");
    store
        .db
        .iterator_cf(changes, rocksdb::IteratorMode::Start)
        .map(|item| {
            let (k, v) = item.expect("item");
            let rev = u64::from_be_bytes(k[..8].try_into().expect("8 bytes"));
            (rev, k.len(), v.len())
        })
        .collect()
}

fn changes(store: &Store, revision: u64) -> Option<Vec<Change>> {
    store.reader.changes(revision).expect("changes")
}

/// Compacts logically to `revision`, then physically in steps of `step`.
fn compact(store: &mut Store, revision: u64, step: u64) {
    store.apply(&[Command::Compact { revision }]);
    let mut done = physical_compact_revision(&store.db).expect("physical");
    while done < revision {
        let hi = (done + step).min(revision);
        compact_step(&store.db, done, hi).expect("compact step");
        done = hi;
    }
}

#[test]
fn events_carry_the_previous_version_across_deletes() {
    let mut store = Store::new();
    // r1 k=1, r2 k=2, r3 delete k, r4 k=3 (created again)
    for c in [
        put("k", "1"),
        put("k", "2"),
        delete("k", false),
        put("k", "3"),
    ] {
        store.apply(&[c]);
    }
    assert_eq!(
        changes(&store, 1),
        Some(vec![event("k", Some(rec("1", 1, 1, 1)), None)])
    );
    assert_eq!(
        changes(&store, 2),
        Some(vec![event(
            "k",
            Some(rec("2", 1, 2, 2)),
            Some(rec("1", 1, 1, 1))
        )])
    );
    assert_eq!(
        changes(&store, 3),
        Some(vec![event("k", None, Some(rec("2", 1, 2, 2)))])
    );
    assert_eq!(
        changes(&store, 4),
        Some(vec![event("k", Some(rec("3", 4, 4, 1)), None)])
    );
    assert_eq!(changes(&store, 5), None);
}

#[test]
fn a_transaction_is_one_revision_with_every_key_in_order() {
    let mut store = Store::new();
    store.apply(&[put("x", "old"), put("z", "gone")]);
    let txn = Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            TxnOp::Put {
                key: "y".into(),
                value: b"new".to_vec(),
            },
            TxnOp::Put {
                key: "x".into(),
                value: b"newer".to_vec(),
            },
            TxnOp::Delete {
                key: "z".into(),
                prefix: false,
            },
        ],
        failure: vec![],
    });
    store.apply(&[txn]);
    assert_eq!(
        changes(&store, 3),
        Some(vec![
            event("y", Some(rec("new", 3, 3, 1)), None),
            event("x", Some(rec("newer", 1, 3, 2)), Some(rec("old", 1, 1, 1))),
            event("z", None, Some(rec("gone", 2, 2, 1))),
        ])
    );
    // One small row per event, in the order applied.
    let rows: Vec<(u64, usize)> = change_rows(&store)
        .into_iter()
        .map(|(r, k, _)| (r, k))
        .collect();
    assert_eq!(rows, vec![(1, 12), (2, 12), (3, 12), (3, 12), (3, 12)]);
}

#[test]
fn a_prefix_delete_stores_keys_not_values() {
    let mut store = Store::new();
    let big = vec![7u8; 256 * 1024];
    let keys: Vec<String> = (0..40).map(|i| format!("app/{i:02}")).collect();
    for k in &keys {
        store.apply(&[Command::Put {
            key: k.clone(),
            value: big.clone(),
            prev_kv: false,
        }]);
    }
    store.apply(&[put("other", "stays"), delete("app/", true)]);
    let revision = store.state.revision;
    assert_eq!(revision, 42);
    let events = changes(&store, revision).expect("events");
    assert_eq!(events.len(), keys.len());
    for (i, (e, k)) in events.iter().zip(&keys).enumerate() {
        let created = i as u64 + 1;
        assert_eq!(e.key, *k);
        assert_eq!(e.kv, None);
        let prev = e.prev.as_ref().expect("prev_kv of a deleted key");
        assert_eq!(
            (prev.create_revision, prev.mod_revision, prev.version),
            (created, created, 1)
        );
        assert_eq!(prev.value, big);
    }
    // The delete's 40 rows hold keys and revisions: 10 MiB of deleted values
    // are not copied into the change feed.
    let rows: Vec<(u64, usize, usize)> = change_rows(&store)
        .into_iter()
        .filter(|(r, _, _)| *r == revision)
        .collect();
    assert_eq!(rows.len(), keys.len());
    assert!(rows.iter().all(|(_, _, v)| *v < 32), "{rows:?}");
}

#[test]
fn events_at_and_above_the_compact_revision_keep_prev_kv() {
    for step in [1, 2, 3, 10] {
        let mut store = Store::new();
        // r1 k=1, r2 j=1, r3 k=2, r4 j=2, r5 delete k, r6 k=3
        for c in [
            put("k", "1"),
            put("j", "1"),
            put("k", "2"),
            put("j", "2"),
            delete("k", false),
            put("k", "3"),
        ] {
            store.apply(&[c]);
        }
        compact(&mut store, 3, step);
        assert_eq!(changes(&store, 2), None, "step {step}");
        assert_eq!(
            changes(&store, 3),
            Some(vec![event(
                "k",
                Some(rec("2", 1, 3, 2)),
                Some(rec("1", 1, 1, 1))
            )]),
            "step {step}"
        );
        compact(&mut store, 5, step);
        assert_eq!(
            changes(&store, 5),
            Some(vec![event("k", None, Some(rec("2", 1, 3, 2)))]),
            "step {step}"
        );
        compact(&mut store, 6, step);
        assert_eq!(
            changes(&store, 6),
            Some(vec![event("k", Some(rec("3", 6, 6, 1)), None)]),
            "step {step}"
        );
        // j was last written at 4, below the compact revision: its version
        // there is the previous one of the next write.
        store.apply(&[put("j", "3")]);
        assert_eq!(
            changes(&store, 7),
            Some(vec![event(
                "j",
                Some(rec("3", 2, 7, 3)),
                Some(rec("2", 2, 4, 2))
            )]),
            "step {step}"
        );
        assert_eq!(
            history_left(&store),
            versions(&[("j", 4), ("j", 7), ("k", 6)]),
            "step {step}"
        );
    }
}

/// Data directories of earlier builds hold `changes` rows of the earlier
/// shape (a revision's whole `Vec<Change>` under the bare revision): they
/// are still read, watched and compacted.
#[test]
fn rows_of_the_earlier_shape_are_read_and_compacted() {
    let mut store = Store::new();
    for c in [put("a", "1"), put("a", "2"), put("b", "1")] {
        store.apply(&[c]);
    }
    // Rewrite revisions 1 and 2 as an earlier build stored them.
    let cf = db::cf(&store.db, db::CF_CHANGES).expect("cf");
    let mut legacy = Vec::new();
    for rev in 1..=2u64 {
        let events = changes(&store, rev).expect("events");
        store
            .db
            .delete_range_cf(cf, rev.to_be_bytes(), (rev + 1).to_be_bytes())
            .expect("delete rows");
        let encoded = crate::codec::encode(&events).expect("encode");
        store
            .db
            .put_cf(cf, rev.to_be_bytes(), encoded)
            .expect("legacy row");
        legacy.push(events);
    }
    let shapes = |store: &Store| -> Vec<(u64, usize)> {
        change_rows(store)
            .iter()
            .map(|(r, k, _)| (*r, *k))
            .collect()
    };
    assert_eq!(shapes(&store), vec![(1, 8), (2, 8), (3, 12)]);
    assert_eq!(changes(&store, 1).as_ref(), Some(&legacy[0]));
    assert_eq!(
        changes(&store, 2),
        Some(vec![event(
            "a",
            Some(rec("2", 1, 2, 2)),
            Some(rec("1", 1, 1, 1))
        )])
    );
    assert_eq!(
        changes(&store, 3),
        Some(vec![event("b", Some(rec("1", 3, 3, 1)), None)])
    );
    compact(&mut store, 3, 1);
    assert_eq!(shapes(&store), vec![(3, 12)]);
    // a's keys were found in the earlier-shape rows, and a@1 removed.
    assert_eq!(history_left(&store), versions(&[("a", 2), ("b", 3)]));
}

/// A row of the current shape carries its own format version, so an earlier
/// build, which decodes a whole `Vec<Change>`, refuses it instead of
/// misreading it.
#[test]
fn rows_of_the_current_shape_are_refused_by_the_earlier_decoder() {
    let mut store = Store::new();
    store.apply(&[put("a", "1")]);
    let cf = db::cf(&store.db, db::CF_CHANGES).expect("cf");
    let (_, value) = store
        .db
        .iterator_cf(cf, rocksdb::IteratorMode::Start)
        .next()
        .expect("a row")
        .expect("read");
    assert!(matches!(
        crate::codec::decode::<Vec<Change>>(&value),
        Err(crate::codec::CodecError::UnsupportedVersion { found: 2 })
    ));
}

/// Validation keeps a key to one write per revision; a command that bypasses
/// it still leaves one event per key, from before the revision to after it.
#[test]
fn writes_that_bypass_validation_leave_one_event_per_key() {
    let mut store = Store::new();
    store.apply(&[put("a", "0")]);
    let txn = Command::Txn(TxnRequest {
        compare: vec![],
        success: vec![
            TxnOp::Put {
                key: "a".into(),
                value: b"1".to_vec(),
            },
            TxnOp::Delete {
                key: "a".into(),
                prefix: false,
            },
            TxnOp::Put {
                key: "a".into(),
                value: b"2".to_vec(),
            },
        ],
        failure: vec![],
    });
    assert!(!accepted(&txn));
    store.apply(&[txn]);
    assert_eq!(
        changes(&store, 2),
        Some(vec![event(
            "a",
            Some(rec("2", 2, 2, 1)),
            Some(rec("0", 1, 1, 1))
        )])
    );
}
