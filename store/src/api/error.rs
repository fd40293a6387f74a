//! The one place where errors become HTTP responses: every error has an
//! [`ErrorCode`], and the code decides the status.
//!
//! | code | status | meaning |
//! |---|---|---|
//! | `invalid_key`, `invalid_query`, `invalid_json`, `invalid_request`, `too_many_ops`, `compacted`, `future_revision` | 400 | the request is wrong |
//! | `unauthenticated` | 401 | auth is on and the request has no valid bearer token (missing, unknown, revoked or expired) |
//! | `permission_denied` | 403 | the token's role does not allow this route, key or prefix |
//! | `key_not_found`, `not_found`, `member_not_found`, `auth_not_found` | 404 | no such key / route / member / token or role |
//! | `method_not_allowed` | 405 | wrong method for the route |
//! | `change_in_progress`, `learner_not_ready`, `would_lose_quorum`, `member_exists` | 409 | a membership change refused as things stand |
//! | `auth_conflict` | 409 | a token or role change refused as things stand (exists, in use) |
//! | `removed` | 410 | this node was removed from the cluster |
//! | `session_expired` | 410 | a session write not applied: its session or its result is gone, so an earlier attempt's outcome is unknown |
//! | `key_too_large`, `value_too_large`, `request_too_large` | 413 | over a configured limit |
//! | `uri_too_long` | 414 | the request target is over `--max-uri-bytes` |
//! | `headers_too_large` | 431 | the request headers are over `--max-header-bytes` |
//! | `no_leader` | 503 | no leader reachable: not applied, retry (`Retry-After`) |
//! | `timeout` | 503 | no answer in time: a write may or may not have taken effect |
//! | `too_many_requests` | 503 | the leader's backlog is full: not applied, retry (`Retry-After`) |
//! | `not_ready` | 503 | the node is not ready to serve |
//! | `too_many_watchers` | 429 | the node's watch stream limit is reached (`Retry-After`) |
//! | `snapshot_in_progress` | 429 | the node is already streaming a backup (`Retry-After`) |
//! | `too_many_admin_requests` | 429 | an admin route already serves `--max-admin-requests` requests (`Retry-After`) |
//! | `too_many_range_reads` | 429 | the node's range reads hold all their stream slots or buffer (`Retry-After`) |
//! | `too_many_bootstraps` | 429 | the node serves its maximum of replica bootstraps at once (`Retry-After`) |
//! | `too_many_catchups` | 429 | the node replays history for its maximum of watches at once (`Retry-After`) |
//! | `internal` | 500 | a fault on the node (storage) |

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::session::refusal_name;
use crate::kv::{KvError, SessionRefusal};
use crate::raft::membership::AdminError;
use crate::raft::node::NodeError;
use crate::raft::types::{Member, NodeId};

/// Header naming the leader's client URL on a `503 no_leader`.
pub const LEADER_HEADER: &str = "x-ballast-leader";
/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// The stable `error.code` of a failed request. Each code has one status;
/// [`ErrorCode::as_str`] is what goes on the wire and in docs/api.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The key is empty, has a NUL, or its path spelling is malformed.
    InvalidKey,
    /// An unknown query parameter, a malformed value or a bad combination.
    InvalidQuery,
    /// A JSON body that does not follow the endpoint's grammar.
    InvalidJson,
    /// A request that is well-formed but not allowed, or a body that cannot be read.
    InvalidRequest,
    /// A transaction with too many compares or ops.
    TooManyOps,
    /// A revision below the compact revision.
    Compacted,
    /// A revision above the node's current revision.
    FutureRevision,
    /// The key does not exist (at the revision read).
    KeyNotFound,
    /// No such endpoint.
    NotFound,
    /// The endpoint exists, the method does not.
    MethodNotAllowed,
    /// A key or prefix over the key limit.
    KeyTooLarge,
    /// A value (or a `PUT` body) over the value limit.
    ValueTooLarge,
    /// A whole request (a transaction, a JSON body) over the request limit.
    RequestTooLarge,
    /// A request target (path and query) over the URI limit.
    UriTooLong,
    /// Request headers over the header limit.
    HeadersTooLarge,
    /// An admin route already serves its maximum of requests at once.
    TooManyAdminRequests,
    /// No leader reachable: not applied, retry.
    NoLeader,
    /// No answer in time: a write may or may not have taken effect.
    Timeout,
    /// The leader's backlog is full: not applied, retry.
    TooManyRequests,
    /// The node is not ready to serve.
    NotReady,
    /// The node's watch stream limit is reached.
    TooManyWatchers,
    /// The node is already streaming a backup.
    SnapshotInProgress,
    /// The node's range reads hold all their stream slots or buffer.
    TooManyRangeReads,
    /// The node serves its maximum of replica bootstraps at once.
    TooManyBootstraps,
    /// The node replays history for its maximum of watches at once.
    TooManyCatchups,
    /// A fault on the node.
    Internal,
    /// No such member.
    MemberNotFound,
    /// Another membership change is in flight.
    ChangeInProgress,
    /// The learner has not caught up (or is unreachable).
    LearnerNotReady,
    /// The change would leave the cluster without a working quorum.
    WouldLoseQuorum,
    /// The node id or address is taken.
    MemberExists,
    /// This node was removed from the cluster.
    Removed,
    /// A session write was refused: its session, or the result of its
    /// sequence number, is gone.
    SessionExpired,
    /// Auth is on and the request carries no valid token.
    Unauthenticated,
    /// The token's role does not allow the request.
    PermissionDenied,
    /// No such token or role.
    AuthNotFound,
    /// A token or role change refused as things stand.
    AuthConflict,
    /// The key space is over its storage quota: writes that could add data
    /// are refused until deletes and compaction bring it back under.
    QuotaExceeded,
    /// A member is short of disk space (a `nospace` alarm): writes that
    /// could add data are refused until space is freed and the alarm
    /// disarmed.
    NoSpace,
}

impl ErrorCode {
    /// Every code, in the order of the table above.
    pub const ALL: [ErrorCode; 39] = [
        ErrorCode::InvalidKey,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidJson,
        ErrorCode::InvalidRequest,
        ErrorCode::TooManyOps,
        ErrorCode::Compacted,
        ErrorCode::FutureRevision,
        ErrorCode::KeyNotFound,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::KeyTooLarge,
        ErrorCode::ValueTooLarge,
        ErrorCode::RequestTooLarge,
        ErrorCode::NoLeader,
        ErrorCode::Timeout,
        ErrorCode::TooManyRequests,
        ErrorCode::NotReady,
        ErrorCode::TooManyWatchers,
        ErrorCode::SnapshotInProgress,
        ErrorCode::TooManyRangeReads,
        ErrorCode::TooManyBootstraps,
        ErrorCode::TooManyCatchups,
        ErrorCode::Internal,
        ErrorCode::MemberNotFound,
        ErrorCode::ChangeInProgress,
        ErrorCode::LearnerNotReady,
        ErrorCode::WouldLoseQuorum,
        ErrorCode::MemberExists,
        ErrorCode::Removed,
        ErrorCode::SessionExpired,
        ErrorCode::UriTooLong,
        ErrorCode::HeadersTooLarge,
        ErrorCode::TooManyAdminRequests,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::AuthNotFound,
        ErrorCode::AuthConflict,
        ErrorCode::QuotaExceeded,
        ErrorCode::NoSpace,
    ];

    /// The code as it appears in `{"error": {"code": ...}}`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidKey => "invalid_key",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::TooManyOps => "too_many_ops",
            ErrorCode::Compacted => "compacted",
            ErrorCode::FutureRevision => "future_revision",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::KeyTooLarge => "key_too_large",
            ErrorCode::ValueTooLarge => "value_too_large",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::NoLeader => "no_leader",
            ErrorCode::Timeout => "timeout",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::TooManyWatchers => "too_many_watchers",
            ErrorCode::SnapshotInProgress => "snapshot_in_progress",
            ErrorCode::TooManyRangeReads => "too_many_range_reads",
            ErrorCode::TooManyBootstraps => "too_many_bootstraps",
            ErrorCode::TooManyCatchups => "too_many_catchups",
            ErrorCode::Internal => "internal",
            ErrorCode::MemberNotFound => "member_not_found",
            ErrorCode::ChangeInProgress => "change_in_progress",
            ErrorCode::LearnerNotReady => "learner_not_ready",
            ErrorCode::WouldLoseQuorum => "would_lose_quorum",
            ErrorCode::MemberExists => "member_exists",
            ErrorCode::Removed => "removed",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::UriTooLong => "uri_too_long",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::TooManyAdminRequests => "too_many_admin_requests",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::AuthNotFound => "auth_not_found",
            ErrorCode::AuthConflict => "auth_conflict",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NoSpace => "no_space",
        }
    }

    /// The HTTP status every error with this code answers.
    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::InvalidKey
            | ErrorCode::InvalidQuery
            | ErrorCode::InvalidJson
            | ErrorCode::InvalidRequest
            | ErrorCode::TooManyOps
            | ErrorCode::Compacted
            | ErrorCode::FutureRevision => StatusCode::BAD_REQUEST,
            ErrorCode::KeyNotFound
            | ErrorCode::NotFound
            | ErrorCode::MemberNotFound
            | ErrorCode::AuthNotFound => StatusCode::NOT_FOUND,
            ErrorCode::ChangeInProgress
            | ErrorCode::LearnerNotReady
            | ErrorCode::WouldLoseQuorum
            | ErrorCode::MemberExists
            | ErrorCode::AuthConflict => StatusCode::CONFLICT,
            ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => StatusCode::FORBIDDEN,
            ErrorCode::Removed | ErrorCode::SessionExpired => StatusCode::GONE,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::KeyTooLarge | ErrorCode::ValueTooLarge | ErrorCode::RequestTooLarge => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ErrorCode::NoLeader
            | ErrorCode::Timeout
            | ErrorCode::TooManyRequests
            | ErrorCode::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorCode::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorCode::TooManyWatchers
            | ErrorCode::SnapshotInProgress
            | ErrorCode::TooManyRangeReads
            | ErrorCode::TooManyAdminRequests
            | ErrorCode::TooManyBootstraps
            | ErrorCode::TooManyCatchups => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::QuotaExceeded | ErrorCode::NoSpace => StatusCode::INSUFFICIENT_STORAGE,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&KvError> for ErrorCode {
    fn from(e: &KvError) -> Self {
        match e {
            KvError::InvalidKey(_) => ErrorCode::InvalidKey,
            KvError::KeyTooLarge { .. } => ErrorCode::KeyTooLarge,
            KvError::ValueTooLarge { .. } => ErrorCode::ValueTooLarge,
            KvError::RequestTooLarge { .. } => ErrorCode::RequestTooLarge,
            KvError::TooManyOps { .. } => ErrorCode::TooManyOps,
            KvError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            KvError::Compacted { .. } => ErrorCode::Compacted,
            KvError::FutureRevision { .. } => ErrorCode::FutureRevision,
        }
    }
}

/// An API error: a status, a stable code and a message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Invalid input, mapped by kind.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A request refused for its form (query, body, path) rather than by the
    /// key space; the status follows from the code.
    #[error("{message}")]
    Refused {
        /// Stable error code.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
    },
    /// The key does not exist (at the revision read).
    #[error("key {key:?} not found")]
    KeyNotFound {
        /// The key.
        key: String,
        /// Revision the read reflects.
        revision: u64,
    },
    /// Unknown route.
    #[error("no such endpoint: {0}")]
    RouteNotFound(String),
    /// Known route, wrong method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The node could not serve the request.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The node is not ready.
    #[error("{0}")]
    NotReady(String),
    /// The node already serves its maximum number of watch streams.
    #[error("this node serves its maximum of {0} watch streams; retry later or on another node")]
    TooManyWatchers(usize),
    /// A membership or leadership operation was refused or failed.
    #[error(transparent)]
    Admin(AdminError),
    /// This node was removed from the cluster.
    #[error("{0}; this node serves nothing any more (use another member; to reuse this machine, wipe the data directory and join as a new member)")]
    Removed(String),
    /// A session write that was not applied, because whether an earlier
    /// attempt of it was can no longer be known.
    #[error("{}", session_expired_message(*.0))]
    SessionExpired(SessionRefusal),
}

fn session_expired_message(reason: SessionRefusal) -> &'static str {
    match reason {
        SessionRefusal::UnknownSession => {
            "the client session is unknown (it expired while idle, was evicted from the full \
             session table, or the cluster was restored from a backup): this request was not \
             applied, and whether an earlier attempt of the same write was is unknown; \
             register a new session"
        }
        SessionRefusal::ResultForgotten => {
            "the session no longer remembers this sequence number (acknowledged, or forgotten \
             to keep the session table within its bounds): this request was not applied, and \
             whether an earlier attempt of the same write was is unknown"
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Forward(f) => ApiError::Node(NodeError::from(f)),
            other => ApiError::Admin(other),
        }
    }
}

impl ApiError {
    /// A request refused with `code` (and so with its status).
    pub fn refused(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Refused {
            code,
            message: message.into(),
        }
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Kv(k) => k.into(),
            ApiError::Refused { code, .. } => *code,
            ApiError::KeyNotFound { .. } => ErrorCode::KeyNotFound,
            ApiError::RouteNotFound(_) => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::Node(n) => match n {
                NodeError::Kv(k) => k.into(),
                NodeError::NoLeader { .. } => ErrorCode::NoLeader,
                NodeError::Timeout(_) => ErrorCode::Timeout,
                NodeError::Overloaded(_) => ErrorCode::TooManyRequests,
                NodeError::Internal(_) => ErrorCode::Internal,
                NodeError::QuotaExceeded(_) => ErrorCode::QuotaExceeded,
                NodeError::NoSpace(_) => ErrorCode::NoSpace,
            },
            ApiError::NotReady(_) => ErrorCode::NotReady,
            ApiError::TooManyWatchers(_) => ErrorCode::TooManyWatchers,
            ApiError::Admin(a) => match a {
                AdminError::InProgress(_) => ErrorCode::ChangeInProgress,
                AdminError::NotCaughtUp(_) => ErrorCode::LearnerNotReady,
                AdminError::WouldLoseQuorum(_) => ErrorCode::WouldLoseQuorum,
                AdminError::Exists(_) => ErrorCode::MemberExists,
                AdminError::NotFound(_) => ErrorCode::MemberNotFound,
                AdminError::Invalid(_) => ErrorCode::InvalidRequest,
                AdminError::Forward(_) => ErrorCode::Internal,
            },
            ApiError::Removed(_) => ErrorCode::Removed,
            ApiError::SessionExpired(_) => ErrorCode::SessionExpired,
        }
    }

    fn leader(&self) -> Option<&(NodeId, Member)> {
        match self {
            ApiError::Node(NodeError::NoLeader { leader, .. }) => leader.as_ref(),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code();
        let status = code.status();
        if status.is_server_error() {
            tracing::warn!(code = code.as_str(), error = %self, "request failed");
        }
        let mut error = json!({ "code": code.as_str(), "message": self.to_string() });
        if let Some((id, member)) = self.leader() {
            error["leader"] = json!({ "id": id, "client_addr": member.client_addr });
        }
        if let ApiError::SessionExpired(reason) = &self {
            error["reason"] = json!(refusal_name(*reason));
        }
        let mut body = json!({ "error": error });
        if let ApiError::KeyNotFound { revision, .. } = &self {
            body["revision"] = json!(revision);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            let headers = response.headers_mut();
            headers.insert("retry-after", HeaderValue::from_static(RETRY_AFTER_SECS));
            if let Some((_, member)) = self.leader() {
                if let Ok(v) = HeaderValue::from_str(&format!("http://{}", member.client_addr)) {
                    headers.insert(LEADER_HEADER, v);
                }
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/api.md's error table names every code with its status.
    #[test]
    fn every_code_is_in_the_documented_table() {
        let doc = include_str!("../../../docs/api.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status().as_u16());
            assert!(doc.contains(&row), "docs/api.md has no row {row:?}");
        }
    }
}
