//! The data plane's own threads: the connections of `Replica`s are served at
//! a lower CPU priority than writes and linearizable reads.
//!
//! A restart storm (a fleet of replicas bootstrapping at once) adds work on
//! a node that its writes are already keeping busy. tokio has no task
//! priorities, so that work would queue in front of the writes on the same
//! threads. Instead, a node hands each client connection that carries
//! data-plane traffic to a runtime of its own, whose threads (workers and
//! blocking pool) run at a higher nice value: when the CPU is contended the
//! kernel runs the writes first, and the replicas take what is left.
//!
//! A connection is data-plane traffic when the first request it carries is
//! one only a `Replica` sends:
//!
//! - a bootstrap: `GET /v1/kv/...` with `bootstrap=true`;
//! - a replica's watch: `GET /v1/watch/...` with `data_plane=true`;
//! - a replica's report: `POST /v1/replicas/report`.
//!
//! The first request decides for the connection's life (an HTTP/1.1
//! connection is reused only by the client that opened it). A plain
//! HTTP/1.1 connection's request line is peeked at, and the connection is
//! moved to the data plane's runtime. An HTTPS connection's request line is
//! only readable after its handshake, which the main threads do: its first
//! bytes are then read and replayed in front of the stream ([`Replay`]),
//! and the connection is served on the data plane's threads while its
//! socket stays with the main runtime's reactor. HTTP/2 connections
//! multiplex both planes, so they stay on the main threads.
//!
//! The runtime is shared by every node of the process (`ballastd dev` runs
//! three), built by the first one that asks with a nice value other than 0.

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::runtime::{Handle, Runtime};

/// The name of the data plane's threads (as `ps -L` and `/proc` show them).
pub const THREAD_NAME: &str = "ballast-dplane";

/// The process's data-plane runtime and its threads' nice value, or why
/// it could not be built.
static RUNTIME: OnceLock<Result<(Runtime, i32), String>> = OnceLock::new();

/// The data plane's runtime, its threads at `nice` (which the first caller
/// of the process sets); `None` with `nice` 0 (data-plane connections are
/// then served on the caller's runtime), or when it could not be built
/// (logged once).
pub fn handle(nice: i32) -> Option<Handle> {
    if nice == 0 {
        return None;
    }
    let built = RUNTIME.get_or_init(|| {
        // Half the CPUs (one on two): the data plane's threads yield to the
        // others on a contended CPU, but each one runnable still takes a
        // share, so fewer threads leave more to the writes.
        let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(THREAD_NAME)
            .on_thread_start(move || {
                if let Err(e) = lower_priority(nice) {
                    tracing::warn!(error = %e, nice, "could not lower a data-plane thread's priority");
                }
            })
            .enable_all()
            .build()
            .map(|runtime| (runtime, nice))
            .map_err(|e| e.to_string());
        match &runtime {
            Ok(_) => tracing::info!(threads, nice, "data-plane threads started"),
            Err(e) => tracing::warn!(
                error = %e,
                "could not start the data-plane threads; replicas are served with the rest"
            ),
        }
        runtime
    });
    built.as_ref().ok().map(|(r, _)| r.handle().clone())
}

/// The nice value of the process's data-plane threads, once they run.
pub fn nice() -> Option<i32> {
    RUNTIME.get()?.as_ref().ok().map(|(_, nice)| *nice)
}

/// Sets the calling thread's nice value (on Linux a per-thread attribute).
fn lower_priority(nice: i32) -> std::io::Result<()> {
    let tid = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(tid), nice).map_err(std::io::Error::from)
}

/// The most bytes of a connection's first request looked at for its
/// request line (a bootstrap's line holds the prefix, percent-encoded).
const REQUEST_LINE_PEEK: usize = 8 * 1024;

/// Whether the HTTP/1.1 connection `stream` opens with a data-plane request.
/// Its bytes are peeked, not consumed; the caller has seen that some have
/// arrived, so this does not wait for more (a request line that has not all
/// arrived counts as control plane).
pub async fn opens_with_data_plane_request(stream: &tokio::net::TcpStream) -> bool {
    let mut head = vec![0u8; REQUEST_LINE_PEEK];
    match stream.peek(&mut head).await {
        Ok(n) => is_data_plane(&head[..n]),
        Err(_) => false,
    }
}

/// Reads the first bytes of `stream` (an HTTPS connection after its
/// handshake, whose bytes cannot be peeked): what arrived first, at most
/// [`REQUEST_LINE_PEEK`] bytes. They go back in front of the stream with
/// [`Replay`]. The caller bounds the wait.
pub async fn read_first_bytes<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; REQUEST_LINE_PEEK];
    let n = stream.read(&mut head).await?;
    head.truncate(n);
    Ok(head)
}

/// A stream whose first bytes were read already: they are read again
/// first, then the stream's.
pub struct Replay<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Replay<S> {
    /// `inner`, with `head` read first.
    pub fn new(head: Vec<u8>, inner: S) -> Self {
        Replay { head, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.head.len() {
            let n = (this.head.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            if this.at == this.head.len() {
                this.head = Vec::new();
                this.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Whether the first bytes of an HTTP/1.1 connection, `head`, hold the
/// request line of a data-plane request (see the module's documentation).
/// A request line not complete in `head` is not.
pub fn is_data_plane(head: &[u8]) -> bool {
    let Some(end) = head.iter().position(|b| *b == b'\n') else {
        return false;
    };
    let line = head[..end].strip_suffix(b"\r").unwrap_or(&head[..end]);
    let mut parts = line.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    if !version.starts_with(b"HTTP/1.") {
        return false;
    }
    let (path, query) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], &target[q + 1..]),
        None => (target, &b""[..]),
    };
    let has = |param: &[u8]| query.split(|b| *b == b'&').any(|p| p == param);
    match method {
        b"GET" if path.starts_with(b"/v1/kv/") || path == b"/v1/kv" => has(b"bootstrap=true"),
        b"GET" if path.starts_with(b"/v1/watch/") || path == b"/v1/watch" => {
            has(b"data_plane=true")
        }
        b"POST" => path == b"/v1/replicas/report",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replicas_requests_are_data_plane() {
        for line in [
            "GET /v1/kv/app/?prefix=true&bootstrap=true HTTP/1.1\r\nhost: x\r\n\r\n",
            "GET /v1/kv/app?bootstrap=true HTTP/1.1\r\n",
            "GET /v1/watch/app/?prefix=true&progress_notify=true&data_plane=true HTTP/1.1\r\n",
            "GET /v1/watch/app/?data_plane=true&prefix=true HTTP/1.1\n",
            "POST /v1/replicas/report HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}",
        ] {
            assert!(is_data_plane(line.as_bytes()), "{line:?}");
        }
    }

    #[test]
    fn everything_else_is_control_plane() {
        for line in [
            "GET /v1/kv/app/?prefix=true HTTP/1.1\r\n",
            "PUT /v1/kv/app?bootstrap=true HTTP/1.1\r\n",
            "GET /v1/kv/app?bootstrap=truex HTTP/1.1\r\n",
            "GET /v1/kv/app?xbootstrap=true HTTP/1.1\r\n",
            "GET /v1/watch/app/?prefix=true&progress_notify=true HTTP/1.1\r\n",
            "GET /v1/status?data_plane=true HTTP/1.1\r\n",
            "GET /v1/replicas/report HTTP/1.1\r\n",
            "POST /v1/replicas/report/x HTTP/1.1\r\n",
            "POST /v1/txn HTTP/1.1\r\n",
            // Incomplete, malformed, or not HTTP/1.
            "GET /v1/kv/app?bootstrap=true HTTP/1.1",
            "GET /v1/kv/app?bootstrap=true\r\n",
            "GET  /v1/kv/app?bootstrap=true HTTP/1.1\r\n",
            "GET /v1/kv/app?bootstrap=true HTTP/2.0\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "",
        ] {
            assert!(!is_data_plane(line.as_bytes()), "{line:?}");
        }
    }

    #[tokio::test]
    async fn replay_reads_the_first_bytes_again_then_the_stream() {
        use tokio::io::AsyncWriteExt;
        let (mut client, server) = tokio::io::duplex(64);
        client
            .write_all(b"GET / HTTP/1.1\r\n")
            .await
            .expect("write");
        let mut server = server;
        let head = read_first_bytes(&mut server).await.expect("read");
        assert_eq!(head, b"GET / HTTP/1.1\r\n");
        client.write_all(b"host: x\r\n\r\n").await.expect("write");
        drop(client);
        let mut replay = Replay::new(head, server);
        let mut small = [0u8; 5];
        replay.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"GET /");
        let mut rest = Vec::new();
        replay.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b" HTTP/1.1\r\nhost: x\r\n\r\n");
    }

    #[tokio::test]
    async fn the_data_plane_threads_run_at_the_nice_value_asked_for() {
        // Another test of this process may have started the runtime first,
        // with its own value.
        let runtime = handle(7).expect("the data-plane runtime");
        let asked = nice().expect("running");
        let seen = runtime
            .spawn(async {
                let tid = rustix::thread::gettid();
                let name = std::thread::current().name().map(str::to_owned);
                (rustix::process::getpriority_process(Some(tid)), name)
            })
            .await
            .expect("task");
        assert_eq!(seen.0.expect("getpriority"), asked);
        assert!(asked > 0);
        assert_eq!(seen.1.as_deref(), Some(THREAD_NAME));
        assert!(handle(0).is_none(), "0 serves on the caller's runtime");
    }
}
