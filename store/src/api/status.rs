//! `/v1/status` and the health endpoints.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::kv::AppState;
use crate::raft::node::NodeStatus;

/// `GET /v1/status`.
pub async fn status(State(node): State<AppState>) -> Result<Json<NodeStatus>, ApiError> {
    Ok(Json(node.status()?))
}

/// `GET /health/live`: the process is up and serving HTTP.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Largest gap between the committed and the applied log index for which a
/// node still calls itself ready.
pub const READY_MAX_APPLY_LAG: u64 = 1000;

/// `GET /health/ready`: the node knows a leader and has applied (nearly) all
/// it knows to be committed.
pub async fn ready(State(node): State<AppState>) -> Result<Json<Value>, ApiError> {
    let status = node.status()?;
    let Some(leader) = status.leader else {
        return Err(ApiError::NotReady("no leader is known".into()));
    };
    let lag = status.raft.committed.saturating_sub(status.raft.applied);
    if lag > READY_MAX_APPLY_LAG {
        return Err(ApiError::NotReady(format!("{lag} committed entries not yet applied")));
    }
    Ok(Json(json!({ "status": "ready", "leader": leader, "revision": status.revision })))
}
