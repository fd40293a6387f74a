//! Bursts of maximum-size values: replication is bounded by bytes, so the
//! cluster never stalls on them, and every acknowledged write is committed
//! everywhere.
//!
//! The default runs use a 256 KiB value limit so that a debug build gets
//! through 200 of them quickly; 300 entries of that size are still far over
//! what one unbounded AppendEntries could carry in a 64 MiB frame. The
//! `#[ignore]`d runs use the default 1.5 MiB limit; run them on a release
//! build:
//! `cargo test --release -p ballast-tests --test cluster t80 -- --ignored`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ballast_tests::TestCluster;
use tracing::info;

/// Concurrent maximum-size PUTs in the burst.
const BURST: usize = 200;

/// The default value limit (1.5 MiB).
fn default_max_value_bytes() -> usize {
    ballast_store::Config::default().max_value_bytes
}

/// The value limit of the default runs.
const SMALL_MAX_VALUE_BYTES: usize = 256 * 1024;

/// A value of exactly `size` bytes, different for every key.
fn value_for(i: usize, size: usize) -> String {
    let stamp = format!("value-{i:05}-");
    stamp.repeat(size / stamp.len() + 1)[..size].to_string()
}

/// What one PUT came to.
enum Outcome {
    Acked(u64),
    /// Refused before anything was applied (503 no_leader / too_many_requests
    /// after the retry budget), or outcome unknown (503 timeout).
    NotAcked(String),
}

async fn put_big(http: &reqwest::Client, endpoint: &str, key: &str, value: String) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let sent = http
            .put(format!("{endpoint}/v1/kv/{key}"))
            .body(value.clone())
            .send()
            .await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::NotAcked(e.to_string()),
        };
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if status == 200 {
            return match body["revision"].as_u64() {
                Some(rev) => Outcome::Acked(rev),
                None => Outcome::NotAcked(format!("no revision in {body}")),
            };
        }
        let code = body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        // Not applied: back off and try again, as a client does.
        if status == 503 && code != "timeout" && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return Outcome::NotAcked(format!("{status} {code}"));
    }
}

async fn burst_of_max_size_puts(n: usize, size: usize) -> Result<()> {
    let tc = TestCluster::start_with(n, |c| {
        c.max_value_bytes = size;
        c.request_timeout_ms = 30_000;
        c.heartbeat_ms = 100;
        c.election_timeout_min_ms = 1000;
        c.election_timeout_max_ms = 2000;
    })
    .await?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    info!(
        nodes = n,
        "--- {BURST} concurrent PUTs of {size} bytes through every node"
    );
    let started = Instant::now();
    let puts = (0..BURST).map(|i| {
        let http = http.clone();
        let endpoint = tc.endpoint((i % n) as u64 + 1);
        async move {
            let key = format!("big/k{i:04}");
            (
                i,
                key.clone(),
                put_big(&http, &endpoint, &key, value_for(i, size)).await,
            )
        }
    });
    let outcomes = futures::future::join_all(puts).await;
    let mut acked = BTreeMap::new();
    let mut not_acked = Vec::new();
    for (i, key, outcome) in outcomes {
        match outcome {
            Outcome::Acked(rev) => {
                acked.insert(key, (i, rev));
            }
            Outcome::NotAcked(why) => not_acked.push((key, why)),
        }
    }
    info!(
        acked = acked.len(),
        not_acked = not_acked.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "burst done"
    );
    // Refusals (503 too_many_requests) are retried until the budget runs
    // out, so every write is acknowledged; a timeout would be a stall.
    assert!(
        not_acked.is_empty(),
        "{} of {BURST} writes were not acknowledged: {not_acked:?}",
        not_acked.len()
    );

    info!("--- every node reaches the same state within 10 s");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut states = Vec::new();
        for id in tc.ids() {
            let s = tc.status(id).await?;
            states.push((s["revision"].clone(), s["state_hash"].clone()));
        }
        if states.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        if Instant::now() > deadline {
            bail!("nodes did not converge within 10 s of the burst: {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    info!("--- every acknowledged write is there, on every node");
    for id in tc.ids() {
        for (key, (i, rev)) in &acked {
            let (status, body) = tc.get(id, key, "serializable").await?;
            assert_eq!(status, 200, "{key} on node {id}: {body}");
            assert_eq!(
                body["kv"]["mod_revision"].as_u64(),
                Some(*rev),
                "{key} on node {id}"
            );
            assert!(
                body["kv"]["value"].as_str() == Some(value_for(*i, size).as_str()),
                "{key} on node {id} has another value"
            );
        }
    }

    info!("--- a small write afterwards answers at once");
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let t = Instant::now();
    tc.put(leader, "big/after", "small").await?;
    let took = t.elapsed();
    info!(
        took_ms = took.as_millis() as u64,
        "small write after the burst"
    );
    assert!(
        took < Duration::from_secs(1),
        "a small write took {took:?} after the burst"
    );
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_values_on_3_nodes_never_stalls() -> Result<()> {
    burst_of_max_size_puts(3, SMALL_MAX_VALUE_BYTES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_large_values_on_5_nodes_never_stalls() -> Result<()> {
    burst_of_max_size_puts(5, SMALL_MAX_VALUE_BYTES).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "300 MB of writes: run on a release build"]
async fn a_burst_of_max_size_values_on_3_nodes_never_stalls() -> Result<()> {
    burst_of_max_size_puts(3, default_max_value_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "300 MB of writes: run on a release build"]
async fn a_burst_of_max_size_values_on_5_nodes_never_stalls() -> Result<()> {
    burst_of_max_size_puts(5, default_max_value_bytes()).await
}
