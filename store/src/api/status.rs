//! `/v1/status` and the health endpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::openapi::ErrorBody;
use crate::raft::node::{Node, NodeStatus};

/// Answer of `GET /health/live`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LiveJson {
    /// Always `ok`.
    pub status: &'static str,
}

/// Answer of `GET /health/ready`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ReadyJson {
    /// Always `ready`.
    pub status: &'static str,
    /// The leader this node follows.
    pub leader: Option<u64>,
    /// This node's applied revision.
    pub revision: u64,
}

/// `GET /v1/status`.
#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "status",
    responses((status = 200, description = "this node's view of the cluster", body = NodeStatus))
)]
pub async fn status(State(node): State<Arc<Node>>) -> Result<Json<NodeStatus>, ApiError> {
    Ok(Json(node.status()?))
}

/// `GET /health/live`: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/health/live",
    tag = "status",
    responses((status = 200, description = "the process serves HTTP", body = LiveJson))
)]
pub async fn live() -> Json<LiveJson> {
    Json(LiveJson { status: "ok" })
}

/// How long a readiness check may take.
pub const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /health/ready`: the node can serve linearizable requests now: a
/// leader with a quorum confirmed it (read-index barrier) and this node has
/// applied everything committed before the check.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "status",
    responses(
        (status = 200, description = "ready: a confirmed leader, this node caught up", body = ReadyJson),
        (status = 503, description = "`not_ready` (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn ready(State(node): State<Arc<Node>>) -> Result<Json<ReadyJson>, ApiError> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, node.linearizable_barrier()).await {
        Err(_) => Err(ApiError::NotReady(format!(
            "no confirmed leader within {READY_CHECK_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(ApiError::NotReady(e.to_string())),
        Ok(Ok(())) => {
            let status = node.status()?;
            Ok(Json(ReadyJson {
                status: "ready",
                leader: status.leader,
                revision: status.revision,
            }))
        }
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(node): State<Arc<Node>>) -> impl axum::response::IntoResponse {
    let (term, is_leader) = node.term_and_role();
    let applied = node.applied();
    let gauges = crate::metrics::NodeGauges {
        revision: applied.revision,
        compact_revision: applied.compact_revision,
        term,
        is_leader,
        applied_index: applied.log_index,
    };
    let body = node.metrics().render(&gauges);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
}
