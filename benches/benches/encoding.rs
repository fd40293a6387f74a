//! Encodings on the write and watch paths, without I/O:
//!
//! - the RocksDB keys every put writes: `history_key` (key, NUL, big-endian
//!   revision) and `change_key` (revision, event index), and the split of a
//!   history key that reads at past revisions do;
//! - a revision's watch events, encoded once as JSON fragments and SSE frames
//!   (`encode_revision`), and the frame a prefix watcher that matches only
//!   some of the events gets (`frame_for`, which rebuilds a frame).
//!
//! ```sh
//! cargo bench -p ballast-bench --bench encoding                 # or add -- --quick
//! ```

use std::hint::black_box;
use std::time::Duration;

use ballast_store::internals::{
    change_key, encode_revision, history_key, split_history_key, Change, Filter, Record,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEY: &str = "/services/api/timeouts/request";
const VALUE_BYTES: usize = 256;

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    group.throughput(Throughput::Elements(1));
    let mut revision = 1_000_000u64;
    group.bench_function("history_key", |b| {
        b.iter(|| {
            revision += 1;
            black_box(history_key(black_box(KEY), revision))
        })
    });
    let raw = history_key(KEY, 123_456_789);
    group.bench_function("split_history_key", |b| {
        b.iter(|| black_box(split_history_key(black_box(&raw)).expect("well formed")))
    });
    group.bench_function("change_key", |b| {
        b.iter(|| {
            revision += 1;
            black_box(change_key(revision, black_box(3)))
        })
    });
    group.finish();
}

fn record(revision: u64) -> Record {
    Record {
        value: vec![b'v'; VALUE_BYTES],
        create_revision: 1,
        mod_revision: revision,
        version: revision,
    }
}

/// `n` put events of one revision, each with its previous version.
fn changes(revision: u64, n: usize) -> Vec<Change> {
    (0..n)
        .map(|i| Change {
            key: format!("/services/api/key-{i:05}"),
            kv: Some(record(revision)),
            prev: Some(record(revision - 1)),
        })
        .collect()
}

fn watch_events(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch");
    for n in [1usize, 16] {
        let events = changes(1000, n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(format!("encode_revision ({n} events)"), |b| {
            b.iter(|| black_box(encode_revision(1000, black_box(&events))))
        });
    }
    // Half of 16 events under the watched prefix: the shared frame cannot be
    // used, a filtered one is built for this watcher.
    let mut events = changes(1000, 16);
    for (i, e) in events.iter_mut().enumerate().filter(|(i, _)| i % 2 == 1) {
        e.key = format!("/other/key-{i:05}");
    }
    let encoded = encode_revision(1000, &events);
    let filter = Filter {
        key: "/services/".to_owned(),
        prefix: true,
    };
    group.throughput(Throughput::Elements(1));
    group.bench_function("frame_for (8 of 16 events match)", |b| {
        b.iter(|| black_box(encoded.frame_for(black_box(&filter), false)))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = keys, watch_events
}
criterion_main!(benches);
