use std::time::Duration;

use anyhow::Result;
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;

use crate::common::{changes, open, url, write_many, WAIT};

/// A watch from before the compact revision gets `compacted`, naming it, and
/// the stream ends; from the compact revision on it works, on every node.
/// Reads below it are refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_ends_old_watches_and_keeps_newer_history() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let written: Vec<u64> = write_many(&tc, "c/", 40).await?.into_iter().collect();
    let compact_at = written[20];
    let last = *written.last().expect("writes");
    let resp = tc
        .http()
        .post(format!("{}/v1/compact", tc.endpoint(2)))
        .json(&serde_json::json!({ "revision": compact_at }))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["compact_revision"], compact_at);
    tc.wait_applied(last, Duration::from_secs(5)).await?;

    for id in tc.ids() {
        let mut old = WatchStream::open(
            tc.stream_http(),
            &url(
                &tc,
                id,
                "c/",
                &format!("prefix=true&start_revision={}", compact_at - 1),
            ),
            None,
        )
        .await?;
        let ev = old.next(WAIT).await?.expect("a message");
        assert_eq!(ev.event, "compacted", "node {id}: {ev:?}");
        assert_eq!(ev.data["compact_revision"], compact_at);
        assert!(
            old.next(WAIT).await?.is_none(),
            "the stream ends after compacted"
        );

        let mut ok = open(
            &tc,
            id,
            "c/",
            &format!("prefix=true&start_revision={compact_at}"),
            None,
        )
        .await?;
        let got = ok.read_until(last, WAIT).await?;
        let revs: Vec<u64> = changes(&got)?.iter().map(|e| e.revision()).collect();
        let expected: Vec<u64> = written
            .iter()
            .copied()
            .filter(|r| *r >= compact_at)
            .collect();
        assert_eq!(revs, expected, "node {id}");
    }

    let status = tc
        .http()
        .get(format!(
            "{}/v1/kv/c/k1?revision={}",
            tc.endpoint(1),
            compact_at - 1
        ))
        .send()
        .await?;
    assert_eq!(status.status(), 400);
    let err: serde_json::Value = status.json().await?;
    assert_eq!(err["error"]["code"], "compacted");

    // Reads at the compact revision still see the state of that revision.
    let range: serde_json::Value = tc
        .http()
        .get(format!(
            "{}/v1/kv/c/?prefix=true&revision={compact_at}",
            tc.endpoint(3)
        ))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(range["revision"], compact_at);
    assert_eq!(range["kvs"].as_array().map(Vec::len), Some(17));

    // Compacting again to the same revision is refused with a 400.
    let again = tc
        .http()
        .post(format!("{}/v1/compact", tc.endpoint(1)))
        .json(&serde_json::json!({ "revision": compact_at }))
        .send()
        .await?;
    assert_eq!(again.status(), 400);
    tc.shutdown().await;
    Ok(())
}

/// Retention by revision count compacts automatically, and physical
/// compaction removes the history on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_compacts_automatically() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| {
        c.history_revisions = 50;
        c.history_age_secs = 0;
    })
    .await?;
    let written: Vec<u64> = write_many(&tc, "ret/", 120).await?.into_iter().collect();
    let last = *written.last().expect("writes");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = tc.status(1).await?;
        let compact = status["compact_revision"].as_u64().unwrap_or(0);
        if compact + 60 >= last && compact > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no automatic compaction: {status}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in tc.ids() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let removed = tc
                .metric(id, "ballast_history_entries_compacted_total")
                .await
                .unwrap_or(0);
            if removed > 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} removed no history"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tc.shutdown().await;
    Ok(())
}
