//! `/v1/status` and the health endpoints.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::input::ApiQuery;
use super::openapi::ErrorBody;
use crate::metrics;
use crate::raft::node::{Node, NodeStatus};
use crate::raft::observe::{DataPlaneStatus, QuorumStatus};

/// How long `/v1/status` waits for each other member's replica reports.
const DATA_PLANE_PEER_TIMEOUT: Duration = Duration::from_millis(300);

/// Query of `GET /v1/status`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// Include the data-plane view, which asks every other member for its
    /// replica reports (default true; `false` answers from this node alone).
    pub data_plane: Option<bool>,
}

/// What `/v1/status` answers: the node's Raft and key-space status, its
/// quorum, its size on disk and the data-plane view.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
    /// Watch streams open on every member, as each answered (with the
    /// data-plane view: absent with `data_plane=false`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_watch_streams: Option<Vec<MemberWatchStreams>>,
    /// Active alarms (a `nospace` alarm refuses writes that could add data
    /// on every node).
    pub alarms: Vec<super::alarms::AlarmJson>,
    /// Free space of this node's data directory (absent when not watched).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskJson>,
    /// Replicas and rollout convergence of the latest revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneStatus>,
    /// Why this node is no longer a member, once it was removed from the
    /// cluster (it then serves only its status, probes and dashboard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

/// One member's open watch streams.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MemberWatchStreams {
    /// The member.
    pub node_id: u64,
    /// Its open watch streams; `null` when it did not answer in time.
    pub watch_streams: Option<u64>,
}

/// The key space's size on disk and the quota.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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

/// Free space of the data directory's filesystem.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DiskJson {
    /// Free bytes at the last measurement.
    pub free_bytes: u64,
    /// The floor (`--min-free-bytes`): below it the node raises a `nospace`
    /// alarm.
    pub min_free_bytes: u64,
    /// Whether the reserve file (`--reserve-bytes`) is in place.
    pub reserve_present: bool,
}

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
    params(StatusQuery),
    responses(
        (status = 200, description = "this node's view of the cluster, its quorum, its size on disk and (unless `data_plane=false`) the data plane", body = StatusJson),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
    )
)]
pub async fn status(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<StatusQuery>,
) -> Result<Json<StatusJson>, ApiError> {
    let status = node.status()?;
    let size = node.db_size();
    let (data_plane, member_watch_streams) = if q.data_plane.unwrap_or(true) {
        let (data_plane, watches) = tokio::join!(
            node.data_plane(DATA_PLANE_PEER_TIMEOUT),
            node.member_watch_streams(DATA_PLANE_PEER_TIMEOUT)
        );
        let watches = watches
            .into_iter()
            .map(|(node_id, watch_streams)| MemberWatchStreams {
                node_id,
                watch_streams,
            })
            .collect();
        (Some(data_plane), Some(watches))
    } else {
        (None, None)
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
        member_watch_streams,
        alarms: super::alarms::active(&node),
        disk: node.disk_space().map(|space| DiskJson {
            free_bytes: space.free(),
            min_free_bytes: space.options().min_free_bytes,
            reserve_present: space.reserve_present(),
        }),
        data_plane,
        removed: node.removed(),
    }))
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

/// `GET /metrics`: the OpenMetrics text format (which Prometheus scrapes).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "status",
    responses((status = 200, description = "OpenMetrics text format", content_type = "application/openmetrics-text", body = String))
)]
pub async fn metrics(State(node): State<Arc<Node>>) -> impl axum::response::IntoResponse {
    node.metrics()
        .set_alarms(node.alarms().iter().map(|a| (a.kind.as_str(), a.member)));
    let body = node.metrics().render(&node.gauges());
    (
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        body,
    )
}
