//! The cost of one change on a data-plane replica, and of its point reads,
//! as the replica grows: 1,000, 10,000 and 100,000 keys.
//!
//! A replica applies each batch of watch events to a copy of its current
//! snapshot and swaps the copy in (`client/src/replica/sync.rs`): "apply"
//! measures exactly that, a clone of the snapshot and one put. Its maps are
//! persistent, so this should grow with log n. For comparison, "std maps
//! (before)" does the same with the `BTreeMap` + `HashMap` pair the replica
//! used before, whose clone copies every entry. "get" is a point read on
//! the snapshot (what `Replica::get` does after its lock-free load), over
//! keys spread across the map, next to the same read on the std `HashMap`
//! the replica used before. Criterion runs on one thread: the time per
//! call gives calls per second per core.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::sync::Arc;

use ballast_client::{Event, EventKind, KeyValue, ReplicaSnapshot};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];

fn kv(i: usize, revision: u64) -> KeyValue {
    KeyValue {
        key: format!("/services/api/key-{i:06}"),
        value: vec![b'v'; 256],
        create_revision: 1,
        mod_revision: revision,
        version: revision,
    }
}

fn snapshot(n: usize) -> ReplicaSnapshot {
    ReplicaSnapshot::from_kvs(1, (0..n).map(|i| kv(i, 1)))
}

fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("replica apply one change");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let mut current = snapshot(n);
        let mut revision = 1u64;
        group.bench_with_input(BenchmarkId::new("persistent maps", n), &n, |b, &n| {
            b.iter(|| {
                revision += 1;
                let event = Event {
                    kind: EventKind::Put,
                    kv: kv((revision as usize * 7919) % n, revision),
                    prev_kv: None,
                };
                let mut next = current.clone();
                next.apply(revision, std::slice::from_ref(&event), "/services/api/");
                current = black_box(next);
            })
        });
        let mut ordered: BTreeMap<Arc<str>, Arc<KeyValue>> = (0..n)
            .map(|i| (Arc::from(kv(i, 1).key.as_str()), Arc::new(kv(i, 1))))
            .collect();
        let mut hashed: HashMap<Arc<str>, Arc<KeyValue>> = ordered
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        group.bench_with_input(BenchmarkId::new("std maps (before)", n), &n, |b, &n| {
            b.iter(|| {
                revision += 1;
                let changed = kv((revision as usize * 7919) % n, revision);
                let (mut o, mut h) = (ordered.clone(), hashed.clone());
                let key: Arc<str> = Arc::from(changed.key.as_str());
                let value = Arc::new(changed);
                o.insert(key.clone(), value.clone());
                h.insert(key, value);
                (ordered, hashed) = black_box((o, h));
            })
        });
    }
    group.finish();
}

fn get(c: &mut Criterion) {
    let mut group = c.benchmark_group("replica snapshot get");
    group.throughput(Throughput::Elements(1));
    for n in SIZES {
        let snap = Arc::new(snapshot(n));
        let keys: Vec<String> = (0..n).map(|i| kv(i, 1).key).collect();
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::new("get", n), &n, |b, &n| {
            b.iter(|| {
                i = (i + 7919) % n;
                black_box(snap.get(black_box(&keys[i])).cloned())
            })
        });
        let hashed: HashMap<Arc<str>, Arc<KeyValue>> = (0..n)
            .map(|i| (Arc::from(kv(i, 1).key.as_str()), Arc::new(kv(i, 1))))
            .collect();
        group.bench_with_input(
            BenchmarkId::new("std HashMap get (before)", n),
            &n,
            |b, &n| {
                b.iter(|| {
                    i = (i + 7919) % n;
                    black_box(hashed.get(black_box(keys[i].as_str())).cloned())
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, apply, get);
criterion_main!(benches);
