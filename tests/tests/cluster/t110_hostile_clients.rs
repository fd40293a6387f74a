//! Hostile clients on the client port: connections that send half a header
//! are closed after the header read timeout, and a flood of connections is
//! capped, so the node keeps its peers: the cluster commits writes and
//! elects leaders throughout.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ballast_tests::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

/// Whether the server has closed `conn` (reads end of stream or an error)
/// within `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // A response (408 or similar) may come before the close.
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_headers_are_cut_off_and_writes_go_on() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| c.header_read_timeout_ms = 1_000).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let addr = tc.config(leader).listen_client.clone();

    info!("--- 300 connections send half a request header");
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut conn = TcpStream::connect(&addr).await?;
        conn.write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
            .await?;
        conns.push(conn);
    }
    let rev = tc.put(leader, "during", "slow headers").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;

    info!("--- every one of them is closed after the header read timeout");
    let started = Instant::now();
    for conn in &mut conns {
        assert!(
            closed_within(conn, Duration::from_secs(10)).await,
            "a half-sent header was still open after {:?}",
            started.elapsed()
        );
    }
    let rev = tc.put(leader, "after", "slow headers").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_capped_and_the_node_keeps_its_peers() -> Result<()> {
    let mut tc = TestCluster::start_with(3, |c| {
        c.max_client_connections = 50;
        c.header_read_timeout_ms = 60_000;
    })
    .await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let followers: Vec<u64> = tc.others(leader);
    let flooded = followers[0];
    let other = followers[1];
    let addr = tc.config(flooded).listen_client.clone();

    info!(
        flooded,
        "--- 80 idle connections to a follower's client port (cap 50)"
    );
    let mut conns = Vec::new();
    for _ in 0..80 {
        conns.push(TcpStream::connect(&addr).await?);
    }
    let mut cut = 0;
    for conn in &mut conns {
        if closed_within(conn, Duration::from_millis(200)).await {
            cut += 1;
        }
    }
    assert!(
        (30..=80).contains(&cut),
        "{cut} of 80 connections were closed; the cap of 50 should close at least 30"
    );

    info!("--- the flooded node still replicates and votes: kill the leader");
    let rev = tc.put(other, "flood/before", "x").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    tc.kill(leader).await?;
    let new_leader = tc
        .wait_new_leader(leader, Duration::from_secs(20))
        .await
        .context("the flooded node must help elect a leader")?;
    info!(new_leader, "elected");
    let via = if new_leader == flooded {
        other
    } else {
        new_leader
    };
    let rev = tc.put(via, "flood/after", "y").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    drop(conns);
    tc.shutdown().await;
    Ok(())
}
