//! Request limits on the client port: an oversized request target, oversized
//! headers and one admin request too many are refused with their JSON errors
//! (or, past what the HTTP parser reads at all, by the parser), and the
//! cluster commits writes afterwards.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use ballast_tests::TestCluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;

/// A response read off a raw connection.
struct Raw {
    status: u16,
    body: Vec<u8>,
}

impl Raw {
    fn error_code(&self) -> Result<String> {
        let body: Value = serde_json::from_slice(&self.body)
            .with_context(|| format!("{} body is not JSON: {:?}", self.status, self.body))?;
        body["error"]["code"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no error code in {body}"))
    }
}

/// Sends `head` (a request head without its final blank line) with
/// `Connection: close` on a new connection and reads the whole response.
async fn send_raw(addr: &str, head: &str) -> Result<Raw> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut response))
        .await
        .context("no response within 10 s")??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP response: {text:.200}"))?;
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| response[at + 4..].to_vec())
        .unwrap_or_default();
    Ok(Raw { status, body })
}

async fn commits(tc: &TestCluster, via: u64, key: &str) -> Result<()> {
    let rev = tc.put(via, key, "still committing").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_targets_and_headers_are_refused_and_writes_go_on() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let addr = tc.config(leader).listen_client.clone();

    info!("--- a 60 KiB request target: 414 uri_too_long");
    let key = "k".repeat(60 * 1024);
    let reply = send_raw(&addr, &format!("GET /v1/kv/{key} HTTP/1.1\r\nHost: x\r\n")).await?;
    assert_eq!(reply.status, 414);
    assert_eq!(reply.error_code()?, "uri_too_long");
    commits(&tc, leader, "limits/after-60k-uri").await?;

    info!("--- a 64 KiB request target: over the parser's own ceiling, 414");
    let target = format!("/v1/kv/{}", "k".repeat(64 * 1024 - "/v1/kv/".len()));
    assert_eq!(target.len(), 64 * 1024);
    let reply = send_raw(&addr, &format!("PUT {target} HTTP/1.1\r\nHost: x\r\n")).await?;
    assert_eq!(reply.status, 414);
    commits(&tc, leader, "limits/after-64k-uri").await?;

    info!("--- 100 KiB of headers: 431 headers_too_large");
    let mut head = String::from("PUT /v1/kv/limits/headers HTTP/1.1\r\nHost: x\r\n");
    for i in 0..50 {
        head.push_str(&format!("x-filler-{i}: {}\r\n", "h".repeat(2048)));
    }
    let reply = send_raw(&addr, &head).await?;
    assert_eq!(reply.status, 431);
    assert_eq!(reply.error_code()?, "headers_too_large");
    let reply = send_raw(&addr, "GET /v1/kv/limits/headers HTTP/1.1\r\nHost: x\r\n").await?;
    assert_eq!(
        reply.error_code()?,
        "key_not_found",
        "the refused PUT wrote nothing"
    );
    commits(&tc, leader, "limits/after-headers").await?;

    info!("--- a request within the limits on the same node still works");
    let reply = send_raw(
        &addr,
        "GET /v1/kv/limits/after-headers HTTP/1.1\r\nHost: x\r\n",
    )
    .await?;
    assert_eq!(reply.status, 200);
    tc.shutdown().await;
    Ok(())
}

/// Bytes of data written before the backup, so that its body cannot all sit
/// in socket buffers while the client does not read it.
const BACKUP_FILL_VALUES: usize = 24;
const BACKUP_FILL_VALUE_BYTES: usize = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_admin_request_more_than_the_limit_is_429_and_writes_go_on() -> Result<()> {
    // N = 1: the node streams one backup at a time anyway; with a limit of 1
    // the second snapshot request is refused by the admin limit before its
    // handler runs.
    let tc = TestCluster::start_with(1, |c| c.max_admin_requests = 1).await?;
    let node = tc.wait_leader(Duration::from_secs(10)).await?;
    let addr = tc.config(node).listen_client.clone();
    let http = reqwest::Client::new();
    let base = format!("http://{addr}");

    info!("--- fill the node so that a backup streams for a while");
    let value = "v".repeat(BACKUP_FILL_VALUE_BYTES);
    for i in 0..BACKUP_FILL_VALUES {
        let resp = http
            .put(format!("{base}/v1/kv/fill/{i}"))
            .body(value.clone())
            .send()
            .await?;
        assert!(resp.status().is_success(), "{}", resp.status());
    }

    info!("--- N = 1 snapshot streaming, its body not read");
    let first = http.get(format!("{base}/v1/snapshot")).send().await?;
    assert_eq!(first.status(), 200);

    info!("--- request N + 1: 429 too_many_admin_requests with Retry-After");
    let second = http.get(format!("{base}/v1/snapshot")).send().await?;
    assert_eq!(second.status(), 429);
    assert_eq!(
        second
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let body: Value = second.json().await?;
    assert_eq!(body["error"]["code"], "too_many_admin_requests", "{body}");

    info!("--- other admin routes have their own limit; writes commit");
    let members = http.get(format!("{base}/v1/members")).send().await?;
    assert_eq!(members.status(), 200);
    commits(&tc, node, "limits/during-backup").await?;

    info!("--- the first backup finishes; the slot is free again");
    let bytes = first.bytes().await?;
    assert!(bytes.len() > BACKUP_FILL_VALUES * BACKUP_FILL_VALUE_BYTES);
    // The server lets go of the first body a moment after its last bytes
    // went out: wait for that, with a deadline.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let again = http.get(format!("{base}/v1/snapshot")).send().await?;
        if again.status() == 200 {
            again.bytes().await?;
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admin slot was never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    commits(&tc, node, "limits/after-backup").await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_read_timeout() -> Result<()> {
    let tc = TestCluster::start_with(1, |c| c.header_read_timeout_ms = 1_000).await?;
    let node = tc.wait_leader(Duration::from_secs(10)).await?;
    let addr = tc.config(node).listen_client.clone();

    info!("--- one whole request on a keep-alive connection, then silence");
    let mut conn = TcpStream::connect(&addr).await?;
    conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await?;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .context("no answer")??;
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );

    info!("--- the server closes it (the timeout is 1 s; the bound only guards a hang)");
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(20), conn.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => {}
        }
    };
    assert!(closed, "an idle keep-alive connection stayed open");
    commits(&tc, node, "limits/after-idle").await?;
    tc.shutdown().await;
    Ok(())
}
