//! `ballast-watch-bench`: many concurrent watch streams on one node while a
//! writer writes at a fixed interval. Reports the delay from each write's
//! acknowledgement to its delivery on every watcher, whether every watcher got
//! every event, the node's RSS per idle watcher and CPU, and write throughput
//! with and without the watchers.
//!
//! Watchers are raw HTTP/1.1 connections (one task each) so the load
//! generator stays small next to the server. Loopback only; every phase is
//! bounded in time.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Watch fan-out benchmark for a running ballast cluster.
#[derive(Debug, Parser)]
#[command(name = "ballast-watch-bench", version)]
struct Args {
    /// Node whose watch streams are measured (host:port).
    #[arg(long, default_value = "127.0.0.1:2479")]
    watch_node: String,
    /// Node the writer writes through (host:port).
    #[arg(long, default_value = "127.0.0.1:2379")]
    write_node: String,
    /// Concurrent watch streams.
    #[arg(long, default_value_t = 10_000)]
    watchers: usize,
    /// Interval between writes in the delay phase, milliseconds.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Length of the delay phase, seconds.
    #[arg(long, default_value_t = 30)]
    duration_secs: u64,
    /// Length of each throughput phase, seconds (0 skips them).
    #[arg(long, default_value_t = 8)]
    throughput_secs: u64,
    /// Concurrent writers in the throughput phases.
    #[arg(long, default_value_t = 16)]
    throughput_clients: usize,
    /// PID of the server process, for RSS and CPU (0: not measured).
    #[arg(long, default_value_t = 0)]
    pid: u32,
}

/// Microsecond buckets of a shared delay histogram (100 µs wide, up to 20 s).
struct Delays {
    buckets: Vec<AtomicU64>,
    max_us: AtomicU64,
}

const BUCKET_US: u64 = 100;

impl Delays {
    fn new() -> Self {
        Delays {
            buckets: (0..200_000).map(|_| AtomicU64::new(0)).collect(),
            max_us: AtomicU64::new(0),
        }
    }
    fn record(&self, us: u64) {
        let i = ((us / BUCKET_US) as usize).min(self.buckets.len() - 1);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }
    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
    fn percentile(&self, p: f64) -> f64 {
        let total = self.count();
        let want = ((total as f64) * p).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want.max(1) {
                return ((i as u64 + 1) * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::NAN
    }
}

struct Shared {
    base: Instant,
    /// Acknowledgement time (µs since `base`, +1 so 0 means "not yet") per
    /// revision offset.
    acks: Vec<AtomicU64>,
    first_rev: AtomicU64,
    /// Set once `first_rev` is known (it may be 0 on a fresh cluster).
    started: AtomicBool,
    delays: Delays,
    connected: AtomicUsize,
    complete: AtomicUsize,
    broken: AtomicUsize,
    stop: AtomicBool,
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Longest one request of the writer may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<String> {
    tokio::time::timeout(REQUEST_TIMEOUT, http_once(addr, method, path, body))
        .await
        .map_err(|_| anyhow!("{method} {path}: no answer within {REQUEST_TIMEOUT:?}"))?
}

async fn http_once(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut request = req.into_bytes();
    request.extend_from_slice(body);
    s.write_all(&request).await?;
    let mut out = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await?;
    let text = String::from_utf8_lossy(&out).to_string();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok(body)
}

async fn revision(addr: &str) -> Result<u64> {
    let body = http(addr, "GET", "/v1/status", b"").await?;
    let v: serde_json::Value =
        serde_json::from_str(&body).with_context(|| format!("status: {body}"))?;
    v["revision"]
        .as_u64()
        .ok_or_else(|| anyhow!("no revision in {v}"))
}

/// One watcher: checks it sees revisions first+1 ..= first+expected in order.
async fn watcher(addr: String, shared: Arc<Shared>, expected: u64) {
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        shared.broken.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let req = format!("GET /v1/watch/bench/?prefix=true HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        shared.broken.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut lines = BufReader::with_capacity(2048, s).lines();
    // Status line and headers.
    match lines.next_line().await {
        Ok(Some(status)) if status.contains(" 200 ") => {}
        _ => {
            shared.broken.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut last: Option<u64> = None;
    let mut got = 0u64;
    while let Ok(Some(line)) = lines.next_line().await {
        let Some(id) = line.strip_prefix("id: ") else {
            continue;
        };
        let Ok(rev) = id.trim().parse::<u64>() else {
            continue;
        };
        let now = shared.base.elapsed().as_micros() as u64 + 1;
        if !shared.started.load(Ordering::Acquire) {
            continue;
        }
        let first = shared.first_rev.load(Ordering::Acquire);
        if rev <= first {
            continue;
        }
        if let Some(prev) = last {
            if rev != prev + 1 {
                shared.broken.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        last = Some(rev);
        let offset = (rev - first - 1) as usize;
        let ack = shared
            .acks
            .get(offset)
            .map_or(0, |a| a.load(Ordering::Acquire));
        // Delivered before the writer saw its acknowledgement: no delay.
        let delay = if ack == 0 { 0 } else { now.saturating_sub(ack) };
        shared.delays.record(delay);
        got += 1;
        if got == expected {
            shared.complete.fetch_add(1, Ordering::Relaxed);
        }
        if shared.stop.load(Ordering::Relaxed) && got >= expected {
            return;
        }
    }
}

/// Puts as fast as `clients` closed loops allow for `secs`; returns puts/s.
async fn throughput(addr: &str, clients: usize, secs: u64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for c in 0..clients {
        let (addr, done) = (addr.to_string(), done.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(s) = TcpStream::connect(&addr).await else { return };
            let _ = s.set_nodelay(true);
            let mut s = BufReader::new(s);
            let value = vec![b'x'; 256];
            for i in 0..u64::MAX {
                if Instant::now() >= deadline {
                    break;
                }
                let head = format!(
                    "PUT /v1/kv/tput/c{c}/k{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 256\r\n\r\n",
                    i % 100
                );
                let mut request = head.into_bytes();
                request.extend_from_slice(&value);
                if s.get_mut().write_all(&request).await.is_err() {
                    return;
                }
                // Response: headers then a small body with Content-Length.
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    if s.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0u8; len];
                if tokio::io::AsyncReadExt::read_exact(&mut s, &mut body).await.is_err() {
                    return;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / secs as f64)
}

async fn run(args: Args) -> Result<()> {
    let writes = args.duration_secs * 1000 / args.interval_ms.max(1);
    let shared = Arc::new(Shared {
        base: Instant::now(),
        acks: (0..writes + 16).map(|_| AtomicU64::new(0)).collect(),
        first_rev: AtomicU64::new(0),
        started: AtomicBool::new(false),
        delays: Delays::new(),
        connected: AtomicUsize::new(0),
        complete: AtomicUsize::new(0),
        broken: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
    });

    let tput_before = if args.throughput_secs > 0 {
        Some(
            throughput(
                &args.write_node,
                args.throughput_clients,
                args.throughput_secs,
            )
            .await?,
        )
    } else {
        None
    };
    let rss_before = rss_kib(args.pid);

    eprintln!(
        "opening {} watch streams on {}",
        args.watchers, args.watch_node
    );
    let mut tasks = Vec::with_capacity(args.watchers);
    for i in 0..args.watchers {
        tasks.push(tokio::spawn(watcher(
            args.watch_node.clone(),
            shared.clone(),
            writes,
        )));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let open_deadline = Instant::now() + Duration::from_secs(60);
    while shared.connected.load(Ordering::Relaxed) + shared.broken.load(Ordering::Relaxed)
        < args.watchers
    {
        if Instant::now() > open_deadline {
            bail!(
                "only {} of {} watchers connected",
                shared.connected.load(Ordering::Relaxed),
                args.watchers
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_idle = rss_kib(args.pid);

    let first = revision(&args.write_node).await?;
    shared.first_rev.store(first, Ordering::Release);
    shared.started.store(true, Ordering::Release);
    eprintln!(
        "writing every {} ms for {} s ({writes} writes)",
        args.interval_ms, args.duration_secs
    );
    let cpu_start = cpu_ticks(args.pid);
    let wall_start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(args.interval_ms));
    let mut last_rev = first;
    for i in 0..writes {
        tick.tick().await;
        let body = http(
            &args.write_node,
            "PUT",
            &format!("/v1/kv/bench/k{}", i % 100),
            b"v",
        )
        .await?;
        let v: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("put: {body}"))?;
        let rev = v["revision"]
            .as_u64()
            .ok_or_else(|| anyhow!("no revision in {v}"))?;
        if rev != last_rev + 1 {
            bail!("another writer is active: revision {rev} after {last_rev}");
        }
        last_rev = rev;
        let now = shared.base.elapsed().as_micros() as u64 + 1;
        shared.acks[(rev - first - 1) as usize].store(now, Ordering::Release);
    }
    // Let the last events arrive.
    let settle = Instant::now() + Duration::from_secs(10);
    while shared.complete.load(Ordering::Relaxed) + shared.broken.load(Ordering::Relaxed)
        < args.watchers
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = wall_start.elapsed().as_secs_f64();
    let cpu = match (cpu_start, cpu_ticks(args.pid)) {
        (Some(a), Some(b)) => Some((b - a) as f64 / 100.0 / wall * 100.0),
        _ => None,
    };
    let tput_after = if args.throughput_secs > 0 {
        Some(
            throughput(
                &args.write_node,
                args.throughput_clients,
                args.throughput_secs,
            )
            .await?,
        )
    } else {
        None
    };
    shared.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.abort();
    }

    let d = &shared.delays;
    println!("| measure | value |");
    println!("|---|---:|");
    println!(
        "| watchers connected | {} |",
        shared.connected.load(Ordering::Relaxed)
    );
    println!(
        "| watchers that got every event ({writes} revisions, in order) | {} |",
        shared.complete.load(Ordering::Relaxed)
    );
    println!(
        "| watchers broken (gap, error or refused) | {} |",
        shared.broken.load(Ordering::Relaxed)
    );
    println!("| events delivered | {} |", d.count());
    println!("| delivery delay p50 | {:.1} ms |", d.percentile(0.50));
    println!("| delivery delay p99 | {:.1} ms |", d.percentile(0.99));
    println!(
        "| delivery delay max | {:.1} ms |",
        d.max_us.load(Ordering::Relaxed) as f64 / 1000.0
    );
    if let (Some(a), Some(b)) = (rss_before, rss_idle) {
        println!(
            "| server RSS before / with idle watchers | {} / {} MiB |",
            a / 1024,
            b / 1024
        );
        println!(
            "| RSS per idle watcher | {:.1} KB |",
            (b.saturating_sub(a)) as f64 * 1024.0 / args.watchers as f64 / 1000.0
        );
    }
    if let Some(c) = cpu {
        println!("| server CPU during the write phase | {c:.0}% of one core |");
    }
    if let (Some(a), Some(b)) = (tput_before, tput_after) {
        println!(
            "| puts/s ({} clients) without / with watchers | {a:.0} / {b:.0} |",
            args.throughput_clients
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ballast-watch-bench: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast-watch-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
