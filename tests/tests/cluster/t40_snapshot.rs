use std::time::Duration;

use anyhow::Result;
use ballast_tests::TestCluster;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_missed_many_entries_catches_up_by_snapshot() -> Result<()> {
    // Snapshots every 50 entries; the log before them is purged.
    let mut tc = TestCluster::start_with(3, |c| c.snapshot_logs = 50).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let lagging = tc
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");

    info!("--- stop node {lagging} and write 600 entries without it");
    tc.kill(lagging).await?;
    let mut rev = 0;
    for i in 0..600 {
        rev = tc
            .put(leader, &format!("snap/k{}", i % 200), &format!("v{i}"))
            .await?;
    }
    // The snapshot is built, and the log purged behind it, in the
    // background after the write that crossed the threshold.
    tc.wait_log_purged(leader, Duration::from_secs(30)).await?;

    info!("--- restart it: it must install a snapshot to catch up");
    tc.restart(lagging).await?;
    tc.wait_applied(rev, Duration::from_secs(30)).await?;
    let snapshot = tc.node(lagging)?.raft().metrics().borrow_watched().snapshot;
    assert!(snapshot.is_some(), "node {lagging} has a snapshot");
    for i in 400..600 {
        let key = format!("snap/k{}", i % 200);
        assert_eq!(
            tc.value(lagging, &key, "serializable").await?,
            Some(format!("v{i}"))
        );
    }
    let hashes: Vec<_> = futures_hashes(&tc).await?;
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    tc.shutdown().await;
    Ok(())
}

async fn futures_hashes(tc: &TestCluster) -> Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for id in tc.ids() {
        out.push(tc.status(id).await?["state_hash"].clone());
    }
    Ok(out)
}

use openraft::async_runtime::watch::WatchReceiver;
