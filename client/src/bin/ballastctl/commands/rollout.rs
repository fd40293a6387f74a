//! `ballastctl rollout status --revision R`: how far a revision has reached the
//! data plane, from the replicas' reports (`GET /v1/replicas?revision=R`).
//!
//! Exit 0 when every reporting replica applied R (also when none reports:
//! there is nothing left to wait for, and a warning says so), 1 when some
//! replica lags, 4 when the cluster cannot be reached. Nodes that did not
//! answer are named on stderr: their replicas are missing from the counts.

use ballast_client::ReplicasResponse;
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{OutputFormat, RolloutStatusArgs};
use crate::exit::CliError;
use crate::output::{json_bytes, Table};
use crate::progress::with_spinner;

/// Runs `rollout status`.
pub async fn run(ctx: &Ctx, args: RolloutStatusArgs) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let resp = with_spinner(
        format!("asking for the rollout of revision {}", args.revision),
        client.rollout(args.revision),
    )
    .await?;
    Ok(render(ctx.format(), args.revision, &resp))
}

/// The summary, the lagging replicas, and the exit status.
pub fn render(format: OutputFormat, revision: u64, resp: &ReplicasResponse) -> Outcome {
    let (total, applied, lagging) = match &resp.rollout {
        Some(r) => (r.total, r.applied, r.lagging.clone()),
        None => (resp.replicas.len(), 0, Vec::new()),
    };
    let converged = lagging.is_empty() && applied == total;
    let stdout = match format {
        OutputFormat::Json => json_bytes(&json!({
            "revision": revision,
            "total": total,
            "applied": applied,
            "converged": converged,
            "lagging": lagging.iter().map(|l| json!({
                "id": l.id, "revision": l.revision, "behind": l.behind,
            })).collect::<Vec<_>>(),
            "replicas": resp.replicas.iter().map(|r| json!({
                "id": r.id, "prefix": r.prefix, "revision": r.revision,
                "serving_from_disk": r.serving_from_disk, "node": r.node, "age_ms": r.age_ms,
            })).collect::<Vec<_>>(),
            "nodes_unreachable": resp.nodes_unreachable,
        })),
        OutputFormat::Table => {
            let mut text = format!("revision {revision}: {applied}/{total} replicas applied\n");
            if !lagging.is_empty() {
                let mut t = Table::new(&["LAGGING", "REVISION", "BEHIND"]);
                for l in &lagging {
                    t.row(vec![
                        l.id.clone(),
                        l.revision.to_string(),
                        l.behind.to_string(),
                    ]);
                }
                text.push_str(&t.render());
            }
            text.into_bytes()
        }
    };
    let mut outcome = Outcome::ok(stdout);
    if total == 0 {
        outcome.warnings.push("no replica has reported".to_owned());
    }
    if !resp.nodes_unreachable.is_empty() {
        outcome.warnings.push(format!(
            "nodes {:?} did not answer: their replicas' reports are missing",
            resp.nodes_unreachable
        ));
    }
    if !converged {
        outcome.error = Some(CliError::NotConverged(format!(
            "{} of {total} replicas have not applied revision {revision}",
            total - applied
        )));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use ballast_client::{LaggingReplica, Rollout};

    fn resp(lagging: Vec<LaggingReplica>, total: usize) -> ReplicasResponse {
        ReplicasResponse {
            revision: 30,
            nodes_answered: vec![1, 2, 3],
            nodes_unreachable: vec![],
            replicas: vec![],
            rollout: Some(Rollout {
                revision: 20,
                total,
                applied: total - lagging.len(),
                lagging,
            }),
        }
    }

    #[test]
    fn converged_and_lagging() {
        let ok = render(OutputFormat::Table, 20, &resp(vec![], 2));
        assert_eq!(ok.stdout, b"revision 20: 2/2 replicas applied\n");
        assert!(ok.error.is_none());
        let lag = render(
            OutputFormat::Table,
            20,
            &resp(
                vec![LaggingReplica {
                    id: "web-1".into(),
                    revision: 17,
                    behind: 3,
                }],
                2,
            ),
        );
        let text = String::from_utf8_lossy(&lag.stdout).to_string();
        assert!(
            text.starts_with("revision 20: 1/2 replicas applied\n"),
            "{text}"
        );
        assert!(text.contains("web-1") && text.contains('3'), "{text}");
        assert_eq!(lag.error.map(|e| e.code()), Some(1));
    }
}
