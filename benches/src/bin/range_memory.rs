//! `range_memory`: the memory a node needs to answer many large prefix
//! reads at once.
//!
//! Starts a `ballastd dev` cluster (three nodes in one process) from the
//! given binary in a temporary directory, loads `--keys` keys of
//! `--value-bytes` each under `fill/`, waits until a follower has applied
//! them, and records the process's resting RSS. Then `--readers` concurrent
//! `GET /v1/kv/fill/?prefix=true` go to the follower; every answer is
//! compared byte for byte, as it arrives, with the document the load
//! implies (every key once, in order, at the load's revision), while
//! `/proc/<pid>/status` is sampled. Reports, for each of `--rounds`
//! rounds, resting, peak (the larger of the sampled VmRSS and VmHWM, which
//! is reset before the reads) and RSS `--settle-secs` after the reads.
//!
//! Bounded: the server is killed if its RSS passes `--rss-limit-mb` (so a
//! build without bounded range reads cannot take the machine down), every
//! phase has a deadline, and the cluster and its directory are removed
//! whatever happens. Loopback only.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_client::{Client, Txn, TxnOp};
use clap::Parser;

/// Memory of concurrent large prefix reads on a `ballastd dev` cluster.
#[derive(Debug, Parser)]
#[command(name = "range_memory", version)]
struct Args {
    /// The `ballastd` binary to run (a release build).
    #[arg(long, default_value = "target/release/ballastd")]
    ballastd: PathBuf,
    /// Client port of node 1 (nodes use BASE, BASE+100, BASE+200 and the
    /// ports one above).
    #[arg(long, default_value_t = 23379)]
    base_port: u16,
    /// Keys to load under `fill/`.
    #[arg(long, default_value_t = 30_000)]
    keys: usize,
    /// Bytes per value.
    #[arg(long, default_value_t = 10_000)]
    value_bytes: usize,
    /// Concurrent full-prefix reads on the follower.
    #[arg(long, default_value_t = 50)]
    readers: usize,
    /// Seconds to wait before the resting and the after samples.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// Kill the server (and fail) if its RSS passes this many MiB.
    #[arg(long, default_value_t = 8192)]
    rss_limit_mb: u64,
    /// Times to run the concurrent reads (one row each): RSS after a round
    /// should not grow with the rounds.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Longest the reads of a round may take, seconds.
    #[arg(long, default_value_t = 600)]
    read_timeout_secs: u64,
    /// More flags for `ballastd` (e.g. `--range-buffer-bytes=...`).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

/// The server process and its directory, stopped and removed on drop.
struct Server {
    child: Child,
    dir: PathBuf,
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident and peak resident set of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// Resets the peak resident set (VmHWM) of `pid` to its current RSS.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .with_context(|| format!("resetting VmHWM of {pid}"))
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn value_of(i: usize, bytes: usize) -> String {
    let mut v = format!("{i:06}:").repeat(bytes / 7 + 1);
    v.truncate(bytes);
    v
}

async fn start_server(args: &Args) -> Result<Server> {
    let dir = std::env::temp_dir().join(format!("range-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let log = std::fs::File::create(dir.join("server.log"))?;
    let child = Command::new(&args.ballastd)
        .args(&args.server_args)
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

fn endpoints(base_port: u16) -> Vec<String> {
    (0..3)
        .map(|n| format!("http://127.0.0.1:{}", base_port + n * 100))
        .collect()
}

/// Waits until every node knows the leader; returns a follower's endpoint.
async fn wait_cluster(base_port: u16) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut leader = None;
        let mut up = Vec::new();
        for e in endpoints(base_port) {
            if let Ok(status) = Client::new(vec![e.clone()])?.status().await {
                if let Some(l) = status.leader {
                    leader = Some(l);
                    up.push((status.node_id, e));
                }
            }
        }
        if let (Some(leader), 3) = (leader, up.len()) {
            if let Some((_, e)) = up.into_iter().find(|(id, _)| *id != leader) {
                return Ok(e);
            }
        }
        if Instant::now() > deadline {
            bail!("the cluster did not elect a leader within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Loads the keys, 100 per transaction; returns the document a full read
/// must answer once every write is applied.
async fn load(args: &Args) -> Result<(u64, Vec<u8>)> {
    let client = Client::new(endpoints(args.base_port))?;
    let mut kvs = Vec::with_capacity(args.keys * (args.value_bytes + 100));
    let mut revision = 0;
    let progress = indicatif::ProgressBar::new(args.keys as u64);
    for start in (0..args.keys).step_by(100) {
        let end = args.keys.min(start + 100);
        let ops = (start..end)
            .map(|i| TxnOp::put(format!("fill/{i:06}"), value_of(i, args.value_bytes)))
            .collect();
        revision = client
            .txn(Txn::new().and_then(ops))
            .await
            .context("loading keys")?
            .revision;
        for i in start..end {
            if i > 0 {
                kvs.push(b',');
            }
            kvs.extend_from_slice(
                format!(
                    "{{\"key\":\"fill/{i:06}\",\"value\":\"{}\",\"create_revision\":{revision},\"mod_revision\":{revision},\"version\":1}}",
                    value_of(i, args.value_bytes)
                )
                .as_bytes(),
            );
        }
        progress.set_position(end as u64);
    }
    progress.finish_and_clear();
    let mut doc = format!("{{\"revision\":{revision},\"kvs\":[").into_bytes();
    doc.extend_from_slice(&kvs);
    doc.extend_from_slice(b"],\"more\":false}");
    Ok((revision, doc))
}

async fn wait_applied(endpoint: &str, revision: u64) -> Result<()> {
    let client = Client::new(vec![endpoint.to_owned()])?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while client.status().await?.revision < revision {
        if Instant::now() > deadline {
            bail!("{endpoint} did not apply revision {revision} within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One full read, compared with `expected` as it arrives.
async fn read_and_check(http: reqwest::Client, url: String, expected: Arc<Vec<u8>>) -> Result<()> {
    let mut response = http.get(&url).send().await?;
    if response.status() != reqwest::StatusCode::OK {
        bail!("{url}: {}", response.status());
    }
    let mut offset = 0usize;
    while let Some(chunk) = response.chunk().await? {
        let end = offset + chunk.len();
        if expected.get(offset..end) != Some(&chunk[..]) {
            bail!("{url}: the answer differs from the loaded keys at byte {offset}");
        }
        offset = end;
    }
    if offset != expected.len() {
        bail!("{url}: {offset} bytes, expected {}", expected.len());
    }
    Ok(())
}

/// Samples the server's RSS until `stop`; returns the largest VmRSS seen.
/// Kills the server past the limit.
fn sampler(
    pid: u32,
    limit_kib: u64,
    stop: Arc<AtomicBool>,
    over: Arc<AtomicU64>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut max = 0;
        while !stop.load(Ordering::Relaxed) {
            if let Ok((rss, _)) = rss_kib(pid) {
                max = max.max(rss);
                if rss > limit_kib {
                    over.store(rss, Ordering::Relaxed);
                    let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        max
    })
}

fn check_binary(path: &Path) -> Result<()> {
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p ballast-store --bin ballastd` or pass --ballastd",
            path.display()
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    check_binary(&args.ballastd)?;
    let server = start_server(&args).await?;
    let pid = server.pid();
    let follower = wait_cluster(args.base_port).await?;
    println!(
        "loading {} keys x {} bytes ({:.0} MB) ...",
        args.keys,
        args.value_bytes,
        (args.keys * args.value_bytes) as f64 / 1e6
    );
    let (revision, expected) = load(&args).await?;
    wait_applied(&follower, revision).await?;
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let (resting, _) = rss_kib(pid)?;
    let expected = Arc::new(expected);

    let url = format!("{follower}/v1/kv/fill/?prefix=true");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    println!(
        "{} concurrent reads of {:.0} MB answers on the follower {follower}, {} round(s) ...",
        args.readers,
        expected.len() as f64 / 1e6,
        args.rounds
    );
    let mut rows = Vec::new();
    for _ in 0..args.rounds {
        rows.push(round(&args, pid, resting, &url, &http, &expected).await?);
    }
    println!();
    println!(
        "| round | readers | answer | reads ok | time | resting RSS | peak RSS | peak / resting | RSS {} s after |",
        args.settle_secs
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        println!("| {} {row}", i + 1);
    }
    drop(server);
    Ok(())
}

/// One round of concurrent reads: the table row (without its round).
async fn round(
    args: &Args,
    pid: u32,
    resting: u64,
    url: &str,
    http: &reqwest::Client,
    expected: &Arc<Vec<u8>>,
) -> Result<String> {
    reset_peak(pid)?;
    let stop = Arc::new(AtomicBool::new(false));
    let over = Arc::new(AtomicU64::new(0));
    let sampling = sampler(pid, args.rss_limit_mb * 1024, stop.clone(), over.clone());
    let started = Instant::now();
    let reads = (0..args.readers)
        .map(|_| {
            tokio::spawn(read_and_check(
                http.clone(),
                url.to_owned(),
                expected.clone(),
            ))
        })
        .collect::<Vec<_>>();
    let outcome = tokio::time::timeout(
        Duration::from_secs(args.read_timeout_secs),
        futures_join(reads),
    )
    .await;
    let elapsed = started.elapsed();
    let (_, hwm) = rss_kib(pid).unwrap_or((0, 0));
    stop.store(true, Ordering::Relaxed);
    let sampled_peak = sampling.join().map_err(|_| anyhow!("sampler panicked"))?;
    if over.load(Ordering::Relaxed) > 0 {
        bail!(
            "the server passed --rss-limit-mb {} (RSS {:.0} MiB, resting {:.0} MiB) and was killed",
            args.rss_limit_mb,
            mib(over.load(Ordering::Relaxed)),
            mib(resting)
        );
    }
    let results = outcome.map_err(|_| {
        anyhow!(
            "the reads did not finish within {} s",
            args.read_timeout_secs
        )
    })?;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|r| r.err())
        .map(|e| e.to_string())
        .collect();
    if let Some(first) = failed.first() {
        bail!(
            "{} of {} reads failed; first: {first}",
            failed.len(),
            args.readers
        );
    }
    let peak = sampled_peak.max(hwm);
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let (after, _) = rss_kib(pid)?;
    Ok(format!(
        "| {} | {:.0} MB | {}/{} | {:.1} s | {:.0} MiB | {:.0} MiB | {:.2} | {:.0} MiB |",
        args.readers,
        expected.len() as f64 / 1e6,
        args.readers,
        args.readers,
        elapsed.as_secs_f64(),
        mib(resting),
        mib(peak),
        peak as f64 / resting as f64,
        mib(after)
    ))
}

/// Waits for every read; a panicked task counts as a failed read.
async fn futures_join(reads: Vec<tokio::task::JoinHandle<Result<()>>>) -> Vec<Result<()>> {
    let mut out = Vec::with_capacity(reads.len());
    for r in reads {
        out.push(r.await.unwrap_or_else(|e| Err(anyhow!("read task: {e}"))));
    }
    out
}
