//! The closed loop against an in-memory target: what each workload sends, how
//! `txn-cas` counts failed compares, and how connections are shared.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{Connections, Workload};
use crate::runner::Workbench;
use crate::target::{CasOutcome, Connection, OpError, ReadConsistency, Target};

/// A key-value map with a revision counter, and what was asked of it.
#[derive(Default)]
struct Store {
    revision: u64,
    keys: HashMap<String, u64>,
    puts: u64,
    gets: u64,
    swaps: u64,
    failed_compares: u64,
}

/// Requests in flight on one connection, and the most seen at once.
#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
}

#[derive(Clone)]
struct Fake {
    store: Arc<Mutex<Store>>,
    multiplexed: bool,
    connections: Arc<Mutex<Vec<Arc<InFlight>>>>,
}

impl Fake {
    fn new(multiplexed: bool) -> Self {
        Self {
            store: Arc::default(),
            multiplexed,
            connections: Arc::default(),
        }
    }

    fn most_in_flight(&self) -> usize {
        let conns = self.connections.lock().expect("lock");
        conns
            .iter()
            .map(|c| c.max.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

struct FakeConn {
    store: Arc<Mutex<Store>>,
    in_flight: Arc<InFlight>,
}

impl FakeConn {
    /// Marks a request in flight across an await point, so that requests
    /// sharing the connection can overlap.
    async fn request<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let now = self.in_flight.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.in_flight.max.fetch_max(now, Ordering::SeqCst);
        tokio::task::yield_now().await;
        let out = f(&mut self.store.lock().expect("lock"));
        self.in_flight.now.fetch_sub(1, Ordering::SeqCst);
        out
    }
}

impl Target for Fake {
    type Conn = FakeConn;

    fn name(&self) -> &'static str {
        "fake"
    }

    fn multiplexed(&self) -> bool {
        self.multiplexed
    }

    async fn connect(&self, _endpoint: &str) -> anyhow::Result<FakeConn> {
        let in_flight = Arc::new(InFlight::default());
        self.connections
            .lock()
            .expect("lock")
            .push(in_flight.clone());
        Ok(FakeConn {
            store: self.store.clone(),
            in_flight,
        })
    }
}

impl Connection for FakeConn {
    async fn warm_up(&self) -> Result<(), OpError> {
        Ok(())
    }

    async fn put(&self, key: &str, _value: &[u8]) -> Result<(), OpError> {
        self.request(|s| {
            s.revision += 1;
            s.keys.insert(key.to_owned(), s.revision);
            s.puts += 1;
        })
        .await;
        Ok(())
    }

    async fn get(&self, key: &str, _consistency: ReadConsistency) -> Result<u64, OpError> {
        self.request(|s| {
            s.gets += 1;
            s.keys.get(key).copied()
        })
        .await
        .ok_or_else(|| OpError("key not found".to_owned()))
    }

    async fn cas(&self, key: &str, expected: u64, _value: &[u8]) -> Result<CasOutcome, OpError> {
        Ok(self
            .request(|s| {
                let current = s.keys.get(key).copied().unwrap_or(0);
                if current == expected {
                    s.revision += 1;
                    s.keys.insert(key.to_owned(), s.revision);
                    s.swaps += 1;
                    CasOutcome::Swapped {
                        revision: s.revision,
                    }
                } else {
                    s.failed_compares += 1;
                    CasOutcome::CompareFailed { current }
                }
            })
            .await)
    }
}

fn bench(target: Fake, keys: usize, connections: Connections) -> Workbench<Fake> {
    Workbench::new(
        target,
        vec!["a".into(), "b".into(), "c".into()],
        "k/",
        keys,
        16,
        connections,
        7,
        false,
    )
}

const ROW: Duration = Duration::from_millis(200);

#[tokio::test]
async fn a_lone_cas_client_never_fails_its_compare() {
    let fake = Fake::new(false);
    let wb = bench(fake.clone(), 20, Connections::Auto);
    wb.preload().await.expect("preload");
    // Writes between the preload and the row: the table is read again first.
    wb.run_row(Workload::Put, 2, ROW).await.expect("puts");
    let row = wb.run_row(Workload::TxnCas, 1, ROW).await.expect("row");
    let s = fake.store.lock().expect("lock");
    assert!(row.ops > 0);
    assert_eq!((row.errors, row.compare_failed), (0, 0));
    assert_eq!((s.swaps, s.failed_compares), (row.ops, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_compares_are_completed_requests_counted_apart() {
    let fake = Fake::new(true);
    // Few keys and many clients: clients race on the same key.
    let wb = bench(fake.clone(), 3, Connections::Total(4));
    wb.preload().await.expect("preload");
    let row = wb.run_row(Workload::TxnCas, 16, ROW).await.expect("row");
    let s = fake.store.lock().expect("lock");
    assert_eq!(row.errors, 0);
    assert_eq!(row.ops, s.swaps + s.failed_compares);
    assert_eq!(row.compare_failed, s.failed_compares);
    assert!(s.failed_compares > 0, "16 clients on 3 keys never collided");
    assert_eq!(row.latencies.len(), row.ops);
}

#[tokio::test]
async fn mixed_is_mostly_linearizable_gets() {
    let fake = Fake::new(false);
    let wb = bench(fake.clone(), 100, Connections::Auto);
    wb.preload().await.expect("preload");
    let before = {
        let s = fake.store.lock().expect("lock");
        (s.puts, s.gets)
    };
    let row = wb.run_row(Workload::Mixed, 4, ROW).await.expect("row");
    let s = fake.store.lock().expect("lock");
    let (puts, gets) = (s.puts - before.0, s.gets - before.1);
    assert_eq!(puts + gets, row.ops);
    assert!(row.ops >= 500, "too few requests to judge: {}", row.ops);
    let share = puts as f64 / row.ops as f64;
    assert!((0.05..0.15).contains(&share), "put share {share}");
}

#[tokio::test]
async fn http1_connections_carry_one_request_at_a_time() {
    let fake = Fake::new(false);
    let wb = bench(fake.clone(), 10, Connections::PerEndpoint(1));
    let row = wb.run_row(Workload::Put, 12, ROW).await.expect("row");
    assert_eq!(row.connections, 3);
    assert_eq!(fake.most_in_flight(), 1);
}

#[tokio::test]
async fn grpc_connections_carry_many() {
    let fake = Fake::new(true);
    let wb = bench(fake.clone(), 10, Connections::Total(2));
    let row = wb.run_row(Workload::Put, 12, ROW).await.expect("row");
    assert_eq!(row.connections, 2);
    assert!(fake.most_in_flight() > 1);
}

#[tokio::test]
async fn gets_of_keys_never_written_are_errors() {
    let wb = bench(Fake::new(false), 10, Connections::Auto);
    // The readiness probe writes and reads its own key.
    wb.wait_ready(Duration::from_millis(100))
        .await
        .expect("ready");
    let row = wb
        .run_row(Workload::GetLinearizable, 1, Duration::from_millis(50))
        .await
        .expect("row runs");
    assert!(row.errors > 0 && row.ops == 0, "{row:?}");
    assert_eq!(row.error_samples, ["key not found"]);
}
