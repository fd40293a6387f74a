//! A TCP proxy in front of one node that forwards requests and answers as
//! they are, until it is armed: then it swallows the answer to the next
//! request whose bytes contain a marker (`PUT /v1/kv/app`). That request
//! reaches the node and is applied; the client's connection is closed
//! without a byte of the answer, as when a network drops it. Optionally the
//! connection is held open first until the test releases it, so the test
//! can change the cluster (kill the leader) before the client learns
//! anything.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Bytes read at a time in each direction.
const CHUNK_BYTES: usize = 64 * 1024;

/// What the proxy is armed with.
struct Trap {
    marker: Vec<u8>,
    /// Hold the client's connection until notified before closing it.
    hold: Option<Arc<Notify>>,
}

#[derive(Default)]
struct Shared {
    trap: Mutex<Option<Trap>>,
    dropped: AtomicUsize,
    holding: AtomicUsize,
}

/// A running proxy; stops accepting when dropped.
pub struct AnswerDropProxy {
    addr: String,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// Releases a connection held by [`AnswerDropProxy::arm_and_hold`].
pub struct Release(Arc<Notify>);

impl Release {
    /// Lets the proxy close the held connection (without the answer).
    pub fn release(self) {
        self.0.notify_one();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

impl AnswerDropProxy {
    /// Starts a proxy on `127.0.0.1:0` to `upstream` (`host:port`).
    pub async fn start(upstream: String) -> Result<AnswerDropProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared::default());
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, upstream.clone(), state.clone()));
            }
        });
        Ok(AnswerDropProxy {
            addr,
            shared,
            accept,
        })
    }

    /// The proxy's address, `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Swallows the answer to the next request containing `marker`.
    pub fn arm(&self, marker: &str) {
        self.set(marker, None);
    }

    /// Like [`arm`](Self::arm), but holds the client's connection open,
    /// answering nothing, until the returned [`Release`] is used.
    pub fn arm_and_hold(&self, marker: &str) -> Release {
        let notify = Arc::new(Notify::new());
        self.set(marker, Some(notify.clone()));
        Release(notify)
    }

    fn set(&self, marker: &str, hold: Option<Arc<Notify>>) {
        let mut trap = self.shared.trap.lock().unwrap_or_else(|e| e.into_inner());
        *trap = Some(Trap {
            marker: marker.as_bytes().to_vec(),
            hold,
        });
    }

    /// Answers swallowed so far.
    pub fn dropped(&self) -> usize {
        self.shared.dropped.load(Ordering::SeqCst)
    }

    /// Waits until an answer is being held back (the request was applied).
    pub async fn wait_holding(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while self.shared.holding.load(Ordering::SeqCst) == 0 {
            if Instant::now() > deadline {
                bail!("no answer was held back within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(())
    }
}

impl Drop for AnswerDropProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// One client connection: requests upstream as they come; answers back
/// unless the request they answer was caught by the trap.
async fn serve(client: TcpStream, upstream: String, shared: Arc<Shared>) {
    let Ok(up) = TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = up.into_split();
    let caught: Arc<Mutex<Option<Option<Arc<Notify>>>>> = Arc::new(Mutex::new(None));
    let catch = caught.clone();
    let trap_state = shared.clone();
    let requests = tokio::spawn(async move {
        let mut buf = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut trap = trap_state.trap.lock().unwrap_or_else(|e| e.into_inner());
                if trap
                    .as_ref()
                    .is_some_and(|t| contains(&buf[..n], &t.marker))
                {
                    // A client sends its next request only once it has read
                    // the whole previous answer, so whatever comes back from
                    // now on answers this request.
                    let hold = trap.take().and_then(|t| t.hold);
                    *catch.lock().unwrap_or_else(|e| e.into_inner()) = Some(hold);
                }
            }
            if up_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = up_write.shutdown().await;
    });
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = match up_read.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let trapped = caught.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(hold) = trapped {
            shared.dropped.fetch_add(1, Ordering::SeqCst);
            if let Some(release) = hold {
                shared.holding.fetch_add(1, Ordering::SeqCst);
                release.notified().await;
            }
            break;
        }
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    requests.abort();
    let _ = client_write.shutdown().await;
}
