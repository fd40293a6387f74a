//! HTTP/2 over plain TCP ("h2c" with prior knowledge) next to HTTP/1.1 on
//! the same client port.
//!
//! A client that knows the server speaks HTTP/2 opens the connection with
//! the HTTP/2 preface; every other client sends an HTTP/1.1 request line.
//! The first bytes of a plain-TCP connection tell the two apart (they are
//! peeked, not consumed), and the connection is then served by hyper's
//! HTTP/1.1 or HTTP/2 server alone. Unlike an auto-detecting server, an
//! HTTP/1.1 connection (a watch stream, a `Replica`) keeps HTTP/1.1's small
//! per-connection state.
//!
//! Over HTTPS the client port offers `http/1.1` only (ALPN), so TLS
//! connections are always HTTP/1.1.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::net::TcpStream;

/// What an HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Requests one HTTP/2 connection may carry at once.
pub const MAX_STREAMS: u32 = 256;

/// How often an idle HTTP/2 connection is pinged, and how long the answer
/// may take before the connection is closed as dead.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait before peeking again when only part of the preface has
/// arrived (clients send it in one write; this is the rare split packet, or
/// a client that stalls on purpose). The wait doubles up to the maximum, so
/// a stalled connection costs a few wake-ups a second until the caller's
/// timeout closes it.
const PARTIAL_PREFACE_WAIT: Duration = Duration::from_millis(1);
const PARTIAL_PREFACE_MAX_WAIT: Duration = Duration::from_millis(100);

/// Whether the connection opens with the HTTP/2 preface. Nothing is read
/// from the stream. A connection that closes, or whose first bytes differ
/// from the preface, is HTTP/1.1 (hyper's HTTP/1.1 server then answers
/// whatever it sent, or sees the close). The caller bounds the wait.
pub async fn opens_with_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    let mut wait = PARTIAL_PREFACE_WAIT;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(PARTIAL_PREFACE_MAX_WAIT);
    }
}

/// The HTTP/2 server settings of the client port. `max_header_bytes` bounds
/// a request's decoded header list, as the HTTP/1.1 head buffer does.
pub fn builder(max_header_bytes: usize) -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    http2
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    http2
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    async fn first_bytes_then_sniff(chunks: &[&[u8]]) -> bool {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let chunks: Vec<Vec<u8>> = chunks.iter().map(|c| c.to_vec()).collect();
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            for c in chunks {
                s.write_all(&c).await.expect("write");
                s.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Keep the connection open until the server has looked.
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        let (server, _) = listener.accept().await.expect("accept");
        let h2 = tokio::time::timeout(Duration::from_secs(5), opens_with_preface(&server))
            .await
            .expect("sniff within 5 s")
            .expect("peek");
        // Nothing was consumed: the whole first chunk is still readable.
        let mut buf = [0u8; 4];
        let n = server.peek(&mut buf).await.expect("peek again");
        assert!(n > 0, "the bytes are still there for the server to read");
        client.await.expect("client");
        h2
    }

    #[tokio::test]
    async fn the_preface_is_http2() {
        assert!(first_bytes_then_sniff(&[PREFACE]).await);
    }

    #[tokio::test]
    async fn a_preface_split_over_two_packets_is_http2() {
        assert!(first_bytes_then_sniff(&[&PREFACE[..5], &PREFACE[5..]]).await);
    }

    #[tokio::test]
    async fn a_client_that_stalls_inside_the_preface_is_left_to_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        client.write_all(b"PRI * HT").await.expect("write");
        let (server, _) = listener.accept().await.expect("accept");
        let waited =
            tokio::time::timeout(Duration::from_millis(300), opens_with_preface(&server)).await;
        assert!(waited.is_err(), "decided on half a preface: {waited:?}");
        // The rest arrives: HTTP/2 after all.
        client.write_all(&PREFACE[8..]).await.expect("write");
        let h2 = tokio::time::timeout(Duration::from_secs(5), opens_with_preface(&server))
            .await
            .expect("decides once the preface is whole")
            .expect("peek");
        assert!(h2);
    }

    #[tokio::test]
    async fn http1_requests_are_not_http2() {
        assert!(!first_bytes_then_sniff(&[b"GET /health/live HTTP/1.1\r\n\r\n"]).await);
        assert!(!first_bytes_then_sniff(&[b"PUT /v1/kv/a HTTP/1.1\r\n\r\n"]).await);
        // "P", "PR", "PRI" are a preface so far; a later byte decides.
        assert!(!first_bytes_then_sniff(&[b"PRI", b" * HTTP/1.1\r\n\r\n"]).await);
    }
}
