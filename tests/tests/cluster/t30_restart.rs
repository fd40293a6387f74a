use std::time::Duration;

use anyhow::Result;
use ballast_tests::TestCluster;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_every_node_brings_all_data_back() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let mut expected = Vec::new();
    for i in 0..100 {
        let key = format!("durable/k{i:03}");
        tc.put(1 + (i % 3) as u64, &key, &format!("v{i}")).await?;
        expected.push((key, format!("v{i}")));
    }
    let rev = tc.put(1, "durable/last", "x").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    let hash_before = tc.status(1).await?["state_hash"].clone();

    info!("--- stop every node");
    for id in tc.ids() {
        tc.kill(id).await?;
    }
    info!("--- start them again on the same data");
    for id in tc.ids() {
        tc.restart(id).await?;
    }
    tc.wait_leader(Duration::from_secs(20)).await?;
    for id in tc.ids() {
        for (k, v) in &expected {
            assert_eq!(
                tc.value(id, k, "linearizable").await?.as_deref(),
                Some(v.as_str()),
                "node {id} {k}"
            );
        }
        let status = tc.status(id).await?;
        assert_eq!(status["revision"], rev, "node {id} revision");
        assert_eq!(status["state_hash"], hash_before, "node {id} hash");
    }
    info!("--- and the revision keeps counting from where it was");
    assert_eq!(tc.put(2, "durable/next", "y").await?, rev + 1);
    tc.shutdown().await;
    Ok(())
}
