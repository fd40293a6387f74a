//! No token in any log line: a real `ballastd --auth` process, logging at
//! debug level to a file, goes through the whole token life cycle (bootstrap,
//! create, use, wrong tokens, revoke); then its log is searched for every
//! secret it saw.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use common::{ballastd, free_port, Procs};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_appears_in_the_log() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("ballast-auth-log-")
        .tempdir()?;
    let (client, peer) = (free_port()?, free_port()?);
    let log_path = dir.path().join("node1.log");
    let token_file = dir.path().join("admin.token");
    let child = Command::new(ballastd())
        .args(["--node-id", "1", "--auth"])
        .arg("--auth-token-file")
        .arg(&token_file)
        .arg("--data-dir")
        .arg(dir.path().join("node1"))
        .args(["--listen-client", &format!("127.0.0.1:{client}")])
        .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
        .args([
            "--initial-cluster",
            &format!("1=127.0.0.1:{client}/127.0.0.1:{peer}"),
        ])
        .args(["--heartbeat-ms", "50", "--election-timeout-min-ms", "300"])
        .args(["--election-timeout-max-ms", "600"])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .context("spawning ballastd")?;
    let mut procs = Procs {
        children: BTreeMap::from([(1, child)]),
    };

    let deadline = Instant::now() + Duration::from_secs(30);
    let admin = loop {
        if let Ok(t) = std::fs::read_to_string(&token_file) {
            if !t.trim().is_empty() {
                break t.trim().to_string();
            }
        }
        if Instant::now() > deadline {
            bail!(
                "no token file within 30s\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?;
    let base = format!("http://127.0.0.1:{client}");
    let send = |method: reqwest::Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        req.send()
    };

    // Auth turns on through the log; wait until requests need it.
    let resp = send(
        reqwest::Method::POST,
        "/v1/auth/roles",
        &admin,
        Some(json!({"name": "app", "kind": "writer", "prefixes": ["app/"]})),
    )
    .await?;
    assert_eq!(resp.status(), 200, "{}", resp.text().await?);
    let created: Value = send(
        reqwest::Method::POST,
        "/v1/auth/tokens",
        &admin,
        Some(json!({"role": "app"})),
    )
    .await?
    .json()
    .await?;
    let writer = created["token"].as_str().context("token")?.to_string();
    let id = created["id"].as_str().context("id")?.to_string();
    let resp = send(
        reqwest::Method::PUT,
        "/v1/kv/app/x",
        &writer,
        Some(json!("1")),
    )
    .await?;
    assert_eq!(resp.status(), 200);
    let resp = send(
        reqwest::Method::PUT,
        "/v1/kv/other",
        &writer,
        Some(json!("1")),
    )
    .await?;
    assert_eq!(resp.status(), 403);
    let wrong = "bal_thisisnotatokenbutlookslikeoneAAAAAAAAAAAAAAAAAAAAAA";
    let resp = send(reqwest::Method::GET, "/v1/kv/app/x", wrong, None).await?;
    assert_eq!(resp.status(), 401);
    let resp = send(
        reqwest::Method::DELETE,
        &format!("/v1/auth/tokens/{id}"),
        &admin,
        None,
    )
    .await?;
    assert_eq!(resp.status(), 200);
    let resp = send(reqwest::Method::GET, "/v1/kv/app/x", &writer, None).await?;
    assert_eq!(resp.status(), 401);

    // SIGKILL: nothing more is written.
    drop(procs.children.remove(&1).map(|mut c| {
        let _ = c.kill();
        c.wait()
    }));
    let log = std::fs::read_to_string(&log_path)?;
    assert!(
        log.contains("auth is on"),
        "the log was captured at debug level:\n{log}"
    );
    assert!(log.contains(&id), "token ids may be logged");
    for secret in [&admin, &writer, &wrong.to_string()] {
        // The secret, and its random part alone.
        assert!(!log.contains(secret.as_str()), "a token is in the log");
        assert!(
            !log.contains(&secret[4..]),
            "a token's secret part is in the log"
        );
    }
    Ok(())
}
