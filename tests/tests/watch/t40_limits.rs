use std::time::Duration;

use anyhow::Result;
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;

use crate::common::url;

async fn watchers_open(tc: &TestCluster, id: u64) -> Result<u64> {
    Ok(tc
        .metric(id, "ballast_watchers_open")
        .await
        .unwrap_or(u64::MAX))
}

/// The per-node stream limit answers 429 with Retry-After; a client that goes
/// away frees its slot; bad parameters are 400s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_disconnects_and_bad_parameters() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| c.max_watchers = 2).await?;
    let a = WatchStream::open(tc.stream_http(), &url(&tc, 1, "x", ""), None).await?;
    let b = WatchStream::open(tc.stream_http(), &url(&tc, 1, "x", ""), None).await?;
    assert_eq!((a.status, b.status), (200, 200));
    let third = tc.http().get(url(&tc, 1, "x", "")).send().await?;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    let body: serde_json::Value = third.json().await?;
    assert_eq!(body["error"]["code"], "too_many_watchers");
    assert_eq!(watchers_open(&tc, 1).await?, 2);

    drop(a);
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while watchers_open(&tc, 1).await? != 0 {
        // A disconnect is noticed at the next write to the stream.
        tc.put(2, "x", "poke").await?;
        assert!(tokio::time::Instant::now() < deadline, "slots not freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = WatchStream::open(tc.stream_http(), &url(&tc, 1, "x", ""), None).await?;
    assert_eq!(again.status, 200);
    drop(again);

    for bad in [
        "start_revision=abc",
        "prefix=maybe",
        "progress_interval_ms=500",
        "progress_notify=true&progress_interval_ms=1",
        "progress_notify=true&progress_interval_ms=999999999",
        "unknown=1",
    ] {
        let r = tc.http().get(url(&tc, 2, "x", bad)).send().await?;
        assert_eq!(r.status(), 400, "{bad}");
        let body: serde_json::Value = r.json().await?;
        assert_eq!(body["error"]["code"], "invalid_query", "{bad}");
    }
    let r = tc
        .http()
        .get(url(&tc, 2, "x", ""))
        .header("Last-Event-ID", "nope")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    let r = tc
        .http()
        .get(format!("{}/v1/watch/", tc.endpoint(2)))
        .send()
        .await?;
    assert_eq!(r.status(), 400, "an empty key needs prefix=true");
    tc.shutdown().await;
    Ok(())
}
