//! The closed loop: preload, connection layout, one row of N clients for a fixed
//! time, and latency recording.
//!
//! Every client sends one request, waits for the answer, and sends the next, so
//! offered load adapts to the system (closed loop, as in the etcd baseline).
//! Latency is measured from the moment a client wants to send (including any wait
//! for a shared connection) to the moment the answer is read.

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
use crate::report::RowResult;
use crate::target::{Connection, OpError, ReadConsistency, Target};

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

/// One connection and the gate that keeps it to one request at a time.
struct Slot<C> {
    conn: C,
    gate: Semaphore,
}

/// Everything a row needs that does not change between rows.
pub struct Workbench<T: Target> {
    target: T,
    endpoints: Vec<String>,
    keys: Arc<Vec<String>>,
    value: Arc<Vec<u8>>,
    connections: Connections,
    seed: u64,
    progress: bool,
}

/// What one client measured.
struct ClientStats {
    hist: Histogram<u64>,
    errors: u64,
    samples: Vec<String>,
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
            keys: Arc::new((0..keys).map(|i| format!("{key_prefix}{i:06}")).collect()),
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
                .with_context(|| format!("connecting to {endpoint}"))?;
            slots.push(Arc::new(Slot {
                conn,
                gate: Semaphore::new(1),
            }));
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

    /// Runs `clients` closed-loop clients of `workload` for `duration`.
    pub async fn run_row(
        &self,
        workload: Workload,
        clients: usize,
        duration: Duration,
    ) -> Result<RowResult> {
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
            let (keys, value, ops) = (self.keys.clone(), self.value.clone(), ops.clone());
            let seed = self.seed ^ (client as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            tasks.spawn(client_loop(
                slot, workload, keys, value, deadline, seed, ops,
            ));
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
        let (mut errors, mut samples) = (0u64, Vec::new());
        while let Some(joined) = tasks.join_next().await {
            let stats = joined.context("client task")??;
            total.add(&stats.hist)?;
            errors += stats.errors;
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
        if errors > 0 {
            warn!(
                workload = workload.name(),
                clients,
                errors,
                ?samples,
                "requests failed"
            );
        }
        Ok(RowResult::new(
            workload,
            clients,
            slots.len(),
            &total,
            errors,
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

/// One closed-loop client.
async fn client_loop<C: Connection>(
    slot: Arc<Slot<C>>,
    workload: Workload,
    keys: Arc<Vec<String>>,
    value: Arc<Vec<u8>>,
    deadline: Instant,
    seed: u64,
    ops: Arc<AtomicU64>,
) -> Result<ClientStats> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stats = ClientStats {
        hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, HISTOGRAM_PRECISION)?,
        errors: 0,
        samples: Vec::new(),
    };
    while Instant::now() < deadline {
        let key = &keys[rng.gen_range(0..keys.len())];
        let start = Instant::now();
        let result = match slot.gate.acquire().await {
            Ok(_permit) => match workload {
                Workload::Put => slot.conn.put(key, &value).await,
                Workload::GetLinearizable => {
                    slot.conn.get(key, ReadConsistency::Linearizable).await
                }
                Workload::GetSerializable => {
                    slot.conn.get(key, ReadConsistency::Serializable).await
                }
            },
            Err(_) => Err(OpError("connection gate closed".to_owned())),
        };
        let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        match result {
            Ok(()) => {
                stats.hist.saturating_record(micros.max(1));
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                stats.errors += 1;
                if stats.samples.len() < ERROR_SAMPLES {
                    stats.samples.push(e.0);
                }
            }
        }
    }
    Ok(stats)
}
