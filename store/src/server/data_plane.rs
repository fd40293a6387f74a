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
//! connection is reused only by the client that opened it). Only plain
//! HTTP/1.1 connections are told apart, by peeking at their request line:
//! HTTP/2 connections multiplex both planes, and the request line of an
//! HTTPS connection is only readable after its handshake, so both stay on
//! the node's main threads.
//!
//! The runtime is shared by every node of the process (`ballastd dev` runs
//! three), built by the first one that asks with a nice value other than 0.

use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};

/// The name of the data plane's threads (as `ps -L` and `/proc` show them).
pub const THREAD_NAME: &str = "ballast-dplane";

/// The process's data-plane runtime, or why it could not be built.
static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The data plane's runtime, its threads at `nice` (which the first caller
/// of the process sets); `None` with `nice` 0 (data-plane connections are
/// then served on the caller's runtime), or when it could not be built
/// (logged once).
pub fn handle(nice: i32) -> Option<Handle> {
    if nice == 0 {
        return None;
    }
    let built = RUNTIME.get_or_init(|| {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
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
    built.as_ref().ok().map(|r| r.handle().clone())
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
    async fn the_data_plane_threads_run_at_the_nice_value_asked_for() {
        let handle = handle(7).expect("the data-plane runtime");
        let nice = handle
            .spawn(async {
                let tid = rustix::thread::gettid();
                let name = std::thread::current().name().map(str::to_owned);
                (rustix::process::getpriority_process(Some(tid)), name)
            })
            .await
            .expect("task");
        assert_eq!(nice.0.expect("getpriority"), 7);
        assert_eq!(nice.1.as_deref(), Some(THREAD_NAME));
        assert!(
            super::handle(0).is_none(),
            "0 serves on the caller's runtime"
        );
    }
}
