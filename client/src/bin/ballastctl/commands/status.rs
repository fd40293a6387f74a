//! `ballastctl status`: asks every endpoint for its own view, concurrently and
//! once each (no retries, no failover: a dead endpoint must show as dead, not
//! be answered for by its neighbour).
//!
//! Exits 0 when at least one endpoint answered (the others are marked
//! `UNREACHABLE`/`ERROR` and named on stderr), 4 when none did.

use ballast_client::{Error, Status};
use serde_json::{json, Value};

use super::{Ctx, Outcome};
use crate::cli::{OutputFormat, StatusArgs};
use crate::exit::CliError;
use crate::output::{json_bytes, Table};
use crate::progress::with_spinner;

/// What one endpoint said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint, normalized (`http://host:port`).
    pub endpoint: String,
    /// Its status, or why there is none.
    pub result: Result<Status, Error>,
}

/// Runs `status`.
pub async fn run(ctx: &Ctx, _args: StatusArgs) -> Result<Outcome, CliError> {
    // Normalizes, de-duplicates and validates the endpoint list.
    let endpoints = ctx.client()?.endpoints();
    let mut tasks = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let client = ctx.client_for(vec![endpoint.clone()], Some(1))?;
        tasks.push((endpoint, tokio::spawn(async move { client.status().await })));
    }
    let n = tasks.len();
    let results = with_spinner(format!("asking {n} endpoints"), async move {
        let mut results = Vec::with_capacity(tasks.len());
        for (endpoint, task) in tasks {
            let result = match task.await {
                Ok(r) => r,
                Err(e) => Err(Error::Transport {
                    endpoint: endpoint.clone(),
                    message: format!("status task failed: {e}"),
                }),
            };
            results.push(EndpointStatus { endpoint, result });
        }
        results
    })
    .await;
    Ok(render(ctx.format(), &results))
}

/// `UNREACHABLE` when nothing answered, `ERROR` when the node answered with an
/// error.
fn failure_label(e: &Error) -> &'static str {
    match e {
        Error::Transport { .. } => "UNREACHABLE",
        _ => "ERROR",
    }
}

/// The status table or document, a warning per failed endpoint, and exit 4 when
/// no endpoint answered.
pub fn render(format: OutputFormat, results: &[EndpointStatus]) -> Outcome {
    let stdout = match format {
        OutputFormat::Json => json_bytes(&json!({
            "endpoints": results.iter().map(endpoint_json).collect::<Vec<_>>(),
        })),
        OutputFormat::Table => {
            let mut t = Table::new(&[
                "ENDPOINT",
                "NODE",
                "LEADER",
                "TERM",
                "REVISION",
                "STATE_HASH",
                "RAFT_STATE",
            ]);
            for r in results {
                let cells = match &r.result {
                    Ok(s) => vec![
                        r.endpoint.clone(),
                        s.node_id.to_string(),
                        s.leader.map_or_else(|| "-".to_owned(), |l| l.to_string()),
                        s.term.to_string(),
                        s.revision.to_string(),
                        s.state_hash.clone(),
                        s.raft.state.clone(),
                    ],
                    Err(e) => {
                        let mut cells = vec![r.endpoint.clone()];
                        cells.extend(std::iter::repeat_n("-".to_owned(), 5));
                        cells.push(failure_label(e).to_owned());
                        cells
                    }
                };
                t.row(cells);
            }
            t.render().into_bytes()
        }
    };
    let warnings: Vec<String> = results
        .iter()
        .filter_map(|r| match &r.result {
            Ok(_) => None,
            Err(e) => Some(format!(
                "{}: {}: {e}",
                r.endpoint,
                failure_label(e).to_lowercase()
            )),
        })
        .collect();
    let error = if results.iter().any(|r| r.result.is_ok()) {
        None
    } else {
        Some(CliError::Unavailable(format!(
            "none of the {} endpoints answered",
            results.len()
        )))
    };
    Outcome {
        stdout,
        warnings,
        error,
    }
}

fn endpoint_json(r: &EndpointStatus) -> Value {
    match &r.result {
        Ok(s) => json!({
            "endpoint": r.endpoint,
            "reachable": true,
            "node_id": s.node_id,
            "leader": s.leader,
            "term": s.term,
            "revision": s.revision,
            "compact_revision": s.compact_revision,
            "state_hash": s.state_hash,
            "raft": {
                "last_log_index": s.raft.last_log_index,
                "committed": s.raft.committed,
                "applied": s.raft.applied,
                "state": s.raft.state,
            },
            "members": s.members.iter().map(|m| json!({
                "id": m.id,
                "client_addr": m.client_addr,
                "peer_addr": m.peer_addr,
                "voter": m.voter,
            })).collect::<Vec<_>>(),
        }),
        Err(e) => json!({
            "endpoint": r.endpoint,
            "reachable": matches!(e, Error::Api { .. }),
            "error": e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_client::RaftStatus;

    fn status(id: u64, state: &str) -> Status {
        Status {
            node_id: id,
            leader: Some(1),
            term: 2,
            revision: 40,
            compact_revision: 0,
            state_hash: "abc".to_owned(),
            raft: RaftStatus {
                last_log_index: Some(44),
                committed: Some(44),
                applied: Some(44),
                state: state.to_owned(),
            },
            members: Vec::new(),
        }
    }

    fn dead(endpoint: &str) -> EndpointStatus {
        EndpointStatus {
            endpoint: endpoint.to_owned(),
            result: Err(Error::Transport {
                endpoint: endpoint.to_owned(),
                message: "connection refused".to_owned(),
            }),
        }
    }

    #[test]
    fn marks_dead_endpoints() {
        let results = vec![
            EndpointStatus {
                endpoint: "http://h:1".to_owned(),
                result: Ok(status(1, "Leader")),
            },
            dead("http://h:2"),
        ];
        let out = render(OutputFormat::Table, &results);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ENDPOINT    NODE  LEADER  TERM  REVISION  STATE_HASH  RAFT_STATE\n\
             http://h:1  1     1       2     40        abc         Leader\n\
             http://h:2  -     -       -     -         -           UNREACHABLE\n"
        );
        assert_eq!(out.warnings.len(), 1);
        assert!(out.warnings[0].starts_with("http://h:2: unreachable:"));
        assert!(out.error.is_none());
        let out = render(OutputFormat::Json, &results);
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        assert_eq!(doc["endpoints"][0]["raft"]["state"], "Leader");
        assert_eq!(doc["endpoints"][1]["reachable"], false);
    }

    #[test]
    fn all_dead_exits_4() {
        let out = render(
            OutputFormat::Table,
            &[dead("http://h:1"), dead("http://h:2")],
        );
        assert_eq!(out.error.as_ref().map(CliError::code), Some(4));
        assert_eq!(out.warnings.len(), 2);
    }
}
