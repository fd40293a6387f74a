//! Router tests without a socket: a real single-node cluster in-process, the
//! router driven with `oneshot`. Checks the error table of `api::error`, the
//! headers every response carries, and how keys and values are encoded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::{NODE_HEADER, REVISION_HEADER};
use crate::server::{Listeners, RunningNode};
use crate::Config;

/// What the body limit layer allows on top of `max_value_bytes`.
const BODY_SLACK: usize = crate::kv::limits::REQUEST_SLACK_BYTES;

/// One started node and its router.
pub(super) struct Harness {
    running: RunningNode,
    router: Router,
    /// The router's snapshot buffer (tests claim builds on it).
    buffer: Arc<crate::api::SnapshotBuffer>,
    _dir: TempDir,
}

/// A response, read completely.
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) headers: HeaderMap,
    pub(super) body: Bytes,
}

impl Reply {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{} body is not JSON ({e}): {:?}", self.status, self.body))
    }

    /// Asserts the response is a JSON error with `status` and `code`.
    fn assert_error(&self, status: StatusCode, code: &str) {
        let body = self.json();
        assert_eq!(self.status, status, "status of {body}");
        assert_eq!(body["error"]["code"], code, "code in {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "message in {body}"
        );
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        assert_eq!(
            content_type,
            Some("application/json"),
            "content type of {body}"
        );
    }

    fn revision_header(&self) -> u64 {
        header_u64(&self.headers, REVISION_HEADER)
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> u64 {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("header {name} missing or not a number: {headers:?}"))
}

/// Starts node 1 alone on listeners of its own (with `tweak` applied to its
/// config) and waits until it leads with its first entry applied. Returns
/// the node, the config it started with and the directory of its data.
pub(super) async fn start_node(tweak: impl FnOnce(&mut Config)) -> (RunningNode, Config, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let client = TcpListener::bind("127.0.0.1:0").await.expect("bind client");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let client_addr = client.local_addr().expect("client addr");
    let peer_addr = peer.local_addr().expect("peer addr");
    let mut config = Config {
        node_id: 1,
        data_dir: dir.path().join("node1"),
        listen_client: client_addr.to_string(),
        listen_peer: peer_addr.to_string(),
        initial_cluster: Some(format!("1={client_addr}/{peer_addr}")),
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        // No 64 MiB reserve file per test node.
        reserve_bytes: 0,
        ..Config::default()
    };
    tweak(&mut config);
    let running = crate::server::start(config.clone(), Some(Listeners { client, peer }))
        .await
        .expect("start node");
    let deadline = Instant::now() + Duration::from_secs(20);
    // Leader, and its first entry applied: membership changes wait for
    // the initial membership to be committed.
    let ready = |node: &crate::raft::node::Node| {
        use openraft::async_runtime::watch::WatchReceiver;
        let metrics = node.raft().metrics();
        let applied = metrics
            .borrow_watched()
            .last_applied
            .map_or(0, |id| id.index);
        node.raft().is_leader() && applied >= 1
    };
    while !ready(&running.node) {
        assert!(Instant::now() < deadline, "node 1 did not become leader");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (running, config, dir)
}

impl Harness {
    /// Starts node 1 alone with [`start_node`] (requests time out after
    /// 3 s, peer connects after 300 ms, then `tweak` applies) and builds
    /// the router of its config.
    pub(super) async fn start(tweak: impl FnOnce(&mut Config)) -> Harness {
        let (running, config, dir) = start_node(|config| {
            config.request_timeout_ms = 3000;
            config.connect_timeout_ms = 300;
            tweak(config);
        })
        .await;
        let ranges = Arc::new(crate::api::RangeLimiter::new(config.range_options()));
        let admission = Arc::new(crate::api::Admission::new(
            config.admission_options(),
            running.hub.shared_metrics(),
        ));
        let buffer = Arc::new(crate::api::SnapshotBuffer::new(
            config.buffer_options(),
            running.hub.clone(),
        ));
        let router = crate::api::router(
            running.node.clone(),
            running.hub.clone(),
            ranges,
            admission,
            buffer.clone(),
        );
        Harness {
            running,
            router,
            buffer,
            _dir: dir,
        }
    }

    /// Sends one request through the router; checks the headers every
    /// response must carry.
    async fn send(&self, req: Request<Body>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        let resp = self
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("router is infallible");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("read body").to_bytes();
        header_u64(&parts.headers, REVISION_HEADER);
        assert_eq!(header_u64(&parts.headers, NODE_HEADER), 1, "{what}");
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub(super) async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body.into())
            .expect("valid request");
        self.send(req).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Body::empty()).await
    }

    async fn put(&self, uri: &str, body: impl Into<Body>) -> Reply {
        self.call(Method::PUT, uri, body).await
    }

    async fn txn(&self, body: impl Into<Body>) -> Reply {
        self.call(Method::POST, "/v1/txn", body).await
    }

    /// `PUT` that must succeed; returns its revision.
    async fn put_ok(&self, uri: &str, body: impl Into<Body>) -> u64 {
        let reply = self.put(uri, body).await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let revision = reply.json()["revision"].as_u64().expect("revision");
        self.wait_applied(revision).await;
        revision
    }

    /// Waits until the node has published `revision` as applied: it does so a
    /// moment after it answers the write (see
    /// `write_responses_carry_their_own_revision_in_the_header`).
    async fn wait_applied(&self, revision: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.revision() < revision {
            assert!(
                Instant::now() < deadline,
                "revision {revision} never published as applied"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn revision(&self) -> u64 {
        self.running.node.applied().revision
    }

    pub(super) async fn shutdown(self) {
        self.running.shutdown().await;
    }
}

fn small_limits(c: &mut Config) {
    c.max_key_bytes = 64;
    c.max_value_bytes = 1024;
    c.max_txn_ops = 4;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors_are_invalid_query() {
    let h = Harness::start(|_| {}).await;
    h.put_ok("/v1/kv/app/mode", "green").await;
    for uri in [
        "/v1/kv/app/mode?limit=abc&prefix=true",
        "/v1/kv/app/mode?foo=1",
        "/v1/kv/app/mode?limit=1",
        "/v1/kv/app/?prefix=maybe",
        "/v1/kv/app/?prefix",
        "/v1/kv/app/?prefix=true&limit=-1",
        "/v1/kv/app/?prefix=true&limit=99999999999999999999999999",
        "/v1/kv/app/mode?revision=-1",
        "/v1/kv/app/mode?revision=abc",
        "/v1/kv/app/mode?consistency=eventual",
        "/v1/kv/app/mode?prefix=true&prefix=false",
    ] {
        let reply = h.get(uri).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    h.put("/v1/kv/app/mode?prev_kv=sure", "x")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    h.put("/v1/kv/app/mode?ttl=5", "x")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    h.call(Method::DELETE, "/v1/kv/app/mode?foo=1", Body::empty())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    h.call(
        Method::DELETE,
        "/v1/kv/app/?limit=1&prefix=true",
        Body::empty(),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_query");

    // The accepted spellings still work, and nothing above wrote anything.
    assert_eq!(
        h.get("/v1/kv/app/mode?consistency=serializable")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        h.get("/v1/kv/app/?prefix=true&limit=0").await.status,
        StatusCode::OK
    );
    let reply = h.get("/v1/kv/app/mode").await;
    assert_eq!(reply.json()["kv"]["version"], 1);
    assert_eq!(h.revision(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_txn_bodies_are_invalid_json_or_invalid_request() {
    let h = Harness::start(|_| {}).await;
    h.put_ok("/v1/kv/k", "v").await;
    let nested = format!(
        "{{\"compare\": {}1{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let invalid_json = [
        String::new(),
        "not json".into(),
        "{\"compare\": [".into(),
        "null".into(),
        "42".into(),
        "{\"sucess\": []}".into(),
        r#"{"success": [{"frobnicate": {"key": "k"}}]}"#.into(),
        r#"{"success": [{"put": {"key": "k"}}]}"#.into(),
        r#"{"success": [{"put": {"key": "k", "value": "v", "ttl": 3}}]}"#.into(),
        r#"{"success": [{"put": {"key": "k", "value": "v"}, "get": {"key": "k"}}]}"#.into(),
        r#"{"success": [{"put": {"key": "k", "value": "%%%", "encoding": "base64"}}]}"#.into(),
        r#"{"success": [{"put": {"key": "k", "value": "v", "encoding": "rot13"}}]}"#.into(),
        r#"{"compare": [{"key": "k", "target": "size", "op": "=", "version": 1}]}"#.into(),
        r#"{"compare": [{"key": "k", "target": "version", "op": "<=", "version": 1}]}"#.into(),
        r#"{"compare": [{"key": "k", "target": "version", "op": "=", "version": -1}]}"#.into(),
        r#"{"compare": [{"key": 7, "target": "version", "op": "=", "version": 1}]}"#.into(),
        r#"{"compare": [{"key": "k", "target": "value", "op": "=", "value": "x", "encoding": "base64"}]}"#.into(),
        nested,
    ];
    for body in invalid_json {
        let reply = h.txn(body.clone()).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:.80}");
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    }
    let invalid_request = [
        // Wrong operand field, two operands, no operand, encoding without value.
        r#"{"compare": [{"key": "k", "target": "version", "op": "=", "value": "x"}]}"#,
        r#"{"compare": [{"key": "k", "target": "version", "op": "=", "version": 1, "mod_revision": 1}]}"#,
        r#"{"compare": [{"key": "k", "target": "mod_revision", "op": "="}]}"#,
        r#"{"compare": [{"key": "k", "target": "version", "op": "=", "version": 1, "encoding": "base64"}]}"#,
        // One key written twice in a branch.
        r#"{"success": [{"put": {"key": "k", "value": "1"}}, {"put": {"key": "k", "value": "2"}}]}"#,
        r#"{"failure": [{"put": {"key": "a/x", "value": "1"}}, {"delete": {"key": "a/", "prefix": true}}]}"#,
    ];
    for body in invalid_request {
        h.txn(body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    let invalid_key = [
        r#"{"success": [{"put": {"key": "", "value": "v"}}]}"#,
        r#"{"success": [{"delete": {"key": ""}}]}"#,
        r#"{"success": [{"get": {"key": "a\u0000b"}}]}"#,
        r#"{"compare": [{"key": "", "target": "version", "op": "=", "version": 0}]}"#,
    ];
    for body in invalid_key {
        h.txn(body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    }
    assert_eq!(h.revision(), 1, "no rejected transaction wrote anything");

    // An empty object is a valid (empty) transaction; it writes nothing.
    let reply = h.txn("{}").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["succeeded"], true);
    assert_eq!(reply.json()["revision"], 1);
    // Every other JSON value is refused, also the array form serde would
    // read a struct from.
    for body in ["[]", "[[], [], []]", " \"x\"", "1", "null", "true"] {
        h.txn(body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
        h.call(Method::POST, "/v1/compact", body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
        h.call(Method::POST, "/v1/replicas/report", body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    }
    assert_eq!(h.revision(), 1, "no refused body wrote anything");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_is_read_the_same_way() {
    let h = Harness::start(small_limits).await;
    let over = vec![b'x'; 1024 + BODY_SLACK + 1];
    let broken = || {
        Body::from_stream(futures::stream::iter([
            Ok(Bytes::from_static(b"{")),
            Err(std::io::Error::other("connection reset")),
        ]))
    };
    // Over the body limit: 413, the code naming what was too large.
    h.put("/v1/kv/b", over.clone())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    for uri in ["/v1/txn", "/v1/compact", "/v1/replicas/report"] {
        h.call(Method::POST, uri, over.clone())
            .await
            .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");
    }
    // A body that cannot be read for another reason: 400 invalid_request.
    h.call(Method::PUT, "/v1/kv/b", broken())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    for uri in ["/v1/txn", "/v1/compact", "/v1/replicas/report"] {
        h.call(Method::POST, uri, broken())
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_give_413_and_too_many_ops() {
    let h = Harness::start(small_limits).await;
    let long_key = "k".repeat(65);
    let max_key = "k".repeat(64);

    // Keys: 64 bytes is fine, 65 is too large for every method.
    h.put_ok(&format!("/v1/kv/{max_key}"), "v").await;
    h.put(&format!("/v1/kv/{long_key}"), "v")
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large");
    h.get(&format!("/v1/kv/{long_key}"))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large");
    h.get(&format!("/v1/kv/{long_key}?prefix=true"))
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large");
    h.call(Method::DELETE, &format!("/v1/kv/{long_key}"), Body::empty())
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large");
    let body = json!({"success": [{"put": {"key": long_key, "value": "v"}}]}).to_string();
    h.txn(body)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "key_too_large");

    // Values: exactly the limit is fine; one byte over is refused by
    // validation; far over is refused by the body limit layer.
    h.put_ok("/v1/kv/v", vec![b'x'; 1024]).await;
    h.put("/v1/kv/v", vec![b'x'; 1025])
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    h.put("/v1/kv/v", vec![b'x'; 1024 + BODY_SLACK + 1])
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    let over = "x".repeat(1025);
    let body = json!({"success": [{"put": {"key": "v", "value": over}}]}).to_string();
    h.txn(body)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    let body =
        json!({"compare": [{"key": "v", "target": "value", "op": "=", "value": over}]}).to_string();
    h.txn(body)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "value_too_large");
    let huge = json!({"success": [{"put": {"key": "v", "value": "x".repeat(1024 + BODY_SLACK)}}]})
        .to_string();
    h.txn(huge)
        .await
        .assert_error(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large");

    // Transaction size: 4 ops per branch and 4 compares are fine, 5 are not.
    let puts = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"put": {"key": format!("t{i}"), "value": "v"}}))
            .collect()
    };
    let compares = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"key": format!("t{i}"), "target": "version", "op": "=", "version": 0}))
            .collect()
    };
    let ok = h
        .txn(json!({"compare": compares(4), "success": puts(4)}).to_string())
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    let before = ok.json()["revision"].as_u64().expect("revision");
    h.wait_applied(before).await;
    h.txn(json!({"success": puts(5)}).to_string())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "too_many_ops");
    h.txn(json!({"failure": puts(5)}).to_string())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "too_many_ops");
    h.txn(json!({"compare": compares(5)}).to_string())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "too_many_ops");
    assert_eq!(h.revision(), before, "no refused request wrote anything");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_allow_128_ops_not_129() {
    let h = Harness::start(|_| {}).await;
    let puts = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"put": {"key": format!("t{i}"), "value": "v"}}))
            .collect()
    };
    h.txn(json!({"success": puts(129)}).to_string())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "too_many_ops");
    assert_eq!(h.revision(), 0);
    let ok = h.txn(json!({"success": puts(128)}).to_string()).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["responses"].as_array().map(Vec::len), Some(128));
    assert_eq!(
        ok.json()["revision"],
        1,
        "a whole transaction is one revision"
    );
    h.wait_applied(1).await;
    assert_eq!(
        h.get("/v1/kv/t?prefix=true").await.json()["kvs"]
            .as_array()
            .map(Vec::len),
        Some(128)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_routes_methods_and_revisions() {
    let h = Harness::start(|_| {}).await;

    // Empty and NUL keys.
    for uri in ["/v1/kv/", "/v1/kv"] {
        h.put(uri, "v")
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
        h.get(uri)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
        h.call(Method::DELETE, uri, Body::empty())
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    }
    h.put("/v1/kv/a%00b", "v")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    h.get("/v1/kv/a%00b")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    h.get("/v1/kv/a%00?prefix=true")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    h.call(Method::DELETE, "/v1/kv/a%00b", Body::empty())
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    // Percent-encoding that decodes to invalid UTF-8.
    h.put("/v1/kv/a%FFb", "v")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    h.get("/v1/kv/a%C3")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    assert_eq!(h.revision(), 0);

    // Unknown routes and wrong methods.
    for uri in [
        "/",
        "/v1",
        "/v1/kvx",
        "/v2/kv/a",
        "/v1/txn/extra",
        "/v1/status/x",
        "/v1/watchx",
    ] {
        h.get(uri)
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    h.call(Method::POST, "/nope", "{}")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for (method, uri) in [
        (Method::POST, "/v1/kv/a"),
        (Method::PATCH, "/v1/kv/a"),
        (Method::POST, "/v1/kv/"),
        (Method::GET, "/v1/txn"),
        (Method::PUT, "/v1/txn"),
        (Method::DELETE, "/v1/txn"),
        (Method::POST, "/v1/status"),
        (Method::DELETE, "/health/live"),
        (Method::PUT, "/health/ready"),
    ] {
        h.call(method, uri, Body::empty())
            .await
            .assert_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }

    // key_not_found, now and at a past revision, carries the revision read.
    let r1 = h.put_ok("/v1/kv/app/mode", "green").await;
    let r2 = h.put_ok("/v1/kv/app/mode", "blue").await;
    let missing = h.get("/v1/kv/app/none").await;
    missing.assert_error(StatusCode::NOT_FOUND, "key_not_found");
    assert_eq!(missing.json()["revision"], r2);
    let r3 = h.put_ok("/v1/kv/app/late", "x").await;
    let before = h.get(&format!("/v1/kv/app/late?revision={r2}")).await;
    before.assert_error(StatusCode::NOT_FOUND, "key_not_found");
    assert_eq!(before.json()["revision"], r2);
    let old = h
        .get(&format!("/v1/kv/app/mode?revision={r1}"))
        .await
        .json();
    assert_eq!(old["kv"]["value"], "green");
    assert_eq!(old["revision"], r1);
    let range = h
        .get(&format!("/v1/kv/app/?prefix=true&revision={r2}"))
        .await
        .json();
    assert_eq!(range["kvs"].as_array().map(Vec::len), Some(1));

    // A revision above the current one is refused, for a key and a range.
    let future = r3 + 1;
    h.get(&format!("/v1/kv/app/mode?revision={future}"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "future_revision");
    h.get(&format!("/v1/kv/app/?prefix=true&revision={}", u64::MAX))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "future_revision");

    // Status and health answer with the headers too.
    let status = h.get("/v1/status").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["revision"], r3);
    assert_eq!(status.revision_header(), r3);
    assert_eq!(h.get("/health/live").await.status, StatusCode::OK);
    assert_eq!(h.get("/health/ready").await.status, StatusCode::OK);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_values_round_trip() {
    let h = Harness::start(|_| {}).await;

    // A leading slash is part of the key.
    h.put_ok("/v1/kv//services/api/x", "1").await;
    let got = h.get("/v1/kv//services/api/x").await.json();
    assert_eq!(got["kv"]["key"], "/services/api/x");
    assert_eq!(got["kv"]["value"], "1");
    h.get("/v1/kv/services/api/x")
        .await
        .assert_error(StatusCode::NOT_FOUND, "key_not_found");
    let range = h.get("/v1/kv//services/?prefix=true").await.json();
    assert_eq!(range["kvs"][0]["key"], "/services/api/x");

    // Percent-encoded characters decode into the key and come back as is.
    let key = "cfg/a b/ü?#%&=+";
    h.put_ok("/v1/kv/cfg/a%20b/%C3%BC%3F%23%25%26%3D%2B", "enc")
        .await;
    let got = h
        .get("/v1/kv/cfg/a%20b/%C3%BC%3F%23%25%26%3D%2B")
        .await
        .json();
    assert_eq!(got["kv"]["key"], key);
    let range = h.get("/v1/kv/cfg/?prefix=true").await.json();
    assert_eq!(range["kvs"][0]["key"], key);
    // The same key written with a txn is the same key.
    let body = json!({"compare": [{"key": key, "target": "value", "op": "=", "value": "enc"}],
                      "success": [{"put": {"key": key, "value": "enc2"}}]});
    let reply = h.txn(body.to_string()).await.json();
    assert_eq!(reply["succeeded"], true, "{reply}");

    // Raw non-UTF-8 PUT bodies come back as base64; empty bodies are empty values.
    let raw = vec![0xff, 0xfe, 0x00, b'a'];
    h.put_ok("/v1/kv/bin/raw", raw.clone()).await;
    let got = h.get("/v1/kv/bin/raw").await.json();
    assert_eq!(got["kv"]["encoding"], "base64");
    assert_eq!(got["kv"]["value"], BASE64.encode(&raw));
    h.put_ok("/v1/kv/bin/empty", Body::empty()).await;
    let got = h.get("/v1/kv/bin/empty").await.json();
    assert_eq!(got["kv"]["value"], "");
    assert!(got["kv"].get("encoding").is_none());

    // Base64 values in a txn put come back as base64 when not UTF-8, and as
    // text when they are; compares on base64 values match the bytes.
    let bytes = vec![0x00, 0x9f, 0x92, 0x96];
    let body = json!({"success": [
        {"put": {"key": "bin/txn", "value": BASE64.encode(&bytes), "encoding": "base64"}},
        {"put": {"key": "bin/text", "value": BASE64.encode("héllo"), "encoding": "base64"}},
        {"put": {"key": "bin/utf8", "value": "plain", "encoding": "utf8"}},
        {"get": {"key": "bin/", "prefix": true}}
    ]});
    let reply = h.txn(body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let kvs = reply.json()["responses"][3]["get"]["kvs"].clone();
    let by_key = |k: &str| {
        kvs.as_array()
            .and_then(|a| a.iter().find(|kv| kv["key"] == k))
            .cloned()
    };
    let txn_kv = by_key("bin/txn").expect("bin/txn in the txn get");
    assert_eq!(txn_kv["encoding"], "base64");
    assert_eq!(txn_kv["value"], BASE64.encode(&bytes));
    let text_kv = by_key("bin/text").expect("bin/text in the txn get");
    assert_eq!(text_kv["value"], "héllo");
    assert!(text_kv.get("encoding").is_none());
    assert_eq!(
        h.get("/v1/kv/bin/utf8").await.json()["kv"]["value"],
        "plain"
    );
    let got = h.get("/v1/kv/bin/txn").await.json();
    assert_eq!(got["kv"]["encoding"], "base64");
    assert_eq!(got["kv"]["value"], BASE64.encode(&bytes));
    let body = json!({"compare": [{"key": "bin/txn", "target": "value", "op": "=",
                                   "value": BASE64.encode(&bytes), "encoding": "base64"}]});
    assert_eq!(h.txn(body.to_string()).await.json()["succeeded"], true);
    h.shutdown().await;
}

/// Strategy pieces for the fuzz below: mostly-plausible requests with
/// hostile parts.
fn fuzz_request() -> impl Strategy<Value = (Method, String, Vec<u8>)> {
    let method = prop::sample::select(vec![
        Method::GET,
        Method::PUT,
        Method::DELETE,
        Method::POST,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
    ]);
    let base = prop::sample::select(vec![
        "/v1/kv/",
        "/v1/kv",
        "/v1/txn",
        "/v1/status",
        "/health/ready",
        "/",
        "/v1/",
    ]);
    let tail = "([a-z/._~-]|%[0-9A-Fa-fZz]{0,2}){0,12}";
    let query_part = prop_oneof![
        Just(String::new()),
        "(prefix|limit|revision|consistency|prev_kv|foo)=(true|false|1|-1|0|abc|serializable|%FF|99999999999999999999999)?"
            .prop_map(|s| s.to_string()),
        "[a-z_=&%0-9+.-]{0,24}",
    ];
    let query = prop::collection::vec(query_part, 0..4).prop_map(|parts| parts.join("&"));
    let body = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec(any::<u8>(), 0..64),
        "\\{\"(compare|success|failure|x)\": \\[\\{\"(put|get|delete|key|target)\": [\\[\\{\"a-z:0-9,= ]{0,40}"
            .prop_map(String::into_bytes),
        Just(br#"{"compare": [{"key": "k", "target": "value", "op": "!=", "value": "x"}], "success": [{"put": {"key": "k", "value": "v"}}]}"#.to_vec()),
    ];
    (method, base, tail, query, body).prop_map(|(m, b, t, q, body)| {
        let uri = if q.is_empty() {
            format!("{b}{t}")
        } else {
            format!("{b}{t}?{q}")
        };
        (m, uri, body)
    })
}

#[test]
fn arbitrary_requests_never_get_a_5xx() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let h = rt.block_on(Harness::start(small_limits));
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&fuzz_request(), |(method, uri, body)| {
        // A URI that does not parse never reaches the router (hyper refuses it).
        let Ok(req) = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .body(Body::from(body))
        else {
            return Ok(());
        };
        let reply = rt.block_on(h.send(req));
        prop_assert!(
            reply.status.as_u16() < 500,
            "{} {} gave {}: {:?}",
            method,
            uri,
            reply.status,
            reply.body
        );
        if !reply.status.is_success() && method != Method::HEAD {
            let json: Value = serde_json::from_slice(&reply.body).map_err(|e| {
                TestCaseError::fail(format!("{method} {uri}: error body is not JSON: {e}"))
            })?;
            prop_assert!(
                json["error"]["code"].is_string(),
                "{} {}: {}",
                method,
                uri,
                json
            );
        }
        Ok(())
    });
    rt.block_on(h.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The contract: every response carries the responding node's applied
/// revision. A write's answer is sent once it is applied, so its header can
/// never be below the revision in its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_responses_carry_their_own_revision_in_the_header() {
    let h = Harness::start(|_| {}).await;
    for i in 0..20 {
        let reply = h.put(&format!("/v1/kv/k{i}"), "v").await;
        let revision = reply.json()["revision"].as_u64().expect("revision");
        assert!(
            reply.revision_header() >= revision,
            "PUT answered revision {revision} with x-ballast-revision {}",
            reply.revision_header()
        );
    }
    h.shutdown().await;
}

/// A key path with a broken percent-escape (`%ZZ`, a lone `%`) is ambiguous:
/// today it is kept literally, so `/v1/kv/a%ZZ` and `/v1/kv/a%25ZZ` name the
/// same key. Bad input should be a 400 `invalid_key` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_percent_encoding_in_a_key_is_refused() {
    let h = Harness::start(|_| {}).await;
    for uri in ["/v1/kv/a%ZZ", "/v1/kv/%", "/v1/kv/a%2"] {
        h.put(uri, "v")
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
        h.get(uri)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_key");
    }
    h.shutdown().await;
}

/// The membership routes on a one-node cluster: the listing, each refusal
/// with its code, and a removed node refusing everything but its status and
/// its dashboard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_routes_refuse_bad_and_unsafe_changes() {
    let h = Harness::start(|_| {}).await;
    let members = h.get("/v1/members").await;
    assert_eq!(members.status, StatusCode::OK);
    let doc = members.json();
    assert_eq!(doc["leader"], 1, "{doc}");
    assert_eq!(doc["members"][0]["role"], "leader", "{doc}");
    assert_eq!(doc["members"].as_array().map(Vec::len), Some(1), "{doc}");

    for (method, uri, body, status, code) in [
        (
            Method::POST,
            "/v1/members",
            "[]",
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/members",
            r#"{"id":2}"#,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Method::POST,
            "/v1/members",
            r#"{"id":0,"client_addr":"a:1","peer_addr":"a:2"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/members",
            r#"{"id":2,"client_addr":"a:1","peer_addr":"a b:2"}"#,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/members/x/promote",
            "",
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            Method::POST,
            "/v1/members/1/promote",
            "",
            StatusCode::CONFLICT,
            "member_exists",
        ),
        (
            Method::POST,
            "/v1/members/7/promote",
            "",
            StatusCode::NOT_FOUND,
            "member_not_found",
        ),
        (
            Method::DELETE,
            "/v1/members/7",
            "",
            StatusCode::NOT_FOUND,
            "member_not_found",
        ),
        (
            Method::POST,
            "/v1/leader/transfer",
            r#"{"to":7}"#,
            StatusCode::NOT_FOUND,
            "member_not_found",
        ),
        (
            Method::GET,
            "/v1/members/1/promote",
            "",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ] {
        h.call(method, uri, body).await.assert_error(status, code);
    }
    // Removing the only voter would leave no cluster; the leader hands over
    // first, and with nobody to hand to the removal is refused.
    h.call(Method::DELETE, "/v1/members/1", "")
        .await
        .assert_error(StatusCode::CONFLICT, "would_lose_quorum");
    // Transfer to itself is a no-op that names it.
    let moved = h
        .call(Method::POST, "/v1/leader/transfer", r#"{"to":1}"#)
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    assert_eq!(moved.json()["leader"], 1);
    // Nothing changed.
    let doc = h.get("/v1/members").await.json();
    assert_eq!(doc["members"].as_array().map(Vec::len), Some(1), "{doc}");

    h.running
        .node
        .mark_removed("node 1 was removed for the test".into());
    h.get("/v1/kv/a")
        .await
        .assert_error(StatusCode::GONE, "removed");
    h.call(Method::POST, "/v1/members", "{}")
        .await
        .assert_error(StatusCode::GONE, "removed");
    let status = h.get("/v1/status").await;
    assert_eq!(status.status, StatusCode::OK);
    assert_eq!(status.json()["raft"]["state"], "Removed");
    assert_eq!(status.json()["removed"], "node 1 was removed for the test");
    // The dashboard still loads there, and says why from that status.
    assert_eq!(h.get("/ui").await.status, StatusCode::OK);
    assert_eq!(h.get("/ui/").await.status, StatusCode::OK);
    h.shutdown().await;
}

/// Session writes through the router: registration, a replay answering the
/// first result for each kind of write, the refusals of malformed session
/// fields, and `410 session_expired` for what the table cannot answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_writes_replay_their_first_result() {
    let h = Harness::start(|_| {}).await;
    let client = "0123456789abcdef0123456789abcdef";
    let registered = h
        .call(
            Method::POST,
            "/v1/sessions",
            format!(r#"{{"client":"{client}"}}"#),
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{:?}", registered.body);
    let doc = registered.json();
    assert_eq!(doc["client"], client);
    let session = doc["session"].as_u64().expect("session");
    let again = h
        .call(
            Method::POST,
            "/v1/sessions",
            format!(r#"{{"client":"{}"}}"#, client.to_uppercase()),
        )
        .await;
    assert_eq!(
        again.json()["session"],
        session,
        "registering is idempotent"
    );
    let tag = |seq: u64, acked: u64| {
        format!("client={client}&session={session}&seq={seq}&acked_below={acked}")
    };

    // A put, and its retry: one application, the same answer.
    h.put_ok("/v1/kv/s/a", "0").await;
    let uri = format!("/v1/kv/s/a?prev_kv=true&{}", tag(1, 1));
    let first = h.put(&uri, "1").await;
    assert_eq!(first.status, StatusCode::OK, "{:?}", first.body);
    let replay = h.put(&uri, "1").await;
    assert_eq!(replay.json(), first.json());
    assert_eq!(replay.json()["prev_kv"]["value"], "0");
    assert_eq!(h.get("/v1/kv/s/a").await.json()["kv"]["version"], 2);

    // A delete and a transaction, the same way.
    let uri = format!("/v1/kv/s/?prefix=true&{}", tag(2, 1));
    let first = h.call(Method::DELETE, &uri, "").await;
    assert_eq!(first.json()["deleted"], 1);
    assert_eq!(h.call(Method::DELETE, &uri, "").await.json(), first.json());
    let txn = json!({
        "compare": [{"key": "s/b", "target": "version", "op": "=", "version": 0}],
        "success": [{"put": {"key": "s/b", "value": "x"}}],
        "session": {"client": client, "session": session, "seq": 3, "acked_below": 1},
    })
    .to_string();
    let first = h.txn(txn.clone()).await;
    assert_eq!(first.json()["succeeded"], true, "{:?}", first.body);
    assert_eq!(
        h.txn(txn).await.json(),
        first.json(),
        "not a failed compare"
    );

    // Malformed session fields.
    for uri in [
        format!("/v1/kv/s/c?client={client}"),
        format!("/v1/kv/s/c?client=xyz&session={session}&seq=4&acked_below=1"),
        format!("/v1/kv/s/c?client={client}&session=-1&seq=4&acked_below=1"),
    ] {
        h.put(&uri, "v")
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    }
    for uri in [
        format!("/v1/kv/s/c?{}", tag(0, 0)),
        format!("/v1/kv/s/c?{}", tag(4, 5)),
    ] {
        h.put(&uri, "v")
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_request");
    }
    for body in [
        r#"{"client": "nothex"}"#,
        r#"{"client": 7}"#,
        r#"{"client": "0123456789abcdef0123456789abcdef", "x": 1}"#,
        r#"[]"#,
    ] {
        h.call(Method::POST, "/v1/sessions", body)
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_json");
    }
    h.txn(r#"{"session": {"client": "0123456789abcdef0123456789abcdef"}}"#)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_json");

    // What the table cannot answer: an unknown session, an acknowledged
    // sequence number. Nothing is applied.
    let revision = h.revision();
    let unknown = h
        .put(
            &format!(
                "/v1/kv/s/c?client={client}&session={}&seq=4&acked_below=1",
                session + 1000
            ),
            "v",
        )
        .await;
    unknown.assert_error(StatusCode::GONE, "session_expired");
    assert_eq!(unknown.json()["error"]["reason"], "unknown_session");
    let fifth = h.put_ok(&format!("/v1/kv/s/d?{}", tag(5, 5)), "v").await;
    assert_eq!(fifth, revision + 1);
    let forgotten = h.put(&format!("/v1/kv/s/a?{}", tag(1, 1)), "1").await;
    forgotten.assert_error(StatusCode::GONE, "session_expired");
    assert_eq!(forgotten.json()["error"]["reason"], "result_forgotten");
    assert_eq!(h.revision(), fifth, "only seq 5 was applied");
    h.shutdown().await;
}

#[path = "admission_test.rs"]
mod admission_test;
#[path = "bootstrap_test.rs"]
mod bootstrap_test;

/// Shutdown closes the database itself, at once, also after requests and
/// with watch streams still open (over HTTP/1.1 and HTTP/2): nothing it stopped keeps a handle (the
/// watch hub did, and every stop waited out its 4 s deadline and left the
/// database to be recovered from the WAL).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_closes_its_database() {
    let (running, config, _dir) = start_node(|_| {}).await;
    let base = format!("http://{}", config.listen_client);
    let http = reqwest::Client::new();
    let watch = http
        .get(format!("{base}/v1/watch/a"))
        .send()
        .await
        .expect("watch");
    assert!(watch.status().is_success(), "{}", watch.status());
    // And one over HTTP/2, whose requests run in tasks of their own.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let watch_h2 = h2
        .get(format!("{base}/v1/watch/a"))
        .send()
        .await
        .expect("watch over HTTP/2");
    assert_eq!(watch_h2.version(), reqwest::Version::HTTP_2);
    let put = http
        .put(format!("{base}/v1/kv/a"))
        .body("x")
        .send()
        .await
        .expect("put");
    assert!(put.status().is_success(), "{}", put.status());
    let report = running.shutdown().await;
    assert!(report.clean(), "{report:?}");
    assert!(report.db_closed);
    drop((watch, watch_h2));
}

/// Concurrent linearizable reads share read-index rounds: a burst of them
/// costs far fewer rounds than reads, and every one still sees the writes
/// acknowledged before it started.
#[tokio::test]
async fn concurrent_linearizable_reads_share_read_index_rounds() {
    const READS: usize = 64;
    let h = Harness::start(|_| {}).await;
    let written = h.put_ok("/v1/kv/rounds/k", "v1").await;
    let before = h.running.hub.metrics().read_index_rounds.get();
    let replies = futures::future::join_all((0..READS).map(|_| h.get("/v1/kv/rounds/k"))).await;
    for r in &replies {
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json()["kv"]["value"], "v1");
        assert!(r.revision_header() >= written);
    }
    let rounds = h.running.hub.metrics().read_index_rounds.get() - before;
    assert!(rounds >= 1, "no read-index round ran");
    assert!(
        rounds <= (READS / 2) as u64,
        "{rounds} rounds for {READS} concurrent reads"
    );
    // A read after a write sees it: the rounds never answer a reader with
    // an index read before it arrived.
    let rewritten = h.put_ok("/v1/kv/rounds/k", "v2").await;
    let after = h.get("/v1/kv/rounds/k").await;
    assert_eq!(after.json()["kv"]["value"], "v2");
    assert!(after.revision_header() >= rewritten);
    h.shutdown().await;
}
