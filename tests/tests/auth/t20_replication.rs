use std::time::Duration;

use anyhow::Result;
use openraft::async_runtime::watch::WatchReceiver;
use reqwest::{Method, StatusCode};
use serde_json::json;
use tracing::info;

use crate::common::{call, create_role, create_token, local_read, ok, start_with_auth};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_node_is_refused_on_every_node() -> Result<()> {
    let (tc, admin) = start_with_auth(3, |_| {}).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];
    let (token_id, token) = create_token(&tc, leader, &admin, "reader").await?;
    ok(
        &tc,
        leader,
        Method::PUT,
        "/v1/kv/k",
        &admin,
        Some(json!("v")),
    )
    .await?;
    for id in tc.ids() {
        // A linearizable read first: the node has applied the token.
        ok(&tc, id, Method::GET, "/v1/kv/k", &admin, None).await?;
        assert_eq!(local_read(&tc, id, "k", &token).await?, StatusCode::OK);
    }

    info!("--- revoke through follower {follower}");
    ok(
        &tc,
        follower,
        Method::DELETE,
        &format!("/v1/auth/tokens/{token_id}"),
        &admin,
        None,
    )
    .await?;
    // The node that answered has applied the revocation.
    assert_eq!(
        local_read(&tc, follower, "k", &token).await?,
        StatusCode::UNAUTHORIZED
    );
    for id in tc.ids() {
        // Once a node has applied what was committed before this read, it
        // refuses the token: nothing but the local table is asked.
        ok(&tc, id, Method::GET, "/v1/kv/k", &admin, None).await?;
        assert_eq!(
            local_read(&tc, id, "k", &token).await?,
            StatusCode::UNAUTHORIZED,
            "node {id}"
        );
    }
    let listed = ok(&tc, leader, Method::GET, "/v1/auth/tokens", &admin, None).await?;
    assert!(!listed.to_string().contains(&token_id));
    let (status, _) = call(
        &tc,
        leader,
        Method::DELETE,
        &format!("/v1/auth/tokens/{token_id}"),
        Some(&admin),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "revoked twice");
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_survive_restarts_and_travel_in_snapshots() -> Result<()> {
    let (mut tc, admin) = start_with_auth(3, |c| c.snapshot_logs = 50).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let lagging = tc.others(leader)[0];

    info!("--- node {lagging} down; tokens and roles change, then many writes");
    tc.kill(lagging).await?;
    create_role(&tc, leader, &admin, "app", "writer", &["app/"]).await?;
    let (_, writer) = create_token(&tc, leader, &admin, "app").await?;
    let (gone_id, gone) = create_token(&tc, leader, &admin, "reader").await?;
    ok(
        &tc,
        leader,
        Method::DELETE,
        &format!("/v1/auth/tokens/{gone_id}"),
        &admin,
        None,
    )
    .await?;
    let mut revision = 0;
    for i in 0..300 {
        let v = ok(
            &tc,
            leader,
            Method::PUT,
            &format!("/v1/kv/app/k{}", i % 50),
            &writer,
            Some(json!(i.to_string())),
        )
        .await?;
        revision = v["revision"].as_u64().unwrap_or(0);
    }
    // The snapshot is built, and the log purged behind it, in the
    // background after the write that crossed the threshold.
    tc.wait_log_purged(leader, Duration::from_secs(30)).await?;

    info!("--- node {lagging} catches up by snapshot and knows the tokens");
    tc.restart(lagging).await?;
    tc.wait_applied(revision, Duration::from_secs(30)).await?;
    let snapshot = tc.node(lagging)?.raft().metrics().borrow_watched().snapshot;
    assert!(snapshot.is_some(), "node {lagging} installed a snapshot");
    assert_eq!(
        local_read(&tc, lagging, "app/k1", &writer).await?,
        StatusCode::OK
    );
    assert_eq!(
        local_read(&tc, lagging, "app/k1", &gone).await?,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        local_read(&tc, lagging, "app/k1", &admin).await?,
        StatusCode::OK
    );
    let (status, _) = call(
        &tc,
        lagging,
        Method::GET,
        "/v1/kv/x?consistency=serializable",
        Some(&writer),
        None,
    )
    .await?;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the role's prefixes came along"
    );

    info!("--- every node restarts: tokens, roles and auth itself are still on");
    for id in tc.ids() {
        tc.kill(id).await?;
    }
    for id in tc.ids() {
        tc.restart(id).await?;
    }
    tc.wait_leader(Duration::from_secs(20)).await?;
    for id in tc.ids() {
        assert_eq!(
            local_read(&tc, id, "app/k1", &writer).await?,
            StatusCode::OK
        );
        assert_eq!(
            local_read(&tc, id, "app/k1", &gone).await?,
            StatusCode::UNAUTHORIZED
        );
        let (status, _) = call(
            &tc,
            id,
            Method::GET,
            "/v1/kv/app/k1?consistency=serializable",
            None,
            None,
        )
        .await?;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "auth is still on at node {id}"
        );
    }
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_cluster_with_auth_on_needs_an_admin_token() -> Result<()> {
    let (mut tc, admin) = start_with_auth(3, |c| {
        // Node 1's token file; `join_node` copies node 1's config.
        let dir = c.data_dir.parent().map(|p| p.join("node1"));
        c.join_token_file = dir.map(|d| d.join(ballast_store::config::DEFAULT_AUTH_TOKEN_FILE));
    })
    .await?;

    info!("--- without a token the cluster refuses the join");
    let scratch = tempfile::tempdir()?;
    let mut c = tc.config(1).clone();
    c.node_id = 9;
    c.data_dir = scratch.path().join("node9");
    let listeners = ballast_store::Listeners {
        client: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
        peer: tokio::net::TcpListener::bind("127.0.0.1:0").await?,
    };
    c.listen_client = listeners.client.local_addr()?.to_string();
    c.listen_peer = listeners.peer.local_addr()?.to_string();
    c.initial_cluster = None;
    c.auth = false;
    c.join_token_file = None;
    c.join = Some(tc.running_endpoints());
    let refused = ballast_store::start(c, Some(listeners)).await;
    let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("401"), "{err}");
    assert!(!err.contains(&admin));

    info!("--- with the admin token file it joins as a learner");
    let id = tc.join_node().await?;
    let members = ok(&tc, 1, Method::GET, "/v1/members", &admin, None).await?;
    assert!(members.to_string().contains("learner"), "{members}");
    ok(
        &tc,
        1,
        Method::PUT,
        "/v1/kv/after-join",
        &admin,
        Some(json!("x")),
    )
    .await?;
    // The learner serves its local state only to tokens.
    let (status, _) = call(&tc, id, Method::GET, "/v1/status", None, None).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    ok(&tc, id, Method::GET, "/v1/status", &admin, None).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_watch_of_a_revoked_token_ends_before_its_next_event() -> Result<()> {
    let (tc, admin) = start_with_auth(3, |_| {}).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];
    let (token_id, token) = create_token(&tc, leader, &admin, "reader").await?;
    // The follower knows the token before the watch starts.
    ok(
        &tc,
        follower,
        Method::GET,
        "/v1/kv/w/x?prefix=true",
        &admin,
        None,
    )
    .await?;
    let mut watch = tc
        .stream_http()
        .get(format!("{}/v1/watch/w/?prefix=true", tc.endpoint(follower)))
        .bearer_auth(&token)
        .send()
        .await?;
    assert_eq!(watch.status(), StatusCode::OK);
    ok(
        &tc,
        leader,
        Method::PUT,
        "/v1/kv/w/before",
        &admin,
        Some(json!("seen")),
    )
    .await?;
    // Read until that event arrived: the stream checks the token before each
    // frame, so a revocation applied before the frame went out would rightly
    // keep it back too.
    let mut received = String::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        while !received.contains("w/before") {
            match watch.chunk().await? {
                Some(chunk) => received.push_str(&String::from_utf8_lossy(&chunk)),
                None => anyhow::bail!("the stream ended before its first event: {received}"),
            }
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no w/before event within 20 s: {received}"))??;

    info!("--- revoke, then write: the stream ends without the new event");
    ok(
        &tc,
        leader,
        Method::DELETE,
        &format!("/v1/auth/tokens/{token_id}"),
        &admin,
        None,
    )
    .await?;
    ok(
        &tc,
        leader,
        Method::PUT,
        "/v1/kv/w/after",
        &admin,
        Some(json!("hidden")),
    )
    .await?;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(chunk) = watch.chunk().await? {
            received.push_str(&String::from_utf8_lossy(&chunk));
        }
        anyhow::Ok(())
    })
    .await;
    assert!(matches!(ended, Ok(Ok(()))), "the stream ended: {ended:?}");
    assert!(received.contains("w/before"), "{received}");
    assert!(!received.contains("w/after"), "{received}");
    tc.shutdown().await;
    Ok(())
}
