//! A TCP proxy that limits bandwidth: for tests of slow links (snapshot
//! transfers at a few megabytes per second). It listens on a loopback port
//! and forwards every connection to an upstream address that can be set
//! after the proxy started (the upstream's port is often not known yet).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Bytes moved per step of the pacing loop.
const STEP_BYTES: usize = 64 * 1024;

/// A running throttling proxy; stops when dropped.
pub struct ThrottleProxy {
    addr: String,
    upstream: Arc<Mutex<Option<String>>>,
    accept: JoinHandle<()>,
}

impl ThrottleProxy {
    /// Starts a proxy on `127.0.0.1:0` that moves at most `bytes_per_sec` in
    /// each direction of each connection.
    pub async fn start(bytes_per_sec: u64) -> Result<ThrottleProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let upstream: Arc<Mutex<Option<String>>> = Arc::new(Mutex::new(None));
        let target = upstream.clone();
        let accept = tokio::spawn(async move {
            let mut conns = Vec::new();
            while let Ok((client, _)) = listener.accept().await {
                let Some(to) = target.lock().ok().and_then(|t| t.clone()) else {
                    continue;
                };
                conns.retain(|c: &JoinHandle<()>| !c.is_finished());
                conns.push(tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(&to).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pace(cr, sw, bytes_per_sec));
                    let down = tokio::spawn(pace(sr, cw, bytes_per_sec));
                    // When either direction ends, the connection is over.
                    tokio::select! {
                        _ = up => {}
                        _ = down => {}
                    }
                }));
            }
        });
        Ok(ThrottleProxy {
            addr,
            upstream,
            accept,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sets where connections are forwarded to (new connections only).
    pub fn set_upstream(&self, upstream: &str) {
        if let Ok(mut u) = self.upstream.lock() {
            *u = Some(upstream.to_string());
        }
    }
}

impl Drop for ThrottleProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` at most `bytes_per_sec`.
async fn pace(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    bytes_per_sec: u64,
) {
    let mut buf = vec![0u8; STEP_BYTES];
    // When the bytes moved so far have been paid for; idle time earns no
    // credit for a later burst.
    let mut paid_until = tokio::time::Instant::now();
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        let cost = Duration::from_secs_f64(n as f64 / bytes_per_sec as f64);
        paid_until = paid_until.max(tokio::time::Instant::now()) + cost;
        tokio::time::sleep_until(paid_until).await;
    }
    let _ = to.shutdown().await;
}
