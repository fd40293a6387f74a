//! The one place where errors become HTTP responses.
//!
//! | code | status | meaning |
//! |---|---|---|
//! | `invalid_key`, `invalid_query`, `invalid_json`, `invalid_request`, `too_many_ops`, `compacted`, `future_revision` | 400 | the request is wrong |
//! | `key_not_found`, `not_found` | 404 | no such key / route |
//! | `method_not_allowed` | 405 | wrong method for the route |
//! | `key_too_large`, `value_too_large`, `request_too_large` | 413 | over a configured limit |
//! | `no_leader` | 503 | no leader reachable: not applied, retry (`Retry-After`) |
//! | `timeout` | 503 | no answer in time: a write may or may not have taken effect |
//! | `too_many_requests` | 503 | the leader's backlog is full: not applied, retry (`Retry-After`) |
//! | `not_ready` | 503 | the node is not ready to serve |
//! | `too_many_watchers` | 429 | the node's watch stream limit is reached (`Retry-After`) |
//! | `internal` | 500 | a fault on the node (storage) |

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::kv::KvError;
use crate::raft::node::NodeError;
use crate::raft::types::{Member, NodeId};

/// Header naming the leader's client URL on a `503 no_leader`.
pub const LEADER_HEADER: &str = "x-ballast-leader";
/// Seconds a client should wait before retrying a 503.
const RETRY_AFTER_SECS: &str = "1";

/// An API error: a status, a stable code and a message.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Invalid input, mapped by kind.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// A malformed request that is not a key-space error.
    #[error("{message}")]
    BadRequest {
        /// Stable error code.
        code: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// The body is over the size limit.
    #[error("{0}")]
    BodyTooLarge(String),
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
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Kv(k) => match k {
                KvError::InvalidKey(_) => (StatusCode::BAD_REQUEST, "invalid_key"),
                KvError::KeyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "key_too_large"),
                KvError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
                KvError::RequestTooLarge { .. } => {
                    (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large")
                }
                KvError::TooManyOps { .. } => (StatusCode::BAD_REQUEST, "too_many_ops"),
                KvError::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
                KvError::Compacted { .. } => (StatusCode::BAD_REQUEST, "compacted"),
                KvError::FutureRevision { .. } => (StatusCode::BAD_REQUEST, "future_revision"),
            },
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::BodyTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            ApiError::KeyNotFound { .. } => (StatusCode::NOT_FOUND, "key_not_found"),
            ApiError::RouteNotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Node(n) => match n {
                NodeError::Kv(k) => ApiError::Kv(k.clone()).status_and_code(),
                NodeError::NoLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
                NodeError::Timeout(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
                NodeError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "too_many_requests"),
                NodeError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            },
            ApiError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
            ApiError::TooManyWatchers(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_watchers"),
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
        let (status, code) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(code, error = %self, "request failed");
        }
        let mut error = json!({ "code": code, "message": self.to_string() });
        if let Some((id, member)) = self.leader() {
            error["leader"] = json!({ "id": id, "client_addr": member.client_addr });
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
