//! Applying a batch of commands to the MVCC key space, the way the Raft state
//! machine applies a batch of committed entries: one `ApplyBatch` over the
//! node's RocksDB, every command applied, `finish`, then one write (the state
//! machine's write is not synced: the Raft log holds the entries durably).
//!
//! A temporary database is opened with the node's own options
//! (`ballast_store::db::open`). Batches put 256-byte values to keys drawn from
//! 10,000, so most puts replace a key, as in the load benchmark. Each case
//! runs twice: reading every key's current record from RocksDB, and through
//! the in-memory key index as the state machine does (`… (key index)`).
//!
//! ```sh
//! cargo bench -p ballast-bench --bench state_machine            # or add -- --quick
//! ```

use std::hint::black_box;
use std::time::Duration;

use ballast_store::internals::{load_state, ApplyBatch, Command, KeyIndex, MvccState};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 256;
const BATCH_SIZES: [usize; 2] = [1, 64];

/// The node's database and the MVCC counters the next batch starts from.
struct Store {
    _dir: tempfile::TempDir,
    db: std::sync::Arc<rocksdb::DB>,
    state: MvccState,
    /// The key index batches consult, as the state machine keeps it; `None`
    /// reads current records from RocksDB.
    index: Option<KeyIndex>,
}

/// Keys of the next commands, round-robin over the key space with a stride.
struct Keys {
    next: usize,
}

impl Keys {
    /// `n` puts to the next keys.
    fn commands(&mut self, n: usize) -> Vec<Command> {
        (0..n)
            .map(|_| {
                self.next = (self.next + 7919) % KEYS;
                Command::Put {
                    key: format!("/services/api/key-{:05}", self.next),
                    value: vec![b'v'; VALUE_BYTES],
                    prev_kv: false,
                }
            })
            .collect()
    }
}

impl Store {
    /// A new database in which every key exists, so the measured puts replace
    /// them.
    fn new(keys: &mut Keys, indexed: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = ballast_store::db::open(dir.path()).expect("open RocksDB");
        let state = load_state(&db).expect("MVCC state");
        let mut store = Store {
            _dir: dir,
            db,
            state,
            index: indexed.then(KeyIndex::new),
        };
        for _ in 0..KEYS / 100 {
            store.apply_and_write(&keys.commands(100));
        }
        store
    }

    fn apply(&self, commands: &[Command]) -> ApplyBatch<'_> {
        let mut batch = match &self.index {
            Some(index) => ApplyBatch::with_index(&self.db, self.state, index),
            None => ApplyBatch::new(&self.db, self.state),
        };
        for c in commands {
            black_box(batch.apply(c).expect("apply"));
        }
        batch
    }

    fn apply_and_write(&mut self, commands: &[Command]) {
        let (write_batch, state, update) = self.apply(commands).finish_indexed().expect("finish");
        self.db.write(write_batch).expect("write");
        self.state = state;
        if let Some(index) = &mut self.index {
            index.update(update);
        }
    }
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("state_machine");
    for (indexed, suffix) in [(false, ""), (true, " (key index)")] {
        let mut keys = Keys { next: 0 };
        let store = Store::new(&mut keys, indexed);
        apply_cases(&mut group, store, keys, suffix);
    }
    group.finish();
}

fn apply_cases(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    mut store: Store,
    mut keys: Keys,
    suffix: &str,
) {
    for n in BATCH_SIZES {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("apply and write {n} puts{suffix}"), |b| {
            b.iter_batched(
                || keys.commands(n),
                |commands| store.apply_and_write(&commands),
                BatchSize::SmallInput,
            )
        });
        // The CPU side alone: the same batch, built and dropped unwritten.
        group.bench_function(format!("apply {n} puts (no write){suffix}"), |b| {
            b.iter_batched(
                || keys.commands(n),
                |commands| black_box(store.apply(&commands).finish().expect("finish")),
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = apply
}
criterion_main!(benches);
