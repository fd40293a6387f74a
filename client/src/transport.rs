//! The request loop: send one call, classify what happened, and decide
//! whether it may be tried again and where.
//!
//! The retry rule in one table:
//!
//! | what happened                                   | read       | write               |
//! |-------------------------------------------------|------------|---------------------|
//! | connect failed (refused, DNS, connect timeout)  | next node  | next node (not sent)|
//! | 503 `no_leader` / `not_ready` / `too_many_requests` (or no code) | next node | next node (not applied) |
//! | 507 `quota_exceeded` / `no_space` (refused before proposing) | `Api` error | `Api` error (not applied) |
//! | 503 `timeout`, other 5xx, timeout or reset after sending | next node | `Indeterminate` (with a session: next node, see `session.rs`) |
//! | 2xx                                             | done       | done                |
//! | other status                                    | `Api` error| `Api` error         |
//!
//! Writes under the client's session (exactly once) run their own loop in
//! `session.rs`, on the same attempts, classification and budget.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use tracing::debug;

use crate::endpoints::Endpoints;
use crate::error::{Error, Result};
use crate::retry::RetryPolicy;
use crate::session::{Carrier, Session};
use crate::types::WireErrorDoc;

/// Header carrying the responding node's applied revision.
const REVISION_HEADER: &str = "x-ballast-revision";
/// Header a node sets on a 503 to name the leader's client address.
const LEADER_HEADER: &str = "x-ballast-leader";
/// How much of an unparsable error body goes into an error message.
const MAX_BODY_IN_MESSAGE: usize = 200;

/// The HTTP pool, the endpoints and the retry policy shared by a client's clones.
#[derive(Debug)]
pub(crate) struct Transport {
    pub(crate) http: reqwest::Client,
    /// For watch streams: same connect timeout, but no overall request
    /// timeout (a stream lives as long as its reader wants it).
    pub(crate) stream_http: reqwest::Client,
    pub(crate) endpoints: Endpoints,
    pub(crate) retry: RetryPolicy,
    /// The client's session for exactly-once writes; `None` when turned off.
    pub(crate) session: Option<Session>,
}

/// Whether a request may have changed state, which decides what a retry may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
    /// Changes state, but the same request applied twice does what it does
    /// once (a session registration): retried like a read.
    Idempotent,
}

/// A request that can be sent again as is.
#[derive(Debug)]
pub(crate) struct Call {
    pub(crate) method: Method,
    /// Path and query, e.g. `/v1/kv/a?prefix=true`.
    pub(crate) target: String,
    /// Content type and bytes; kept whole so a safe retry can send them again.
    pub(crate) body: Option<(&'static str, Vec<u8>)>,
    pub(crate) kind: Kind,
}

/// A 2xx answer, read in full.
#[derive(Debug)]
pub(crate) struct Answer {
    /// `X-Ballast-Revision`, the fallback when a body lacks its revision.
    pub(crate) revision_header: Option<u64>,
    pub(crate) body: Vec<u8>,
}

/// What one attempt led to.
pub(crate) enum Outcome {
    /// 2xx.
    Done(Answer),
    /// A final error: no retry can change it.
    Final(Error),
    /// Definitely not applied (not sent, or refused with 503 `no_leader`/`not_ready`).
    NotApplied {
        error: Error,
        hint: Option<String>,
        retry_after: Option<Duration>,
    },
    /// Sent; outcome unknown. Retryable for reads only.
    Unknown { error: Error, message: String },
}

impl Transport {
    /// Sends a write: under the client's session when it has one (retried
    /// until answered, see `session.rs`), else once it may have been sent.
    pub(crate) async fn write(&self, call: Call, carrier: Carrier) -> Result<Answer> {
        match &self.session {
            Some(session) => self.execute_session(session, call, carrier).await,
            None => self.execute(call).await,
        }
    }

    /// After an attempt that was certainly not applied: prefer the leader
    /// the node named, else move past the endpoint.
    pub(crate) fn follow_hint_or_move_on(&self, index: usize, hint: Option<&str>) -> bool {
        let redirected = hint.is_some_and(|h| self.endpoints.prefer_hint(h))
            && self.endpoints.preferred().0 != index;
        if !redirected {
            self.endpoints.mark_failed(index);
        }
        redirected
    }

    /// Sends `call` until it succeeds, fails for good, or the retry budget runs out.
    pub(crate) async fn execute(&self, call: Call) -> Result<Answer> {
        let inner = self;
        let policy = inner.retry;
        let started = Instant::now();
        let mut attempt: u32 = 0;
        let last_error = loop {
            attempt += 1;
            let (index, endpoint) = inner.endpoints.preferred();
            let endpoint: &str = &endpoint;
            let (last_error, retry_after);
            match self.attempt(endpoint, &call).await {
                Outcome::Done(answer) => return Ok(answer),
                Outcome::Final(error) => return Err(error),
                Outcome::Unknown { error, message } => {
                    // Either way this node looks sick: the next call starts elsewhere.
                    inner.endpoints.mark_failed(index);
                    if call.kind == Kind::Write {
                        return Err(Error::Indeterminate { message });
                    }
                    debug!(endpoint, attempt, %message, "read failed, trying another node");
                    last_error = error;
                    retry_after = None;
                }
                Outcome::NotApplied {
                    error,
                    hint,
                    retry_after: after,
                } => {
                    let redirected = self.follow_hint_or_move_on(index, hint.as_deref());
                    debug!(endpoint, attempt, redirected, %error, "not applied, trying again");
                    last_error = error;
                    retry_after = after;
                }
            }
            if !policy
                .wait_for_next(attempt, inner.endpoints.len(), retry_after, started)
                .await
            {
                break last_error;
            }
        };
        let message = format!(
            "gave up after {attempt} attempt(s) in {:?}",
            started.elapsed()
        );
        Err(gave_up(last_error, &message))
    }

    /// One attempt against one given endpoint, no retry, no failover: for
    /// callers that pick the endpoint themselves (replica bootstrap, reports).
    pub(crate) async fn execute_once(&self, endpoint: &str, call: &Call) -> Result<Answer> {
        match self.attempt(endpoint, call).await {
            Outcome::Done(answer) => Ok(answer),
            Outcome::Final(error) | Outcome::NotApplied { error, .. } => Err(error),
            Outcome::Unknown { error, message } => match call.kind {
                Kind::Write => Err(Error::Indeterminate { message }),
                Kind::Read | Kind::Idempotent => Err(error),
            },
        }
    }

    /// One attempt against one endpoint.
    pub(crate) async fn attempt(&self, endpoint: &str, call: &Call) -> Outcome {
        self.attempt_paced(endpoint, call).await.0
    }

    /// One attempt against one endpoint, with the `Retry-After` of an error
    /// answer: a node refusing for load (429) says when to come back, which
    /// callers that pace themselves (replica bootstraps) obey.
    pub(crate) async fn attempt_paced(
        &self,
        endpoint: &str,
        call: &Call,
    ) -> (Outcome, Option<Duration>) {
        self.attempt_encoded(endpoint, call, false).await
    }

    /// [`Self::attempt_paced`], asking for a zstd-encoded answer when
    /// `accept_zstd` (large replica bootstraps); an answer with
    /// `Content-Encoding: zstd` is decoded before it is returned.
    pub(crate) async fn attempt_encoded(
        &self,
        endpoint: &str,
        call: &Call,
        accept_zstd: bool,
    ) -> (Outcome, Option<Duration>) {
        let url = match self.endpoints.request_url(endpoint, &call.target) {
            Ok(url) => url,
            Err(error) => return (Outcome::Final(error), None),
        };
        let mut request = self.http.request(call.method.clone(), url);
        if accept_zstd {
            request = request.header(ACCEPT_ENCODING, "zstd");
        }
        if let Some((content_type, body)) = &call.body {
            request = request
                .header(CONTENT_TYPE, *content_type)
                .body(body.clone());
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) => return (classify_send_error(endpoint, &e), None),
        };
        let status = response.status();
        // Only an error answer needs every header (to classify it); a 2xx
        // needs two, read before the body consumes the response.
        let revision_header = header_u64(response.headers(), REVISION_HEADER);
        let zstd = header_str(response.headers(), CONTENT_ENCODING.as_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("zstd"));
        let headers = (!status.is_success()).then(|| response.headers().clone());
        let body = match response.bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => {
                let message = format!(
                    "{endpoint}: reading the answer to {} {} failed after status {status}: {}",
                    call.method,
                    call.target,
                    chain(&e)
                );
                let outcome = Outcome::Unknown {
                    error: Error::Transport {
                        endpoint: endpoint.to_owned(),
                        message: message.clone(),
                    },
                    message,
                };
                return (outcome, None);
            }
        };
        let Some(headers) = headers else {
            // `decode_all` reads every concatenated frame.
            let body = match zstd.then(|| zstd::stream::decode_all(&body[..])) {
                None => body,
                Some(Ok(decoded)) => decoded,
                Some(Err(e)) => {
                    let error = Error::Decode(format!("{endpoint}: zstd answer: {e}"));
                    return (Outcome::Final(error), None);
                }
            };
            let answer = Answer {
                revision_header,
                body,
            };
            return (Outcome::Done(answer), None);
        };
        let retry_after = header_u64(&headers, RETRY_AFTER.as_str()).map(Duration::from_secs);
        let outcome =
            classify_error_answer(endpoint, call, status, &headers, revision_header, &body);
        (outcome, retry_after)
    }
}

/// The error a call ends with when its budget runs out: the last error,
/// a transport error saying how long it tried.
pub(crate) fn gave_up(last_error: Error, message: &str) -> Error {
    match last_error {
        Error::Transport {
            endpoint,
            message: cause,
        } => Error::Transport {
            endpoint,
            message: format!("{cause}; {message}"),
        },
        other => other,
    }
}

/// A request that produced no response.
fn classify_send_error(endpoint: &str, e: &reqwest::Error) -> Outcome {
    let cause = chain(e);
    let error = Error::Transport {
        endpoint: endpoint.to_owned(),
        message: cause.clone(),
    };
    if e.is_builder() {
        return Outcome::Final(Error::InvalidArgument(cause));
    }
    if e.is_connect() {
        // No connection, so no request bytes left this process.
        return Outcome::NotApplied {
            error,
            hint: None,
            retry_after: None,
        };
    }
    let what = if e.is_timeout() {
        "timed out after sending"
    } else {
        "failed after sending"
    };
    Outcome::Unknown {
        message: format!("{endpoint}: request {what}: {cause}"),
        error,
    }
}

/// A non-2xx answer.
fn classify_error_answer(
    endpoint: &str,
    call: &Call,
    status: StatusCode,
    headers: &HeaderMap,
    revision_header: Option<u64>,
    body: &[u8],
) -> Outcome {
    let doc = serde_json::from_slice::<WireErrorDoc>(body).ok();
    let hint = header_str(headers, LEADER_HEADER).or_else(|| {
        doc.as_ref()
            .and_then(|d| d.error.leader.as_ref())
            .and_then(|l| l.client_addr.clone())
    });
    let error = api_error(status.as_u16(), doc, body, revision_header);
    let code = error.code().unwrap_or_default();
    if status == StatusCode::SERVICE_UNAVAILABLE && code != "timeout" {
        return Outcome::NotApplied {
            error,
            hint,
            retry_after: header_u64(headers, RETRY_AFTER.as_str()).map(Duration::from_secs),
        };
    }
    if error.is_node_removed() {
        return Outcome::NotApplied {
            error,
            hint,
            retry_after: None,
        };
    }
    // The leader refused before proposing: nothing was applied, and another
    // node would forward to the same leader and get the same answer. A
    // nospace alarm is cluster state: every node refuses alike.
    if status == StatusCode::INSUFFICIENT_STORAGE
        && (code == "quota_exceeded" || code == "no_space")
    {
        return Outcome::Final(error);
    }
    if status.is_server_error() {
        let message = format!(
            "{endpoint}: {} {} answered {status} ({error}); the request may have been applied",
            call.method, call.target
        );
        return Outcome::Unknown { error, message };
    }
    Outcome::Final(error)
}

/// The [`Error::Api`] of a non-2xx answer: its error document when the body is
/// one, else the start of the body as the message. `revision_header` stands in
/// for a document without a revision.
pub(crate) fn api_error(
    status: u16,
    doc: Option<WireErrorDoc>,
    body: &[u8],
    revision_header: Option<u64>,
) -> Error {
    match doc {
        Some(d) => Error::Api {
            status,
            code: d.error.code,
            message: d.error.message,
            revision: d.revision.or(revision_header),
        },
        None => Error::Api {
            status,
            code: "unknown".to_owned(),
            message: truncate(&String::from_utf8_lossy(body)),
            revision: revision_header,
        },
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|s| s.parse().ok())
}

/// An error with its sources, `a: b: c`; reqwest's own message alone hides the cause.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub(crate) fn truncate(s: &str) -> String {
    if s.len() <= MAX_BODY_IN_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_BODY_IN_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
