//! Without a session (`exactly_once(false)`), a compare-and-swap whose
//! answer is lost is `Indeterminate` — it was applied, and the client
//! neither reports success nor failure, nor re-sends it. (With a session,
//! the default, it is retried: `t40_exactly_once`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use ballast_client::{Client, Error};
use ballast_tests::TestCluster;
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpListener, TcpStream};
use tracing::info;

/// A proxy that forwards requests to `upstream` and, as soon as the answer
/// starts (so the request was applied), closes the client's connection
/// without forwarding a byte of it. Returns its address and a connection count.
async fn answer_dropping_proxy(upstream: String) -> Result<(String, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?.to_string();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(up) = TcpStream::connect(&upstream).await else {
                    return;
                };
                let (mut client_read, client_write) = client.into_split();
                let (mut up_read, mut up_write) = up.into_split();
                let forward = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
                });
                let mut first = [0u8; 1];
                let _ = up_read.read(&mut first).await;
                forward.abort();
                drop(client_write);
            });
        }
    });
    Ok((addr, connections))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_with_a_lost_answer_is_indeterminate() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let upstream = tc.endpoint(leader).trim_start_matches("http://").to_owned();
    let (proxy, connections) = answer_dropping_proxy(upstream).await?;
    let client = Client::builder(vec![proxy])
        .max_attempts(3)
        .exactly_once(false)
        .build()?;

    info!("--- create-if-absent through the proxy: applied, answer lost");
    let result = client.compare_and_swap("/cas/lost", None, "v1").await;
    assert!(
        matches!(result, Err(Error::Indeterminate { .. })),
        "expected Indeterminate, got {result:?}"
    );
    assert_eq!(
        connections.load(Ordering::SeqCst),
        1,
        "the write was re-sent"
    );
    let applied = tc.value(leader, "/cas/lost", "linearizable").await?;
    assert_eq!(applied.as_deref(), Some("v1"), "the CAS was applied");

    info!("--- a second identical CAS would fail: it must not have been retried blindly");
    let direct = Client::new(vec![tc.endpoint(leader)])?;
    let again = direct.compare_and_swap("/cas/lost", None, "v2").await?;
    assert!(!again.succeeded);
    tc.shutdown().await;
    Ok(())
}
