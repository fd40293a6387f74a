//! `/v1/status` and the health endpoints.

use std::sync::Arc;

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::ApiError;
use super::input::ApiQuery;
use crate::metrics;
use crate::raft::node::{Node, NodeStatus};
use crate::raft::observe::{DataPlaneStatus, QuorumStatus};

/// How long `/v1/status` waits for each other member's replica reports.
const DATA_PLANE_PEER_TIMEOUT: Duration = Duration::from_millis(300);

/// Query of `GET /v1/status`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Include the data-plane view, which asks every other member for its
    /// replica reports (default true; `false` answers from this node alone).
    pub data_plane: Option<bool>,
}

/// What `/v1/status` answers: the node's Raft and key-space status, its
/// quorum, its size on disk and the data-plane view.
#[derive(Debug, Serialize)]
pub struct StatusJson {
    /// The node's status.
    #[serde(flatten)]
    pub node: NodeStatus,
    /// Committed log index known to this node (also `raft.committed`).
    pub commit_index: u64,
    /// Last applied log index (also `raft.applied`).
    pub applied_index: u64,
    /// The quorum as this node sees it.
    pub quorum: QuorumStatus,
    /// The key space's size on disk.
    pub db: DbJson,
    /// Watch streams open on this node.
    pub watch_streams: i64,
    /// Replicas and rollout convergence of the latest revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneStatus>,
}

/// The key space's size on disk and the quota.
#[derive(Debug, Serialize)]
pub struct DbJson {
    /// SST files plus memtables: what the quota is checked against.
    pub size_bytes: u64,
    /// Live SST files.
    pub sst_bytes: u64,
    /// Memtables not yet flushed.
    pub memtable_bytes: u64,
    /// The storage quota (0: none).
    pub quota_bytes: u64,
}

/// `GET /v1/status`.
pub async fn status(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> Result<Json<StatusJson>, ApiError> {
    let status = node.status()?;
    let size = node.db_size();
    let data_plane = if q.data_plane.unwrap_or(true) {
        Some(node.data_plane(DATA_PLANE_PEER_TIMEOUT).await)
    } else {
        None
    };
    Ok(Json(StatusJson {
        commit_index: status.raft.committed,
        applied_index: status.raft.applied,
        node: status,
        quorum: node.quorum(),
        db: DbJson {
            size_bytes: size.total(),
            sst_bytes: size.sst_bytes,
            memtable_bytes: size.memtable_bytes,
            quota_bytes: node.options().quota_bytes,
        },
        watch_streams: node.metrics().watchers_open.get(),
        data_plane,
    }))
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

/// `GET /metrics`: the OpenMetrics text format (which Prometheus scrapes).
pub async fn metrics(State(node): State<Arc<Node>>) -> impl axum::response::IntoResponse {
    let body = node.metrics().render(&node.gauges());
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        body,
    )
}
