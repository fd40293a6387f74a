//! Admission control through the router: bootstraps and watch catch-ups
//! beyond the node's bounds get `429` with `Retry-After`, and the bounds
//! never touch writes, linearizable reads or live watches.

use axum::response::Response;

use super::*;

impl Harness {
    /// Sends one request and returns the response with its body unread:
    /// whatever the body holds (an admission permit) stays held.
    async fn open(&self, uri: &str) -> Response {
        let req = Request::builder()
            .method(Method::GET)
            .uri(uri)
            .body(Body::empty())
            .expect("valid request");
        self.router
            .clone()
            .oneshot(req)
            .await
            .expect("router is infallible")
    }

    /// Waits until `gauge` reads `value`.
    async fn wait_gauge(&self, gauge: impl Fn(&crate::metrics::Metrics) -> i64, value: i64) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let now = gauge(self.running.hub.metrics());
            if now == value {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gauge at {now}, expected {value}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn assert_busy(reply: &Reply, code: &str) {
    reply.assert_error(StatusCode::TOO_MANY_REQUESTS, code);
    let after = reply
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    assert!(after.is_some_and(|s| s >= 1), "Retry-After: {after:?}");
}

const BOOTSTRAP: &str = "/v1/kv/boot/?prefix=true&bootstrap=true";

#[tokio::test]
async fn bootstraps_beyond_the_bound_get_429_and_the_rest_keeps_priority() {
    const N: usize = 3;
    const K: usize = 4;
    // Without the snapshot buffer every bootstrap scans, and holds a slot.
    let h = Harness::start(|c| {
        c.max_bootstraps = N;
        c.bootstrap_buffer_bytes = 0;
    })
    .await;
    for i in 0..20 {
        h.put_ok(&format!("/v1/kv/boot/{i:02}"), "v").await;
    }

    // N bootstraps whose bodies nobody reads yet hold the N slots...
    let mut held = Vec::new();
    for _ in 0..N {
        let r = h.open(BOOTSTRAP).await;
        assert_eq!(r.status(), StatusCode::OK);
        held.push(r);
    }
    // ...so the next K are refused, at once, with Retry-After.
    for _ in 0..K {
        assert_busy(&h.get(BOOTSTRAP).await, "too_many_bootstraps");
    }
    assert_eq!(h.running.hub.metrics().bootstraps_refused.get(), K as u64);
    assert_eq!(h.running.hub.metrics().bootstraps_running.get(), N as i64);

    // Writes, linearizable reads, plain prefix reads and watches go on.
    h.put_ok("/v1/kv/boot/new", "w").await;
    let one = h.get("/v1/kv/boot/new").await;
    assert_eq!(one.status, StatusCode::OK);
    let plain = h.get("/v1/kv/boot/?prefix=true").await;
    assert_eq!(plain.status, StatusCode::OK);
    assert_eq!(plain.json()["kvs"].as_array().map(Vec::len), Some(21));
    let live = h.open("/v1/watch/boot/?prefix=true").await;
    assert_eq!(live.status(), StatusCode::OK);

    // A held body read to its end frees its slot; so does one dropped
    // unread (the client went away).
    let first = held.remove(0);
    let body = first.into_body().collect().await.expect("body").to_bytes();
    let doc: Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(doc["kvs"].as_array().map(Vec::len), Some(20));
    h.wait_gauge(|m| m.bootstraps_running.get(), N as i64 - 1)
        .await;
    drop(held.remove(0));
    h.wait_gauge(|m| m.bootstraps_running.get(), N as i64 - 2)
        .await;
    let again = h.get(BOOTSTRAP).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["kvs"].as_array().map(Vec::len), Some(21));

    // `bootstrap` only makes sense for a prefix read.
    h.get("/v1/kv/boot/01?bootstrap=true")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    drop(held);
    drop(live);
    h.shutdown().await;
}

/// The slots bound the bootstraps that scan: one the buffer answers with
/// its unchanged copy takes none, so a fleet bootstrapping one prefix is not
/// sent away and back while the bytes it needs are already encoded.
#[tokio::test]
async fn bootstraps_the_buffer_answers_take_no_slot() {
    let h = Harness::start(|c| c.max_bootstraps = 1).await;
    for i in 0..20 {
        h.put_ok(&format!("/v1/kv/boot/{i:02}"), "v").await;
    }
    let metrics = || h.running.hub.metrics();
    // The first bootstrap of the prefix scans it into the buffer.
    let first = h.get(BOOTSTRAP).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(metrics().bootstrap_buffer_scans.get(), 1);
    h.wait_gauge(|m| m.bootstraps_running.get(), 0).await;

    // The one slot is held by a bootstrap of another prefix (it scans)...
    h.put_ok("/v1/kv/other/a", "v").await;
    let held = h.open("/v1/kv/other/?prefix=true&bootstrap=true").await;
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(metrics().bootstraps_running.get(), 1);
    // ...and bootstraps of the buffered prefix are still answered, from
    // the buffer, without a slot.
    for _ in 0..5 {
        let r = h.get(BOOTSTRAP).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["kvs"].as_array().map(Vec::len), Some(20));
    }
    assert_eq!(metrics().bootstrap_buffer_hits.get(), 5);
    assert_eq!(metrics().bootstraps_refused.get(), 0);

    // A change under the prefix makes the copy stale: the next bootstrap
    // must scan, so it needs the slot, and is refused while it is held.
    h.put_ok("/v1/kv/boot/new", "w").await;
    assert_busy(&h.get(BOOTSTRAP).await, "too_many_bootstraps");
    assert_eq!(metrics().bootstraps_refused.get(), 1);
    drop(held);
    h.wait_gauge(|m| m.bootstraps_running.get(), 0).await;
    let again = h.get(BOOTSTRAP).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["kvs"].as_array().map(Vec::len), Some(21));
    assert_eq!(metrics().bootstrap_buffer_scans.get(), 3);
    h.shutdown().await;
}

/// Nor does a bootstrap that arrives while another builds its prefix's
/// copy: it waits for that build and is answered from it, so a fleet that
/// arrives at once before the first copy exists is not sent away either.
#[tokio::test]
async fn bootstraps_waiting_for_a_build_take_no_slot() {
    let h = Harness::start(|c| c.max_bootstraps = 1).await;
    for i in 0..20 {
        h.put_ok(&format!("/v1/kv/boot/{i:02}"), "v").await;
    }
    let metrics = || h.running.hub.metrics();
    // The one slot is held by a bootstrap of another prefix (it scans).
    h.put_ok("/v1/kv/other/a", "v").await;
    let held = h.open("/v1/kv/other/?prefix=true&bootstrap=true").await;
    assert_eq!(held.status(), StatusCode::OK);
    assert_eq!(metrics().bootstraps_running.get(), 1);

    // A build of `boot/` is under way (claimed, not finished): bootstraps
    // of the prefix arriving now wait for it instead of asking for a slot.
    let claim = h.buffer.claim("boot/").expect("no build under way yet");
    assert!(
        h.buffer.claim("boot/").is_none(),
        "the build is claimed once"
    );
    let waiting: Vec<_> = (0..5)
        .map(|_| {
            let router = h.router.clone();
            tokio::spawn(async move {
                let req = Request::builder()
                    .method(Method::GET)
                    .uri(BOOTSTRAP)
                    .body(Body::empty())
                    .expect("valid request");
                let resp = router.oneshot(req).await.expect("router is infallible");
                let status = resp.status();
                let body = resp.into_body().collect().await.expect("body").to_bytes();
                (status, body)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the bootstraps wait for the build under way"
    );
    assert_eq!(metrics().bootstraps_refused.get(), 0);

    // The build ends (the claimant scans the prefix into the buffer), and
    // every waiting bootstrap is answered with its copy.
    let need = h.running.node.applied().revision;
    let built = h
        .buffer
        .build(&h.running.node, "boot/", need, false, Some(claim))
        .await
        .expect("build")
        .expect("the prefix fits the buffer");
    assert_eq!(built.status(), StatusCode::OK);
    for w in waiting {
        let (status, body) = w.await.expect("bootstrap task");
        assert_eq!(status, StatusCode::OK, "{body:?}");
        let doc: Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(doc["kvs"].as_array().map(Vec::len), Some(20));
    }
    assert_eq!(metrics().bootstrap_buffer_scans.get(), 2, "one per prefix");
    assert_eq!(metrics().bootstrap_buffer_hits.get(), 5);
    assert_eq!(metrics().bootstraps_refused.get(), 0);
    drop(held);
    h.shutdown().await;
}

#[tokio::test]
async fn watch_catchups_beyond_the_bound_get_429_until_one_reaches_the_window() {
    let h = Harness::start(|c| {
        c.max_watch_catchups = 1;
        c.watch_window = 4;
    })
    .await;
    let mut last = 0;
    for i in 0..12 {
        last = h.put_ok(&format!("/v1/kv/cu/{i:02}"), "v").await;
    }
    let old = "/v1/watch/cu/?prefix=true&start_revision=2";

    // One stream replays history: it holds the only catch-up slot.
    let catching_up = h.open(old).await;
    assert_eq!(catching_up.status(), StatusCode::OK);
    assert_busy(&h.get(old).await, "too_many_catchups");
    assert_eq!(h.running.hub.metrics().catchups_refused.get(), 1);
    // A watch from now, or from a revision in the window (one applied
    // while the prefix is watched), is live delivery: never refused.
    let live = h.open("/v1/watch/cu/?prefix=true").await;
    assert_eq!(live.status(), StatusCode::OK);
    let more = h.put_ok("/v1/kv/cu/more", "w").await;
    assert!(more > last);
    let recent = h
        .open(&format!("/v1/watch/cu/?prefix=true&start_revision={more}"))
        .await;
    assert_eq!(recent.status(), StatusCode::OK);

    // Read the catching-up stream until it is past the window's start: its
    // slot is then free.
    let mut body = catching_up.into_body();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                seen.extend_from_slice(&data);
            }
        }
        seen
    });
    h.wait_gauge(|m| m.catchups_running.get(), 0).await;
    let second = h.open(old).await;
    assert_eq!(second.status(), StatusCode::OK);
    reader.abort();
    drop((second, live, recent));
    h.shutdown().await;
}
