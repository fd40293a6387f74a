//! Streamed prefix reads over a real socket: every key once, in order, at
//! one revision while writes run; the documented document byte for byte;
//! `limit` and `more`; a client that stops reading holds no more than its
//! response's buffer; the stream slots answer 429 and are given back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use super::api_test::start_node;
use super::range::{RangeLimiter, RangeOptions};
use crate::kv::json::KvJson;
use crate::server::RunningNode;
use crate::Config;

/// One node, and the API router served on a listener of the test's own
/// with a [`RangeLimiter`] the test can look into.
struct Harness {
    running: RunningNode,
    limiter: Arc<RangeLimiter>,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Harness {
    async fn start(options: RangeOptions) -> Harness {
        let (running, _, dir) = start_node(|_| {}).await;
        let limiter = Arc::new(RangeLimiter::new(options));
        let admission = Arc::new(super::Admission::new(
            super::AdmissionOptions::default(),
            running.hub.shared_metrics(),
        ));
        let router = super::router(
            running.node.clone(),
            running.hub.clone(),
            limiter.clone(),
            admission,
            Arc::new(super::SnapshotBuffer::new(
                super::BufferOptions::default(),
                running.hub.clone(),
            )),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let base = format!("http://{}", listener.local_addr().expect("api addr"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Harness {
            running,
            limiter,
            base,
            http: reqwest::Client::new(),
            server,
            _dir: dir,
        }
    }

    /// One node serving its own client listener (the real connection
    /// handling, with its write timeout), with the range limits of its
    /// configuration as `edit` leaves it.
    async fn on_own_listener(edit: impl FnOnce(&mut Config)) -> Harness {
        let (running, _, dir) = start_node(edit).await;
        Harness {
            limiter: running.ranges.clone(),
            base: format!("http://{}", running.client_addr),
            http: reqwest::Client::new(),
            server: tokio::spawn(async {}),
            running,
            _dir: dir,
        }
    }

    /// Writes `count` keys `{prefix}{i:05}` of `value_bytes` each, 100 per
    /// transaction.
    async fn load(&self, prefix: &str, count: usize, value_bytes: usize) {
        for start in (0..count).step_by(100) {
            let ops: Vec<Value> = (start..count.min(start + 100))
                .map(|i| {
                    let value = format!("{i:05}-").repeat(value_bytes / 6 + 1);
                    serde_json::json!({"put": {"key": format!("{prefix}{i:05}"), "value": &value[..value_bytes]}})
                })
                .collect();
            // A loaded machine can time a 1 MB write out (503, not
            // applied or applied: either way the puts are the same again).
            let body = serde_json::json!({ "success": ops });
            let mut attempts = 0;
            loop {
                let reply = self
                    .http
                    .post(format!("{}/v1/txn", self.base))
                    .json(&body)
                    .send()
                    .await
                    .expect("txn");
                attempts += 1;
                if reply.status() == StatusCode::SERVICE_UNAVAILABLE && attempts < 10 {
                    continue;
                }
                assert_eq!(reply.status(), StatusCode::OK);
                break;
            }
        }
    }

    /// `GET` of `path_and_query`: status, whether it had a content length,
    /// and the body.
    async fn get(&self, path_and_query: &str) -> (StatusCode, Option<u64>, bytes::Bytes) {
        let reply = self
            .http
            .get(format!("{}{path_and_query}", self.base))
            .send()
            .await
            .expect("get");
        let status = reply.status();
        let length = reply
            .headers()
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        (status, length, reply.bytes().await.expect("body"))
    }

    async fn get_json(&self, path_and_query: &str) -> Value {
        let (status, _, body) = self.get(path_and_query).await;
        assert_eq!(status, StatusCode::OK, "{body:?}");
        serde_json::from_slice(&body).expect("a complete JSON document")
    }

    /// Waits (with a deadline) until `done` holds.
    async fn wait_for(&self, what: &str, done: impl Fn(&RangeLimiter) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.limiter) {
            assert!(Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn shutdown(self) {
        self.server.abort();
        self.running.shutdown().await;
    }
}

fn small_chunks() -> RangeOptions {
    RangeOptions {
        chunk_bytes: 4096,
        response_buffer_bytes: 16 * 1024,
        node_buffer_bytes: 256 * 1024,
        ..RangeOptions::default()
    }
}

/// The keys of a range answer, and checks that hold for every answer: keys
/// strictly increasing, none written after the answer's revision.
fn keys_of(doc: &Value) -> Vec<String> {
    let revision = doc["revision"].as_u64().expect("revision");
    let kvs = doc["kvs"].as_array().expect("kvs");
    let keys: Vec<String> = kvs
        .iter()
        .map(|kv| kv["key"].as_str().expect("key").to_owned())
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "keys out of order or repeated"
    );
    for kv in kvs {
        let mod_revision = kv["mod_revision"].as_u64().expect("mod_revision");
        assert!(
            mod_revision <= revision,
            "{kv} is newer than revision {revision}"
        );
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_of_many_chunks_is_every_key_once_in_order_at_one_revision_under_writes() {
    let h = Harness::start(small_chunks()).await;
    h.load("fill/", 600, 200).await;
    // A writer that keeps changing keys inside the range and adding new
    // ones between them, while the reads stream.
    let writer = {
        let (http, base) = (h.http.clone(), h.base.clone());
        tokio::spawn(async move {
            for round in 0..10_000u32 {
                let key = format!(
                    "fill/{:05}{}",
                    (round * 37) % 600,
                    ["", "x"][round as usize % 2]
                );
                let sent = http
                    .put(format!("{base}/v1/kv/{key}"))
                    .body(format!("round {round}"))
                    .send()
                    .await;
                if sent.is_err() {
                    break;
                }
            }
        })
    };
    for consistency in [
        "linearizable",
        "serializable",
        "linearizable",
        "serializable",
    ] {
        let (status, length, body) = h
            .get(&format!(
                "/v1/kv/fill/?prefix=true&consistency={consistency}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(length, None, "a many-chunk answer is streamed");
        let doc: Value = serde_json::from_slice(&body).expect("a complete JSON document");
        let keys = keys_of(&doc);
        assert!(keys.len() >= 600);
        assert_eq!(doc["more"], false);
        // The same read at that revision, from history: the same answer.
        let revision = doc["revision"].as_u64().expect("revision");
        let at = h
            .get_json(&format!(
                "/v1/kv/fill/?prefix=true&revision={revision}&consistency=serializable"
            ))
            .await;
        assert_eq!(
            at, doc,
            "the streamed answer is the key space at its revision"
        );
    }
    writer.abort();
    h.wait_for("every stream ended", |l| {
        l.streams_open() == 0 && l.bytes_in_flight() == 0
    })
    .await;
    h.shutdown().await;
}

/// The document as `RangeJson` used to write it, whole.
#[derive(Serialize)]
struct Whole {
    revision: u64,
    kvs: Vec<KvJson>,
    more: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_answers_are_the_documented_document_byte_for_byte() {
    let h = Harness::start(small_chunks()).await;
    h.load("app/", 300, 60).await;
    // Values that are not UTF-8 and that need escaping.
    for (key, value) in [
        ("app/00010", vec![0xff, 0x00, 0x01]),
        ("app/00011", b"q\"\\\n\x01".to_vec()),
    ] {
        let reply = h
            .http
            .put(format!("{}/v1/kv/{key}", h.base))
            .body(value)
            .send()
            .await
            .expect("put");
        assert_eq!(reply.status(), StatusCode::OK);
    }
    let revision = h.running.node.applied().revision;
    let reader = h.running.node.reader().clone();
    for (query, limit, streamed) in [
        ("", None, true),
        ("&limit=250", Some(250), true),
        ("&limit=300", Some(300), true),
        ("&limit=3", Some(3), false),
    ] {
        let range = reader.range("app/", limit, None).expect("range");
        assert_eq!(range.revision, revision);
        let expected = serde_json::to_vec(&Whole {
            revision: range.revision,
            kvs: crate::kv::json::kvs_json(range.kvs),
            more: range.more,
        })
        .expect("json");
        let (status, length, body) = h
            .get(&format!(
                "/v1/kv/app/?prefix=true&consistency=serializable{query}"
            ))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            length.is_none(),
            streamed,
            "{query}: content length {length:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&body),
            String::from_utf8_lossy(&expected),
            "{query}"
        );
    }
    let more = |doc: Value| doc["more"].as_bool().expect("more");
    assert!(more(h.get_json("/v1/kv/app/?prefix=true&limit=250").await));
    assert!(!more(h.get_json("/v1/kv/app/?prefix=true&limit=300").await));
    // Empty answers, and a key-value larger than a chunk (alone in one).
    let empty = h.get_json("/v1/kv/none/?prefix=true").await;
    assert_eq!(empty["kvs"], serde_json::json!([]));
    let big = "b".repeat(50_000);
    h.http
        .put(format!("{}/v1/kv/big/one", h.base))
        .body(big.clone())
        .send()
        .await
        .expect("put");
    h.load("big/two/", 5, 100).await;
    let doc = h.get_json("/v1/kv/big/?prefix=true").await;
    assert_eq!(doc["kvs"][0]["value"], big.as_str());
    assert_eq!(keys_of(&doc).len(), 6);
    h.shutdown().await;
}

/// Opens a connection with a small receive buffer, asks for `path`, reads
/// the first bytes of the answer and returns the connection unread.
async fn stalled_reader(base: &str, path: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://").parse().expect("addr");
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("recv buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut head = [0u8; 512];
    let n = stream.read(&mut head).await.expect("read");
    assert!(
        head[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&head[..n])
    );
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_at_most_its_response_buffer() {
    let options = RangeOptions {
        chunk_bytes: 16 * 1024,
        response_buffer_bytes: 64 * 1024,
        node_buffer_bytes: 1024 * 1024,
        // Only the client ends this stream.
        idle_timeout: Duration::from_secs(3600),
        ..RangeOptions::default()
    };
    let bound = options.response_buffer_bytes;
    let h = Harness::start(options).await;
    // 15 MB: far more than the socket buffers hold.
    h.load("fill/", 1500, 10_000).await;
    let stalled = stalled_reader(&h.base, "/v1/kv/fill/?prefix=true").await;
    h.wait_for("the stalled response holds buffer", |l| {
        l.bytes_in_flight() > 0
    })
    .await;
    // While it stays stalled, it never holds more than its buffer, and
    // other reads go on.
    for _ in 0..20 {
        let held = h.limiter.bytes_in_flight();
        assert!(
            held <= bound,
            "{held} bytes held by a stalled response (bound {bound})"
        );
        let doc = h.get_json("/v1/kv/fill/000?prefix=true").await;
        assert_eq!(keys_of(&doc).len(), 100);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        h.limiter.streams_open(),
        1,
        "the stalled read is still open"
    );
    drop(stalled);
    h.wait_for("the stalled read's buffer and slot are given back", |l| {
        l.bytes_in_flight() == 0 && l.streams_open() == 0
    })
    .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_stream_slots_get_429_with_retry_after() {
    let h = Harness::start(RangeOptions {
        max_streams: 1,
        queue_timeout: Duration::ZERO,
        // Only the client ends the stalled stream.
        idle_timeout: Duration::from_secs(3600),
        ..small_chunks()
    })
    .await;
    h.load("fill/", 1500, 10_000).await;
    let stalled = stalled_reader(&h.base, "/v1/kv/fill/?prefix=true").await;
    let reply = h
        .http
        .get(format!("{}/v1/kv/fill/?prefix=true", h.base))
        .send()
        .await
        .expect("get");
    assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        reply
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let doc: Value = reply.json().await.expect("json");
    assert_eq!(doc["error"]["code"], "too_many_range_reads");
    drop(stalled);
    h.wait_for("the slot is given back", |l| l.streams_open() == 0)
        .await;
    let doc = h.get_json("/v1/kv/fill/0000?prefix=true").await;
    assert_eq!(keys_of(&doc).len(), 10);
    h.wait_for("buffer given back", |l| l.bytes_in_flight() == 0)
        .await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_whose_client_takes_nothing_is_cut_after_the_idle_timeout() {
    let h = Harness::start(RangeOptions {
        idle_timeout: Duration::from_millis(200),
        ..small_chunks()
    })
    .await;
    h.load("fill/", 1500, 10_000).await;
    let stalled = stalled_reader(&h.base, "/v1/kv/fill/?prefix=true").await;
    // The stalled client never takes another chunk: its worker gives up,
    // releasing its snapshot and slot, though the connection stays open.
    h.wait_for("the idle stream is cut", |l| l.streams_open() == 0)
        .await;
    drop(stalled);
    h.wait_for("buffer given back", |l| l.bytes_in_flight() == 0)
        .await;
    h.shutdown().await;
}

/// A client that keeps its connection open and stops reading is
/// disconnected after the write timeout: the chunks its response had queued
/// go back to the node's range budget, its stream slot too, and a new full
/// read is served. A watch on the same node that stays idle far longer than
/// the timeout is not cut: a change still reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_the_write_timeout() {
    let h = Harness::on_own_listener(|c| {
        c.client_write_timeout_ms = 500;
        // Only the write timeout may end the stalled response.
        c.range_idle_timeout_ms = 3_600_000;
    })
    .await;
    let mut watch = h
        .http
        .get(format!("{}/v1/watch/idle/?prefix=true", h.base))
        .send()
        .await
        .expect("watch");
    assert_eq!(watch.status(), StatusCode::OK);
    // 15 MB: far more than the socket buffers hold.
    h.load("fill/", 1500, 10_000).await;
    let mut stalled = stalled_reader(&h.base, "/v1/kv/fill/?prefix=true").await;
    h.wait_for("the stalled response holds buffer", |l| {
        l.bytes_in_flight() > 0
    })
    .await;
    h.wait_for(
        "the stalled response's buffer and slot are given back",
        |l| l.bytes_in_flight() == 0 && l.streams_open() == 0,
    )
    .await;
    // The node closed the connection: what was in flight, then the end.
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(20), stalled.read_to_end(&mut rest))
        .await
        .expect("the stalled connection was closed by the node");
    assert!(
        ended.is_err() || rest.len() < 15_000_000,
        "the stalled client got the whole answer ({} bytes)",
        rest.len()
    );
    let doc = h.get_json("/v1/kv/fill/?prefix=true").await;
    assert_eq!(keys_of(&doc).len(), 1500);
    // The watch, idle since before the load (seconds, the timeout is
    // 500 ms), still delivers.
    let put = h
        .http
        .put(format!("{}/v1/kv/idle/a", h.base))
        .body("awake")
        .send()
        .await
        .expect("put");
    assert_eq!(put.status(), StatusCode::OK);
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("awake") {
        let chunk = tokio::time::timeout(Duration::from_secs(20), watch.chunk())
            .await
            .expect("the idle watch delivers the change")
            .expect("the watch is still open")
            .expect("the watch did not end");
        seen.extend_from_slice(&chunk);
    }
    h.wait_for("buffer given back", |l| l.bytes_in_flight() == 0)
        .await;
    h.shutdown().await;
}
