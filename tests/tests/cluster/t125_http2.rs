//! HTTP/2 with prior knowledge ("h2c") on the client port, next to
//! HTTP/1.1: a client that opens with the HTTP/2 preface is served over
//! HTTP/2, every other one over HTTP/1.1, on the same port. Writes through
//! a follower, linearizable reads, transactions and more requests at once
//! than one connection's stream limit all work over HTTP/2; an oversized
//! header list is refused and the cluster commits afterwards.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use ballast_client::{Client, Compare, CompareOp, Error as ClientError, Txn, TxnOp};
use ballast_tests::TestCluster;
use reqwest::Version;
use tracing::info;

/// Requests sent at once on one HTTP/2 connection: more than the server's
/// 256 streams per connection, so some wait for a free stream.
const CONCURRENT: usize = 400;

async fn version_of(http: &reqwest::Client, url: &str) -> Result<Version> {
    let resp = http.get(url).send().await.context("GET /v1/status")?;
    ensure!(resp.status().is_success(), "status {}", resp.status());
    Ok(resp.version())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_share_the_client_port() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = (1..=3).find(|&id| id != leader).expect("a follower");
    let follower_url = format!("http://{}", tc.config(follower).listen_client);

    info!("--- the same port answers HTTP/2 and HTTP/1.1");
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;
    let h1 = reqwest::Client::builder().http1_only().build()?;
    let status = format!("{follower_url}/v1/status");
    assert_eq!(version_of(&h2, &status).await?, Version::HTTP_2);
    assert_eq!(version_of(&h1, &status).await?, Version::HTTP_11);

    info!("--- writes through a follower, reads and a transaction over HTTP/2");
    let client = Client::builder(vec![follower_url.clone()])
        .http2(true)
        .build()?;
    let put = client.put("h2/a", "one").await?;
    let got = client.get("h2/a").await?;
    assert!(got.revision >= put.revision);
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"one".to_vec()));
    let txn = Txn::new()
        .when(vec![Compare::version("h2/a", CompareOp::Equal, 1)])
        .and_then(vec![TxnOp::put("h2/a", "two")]);
    assert!(client.txn(txn).await?.succeeded);
    let got = client.get("h2/a").await?;
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"two".to_vec()));

    info!("--- {CONCURRENT} writes at once over one HTTP/2 connection");
    let mut writes = tokio::task::JoinSet::new();
    for i in 0..CONCURRENT {
        let client = client.clone();
        writes.spawn(async move { client.put(&format!("h2/many/{i:04}"), vec![b'x'; 64]).await });
    }
    let mut last = 0;
    while let Some(done) = writes.join_next().await {
        last = last.max(done??.revision);
    }
    tc.wait_applied(last, Duration::from_secs(10)).await?;
    let listed = client
        .range("h2/many/", ballast_client::RangeOptions::default())
        .await?;
    assert_eq!(listed.kvs.len(), CONCURRENT);

    info!("--- an oversized header list over HTTP/2 is refused, the node goes on");
    let huge = "v".repeat(256 * 1024);
    let refused = h2.get(&status).header("x-huge", &huge).send().await;
    match refused {
        Ok(resp) => assert!(
            // 431 from the HTTP/2 layer, or the API's own headers_too_large.
            resp.status().is_client_error(),
            "an oversized header list was answered {}",
            resp.status()
        ),
        Err(e) => info!(error = %e, "refused at the HTTP/2 layer"),
    }
    let after = client.put("h2/after", "still").await?;
    tc.wait_applied(after.revision, Duration::from_secs(10))
        .await?;
    assert_eq!(version_of(&h2, &status).await?, Version::HTTP_2);

    info!("--- HTTP/2 is for http:// endpoints: https:// is a clear error");
    match Client::builder(vec!["https://127.0.0.1:1".to_owned()])
        .http2(true)
        .build()
    {
        Err(ClientError::InvalidArgument(msg)) => assert!(msg.contains("HTTP/2"), "{msg}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    tc.shutdown().await;
    Ok(())
}
