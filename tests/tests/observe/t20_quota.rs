use std::time::Duration;

use anyhow::{bail, Result};
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::info;

const QUOTA: u64 = 2 * 1024 * 1024;
const VALUE_BYTES: usize = 64 * 1024;

async fn put(tc: &TestCluster, id: u64, key: &str, value: &str) -> Result<(u16, Value)> {
    let r = tc
        .http()
        .put(format!("{}/v1/kv/{key}", tc.endpoint(id)))
        .body(value.to_string())
        .send()
        .await?;
    Ok((r.status().as_u16(), r.json().await?))
}

/// Past the quota, writes that could add data are refused with `507
/// quota_exceeded` (also when forwarded by a follower), while reads,
/// watches, deletes and compaction keep working; deleting and compacting
/// brings the key space back under it and writes are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_past_the_quota_are_refused_until_compaction_frees_space() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| c.quota_bytes = QUOTA).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];
    let value = "x".repeat(VALUE_BYTES);

    info!("--- fill the key space until the leader refuses");
    let mut written = 0;
    let refusal = loop {
        // 200 values of 64 KiB are 12.5 MiB, far past the 2 MiB quota.
        if written == 200 {
            bail!("no write was refused after {written} values");
        }
        let (status, body) = put(&tc, leader, &format!("q/k{written}"), &value).await?;
        if status == 200 {
            written += 1;
            continue;
        }
        break (status, body);
    };
    assert_eq!(refusal.0, 507, "{}", refusal.1);
    assert_eq!(refusal.1["error"]["code"], "quota_exceeded");
    assert!(written > 0, "the quota was hit before any write");
    let status = tc.status(leader).await?;
    assert!(
        status["db"]["size_bytes"].as_u64() >= Some(QUOTA),
        "{status}"
    );
    assert_eq!(status["db"]["quota_bytes"], QUOTA);

    info!("--- forwarded writes and transactions with a put are refused too");
    let (s, body) = put(&tc, follower, "q/more", "small").await?;
    assert_eq!(
        (s, body["error"]["code"].clone()),
        (507, json!("quota_exceeded"))
    );
    let txn = tc
        .http()
        .post(format!("{}/v1/txn", tc.endpoint(follower)))
        .json(&json!({"compare": [], "success": [{"put": {"key": "q/t", "value": "v"}}], "failure": []}))
        .send()
        .await?;
    assert_eq!(txn.status(), 507);

    info!("--- reads and watches still work");
    let read = tc.value(follower, "q/k0", "linearizable").await?;
    assert_eq!(read.as_deref(), Some(value.as_str()));
    let mut watch = WatchStream::open(
        tc.stream_http(),
        &format!(
            "{}/v1/watch/q/?prefix=true&start_revision=1",
            tc.endpoint(follower)
        ),
        None,
    )
    .await?;
    assert_eq!(watch.status, 200);
    let first = watch.next(Duration::from_secs(10)).await?;
    assert!(first.is_some_and(|e| e.revision() >= 1));

    info!("--- deletes and compaction are accepted; the space comes back");
    let deleted: Value = tc
        .http()
        .delete(format!("{}/v1/kv/q/?prefix=true", tc.endpoint(follower)))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(deleted["deleted"], written);
    let revision = deleted["revision"].as_u64().unwrap_or(0);
    let compact = tc
        .http()
        .post(format!("{}/v1/compact", tc.endpoint(leader)))
        .json(&json!({ "revision": revision }))
        .send()
        .await?;
    assert_eq!(compact.status(), 200);
    drop(watch);
    // Physical compaction runs in the background on every node, then gives
    // the space back; wait for the leader to accept writes again.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, body) = put(&tc, follower, "q/after", "small").await?;
        if s == 200 {
            break;
        }
        assert_eq!(s, 507, "{body}");
        if Instant::now() > deadline {
            let status = tc.status(leader).await?;
            bail!("still over the quota after compaction: {}", status["db"]);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let status = tc.status(leader).await?;
    assert!(
        status["db"]["size_bytes"].as_u64() < Some(QUOTA),
        "{status}"
    );
    let refusals = tc.metric(leader, "ballast_quota_refusals_total").await?;
    assert!(refusals >= 3, "{refusals}");
    tc.shutdown().await;
    Ok(())
}
