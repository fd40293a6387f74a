use std::time::Duration;

use anyhow::{bail, Result};
use ballast_tests::TestCluster;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::info;

async fn get(tc: &TestCluster, id: u64, path: &str) -> Result<(u16, Value)> {
    let r = tc
        .http()
        .get(format!("{}{path}", tc.endpoint(id)))
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

/// `/v1/status` tells the planes apart: the Raft side (quorum, commit and
/// applied index, size on disk) and the data plane (replicas reporting to
/// any member, their lag, the rollout convergence of the latest revision).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_quorum_storage_and_the_data_plane() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let others = tc.others(leader);
    let mut rev = 0;
    for i in 0..5 {
        rev = tc.put(leader, &format!("s/k{i}"), "v").await?;
    }
    tc.wait_applied(rev, Duration::from_secs(10)).await?;

    info!("--- replicas report to two different members");
    for (node, id, revision) in [(others[0], "svc-a", rev), (others[1], "svc-b", rev - 2)] {
        let r = tc
            .http()
            .post(format!("{}/v1/replicas/report", tc.endpoint(node)))
            .json(&json!({ "id": id, "prefix": "s/", "revision": revision }))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    let (code, s) = get(&tc, leader, "/v1/status").await?;
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["applied_index"], s["raft"]["applied"]);
    assert_eq!(s["commit_index"], s["raft"]["committed"]);
    assert!(s["commit_index"].as_u64() >= Some(5));
    assert!(s["db"]["size_bytes"].as_u64() > Some(0), "{s}");
    assert_eq!(s["db"]["quota_bytes"], 0);
    assert_eq!(s["quorum"]["voters"], 3);
    assert_eq!(s["quorum"]["needed"], 2);
    assert_eq!(s["quorum"]["has_quorum"], true);
    let dp = &s["data_plane"];
    assert_eq!(dp["replicas_reporting"], 2, "{dp}");
    assert_eq!(dp["latest_revision"], rev);
    assert_eq!(dp["max_lag"], 2);
    assert_eq!(dp["converged"], 1);
    assert_eq!(dp["convergence"], 0.5);
    assert_eq!(dp["replicas"][0]["id"], "svc-b");
    assert_eq!(dp["replicas"][0]["lag"], 2);
    let (_, s) = get(&tc, others[0], "/v1/status").await?;
    assert!(s["quorum"].get("healthy_voters").is_none(), "{s}");
    assert_eq!(s["quorum"]["has_quorum"], true);
    let (_, s) = get(&tc, others[0], "/v1/status?data_plane=false").await?;
    assert!(s.get("data_plane").is_none());
    let (code, _) = get(&tc, others[0], "/v1/status?data_plane=maybe").await?;
    assert_eq!(code, 400);

    info!("--- health: live and ready on every node");
    for id in tc.ids() {
        assert_eq!(get(&tc, id, "/health/live").await?.0, 200);
        assert_eq!(tc.ready(id).await?, 200);
    }

    info!("--- one follower down: the leader counts two healthy voters");
    tc.kill(others[0]).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, s) = get(&tc, leader, "/v1/status?data_plane=false").await?;
        if s["quorum"]["healthy_voters"] == 2 {
            assert_eq!(s["quorum"]["has_quorum"], true);
            break;
        }
        if Instant::now() > deadline {
            bail!("the leader still counts the dead follower: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, s) = get(&tc, leader, "/v1/status").await?;
    assert_eq!(s["data_plane"]["nodes_unreachable"], json!([others[0]]));

    info!("--- both followers down: no quorum, and not ready");
    tc.kill(others[1]).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, s) = get(&tc, leader, "/v1/status?data_plane=false").await?;
        if s["quorum"]["has_quorum"] == false {
            break;
        }
        if Instant::now() > deadline {
            bail!("the lone node still claims a quorum: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tc.ready(leader).await?, 503);
    assert_eq!(get(&tc, leader, "/health/live").await?.0, 200);
    tc.shutdown().await;
    Ok(())
}
