//! Request limits of the client API, checked before any handler runs:
//!
//! - the request target (path and query) is at most `--max-uri-bytes`
//!   (`414 uri_too_long`), and the header fields at most
//!   `--max-header-bytes` in all (`431 headers_too_large`);
//! - each admin route (members, leader transfer, snapshot, compaction)
//!   serves at most `--max-admin-requests` requests at once; one more is
//!   `429 too_many_admin_requests` with `Retry-After`, so a burst of backups
//!   or membership calls cannot queue up work on the node.
//!
//! The HTTP server reads heads of up to [`RequestLimits::head_buffer_bytes`],
//! more than both limits, so a request just over a limit gets its JSON
//! error here. A head beyond that buffer, a request target beyond the HTTP
//! parser's own 65534-byte ceiling, or more than 100 header fields is
//! refused by the parser itself (431 or 414 with an empty body) before it
//! reaches the router.

use std::sync::Arc;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ErrorCode};

/// Default `--max-uri-bytes`: room for a maximum-size key percent-encoded
/// three times over, and a query string.
pub const DEFAULT_MAX_URI_BYTES: usize = 16 * 1024;
/// Default `--max-header-bytes`.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
/// Default `--max-admin-requests`.
pub const DEFAULT_MAX_ADMIN_REQUESTS: usize = 4;
/// The smallest head buffer the HTTP server takes.
const MIN_HEAD_BUFFER_BYTES: usize = 8192;
/// What a header field costs on top of its name and value (`: ` and CRLF).
const HEADER_FIELD_OVERHEAD: usize = 4;

/// The limits a client request is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestLimits {
    /// Longest request target (path and query), bytes.
    pub max_uri_bytes: usize,
    /// Most bytes of header fields (names, values, separators).
    pub max_header_bytes: usize,
    /// Most requests one admin route serves at once.
    pub max_admin_requests: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_uri_bytes: DEFAULT_MAX_URI_BYTES,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_admin_requests: DEFAULT_MAX_ADMIN_REQUESTS,
        }
    }
}

impl RequestLimits {
    /// The HTTP server's read buffer for a request head: four times the
    /// two limits together, so that a head over a limit is still read whole
    /// and answered with its JSON error, while the memory a connection may
    /// hold for a head stays bounded.
    pub fn head_buffer_bytes(&self) -> usize {
        (self.max_uri_bytes + self.max_header_bytes)
            .saturating_mul(4)
            .max(MIN_HEAD_BUFFER_BYTES)
    }
}

/// Bytes of the header fields of `req`, as sent (name, value, separators).
fn header_bytes(req: &Request) -> usize {
    req.headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + HEADER_FIELD_OVERHEAD)
        .sum()
}

/// Refuses a request whose target or headers are over the limits.
pub fn check_size(limits: &RequestLimits, req: &Request) -> Result<(), ApiError> {
    let uri_bytes = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_bytes > limits.max_uri_bytes {
        return Err(ApiError::refused(
            ErrorCode::UriTooLong,
            format!(
                "the request target is {uri_bytes} bytes, the limit is {} (--max-uri-bytes)",
                limits.max_uri_bytes
            ),
        ));
    }
    let headers = header_bytes(req);
    if headers > limits.max_header_bytes {
        return Err(ApiError::refused(
            ErrorCode::HeadersTooLarge,
            format!(
                "the request headers are {headers} bytes, the limit is {} (--max-header-bytes)",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

/// The admin routes' concurrency limits: one semaphore per route group.
#[derive(Debug, Clone)]
pub struct AdminLimiter {
    max: usize,
    members: Arc<Semaphore>,
    leader: Arc<Semaphore>,
    snapshot: Arc<Semaphore>,
    compact: Arc<Semaphore>,
}

impl AdminLimiter {
    /// At most `max` requests at once on each admin route group.
    pub fn new(max: usize) -> Self {
        let semaphore = || Arc::new(Semaphore::new(max));
        AdminLimiter {
            max,
            members: semaphore(),
            leader: semaphore(),
            snapshot: semaphore(),
            compact: semaphore(),
        }
    }

    /// The group of the route `path` (as the router matched it), if it is
    /// an admin route.
    fn group(&self, path: &str) -> Option<(&'static str, &Arc<Semaphore>)> {
        match path {
            "/v1/members" | "/v1/members/{id}" | "/v1/members/{id}/promote" => {
                Some(("membership", &self.members))
            }
            "/v1/leader/transfer" => Some(("leader transfer", &self.leader)),
            "/v1/snapshot" => Some(("snapshot", &self.snapshot)),
            "/v1/compact" => Some(("compaction", &self.compact)),
            _ => None,
        }
    }

    /// A permit for a request on `path`: `Ok(None)` for a route without a
    /// limit, an error when the route's limit is reached.
    pub fn admit(&self, path: &str) -> Result<Option<OwnedSemaphorePermit>, ApiError> {
        let Some((what, semaphore)) = self.group(path) else {
            return Ok(None);
        };
        semaphore
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| {
                ApiError::refused(
                    ErrorCode::TooManyAdminRequests,
                    format!(
                        "this node already serves {} {what} requests (--max-admin-requests); \
                     retry later",
                        self.max
                    ),
                )
            })
    }
}

/// Runs `req` (on the route the router matched, `route`) within its admin
/// route's limit, holding the permit until the response body is sent (a
/// backup streams for as long as it takes), or refuses it.
pub async fn limit_admin(
    limiter: &AdminLimiter,
    route: Option<&str>,
    req: Request,
    next: Next,
) -> Response {
    let permit = match route.map(|p| limiter.admit(p)) {
        None | Some(Ok(None)) => return next.run(req).await,
        Some(Err(refused)) => return refused.into_response(),
        Some(Ok(Some(permit))) => permit,
    };
    let response = next.run(req).await;
    if response.body().size_hint().exact().is_some() {
        // Answered whole: the work is done, the permit goes now.
        return response;
    }
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &permit;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_admin_route_group_has_its_own_limit() {
        let limiter = AdminLimiter::new(2);
        let a = limiter.admit("/v1/snapshot").expect("first");
        let b = limiter.admit("/v1/snapshot").expect("second");
        assert!(a.is_some() && b.is_some());
        let refused = limiter.admit("/v1/snapshot").expect_err("third");
        assert_eq!(refused.code(), ErrorCode::TooManyAdminRequests);
        // Other groups and other routes are not affected.
        assert!(limiter
            .admit("/v1/members/{id}")
            .expect("members")
            .is_some());
        assert!(limiter.admit("/v1/kv/{*key}").expect("kv").is_none());
        drop(a);
        assert!(limiter
            .admit("/v1/snapshot")
            .expect("after release")
            .is_some());
    }

    #[test]
    fn head_buffer_holds_a_head_over_both_limits() {
        let limits = RequestLimits::default();
        assert!(limits.head_buffer_bytes() > limits.max_uri_bytes + limits.max_header_bytes);
    }
}
