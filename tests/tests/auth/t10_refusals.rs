use std::time::Duration;

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tracing::info;

use crate::common::{call, create_role, create_token, ok, start_with_auth};

/// One request of the route table.
struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
}

fn route(method: Method, path: &str, body: Option<Value>) -> Route {
    Route {
        method,
        path: path.to_string(),
        body,
    }
}

/// Every route but the open ones (`/health/*`, `/metrics`), each with a
/// request that would change something or read something if allowed.
fn every_route(writer_id: &str) -> Vec<Route> {
    vec![
        route(Method::GET, "/v1/kv/app/a", None),
        route(Method::GET, "/v1/kv/app/?prefix=true", None),
        route(Method::PUT, "/v1/kv/app/new", Some(json!("x"))),
        route(Method::DELETE, "/v1/kv/app/a", None),
        route(Method::DELETE, "/v1/kv/app/?prefix=true", None),
        route(
            Method::POST,
            "/v1/txn",
            Some(json!({"success": [{"put": {"key": "app/t", "value": "x"}}]})),
        ),
        route(Method::GET, "/v1/watch/app/?prefix=true", None),
        route(
            Method::POST,
            "/v1/sessions",
            Some(json!({"client": "0123456789abcdef0123456789abcdef"})),
        ),
        route(
            Method::POST,
            "/v1/replicas/report",
            Some(json!({"id": "r1", "prefix": "app/", "revision": 1})),
        ),
        route(Method::GET, "/v1/replicas", None),
        route(Method::GET, "/v1/status", None),
        route(Method::GET, "/v1/endpoints", None),
        route(Method::POST, "/v1/compact", Some(json!({"revision": 2}))),
        route(Method::GET, "/v1/members", None),
        route(
            Method::POST,
            "/v1/members",
            Some(json!({"id": 9, "client_addr": "127.0.0.1:1", "peer_addr": "127.0.0.1:2"})),
        ),
        route(Method::DELETE, "/v1/members/3", None),
        route(Method::POST, "/v1/members/3/promote", None),
        route(Method::POST, "/v1/leader/transfer", Some(json!({"to": 2}))),
        route(Method::GET, "/v1/snapshot", None),
        route(Method::GET, "/v1/auth/tokens", None),
        route(
            Method::POST,
            "/v1/auth/tokens",
            Some(json!({"role": "admin"})),
        ),
        route(
            Method::DELETE,
            &format!("/v1/auth/tokens/{writer_id}"),
            None,
        ),
        route(Method::GET, "/v1/auth/roles", None),
        route(
            Method::POST,
            "/v1/auth/roles",
            Some(json!({"name": "x", "kind": "admin"})),
        ),
        route(Method::DELETE, "/v1/auth/roles/app", None),
        route(Method::GET, "/v1/auth/whoami", None),
    ]
}

/// Requests a writer of `app/` may not make: other keys, prefixes that
/// reach outside `app/`, and admin routes.
fn outside_writer_scope(writer_id: &str) -> Vec<Route> {
    let txn = |body: Value| route(Method::POST, "/v1/txn", Some(body));
    let mut routes = vec![
        route(Method::GET, "/v1/kv/secret/s", None),
        route(Method::GET, "/v1/kv/?prefix=true", None),
        route(Method::GET, "/v1/kv/ap?prefix=true", None),
        route(Method::PUT, "/v1/kv/secret/s", Some(json!("x"))),
        route(Method::PUT, "/v1/kv/ap", Some(json!("x"))),
        route(Method::DELETE, "/v1/kv/secret/s", None),
        route(Method::DELETE, "/v1/kv/ap?prefix=true", None),
        route(Method::DELETE, "/v1/kv/?prefix=true", None),
        route(Method::DELETE, "/v1/kv/secret/?prefix=true", None),
        // A write outside, next to one inside.
        txn(json!({"success": [
            {"put": {"key": "app/ok", "value": "x"}},
            {"put": {"key": "secret/s", "value": "x"}}]})),
        // A prefix delete that reaches outside, in the failure branch.
        txn(
            json!({"compare": [{"key": "app/a", "target": "version", "op": "=", "version": 99}],
            "failure": [{"delete": {"key": "ap", "prefix": true}}]}),
        ),
        txn(json!({"success": [{"delete": {"key": "", "prefix": true}}]})),
        // A compare reads the key it compares.
        txn(
            json!({"compare": [{"key": "secret/s", "target": "value", "op": "=", "value": "1"}],
            "success": [{"put": {"key": "app/b", "value": "x"}}]}),
        ),
        // A range read outside, in a branch.
        txn(json!({"success": [{"get": {"key": "", "prefix": true}}]})),
        route(Method::GET, "/v1/watch/secret/?prefix=true", None),
        route(Method::GET, "/v1/watch/?prefix=true", None),
        route(Method::GET, "/v1/watch/secret/s", None),
    ];
    // Every admin route.
    routes.extend(every_route(writer_id).into_iter().filter(|r| {
        [
            "/v1/compact",
            "/v1/members",
            "/v1/leader",
            "/v1/snapshot",
            "/v1/auth/t",
            "/v1/auth/r",
        ]
        .iter()
        .any(|p| r.path.starts_with(p))
    }));
    routes
}

/// Requests a reader of `app/` may not make: any write, and reads outside.
fn outside_reader_scope() -> Vec<Route> {
    vec![
        route(Method::PUT, "/v1/kv/app/a", Some(json!("x"))),
        route(Method::DELETE, "/v1/kv/app/a", None),
        route(Method::DELETE, "/v1/kv/app/?prefix=true", None),
        route(
            Method::POST,
            "/v1/txn",
            Some(json!({"success": [{"put": {"key": "app/a", "value": "x"}}]})),
        ),
        route(
            Method::POST,
            "/v1/sessions",
            Some(json!({"client": "0123456789abcdef0123456789abcdef"})),
        ),
        route(Method::GET, "/v1/kv/secret/s", None),
        route(Method::GET, "/v1/watch/secret/?prefix=true", None),
        route(Method::POST, "/v1/compact", Some(json!({"revision": 2}))),
    ]
}

/// Everything a refused request could have changed, as the admin sees it.
async fn observable_state(tc: &ballast_tests::TestCluster, admin: &str) -> Result<Value> {
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let kvs = ok(tc, leader, Method::GET, "/v1/kv/?prefix=true", admin, None).await?;
    let tokens = ok(tc, leader, Method::GET, "/v1/auth/tokens", admin, None).await?;
    let roles = ok(tc, leader, Method::GET, "/v1/auth/roles", admin, None).await?;
    let members = ok(tc, leader, Method::GET, "/v1/members", admin, None).await?;
    let mut replicas = Vec::new();
    for id in tc.ids() {
        let r = ok(tc, id, Method::GET, "/v1/replicas", admin, None).await?;
        replicas.push(r["replicas"].clone());
    }
    let status = ok(tc, leader, Method::GET, "/v1/status", admin, None).await?;
    Ok(json!({
        "kvs": kvs["kvs"],
        "revision": kvs["revision"],
        "tokens": tokens["tokens"],
        "roles": roles,
        "members": members["members"]
            .as_array()
            .map(|m| m.iter().map(|x| (x["id"].clone(), x["role"].clone())).collect::<Vec<_>>()),
        "membership_log_index": members["membership_log_index"],
        "replicas": replicas,
        "compact_revision": status["compact_revision"],
        "leader": leader,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_bad_tokens_and_changes_nothing() -> Result<()> {
    let (tc, admin) = start_with_auth(3, |_| {}).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];

    info!("--- roles, tokens and some keys");
    create_role(&tc, follower, &admin, "app", "writer", &["app/"]).await?;
    create_role(&tc, leader, &admin, "app-ro", "reader", &["app/"]).await?;
    let (writer_id, writer) = create_token(&tc, follower, &admin, "app").await?;
    let (_, reader) = create_token(&tc, leader, &admin, "app-ro").await?;
    let (revoked_id, revoked) = create_token(&tc, leader, &admin, "admin").await?;
    ok(
        &tc,
        follower,
        Method::DELETE,
        &format!("/v1/auth/tokens/{revoked_id}"),
        &admin,
        None,
    )
    .await?;
    for (k, v) in [("app/a", "1"), ("secret/s", "1"), ("apple", "1")] {
        ok(
            &tc,
            leader,
            Method::PUT,
            &format!("/v1/kv/{k}"),
            &admin,
            Some(json!(v)),
        )
        .await?;
    }
    let before = observable_state(&tc, &admin).await?;

    info!("--- missing, wrong and revoked tokens: 401 on every route and node");
    let wrong = format!("{}x", &writer[..writer.len() - 1]);
    let malformed = ["", "bal_", "Basic abc"];
    for r in every_route(&writer_id) {
        for id in tc.ids() {
            for token in [None, Some(wrong.as_str()), Some(revoked.as_str())] {
                let (status, body) =
                    call(&tc, id, r.method.clone(), &r.path, token, r.body.clone()).await?;
                assert_eq!(
                    status,
                    StatusCode::UNAUTHORIZED,
                    "{} {} on node {id} with {token:?}: {body}",
                    r.method,
                    r.path
                );
                assert_eq!(body["error"]["code"], "unauthenticated");
                let text = body.to_string();
                assert!(!text.contains(&wrong) && !text.contains(&revoked));
            }
        }
        // A malformed Authorization header is a 401 too.
        for header in malformed {
            let resp = tc
                .http()
                .request(
                    r.method.clone(),
                    format!("{}{}", tc.endpoint(leader), r.path),
                )
                .header("authorization", header)
                .send()
                .await?;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        }
    }

    info!("--- out-of-scope tokens: 403");
    for (who, token, routes) in [
        ("writer", &writer, outside_writer_scope(&writer_id)),
        ("reader", &reader, outside_reader_scope()),
    ] {
        for r in routes {
            let id = if r.path.contains("watch") {
                follower
            } else {
                leader
            };
            let (status, body) = call(
                &tc,
                id,
                r.method.clone(),
                &r.path,
                Some(token),
                r.body.clone(),
            )
            .await?;
            assert_eq!(
                status,
                StatusCode::FORBIDDEN,
                "{who}: {} {} {:?}: {body}",
                r.method,
                r.path,
                r.body
            );
            assert_eq!(body["error"]["code"], "permission_denied");
            assert!(!body.to_string().contains(token.as_str()));
        }
    }

    info!("--- nothing changed");
    let after = observable_state(&tc, &admin).await?;
    assert_eq!(before, after);

    info!("--- in scope works: the writer writes app/, the reader reads it");
    ok(
        &tc,
        follower,
        Method::PUT,
        "/v1/kv/app/w",
        &writer,
        Some(json!("2")),
    )
    .await?;
    ok(
        &tc,
        leader,
        Method::POST,
        "/v1/txn",
        &writer,
        Some(
            json!({"compare": [{"key": "app/w", "target": "version", "op": ">", "version": 0}],
            "success": [{"delete": {"key": "app/", "prefix": true}}]}),
        ),
    )
    .await?;
    let (status, _) = call(
        &tc,
        leader,
        Method::GET,
        "/v1/kv/app/w",
        Some(&reader),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted by the writer's txn");
    ok(
        &tc,
        leader,
        Method::GET,
        "/v1/kv/app/?prefix=true",
        &reader,
        None,
    )
    .await?;
    // The voters' addresses are for any token (a replica's, to follow
    // membership changes), answered by a follower too; the member list
    // stays an admin's.
    let voters = ok(&tc, follower, Method::GET, "/v1/endpoints", &reader, None).await?;
    assert_eq!(
        voters["voters"].as_array().map(Vec::len),
        Some(tc.ids().len()),
        "{voters}"
    );
    let (status, _) = call(
        &tc,
        follower,
        Method::GET,
        "/v1/members",
        Some(&reader),
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let watch = tc
        .stream_http()
        .get(format!(
            "{}/v1/watch/app/?prefix=true",
            tc.endpoint(follower)
        ))
        .bearer_auth(&reader)
        .send()
        .await?;
    assert_eq!(watch.status(), StatusCode::OK);
    drop(watch);
    let secret = ok(&tc, leader, Method::GET, "/v1/kv/secret/s", &admin, None).await?;
    // PUT bodies are the raw value: the JSON string "1", quotes included.
    assert_eq!(
        secret["kv"]["value"], "\"1\"",
        "the writer never reached secret/"
    );
    let apple = ok(&tc, leader, Method::GET, "/v1/kv/apple", &admin, None).await?;
    assert_eq!(
        apple["kv"]["value"], "\"1\"",
        "nor a key that merely shares letters"
    );

    info!("--- open routes stay open");
    for path in ["/health/live", "/health/ready", "/metrics"] {
        let (status, _) = call(&tc, follower, Method::GET, path, None, None).await?;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
    let me = ok(&tc, follower, Method::GET, "/v1/auth/whoami", &writer, None).await?;
    assert_eq!(me["token_id"], writer_id.as_str());
    assert_eq!(me["role"]["name"], "app");
    tc.shutdown().await;
    Ok(())
}
