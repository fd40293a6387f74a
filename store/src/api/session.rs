//! Client sessions on the wire (exactly-once writes, see
//! [`crate::kv::sessions`]): `POST /v1/sessions` registers one, and a write
//! carries its session as the query parameters `client`, `session`, `seq`
//! and `acked_below` (`PUT` and `DELETE`) or as a `session` object with the
//! same fields in its body (`POST /v1/txn`).
//!
//! Query parameters and body fields rather than headers: a node of a build
//! without sessions refuses unknown ones (`400`), so a write is never applied
//! there without its deduplication.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use super::input::{parse_json, read_body, BodyKind};
use super::openapi::ErrorBody;
use crate::kv::sessions::wall_clock_ms;
use crate::kv::{
    Command, CommandResponse, SessionCommand, SessionOp, SessionRefusal, SessionStamp,
};
use crate::raft::node::{Node, NodeError};

/// A session as a transaction body carries it (`"session": {...}`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionJson {
    /// The client id, 32 hex digits.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub client: String,
    /// The session, as `POST /v1/sessions` named it.
    pub session: u64,
    /// The write's sequence number, from 1.
    pub seq: u64,
    /// Every sequence number below this one has been answered.
    pub acked_below: u64,
}

/// The session a write carries, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteSession {
    client: u128,
    session: u64,
    seq: u64,
    acked_below: u64,
}

fn parse_client(client: &str) -> Option<u128> {
    (client.len() == 32 && client.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u128::from_str_radix(client, 16).ok())
        .flatten()
}

fn invalid_client(code: ErrorCode, client: &str) -> ApiError {
    ApiError::refused(
        code,
        format!("client {client:?} is not a client id (32 hex digits)"),
    )
}

impl WriteSession {
    /// The session of a `PUT` or `DELETE`, from its query parameters: all
    /// four or none.
    pub fn from_query(
        client: Option<String>,
        session: Option<u64>,
        seq: Option<u64>,
        acked_below: Option<u64>,
    ) -> Result<Option<Self>, ApiError> {
        match (client, session, seq, acked_below) {
            (None, None, None, None) => Ok(None),
            (Some(client), Some(session), Some(seq), Some(acked_below)) => Ok(Some(WriteSession {
                client: parse_client(&client)
                    .ok_or_else(|| invalid_client(ErrorCode::InvalidQuery, &client))?,
                session,
                seq,
                acked_below,
            })),
            _ => Err(ApiError::refused(
                ErrorCode::InvalidQuery,
                "a session write needs all of client, session, seq and acked_below",
            )),
        }
    }

    /// The session of a transaction, from its body.
    pub fn from_json(session: Option<SessionJson>) -> Result<Option<Self>, ApiError> {
        session
            .map(|s| {
                Ok(WriteSession {
                    client: parse_client(&s.client)
                        .ok_or_else(|| invalid_client(ErrorCode::InvalidJson, &s.client))?,
                    session: s.session,
                    seq: s.seq,
                    acked_below: s.acked_below,
                })
            })
            .transpose()
    }
}

/// The stamp a command gets on the node that receives it; the leader
/// stamps it again when it proposes.
fn local_stamp(node: &Node) -> SessionStamp {
    SessionStamp {
        now_ms: wall_clock_ms(),
        limits: node.options().sessions,
    }
}

/// `command`, as a write of `session` when there is one.
pub fn wrap(node: &Node, session: Option<WriteSession>, command: Command) -> Command {
    match session {
        None => command,
        Some(s) => Command::Session(SessionCommand {
            client: s.client,
            stamp: local_stamp(node),
            op: SessionOp::Write {
                session: s.session,
                seq: s.seq,
                acked_below: s.acked_below,
                command: Box::new(command),
            },
        }),
    }
}

/// What the state machine answered, with a refused session write as its
/// error.
pub fn answer(response: CommandResponse) -> Result<CommandResponse, ApiError> {
    match response {
        CommandResponse::SessionExpired { reason } => Err(ApiError::SessionExpired(reason)),
        other => Ok(other),
    }
}

/// The wire name of a refusal (`error.reason`).
pub fn refusal_name(reason: SessionRefusal) -> &'static str {
    match reason {
        SessionRefusal::UnknownSession => "unknown_session",
        SessionRefusal::ResultForgotten => "result_forgotten",
    }
}

/// `POST /v1/sessions` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterJson {
    /// The client id, 32 hex digits, chosen at random by the client.
    #[schema(pattern = "^[0-9a-fA-F]{32}$")]
    pub client: String,
}

/// Answer to `POST /v1/sessions`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegisteredJson {
    /// The client id.
    pub client: String,
    /// The session its writes carry from now on.
    pub session: u64,
}

/// `POST /v1/sessions`: opens a session for a client, or names the one it
/// has. Goes through Raft like a write; safe to retry.
#[utoipa::path(
    post,
    path = "/v1/sessions",
    tag = "kv",
    request_body = RegisterJson,
    responses(
        (status = 200, description = "the client's session", body = RegisteredJson),
        (status = 400, description = "`invalid_json`, `invalid_request`", body = ErrorBody),
        (status = 413, description = "`request_too_large`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `too_many_requests` (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn register(
    State(node): State<Arc<Node>>,
    axum::Extension(principal): axum::Extension<crate::kv::auth::Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RegisteredJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let parsed: RegisterJson = parse_json(&body, "invalid session registration JSON")?;
    let client = parse_client(&parsed.client)
        .ok_or_else(|| invalid_client(ErrorCode::InvalidJson, &parsed.client))?;
    let command = Command::Session(SessionCommand {
        client,
        stamp: local_stamp(&node),
        op: SessionOp::Register,
    });
    super::auth::require_command(&principal, &command)?;
    match node.write(command).await? {
        CommandResponse::Registered { session } => Ok(Json(RegisteredJson {
            client: format!("{client:032x}"),
            session,
        })),
        other => Err(ApiError::Node(NodeError::Internal(format!(
            "unexpected state machine response {other:?}"
        )))),
    }
}
