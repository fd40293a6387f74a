//! A replica whose history was compacted away while it was down is told
//! `compacted` by its watch and re-bootstraps: it ends with the cluster's
//! state, deleted keys included.

use anyhow::Result;
use ballast_client::Client;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{cluster_map, endpoints, put, replica, replica_map, WAIT};

const PREFIX: &str = "/compacted/";

/// Bootstraps node `id` answered (from the snapshot buffer, scan or not).
async fn bootstraps(tc: &TestCluster, id: u64) -> Result<u64> {
    Ok(tc.metric(id, "ballast_bootstrap_buffer_hits_total").await?
        + tc.metric(id, "ballast_bootstrap_buffer_scans_total")
            .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_forced_through_compacted_re_bootstraps() -> Result<()> {
    let tc = TestCluster::start(1).await?;
    let eps = endpoints(&tc);
    let client = Client::new(eps.clone())?;
    let dir = tempfile::tempdir()?;
    put(&client, &format!("{PREFIX}keep"), "1").await?;
    let doomed = put(&client, &format!("{PREFIX}doomed"), "1").await?;
    let r = replica(eps.clone(), PREFIX, dir.path(), "cp-1").await?;
    r.wait_for_revision(doomed, WAIT).await?;
    r.shutdown().await;

    info!("--- while the replica is down: changes, a delete, and a compaction past them");
    for i in 0..5 {
        put(&client, &format!("{PREFIX}k{i}"), &i.to_string()).await?;
    }
    client.delete(&format!("{PREFIX}doomed")).await?;
    let last = put(&client, "/elsewhere", "x").await?;
    let resp = tc
        .http()
        .post(format!("{}/v1/compact", tc.endpoint(1)))
        .json(&serde_json::json!({ "revision": last }))
        .send()
        .await?;
    assert!(resp.status().is_success(), "compact: {}", resp.status());

    info!("--- the replica restarts from its cache: compacted, so it re-bootstraps");
    let before = bootstraps(&tc, 1).await?;
    let r = replica(eps, PREFIX, dir.path(), "cp-1").await?;
    assert!(r.status().serving_from_disk);
    assert!(
        r.get(&format!("{PREFIX}doomed")).is_some(),
        "the cache had it"
    );
    r.wait_for_revision(last, WAIT).await?;
    let (_, expected) = cluster_map(&client, PREFIX).await?;
    assert_eq!(replica_map(&r, PREFIX), expected);
    assert!(r.get(&format!("{PREFIX}doomed")).is_none());
    assert_eq!(
        bootstraps(&tc, 1).await?,
        before + 1,
        "exactly one re-bootstrap"
    );
    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}
