//! The closed loop: preload, connection layout, one row of N clients for a fixed
//! time, and latency recording.
//!
//! Every client sends one request, waits for the answer, and sends the next, so
//! offered load adapts to the system (closed loop, as in the etcd baseline).
//! Latency is measured from the moment a client wants to send (including any wait
//! for a shared connection) to the moment the answer is read.
//!
//! `txn-cas` compares a key's mod revision with the one the load generator
//! last saw for it: a table shared by all clients, filled by reading every key
//! before the row and updated from every answer (the new revision of a swap,
//! the current one a failed compare read back). A compare then fails only when
//! another client changed the key in between, as it would for real users of a
//! compare-and-swap.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{Connections, Workload};
use crate::report::{Counts, RowResult};
use crate::target::{CasOutcome, Connection, OpError, ReadConsistency, Target};

/// Highest latency the histograms record exactly (one hour, in µs); anything
/// slower is clamped, which a request timeout makes impossible anyway.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Significant digits kept by the histograms (0.1% resolution).
const HISTOGRAM_PRECISION: u8 = 3;
/// Concurrent writers while preloading keys.
const PRELOAD_CONCURRENCY: usize = 16;
/// Attempts per key while preloading (preload is setup, not measurement).
const PRELOAD_ATTEMPTS: u32 = 3;
/// Pause between preload attempts of one key.
const PRELOAD_RETRY_PAUSE: Duration = Duration::from_millis(200);
/// Error messages kept per row for the report.
const ERROR_SAMPLES: usize = 3;
/// How often the progress bar refreshes.
const PROGRESS_TICK: Duration = Duration::from_millis(200);
/// Share of puts in the `mixed` workload, in percent (the rest are
/// linearizable gets).
const MIXED_PUT_PERCENT: u32 = 10;
/// Pause between readiness probes of a cluster that is starting.
const READY_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Key written and read by the readiness probe (after the key prefix).
const READY_KEY: &str = "ready";

/// One connection, and for HTTP/1.1 the gate that keeps it to one request at
/// a time.
struct Slot<C> {
    conn: C,
    gate: Option<Semaphore>,
}

/// Everything a row needs that does not change between rows.
pub struct Workbench<T: Target> {
    target: T,
    endpoints: Vec<String>,
    key_prefix: String,
    keys: Arc<Vec<String>>,
    /// The mod revision last seen of each key, for `txn-cas`.
    revisions: Arc<Vec<AtomicU64>>,
    value: Arc<Vec<u8>>,
    connections: Connections,
    seed: u64,
    progress: bool,
}

/// What one client measured.
struct ClientStats {
    hist: Histogram<u64>,
    counts: Counts,
    samples: Vec<String>,
}

/// What one client shares with the others.
struct Shared {
    keys: Arc<Vec<String>>,
    revisions: Arc<Vec<AtomicU64>>,
    value: Arc<Vec<u8>>,
    ops: Arc<AtomicU64>,
}

impl<T: Target> Workbench<T> {
    /// Prepares keys `{prefix}000000..` and one value of `value_size` printable
    /// bytes (so both stores carry it as is, with no base64 on the wire).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        target: T,
        endpoints: Vec<String>,
        key_prefix: &str,
        keys: usize,
        value_size: usize,
        connections: Connections,
        seed: u64,
        progress: bool,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let value = (0..value_size)
            .map(|_| rng.sample(rand::distributions::Alphanumeric))
            .collect();
        Self {
            target,
            endpoints,
            key_prefix: key_prefix.to_owned(),
            keys: Arc::new((0..keys).map(|i| format!("{key_prefix}{i:06}")).collect()),
            revisions: Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect()),
            value: Arc::new(value),
            connections,
            seed,
            progress,
        }
    }

    /// Opens `count` connections round-robin over the endpoints and sends one
    /// warm-up request on each, so connection setup is not measured.
    async fn open(&self, count: usize) -> Result<Vec<Arc<Slot<T::Conn>>>> {
        let mut slots = Vec::with_capacity(count);
        for i in 0..count {
            let endpoint = &self.endpoints[i % self.endpoints.len()];
            let conn = self
                .target
                .connect(endpoint)
                .await
                .with_context(|| format!("connecting to {endpoint}"))?;
            let gate = (!self.target.multiplexed()).then(|| Semaphore::new(1));
            slots.push(Arc::new(Slot { conn, gate }));
        }
        let mut warm = JoinSet::new();
        for (i, slot) in slots.iter().enumerate() {
            let slot = slot.clone();
            let endpoint = self.endpoints[i % self.endpoints.len()].clone();
            warm.spawn(async move { (endpoint, slot.conn.warm_up().await) });
        }
        while let Some(joined) = warm.join_next().await {
            let (endpoint, result) = joined.context("warm-up task")?;
            if let Err(e) = result {
                bail!(
                    "{} endpoint {endpoint} is not answering: {e}",
                    self.target.name()
                );
            }
        }
        Ok(slots)
    }

    /// Waits until every endpoint takes a write and answers a linearizable
    /// read, for at most `limit` (a cluster that was just started may still be
    /// electing a leader).
    pub async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        let key = format!("{}{READY_KEY}", self.key_prefix);
        for endpoint in &self.endpoints {
            while let Err(e) = self.probe(endpoint, &key).await {
                if started.elapsed() >= limit {
                    bail!(
                        "{} endpoint {endpoint} not ready after {limit:?}: {e:#}",
                        self.target.name()
                    );
                }
                tokio::time::sleep(READY_RETRY_PAUSE).await;
            }
        }
        info!(elapsed = ?started.elapsed(), "cluster ready");
        Ok(())
    }

    async fn probe(&self, endpoint: &str, key: &str) -> Result<()> {
        let conn = self.target.connect(endpoint).await?;
        conn.put(key, &self.value).await?;
        conn.get(key, ReadConsistency::Linearizable).await?;
        Ok(())
    }

    /// Writes every key once so gets find them.
    pub async fn preload(&self) -> Result<()> {
        let started = Instant::now();
        let slots = self.open(PRELOAD_CONCURRENCY.min(self.keys.len())).await?;
        let mut tasks = JoinSet::new();
        for (i, slot) in slots.iter().enumerate() {
            let (slot, keys, value) = (slot.clone(), self.keys.clone(), self.value.clone());
            let stride = slots.len();
            tasks.spawn(async move {
                for key in keys.iter().skip(i).step_by(stride) {
                    let mut attempt = 1;
                    while let Err(e) = slot.conn.put(key, &value).await {
                        if attempt >= PRELOAD_ATTEMPTS {
                            return Err(anyhow!("preloading {key}: {e}"));
                        }
                        attempt += 1;
                        tokio::time::sleep(PRELOAD_RETRY_PAUSE).await;
                    }
                }
                Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("preload task")??;
        }
        info!(keys = self.keys.len(), elapsed = ?started.elapsed(), "preloaded");
        Ok(())
    }

    /// Reads every key's current mod revision into the table `txn-cas`
    /// compares with (earlier rows wrote to the keys since).
    async fn refresh_revisions(&self) -> Result<()> {
        let slots = self.open(PRELOAD_CONCURRENCY.min(self.keys.len())).await?;
        let mut tasks = JoinSet::new();
        for (i, slot) in slots.iter().enumerate() {
            let (slot, keys, revisions) = (slot.clone(), self.keys.clone(), self.revisions.clone());
            let stride = slots.len();
            tasks.spawn(async move {
                for (key, revision) in keys.iter().zip(revisions.iter()).skip(i).step_by(stride) {
                    let mut attempt = 1;
                    loop {
                        match slot.conn.get(key, ReadConsistency::Linearizable).await {
                            Ok(r) => {
                                revision.store(r, Ordering::Relaxed);
                                break;
                            }
                            Err(e) if attempt >= PRELOAD_ATTEMPTS => {
                                return Err(anyhow!("reading {key}: {e}"));
                            }
                            Err(_) => attempt += 1,
                        }
                        tokio::time::sleep(PRELOAD_RETRY_PAUSE).await;
                    }
                }
                Ok(())
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("revision refresh task")??;
        }
        Ok(())
    }

    /// Runs `clients` closed-loop clients of `workload` for `duration`.
    pub async fn run_row(
        &self,
        workload: Workload,
        clients: usize,
        duration: Duration,
    ) -> Result<RowResult> {
        if workload == Workload::TxnCas {
            self.refresh_revisions().await?;
        }
        let slots = self
            .open(self.connections.total(clients, self.endpoints.len()))
            .await?;
        let ops = Arc::new(AtomicU64::new(0));
        let bar = self.progress_bar(workload, clients, duration);
        let started = Instant::now();
        let deadline = started + duration;
        let mut tasks = JoinSet::new();
        for client in 0..clients {
            let slot = slots[client % slots.len()].clone();
            let shared = Shared {
                keys: self.keys.clone(),
                revisions: self.revisions.clone(),
                value: self.value.clone(),
                ops: ops.clone(),
            };
            let seed = self.seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tasks.spawn(client_loop(slot, workload, shared, deadline, seed));
        }
        let ticker = bar.clone().map(|bar| {
            let ops = ops.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PROGRESS_TICK).await;
                    let elapsed = started.elapsed();
                    bar.set_position(elapsed.as_millis().try_into().unwrap_or(u64::MAX));
                    let rate = ops.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64();
                    bar.set_message(format!("{rate:.0} ops/s"));
                }
            })
        });

        let mut total = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_PRECISION)?;
        let (mut counts, mut samples) = (Counts::default(), Vec::new());
        while let Some(joined) = tasks.join_next().await {
            let stats = joined.context("client task")??;
            total.add(&stats.hist)?;
            counts.errors += stats.counts.errors;
            counts.compare_failed += stats.counts.compare_failed;
            for s in stats.samples {
                if samples.len() < ERROR_SAMPLES && !samples.contains(&s) {
                    samples.push(s);
                }
            }
        }
        let elapsed = started.elapsed();
        if let Some(ticker) = ticker {
            ticker.abort();
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if counts.errors > 0 {
            warn!(
                workload = workload.name(),
                clients,
                errors = counts.errors,
                ?samples,
                "requests failed"
            );
        }
        Ok(RowResult::new(
            workload,
            clients,
            slots.len(),
            total,
            counts,
            samples,
            elapsed,
        ))
    }

    fn progress_bar(
        &self,
        workload: Workload,
        clients: usize,
        duration: Duration,
    ) -> Option<ProgressBar> {
        if !self.progress {
            return None;
        }
        let bar = ProgressBar::with_draw_target(
            Some(duration.as_millis().try_into().unwrap_or(u64::MAX)),
            ProgressDrawTarget::stderr(),
        );
        if let Ok(style) =
            ProgressStyle::with_template("{prefix:>28} [{bar:30}] {elapsed:>3} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("{} x{clients}", workload.name()));
        Some(bar)
    }
}

/// How a completed request ended.
enum Done {
    /// It did what it asked.
    Completed,
    /// A `txn-cas` whose compare failed: answered, nothing written.
    CompareFailed,
}

/// One closed-loop client.
async fn client_loop<C: Connection>(
    slot: Arc<Slot<C>>,
    workload: Workload,
    shared: Shared,
    deadline: Instant,
    seed: u64,
) -> Result<ClientStats> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = ClientStats {
        hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_PRECISION)?,
        counts: Counts::default(),
        samples: Vec::new(),
    };
    while Instant::now() < deadline {
        let index = rng.gen_range(0..shared.keys.len());
        let start = Instant::now();
        let result = match &slot.gate {
            Some(gate) => match gate.acquire().await {
                Ok(_permit) => one_request(&slot.conn, workload, &shared, index, &mut rng).await,
                Err(_) => Err(OpError("connection gate closed".to_owned())),
            },
            None => one_request(&slot.conn, workload, &shared, index, &mut rng).await,
        };
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(done) => {
                stats.hist.saturating_record(micros.max(1));
                shared.ops.fetch_add(1, Ordering::Relaxed);
                if matches!(done, Done::CompareFailed) {
                    stats.counts.compare_failed += 1;
                }
            }
            Err(e) => {
                stats.counts.errors += 1;
                if stats.samples.len() < ERROR_SAMPLES {
                    stats.samples.push(e.0);
                }
            }
        }
    }
    Ok(stats)
}

/// Sends the request `workload` asks for, on key number `index`.
async fn one_request<C: Connection>(
    conn: &C,
    workload: Workload,
    shared: &Shared,
    index: usize,
    rng: &mut StdRng,
) -> Result<Done, OpError> {
    let key = &shared.keys[index];
    match workload {
        Workload::Put => conn.put(key, &shared.value).await.map(|()| Done::Completed),
        Workload::GetLinearizable => conn
            .get(key, ReadConsistency::Linearizable)
            .await
            .map(|_| Done::Completed),
        Workload::GetSerializable => conn
            .get(key, ReadConsistency::Serializable)
            .await
            .map(|_| Done::Completed),
        Workload::Mixed if rng.gen_ratio(MIXED_PUT_PERCENT, 100) => {
            conn.put(key, &shared.value).await.map(|()| Done::Completed)
        }
        Workload::Mixed => conn
            .get(key, ReadConsistency::Linearizable)
            .await
            .map(|_| Done::Completed),
        Workload::TxnCas => {
            let seen = &shared.revisions[index];
            let expected = seen.load(Ordering::Relaxed);
            match conn.cas(key, expected, &shared.value).await? {
                CasOutcome::Swapped { revision } => {
                    seen.fetch_max(revision, Ordering::Relaxed);
                    Ok(Done::Completed)
                }
                CasOutcome::CompareFailed { current } => {
                    seen.fetch_max(current, Ordering::Relaxed);
                    Ok(Done::CompareFailed)
                }
            }
        }
    }
}
