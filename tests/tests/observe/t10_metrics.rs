use std::time::Duration;

use anyhow::{Context, Result};
use ballast_tests::metrics::{parse, Scrape};
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;
use serde_json::json;
use tracing::info;

async fn scrape(tc: &TestCluster, id: u64) -> Result<Scrape> {
    let resp = tc
        .http()
        .get(format!("{}/metrics", tc.endpoint(id)))
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    let text = resp.text().await?;
    parse(&text).with_context(|| format!("node {id} served malformed metrics:\n{text}"))
}

/// Every family the docs list exists, in the OpenMetrics text format, and
/// the counters move with traffic: writes, a watch, replica reports, HTTP
/// requests by route template, snapshot builds and installs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_raft_http_watches_replicas_and_storage() -> Result<()> {
    let mut tc = TestCluster::start_with(3, |c| c.snapshot_logs = 20).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];

    info!("--- a watch, writes through a follower and replica reports");
    let mut watch = WatchStream::open(
        tc.stream_http(),
        &format!("{}/v1/watch/m/?prefix=true", tc.endpoint(leader)),
        None,
    )
    .await?;
    assert_eq!(watch.status, 200);
    let mut rev = 0;
    for i in 0..10 {
        rev = tc.put(follower, &format!("m/k{i}"), "v").await?;
    }
    watch.read_until(rev, Duration::from_secs(10)).await?;
    for (id, revision) in [("svc-a", rev), ("svc-b", rev - 4)] {
        let r = tc
            .http()
            .post(format!("{}/v1/replicas/report", tc.endpoint(leader)))
            .json(&json!({ "id": id, "prefix": "m/", "revision": revision }))
            .send()
            .await?;
        assert_eq!(r.status(), 200);
    }
    let missing = tc
        .http()
        .get(format!("{}/v1/kv/m/absent", tc.endpoint(leader)))
        .send()
        .await?;
    assert_eq!(missing.status(), 404);

    let m = scrape(&tc, leader).await?;
    for family in [
        "ballast_raft_term",
        "ballast_raft_is_leader",
        "ballast_raft_commit_index",
        "ballast_raft_applied_index",
        "ballast_raft_leader_changes",
        "ballast_raft_proposals_committed",
        "ballast_raft_proposals_failed",
        "ballast_raft_commit_duration_seconds",
        "ballast_raft_apply_duration_seconds",
        "ballast_snapshot_builds",
        "ballast_snapshot_build_bytes",
        "ballast_snapshot_installs",
        "ballast_snapshot_install_bytes",
        "ballast_http_request_duration_seconds",
        "ballast_watchers_open",
        "ballast_watch_events_sent",
        "ballast_replicas_reporting",
        "ballast_replicas_max_lag_revisions",
        "ballast_db_size_bytes",
        "ballast_wal_sync_duration_seconds",
        "ballast_quota_bytes",
        "ballast_revision",
    ] {
        assert!(m.families.contains_key(family), "no family {family}");
    }
    assert_eq!(
        m.families["ballast_raft_commit_duration_seconds"],
        "histogram"
    );
    assert!(m.value("ballast_raft_term").unwrap_or(0.0) >= 1.0);
    assert_eq!(m.value("ballast_raft_is_leader"), Some(1.0));
    assert!(m.value("ballast_raft_leader_changes_total").unwrap_or(0.0) >= 1.0);
    // The forwarded writes were proposed here.
    assert!(
        m.value("ballast_raft_proposals_committed_total")
            .unwrap_or(0.0)
            >= 10.0
    );
    assert!(
        m.value("ballast_raft_commit_duration_seconds_count")
            .unwrap_or(0.0)
            >= 10.0
    );
    assert!(
        m.value("ballast_raft_apply_duration_seconds_count")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(
        m.value("ballast_wal_sync_duration_seconds_count")
            .unwrap_or(0.0)
            >= 1.0
    );
    assert!(m.value("ballast_db_size_bytes").unwrap_or(0.0) > 0.0);
    assert_eq!(m.value("ballast_revision"), Some(rev as f64));
    assert_eq!(m.value("ballast_watchers_open"), Some(1.0));
    assert!(m.value("ballast_watch_events_sent_total").unwrap_or(0.0) >= 10.0);
    assert_eq!(m.value("ballast_replicas_reporting"), Some(2.0));
    assert_eq!(m.value("ballast_replicas_max_lag_revisions"), Some(4.0));
    // HTTP latency by route template, never by raw path.
    assert!(
        m.sum(
            "ballast_http_request_duration_seconds_count",
            &[
                "route=\"/v1/kv/{*key}\"",
                "method=\"GET\"",
                "status=\"404\""
            ]
        ) >= 1.0
    );
    assert!(
        m.sum(
            "ballast_http_request_duration_seconds_count",
            &["route=\"/v1/replicas/report\"", "status=\"200\""]
        ) >= 2.0
    );
    assert!(
        !m.samples.keys().any(|k| k.contains("m/absent")),
        "a raw path became a label"
    );
    let f = scrape(&tc, follower).await?;
    assert!(
        f.sum(
            "ballast_http_request_duration_seconds_count",
            &[
                "route=\"/v1/kv/{*key}\"",
                "method=\"PUT\"",
                "status=\"200\""
            ]
        ) >= 10.0
    );
    assert_eq!(f.value("ballast_raft_is_leader"), Some(0.0));
    drop(watch);

    info!("--- a follower misses enough entries to need a snapshot");
    let lagging = tc.others(leader)[1];
    tc.kill(lagging).await?;
    for i in 0..120 {
        rev = tc.put(leader, &format!("m/s{}", i % 30), "v").await?;
    }
    // The snapshot is built, and the log purged behind it, in the
    // background: restart the follower only once it must catch up by snapshot.
    tc.wait_log_purged(leader, Duration::from_secs(30)).await?;
    tc.restart(lagging).await?;
    tc.wait_applied(rev, Duration::from_secs(30)).await?;
    let m = scrape(&tc, leader).await?;
    assert!(m.value("ballast_snapshot_builds_total").unwrap_or(0.0) >= 1.0);
    assert!(m.value("ballast_snapshot_build_bytes_total").unwrap_or(0.0) > 0.0);
    let l = scrape(&tc, lagging).await?;
    assert!(l.value("ballast_snapshot_installs_total").unwrap_or(0.0) >= 1.0);
    assert!(
        l.value("ballast_snapshot_install_bytes_total")
            .unwrap_or(0.0)
            > 0.0
    );
    tc.shutdown().await;
    Ok(())
}

/// `--listen-metrics`: a separate listener answers `/metrics` and
/// `/health/*`, and nothing else; the client port keeps answering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_separate_probe_listener_serves_metrics_and_health_only() -> Result<()> {
    // Port 0: each node binds a free port itself (a port picked by binding
    // and releasing it could be taken by another test before the node
    // started, which failed this test once in CI).
    let tc = TestCluster::start_with(3, |c| {
        c.listen_metrics = Some("127.0.0.1:0".to_owned());
    })
    .await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    tc.put(leader, "probe/k", "v").await?;
    for id in tc.ids() {
        let addr = tc
            .metrics_addr(id)?
            .with_context(|| format!("node {id} has no probe listener"))?;
        let base = format!("http://{addr}");
        let get = |path: &str| tc.http().get(format!("{base}{path}")).send();
        let metrics = get("/metrics").await?;
        assert_eq!(metrics.status(), 200, "node {id}");
        let text = metrics.text().await?;
        let parsed = parse(&text).with_context(|| format!("node {id}:\n{text}"))?;
        assert!(
            text.contains("ballast_raft_term"),
            "node {id} scrape: {parsed:?}"
        );
        assert_eq!(get("/health/live").await?.status(), 200, "node {id}");
        let ready = get("/health/ready").await?;
        assert_eq!(ready.status(), 200, "node {id}");
        // Nothing else: not the key space, not the status.
        let kv = get("/v1/kv/probe/k").await?;
        assert_eq!(kv.status(), 404, "node {id}");
        let body: serde_json::Value = kv.json().await?;
        assert_eq!(body["error"]["code"], json!("not_found"), "{body}");
        assert_eq!(get("/v1/status").await?.status(), 404, "node {id}");
        // The client port still answers the probes.
        scrape(&tc, id).await?;
    }
    tc.shutdown().await;
    Ok(())
}
