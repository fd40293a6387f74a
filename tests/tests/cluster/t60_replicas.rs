use anyhow::Result;
use ballast_tests::TestCluster;
use serde_json::json;

async fn report(
    tc: &TestCluster,
    node: u64,
    id: &str,
    revision: u64,
) -> reqwest::Result<reqwest::Response> {
    let url = format!("{}/v1/replicas/report", tc.endpoint(node));
    let body = json!({ "id": id, "prefix": "/app/", "revision": revision });
    tc.http().post(url).json(&body).send().await
}

/// Replica reports land on whichever node receives them and every node
/// answers with the merged view and a rollout summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_reports_merge_across_nodes() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    assert_eq!(report(&tc, 1, "svc-a", 10).await?.status(), 200);
    assert_eq!(report(&tc, 2, "svc-b", 12).await?.status(), 200);
    // A newer report for svc-a through another node replaces the older one.
    assert_eq!(report(&tc, 2, "svc-a", 11).await?.status(), 200);
    let view: serde_json::Value = tc
        .http()
        .get(format!("{}/v1/replicas?revision=12", tc.endpoint(3)))
        .send()
        .await?
        .json()
        .await?;
    let replicas = view["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 2, "{view}");
    assert_eq!(replicas[0]["id"], "svc-a");
    assert_eq!(replicas[0]["revision"], 11);
    assert_eq!(replicas[0]["node"], 2);
    assert_eq!(view["nodes_answered"].as_array().map(Vec::len), Some(3));
    assert_eq!(view["rollout"]["total"], 2);
    assert_eq!(view["rollout"]["applied"], 1);
    assert_eq!(view["rollout"]["lagging"][0]["id"], "svc-a");
    assert_eq!(view["rollout"]["lagging"][0]["behind"], 1);

    for bad in [
        json!({ "id": "", "prefix": "/", "revision": 1 }),
        json!({ "id": "x", "revision": 1 }),
        json!({ "id": "x", "prefix": "/", "revision": 1, "extra": true }),
    ] {
        let r = tc
            .http()
            .post(format!("{}/v1/replicas/report", tc.endpoint(1)))
            .json(&bad)
            .send()
            .await?;
        assert_eq!(r.status(), 400, "{bad}");
    }
    tc.shutdown().await;
    Ok(())
}
