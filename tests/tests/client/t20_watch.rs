//! `Client::watch` across a leader kill: every event exactly once, in order.

use std::time::Duration;

use anyhow::{bail, Result};
use ballast_client::{Client, Error, WatchEvent, WatchOptions};
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;
use futures::StreamExt as _;
use tracing::info;

const WAIT: Duration = Duration::from_secs(20);

/// A revision and its `(key, value)` changes.
type Change = (u64, Vec<(String, Vec<u8>)>);

/// Puts, retrying only what certainly was not applied; an indeterminate
/// write is left as it is (it may or may not show up in the history).
async fn put(client: &Client, key: &str, value: &str) -> Result<Option<u64>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.put(key, value).await {
            Ok(r) => return Ok(Some(r.revision)),
            Err(Error::Indeterminate { .. }) => return Ok(None),
            Err(e) if e.is_definitely_not_applied() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => bail!("put {key}: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_leader_kill_exactly_once_in_order() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(WAIT).await?;
    // The leader first: the watch opens on the node about to be killed.
    let mut eps = vec![tc.endpoint(leader)];
    eps.extend(
        tc.ids()
            .into_iter()
            .filter(|id| *id != leader)
            .map(|id| tc.endpoint(id)),
    );
    let client = Client::builder(eps)
        .request_timeout(Duration::from_secs(2))
        .backoff(Duration::from_millis(20), Duration::from_millis(300))
        .build()?;
    let start = put(&client, "/w/start", "0").await?.unwrap_or(1);
    let options = WatchOptions {
        prefix: true,
        start_revision: Some(start + 1),
        ..WatchOptions::default()
    };
    let mut stream = client.watch("/w/", options);

    info!("--- 40 writes, the leader killed after 15");
    let mut last = start;
    for i in 0..40 {
        if i == 15 {
            tc.kill(leader).await?;
        }
        if let Some(rev) = put(&client, &format!("/w/k{}", i % 7), &format!("v{i}")).await? {
            last = rev;
        }
    }
    tc.wait_leader(WAIT).await?;

    info!("--- collect the client's stream up to revision {last}");
    let mut got = Vec::new();
    while got.last().map(|(r, _)| *r).unwrap_or(0) < last {
        let item = tokio::time::timeout(WAIT, stream.next()).await?;
        match item {
            Some(Ok(WatchEvent::Change { revision, events })) => {
                let kvs: Vec<(String, Vec<u8>)> =
                    events.into_iter().map(|e| (e.kv.key, e.kv.value)).collect();
                got.push((revision, kvs));
            }
            Some(Ok(WatchEvent::Progress { .. })) => {}
            other => bail!("watch ended: {other:?}"),
        }
    }
    for pair in got.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "out of order or duplicate: {:?} then {:?}",
            pair[0].0,
            pair[1].0
        );
    }

    info!("--- the truth: a fresh raw SSE watch on a surviving node");
    let survivor = tc.running()[0];
    let url = format!(
        "{}/v1/watch/w/?prefix=true&start_revision={}",
        tc.endpoint(survivor),
        start + 1
    );
    // Keys are "/w/...": the path is "/v1/watch//w/".
    let url = url.replace("/v1/watch/w/", "/v1/watch//w/");
    let mut truth_stream = WatchStream::open(tc.stream_http(), &url, None).await?;
    let truth: Vec<Change> = truth_stream
        .read_until(last, WAIT)
        .await?
        .into_iter()
        .filter(|e| e.event == "change")
        .map(|e| {
            let kvs = e.data["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|ev| {
                    (
                        ev["kv"]["key"].as_str().unwrap_or_default().to_owned(),
                        ev["kv"]["value"]
                            .as_str()
                            .unwrap_or_default()
                            .as_bytes()
                            .to_vec(),
                    )
                })
                .collect();
            (e.revision(), kvs)
        })
        .collect();
    assert_eq!(got, truth);
    info!(events = got.len(), "every event exactly once, in order");
    tc.shutdown().await;
    Ok(())
}
