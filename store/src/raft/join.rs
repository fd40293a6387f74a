//! Joining a running cluster (`ballastd --join ENDPOINTS`).
//!
//! A joining node asks the members' client API who the cluster is
//! (`GET /v1/status`): its id and members. On a first start it takes that
//! cluster id as its own (see `identity::resolve`), starts Raft empty and asks
//! the leader to add it as a learner (`POST /v1/members`); the leader then
//! replicates the log (or a snapshot) to it. Later starts only check that the
//! endpoints still belong to the node's cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::types::{Member, NodeId};

/// What a running cluster says about itself.
#[derive(Debug, Clone)]
pub struct ClusterInfo {
    /// The endpoint that answered.
    pub endpoint: String,
    /// The cluster's id.
    pub cluster_id: u128,
    /// Its members and whether each votes.
    pub members: BTreeMap<NodeId, (Member, bool)>,
}

#[derive(Deserialize)]
struct StatusDoc {
    cluster_id: String,
    members: Vec<MemberDoc>,
}

#[derive(Deserialize)]
struct MemberDoc {
    id: NodeId,
    client_addr: String,
    peer_addr: String,
    voter: bool,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// No endpoint answered.
    #[error("none of the --join endpoints answered ({0})")]
    Unreachable(String),
    /// The cluster refused to add this node.
    #[error("the cluster refused to add this node: {0}")]
    Refused(String),
    /// The cluster did not add this node in time.
    #[error("the cluster did not add this node in time: {0}")]
    TimedOut(String),
}

/// How a joining node reaches `https://` endpoints: it trusts the cluster
/// CA (`--peer-tls-ca`) and presents its peer certificate, so that a client
/// port that requires client certificates from the cluster CA admits it.
#[derive(Clone, Default)]
pub struct JoinTls {
    ca: Option<reqwest::Certificate>,
    identity: Option<reqwest::Identity>,
}

impl JoinTls {
    /// From the peer TLS flags (none: plain HTTP only).
    pub fn from_config(config: &crate::config::Config) -> Result<JoinTls, crate::tls::TlsError> {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| crate::tls::TlsError::File {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
        };
        let bad = |path: &std::path::Path, e: reqwest::Error| crate::tls::TlsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let ca = match &config.peer_tls_ca {
            Some(path) => {
                Some(reqwest::Certificate::from_pem(&read(path)?).map_err(|e| bad(path, e))?)
            }
            None => None,
        };
        let identity = match (&config.peer_tls_cert, &config.peer_tls_key) {
            (Some(cert), Some(key)) => {
                let mut pem = read(cert)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                Some(reqwest::Identity::from_pem(&pem).map_err(|e| bad(cert, e))?)
            }
            _ => None,
        };
        Ok(JoinTls { ca, identity })
    }
}

/// The HTTP client of a join: TLS as `tls` says, and `token` (an admin
/// token of a cluster with auth on) sent as a bearer token.
fn http(
    timeout: Duration,
    tls: &JoinTls,
    token: Option<&str>,
) -> Result<reqwest::Client, JoinError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| {
                JoinError::Unreachable("the join token has characters a header cannot hold".into())
            })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .default_headers(headers)
        .timeout(timeout)
        .connect_timeout(timeout)
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .min_tls_version(reqwest::tls::Version::TLS_1_2);
    if let Some(ca) = &tls.ca {
        builder = builder.add_root_certificate(ca.clone());
    }
    if let Some(identity) = &tls.identity {
        builder = builder.identity(identity.clone());
    }
    builder
        .build()
        .map_err(|e| JoinError::Unreachable(format!("HTTP client: {e}")))
}

/// The error and its causes, one line (a TLS failure is in a cause).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// Asks `endpoints` in turn who the cluster is; the first answer counts.
pub async fn discover(
    endpoints: &[String],
    timeout: Duration,
    tls: &JoinTls,
    token: Option<&str>,
) -> Result<ClusterInfo, JoinError> {
    let client = http(timeout, tls, token)?;
    let mut errors = Vec::new();
    for endpoint in endpoints {
        let answer = async {
            let resp = client
                .get(format!("{endpoint}/v1/status"))
                .send()
                .await
                .map_err(|e| chain(&e))?;
            if !resp.status().is_success() {
                return Err(format!("status {}", resp.status()));
            }
            let doc: StatusDoc = resp.json().await.map_err(|e| e.to_string())?;
            let cluster_id = u128::from_str_radix(&doc.cluster_id, 16)
                .map_err(|e| format!("cluster id {:?}: {e}", doc.cluster_id))?;
            let members = doc
                .members
                .into_iter()
                .map(|m| {
                    (
                        m.id,
                        (
                            Member {
                                client_addr: m.client_addr,
                                peer_addr: m.peer_addr,
                            },
                            m.voter,
                        ),
                    )
                })
                .collect();
            Ok(ClusterInfo {
                endpoint: endpoint.clone(),
                cluster_id,
                members,
            })
        };
        match answer.await {
            Ok(info) => return Ok(info),
            Err(e) => errors.push(format!("{endpoint}: {e}")),
        }
    }
    Err(JoinError::Unreachable(errors.join("; ")))
}

/// Asks the cluster to add this node as a learner, through any endpoint,
/// retrying while the cluster has no leader or another change runs, until
/// `deadline`. Adding the same id with the same addresses again is accepted,
/// so a retry after a lost answer is harmless.
pub async fn request_learner(
    endpoints: &[String],
    id: NodeId,
    me: &Member,
    timeout: Duration,
    deadline: tokio::time::Instant,
    tls: &JoinTls,
    token: Option<&str>,
) -> Result<(), JoinError> {
    let client = http(timeout * 3, tls, token)?;
    let body = serde_json::json!({
        "id": id,
        "client_addr": me.client_addr,
        "peer_addr": me.peer_addr,
    });
    let mut last = String::new();
    loop {
        for endpoint in endpoints {
            match client
                .post(format!("{endpoint}/v1/members"))
                .json(&body)
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => return Ok(()),
                Ok(resp) => {
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    let retry = status.is_server_error()
                        || (status.as_u16() == 409 && text.contains("change_in_progress"));
                    if !retry {
                        return Err(JoinError::Refused(format!("{endpoint}: {status} {text}")));
                    }
                    last = format!("{endpoint}: {status} {text}");
                }
                Err(e) => last = format!("{endpoint}: {}", chain(&e)),
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(JoinError::TimedOut(last));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
