//! The bootstrap snapshot buffer through the router: one scan serves every
//! bootstrap of a prefix until a change under it, answers are the plain
//! range document, and a prefix too large for the buffer is streamed.

use futures::future::join_all;

use super::*;

const BOOTSTRAP: &str = "/v1/kv/buf/?prefix=true&bootstrap=true";

fn scans(h: &Harness) -> u64 {
    h.running.hub.metrics().bootstrap_buffer_scans.get()
}

fn hits(h: &Harness) -> u64 {
    h.running.hub.metrics().bootstrap_buffer_hits.get()
}

/// `(revision, [(key, value, mod_revision)])` of a range document.
fn doc(reply: &Reply) -> (u64, Vec<(String, String, u64)>) {
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let v = reply.json();
    assert_eq!(v["more"], false, "{v}");
    let kvs = v["kvs"]
        .as_array()
        .expect("kvs")
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().expect("key").to_owned(),
                kv["value"].as_str().expect("value").to_owned(),
                kv["mod_revision"].as_u64().expect("mod_revision"),
            )
        })
        .collect();
    (v["revision"].as_u64().expect("revision"), kvs)
}

#[tokio::test]
async fn one_scan_serves_concurrent_bootstraps_until_the_prefix_changes() {
    let h = Harness::start(|_| {}).await;
    for i in 0..30 {
        h.put_ok(&format!("/v1/kv/buf/{i:02}"), format!("value-{i}"))
            .await;
    }
    let plain = doc(&h.get("/v1/kv/buf/?prefix=true").await);

    // Eight bootstraps at once: one scan, the same answer as a plain read.
    let replies = join_all((0..8).map(|_| h.get(BOOTSTRAP))).await;
    for reply in &replies {
        assert_eq!(doc(reply), plain);
    }
    assert_eq!(scans(&h), 1);
    assert_eq!(hits(&h), 7);

    // A write elsewhere: the entry rolls forward, no new scan, and the
    // answer says the new revision.
    let other = h.put_ok("/v1/kv/elsewhere", "x").await;
    let (revision, kvs) = doc(&h.get(BOOTSTRAP).await);
    assert!(revision >= other, "{revision} < {other}");
    assert_eq!(kvs, plain.1);
    assert_eq!(scans(&h), 1);

    // A write under the prefix invalidates it: the next bootstrap scans
    // again and sees the change.
    let changed = h.put_ok("/v1/kv/buf/05", "new").await;
    let (revision, kvs) = doc(&h.get(BOOTSTRAP).await);
    assert!(revision >= changed);
    assert!(
        kvs.contains(&("buf/05".to_owned(), "new".to_owned(), changed)),
        "{kvs:?}"
    );
    assert_eq!(kvs.len(), 30);
    assert_eq!(scans(&h), 2);
    let again = doc(&h.get(BOOTSTRAP).await);
    assert_eq!(again.1, kvs);
    assert_eq!(scans(&h), 2);
    h.shutdown().await;
}

#[tokio::test]
async fn a_prefix_too_large_for_the_buffer_or_no_buffer_is_streamed() {
    let h = Harness::start(|c| c.bootstrap_buffer_entry_bytes = 512).await;
    for i in 0..20 {
        h.put_ok(&format!("/v1/kv/buf/{i:02}"), "x".repeat(100))
            .await;
    }
    let plain = doc(&h.get("/v1/kv/buf/?prefix=true").await);
    assert_eq!(doc(&h.get(BOOTSTRAP).await), plain);
    assert_eq!(hits(&h), 0);
    // A small prefix still fits.
    h.put_ok("/v1/kv/tiny/a", "1").await;
    let tiny = "/v1/kv/tiny/?prefix=true&bootstrap=true";
    assert_eq!(doc(&h.get(tiny).await).1.len(), 1);
    assert_eq!(doc(&h.get(tiny).await).1.len(), 1);
    assert_eq!(hits(&h), 1);
    h.shutdown().await;

    let h = Harness::start(|c| c.bootstrap_buffer_bytes = 0).await;
    h.put_ok("/v1/kv/buf/a", "1").await;
    assert_eq!(doc(&h.get(BOOTSTRAP).await).1.len(), 1);
    assert_eq!(scans(&h) + hits(&h), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn a_large_entry_goes_zstd_encoded_to_clients_that_accept_it() {
    let h = Harness::start(|_| {}).await;
    let value = "z".repeat(1024);
    for i in 0..100 {
        h.put_ok(&format!("/v1/kv/buf/{i:03}"), value.clone()).await;
    }
    let plain = h.get("/v1/kv/buf/?prefix=true").await;
    assert_eq!(plain.status, StatusCode::OK);
    let expected = doc(&plain);

    let zstd = |accept: &str| {
        Request::builder()
            .method(Method::GET)
            .uri(BOOTSTRAP)
            .header(header::ACCEPT_ENCODING, accept)
            .body(Body::empty())
            .expect("valid request")
    };
    for round in 0..2 {
        // Built on the first round, from the buffer on the second.
        let reply = h.send(zstd("gzip, zstd")).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(
            reply
                .headers
                .get(header::CONTENT_ENCODING)
                .map(|v| v.as_bytes()),
            Some(&b"zstd"[..]),
            "round {round}"
        );
        assert!(
            reply.body.len() < plain.body.len() / 4,
            "{} bytes",
            reply.body.len()
        );
        let decoded = zstd::stream::decode_all(&reply.body[..]).expect("zstd");
        let reply = Reply {
            body: decoded.into(),
            ..reply
        };
        assert_eq!(doc(&reply), expected);
    }
    assert_eq!(scans(&h), 1);

    // Without Accept-Encoding, or refusing zstd: the plain document.
    for request in [
        Request::builder()
            .uri(BOOTSTRAP)
            .body(Body::empty())
            .expect("valid request"),
        zstd("zstd;q=0"),
    ] {
        let reply = h.send(request).await;
        assert!(reply.headers.get(header::CONTENT_ENCODING).is_none());
        assert_eq!(doc(&reply), expected);
    }
    h.shutdown().await;
}

/// The per-prefix build locks do not pile up: one that nobody holds or
/// waits for is dropped at the next build.
#[tokio::test]
async fn build_locks_of_finished_builds_are_dropped() {
    let h = Harness::start(|_| {}).await;
    for p in ["a", "b", "c", "d", "e"] {
        h.put_ok(&format!("/v1/kv/locks/{p}/k"), "v").await;
    }
    for p in ["a", "b", "c", "d", "e"] {
        let r = h
            .get(&format!("/v1/kv/locks/{p}/?prefix=true&bootstrap=true"))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(scans(&h), 5);
    assert!(
        h.buffer.build_locks() <= 1,
        "{} build locks kept for 5 finished builds",
        h.buffer.build_locks()
    );
    h.shutdown().await;
}
