//! `GET /v1/watch/{key}` (Server-Sent Events) and `POST /v1/compact`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::admission::Admission;
use super::error::{ApiError, ErrorCode};
use super::input::{invalid_query, parse_json, read_body, ApiQuery, BodyKind, KeyPath};
use super::openapi::ErrorBody;
use crate::kv::types::CompactRefusal;
use crate::kv::{Command, CommandResponse};
use crate::raft::node::{Node, NodeError};
use crate::watch::event::Filter;
use crate::watch::hub::WindowRead;
use crate::watch::stream::{watch_stream, CatchupGuard, WatchRequest};
use crate::watch::WatchHub;

/// Query of `GET /v1/watch/{key}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Watch every key under the prefix.
    #[serde(default)]
    pub prefix: bool,
    /// First revision to deliver (inclusive); absent or 0 means "from now".
    pub start_revision: Option<u64>,
    /// Include each key's previous value.
    #[serde(default)]
    pub prev_kv: bool,
    /// Send progress bookmarks while idle.
    #[serde(default)]
    pub progress_notify: bool,
    /// Bookmark interval, milliseconds (within the server's limits).
    pub progress_interval_ms: Option<u64>,
    /// Start only after a read-index barrier: the stream then starts from a
    /// state at least as new as every write acknowledged before the request.
    #[serde(default)]
    pub linearizable: bool,
    /// A `Replica`'s watch: as the first request of an HTTP/1.1
    /// connection, the node serves that connection on its lower-priority
    /// data-plane threads (`--data-plane-nice`). Changes nothing else.
    #[serde(default)]
    #[allow(
        dead_code,
        reason = "read from the request line when the connection is accepted"
    )]
    pub data_plane: bool,
}

/// `GET /v1/watch/{key}`: a Server-Sent Events stream of the key's (or the
/// prefix's) changes. `Last-Event-ID` resumes right after that revision.
#[utoipa::path(
    get,
    path = "/v1/watch/{key}",
    tag = "watch",
    params(
        ("key" = String, Path, description = "the key, or with `prefix=true` a prefix (percent-encoded)"),
        ("last-event-id" = Option<u64>, Header, description = "resume right after this revision"),
        WatchQuery,
    ),
    responses(
        (status = 200, description = "a Server-Sent Events stream (see docs/watch.md); it does not end", content_type = "text/event-stream", body = String),
        (status = 400, description = "`invalid_key`, `invalid_query`, `invalid_request` (a bad `Last-Event-ID`)", body = ErrorBody),
        (status = 413, description = "`key_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_watchers`; a watch that must replay history from storage, `too_many_catchups` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout` (`linearizable=true`), `not_ready` (shutting down)", body = ErrorBody),
    )
)]
pub async fn watch(
    State(node): State<Arc<Node>>,
    State(hub): State<Arc<WatchHub>>,
    State(admission): State<Arc<Admission>>,
    axum::Extension(principal): axum::Extension<crate::kv::auth::Principal>,
    KeyPath(key): KeyPath,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> Result<Response, ApiError> {
    if q.prefix {
        node.limits().check_prefix(&key)?;
    } else {
        node.limits().check_key(&key)?;
    }
    super::auth::require(&principal, crate::kv::auth::Access::Read, &key, q.prefix)?;
    let options = hub.options().clone();
    if q.progress_interval_ms.is_some() && !q.progress_notify {
        return Err(invalid_query(
            "progress_interval_ms needs progress_notify=true",
        ));
    }
    let progress = if q.progress_notify {
        let every = q
            .progress_interval_ms
            .map(Duration::from_millis)
            .unwrap_or(options.default_progress_interval);
        if every < options.min_progress_interval || every > options.max_progress_interval {
            return Err(invalid_query(format!(
                "progress_interval_ms must be between {} and {}",
                options.min_progress_interval.as_millis(),
                options.max_progress_interval.as_millis()
            )));
        }
        Some(every)
    } else {
        None
    };
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::refused(
                        ErrorCode::InvalidRequest,
                        "Last-Event-ID must be a revision number",
                    )
                })?,
        ),
    };
    let Some(slot) = hub.try_open() else {
        return Err(ApiError::TooManyWatchers(options.max_watchers));
    };
    if q.linearizable {
        node.linearizable_barrier().await?;
    }
    let start_revision = match (last_event_id, q.start_revision) {
        // A reconnecting client resumes right after the last revision it saw.
        (Some(id), _) => id + 1,
        (None, Some(r)) if r > 0 => r,
        // "Now" is what this node has applied (after the barrier, when
        // linearizable), not the hub's tip: the hub loads applied revisions
        // a moment later, and a start at its tip would replay changes made
        // before the watch was asked for.
        _ => hub.tip().max(node.applied().revision) + 1,
    };
    let resumed = last_event_id.is_some() || q.start_revision.is_some_and(|r| r > 0);
    let start_revision = if resumed && planted_skip_on_resume() {
        start_revision + 1
    } else {
        start_revision
    };
    // A start older than the window replays history from storage: that is
    // a catch-up, admitted within the node's bound. A start below the
    // compact revision costs nothing (the stream ends with `compacted`).
    let catchup = if start_revision >= hub.compact_revision()
        && matches!(hub.read(start_revision, 1), WindowRead::Behind)
    {
        Some(Box::new(admission.try_catchup()?) as CatchupGuard)
    } else {
        None
    };
    let req = WatchRequest {
        filter: Filter {
            key,
            prefix: q.prefix,
        },
        start_revision,
        prev_kv: q.prev_kv,
        progress,
    };
    let Some(stream) = watch_stream(hub, req, slot, catchup) else {
        return Err(ApiError::NotReady("the node is shutting down".into()));
    };
    // A stream of a token that is revoked (or expires) meanwhile ends before
    // its next frame: nothing is delivered to it after the revocation.
    let body = match principal.token_id() {
        None => Body::from_stream(stream),
        Some(id) => {
            use futures::StreamExt;
            let (id, auth) = (id.to_owned(), node.auth().clone());
            Body::from_stream(stream.take_while(move |_| {
                let valid = auth
                    .read()
                    .map(|t| t.still_valid(&id, crate::kv::sessions::wall_clock_ms()))
                    .unwrap_or(false);
                std::future::ready(valid)
            }))
        }
    };
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Planted bug for the fault-injection watch checker, compiled in only with
/// the `failpoints` feature: with the `unsafe-watch-skip-on-resume` failpoint
/// set to `return`, a resumed stream loses its first revision.
fn planted_skip_on_resume() -> bool {
    fail::fail_point!("unsafe-watch-skip-on-resume", |_| true);
    false
}

/// `POST /v1/compact` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompactBody {
    /// The new compact revision.
    pub revision: u64,
}

/// `POST /v1/compact` answer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CompactJson {
    /// Current revision.
    pub revision: u64,
    /// Compact revision now in force.
    pub compact_revision: u64,
}

/// `POST /v1/compact`: forget history before a revision (through Raft, so
/// every node compacts at the same point of the log).
#[utoipa::path(
    post,
    path = "/v1/compact",
    tag = "admin",
    request_body = CompactBody,
    responses(
        (status = 200, description = "compacted", body = CompactJson),
        (status = 400, description = "`invalid_json`, `invalid_request`, `compacted`, `future_revision`", body = ErrorBody),
        (status = 413, description = "`request_too_large`", body = ErrorBody),
        (status = 429, description = "`too_many_admin_requests` (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `too_many_requests` (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn compact(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<CompactJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let parsed: CompactBody = parse_json(&body, "expected {\"revision\": N}")?;
    match node
        .write(Command::Compact {
            revision: parsed.revision,
        })
        .await?
    {
        CommandResponse::Compact {
            revision,
            compact_revision,
            refused: None,
        } => Ok(Json(CompactJson {
            revision,
            compact_revision,
        })),
        CommandResponse::Compact {
            revision,
            compact_revision,
            refused: Some(why),
        } => Err(ApiError::refused(
            match why {
                CompactRefusal::AlreadyCompacted => ErrorCode::Compacted,
                CompactRefusal::FutureRevision => ErrorCode::FutureRevision,
            },
            match why {
                CompactRefusal::AlreadyCompacted => format!(
                    "revision {} is not above the compact revision {compact_revision}",
                    parsed.revision
                ),
                CompactRefusal::FutureRevision => format!(
                    "revision {} is newer than the current revision {revision}",
                    parsed.revision
                ),
            },
        )),
        other => Err(ApiError::Node(NodeError::Internal(format!(
            "unexpected state machine response {other:?}"
        )))),
    }
}
