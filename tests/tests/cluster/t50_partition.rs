use std::time::{Duration, Instant};

use anyhow::Result;
use ballast_tests::TestCluster;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_node_refuses_linearizable_reads_and_writes() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    tc.put(leader, "part/k", "before").await?;

    for victim in [
        leader,
        tc.ids()
            .into_iter()
            .find(|id| *id != leader)
            .expect("follower"),
    ] {
        info!("--- isolate node {victim}");
        tc.isolate(victim)?;
        let others: Vec<u64> = tc.ids().into_iter().filter(|id| *id != victim).collect();
        // The majority side moves on.
        let started = Instant::now();
        let mut written = false;
        while started.elapsed() < Duration::from_secs(15) {
            if tc
                .put(others[0], "part/k", &format!("after-{victim}"))
                .await
                .is_ok()
            {
                written = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            written,
            "the majority accepts writes while node {victim} is cut off"
        );

        info!("--- the isolated node refuses, within its request timeout, and never answers stale");
        let t = Instant::now();
        let (status, body) = tc.get(victim, "part/k", "linearizable").await?;
        assert_eq!(
            status, 503,
            "linearizable read on isolated node {victim}: {body}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "answered in {:?}",
            t.elapsed()
        );
        let resp = tc
            .http()
            .put(format!("{}/v1/kv/part/k", tc.endpoint(victim)))
            .body("from-minority")
            .send()
            .await?;
        assert_eq!(
            resp.status().as_u16(),
            503,
            "write on isolated node {victim}"
        );
        assert!(resp.headers().contains_key("retry-after"));

        info!("--- it reports itself not ready; the majority is ready");
        assert_eq!(tc.ready(victim).await?, 503);
        assert_eq!(tc.ready(others[0]).await?, 200);

        info!("--- a serializable read still answers, possibly stale");
        let (status, _) = tc.get(victim, "part/k", "serializable").await?;
        assert_eq!(status, 200);

        info!("--- heal: the node catches up and serves linearizable reads again");
        tc.heal(victim)?;
        tc.wait_leader(Duration::from_secs(15)).await?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let v = tc
                .value(victim, "part/k", "linearizable")
                .await
                .ok()
                .flatten();
            if v.as_deref() == Some(&format!("after-{victim}")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {victim} did not catch up: {v:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_ne!(
            tc.value(victim, "part/k", "linearizable").await?.as_deref(),
            Some("from-minority"),
            "a write refused by the minority never appears"
        );
    }
    tc.shutdown().await;
    Ok(())
}
