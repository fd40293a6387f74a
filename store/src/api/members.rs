//! Membership and leadership (admin): `GET/POST /v1/members`,
//! `DELETE /v1/members/{id}`, `POST /v1/members/{id}/promote` and
//! `POST /v1/leader/transfer`. Any node answers; the leader decides (see
//! `raft::membership`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiError, ErrorCode};
use super::input::{parse_json, read_body, BodyKind};
use crate::config::check_host_port;
use crate::raft::membership::{AdminRequest, AdminResponse, MembersView};
use crate::raft::node::Node;
use crate::raft::types::{Member, NodeId};

/// Body of `POST /v1/members`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: NodeId,
    client_addr: String,
    peer_addr: String,
}

/// Body of `POST /v1/leader/transfer`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Transfer {
    to: NodeId,
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

/// `GET /v1/members`: the members with the leader's view of their progress.
pub async fn list(State(node): State<Arc<Node>>) -> Result<Json<MembersView>, ApiError> {
    members(node.admin(AdminRequest::Members).await?)
}

/// `POST /v1/members`: adds a learner.
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
pub async fn promote(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<MembersView>, ApiError> {
    let id = node_id(&id)?;
    members(node.admin(AdminRequest::Promote { id }).await?)
}

/// `DELETE /v1/members/{id}`: removes a member (the leader too).
pub async fn remove(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<MembersView>, ApiError> {
    let id = node_id(&id)?;
    members(node.admin(AdminRequest::Remove { id }).await?)
}

/// `POST /v1/leader/transfer`: hands leadership to a voter.
pub async fn transfer(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let transfer: Transfer = parse_json(&body, "invalid transfer")?;
    if transfer.to == 0 {
        return Err(refused("node ids must be non-zero".into()));
    }
    match node
        .admin(AdminRequest::TransferLeader { to: transfer.to })
        .await?
    {
        AdminResponse::Transferred { leader, term } => {
            Ok(Json(json!({ "leader": leader, "term": term })))
        }
        AdminResponse::Members(_) => Err(ApiError::refused(
            ErrorCode::Internal,
            "the leader answered a transfer with a membership",
        )),
    }
}
