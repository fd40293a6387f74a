//! The bootstrap snapshot buffer on a follower: its answers are as current
//! as the leader's (the read-index barrier), roll forward without a scan
//! while the prefix does not change, and follow a change under it.

use anyhow::{anyhow, Result};
use ballast_client::Client;
use ballast_tests::TestCluster;
use serde_json::Value;
use tracing::info;

use crate::common::{put, WAIT};

/// A bootstrap read of `/buf/` on node `id`: its revision and keys.
async fn bootstrap(tc: &TestCluster, id: u64) -> Result<(u64, Vec<(String, String)>)> {
    let resp = tc
        .http()
        .get(format!(
            "{}/v1/kv//buf/?prefix=true&bootstrap=true",
            tc.endpoint(id)
        ))
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "bootstrap: {}", resp.status());
    let doc: Value = resp.json().await?;
    let revision = doc["revision"]
        .as_u64()
        .ok_or_else(|| anyhow!("no revision in {doc}"))?;
    let kvs = doc["kvs"]
        .as_array()
        .ok_or_else(|| anyhow!("no kvs in {doc}"))?
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap_or_default().to_owned(),
                kv["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Ok((revision, kvs))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_serves_current_bootstraps_from_its_buffer() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(WAIT).await?;
    let follower = tc.others(leader)[0];
    let leader_only = Client::new(vec![tc.endpoint(leader)])?;
    for i in 0..10 {
        put(&leader_only, &format!("/buf/{i}"), "v").await?;
    }
    let written = put(&leader_only, "/buf/last", "1").await?;

    info!(
        follower,
        "--- a bootstrap on a follower includes every acknowledged write"
    );
    let (revision, kvs) = bootstrap(&tc, follower).await?;
    assert!(revision >= written, "{revision} < {written}");
    assert_eq!(kvs.len(), 11);
    assert!(
        kvs.contains(&("/buf/last".to_owned(), "1".to_owned())),
        "{kvs:?}"
    );
    let scans = tc
        .metric(follower, "ballast_bootstrap_buffer_scans_total")
        .await?;

    info!("--- a write elsewhere: rolled forward, no scan");
    let elsewhere = put(&leader_only, "/other", "x").await?;
    let (revision, again) = bootstrap(&tc, follower).await?;
    assert!(revision >= elsewhere, "{revision} < {elsewhere}");
    assert_eq!(again, kvs);
    assert_eq!(
        tc.metric(follower, "ballast_bootstrap_buffer_scans_total")
            .await?,
        scans
    );
    assert!(
        tc.metric(follower, "ballast_bootstrap_buffer_hits_total")
            .await?
            >= 1
    );

    info!("--- a write under the prefix: the next bootstrap has it");
    let changed = put(&leader_only, "/buf/last", "2").await?;
    let (revision, kvs) = bootstrap(&tc, follower).await?;
    assert!(revision >= changed, "{revision} < {changed}");
    assert!(
        kvs.contains(&("/buf/last".to_owned(), "2".to_owned())),
        "{kvs:?}"
    );
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_a_large_prefix_bootstrap_from_the_compressed_buffer() -> Result<()> {
    let tc = TestCluster::start(1).await?;
    let client = Client::new(crate::common::endpoints(&tc))?;
    // 100 KiB of values: above the size the buffer compresses.
    let value = "c".repeat(1024);
    for i in 0..100 {
        put(&client, &format!("/big/{i:03}"), &value).await?;
    }
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?];
    for (i, dir) in dirs.iter().enumerate() {
        let eps = crate::common::endpoints(&tc);
        let r = crate::common::replica(eps, "/big/", dir.path(), &format!("big-{i}")).await?;
        let (_, expected) = crate::common::cluster_map(&client, "/big/").await?;
        assert_eq!(crate::common::replica_map(&r, "/big/"), expected);
        r.shutdown().await;
    }
    assert_eq!(
        tc.metric(1, "ballast_bootstrap_buffer_scans_total").await?,
        1
    );
    tc.shutdown().await;
    Ok(())
}

/// Replicas given the same endpoint list spread over the nodes: each
/// starts at one of them at random, so a fleet's bootstraps and watch
/// streams do not all land on the node listed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_replicas_spreads_over_the_nodes() -> Result<()> {
    // 45 replicas over 3 nodes: the chance that one node gets none of
    // them is 3 × (2/3)^45, about 3 in 100 million.
    const REPLICAS: usize = 45;
    let tc = TestCluster::start(3).await?;
    tc.wait_leader(WAIT).await?;
    let client = Client::new(crate::common::endpoints(&tc))?;
    for i in 0..5 {
        put(&client, &format!("/fleet/{i}"), "v").await?;
    }
    let dir = tempfile::tempdir()?;
    let mut fleet = Vec::new();
    for i in 0..REPLICAS {
        let cache = dir.path().join(format!("r{i}"));
        let eps = crate::common::endpoints(&tc);
        fleet.push(crate::common::replica(eps, "/fleet/", &cache, &format!("fleet-{i}")).await?);
    }
    let mut served = Vec::new();
    for id in tc.ids() {
        let hits = tc.metric(id, "ballast_bootstrap_buffer_hits_total").await?;
        let scans = tc
            .metric(id, "ballast_bootstrap_buffer_scans_total")
            .await?;
        served.push((id, hits + scans));
    }
    info!(?served, "bootstraps served per node");
    assert_eq!(
        served.iter().map(|(_, n)| n).sum::<u64>(),
        REPLICAS as u64,
        "{served:?}"
    );
    assert!(served.iter().all(|(_, n)| *n > 0), "{served:?}");
    for r in fleet {
        r.shutdown().await;
    }
    tc.shutdown().await;
    Ok(())
}
