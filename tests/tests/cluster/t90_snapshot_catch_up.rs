//! Catching up by snapshot over a slow link: the transfer finishes (each
//! chunk has its own deadline, the install none), the lagging node keeps only
//! its current snapshot, and readers of that node never see the key space
//! half installed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_tests::throttle::ThrottleProxy;
use ballast_tests::TestCluster;
use openraft::async_runtime::watch::WatchReceiver;
use tracing::info;

/// Bytes under `path`, recursively (0 for what vanished meanwhile).
fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// What the reader of the lagging node saw.
#[derive(Debug, Default)]
struct ReadLog {
    reads: u64,
    waits: u64,
}

async fn catch_up_through_slow_link(keys: usize, value_bytes: usize, link: u64) -> Result<()> {
    let proxy = ThrottleProxy::start(link).await?;
    let proxy_addr = proxy.addr().to_string();
    let lagging = 3;
    // Every node reaches node 3 through the proxy.
    let mut tc = TestCluster::start_with(3, |c| {
        c.snapshot_logs = 500;
        c.dial_overrides = Some(format!("{lagging}={proxy_addr}"));
        c.request_timeout_ms = 10_000;
        if c.node_id == lagging {
            proxy.set_upstream(&c.listen_peer);
        }
    })
    .await?;
    tc.kill(lagging).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;

    info!(keys, value_bytes, "--- write while node {lagging} is down");
    let value = "v".repeat(value_bytes);
    let http = tc.http().clone();
    let endpoint = tc.endpoint(leader);
    let writers = 16;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let (http, endpoint, value) = (http.clone(), endpoint.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            for i in (w..keys).step_by(writers) {
                let url = format!("{endpoint}/v1/kv/catch/k{i:06}");
                let resp = http.put(url).body(value.clone()).send().await?;
                if !resp.status().is_success() {
                    bail!("put k{i}: {}", resp.status());
                }
                let body: serde_json::Value = resp.json().await?;
                last = last.max(body["revision"].as_u64().unwrap_or(0));
            }
            anyhow::Ok(last)
        }));
    }
    let mut revision = 0;
    for t in tasks {
        revision = revision.max(t.await??);
    }
    // The snapshot is built, and the log purged behind it, in the
    // background after the write that crossed the threshold.
    tc.wait_log_purged(leader, Duration::from_secs(30)).await?;

    info!("--- restart node {lagging} behind a {link} B/s link");
    let dirs = [
        tc.config(leader).data_dir.clone(),
        tc.config(lagging).data_dir.clone(),
    ];
    let peaks = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peaks, sampling) = (peaks.clone(), sampling.clone());
        tokio::task::spawn_blocking(move || {
            while sampling.load(Ordering::Relaxed) {
                for (i, dir) in dirs.iter().enumerate() {
                    peaks[i].fetch_max(dir_bytes(dir), Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let started = Instant::now();
    tc.restart(lagging).await?;

    // Read node `lagging` without pause while it catches up: its revision
    // never goes backwards and no key it once showed vanishes (nothing is
    // ever deleted here).
    let reading = Arc::new(AtomicBool::new(true));
    let reader = {
        let (http, endpoint, reading) = (http.clone(), tc.endpoint(lagging), reading.clone());
        let probe_keys: Vec<String> = (0..keys)
            .step_by((keys / 8).max(1))
            .map(|i| format!("catch/k{i:06}"))
            .collect();
        tokio::spawn(async move {
            let mut log = ReadLog::default();
            let mut last_revision = 0u64;
            let mut seen = vec![false; probe_keys.len()];
            while reading.load(Ordering::Relaxed) {
                for (n, key) in probe_keys.iter().enumerate() {
                    let url = format!("{endpoint}/v1/kv/{key}?consistency=serializable");
                    let Ok(resp) = http.get(url).send().await else {
                        log.waits += 1;
                        continue;
                    };
                    let status = resp.status().as_u16();
                    let rev: u64 = resp
                        .headers()
                        .get("x-ballast-revision")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    match status {
                        200 | 404 => {
                            log.reads += 1;
                            if rev < last_revision {
                                bail!("revision went back from {last_revision} to {rev}");
                            }
                            last_revision = rev;
                            if status == 200 {
                                seen[n] = true;
                            } else if seen[n] {
                                bail!("{key} vanished at revision {rev}");
                            }
                        }
                        // A read that waited out an install longer than the
                        // request timeout: not an answer, not a wrong one.
                        503 => log.waits += 1,
                        other => bail!("read {key}: {other}"),
                    }
                }
            }
            anyhow::Ok(log)
        })
    };

    let deadline = started + Duration::from_secs(60 + (keys * value_bytes) as u64 / link * 4);
    loop {
        if tc.node(lagging)?.applied().revision >= revision {
            break;
        }
        if Instant::now() > deadline {
            bail!("node {lagging} did not catch up in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let catch_up = started.elapsed();
    reading.store(false, Ordering::Relaxed);
    let log = reader.await??;
    sampling.store(false, Ordering::Relaxed);
    sampler.await?;
    let snapshot = tc.node(lagging)?.raft().metrics().borrow_watched().snapshot;
    assert!(
        snapshot.is_some(),
        "node {lagging} caught up by installing a snapshot"
    );
    info!(
        catch_up_ms = catch_up.as_millis() as u64,
        leader_peak_bytes = peaks[0].load(Ordering::Relaxed),
        lagging_peak_bytes = peaks[1].load(Ordering::Relaxed),
        live_bytes = keys * value_bytes,
        reads = log.reads,
        waits = log.waits,
        "caught up"
    );
    assert!(log.reads > 0, "the reader got answers");

    // Only the current snapshot stays: no received or temporary files, once
    // a snapshot the node may be building of its own has finished.
    let settle = Duration::from_secs(60);
    let lagging_files =
        ballast_tests::wait_single_snapshot(&tc.config(lagging).data_dir, settle).await;
    assert!(
        lagging_files.len() == 1 && lagging_files[0].ends_with(".snap"),
        "node {lagging} keeps only its current snapshot: {lagging_files:?}"
    );
    let leader_files =
        ballast_tests::wait_single_snapshot(&tc.config(leader).data_dir, settle).await;
    assert!(
        leader_files.len() == 1 && leader_files[0].ends_with(".snap"),
        "the leader keeps only its current snapshot: {leader_files:?}"
    );

    // Every node agrees, and the caught-up node serves every key.
    let v = tc
        .value(lagging, &format!("catch/k{:06}", keys - 1), "linearizable")
        .await?
        .context("the last key is on the caught-up node")?;
    assert_eq!(v.len(), value_bytes);
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_catches_up_by_snapshot_through_a_slow_link() -> Result<()> {
    // 20 MB of values through a 20 MB/s link.
    catch_up_through_slow_link(2_000, 10 * 1024, 20_000_000).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a 1 GB key space: run on a release build"]
async fn a_node_catches_up_on_a_gigabyte_through_a_slow_link() -> Result<()> {
    catch_up_through_slow_link(100_000, 10 * 1024, 20_000_000).await
}
