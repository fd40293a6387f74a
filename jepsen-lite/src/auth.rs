//! Runs against a cluster with auth on (`--auth`): every node starts with
//! `--auth`, the run reads the initial admin token the winning node wrote,
//! and every request of the run (workload, nemeses, checks) carries it.
//!
//! The token is process-wide: it is known only once the cluster is up, after
//! the node clients already exist, so each request reads it when it is sent.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};

static TOKEN: OnceLock<String> = OnceLock::new();

/// The run's token, once known.
pub fn token() -> Option<&'static str> {
    TOKEN.get().map(String::as_str)
}

/// The `Authorization` header of every request (empty with auth off).
pub fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(token) = token() {
        if let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
    }
    headers
}

/// Waits for the initial admin token in one of `data_dirs` (the node whose
/// bootstrap entry won keeps its `admin.token`; a node whose entry lost
/// removes its own), checked against the cluster at `endpoints`; copies it
/// to `join_file` for nodes that join later and makes it the run's token.
pub async fn adopt_initial_token(
    data_dirs: &[&Path],
    endpoints: &[String],
    join_file: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let http = crate::tls::apply(reqwest::Client::builder())
        .timeout(Duration::from_secs(2))
        .build()?;
    let deadline = Instant::now() + timeout;
    loop {
        for dir in data_dirs {
            let Ok(text) = std::fs::read_to_string(dir.join("admin.token")) else {
                continue;
            };
            let token = text.trim();
            if token.is_empty() || !accepted(&http, endpoints, token).await {
                continue;
            }
            std::fs::write(join_file, format!("{token}\n"))?;
            let _ = TOKEN.set(token.to_string());
            tracing::info!(dir = %dir.display(), "auth is on; the run uses the initial admin token");
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no initial admin token within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a node knows `token` (auth on, the token valid).
async fn accepted(http: &reqwest::Client, endpoints: &[String], token: &str) -> bool {
    for endpoint in endpoints {
        let Ok(resp) = http
            .get(format!("{endpoint}/v1/auth/whoami"))
            .bearer_auth(token)
            .send()
            .await
        else {
            continue;
        };
        if !resp.status().is_success() {
            continue;
        }
        if let Ok(doc) = resp.json::<serde_json::Value>().await {
            return doc["token_id"].is_string();
        }
    }
    false
}
