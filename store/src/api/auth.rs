//! Bearer tokens on the client API, and the `/v1/auth/...` routes that
//! manage tokens and roles (see [`crate::kv::auth`]).
//!
//! [`authenticate`] runs before every handler. With auth off (the default,
//! and `ballastd dev`) every request is [`Principal::Anyone`]. With auth on:
//!
//! - `/health/*`, `/metrics` and `/openapi.json` stay open;
//! - any other route needs `Authorization: Bearer <token>`: none, an
//!   unknown, revoked or expired token is `401 unauthenticated`;
//! - membership, leadership, backups, compaction, auth management and the
//!   debug routes need an admin token (`403 permission_denied` otherwise);
//! - the key routes check each key and prefix against the token's role in
//!   their handlers ([`require`], [`require_command`]), after the request
//!   is parsed and before anything is proposed or read.
//!
//! A token is never logged and never echoed in an error: refusals name the
//! token's id at most.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use super::input::{parse_json, read_body, BodyKind};
use crate::kv::auth::{
    builtin_role, generate_token, Access, Principal, TokenRejection, BUILTIN_ROLES,
};
use crate::kv::sessions::wall_clock_ms;
use crate::kv::{AuthCommand, AuthOutcome, AuthRefusal, Command, CommandResponse, Role, RoleKind};
use crate::raft::node::{Node, NodeError};

/// Routes open with auth on: probes and metrics scrapers carry no token.
pub(crate) fn is_open(path: &str) -> bool {
    // The dashboard page holds no data: its own requests carry a token.
    path == "/metrics"
        || path == "/openapi.json"
        || path == "/ui"
        || path == "/ui/"
        || path.starts_with("/health/")
}

/// Routes only an admin token may use.
fn needs_admin(path: &str) -> bool {
    if path == "/v1/auth/whoami" {
        return false;
    }
    const ADMIN: [&str; 7] = [
        "/v1/members",
        "/v1/alarms/disarm",
        "/v1/leader",
        "/v1/snapshot",
        "/v1/compact",
        "/v1/auth",
        "/debug",
    ];
    ADMIN.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

fn unauthenticated(message: &str) -> Response {
    let mut response = ApiError::refused(ErrorCode::Unauthenticated, message).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The bearer token of a request, if it has a well-formed one.
fn bearer(req: &Request) -> Result<Option<&str>, &'static str> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not ASCII")?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or("the Authorization header must be `Bearer <token>`")?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err("the Authorization header must be `Bearer <token>`");
    }
    Ok(Some(token.trim()))
}

/// Resolves the request's token into a [`Principal`] (which the front
/// middleware puts in the request's extensions for the handlers), or the
/// refusal to answer.
pub fn authenticate(node: &Node, req: &Request) -> Result<Principal, Box<Response>> {
    let principal = {
        let Ok(table) = node.auth().read() else {
            return Err(Box::new(
                ApiError::Node(NodeError::Internal(
                    "the auth table lock is poisoned".into(),
                ))
                .into_response(),
            ));
        };
        if !table.enabled() || is_open(req.uri().path()) {
            Principal::Anyone
        } else {
            let token = match bearer(req) {
                Ok(Some(token)) => token,
                Ok(None) => {
                    return Err(Box::new(unauthenticated(
                        "this cluster requires a bearer token",
                    )))
                }
                Err(why) => return Err(Box::new(unauthenticated(why))),
            };
            match table.check(token, wall_clock_ms()) {
                Ok(p) => p,
                Err(TokenRejection::Unknown) => {
                    return Err(Box::new(unauthenticated(
                        "the token is not valid (unknown or revoked)",
                    )))
                }
                Err(TokenRejection::Expired) => {
                    return Err(Box::new(unauthenticated("the token has expired")))
                }
            }
        }
    };
    if !principal.is_admin() && needs_admin(req.uri().path()) {
        return Err(Box::new(
            denied(&principal, "this route needs an admin token").into_response(),
        ));
    }
    Ok(principal)
}

fn denied(principal: &Principal, what: &str) -> ApiError {
    let who = match principal {
        Principal::Anyone => String::new(),
        Principal::Token { id, role } => format!("token {id} (role {}): ", role.name),
    };
    ApiError::refused(ErrorCode::PermissionDenied, format!("{who}{what}"))
}

/// Refuses `access` to `key` (or the prefix `key`) that the principal's
/// role does not grant.
pub fn require(
    principal: &Principal,
    access: Access,
    key: &str,
    prefix: bool,
) -> Result<(), ApiError> {
    if principal.allows(access, key) {
        return Ok(());
    }
    let verb = match access {
        Access::Read => "read",
        Access::Write => "write",
    };
    let what = if prefix { "prefix" } else { "key" };
    Err(denied(
        principal,
        &format!("may not {verb} the {what} {key:?}"),
    ))
}

/// Refuses a write command that touches any key the principal's role does
/// not grant (every compare and op of a transaction).
pub fn require_command(principal: &Principal, command: &Command) -> Result<(), ApiError> {
    if principal.allows_command(command) {
        Ok(())
    } else {
        Err(denied(
            principal,
            "the request reads or writes keys outside the token's prefixes",
        ))
    }
}

/// Body of `POST /v1/auth/tokens`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenJson {
    /// The role's name.
    pub role: String,
    /// Seconds until the token expires (absent: never).
    pub ttl_secs: Option<u64>,
}

/// A token as listed: never the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenJson {
    /// The id, used to revoke it.
    pub id: String,
    /// The role's name.
    pub role: String,
    /// Creation time, ms since the Unix epoch.
    pub created_ms: u64,
    /// Expiry, ms since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// Answer to `POST /v1/auth/tokens`: the only time the secret is shown.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedTokenJson {
    /// The token to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What is stored of it.
    #[serde(flatten)]
    pub info: TokenJson,
}

/// Body of `POST /v1/auth/roles`, and a role as listed.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleJson {
    /// The name.
    pub name: String,
    /// `admin`, `writer` or `reader`.
    pub kind: String,
    /// Key prefixes (`""` is every key).
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Whether it is built in (ignored in a request).
    #[serde(default)]
    pub builtin: bool,
}

/// Answer to `GET /v1/auth/tokens`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenListJson {
    /// Whether auth is on in this cluster.
    pub enabled: bool,
    /// Every token, without its secret.
    pub tokens: Vec<TokenJson>,
}

/// Answer to `DELETE /v1/auth/tokens/{id}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedJson {
    /// The id of the revoked token.
    pub revoked: String,
}

/// Answer to `GET /v1/auth/roles`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleListJson {
    /// The built-in roles, then the custom ones.
    pub roles: Vec<RoleJson>,
}

/// Answer to `DELETE /v1/auth/roles/{name}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeletedRoleJson {
    /// The name of the deleted role.
    pub deleted: String,
}

/// Answer to `GET /v1/auth/whoami`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WhoamiJson {
    /// Whether auth is on in this cluster.
    pub enabled: bool,
    /// The calling token's id (absent without auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// The calling token's role (absent without auth).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<RoleJson>,
}

fn kind_name(kind: RoleKind) -> &'static str {
    match kind {
        RoleKind::Admin => "admin",
        RoleKind::Writer => "writer",
        RoleKind::Reader => "reader",
    }
}

fn role_json(role: Role, builtin: bool) -> RoleJson {
    RoleJson {
        name: role.name,
        kind: kind_name(role.kind).to_owned(),
        prefixes: role.prefixes,
        builtin,
    }
}

fn refusal(refusal: AuthRefusal, subject: &str) -> ApiError {
    let (code, message) = match refusal {
        AuthRefusal::AlreadyEnabled => (ErrorCode::AuthConflict, "auth is already on".to_owned()),
        AuthRefusal::UnknownRole => (ErrorCode::AuthNotFound, format!("no role {subject:?}")),
        AuthRefusal::UnknownToken => (ErrorCode::AuthNotFound, format!("no token {subject:?}")),
        AuthRefusal::RoleExists => (
            ErrorCode::AuthConflict,
            format!("a role {subject:?} exists"),
        ),
        AuthRefusal::TokenExists => (
            ErrorCode::AuthConflict,
            format!("a token {subject:?} exists"),
        ),
        AuthRefusal::RoleInUse => (
            ErrorCode::AuthConflict,
            format!("tokens still use the role {subject:?}: revoke them first"),
        ),
        AuthRefusal::BuiltinRole => (
            ErrorCode::InvalidRequest,
            format!("{subject:?} is a built-in role"),
        ),
        AuthRefusal::InvalidCommand => (
            ErrorCode::InvalidRequest,
            format!("invalid auth request for {subject:?}"),
        ),
    };
    ApiError::refused(code, message)
}

/// Proposes an auth change and answers once this node has applied it, so
/// that a token revoked (or created) through a node is refused (or accepted)
/// there from the answer on. A write forwarded to the leader is answered
/// when the leader has applied it; the read-index barrier afterwards waits
/// until this node has applied at least as far.
async fn propose(node: &Node, command: AuthCommand, subject: &str) -> Result<(), ApiError> {
    match node.write(Command::Auth(command)).await? {
        CommandResponse::Auth(AuthOutcome::Done) => {
            node.linearizable_barrier().await.map_err(|e| {
                ApiError::Node(NodeError::Timeout(format!(
                    "the change to {subject:?} was committed, but this node could not \
                     confirm that it has applied it ({e}); other nodes apply it as they \
                     catch up"
                )))
            })
        }
        CommandResponse::Auth(AuthOutcome::Refused(r)) => Err(refusal(r, subject)),
        other => Err(ApiError::Node(NodeError::Internal(format!(
            "unexpected state machine response {other:?}"
        )))),
    }
}

/// Most seconds a token's time to live may be (100 years), so its expiry
/// fits in milliseconds.
const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// `POST /v1/auth/tokens`: creates a token for a role and returns its
/// secret, this once. The secret is made on this node; only its hash goes
/// through Raft.
#[utoipa::path(
    post,
    path = "/v1/auth/tokens",
    tag = "auth",
    request_body(content = CreateTokenJson, content_type = "application/json"),
    responses(
        (status = 200, description = "the new token: its secret is shown this once", body = CreatedTokenJson),
        (status = 400, description = "`invalid_json`, `invalid_request` (a `ttl_secs` out of range)", body = super::openapi::ErrorBody),
        (status = 404, description = "`auth_not_found`: no such role", body = super::openapi::ErrorBody),
        (status = 409, description = "`auth_conflict`", body = super::openapi::ErrorBody),
        (status = 413, description = "`request_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`", body = super::openapi::ErrorBody),
    )
)]
pub async fn create_token(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CreatedTokenJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let req: CreateTokenJson = parse_json(&body, "invalid token request")?;
    if req.ttl_secs.is_some_and(|t| t == 0 || t > MAX_TTL_SECS) {
        return Err(ApiError::refused(
            ErrorCode::InvalidRequest,
            format!("ttl_secs must be 1 to {MAX_TTL_SECS}"),
        ));
    }
    let now = wall_clock_ms();
    let expires = req.ttl_secs.map(|t| now.saturating_add(t * 1000));
    let new = generate_token(&req.role, now, expires);
    node.limits()
        .check_command(&Command::Auth(AuthCommand::CreateToken(new.record.clone())))?;
    let info = TokenJson {
        id: new.record.id.clone(),
        role: new.record.role.clone(),
        created_ms: now,
        expires_ms: expires,
    };
    propose(&node, AuthCommand::CreateToken(new.record), &req.role).await?;
    tracing::info!(token = %info.id, role = %info.role, "token created");
    Ok(Json(CreatedTokenJson {
        token: new.secret,
        info,
    }))
}

/// The table, at least as new as every change acknowledged before.
async fn current(node: &Node) -> Result<crate::kv::auth::AuthTable, ApiError> {
    node.linearizable_barrier().await?;
    node.auth().read().map(|t| t.clone()).map_err(|_| {
        ApiError::Node(NodeError::Internal(
            "the auth table lock is poisoned".into(),
        ))
    })
}

/// `GET /v1/auth/tokens`: every token's id, role and times; never secrets.
#[utoipa::path(
    get,
    path = "/v1/auth/tokens",
    tag = "auth",
    responses(
        (status = 200, description = "every token, without secrets", body = TokenListJson),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`: the read barrier found no leader in time", body = super::openapi::ErrorBody),
    )
)]
pub async fn list_tokens(State(node): State<Arc<Node>>) -> Result<Json<TokenListJson>, ApiError> {
    let table = current(&node).await?;
    let tokens: Vec<TokenJson> = table
        .tokens()
        .map(|t| TokenJson {
            id: t.id.clone(),
            role: t.role.clone(),
            created_ms: t.created_ms,
            expires_ms: t.expires_ms,
        })
        .collect();
    Ok(Json(TokenListJson {
        enabled: table.enabled(),
        tokens,
    }))
}

/// `DELETE /v1/auth/tokens/{id}`: revokes a token on every node as each
/// applies the entry (the answer comes once this node has).
#[utoipa::path(
    delete,
    path = "/v1/auth/tokens/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "the token's id (from `GET /v1/auth/tokens`)")),
    responses(
        (status = 200, description = "revoked on every node as each applies it", body = RevokedJson),
        (status = 400, description = "`invalid_request`", body = super::openapi::ErrorBody),
        (status = 404, description = "`auth_not_found`: no such token", body = super::openapi::ErrorBody),
        (status = 413, description = "`request_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`", body = super::openapi::ErrorBody),
    )
)]
pub async fn revoke_token(
    State(node): State<Arc<Node>>,
    Path(id): Path<String>,
) -> Result<Json<RevokedJson>, ApiError> {
    propose(&node, AuthCommand::RevokeToken { id: id.clone() }, &id).await?;
    tracing::info!(token = %id, "token revoked");
    Ok(Json(RevokedJson { revoked: id }))
}

/// `POST /v1/auth/roles`: creates a custom role.
#[utoipa::path(
    post,
    path = "/v1/auth/roles",
    tag = "auth",
    request_body(content = RoleJson, content_type = "application/json"),
    responses(
        (status = 200, description = "the role as stored", body = RoleJson),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_key` (a prefix)", body = super::openapi::ErrorBody),
        (status = 409, description = "`auth_conflict`: a role of that name exists", body = super::openapi::ErrorBody),
        (status = 413, description = "`request_too_large`, `key_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`", body = super::openapi::ErrorBody),
    )
)]
pub async fn create_role(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<RoleJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let req: RoleJson = parse_json(&body, "invalid role")?;
    let kind = match req.kind.as_str() {
        "admin" => RoleKind::Admin,
        "writer" => RoleKind::Writer,
        "reader" => RoleKind::Reader,
        other => {
            return Err(ApiError::refused(
                ErrorCode::InvalidJson,
                format!("kind {other:?} must be admin, writer or reader"),
            ))
        }
    };
    if kind != RoleKind::Admin && req.prefixes.is_empty() {
        return Err(ApiError::refused(
            ErrorCode::InvalidRequest,
            "a writer or reader role needs at least one prefix (\"\" is every key)",
        ));
    }
    for p in req.prefixes.iter().filter(|p| !p.is_empty()) {
        node.limits().check_prefix(p)?;
    }
    let role = Role {
        name: req.name.clone(),
        kind,
        prefixes: req.prefixes,
    };
    let command = AuthCommand::PutRole(role.clone());
    node.limits()
        .check_command(&Command::Auth(command.clone()))?;
    propose(&node, command, &req.name).await?;
    tracing::info!(role = %role.name, "role created");
    Ok(Json(role_json(role, false)))
}

/// `GET /v1/auth/roles`: the built-in roles and the custom ones.
#[utoipa::path(
    get,
    path = "/v1/auth/roles",
    tag = "auth",
    responses(
        (status = 200, description = "the built-in roles, then the custom ones", body = RoleListJson),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`: the read barrier found no leader in time", body = super::openapi::ErrorBody),
    )
)]
pub async fn list_roles(State(node): State<Arc<Node>>) -> Result<Json<RoleListJson>, ApiError> {
    let table = current(&node).await?;
    let roles: Vec<RoleJson> = BUILTIN_ROLES
        .iter()
        .filter_map(|n| builtin_role(n))
        .map(|r| role_json(r, true))
        .chain(table.roles().cloned().map(|r| role_json(r, false)))
        .collect();
    Ok(Json(RoleListJson { roles }))
}

/// `DELETE /v1/auth/roles/{name}`: deletes a custom role no token uses.
#[utoipa::path(
    delete,
    path = "/v1/auth/roles/{name}",
    tag = "auth",
    params(("name" = String, Path, description = "the role's name")),
    responses(
        (status = 200, description = "deleted", body = DeletedRoleJson),
        (status = 400, description = "`invalid_request`: a built-in role", body = super::openapi::ErrorBody),
        (status = 404, description = "`auth_not_found`: no such role", body = super::openapi::ErrorBody),
        (status = 409, description = "`auth_conflict`: tokens still use it", body = super::openapi::ErrorBody),
        (status = 413, description = "`request_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `not_ready`", body = super::openapi::ErrorBody),
    )
)]
pub async fn delete_role(
    State(node): State<Arc<Node>>,
    Path(name): Path<String>,
) -> Result<Json<DeletedRoleJson>, ApiError> {
    let command = AuthCommand::DeleteRole { name: name.clone() };
    node.limits()
        .check_command(&Command::Auth(command.clone()))?;
    propose(&node, command, &name).await?;
    tracing::info!(role = %name, "role deleted");
    Ok(Json(DeletedRoleJson { deleted: name }))
}

/// `GET /v1/auth/whoami`: whether auth is on, and the caller's token id and
/// role (any valid token may ask).
#[utoipa::path(
    get,
    path = "/v1/auth/whoami",
    tag = "auth",
    responses((status = 200, description = "whether auth is on, and who is asking", body = WhoamiJson))
)]
pub async fn whoami(
    State(node): State<Arc<Node>>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Result<Json<WhoamiJson>, ApiError> {
    let enabled = node.auth().read().map(|t| t.enabled()).map_err(|_| {
        ApiError::Node(NodeError::Internal(
            "the auth table lock is poisoned".into(),
        ))
    })?;
    Ok(Json(match principal {
        Principal::Anyone => WhoamiJson {
            enabled,
            token_id: None,
            role: None,
        },
        Principal::Token { id, role } => WhoamiJson {
            enabled,
            token_id: Some(id),
            role: Some(role_json(role, false)),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_routes_are_matched_by_whole_segments() {
        for p in [
            "/v1/members",
            "/v1/members/3/promote",
            "/v1/leader/transfer",
            "/v1/snapshot",
            "/v1/compact",
            "/v1/auth/tokens",
            "/debug/failpoints",
        ] {
            assert!(needs_admin(p), "{p}");
        }
        for p in [
            "/v1/auth/whoami",
            "/v1/kv/v1/members",
            "/v1/compactx",
            "/v1/status",
            "/v1/txn",
        ] {
            assert!(!needs_admin(p), "{p}");
        }
        assert!(is_open("/health/ready") && is_open("/metrics") && is_open("/ui"));
        assert!(!is_open("/v1/status"));
    }
}
