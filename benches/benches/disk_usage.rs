//! Disk use per write: what one put costs on disk, column family by column
//! family, and how big a snapshot is against the live data.
//!
//! A real single-node cluster runs in-process on loopback in a temporary
//! directory. `--puts` puts of `--value-bytes` random (incompressible) bytes
//! go through the HTTP API, spread over `--keys` keys. Then:
//!
//! 1. the node is stopped and its write-ahead log measured as it was left;
//! 2. the database is reopened, every column family flushed, and the SST bytes
//!    of each measured (`rocksdb.total-sst-files-size`), then measured again
//!    after a full manual compaction (what background compaction converges to);
//! 3. the node is restarted, a Raft snapshot is triggered, and the snapshot
//!    file is measured and read back in full.
//!
//! Bounded: at most 4 GiB of values, every wait has a deadline, and the
//! temporary directory is removed at the end (also on error).
//!
//! ```sh
//! cargo bench -p ballast-bench --bench disk_usage -- --puts 20000 --value-bytes 10240
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_store::db;
use ballast_store::internals::snapshot;
use ballast_store::server::{Listeners, RunningNode};
use ballast_store::Config;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use rand::RngCore;

/// Largest total of values a run may write.
const MAX_TOTAL_BYTES: u64 = 4 << 30;
/// Longest wait for a leader, a snapshot, or one request.
const WAIT: Duration = Duration::from_secs(60);

/// Column families, in the order they are reported.
const CFS: [&str; 6] = [
    db::CF_RAFT_LOG,
    db::CF_KV,
    db::CF_HISTORY,
    db::CF_CHANGES,
    db::CF_RAFT_META,
    db::CF_SM_META,
];

/// Bytes on disk per write, and snapshot size against the live data.
#[derive(Debug, Parser)]
#[command(name = "disk_usage")]
struct Args {
    /// Number of puts.
    #[arg(long, default_value_t = 20_000)]
    puts: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 10_240)]
    value_bytes: usize,
    /// Distinct keys the puts go to (0: one key per put). Fewer keys than puts
    /// make overwrites, so the history holds more than the live data.
    #[arg(long, default_value_t = 0)]
    keys: u64,
    /// After the puts, delete every key in one prefix delete (one revision).
    #[arg(long)]
    delete_all: bool,
    /// Concurrent writers.
    #[arg(long, default_value_t = 16)]
    clients: u64,
    /// Longest the write phase may take, seconds.
    #[arg(long, default_value_t = 900)]
    write_deadline_secs: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const PREFIX: &str = "disk/";

fn key(i: u64) -> String {
    format!("{PREFIX}{i:010}")
}

/// Starts the node of `config` on fresh loopback ports (forming the
/// one-node cluster on its first start) and waits until it leads.
async fn start_node(config: &mut Config) -> Result<RunningNode> {
    let client = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (c, p) = (client.local_addr()?, peer.local_addr()?);
    config.listen_client = c.to_string();
    config.listen_peer = p.to_string();
    if config.initial_cluster.is_none() {
        config.initial_cluster = Some(format!("1={c}/{p}"));
    }
    let node = ballast_store::start(config.clone(), Some(Listeners { client, peer }))
        .await
        .context("start node")?;
    let deadline = Instant::now() + WAIT;
    while !node.node.raft().is_leader() {
        if Instant::now() > deadline {
            node.shutdown().await;
            bail!("no leader within {WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(node)
}

async fn write(args: &Args, node: &RunningNode) -> Result<()> {
    let endpoint = format!("http://{}", node.client_addr);
    let client = ballast_client::Client::builder(vec![endpoint])
        .request_timeout(WAIT)
        .build()?;
    let keys = if args.keys == 0 { args.puts } else { args.keys };
    let next = Arc::new(AtomicU64::new(0));
    let bar = ProgressBar::new(args.puts).with_style(
        ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} puts ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("writing");
    let mut tasks = Vec::new();
    for _ in 0..args.clients.max(1) {
        let (client, next, bar) = (client.clone(), next.clone(), bar.clone());
        let (puts, value_bytes) = (args.puts, args.value_bytes);
        tasks.push(tokio::spawn(async move {
            let mut value = vec![0u8; value_bytes];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= puts {
                    return Ok::<_, anyhow::Error>(());
                }
                rand::thread_rng().fill_bytes(&mut value);
                client
                    .put(&key(i % keys), value.clone())
                    .await
                    .with_context(|| format!("put {i}"))?;
                bar.inc(1);
            }
        }));
    }
    let all = async {
        for t in tasks {
            t.await??;
        }
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(args.write_deadline_secs), all)
        .await
        .context("write phase deadline")??;
    bar.finish_and_clear();
    if args.delete_all {
        let deleted = client.delete_prefix(PREFIX).await?;
        eprintln!("deleted {} keys in one revision", deleted.deleted);
    }
    Ok(())
}

fn files_bytes(dir: &Path, pred: &dyn Fn(&Path) -> bool) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let meta = entry.metadata()?;
        if meta.is_dir() {
            total += files_bytes(&path, pred)?;
        } else if pred(&path) {
            total += meta.len();
        }
    }
    Ok(total)
}

/// What the stopped node left on disk.
struct DiskFigures {
    /// Write-ahead log files.
    wal: u64,
    /// Every file of the data directory.
    dir_total: u64,
    /// SST bytes per column family ([`CFS`] order) after a flush.
    flushed: Vec<u64>,
    /// The same after a full manual compaction.
    compacted: Vec<u64>,
}

/// Measures the data directory of the stopped node in `data_dir`.
///
/// The node's shutdown may still be closing the database in the background,
/// so the files are measured, the database opened, and both repeated until
/// the open succeeds (its lock is free once the close is done). Then every
/// column family is flushed and measured, compacted and measured again.
fn measure_disk(data_dir: &Path) -> Result<DiskFigures> {
    let db_dir = data_dir.join("db");
    let deadline = Instant::now() + WAIT;
    let (wal, dir_total, db) = loop {
        let wal = files_bytes(&db_dir, &|p| p.extension().is_some_and(|x| x == "log"))?;
        let dir_total = files_bytes(data_dir, &|_| true)?;
        match db::open(&db_dir) {
            Ok(db) => break (wal, dir_total, db),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "database still open; retrying");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e).context("reopen the database"),
        }
    };
    let measure = || -> Result<Vec<u64>> {
        CFS.iter()
            .map(|name| {
                let cf = db::cf(&db, name)?;
                Ok(db
                    .property_int_value_cf(cf, "rocksdb.total-sst-files-size")?
                    .unwrap_or(0))
            })
            .collect()
    };
    for name in CFS {
        db.flush_cf(db::cf(&db, name)?)?;
    }
    let flushed = measure()?;
    for name in CFS {
        db.compact_range_cf(db::cf(&db, name)?, None::<&[u8]>, None::<&[u8]>);
    }
    let compacted = measure()?;
    Ok(DiskFigures {
        wal,
        dir_total,
        flushed,
        compacted,
    })
}

async fn snapshot_file(config: &mut Config) -> Result<(PathBuf, u64)> {
    let node = start_node(config).await?;
    let result = async {
        node.node.raft().trigger().snapshot().await?;
        let dir = config.data_dir.join("snapshots");
        let deadline = Instant::now() + WAIT;
        loop {
            let found = std::fs::read_dir(&dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "snap"));
            if let Some(path) = found {
                let len = std::fs::metadata(&path)?.len();
                return Ok((path, len));
            }
            if Instant::now() > deadline {
                bail!("no snapshot file within {WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    node.shutdown().await;
    result
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn per_put(bytes: u64, puts: u64) -> String {
    format!("{:.0} B", bytes as f64 / puts.max(1) as f64)
}

async fn run(args: Args) -> Result<()> {
    let total = args.puts.saturating_mul(args.value_bytes as u64);
    if total > MAX_TOTAL_BYTES {
        bail!("puts × value-bytes is {total} bytes; at most {MAX_TOTAL_BYTES} per run");
    }
    let dir = tempfile::Builder::new().prefix("ballast-disk-").tempdir()?;
    let mut config = Config {
        node_id: 1,
        data_dir: dir.path().join("node1"),
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        // No automatic snapshot or log purge and no compaction during the
        // run: every byte a put leaves behind is still there to be measured.
        snapshot_logs: u64::MAX / 2,
        history_revisions: 0,
        history_age_secs: 0,
        // No reserve file in the measured directory, and the WAL cap of a
        // node without one (as before the reserve existed).
        reserve_bytes: 0,
        ..Config::default()
    };

    let node = start_node(&mut config).await?;
    let started = Instant::now();
    let written = write(&args, &node).await;
    let elapsed = started.elapsed();
    node.shutdown().await;
    written?;

    let DiskFigures {
        wal,
        dir_total,
        flushed,
        compacted,
    } = measure_disk(&config.data_dir)?;
    let (snap_path, snap_bytes) = snapshot_file(&mut config).await?;
    let readable = match snapshot::for_each_record(&snap_path, |_, _, _| Ok(())) {
        Ok(_) => "yes".to_string(),
        Err(e) => format!("no: {e}"),
    };

    let keys = if args.keys == 0 {
        args.puts
    } else {
        args.keys.min(args.puts)
    };
    let key_len = key(0).len() as u64;
    let live = if args.delete_all {
        0
    } else {
        keys * (key_len + args.value_bytes as u64)
    };
    let history = args.puts * (key_len + args.value_bytes as u64);
    println!(
        "{} puts of {} B values over {} keys{} in {:.1} s; live data {} (keys + values), \
         all versions {}",
        args.puts,
        args.value_bytes,
        keys,
        if args.delete_all {
            ", then one prefix delete of all"
        } else {
            ""
        },
        elapsed.as_secs_f64(),
        mb(live),
        mb(history),
    );
    println!();
    println!("| part | after flush | per put | after full compaction | per put |");
    println!("|---|---:|---:|---:|---:|");
    for (i, name) in CFS.iter().enumerate() {
        println!(
            "| `{name}` | {} | {} | {} | {} |",
            mb(flushed[i]),
            per_put(flushed[i], args.puts),
            mb(compacted[i]),
            per_put(compacted[i], args.puts)
        );
    }
    let (sum_f, sum_c): (u64, u64) = (flushed.iter().sum(), compacted.iter().sum());
    println!(
        "| all column families | {} | {} | {} | {} |",
        mb(sum_f),
        per_put(sum_f, args.puts),
        mb(sum_c),
        per_put(sum_c, args.puts)
    );
    println!(
        "| WAL left at shutdown | {} | {} | | |",
        mb(wal),
        per_put(wal, args.puts)
    );
    println!(
        "| data dir at shutdown (SST + WAL + other files) | {} | {} | | |",
        mb(dir_total),
        per_put(dir_total, args.puts)
    );
    println!();
    let ratio = |of: u64| {
        if of == 0 {
            "n/a".to_string()
        } else {
            format!("{:.2}", snap_bytes as f64 / of as f64)
        }
    };
    println!(
        "snapshot file: {} = {} × the live data, {} × all versions; readable back: {readable}",
        mb(snap_bytes),
        ratio(live),
        ratio(history),
    );
    drop(dir);
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("disk_usage: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("disk_usage: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
