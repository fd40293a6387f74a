//! The nospace alarm through the router, on one node whose floor no disk
//! meets: writes refused, the alarm raised through Raft and shown in
//! `/v1/alarms`, `/v1/status` and `/metrics`, deletes still served, and a
//! disarm while still short raised again.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::api_test::Harness;

fn nospace(member: u64) -> Value {
    json!([{ "member": member, "alarm": "nospace" }])
}

async fn wait_for_alarm(h: &Harness) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alarms = h.call(Method::GET, "/v1/alarms", Body::empty()).await;
        assert_eq!(alarms.status, StatusCode::OK);
        if alarms.json()["alarms"] == nospace(1) {
            return alarms.json();
        }
        assert!(
            Instant::now() < deadline,
            "no alarm raised: {}",
            alarms.json()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_below_its_floor_raises_the_alarm_and_refuses_puts_only() {
    let h = Harness::start(|c| {
        c.min_free_bytes = u64::MAX;
        c.disk_check_interval_ms = 20;
    })
    .await;

    let put = h.call(Method::PUT, "/v1/kv/a", "v").await;
    assert_eq!(put.status, StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(put.json()["error"]["code"], "no_space");
    let txn = h
        .call(
            Method::POST,
            "/v1/txn",
            r#"{"compare": [], "success": [{"put": {"key": "a", "value": "v"}}], "failure": []}"#,
        )
        .await;
    assert_eq!(txn.status, StatusCode::INSUFFICIENT_STORAGE);
    wait_for_alarm(&h).await;

    let status = h.call(Method::GET, "/v1/status", Body::empty()).await;
    let status = status.json();
    assert_eq!(status["alarms"], nospace(1));
    assert_eq!(status["disk"]["min_free_bytes"], u64::MAX);
    assert!(status["disk"]["free_bytes"].as_u64() > Some(0));
    assert_eq!(status["disk"]["reserve_present"], false);
    let metrics = h.call(Method::GET, "/metrics", Body::empty()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("ballast_alarm_active{alarm=\"nospace\",member=\"1\"} 1"),
        "{text}"
    );
    assert!(text.contains("ballast_no_space_refusals_total "), "{text}");

    // Deletes, deletes-only transactions and reads go on.
    let del = h.call(Method::DELETE, "/v1/kv/a", Body::empty()).await;
    assert_eq!(del.status, StatusCode::OK, "{}", del.json());
    let read = h.call(Method::GET, "/v1/kv/a", Body::empty()).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);

    // Bad disarm requests are refused.
    let bad = h
        .call(Method::POST, "/v1/alarms/disarm", r#"{"alarm": "NOSPACE"}"#)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.json()["error"]["code"], "invalid_request");
    let bad = h
        .call(Method::POST, "/v1/alarms/disarm", r#"{"members": 1}"#)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let wrong_method = h.call(Method::DELETE, "/v1/alarms", Body::empty()).await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);

    // Disarming another member's alarm changes nothing here.
    let other = h
        .call(Method::POST, "/v1/alarms/disarm", r#"{"member": 2}"#)
        .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.json()["disarmed"], json!([]));
    // Disarmed while still short: raised again.
    let disarmed = h.call(Method::POST, "/v1/alarms/disarm", "").await;
    assert_eq!(disarmed.status, StatusCode::OK, "{}", disarmed.json());
    assert_eq!(disarmed.json()["disarmed"], nospace(1));
    wait_for_alarm(&h).await;
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_room_has_no_alarm_and_keeps_its_reserve() {
    let h = Harness::start(|c| {
        c.min_free_bytes = 1;
        c.reserve_bytes = 1 << 20;
    })
    .await;
    let put = h.call(Method::PUT, "/v1/kv/a", "v").await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.json());
    let alarms = h.call(Method::GET, "/v1/alarms", Body::empty()).await;
    assert_eq!(alarms.json()["alarms"], json!([]));
    let status = h.call(Method::GET, "/v1/status", Body::empty()).await;
    assert_eq!(status.json()["alarms"], json!([]));
    assert_eq!(status.json()["disk"]["reserve_present"], true);
    h.shutdown().await;
}
