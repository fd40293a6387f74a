use std::time::Duration;

use anyhow::Result;
use ballast_tests::TestCluster;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_through_follower_then_linearizable_read_everywhere() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];

    info!("--- write through follower {follower}");
    let rev = tc.put(follower, "app/mode", "green").await?;
    assert!(rev >= 1);

    info!("--- linearizable read after write, from every node");
    for id in tc.ids() {
        assert_eq!(
            tc.value(id, "app/mode", "linearizable").await?.as_deref(),
            Some("green"),
            "node {id}"
        );
    }

    info!("--- overwrite through the leader, read from a follower at once");
    tc.put(leader, "app/mode", "blue").await?;
    assert_eq!(
        tc.value(follower, "app/mode", "linearizable")
            .await?
            .as_deref(),
        Some("blue")
    );

    info!("--- every node reaches the same state hash");
    let rev = tc.put(follower, "app/other", "x").await?;
    tc.wait_applied(rev, Duration::from_secs(5)).await?;
    let mut hashes = Vec::new();
    for id in tc.ids() {
        let status = tc.status(id).await?;
        assert_eq!(status["revision"], rev);
        hashes.push(
            status["state_hash"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert!(
        hashes.windows(2).all(|w| w[0] == w[1]),
        "hashes differ: {hashes:?}"
    );
    for id in tc.ids() {
        let node = tc.node(id)?;
        let recomputed = format!("{:032x}", node.reader().recompute_hash()?);
        assert_eq!(
            recomputed, hashes[0],
            "incremental hash of node {id} matches a full recompute"
        );
    }
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mvcc_fields_txn_and_past_revisions_over_http() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let http = tc.http();
    let ep = tc.endpoint(2);

    let r1 = tc.put(2, "cfg/a", "1").await?;
    let r2 = tc.put(2, "cfg/a", "2").await?;
    let (_, body) = tc.get(2, "cfg/a", "linearizable").await?;
    assert_eq!(body["kv"]["create_revision"], r1);
    assert_eq!(body["kv"]["mod_revision"], r2);
    assert_eq!(body["kv"]["version"], 2);

    info!("--- read at a past revision");
    let old: serde_json::Value = http
        .get(format!("{ep}/v1/kv/cfg/a?revision={r1}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(old["kv"]["value"], "1");

    info!("--- compare-and-swap: create-if-absent then a failing compare");
    let txn = |body: serde_json::Value| http.post(format!("{ep}/v1/txn")).json(&body).send();
    let created: serde_json::Value = txn(serde_json::json!({
        "compare": [{"key": "cfg/lock", "target": "version", "op": "=", "version": 0}],
        "success": [{"put": {"key": "cfg/lock", "value": "me"}}],
        "failure": [{"get": {"key": "cfg/lock"}}]
    }))
    .await?
    .json()
    .await?;
    assert_eq!(created["succeeded"], true);
    let again: serde_json::Value = txn(serde_json::json!({
        "compare": [{"key": "cfg/lock", "target": "version", "op": "=", "version": 0}],
        "success": [{"put": {"key": "cfg/lock", "value": "you"}}],
        "failure": [{"get": {"key": "cfg/lock"}}]
    }))
    .await?
    .json()
    .await?;
    assert_eq!(again["succeeded"], false);
    assert_eq!(again["responses"][0]["get"]["kvs"][0]["value"], "me");
    assert_eq!(
        again["revision"], created["revision"],
        "a failed txn writes nothing"
    );

    info!("--- prefix range with limit, prefix delete");
    let range: serde_json::Value = http
        .get(format!("{ep}/v1/kv/cfg/?prefix=true&limit=1"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(range["kvs"].as_array().map(Vec::len), Some(1));
    assert_eq!(range["more"], true);
    let deleted: serde_json::Value = http
        .delete(format!("{ep}/v1/kv/cfg/?prefix=true"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(deleted["deleted"], 2);
    assert_eq!(tc.value(1, "cfg/a", "linearizable").await?, None);
    tc.shutdown().await;
    Ok(())
}
