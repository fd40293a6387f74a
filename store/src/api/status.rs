//! `/v1/status` and the health endpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use crate::raft::node::{Node, NodeStatus};

/// `GET /v1/status`.
pub async fn status(State(node): State<Arc<Node>>) -> Result<Json<NodeStatus>, ApiError> {
    Ok(Json(node.status()?))
}

/// `GET /health/live`: the process is up and serving HTTP.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// How long a readiness check may take.
pub const READY_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /health/ready`: the node can serve linearizable requests now: a
/// leader with a quorum confirmed it (read-index barrier) and this node has
/// applied everything committed before the check.
pub async fn ready(State(node): State<Arc<Node>>) -> Result<Json<Value>, ApiError> {
    match tokio::time::timeout(READY_CHECK_TIMEOUT, node.linearizable_barrier()).await {
        Err(_) => Err(ApiError::NotReady(format!(
            "no confirmed leader within {READY_CHECK_TIMEOUT:?}"
        ))),
        Ok(Err(e)) => Err(ApiError::NotReady(e.to_string())),
        Ok(Ok(())) => {
            let status = node.status()?;
            Ok(Json(
                json!({ "status": "ready", "leader": status.leader, "revision": status.revision }),
            ))
        }
    }
}

/// `GET /metrics`: Prometheus text format.
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
