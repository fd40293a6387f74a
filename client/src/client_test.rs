//! The request loop against tiny in-process HTTP servers on `127.0.0.1:0`:
//! request shapes, failover, leader hints, and indeterminate writes; then
//! the session write loop: registration, the session on each write, lost
//! answers sent again, `session_expired`, and a cluster without sessions.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};

use super::*;
use crate::txn::{Compare, CompareOp, TxnOp};
use std::time::Duration;

/// What a test server does with a request.
enum Reply {
    /// Answer with this status, JSON body and extra headers.
    Json(u16, Value, Vec<(&'static str, String)>),
    /// Accept the request and never answer.
    Hang,
    /// Answer with this status and body once notified.
    After(Arc<tokio::sync::Notify>, u16, Value),
}

#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    uri: String,
    body: Vec<u8>,
    /// The `Authorization` header, if any.
    authorization: Option<String>,
}

type Responder = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct ServerState {
    hits: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    reply: Box<Responder>,
}

struct TestServer {
    url: String,
    state: Arc<ServerState>,
}

impl TestServer {
    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }
}

async fn handle(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let rec = Recorded {
        method,
        uri: uri.to_string(),
        body: body.to_vec(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    state.hits.fetch_add(1, Ordering::SeqCst);
    let reply = (state.reply)(&rec);
    if let Ok(mut r) = state.requests.lock() {
        r.push(rec);
    }
    match reply {
        Reply::Json(status, body, headers) => {
            let status = StatusCode::from_u16(status).expect("valid test status");
            let mut resp = (status, axum::Json(body)).into_response();
            resp.headers_mut()
                .insert("x-ballast-revision", "42".parse().expect("header value"));
            resp.headers_mut()
                .insert("x-ballast-node", "1".parse().expect("header value"));
            for (name, value) in headers {
                resp.headers_mut()
                    .insert(name, value.parse().expect("header value"));
            }
            resp
        }
        Reply::Hang => std::future::pending::<Response>().await,
        Reply::After(notify, status, body) => {
            notify.notified().await;
            let status = StatusCode::from_u16(status).expect("valid test status");
            (status, axum::Json(body)).into_response()
        }
    }
}

async fn serve(reply: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> TestServer {
    let state = Arc::new(ServerState {
        hits: AtomicUsize::new(0),
        requests: Mutex::new(Vec::new()),
        reply: Box::new(reply),
    });
    let app = Router::new().fallback(handle).with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    TestServer {
        url: format!("http://{addr}"),
        state,
    }
}

/// An address nothing listens on: connecting is refused.
async fn dead_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

fn ok(body: Value) -> Reply {
    Reply::Json(200, body, vec![])
}

fn err(status: u16, code: &str) -> Reply {
    Reply::Json(
        status,
        json!({"error": {"code": code, "message": format!("test {code}")}}),
        vec![],
    )
}

/// A client without sessions: the request loop as such.
fn client(endpoints: Vec<String>) -> Client {
    Client::builder(endpoints)
        .request_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .exactly_once(false)
        .build()
        .expect("valid test client")
}

fn kv_json(key: &str, value: &str) -> Value {
    json!({"key": key, "value": value, "create_revision": 7, "mod_revision": 43, "version": 3})
}

#[tokio::test]
async fn sends_the_contract_shapes() {
    let server = serve(|r| match (r.method.as_str(), r.uri.as_str()) {
        ("PUT", _) => ok(json!({"revision": 43, "prev_kv": kv_json("/services/a b", "old")})),
        ("GET", u) if u.contains("prefix=true") => ok(
            json!({"revision": 43, "kvs": [kv_json("app/x", "1"), kv_json("app/y", "2")], "more": true}),
        ),
        ("GET", "/v1/status") => ok(json!({
            "node_id": 1, "leader": 1, "term": 3, "revision": 45, "compact_revision": 0,
            "state_hash": "ab", "raft": {"last_log_index": 9, "committed": 9, "applied": 9,
            "state": "Leader"}, "members": []})),
        ("GET", _) => ok(json!({"revision": 43, "kv": kv_json("/services/a b", "green")})),
        ("DELETE", _) => ok(json!({"revision": 44, "deleted": 5})),
        _ => err(400, "invalid_request"),
    })
    .await;
    let c = client(vec![server.url.clone()]);

    let put = c
        .put_with("/services/a b", "new", PutOptions { prev_kv: true })
        .await
        .expect("put");
    assert_eq!(put.revision, 43);
    assert_eq!(put.prev_kv.map(|kv| kv.value), Some(b"old".to_vec()));

    let get = c
        .get_with(
            "/services/a b",
            ReadOptions {
                consistency: crate::Consistency::Serializable,
                revision: Some(5),
            },
        )
        .await
        .expect("get");
    assert_eq!(get.kv.map(|kv| kv.value), Some(b"green".to_vec()));

    let range = c
        .range(
            "app/",
            RangeOptions {
                limit: Some(10),
                ..RangeOptions::default()
            },
        )
        .await
        .expect("range");
    assert_eq!((range.kvs.len(), range.more), (2, true));
    c.range("", RangeOptions::default())
        .await
        .expect("range all");

    let del = c.delete_prefix("app/").await.expect("delete");
    assert_eq!((del.revision, del.deleted), (44, 5));
    c.delete("app/x").await.expect("delete one");

    let status = c.status().await.expect("status");
    assert_eq!((status.node_id, status.leader), (1, Some(1)));

    let seen: Vec<(String, String)> = server
        .requests()
        .into_iter()
        .map(|r| (r.method.to_string(), r.uri))
        .collect();
    let expect = |m: &str, u: &str| (m.to_owned(), u.to_owned());
    assert_eq!(
        seen,
        vec![
            expect("PUT", "/v1/kv//services/a%20b?prev_kv=true"),
            expect(
                "GET",
                "/v1/kv//services/a%20b?consistency=serializable&revision=5"
            ),
            expect(
                "GET",
                "/v1/kv/app/?prefix=true&limit=10&consistency=linearizable"
            ),
            expect("GET", "/v1/kv/?prefix=true&consistency=linearizable"),
            expect("DELETE", "/v1/kv/app/?prefix=true"),
            expect("DELETE", "/v1/kv/app/x"),
            expect("GET", "/v1/status"),
        ]
    );
    assert_eq!(server.requests()[0].body, b"new".to_vec());
}

#[tokio::test]
async fn missing_key_is_none_with_revision() {
    let server = serve(|_| {
        Reply::Json(
            404,
            json!({"error": {"code": "key_not_found", "message": "no such key"}, "revision": 43}),
            vec![],
        )
    })
    .await;
    let got = client(vec![server.url.clone()])
        .get("nope")
        .await
        .expect("404 is not an error");
    assert_eq!(
        got,
        GetResponse {
            revision: 43,
            kv: None
        }
    );
}

#[tokio::test]
async fn txn_and_cas_bodies() {
    let server = serve(|r| {
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if body["compare"][0]["target"] == "version" && body["compare"][0]["op"] == "=" {
            ok(json!({"succeeded": false, "revision": 50,
                      "responses": [{"get": {"kvs": [kv_json("k", "taken")]}}]}))
        } else {
            ok(json!({"succeeded": true, "revision": 51, "responses": [{"put": {"revision": 51}}]}))
        }
    })
    .await;
    let c = client(vec![server.url.clone()]);

    let cas = c.compare_and_swap("k", None, "mine").await.expect("cas");
    assert!(!cas.succeeded);
    assert_eq!(
        cas.current.and_then(|kv| kv.value_str().map(str::to_owned)),
        Some("taken".to_owned())
    );

    let txn = Txn::new()
        .when(vec![Compare::mod_revision("k", CompareOp::Less, 60)])
        .and_then(vec![TxnOp::put("k", "v")]);
    let resp = c.txn(txn).await.expect("txn");
    assert!(resp.succeeded);
    assert_eq!(resp.revision, 51);

    let reqs = server.requests();
    assert!(reqs
        .iter()
        .all(|r| r.method == Method::POST && r.uri == "/v1/txn"));
    let sent: Value = serde_json::from_slice(&reqs[1].body).expect("JSON body");
    assert_eq!(
        sent,
        json!({"compare": [{"key": "k", "target": "mod_revision", "op": "<", "mod_revision": 60}],
               "success": [{"put": {"key": "k", "value": "v"}}], "failure": []})
    );
}

#[tokio::test]
async fn fails_over_when_a_node_refuses_connections() {
    let live = serve(|_| ok(json!({"revision": 43}))).await;
    let c = client(vec![dead_endpoint().await, live.url.clone()]);
    // A write that could not connect was never sent, so it may go elsewhere.
    let put = c.put("k", "v").await.expect("failover put");
    assert_eq!(put.revision, 43);
    assert_eq!(live.hits(), 1);
    assert_eq!(c.preferred_endpoint(), live.url);
}

#[tokio::test]
async fn moves_past_a_node_removed_from_the_cluster() {
    let live = serve(|_| ok(json!({"revision": 43}))).await;
    let removed = serve(|_| err(410, "removed")).await;
    let c = client(vec![removed.url.clone(), live.url.clone()]);
    // The removed node applied nothing: the write goes to the next node.
    let put = c.put("k", "v").await.expect("put past the removed node");
    assert_eq!(put.revision, 43);
    assert_eq!((removed.hits(), live.hits()), (1, 1));
    assert_eq!(c.preferred_endpoint(), live.url);
    // Alone, it is an error that says so, after the retry budget.
    let c = client(vec![removed.url.clone()]);
    assert!(matches!(
        c.put("k", "v").await,
        Err(Error::Api { status: 410, ref code, .. }) if code == "removed"
    ));
}

#[tokio::test]
async fn a_replica_bootstrap_passes_over_a_removed_node_at_once() {
    let removed = serve(|_| err(410, "removed")).await;
    let live = serve(|_| ok(json!({"revision": 7, "kvs": [kv_json("app/x", "1")]}))).await;
    let c = client(vec![removed.url.clone(), live.url.clone()]);
    let snapshot = crate::replica::sync::bootstrap(&c.inner, "app/", 0, 0).await;
    assert_eq!(snapshot.ok().map(|s| s.revision), Some(7));
    // One request to the removed node: no serializable read there after
    // the linearizable one was refused.
    assert_eq!((removed.hits(), live.hits()), (1, 1));
}

#[tokio::test]
async fn follows_the_leader_hint_on_503() {
    let leader = serve(|_| ok(json!({"revision": 43}))).await;
    let bystander = serve(|_| ok(json!({"revision": 43}))).await;
    let leader_url = leader.url.clone();
    let follower = serve(move |_| {
        Reply::Json(
            503,
            json!({"error": {"code": "no_leader", "message": "forwarding failed"}}),
            vec![
                ("x-ballast-leader", leader_url.clone()),
                ("retry-after", "1".to_owned()),
            ],
        )
    })
    .await;
    let c = client(vec![
        follower.url.clone(),
        bystander.url.clone(),
        leader.url.clone(),
    ]);
    c.put("k", "v").await.expect("redirected put");
    assert_eq!(
        (follower.hits(), bystander.hits(), leader.hits()),
        (1, 0, 1)
    );
    assert_eq!(c.preferred_endpoint(), leader.url);
}

#[tokio::test]
async fn leader_hint_in_the_error_body() {
    let leader = serve(|_| ok(json!({"revision": 43}))).await;
    let addr = leader.url.trim_start_matches("http://").to_owned();
    let follower = serve(move |_| {
        Reply::Json(
            503,
            json!({"error": {"code": "not_ready", "message": "m",
                             "leader": {"id": 2, "client_addr": addr.clone()}}}),
            vec![],
        )
    })
    .await;
    let other = serve(|_| ok(json!({"revision": 1}))).await;
    let c = client(vec![
        follower.url.clone(),
        other.url.clone(),
        leader.url.clone(),
    ]);
    c.put("k", "v").await.expect("redirected put");
    assert_eq!((other.hits(), leader.hits()), (0, 1));
}

#[tokio::test]
async fn unanswered_txn_is_indeterminate_and_sent_once() {
    let hang = serve(|_| Reply::Hang).await;
    let other = serve(|_| ok(json!({"succeeded": true, "revision": 1, "responses": []}))).await;
    let c = || {
        Client::builder(vec![hang.url.clone(), other.url.clone()])
            .request_timeout(Duration::from_millis(200))
            .exactly_once(false)
            .build()
            .expect("client")
    };
    let txn = Txn::new().and_then(vec![TxnOp::put("k", "v")]);
    let result = c().txn(txn).await;
    assert!(
        matches!(result, Err(Error::Indeterminate { .. })),
        "{result:?}"
    );
    let cas = c().compare_and_swap("k", Some(b"v"), "w").await;
    assert!(matches!(cas, Err(Error::Indeterminate { .. })), "{cas:?}");
    let client = c();
    let put = client.put("k", "v").await;
    assert!(matches!(put, Err(Error::Indeterminate { .. })), "{put:?}");
    assert_eq!((hang.hits(), other.hits()), (3, 0));
    // The sick node is no longer preferred for the next call.
    assert_eq!(client.preferred_endpoint(), other.url);
}

#[tokio::test]
async fn server_side_timeout_and_500_are_indeterminate_for_writes() {
    for (status, code) in [(503, "timeout"), (500, "internal"), (504, "gateway")] {
        let sick = serve(move |_| err(status, code)).await;
        let other = serve(|_| ok(json!({"revision": 1}))).await;
        let c = || client(vec![sick.url.clone(), other.url.clone()]);
        let put = c().put("k", "v").await;
        assert!(
            matches!(put, Err(Error::Indeterminate { .. })),
            "{status}: {put:?}"
        );
        let del = c().delete("k").await;
        assert!(
            matches!(del, Err(Error::Indeterminate { .. })),
            "{status}: {del:?}"
        );
        assert_eq!((sick.hits(), other.hits()), (2, 0), "{status}");
    }
}

#[tokio::test]
async fn reads_retry_past_timeouts_and_5xx() {
    let hang = serve(|_| Reply::Hang).await;
    let sick = serve(|_| err(500, "internal")).await;
    let live = serve(|_| ok(json!({"revision": 43, "kv": kv_json("k", "v")}))).await;
    let c = Client::builder(vec![hang.url.clone(), sick.url.clone(), live.url.clone()])
        .request_timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let got = c.get("k").await.expect("read retried");
    assert_eq!(got.revision, 43);
    assert_eq!((hang.hits(), sick.hits(), live.hits()), (1, 1, 1));
}

#[tokio::test]
async fn no_leader_everywhere_exhausts_the_budget() {
    let a = serve(|_| err(503, "no_leader")).await;
    let b = serve(|_| err(503, "no_leader")).await;
    let c = Client::builder(vec![a.url.clone(), b.url.clone()])
        .max_attempts(4)
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build()
        .expect("client");
    let put = c.put("k", "v").await;
    assert!(
        matches!(&put, Err(Error::Api { status: 503, code, .. }) if code == "no_leader"),
        "{put:?}"
    );
    assert!(put
        .as_ref()
        .err()
        .is_some_and(Error::is_definitely_not_applied));
    assert_eq!(a.hits() + b.hits(), 4);
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let a = serve(|_| err(400, "invalid_key")).await;
    let b = serve(|_| ok(json!({"revision": 1}))).await;
    let c = client(vec![a.url.clone(), b.url.clone()]);
    let put = c.put("k", "v").await;
    assert!(
        matches!(&put, Err(Error::Api { status: 400, code, revision: Some(42), .. }) if code == "invalid_key"),
        "{put:?}"
    );
    let get = c.get("k").await;
    assert!(
        matches!(get, Err(Error::Api { status: 400, .. })),
        "{get:?}"
    );
    assert_eq!((a.hits(), b.hits()), (2, 0));
}

#[tokio::test]
async fn a_quota_refusal_is_final_and_not_applied() {
    let a = serve(|_| err(507, "quota_exceeded")).await;
    let b = serve(|_| ok(json!({"revision": 1}))).await;
    let c = client(vec![a.url.clone(), b.url.clone()]);
    let put = c.put("k", "v").await;
    assert!(
        matches!(&put, Err(Error::Api { status: 507, code, .. }) if code == "quota_exceeded"),
        "{put:?}"
    );
    assert!(put
        .as_ref()
        .err()
        .is_some_and(Error::is_definitely_not_applied));
    assert_eq!(b.hits(), 0, "a quota refusal is not retried elsewhere");
}

#[tokio::test]
async fn unreachable_cluster_is_a_transport_error() {
    let c = client(vec![dead_endpoint().await, dead_endpoint().await]);
    let put = c.put("k", "v").await;
    assert!(matches!(put, Err(Error::Transport { .. })), "{put:?}");
    assert!(put
        .as_ref()
        .err()
        .is_some_and(Error::is_definitely_not_applied));
    let get = c.get("k").await;
    assert!(matches!(get, Err(Error::Transport { .. })), "{get:?}");
}

#[tokio::test]
async fn undecodable_success_is_a_decode_error() {
    let s = serve(|_| ok(json!({"kvs": "not a list"}))).await;
    let r = client(vec![s.url.clone()])
        .range("a", RangeOptions::default())
        .await;
    assert!(matches!(r, Err(Error::Decode(_))), "{r:?}");
}

#[tokio::test]
async fn invalid_arguments_are_refused_locally() {
    assert!(matches!(
        Client::new(vec![]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Client::new(vec!["https://127.0.0.1:1".to_owned()]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        Client::builder(vec!["127.0.0.1:1".to_owned()])
            .max_attempts(0)
            .build(),
        Err(Error::InvalidArgument(_))
    ));
    let c = client(vec![dead_endpoint().await]);
    assert!(matches!(c.get("").await, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        c.put("", "v").await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        c.delete("a/../b").await,
        Err(Error::InvalidArgument(_))
    ));
}

/// A client with sessions (the default), quick to give up on an attempt.
fn session_client(endpoints: Vec<String>) -> Client {
    Client::builder(endpoints)
        .request_timeout(Duration::from_millis(300))
        .connect_timeout(Duration::from_millis(300))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid test client")
}

/// The answer to `POST /v1/sessions`: session `session`.
fn registered(r: &Recorded, session: u64) -> Reply {
    let client: Value = serde_json::from_slice(&r.body).expect("registration body");
    ok(json!({"client": client["client"], "session": session}))
}

fn is_registration(r: &Recorded) -> bool {
    r.method == Method::POST && r.uri == "/v1/sessions"
}

/// The `name=value` query parameter of `uri`.
fn param<'a>(uri: &'a str, name: &str) -> Option<&'a str> {
    let query = uri.split_once('?')?.1;
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test]
async fn writes_carry_the_session_after_one_registration() {
    let server = serve(|r| match (r.method.as_str(), r.uri.as_str()) {
        ("POST", "/v1/sessions") => registered(r, 7),
        ("POST", "/v1/txn") => ok(json!({"succeeded": true, "revision": 9, "responses": []})),
        _ => ok(json!({"revision": 9, "deleted": 1})),
    })
    .await;
    let c = session_client(vec![server.url.clone()]);
    c.put("k", "v").await.expect("put");
    c.delete("k").await.expect("delete");
    c.txn(Txn::new().and_then(vec![TxnOp::put("k", "w")]))
        .await
        .expect("txn");
    let reqs = server.requests();
    assert_eq!(reqs.iter().filter(|r| is_registration(r)).count(), 1);
    let client_id: Value = serde_json::from_slice(&reqs[0].body).expect("body");
    let client_id = client_id["client"].as_str().expect("client id").to_owned();
    assert_eq!(client_id.len(), 32);
    for (r, seq) in reqs[1..3].iter().zip(1..) {
        assert_eq!(
            param(&r.uri, "client"),
            Some(client_id.as_str()),
            "{}",
            r.uri
        );
        assert_eq!(param(&r.uri, "session"), Some("7"));
        assert_eq!(param(&r.uri, "seq"), Some(seq.to_string().as_str()));
        // The earlier writes were answered: nothing below seq waits.
        assert_eq!(param(&r.uri, "acked_below"), Some(seq.to_string().as_str()));
    }
    let body: Value = serde_json::from_slice(&reqs[3].body).expect("txn body");
    assert_eq!(
        body["session"],
        json!({"client": client_id, "session": 7, "seq": 3, "acked_below": 3})
    );
    // Another client has another id.
    let other = session_client(vec![server.url.clone()]);
    other.put("k", "v").await.expect("put");
    let last = server.requests();
    let other_id: Value = serde_json::from_slice(&last[4].body).expect("body");
    assert_ne!(other_id["client"], client_id.as_str());
}

#[tokio::test]
async fn a_lost_answer_is_sent_again_with_the_same_sequence_number() {
    // Registers, then never answers a write.
    let hang = serve(|r| {
        if is_registration(r) {
            registered(r, 7)
        } else {
            Reply::Hang
        }
    })
    .await;
    let live = serve(|_| ok(json!({"revision": 44, "succeeded": true, "responses": []}))).await;
    let c = session_client(vec![hang.url.clone(), live.url.clone()]);
    let put = c.put("k", "v").await.expect("retried put");
    assert_eq!(put.revision, 44);
    let sent = live.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(param(&sent[0].uri, "seq"), Some("1"));
    assert_eq!(param(&sent[0].uri, "session"), Some("7"));
    // And a transaction, the same way.
    let txn = c.txn(Txn::new().and_then(vec![TxnOp::put("k", "w")]));
    assert!(txn.await.expect("retried txn").succeeded);
    assert_eq!(
        (hang.hits(), live.hits()),
        (2, 2),
        "one registration, one lost write"
    );
}

#[tokio::test]
async fn a_refused_retry_after_a_lost_answer_is_indeterminate() {
    let hang = serve(|r| {
        if is_registration(r) {
            registered(r, 7)
        } else {
            Reply::Hang
        }
    })
    .await;
    let refuser = serve(|_| err(410, "session_expired")).await;
    let c = session_client(vec![hang.url.clone(), refuser.url.clone()]);
    let put = c.put("k", "v").await;
    assert!(matches!(put, Err(Error::Indeterminate { .. })), "{put:?}");
}

#[tokio::test]
async fn lost_answers_until_the_budget_runs_out_are_indeterminate() {
    let hang = serve(|r| {
        if is_registration(r) {
            registered(r, 7)
        } else {
            Reply::Hang
        }
    })
    .await;
    let c = Client::builder(vec![hang.url.clone()])
        .request_timeout(Duration::from_millis(100))
        .max_attempts(3)
        .backoff(Duration::from_millis(1), Duration::from_millis(2))
        .build()
        .expect("client");
    let put = c.put("k", "v").await;
    assert!(matches!(put, Err(Error::Indeterminate { .. })), "{put:?}");
    assert_eq!(hang.hits(), 1 + 3, "a registration and three attempts");
}

#[tokio::test]
async fn a_refused_first_attempt_registers_again_and_goes_as_a_new_write() {
    let registrations = Arc::new(AtomicUsize::new(0));
    let count = registrations.clone();
    let server = serve(move |r| {
        if is_registration(r) {
            let n = count.fetch_add(1, Ordering::SeqCst) as u64;
            return registered(r, 7 + n);
        }
        if param(&r.uri, "session") == Some("7") {
            Reply::Json(
                410,
                json!({"error": {"code": "session_expired", "reason": "unknown_session", "message": "m"}}),
                vec![],
            )
        } else {
            ok(json!({"revision": 50}))
        }
    })
    .await;
    let c = session_client(vec![server.url.clone()]);
    let put = c.put("k", "v").await.expect("sent again in a new session");
    assert_eq!(put.revision, 50);
    assert_eq!(registrations.load(Ordering::SeqCst), 2);
    let last = server.requests().pop().expect("requests");
    assert_eq!(param(&last.uri, "session"), Some("8"));
    assert_eq!(param(&last.uri, "seq"), Some("2"), "a new sequence number");
}

#[tokio::test]
async fn a_cluster_without_sessions_gets_plain_writes() {
    let server = serve(|r| {
        if is_registration(r) {
            err(404, "not_found")
        } else {
            ok(json!({"revision": 3}))
        }
    })
    .await;
    let c = session_client(vec![server.url.clone()]);
    c.put("k", "v").await.expect("put");
    c.put("k", "w").await.expect("put");
    let reqs = server.requests();
    assert_eq!(reqs.iter().filter(|r| is_registration(r)).count(), 1);
    assert!(reqs
        .iter()
        .filter(|r| r.method == Method::PUT)
        .all(|r| param(&r.uri, "client").is_none()));
}

/// A write whose answer was lost stays in the session it was sent under:
/// when another write of the client has registered a new session meanwhile,
/// the retry must not go as a new write of the new session (it would be
/// applied again there); the old session refuses it, and it is
/// indeterminate.
#[tokio::test]
async fn a_lost_write_is_retried_only_in_its_own_session() {
    let registrations = Arc::new(AtomicUsize::new(0));
    let held = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let second_done = Arc::new(tokio::sync::Notify::new());
    let (count, hold, done) = (registrations.clone(), held.clone(), second_done.clone());
    let server = serve(move |r| {
        if is_registration(r) {
            let n = count.fetch_add(1, Ordering::SeqCst) as u64;
            return registered(r, 7 + n);
        }
        let first = r.uri.starts_with("/v1/kv/first");
        match param(&r.uri, "session") {
            // The first write's first attempt: answered `503 timeout` (its
            // outcome unknown) only after the second write succeeded in a
            // new session.
            Some("7") if first && !hold.swap(true, Ordering::SeqCst) => Reply::After(
                done.clone(),
                503,
                json!({"error": {"code": "timeout", "message": "lost"}}),
            ),
            // Session 7 is gone.
            Some("7") => err(410, "session_expired"),
            _ => {
                if !first {
                    done.notify_one();
                }
                ok(json!({"revision": 60}))
            }
        }
    })
    .await;
    // Attempts wait long enough for the held answer.
    let c = Client::builder(vec![server.url.clone()])
        .request_timeout(Duration::from_secs(20))
        .backoff(Duration::from_millis(1), Duration::from_millis(5))
        .build()
        .expect("valid test client");
    let first = {
        let c = c.clone();
        tokio::spawn(async move { c.put("first", "v").await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !held.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first write was not sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Refused in session 7, the second write registers session 8.
    c.put("second", "v").await.expect("second write");
    assert_eq!(registrations.load(Ordering::SeqCst), 2);
    let first = first.await.expect("task");
    assert!(
        matches!(first, Err(Error::Indeterminate { .. })),
        "{first:?}"
    );
    assert!(
        !server
            .requests()
            .iter()
            .any(|r| r.uri.starts_with("/v1/kv/first") && param(&r.uri, "session") == Some("8")),
        "the lost write was sent again in the new session"
    );
}

#[tokio::test]
async fn a_token_goes_on_every_request_and_never_into_debug_output() {
    let server = serve(|r| match r.uri.as_str() {
        "/v1/auth/tokens" => ok(json!({
            "token": "bal_new", "id": "ab", "role": "app", "created_ms": 1})),
        u if u.starts_with("/v1/kv") => ok(json!({"revision": 3, "deleted": 0})),
        _ => err(400, "invalid_request"),
    })
    .await;
    let builder = Client::builder(vec![server.url.clone()])
        .exactly_once(false)
        .token("bal_secret");
    assert!(!format!("{builder:?}").contains("bal_secret"));
    let c = builder.build().expect("client");
    assert!(!format!("{c:?}").contains("bal_secret"));
    c.delete("k").await.expect("delete");
    let created = c.create_token("app", None).await.expect("create");
    assert_eq!(created.token, "bal_new");
    assert!(!format!("{created:?}").contains("bal_new"));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    for r in requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some("Bearer bal_secret"),
            "{}",
            r.uri
        );
    }
    let without = client(vec![server.url.clone()]);
    without.delete("k").await.expect("delete");
    assert_eq!(server.requests()[2].authorization, None);
}

/// A `GET /v1/members` answer naming these (id, client address, role).
fn members_json(members: &[(u64, &str, &str)]) -> Value {
    let members: Vec<Value> = members
        .iter()
        .map(|(id, client_addr, role)| {
            json!({
                "id": id, "client_addr": client_addr, "peer_addr": format!("p{id}:2380"),
                "role": role, "match_index": 5, "lag": 0, "last_ack_ms": 1, "healthy": true,
            })
        })
        .collect();
    json!({"leader": 2, "term": 3, "last_log_index": 5, "membership_log_index": 4, "members": members})
}

/// A `GET /v1/endpoints` answer naming these voters (id, client address).
fn endpoints_json(voters: &[(u64, &str)]) -> Value {
    let voters: Vec<Value> = voters
        .iter()
        .map(|(id, client_addr)| json!({"id": id, "client_addr": client_addr}))
        .collect();
    json!({"leader": 2, "membership_log_index": 4, "voters": voters})
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn sync_replaces_the_endpoints_with_the_voters() {
    let b = serve(|_| ok(json!({}))).await;
    let b_addr = host_port(&b.url);
    // The answering node lists itself: its address is known once it listens.
    let own: Arc<Mutex<String>> = Arc::default();
    let own_in = own.clone();
    let a = serve(move |r| {
        let a_addr = own_in.lock().map(|a| a.clone()).unwrap_or_default();
        if r.uri == "/v1/endpoints" {
            ok(endpoints_json(&[
                (2, &b_addr),
                (1, &a_addr),
                (4, "0.0.0.0:2379"),
            ]))
        } else {
            ok(json!({}))
        }
    })
    .await;
    if let Ok(mut own) = own.lock() {
        *own = host_port(&a.url);
    }
    let c = client(vec![a.url.clone()]);
    let synced = c.sync_endpoints().await.expect("sync");
    // In the order listed; the bind address left out.
    let a_url = a.url.clone();
    assert_eq!(synced, vec![b.url.clone(), a_url.clone()]);
    assert_eq!(c.endpoints(), synced);
    // The endpoint the client preferred is still a voter: still preferred.
    assert_eq!(c.preferred_endpoint(), a_url);
    let again = c.sync_endpoints().await.expect("sync again");
    assert_eq!(again, synced);
}

#[tokio::test]
async fn sync_reads_the_member_list_from_a_node_without_the_endpoints_route() {
    let b = serve(|_| ok(json!({}))).await;
    let b_addr = host_port(&b.url);
    // A node of an earlier build: `/v1/endpoints` is an unknown route.
    let a = serve(move |r| match r.uri.as_str() {
        "/v1/endpoints" => err(404, "not_found"),
        "/v1/members" => ok(members_json(&[
            (2, &b_addr, "leader"),
            (3, "127.0.0.1:9", "learner"),
        ])),
        _ => ok(json!({})),
    })
    .await;
    let c = client(vec![a.url.clone()]);
    // The voters only: the learner left out.
    assert_eq!(c.sync_endpoints().await.expect("sync"), vec![b.url.clone()]);
    let uris: Vec<String> = a.requests().into_iter().map(|r| r.uri).collect();
    assert_eq!(uris, vec!["/v1/endpoints", "/v1/members"]);
}

#[tokio::test]
async fn a_sync_without_a_usable_voter_keeps_the_endpoints() {
    let no_voter = serve(|r| {
        if r.uri == "/v1/endpoints" {
            ok(endpoints_json(&[(2, "0.0.0.0:2379"), (3, "[::]:2379")]))
        } else {
            ok(json!({}))
        }
    })
    .await;
    let c = client(vec![no_voter.url.clone()]);
    assert!(matches!(c.sync_endpoints().await, Err(Error::Decode(_))));
    assert_eq!(c.endpoints(), vec![no_voter.url.clone()]);

    let refused = serve(|_| err(403, "permission_denied")).await;
    let c = client(vec![refused.url.clone()]);
    assert!(matches!(
        c.sync_endpoints().await,
        Err(Error::Api { status: 403, .. })
    ));
    assert_eq!(c.endpoints(), vec![refused.url.clone()]);
}

#[tokio::test]
async fn auto_sync_follows_the_members_and_stops_with_the_client() {
    let other = serve(|_| ok(json!({}))).await;
    let other_addr = host_port(&other.url);
    // The seed answers that the other node is the only voter.
    let seed = serve(move |r| {
        if r.uri == "/v1/endpoints" {
            ok(endpoints_json(&[(2, &other_addr)]))
        } else {
            ok(json!({}))
        }
    })
    .await;
    let c = Client::builder(vec![seed.url.clone()])
        .exactly_once(false)
        .auto_sync_interval(Duration::from_secs(1))
        .build()
        .expect("valid client");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while c.endpoints() != vec![other.url.clone()] {
        assert!(
            std::time::Instant::now() < deadline,
            "endpoints never synced: {:?}",
            c.endpoints()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.preferred_endpoint(), other.url);
    let synced_at = seed.hits();
    assert!(synced_at >= 1);

    // The next syncs go to the new list; once the client is dropped, none.
    drop(c);
    let at_drop = other.hits();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        other.hits() <= at_drop + 1,
        "the sync task outlived the client: {at_drop} then {}",
        other.hits()
    );
    assert_eq!(
        seed.hits(),
        synced_at,
        "the old endpoint is no longer asked"
    );
}

#[tokio::test]
async fn auto_sync_refuses_a_short_interval() {
    assert!(matches!(
        Client::builder(vec!["127.0.0.1:1".to_owned()])
            .auto_sync_interval(Duration::from_millis(100))
            .build(),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn auto_sync_needs_a_runtime() {
    assert!(matches!(
        Client::builder(vec!["127.0.0.1:1".to_owned()])
            .auto_sync_interval(Duration::from_secs(30))
            .build(),
        Err(Error::InvalidArgument(_))
    ));
    // Without auto sync, building needs no runtime.
    assert!(Client::builder(vec!["127.0.0.1:1".to_owned()])
        .build()
        .is_ok());
}
