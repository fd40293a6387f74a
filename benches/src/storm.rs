//! `ballast-bench restart-storm`: what a data-plane restart storm costs the
//! control plane.
//!
//! Starts a `ballastd dev` cluster (three nodes in one process) from the
//! given binary in a temporary directory and loads two prefixes:
//! `storm/small/` (`--small-keys` keys) and `storm/large/` (`--large-keys`
//! keys), of `--value-bytes` each. `--writers` clients then write other keys
//! in a closed loop for the whole run. After `--quiet-secs` of writes alone,
//! `--small-replicas` replicas of the small prefix start at once (no cache:
//! each bootstraps), then, once they all run and are shut down,
//! `--large-replicas` replicas of the large prefix. Reports, per storm: the
//! write p99 when quiet and during the storm, the bootstrap time (start()
//! to ready) p50/p99/max, the server's CPU time and peak RSS (from
//! `/proc/<pid>`), and the bytes the server process wrote (`wchar` of
//! `/proc/<pid>/io`: sockets and disk).
//!
//! `--no-buffer` and `--no-admission` run the server without the bootstrap
//! buffer and without admission control, to compare; `--data-plane-nice`
//! sets the server's (0 serves replicas on its main threads).
//! `--steady-replicas` keeps that many replicas of another prefix running
//! from before the quiet phase: a cluster with any replica runs its watch
//! feed, which one without a single watcher (the default here) does not. `--writer-cpus` runs
//! the writers on a runtime of their own whose threads are pinned to those
//! CPUs, so that their latency is the control plane's and not the wait for
//! a CPU that the benchmark's own replicas are busy decoding bootstraps on
//! (pin the rest of the benchmark elsewhere with `taskset`). Bounded: every phase
//! has a deadline, the server is killed past `--rss-limit-mb`, and the
//! cluster and its directory are removed whatever happens. Loopback only.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_client::{Client, Replica, Txn, TxnOp};
use hdrhistogram::Histogram;

/// `ballast-bench restart-storm`.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    /// The `ballastd` binary to run (a release build).
    #[arg(long, default_value = "target/release/ballastd")]
    pub ballastd: PathBuf,
    /// Client port of node 1 (nodes use BASE, BASE+100, BASE+200 and the
    /// ports one above).
    #[arg(long, default_value_t = 24379)]
    pub base_port: u16,
    /// Replicas of the small prefix started at once.
    #[arg(long, default_value_t = 1000)]
    pub small_replicas: usize,
    /// Keys of the small prefix.
    #[arg(long, default_value_t = 1000)]
    pub small_keys: usize,
    /// Replicas of the large prefix started at once.
    #[arg(long, default_value_t = 100)]
    pub large_replicas: usize,
    /// Keys of the large prefix.
    #[arg(long, default_value_t = 10_000)]
    pub large_keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 1024)]
    pub value_bytes: usize,
    /// Concurrent writers (closed loop) during the whole run.
    #[arg(long, default_value_t = 16)]
    pub writers: usize,
    /// Seconds of writes alone before the first storm (the quiet p99).
    #[arg(long, default_value_t = 5)]
    pub quiet_secs: u64,
    /// Run the server without the bootstrap buffer.
    #[arg(long)]
    pub no_buffer: bool,
    /// Run the server without admission control.
    #[arg(long)]
    pub no_admission: bool,
    /// Kill the server (and fail) if its RSS passes this many MiB.
    #[arg(long, default_value_t = 8192)]
    pub rss_limit_mb: u64,
    /// Longest one storm may take to have every replica running, seconds.
    #[arg(long, default_value_t = 600)]
    pub storm_timeout_secs: u64,
    /// Run the writers on their own runtime, one thread pinned to these
    /// CPUs (comma-separated, e.g. `0`); by default they share the
    /// benchmark's runtime with the replicas.
    #[arg(long, value_delimiter = ',')]
    pub writer_cpus: Vec<usize>,
    /// Replicas (of `storm/steady/`, 10 keys) started before the writers
    /// and running for the whole run: the fleet that does not restart, so
    /// that the quiet phase includes the watch feed a cluster with any
    /// replica runs. 0: the quiet phase has no watcher at all.
    #[arg(long, default_value_t = 0)]
    pub steady_replicas: usize,
    /// The server's `--data-plane-nice` (its default when absent).
    #[arg(long)]
    pub data_plane_nice: Option<u8>,
}

/// A runtime of one thread pinned to `cpus`, for the writers.
fn pinned_runtime(cpus: &[usize]) -> Result<tokio::runtime::Runtime> {
    use nix::sched::{sched_setaffinity, CpuSet};
    let mut set = CpuSet::new();
    for &cpu in cpus {
        set.set(cpu)
            .with_context(|| format!("CPU {cpu} is out of range"))?;
    }
    // Checked here, on this thread and back, so a CPU the process may not
    // use is an error before anything starts.
    let here = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .with_context(|| format!("cannot pin to CPUs {cpus:?}"))?;
    sched_setaffinity(nix::unistd::Pid::from_raw(0), &here)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("storm-writers")
        .on_thread_start(move || {
            if let Err(e) = sched_setaffinity(nix::unistd::Pid::from_raw(0), &set) {
                eprintln!("writer thread not pinned: {e}");
            }
        })
        .enable_all()
        .build()?;
    Ok(runtime)
}

/// The server process and its directory, stopped and removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What `/proc/<pid>` says about the server.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// User + system CPU time, clock ticks.
    cpu_ticks: u64,
    /// Bytes written (sockets and files).
    wchar: u64,
    /// Resident set, KiB.
    rss_kib: u64,
}

fn usage(pid: u32) -> Result<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at ")".
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| anyhow!("malformed /proc/{pid}/stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat; 12 and 13 after ")".
    let tick = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| anyhow!("no field {i} in /proc/{pid}/stat"))
    };
    let io = std::fs::read_to_string(format!("/proc/{pid}/io"))?;
    let wchar = io
        .lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no wchar in /proc/{pid}/io"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS in /proc/{pid}/status"))?;
    Ok(Usage {
        cpu_ticks: tick(11)? + tick(12)?,
        wchar,
        rss_kib,
    })
}

fn endpoints(base_port: u16) -> Vec<String> {
    (0..3)
        .map(|n| format!("http://127.0.0.1:{}", base_port + n * 100))
        .collect()
}

fn start_server(args: &StormArgs) -> Result<Server> {
    let dir = std::env::temp_dir().join(format!("restart-storm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut command = Command::new(&args.ballastd);
    if args.no_buffer {
        command.arg("--bootstrap-buffer-bytes=0");
    }
    if args.no_admission {
        command.args(["--max-bootstraps=0", "--max-watch-catchups=0"]);
    }
    if let Some(nice) = args.data_plane_nice {
        command.arg(format!("--data-plane-nice={nice}"));
    }
    let child = command
        .arg("dev")
        .arg("--dir")
        .arg(dir.join("data"))
        .arg("--base-port")
        .arg(args.base_port.to_string())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.ballastd.display()))?;
    Ok(Server { child, dir })
}

/// Waits until every node knows the leader.
async fn wait_cluster(base_port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = 0;
        for e in endpoints(base_port) {
            if let Ok(status) = Client::new(vec![e])?.status().await {
                if status.leader.is_some() {
                    ready += 1;
                }
            }
        }
        if ready == 3 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the cluster did not elect a leader within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Loads `keys` keys under `prefix`, 100 per transaction.
async fn load(client: &Client, prefix: &str, keys: usize, value_bytes: usize) -> Result<u64> {
    let value = "v".repeat(value_bytes);
    let mut revision = 0;
    for start in (0..keys).step_by(100) {
        let end = keys.min(start + 100);
        let ops = (start..end)
            .map(|i| TxnOp::put(format!("{prefix}{i:06}"), value.clone()))
            .collect();
        revision = client
            .txn(Txn::new().and_then(ops))
            .await
            .with_context(|| format!("loading {prefix}"))?
            .revision;
    }
    Ok(revision)
}

/// Write latencies, split by phase.
struct Writes {
    storm: AtomicBool,
    quiet: Mutex<Histogram<u64>>,
    during: Mutex<Histogram<u64>>,
    errors: AtomicU64,
}

impl Writes {
    fn new() -> Result<Self> {
        Ok(Writes {
            storm: AtomicBool::new(false),
            quiet: Mutex::new(Histogram::new(3)?),
            during: Mutex::new(Histogram::new(3)?),
            errors: AtomicU64::new(0),
        })
    }

    fn record(&self, micros: u64) {
        let h = if self.storm.load(Ordering::Relaxed) {
            &self.during
        } else {
            &self.quiet
        };
        if let Ok(mut h) = h.lock() {
            let _ = h.record(micros.max(1));
        }
    }

    /// p99 of a phase in milliseconds, and resets it.
    fn take_p99(h: &Mutex<Histogram<u64>>) -> f64 {
        h.lock()
            .map(|mut h| {
                let p = h.value_at_quantile(0.99) as f64 / 1000.0;
                h.reset();
                p
            })
            .unwrap_or(f64::NAN)
    }
}

async fn writer(client: Client, n: usize, writes: Arc<Writes>, stop: Arc<AtomicBool>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let started = Instant::now();
        match client
            .put(&format!("storm/writes/{n}"), format!("{i}"))
            .await
        {
            Ok(_) => writes.record(started.elapsed().as_micros() as u64),
            Err(_) => {
                writes.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One storm's figures.
struct StormRow {
    name: String,
    replicas: usize,
    quiet_p99_ms: f64,
    storm_p99_ms: f64,
    bootstrap_ms: [f64; 3],
    cpu_secs: f64,
    peak_rss_mib: f64,
    written_mib: f64,
    seconds: f64,
    counters: Counters,
}

/// The nodes' data-plane counters (`/metrics`, summed over the three
/// nodes), or their growth over a storm.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    /// Bootstraps answered from the buffer.
    hits: u64,
    /// Bootstraps that scanned (built a buffer entry or streamed).
    scans: u64,
    /// Bootstraps refused by admission control (429).
    refused: u64,
    /// Watch catch-ups refused by admission control (429).
    catchups_refused: u64,
    /// WAL syncs, and those that took at most 25.6 ms (a histogram bucket).
    wal_syncs: u64,
    wal_syncs_fast: u64,
    /// Raft commits (on the leader), and those that took at most 25.6 ms.
    commits: u64,
    commits_fast: u64,
}

impl Counters {
    /// The counters' growth from `before` to `self`.
    fn since(self, before: Counters) -> Counters {
        Counters {
            hits: self.hits.saturating_sub(before.hits),
            scans: self.scans.saturating_sub(before.scans),
            refused: self.refused.saturating_sub(before.refused),
            catchups_refused: self
                .catchups_refused
                .saturating_sub(before.catchups_refused),
            wal_syncs: self.wal_syncs.saturating_sub(before.wal_syncs),
            wal_syncs_fast: self.wal_syncs_fast.saturating_sub(before.wal_syncs_fast),
            commits: self.commits.saturating_sub(before.commits),
            commits_fast: self.commits_fast.saturating_sub(before.commits_fast),
        }
    }

    /// Adds the counters of one `/metrics` page (OpenMetrics text).
    fn add_page(&mut self, page: &str) {
        for line in page.lines() {
            let mut parts = line.split_whitespace();
            let (Some(name), Some(value)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let slot = match name {
                "ballast_bootstrap_buffer_hits_total" => &mut self.hits,
                "ballast_bootstrap_buffer_scans_total" => &mut self.scans,
                "ballast_bootstraps_refused_total" => &mut self.refused,
                "ballast_catchups_refused_total" => &mut self.catchups_refused,
                "ballast_wal_sync_duration_seconds_count" => &mut self.wal_syncs,
                "ballast_wal_sync_duration_seconds_bucket{le=\"0.0256\"}" => {
                    &mut self.wal_syncs_fast
                }
                "ballast_raft_commit_duration_seconds_count" => &mut self.commits,
                "ballast_raft_commit_duration_seconds_bucket{le=\"0.0256\"}" => {
                    &mut self.commits_fast
                }
                _ => continue,
            };
            *slot += value as u64;
        }
    }
}

/// The counters of every node, summed. A node that does not answer counts
/// as zero (the figures are a diagnostic, not a result).
async fn counters(http: &reqwest::Client, base_port: u16) -> Counters {
    let mut sum = Counters::default();
    for e in endpoints(base_port) {
        let page = match http.get(format!("{e}/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        sum.add_page(&page);
    }
    sum
}

/// Samples the server's RSS until `stop`; returns the largest seen. Kills
/// the server past `limit_kib`.
fn sample_rss(pid: u32, limit_kib: u64, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok(u) = usage(pid) {
                max = max.max(u.rss_kib);
                if u.rss_kib > limit_kib {
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        max
    })
}

#[allow(clippy::too_many_arguments)]
async fn storm(
    args: &StormArgs,
    pid: u32,
    name: &str,
    prefix: &str,
    replicas: usize,
    writes: &Arc<Writes>,
    quiet: Duration,
) -> Result<StormRow> {
    writes.storm.store(false, Ordering::Relaxed);
    tokio::time::sleep(quiet).await;
    let quiet_p99_ms = Writes::take_p99(&writes.quiet);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let counted = counters(&http, args.base_port).await;
    let before = usage(pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(pid, args.rss_limit_mb * 1024, stop.clone());
    writes.storm.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let deadline = Duration::from_secs(args.storm_timeout_secs);
    let tasks: Vec<_> = (0..replicas)
        .map(|i| {
            let (eps, prefix) = (endpoints(args.base_port), prefix.to_owned());
            let id = format!("{name}-{i}");
            tokio::spawn(async move {
                let t = Instant::now();
                let r = Replica::builder(eps)
                    .prefix(prefix)
                    .id(id)
                    .initial_sync_timeout(deadline)
                    .request_timeout(Duration::from_secs(60))
                    .start()
                    .await?;
                Ok::<_, ballast_client::Error>((t.elapsed(), r))
            })
        })
        .collect();
    let mut times = Histogram::<u64>::new(3)?;
    let mut running = Vec::with_capacity(replicas);
    for task in tasks {
        let (took, replica) = tokio::time::timeout(deadline, task)
            .await
            .map_err(|_| anyhow!("{name}: replicas not running within {deadline:?}"))???;
        times.record((took.as_micros() as u64).max(1))?;
        running.push(replica);
    }
    let seconds = started.elapsed().as_secs_f64();
    let storm_p99_ms = Writes::take_p99(&writes.during);
    writes.storm.store(false, Ordering::Relaxed);
    let after = usage(pid)?;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap_or(0).max(after.rss_kib);
    let counters = counters(&http, args.base_port).await.since(counted);
    for r in running {
        r.shutdown().await;
    }
    let ticks = clock_ticks();
    let ms = |q: f64| times.value_at_quantile(q) as f64 / 1000.0;
    Ok(StormRow {
        name: name.to_owned(),
        replicas,
        quiet_p99_ms,
        storm_p99_ms,
        bootstrap_ms: [ms(0.5), ms(0.99), times.max() as f64 / 1000.0],
        cpu_secs: after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64 / ticks,
        peak_rss_mib: peak as f64 / 1024.0,
        written_mib: after.wchar.saturating_sub(before.wchar) as f64 / (1024.0 * 1024.0),
        seconds,
        counters,
    })
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 when unknown.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// Runs the benchmark and prints its table.
pub async fn run_storm(args: StormArgs) -> Result<()> {
    if !args.ballastd.exists() {
        bail!(
            "{} not found (build it: cargo build --release -p ballast-store --bin ballastd)",
            args.ballastd.display()
        );
    }
    if args.writers == 0 || args.small_replicas + args.large_replicas == 0 {
        bail!("need at least one writer and one replica");
    }
    let server = start_server(&args)?;
    let pid = server.child.id();
    wait_cluster(args.base_port).await?;
    let client = Client::new(endpoints(args.base_port))?;
    eprintln!("loading {} + {} keys", args.small_keys, args.large_keys);
    load(&client, "storm/small/", args.small_keys, args.value_bytes).await?;
    load(&client, "storm/large/", args.large_keys, args.value_bytes).await?;
    let mut steady = Vec::with_capacity(args.steady_replicas);
    if args.steady_replicas > 0 {
        load(&client, "storm/steady/", 10, args.value_bytes).await?;
        eprintln!("starting {} steady replicas", args.steady_replicas);
        for i in 0..args.steady_replicas {
            let replica = Replica::builder(endpoints(args.base_port))
                .prefix("storm/steady/")
                .id(format!("steady-{i}"))
                .initial_sync_timeout(Duration::from_secs(60))
                .start()
                .await?;
            steady.push(replica);
        }
    }

    let writes = Arc::new(Writes::new()?);
    let stop = Arc::new(AtomicBool::new(false));
    let writer_runtime = if args.writer_cpus.is_empty() {
        None
    } else {
        Some(pinned_runtime(&args.writer_cpus)?)
    };
    let writer_client = Client::new(endpoints(args.base_port))?;
    let writers: Vec<_> = (0..args.writers)
        .map(|n| {
            let task = writer(writer_client.clone(), n, writes.clone(), stop.clone());
            match &writer_runtime {
                Some(rt) => rt.spawn(task),
                None => tokio::spawn(task),
            }
        })
        .collect();
    let quiet = Duration::from_secs(args.quiet_secs);
    let mut rows = Vec::new();
    let result = async {
        if args.small_replicas > 0 {
            eprintln!("storm: {} replicas of storm/small/", args.small_replicas);
            rows.push(
                storm(
                    &args,
                    pid,
                    "small",
                    "storm/small/",
                    args.small_replicas,
                    &writes,
                    quiet,
                )
                .await?,
            );
        }
        if args.large_replicas > 0 {
            eprintln!("storm: {} replicas of storm/large/", args.large_replicas);
            rows.push(
                storm(
                    &args,
                    pid,
                    "large",
                    "storm/large/",
                    args.large_replicas,
                    &writes,
                    quiet,
                )
                .await?,
            );
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    if let Some(rt) = writer_runtime {
        // Its tasks have ended; dropping a runtime would block this one.
        rt.shutdown_background();
    }
    for r in steady {
        r.shutdown().await;
    }
    drop(server);
    result?;
    println!(
        "buffer: {}, admission control: {}, data-plane nice: {}, steady replicas: {}, writers: {} ({}), write errors: {}",
        if args.no_buffer { "off" } else { "on" },
        if args.no_admission { "off" } else { "on" },
        args.data_plane_nice
            .map_or_else(|| "server default".to_owned(), |n| n.to_string()),
        args.steady_replicas,
        args.writers,
        if args.writer_cpus.is_empty() {
            "sharing the replicas' runtime".to_owned()
        } else {
            format!("own runtime on CPUs {:?}", args.writer_cpus)
        },
        writes.errors.load(Ordering::Relaxed)
    );
    println!(
        "| storm | replicas | write p99 quiet (ms) | write p99 storm (ms) | bootstrap p50 / p99 / max (ms) | all running (s) | server CPU (s) | peak RSS (MiB) | written (MiB) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let rows_counters: Vec<(String, Counters)> =
        rows.iter().map(|r| (r.name.clone(), r.counters)).collect();
    for r in rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} / {:.0} / {:.0} | {:.1} | {:.1} | {:.0} | {:.0} |",
            r.name,
            r.replicas,
            r.quiet_p99_ms,
            r.storm_p99_ms,
            r.bootstrap_ms[0],
            r.bootstrap_ms[1],
            r.bootstrap_ms[2],
            r.seconds,
            r.cpu_secs,
            r.peak_rss_mib,
            r.written_mib
        );
    }
    println!();
    println!("Server counters over each storm (`/metrics`, the three nodes together):");
    println!();
    println!("| storm | bootstraps from the buffer | bootstraps that scanned | bootstraps refused (429) | catch-ups refused (429) | WAL syncs (over 25.6 ms) | commits (over 25.6 ms) |");
    println!("|---|---|---|---|---|---|---|");
    for (name, c) in rows_counters {
        println!(
            "| {name} | {} | {} | {} | {} | {} ({}) | {} ({}) |",
            c.hits,
            c.scans,
            c.refused,
            c.catchups_refused,
            c.wal_syncs,
            c.wal_syncs.saturating_sub(c.wal_syncs_fast),
            c.commits,
            c.commits.saturating_sub(c.commits_fast)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_counters_are_read_from_a_metrics_page_and_summed() {
        let page =
            "# HELP ballast_bootstrap_buffer_hits_total Bootstraps answered from the buffer.\n\
                    # TYPE ballast_bootstrap_buffer_hits_total counter\n\
                    ballast_bootstrap_buffer_hits_total 40\n\
                    ballast_bootstrap_buffer_scans_total 2\n\
                    ballast_bootstraps_refused_total 7\n\
                    ballast_catchups_refused_total 1\n\
                    ballast_bootstraps_running 3\n\
                    ballast_wal_sync_duration_seconds_count 10\n\
                    ballast_wal_sync_duration_seconds_bucket{le=\"0.0256\"} 9\n\
                    # EOF\n";
        let mut before = Counters::default();
        before.add_page(page);
        let mut after = before;
        after.add_page(page);
        let grown = after.since(before);
        assert_eq!(
            (
                grown.hits,
                grown.scans,
                grown.refused,
                grown.catchups_refused
            ),
            (40, 2, 7, 1)
        );
        assert_eq!((grown.wal_syncs, grown.wal_syncs_fast), (10, 9));
        assert_eq!(before.since(after).hits, 0, "a counter never goes negative");
    }

    #[test]
    fn the_writer_runtime_runs_on_the_cpus_it_was_given() -> Result<()> {
        let before = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
        let rt = pinned_runtime(&[0])?;
        let on = rt.block_on(async {
            tokio::spawn(async {
                nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)).map(|set| {
                    (0..nix::sched::CpuSet::count())
                        .filter(|&c| set.is_set(c).unwrap_or(false))
                        .collect::<Vec<_>>()
                })
            })
            .await
        })??;
        assert_eq!(on, vec![0]);
        // The calling thread keeps its own CPUs.
        let here = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))?;
        assert_eq!(here, before);
        rt.shutdown_background();
        Ok(())
    }

    #[test]
    fn a_cpu_out_of_range_is_an_error() {
        assert!(pinned_runtime(&[1 << 20]).is_err());
    }
}
