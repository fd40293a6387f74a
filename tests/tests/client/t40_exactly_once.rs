//! Exactly-once writes: a write whose answer is lost is sent again by the
//! `Client` and applied once — the key's `version` goes up by one and a
//! watch sees one event — also when the leader that applied it dies before
//! the retry.

use std::time::Duration;

use anyhow::{bail, ensure, Result};
use ballast_client::{Client, PutOptions, WatchEvent, WatchOptions, WatchStream};
use ballast_tests::answer_drop::AnswerDropProxy;
use ballast_tests::TestCluster;
use futures::StreamExt as _;
use tracing::info;

const WAIT: Duration = Duration::from_secs(20);

/// Collects the watched events of `key` until the stream passes `until`;
/// returns their revisions.
async fn revisions_of(stream: &mut WatchStream, key: &str, until: u64) -> Result<Vec<u64>> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.next()).await? {
            Some(Ok(WatchEvent::Change { revision, events })) => {
                seen.extend(events.iter().filter(|e| e.kv.key == key).map(|_| revision));
                if revision >= until {
                    return Ok(seen);
                }
            }
            Some(Ok(WatchEvent::Progress { .. })) => {}
            other => bail!("watch ended: {other:?}"),
        }
    }
}

fn host_port(endpoint: &str) -> String {
    endpoint.trim_start_matches("http://").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_answer_is_lost_is_retried_and_applied_once() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(WAIT).await?;
    let proxy = AnswerDropProxy::start(host_port(&tc.endpoint(leader))).await?;
    let direct = Client::new(tc.ids().iter().map(|id| tc.endpoint(*id)).collect())?;
    let first = direct.put("/once/key", "v0").await?;
    let mut watch = direct.watch(
        "/once/",
        WatchOptions {
            prefix: true,
            start_revision: Some(first.revision + 1),
            ..WatchOptions::default()
        },
    );
    // Only the proxy: the retry goes through it again.
    let client = Client::builder(vec![proxy.url()])
        .request_timeout(Duration::from_secs(5))
        .build()?;

    info!("--- a put whose answer the proxy drops");
    proxy.arm("PUT /v1/kv//once/key");
    let put = client
        .put_with("/once/key", "v1", PutOptions { prev_kv: true })
        .await?;
    assert_eq!(proxy.dropped(), 1, "the first answer was dropped");
    let prev = put.prev_kv.expect("the first result's prev_kv");
    assert_eq!((prev.value.as_slice(), prev.version), (&b"v0"[..], 1));
    let kv = direct.get("/once/key").await?.kv.expect("the key");
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.version, 2, "applied once: the version went up by one");
    assert_eq!(
        kv.mod_revision, put.revision,
        "the retry got the first revision"
    );

    info!("--- a compare-and-swap whose answer the proxy drops");
    proxy.arm("POST /v1/txn");
    let cas = client
        .compare_and_swap("/once/key", Some(b"v1"), "v2")
        .await?;
    assert_eq!(proxy.dropped(), 2);
    assert!(
        cas.succeeded,
        "the retry answers the first outcome, not a failed compare"
    );
    let kv = direct.get("/once/key").await?.kv.expect("the key");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"v2"[..], 3));
    assert_eq!(kv.mod_revision, cas.revision);

    info!("--- the watch saw each write once");
    let sentinel = direct.put("/once/sentinel", "end").await?;
    let seen = revisions_of(&mut watch, "/once/key", sentinel.revision).await?;
    assert_eq!(seen, vec![put.revision, cas.revision]);
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_is_retried_on_the_next_leader() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(WAIT).await?;
    let others: Vec<String> = tc
        .others(leader)
        .iter()
        .map(|id| tc.endpoint(*id))
        .collect();
    let proxy = AnswerDropProxy::start(host_port(&tc.endpoint(leader))).await?;
    let direct = Client::new(others.clone())?;
    // The proxy (to the leader) first, then the other nodes.
    let mut endpoints = vec![proxy.url()];
    endpoints.extend(others.iter().cloned());
    let client = Client::builder(endpoints)
        .request_timeout(Duration::from_secs(10))
        .max_attempts(40)
        .retry_deadline(Duration::from_secs(40))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()?;
    // Registers the client's session through the proxy.
    let first = client.put("/leader/key", "v0").await?;
    let mut watch = direct.watch(
        "/leader/",
        WatchOptions {
            prefix: true,
            start_revision: Some(first.revision + 1),
            ..WatchOptions::default()
        },
    );

    info!("--- a put applied by the leader; its answer held back");
    let release = proxy.arm_and_hold("PUT /v1/kv//leader/key");
    let writer = client.clone();
    let write = tokio::spawn(async move { writer.put("/leader/key", "v1").await });
    proxy.wait_holding(WAIT).await?;

    info!("--- kill the leader {leader}, then drop the answer");
    tc.kill(leader).await?;
    let new_leader = tc.wait_new_leader(leader, WAIT).await?;
    info!(new_leader, "--- new leader; the client retries there");
    release.release();
    let put = write.await??;
    assert_eq!(proxy.dropped(), 1);

    let kv = direct.get("/leader/key").await?.kv.expect("the key");
    assert_eq!(kv.value, b"v1");
    assert_eq!(kv.version, 2, "applied once: the version went up by one");
    assert_eq!(
        kv.mod_revision, put.revision,
        "the new leader answered the first revision"
    );
    let sentinel = direct.put("/leader/sentinel", "end").await?;
    let seen = revisions_of(&mut watch, "/leader/key", sentinel.revision).await?;
    ensure!(seen == vec![put.revision], "events of the key: {seen:?}");
    tc.shutdown().await;
    Ok(())
}
