//! Data-plane read throughput: `Replica::get` on a 10,000-key replica.
//!
//! A real single-node cluster runs in-process on loopback; 10,000 keys are
//! written, a `Replica` of their prefix bootstraps and follows it, and then
//! `get` is measured. Criterion runs it on one thread, so the time per call
//! gives gets per second per core.

use std::hint::black_box;
use std::time::Duration;

use ballast_client::Replica;
use ballast_store::server::Listeners;
use ballast_store::Config;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const KEYS: usize = 10_000;

struct Fixture {
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    replica: Replica,
    keys: Vec<String>,
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let keys: Vec<String> = (0..KEYS)
        .map(|i| format!("/services/api/key-{i:05}"))
        .collect();
    let replica = runtime.block_on(async {
        let client = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let (c, p) = (
            client.local_addr().expect("addr"),
            peer.local_addr().expect("addr"),
        );
        let config = Config {
            node_id: 1,
            data_dir: dir.path().join("node1"),
            listen_client: c.to_string(),
            listen_peer: p.to_string(),
            initial_cluster: Some(format!("1={c}/{p}")),
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            ..Config::default()
        };
        let node = ballast_store::start(config, Some(Listeners { client, peer }))
            .await
            .expect("start node");
        let endpoint = format!("http://{c}");
        let writer = ballast_client::Client::new(vec![endpoint.clone()]).expect("client");
        for _ in 0..100 {
            if node.node.raft().is_leader() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for chunk in keys.chunks(100) {
            let ops = chunk
                .iter()
                .map(|k| ballast_client::TxnOp::put(k, vec![b'v'; 256]))
                .collect();
            writer
                .txn(ballast_client::Txn::new().and_then(ops))
                .await
                .expect("load keys");
        }
        let replica = Replica::builder(vec![endpoint])
            .prefix("/services/api/")
            .cache_dir(dir.path().join("replica"))
            .id("bench")
            .start()
            .await
            .expect("replica");
        assert_eq!(
            replica.snapshot().len(),
            KEYS,
            "the replica holds every key"
        );
        // The node keeps running inside the runtime for the replica's watch.
        std::mem::forget(node);
        replica
    });
    Fixture {
        _runtime: runtime,
        _dir: dir,
        replica,
        keys,
    }
}

fn replica_get(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("replica");
    group.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    group.bench_function("get (10,000 keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % KEYS;
            black_box(f.replica.get(black_box(&f.keys[i])))
        })
    });
    group.finish();
}

criterion_group!(benches, replica_get);
criterion_main!(benches);
