//! The client HTTP API (axum): routes, the revision header, and JSON errors
//! for every failure, including malformed requests and unknown routes.

pub mod admission;
pub mod alarms;
pub mod auth;
pub mod bootstrap;
#[cfg(feature = "failpoints")]
pub mod debug;
pub mod error;
pub mod input;
pub mod json;
pub mod kv;
pub mod limits;
pub mod members;
pub mod openapi;
pub mod range;
pub mod replicas;
pub mod session;
pub mod snapshot;
pub mod status;
pub mod txn;
pub mod ui;
pub mod watch;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::metrics::HttpLabels;
use crate::raft::node::Node;
use crate::watch::WatchHub;
pub use admission::{Admission, AdmissionOptions, AdmissionPermit};
pub use bootstrap::{BufferOptions, SnapshotBuffer};
pub use error::ApiError;
pub use limits::RequestLimits;
pub use range::{RangeLimiter, RangeOptions};

/// What every handler can extract: the node's request paths and its watch
/// hub (the hub sits above Raft, so the node does not own it).
#[derive(Clone)]
pub struct AppState {
    node: Arc<Node>,
    hub: Arc<WatchHub>,
    ranges: Arc<RangeLimiter>,
    admission: Arc<Admission>,
    buffer: Arc<SnapshotBuffer>,
}

impl FromRef<AppState> for Arc<Node> {
    fn from_ref(state: &AppState) -> Self {
        state.node.clone()
    }
}

impl FromRef<AppState> for Arc<WatchHub> {
    fn from_ref(state: &AppState) -> Self {
        state.hub.clone()
    }
}

impl FromRef<AppState> for Arc<Admission> {
    fn from_ref(state: &AppState) -> Self {
        state.admission.clone()
    }
}

impl FromRef<AppState> for Arc<SnapshotBuffer> {
    fn from_ref(state: &AppState) -> Self {
        state.buffer.clone()
    }
}

impl FromRef<AppState> for Arc<RangeLimiter> {
    fn from_ref(state: &AppState) -> Self {
        state.ranges.clone()
    }
}

/// Header carrying the responding node's applied revision.
pub const REVISION_HEADER: &str = "x-ballast-revision";
/// Header carrying the responding node's id.
pub const NODE_HEADER: &str = "x-ballast-node";

/// Routes a removed node still answers: what it is and why it is out (the
/// dashboard shows it from `/v1/status`).
pub(crate) const REMOVED_NODE_ROUTES: [&str; 5] =
    ["/v1/status", "/health/live", "/metrics", "/ui", "/ui/"];

/// What the front middleware needs.
struct Front {
    node: Arc<Node>,
    limits: RequestLimits,
    admin: limits::AdminLimiter,
}

/// Everything a request passes before its handler, in one middleware (each
/// axum middleware layer costs a boxed future and a clone of the inner
/// service per request, which showed in profiles of reads at high
/// concurrency), in this order:
///
/// 1. its latency is recorded by route template, method and status. Routes
///    are the matched templates (`/v1/kv/{*key}`), never raw paths, and
///    unusual methods are folded into `other`, so clients cannot grow the
///    number of series;
/// 2. every answer carries the node's applied revision and id;
/// 3. a request target or headers over the limits are refused;
/// 4. a node removed from its cluster serves nothing but its status,
///    liveness, metrics and dashboard: every other route answers
///    `410 removed` with the reason;
/// 5. the token is resolved into a [`auth::Principal`] (an extension the
///    handlers read), or the request is refused;
/// 6. an admin route runs within its concurrency limit.
async fn front(State(front): State<Arc<Front>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let method = match *req.method() {
        Method::GET | Method::PUT | Method::POST | Method::DELETE | Method::HEAD => {
            req.method().as_str()
        }
        _ => "other",
    }
    .to_owned();
    let started = std::time::Instant::now();
    let mut response = admit_and_run(&front, route.as_deref(), req, next).await;
    let node = &front.node;
    let headers = response.headers_mut();
    headers.insert(REVISION_HEADER, HeaderValue::from(node.applied().revision));
    headers.insert(NODE_HEADER, HeaderValue::from(node.id()));
    node.metrics().observe_http(
        HttpLabels {
            route: route.unwrap_or_else(|| "unmatched".to_owned()),
            method,
            status: response.status().as_u16(),
        },
        started.elapsed(),
    );
    response
}

/// Steps 3 to 6 of [`front`].
async fn admit_and_run(
    front: &Front,
    route: Option<&str>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Err(refused) = limits::check_size(&front.limits, &req) {
        return refused.into_response();
    }
    if let Some(reason) = front.node.removed() {
        if !REMOVED_NODE_ROUTES.contains(&req.uri().path()) {
            return ApiError::Removed(reason).into_response();
        }
    }
    match auth::authenticate(&front.node, &req) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
        }
        Err(refused) => return *refused,
    }
    limits::limit_admin(&front.admin, route, req, next).await
}

async fn not_found(req: Request) -> ApiError {
    ApiError::RouteNotFound(req.uri().path().to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// The client API router for `node`, serving watches from `hub`, prefix
/// reads within `ranges`, bootstraps and catch-ups within `admission`, and
/// bootstraps from `buffer`, with the default [`RequestLimits`].
#[cfg(test)]
pub fn router(
    node: Arc<Node>,
    hub: Arc<WatchHub>,
    ranges: Arc<RangeLimiter>,
    admission: Arc<Admission>,
    buffer: Arc<SnapshotBuffer>,
) -> Router {
    router_with_limits(
        node,
        hub,
        ranges,
        admission,
        buffer,
        RequestLimits::default(),
    )
}

/// [`router`] with the request limits `limits`.
pub fn router_with_limits(
    node: Arc<Node>,
    hub: Arc<WatchHub>,
    ranges: Arc<RangeLimiter>,
    admission: Arc<Admission>,
    buffer: Arc<SnapshotBuffer>,
    limits: RequestLimits,
) -> Router {
    let body_limit = node.limits().max_request_bytes();
    let kv_routes = get(kv::get)
        .put(kv::put)
        .delete(kv::delete)
        .fallback(method_not_allowed);
    Router::new()
        .route("/v1/kv", kv_routes.clone())
        .route("/v1/kv/", kv_routes.clone())
        .route("/v1/kv/{*key}", kv_routes)
        .route("/v1/txn", post(kv::txn).fallback(method_not_allowed))
        .route(
            "/v1/sessions",
            post(session::register).fallback(method_not_allowed),
        )
        .route("/v1/watch", get(watch::watch).fallback(method_not_allowed))
        .route("/v1/watch/", get(watch::watch).fallback(method_not_allowed))
        .route(
            "/v1/watch/{*key}",
            get(watch::watch).fallback(method_not_allowed),
        )
        .route(
            "/v1/compact",
            post(watch::compact).fallback(method_not_allowed),
        )
        .merge(probe_routes())
        .route(
            "/v1/status",
            get(status::status).fallback(method_not_allowed),
        )
        .route("/ui", get(ui::dashboard).fallback(method_not_allowed))
        .route("/ui/", get(ui::dashboard).fallback(method_not_allowed))
        .route(
            "/v1/replicas",
            get(replicas::list).fallback(method_not_allowed),
        )
        .route(
            "/v1/replicas/report",
            post(replicas::report).fallback(method_not_allowed),
        )
        .route(
            "/v1/endpoints",
            get(members::endpoints).fallback(method_not_allowed),
        )
        .route(
            "/v1/members",
            get(members::list)
                .post(members::add)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/members/{id}",
            delete(members::remove).fallback(method_not_allowed),
        )
        .route(
            "/v1/members/{id}/promote",
            post(members::promote).fallback(method_not_allowed),
        )
        .route(
            "/v1/leader/transfer",
            post(members::transfer).fallback(method_not_allowed),
        )
        .route("/v1/alarms", get(alarms::list).fallback(method_not_allowed))
        .route(
            "/v1/alarms/disarm",
            post(alarms::disarm).fallback(method_not_allowed),
        )
        .route(
            "/v1/snapshot",
            get(snapshot::snapshot).fallback(method_not_allowed),
        )
        .route(
            "/v1/auth/tokens",
            get(auth::list_tokens)
                .post(auth::create_token)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/auth/tokens/{id}",
            delete(auth::revoke_token).fallback(method_not_allowed),
        )
        .route(
            "/v1/auth/roles",
            get(auth::list_roles)
                .post(auth::create_role)
                .fallback(method_not_allowed),
        )
        .route(
            "/v1/auth/roles/{name}",
            delete(auth::delete_role).fallback(method_not_allowed),
        )
        .route(
            "/v1/auth/whoami",
            get(auth::whoami).fallback(method_not_allowed),
        )
        .route(
            "/openapi.json",
            get(openapi::openapi_json).fallback(method_not_allowed),
        )
        .merge(debug_routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            Arc::new(Front {
                node: node.clone(),
                limits,
                admin: limits::AdminLimiter::new(limits.max_admin_requests),
            }),
            front,
        ))
        .with_state(AppState {
            node,
            hub,
            ranges,
            admission,
            buffer,
        })
}

/// The routes of the separate probe listener (`--listen-metrics`): metrics
/// and health only, with no token and every other path `404`.
pub fn probe_router(node: Arc<Node>) -> Router {
    probe_routes().fallback(not_found).with_state(node)
}

/// `/metrics` and `/health/*`: served by the client router and by the probe
/// listener alike.
fn probe_routes<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    Arc<Node>: FromRef<S>,
{
    Router::new()
        .route(
            "/metrics",
            get(status::metrics).fallback(method_not_allowed),
        )
        .route(
            "/health/live",
            get(status::live).fallback(method_not_allowed),
        )
        .route(
            "/health/ready",
            get(status::ready).fallback(method_not_allowed),
        )
}

#[cfg(feature = "failpoints")]
fn debug_routes() -> Router<AppState> {
    use axum::routing::put;
    Router::new()
        .route("/debug/failpoints", get(debug::list))
        .route(
            "/debug/failpoints/{name}",
            put(debug::set).delete(debug::remove),
        )
}

#[cfg(not(feature = "failpoints"))]
fn debug_routes() -> Router<AppState> {
    Router::new()
}

#[cfg(test)]
mod alarms_test;
#[cfg(test)]
mod api_test;
#[cfg(test)]
mod openapi_test;
#[cfg(test)]
mod range_test;
