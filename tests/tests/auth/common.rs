//! Helpers of the auth tests: a cluster with auth on, and token requests.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_tests::TestCluster;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Starts `n` nodes with node 1 bootstrapping auth (plus `tweak`), and
/// returns the cluster with the initial admin token.
pub async fn start_with_auth(
    n: usize,
    tweak: impl Fn(&mut ballast_store::Config),
) -> Result<(TestCluster, String)> {
    let tc = TestCluster::start_with(n, |c| {
        c.auth = c.node_id == 1;
        tweak(c);
    })
    .await?;
    let path = tc.config(1).auth_token_path();
    let deadline = Instant::now() + Duration::from_secs(20);
    let token = loop {
        if let Ok(t) = std::fs::read_to_string(&path) {
            let enabled = tc
                .node(1)?
                .auth()
                .read()
                .map(|a| a.enabled())
                .unwrap_or(false);
            if enabled && !t.trim().is_empty() {
                break t.trim().to_string();
            }
        }
        if Instant::now() > deadline {
            bail!("auth was not turned on within 20s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)?.permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the token file is private");
    }
    Ok((tc, token))
}

/// Sends a request to node `id` with `token` (none: no header).
pub async fn call(
    tc: &TestCluster,
    id: u64,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut req = tc
        .http()
        .request(method, format!("{}{path}", tc.endpoint(id)));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.body(b.to_string());
    }
    let resp = req.send().await?;
    let status = resp.status();
    let text = resp.text().await?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value))
}

/// Like [`call`], but fails unless the answer is 200.
pub async fn ok(
    tc: &TestCluster,
    id: u64,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> Result<Value> {
    let (status, value) = call(tc, id, method.clone(), path, Some(token), body).await?;
    if status != StatusCode::OK {
        bail!("{method} {path}: {status} {value}");
    }
    Ok(value)
}

/// Creates a role through node `id`.
pub async fn create_role(
    tc: &TestCluster,
    id: u64,
    admin: &str,
    name: &str,
    kind: &str,
    prefixes: &[&str],
) -> Result<()> {
    let body = json!({"name": name, "kind": kind, "prefixes": prefixes});
    ok(tc, id, Method::POST, "/v1/auth/roles", admin, Some(body)).await?;
    Ok(())
}

/// Creates a token for `role` through node `id`: (id, secret).
pub async fn create_token(
    tc: &TestCluster,
    id: u64,
    admin: &str,
    role: &str,
) -> Result<(String, String)> {
    let v = ok(
        tc,
        id,
        Method::POST,
        "/v1/auth/tokens",
        admin,
        Some(json!({ "role": role })),
    )
    .await?;
    let token_id = v["id"].as_str().context("token id")?.to_string();
    let secret = v["token"].as_str().context("token")?.to_string();
    Ok((token_id, secret))
}

/// A serializable read of `key` on node `id` with `token`: its status.
pub async fn local_read(tc: &TestCluster, id: u64, key: &str, token: &str) -> Result<StatusCode> {
    let path = format!("/v1/kv/{key}?consistency=serializable");
    Ok(call(tc, id, Method::GET, &path, Some(token), None).await?.0)
}
