use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ballast_client::{Client, Consistency, RangeOptions, Replica, ReplicaBuilder};
use ballast_tests::TestCluster;

/// Generous wait for replica convergence in tests.
pub const WAIT: Duration = Duration::from_secs(20);

/// Every node's endpoint.
pub fn endpoints(tc: &TestCluster) -> Vec<String> {
    tc.ids().iter().map(|id| tc.endpoint(*id)).collect()
}

/// A replica with test-friendly intervals.
pub async fn replica(
    endpoints: Vec<String>,
    prefix: &str,
    dir: &Path,
    id: &str,
) -> Result<Replica> {
    Ok(replica_builder(endpoints, prefix, dir, id).start().await?)
}

/// The builder of [`replica`], for tests that set more.
pub fn replica_builder(
    endpoints: Vec<String>,
    prefix: &str,
    dir: &Path,
    id: &str,
) -> ReplicaBuilder {
    Replica::builder(endpoints)
        .prefix(prefix)
        .cache_dir(dir)
        .id(id)
        .progress_interval(Duration::from_millis(200))
        .report_interval(Duration::from_secs(1))
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .initial_sync_timeout(Duration::from_secs(15))
        .request_timeout(Duration::from_secs(2))
}

/// `key -> (value, mod_revision)` of a replica.
pub fn replica_map(r: &Replica, prefix: &str) -> BTreeMap<String, (Vec<u8>, u64)> {
    r.range(prefix)
        .iter()
        .map(|kv| (kv.key.clone(), (kv.value.clone(), kv.mod_revision)))
        .collect()
}

/// A linearizable read of `prefix`: its revision and `key -> (value, mod_revision)`.
pub async fn cluster_map(
    client: &Client,
    prefix: &str,
) -> Result<(u64, BTreeMap<String, (Vec<u8>, u64)>)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let options = RangeOptions {
            consistency: Consistency::Linearizable,
            ..RangeOptions::default()
        };
        match client.range(prefix, options).await {
            Ok(r) => {
                let map = r
                    .kvs
                    .into_iter()
                    .map(|kv| (kv.key, (kv.value, kv.mod_revision)))
                    .collect();
                return Ok((r.revision, map));
            }
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "linearizable range retry");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("linearizable range of {prefix}: {e}"),
        }
    }
}

/// Puts through `client`, retrying while the cluster has no quorum (only
/// errors that guarantee the write was not applied are retried).
pub async fn put(client: &Client, key: &str, value: &str) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.put(key, value).await {
            Ok(r) => return Ok(r.revision),
            Err(e) if e.is_definitely_not_applied() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => bail!("put {key}: {e}"),
        }
    }
}

/// Waits for `cond` with a deadline.
pub async fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
