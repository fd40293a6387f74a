//! Static stability: a replica answers every read through a full cluster
//! outage, and a replica restarted during the outage serves its file at once.

use std::time::{Duration, Instant};

use anyhow::Result;
use ballast_client::Client;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{cluster_map, endpoints, put, replica, replica_map, wait_until, WAIT};

const PREFIX: &str = "/services/api/";

async fn seed(client: &Client, n: usize) -> Result<u64> {
    let mut rev = 0;
    for i in 0..n {
        rev = put(client, &format!("{PREFIX}k{i}"), &format!("v{i}")).await?;
    }
    // A key outside the prefix must not show up in the replica.
    put(client, "/services/other/x", "nope").await?;
    Ok(rev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_serves_through_a_full_outage_and_catches_up() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let client = Client::new(endpoints(&tc))?;
    let dir = tempfile::tempdir()?;
    let rev = seed(&client, 10).await?;
    let r = replica(endpoints(&tc), PREFIX, dir.path(), "outage-1").await?;
    r.wait_for_revision(rev, WAIT).await?;
    let (_, before) = cluster_map(&client, PREFIX).await?;
    assert_eq!(replica_map(&r, PREFIX), before);
    assert!(r.get("/services/other/x").is_none());

    info!("--- kill every node; the replica keeps answering every read");
    let applied = r.revision();
    for id in tc.ids() {
        tc.kill(id).await?;
    }
    wait_until("the replica to notice the outage", WAIT, || {
        !r.status().connected
    })
    .await?;
    let outage_end = Instant::now() + Duration::from_secs(2);
    let mut reads = 0u64;
    while Instant::now() < outage_end {
        assert_eq!(
            replica_map(&r, PREFIX),
            before,
            "reads changed during the outage"
        );
        let got = r.get(&format!("{PREFIX}k3"));
        assert_eq!(got.map(|kv| kv.value.clone()), Some(b"v3".to_vec()));
        assert_eq!(r.revision(), applied);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = r.status();
    assert!(!status.connected, "{status:?}");
    assert!(status.is_stale(Duration::from_millis(500)), "{status:?}");
    info!(reads, ?status, "served through the outage");

    info!("--- bring the cluster back and change things; the replica catches up");
    for id in tc.ids() {
        tc.restart(id).await?;
    }
    tc.wait_leader(WAIT).await?;
    put(&client, &format!("{PREFIX}k3"), "v3-new").await?;
    client.delete(&format!("{PREFIX}k4")).await?;
    let last = put(&client, &format!("{PREFIX}k99"), "new-key").await?;
    r.wait_for_revision(last, WAIT).await?;
    let (_, after) = cluster_map(&client, PREFIX).await?;
    assert_eq!(replica_map(&r, PREFIX), after);
    wait_until("the replica to reconnect", WAIT, || r.status().connected).await?;
    assert!(!r.status().serving_from_disk);
    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_restarted_during_an_outage_serves_its_file_at_once() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let client = Client::new(endpoints(&tc))?;
    let dir = tempfile::tempdir()?;
    let rev = seed(&client, 8).await?;
    let r = replica(endpoints(&tc), PREFIX, dir.path(), "restart-1").await?;
    r.wait_for_revision(rev, WAIT).await?;
    let expected = replica_map(&r, PREFIX);
    let applied = r.revision();

    info!("--- kill every node, then restart the replica on the same cache dir");
    for id in tc.ids() {
        tc.kill(id).await?;
    }
    r.shutdown().await;
    let started = Instant::now();
    let r = replica(endpoints(&tc), PREFIX, dir.path(), "restart-1").await?;
    let took = started.elapsed();
    info!(?took, "replica started with the cluster down");
    assert!(
        took < Duration::from_secs(2),
        "start waited for the cluster: {took:?}"
    );
    let status = r.status();
    assert!(status.serving_from_disk && !status.connected, "{status:?}");
    assert!(status.since_contact.is_none(), "{status:?}");
    assert_eq!(r.revision(), applied);
    assert_eq!(replica_map(&r, PREFIX), expected);

    info!("--- the cluster returns; the replica leaves its disk copy behind");
    for id in tc.ids() {
        tc.restart(id).await?;
    }
    tc.wait_leader(WAIT).await?;
    let last = put(&client, &format!("{PREFIX}k0"), "after").await?;
    r.wait_for_revision(last, WAIT).await?;
    wait_until("serving_from_disk to clear", WAIT, || {
        !r.status().serving_from_disk
    })
    .await?;
    let (_, now) = cluster_map(&client, PREFIX).await?;
    assert_eq!(replica_map(&r, PREFIX), now);
    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}
