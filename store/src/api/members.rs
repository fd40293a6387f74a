//! Membership and leadership (admin): `GET/POST /v1/members`,
//! `DELETE /v1/members/{id}`, `POST /v1/members/{id}/promote` and
//! `POST /v1/leader/transfer`. Any node answers; the leader decides (see
//! `raft::membership`). And, for any token, `GET /v1/endpoints`: the voters'
//! client addresses, answered by each node from its own state.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use super::input::{parse_json, read_body, ApiQuery, BodyKind};
use super::kv::Consistency;
use super::openapi::ErrorBody;
use crate::config::check_host_port;
use crate::raft::membership::{AdminRequest, AdminResponse, EndpointsView, MembersView};
use crate::raft::node::Node;
use crate::raft::types::{Member, NodeId};

/// Body of `POST /v1/members`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMember {
    /// The new node's id (non-zero).
    #[schema(minimum = 1)]
    pub id: NodeId,
    /// Its client listener, `host:port`.
    pub client_addr: String,
    /// Its peer listener, `host:port`.
    pub peer_addr: String,
}

/// Body of `POST /v1/leader/transfer`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// The voter to hand leadership to.
    #[schema(minimum = 1)]
    pub to: NodeId,
}

/// Answer of `POST /v1/leader/transfer`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferredJson {
    /// The new leader.
    pub leader: NodeId,
    /// Its term.
    pub term: u64,
}

fn members(answer: AdminResponse) -> Result<Json<MembersView>, ApiError> {
    match answer {
        AdminResponse::Members(view) => Ok(Json(view)),
        AdminResponse::Transferred { .. } => Err(ApiError::refused(
            ErrorCode::Internal,
            "the leader answered a membership request with a transfer",
        )),
    }
}

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    raw.parse::<NodeId>()
        .ok()
        .filter(|id| *id != 0)
        .ok_or_else(|| {
            ApiError::refused(
                ErrorCode::InvalidRequest,
                format!("{raw:?} is not a node id (a positive integer)"),
            )
        })
}

fn refused(message: String) -> ApiError {
    ApiError::refused(ErrorCode::InvalidRequest, message)
}

/// Query of `GET /v1/endpoints`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EndpointsQuery {
    /// `linearizable` (default): after a read-index barrier, so the answer
    /// holds every membership change committed before the request;
    /// `serializable`: this node's state at once, also without a leader.
    #[serde(default)]
    pub consistency: Consistency,
}

/// `GET /v1/endpoints`: the voters' client addresses, for clients that
/// follow membership changes. Any node answers from its own state; any
/// token may ask.
#[utoipa::path(
    get,
    path = "/v1/endpoints",
    tag = "status",
    params(EndpointsQuery),
    responses(
        (status = 200, description = "the voters of the committed membership with their client addresses", body = EndpointsView),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`: the read barrier found no leader in time (linearizable only)", body = ErrorBody),
    )
)]
pub async fn endpoints(
    State(node): State<Arc<Node>>,
    ApiQuery(q): ApiQuery<EndpointsQuery>,
) -> Result<Json<EndpointsView>, ApiError> {
    if q.consistency == Consistency::Linearizable {
        node.linearizable_barrier().await?;
    }
    Ok(Json(node.endpoints_view()))
}

/// `GET /v1/members`: the members with the leader's view of their progress.
#[utoipa::path(
    get,
    path = "/v1/members",
    tag = "admin",
    responses(
        (status = 200, description = "the membership as the leader sees it", body = MembersView),
        (status = 429, description = "`too_many_admin_requests` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout` (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn list(State(node): State<Arc<Node>>) -> Result<Json<MembersView>, ApiError> {
    members(node.admin(AdminRequest::Members).await?)
}

/// `POST /v1/members`: adds a learner.
#[utoipa::path(
    post,
    path = "/v1/members",
    tag = "admin",
    request_body = AddMember,
    responses(
        (status = 200, description = "added; the membership after the change", body = MembersView),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ErrorBody),
        (status = 409, description = "`member_exists`, `change_in_progress`", body = ErrorBody),
        (status = 413, description = "`request_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_admin_requests` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`: a change may still take effect (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn add(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<MembersView>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let add: AddMember = parse_json(&body, "invalid member")?;
    if add.id == 0 {
        return Err(refused("node ids must be non-zero".into()));
    }
    check_host_port("client_addr", &add.client_addr).map_err(|e| refused(e.to_string()))?;
    check_host_port("peer_addr", &add.peer_addr).map_err(|e| refused(e.to_string()))?;
    let request = AdminRequest::AddLearner {
        id: add.id,
        member: Member {
            client_addr: add.client_addr,
            peer_addr: add.peer_addr,
        },
    };
    members(node.admin(request).await?)
}

/// `POST /v1/members/{id}/promote`: makes a caught-up learner a voter.
#[utoipa::path(
    post,
    path = "/v1/members/{id}/promote",
    tag = "admin",
    params(("id" = String, Path, description = "the learner's node id")),
    responses(
        (status = 200, description = "promoted; the membership after the change", body = MembersView),
        (status = 400, description = "`invalid_request` (not a node id)", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`member_exists` (already a voter), `change_in_progress`, `learner_not_ready`, `would_lose_quorum`", body = ErrorBody),
        (status = 429, description = "`too_many_admin_requests` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`: a change may still take effect (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn promote(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<MembersView>, ApiError> {
    let id = node_id(&id)?;
    members(node.admin(AdminRequest::Promote { id }).await?)
}

/// `DELETE /v1/members/{id}`: removes a member (the leader too).
#[utoipa::path(
    delete,
    path = "/v1/members/{id}",
    tag = "admin",
    params(("id" = String, Path, description = "the member's node id")),
    responses(
        (status = 200, description = "removed; the membership after the change", body = MembersView),
        (status = 400, description = "`invalid_request` (not a node id)", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`change_in_progress`, `would_lose_quorum`", body = ErrorBody),
        (status = 429, description = "`too_many_admin_requests` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`: a change may still take effect (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn remove(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<MembersView>, ApiError> {
    let id = node_id(&id)?;
    members(node.admin(AdminRequest::Remove { id }).await?)
}

/// `POST /v1/leader/transfer`: hands leadership to a voter.
#[utoipa::path(
    post,
    path = "/v1/leader/transfer",
    tag = "admin",
    request_body = Transfer,
    responses(
        (status = 200, description = "the voter now leads", body = TransferredJson),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ErrorBody),
        (status = 404, description = "`member_not_found`", body = ErrorBody),
        (status = 409, description = "`change_in_progress`, `member_exists`", body = ErrorBody),
        (status = 413, description = "`request_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_admin_requests` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`: a change may still take effect (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn transfer(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TransferredJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let transfer: Transfer = parse_json(&body, "invalid transfer")?;
    if transfer.to == 0 {
        return Err(refused("node ids must be non-zero".into()));
    }
    match node
        .admin(AdminRequest::TransferLeader { to: transfer.to })
        .await?
    {
        AdminResponse::Transferred { leader, term } => Ok(Json(TransferredJson { leader, term })),
        AdminResponse::Members(_) => Err(ApiError::refused(
            ErrorCode::Internal,
            "the leader answered a transfer with a membership",
        )),
    }
}
