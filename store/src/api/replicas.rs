//! `POST /v1/replicas/report` and `GET /v1/replicas`: closing the loop between
//! the data plane and the control plane.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use super::input::{parse_json, read_body, ApiQuery, BodyKind};
use super::openapi::ErrorBody;
use crate::raft::node::Node;
use crate::replicas::{ReplicaEntry, ReplicaReport, MAX_REPLICA_ID_BYTES};

/// How long `GET /v1/replicas` waits for each other node.
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// `POST /v1/replicas/report`: a replica says which revision it applied.
/// Kept in memory on this node only; never goes through Raft.
#[utoipa::path(
    post,
    path = "/v1/replicas/report",
    tag = "replicas",
    request_body = ReplicaReport,
    responses(
        (status = 200, description = "recorded on this node", body = ReportedJson),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_key` (the prefix)", body = ErrorBody),
        (status = 413, description = "`key_too_large` (the prefix), `request_too_large`", body = ErrorBody),
    )
)]
pub async fn report(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ReportedJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let report: ReplicaReport = parse_json(&body, "invalid replica report")?;
    if report.id.is_empty() || report.id.len() > MAX_REPLICA_ID_BYTES {
        return Err(ApiError::refused(
            ErrorCode::InvalidRequest,
            format!("replica id must be 1 to {MAX_REPLICA_ID_BYTES} bytes"),
        ));
    }
    node.limits().check_prefix(&report.prefix)?;
    node.replicas().record(report);
    Ok(Json(ReportedJson {
        revision: node.applied().revision,
    }))
}

/// Answer of `POST /v1/replicas/report`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReportedJson {
    /// This node's applied revision.
    pub revision: u64,
}

/// Query of `GET /v1/replicas`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplicasQuery {
    /// Summarize the rollout of this revision.
    pub revision: Option<u64>,
}

/// A replica that has not applied the rollout revision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Lagging {
    /// Replica id.
    pub id: String,
    /// Revision it applied.
    pub revision: u64,
    /// How many revisions it is behind the rollout revision.
    pub behind: u64,
}

/// Rollout convergence of one revision.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Rollout {
    /// The revision asked about.
    pub revision: u64,
    /// Replicas reporting.
    pub total: usize,
    /// Replicas at or past it.
    pub applied: usize,
    /// The others, furthest behind first.
    pub lagging: Vec<Lagging>,
}

/// Answer of `GET /v1/replicas`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReplicasJson {
    /// This node's applied revision.
    pub revision: u64,
    /// Members whose reports are included.
    pub nodes_answered: Vec<u64>,
    /// Members that did not answer in time (their reports are missing).
    pub nodes_unreachable: Vec<u64>,
    /// Every replica, freshest report each.
    #[schema(value_type = Vec<super::openapi::ReplicaEntryJson>)]
    pub replicas: Vec<ReplicaEntry>,
    /// With `?revision=R`: how far the rollout of R has converged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// `GET /v1/replicas`: the merged view of every node's reports.
#[utoipa::path(
    get,
    path = "/v1/replicas",
    tag = "replicas",
    params(ReplicasQuery),
    responses(
        (status = 200, description = "every member's replica reports, merged", body = ReplicasJson),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
    )
)]
pub async fn list(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<ReplicasQuery>,
) -> Result<Json<ReplicasJson>, ApiError> {
    let (replicas, nodes_answered, nodes_unreachable) = node.merged_replicas(PEER_TIMEOUT).await;
    let rollout = q.revision.map(|target| {
        let mut lagging: Vec<Lagging> = replicas
            .iter()
            .filter(|r| r.report.revision < target)
            .map(|r| Lagging {
                id: r.report.id.clone(),
                revision: r.report.revision,
                behind: target - r.report.revision,
            })
            .collect();
        lagging.sort_by(|a, b| b.behind.cmp(&a.behind).then(a.id.cmp(&b.id)));
        Rollout {
            revision: target,
            total: replicas.len(),
            applied: replicas.len() - lagging.len(),
            lagging,
        }
    });
    Ok(Json(ReplicasJson {
        revision: node.applied().revision,
        nodes_answered,
        nodes_unreachable,
        replicas,
        rollout,
    }))
}
