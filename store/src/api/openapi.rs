//! The OpenAPI document of the client API, generated from the handlers'
//! `#[utoipa::path]` annotations and the request and response types, and
//! served at `GET /openapi.json`.
//!
//! What every route shares is added here rather than on each handler (see
//! [`SharedResponses`]): the `X-Ballast-*` headers, `410 removed`, `401`/`403`
//! when auth is on (every route but the open probes), the
//! request limits (`413`, `414`, `431`), `500 internal`. The bare `/v1/kv`,
//! `/v1/kv/`, `/v1/watch` and `/v1/watch/` routes (the empty key) are the
//! `{key}` operations without their path parameter.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{ContentBuilder, HeaderBuilder, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, ToSchema};

use super::error::ErrorCode;
use super::json::KvJson;
use super::{NODE_HEADER, REVISION_HEADER};

/// `{"error": {...}}`: every refused or failed request.
#[derive(Debug, Serialize, ToSchema)]
// Described in the document only; the answers are built elsewhere.
#[allow(dead_code)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
    /// With `key_not_found`: the revision the read reflects.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<u64>,
}

/// The `error` object of an [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
// Described in the document only; the answers are built elsewhere.
#[allow(dead_code)]
pub struct ErrorDetail {
    /// The stable code (docs/api.md lists what each means).
    #[schema(schema_with = error_code_schema)]
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// With `no_leader`, when another leader is known: where it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderHint>,
    /// With `session_expired`: `unknown_session` or `result_forgotten`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The leader a `503 no_leader` names.
#[derive(Debug, Serialize, ToSchema)]
// Described in the document only; the answers are built elsewhere.
#[allow(dead_code)]
pub struct LeaderHint {
    /// Its node id.
    pub id: u64,
    /// Its client address, `host:port`.
    pub client_addr: String,
}

/// Every error code, from [`ErrorCode::ALL`], so the document cannot miss one.
fn error_code_schema() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
}

/// A prefix read's answer (streamed, see `api::range`; the same document
/// whether it is sent whole or in chunks).
#[derive(Debug, Serialize, ToSchema)]
// Described in the document only; the answers are built elsewhere.
#[allow(dead_code)]
pub struct RangeJson {
    /// Revision the read reflects.
    pub revision: u64,
    /// Matching key-values in key byte order.
    pub kvs: Vec<KvJson>,
    /// Whether `limit` cut the answer short.
    pub more: bool,
}

/// A replica as `GET /v1/replicas` lists it: its report's fields, then
/// where and how long ago it was received. (`crate::replicas::ReplicaEntry`
/// flattens the report, whose own schema refuses unknown fields, so it is
/// written out here.)
// Described in the document only; the answers are built elsewhere.
#[allow(dead_code)]
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplicaEntryJson {
    /// Stable identity of the replica.
    pub id: String,
    /// The prefix it replicates.
    pub prefix: String,
    /// The revision it has applied.
    pub revision: u64,
    /// Whether it is serving from its on-disk copy.
    pub serving_from_disk: bool,
    /// The node that received the report.
    pub node: u64,
    /// Milliseconds since it was received.
    pub age_ms: u64,
}

/// What `GET /v1/kv/{key}` answers: one key, or a prefix with `prefix=true`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
// Described in the document only; the answers are built elsewhere.
#[allow(dead_code)]
pub enum GetAnswer {
    /// One key.
    One(super::json::GetJson),
    /// A prefix.
    Range(RangeJson),
}

/// Adds what every operation shares, and the empty-key routes.
pub struct SharedResponses;

/// Routes that answer even on a removed node (see `api::REMOVED_NODE_ROUTES`).
fn serves_when_removed(path: &str) -> bool {
    super::REMOVED_NODE_ROUTES.contains(&path)
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    "ErrorBody",
                ))))
                .build(),
        )
        .build()
        .into()
}

fn add_response(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// `item` for the empty key: the same operations without the `key` parameter.
fn without_key(item: &PathItem) -> PathItem {
    let mut item = item.clone();
    for op in operations(&mut item) {
        if let Some(params) = op.parameters.as_mut() {
            params.retain(|p| !(p.name == "key" && p.parameter_in == ParameterIn::Path));
        }
        if let Some(id) = op.operation_id.as_mut() {
            id.push_str("_empty_key");
        }
    }
    item
}

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let paths = &mut openapi.paths.paths;
        for keyed in ["/v1/kv/{key}", "/v1/watch/{key}"] {
            if let Some(item) = paths.get(keyed) {
                let bare = without_key(item);
                let root = keyed.trim_end_matches("/{key}");
                paths.insert(root.to_string(), bare.clone());
                paths.insert(format!("{root}/"), bare.clone());
                // `/v1/kv/` and `/v1/kv` are two operations each; ids stay unique.
                if let Some(item) = paths.get_mut(&format!("{root}/")) {
                    for op in operations(item) {
                        if let Some(id) = op.operation_id.as_mut() {
                            id.push_str("_slash");
                        }
                    }
                }
            }
        }
        // `/ui/` serves the same page as `/ui`.
        if let Some(item) = paths.get("/ui") {
            let mut alias = item.clone();
            for op in operations(&mut alias) {
                if let Some(id) = op.operation_id.as_mut() {
                    id.push_str("_slash");
                }
            }
            paths.insert("/ui/".to_string(), alias);
        }
        let revision = HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0)),
            )
            .description(Some("the responding node's applied revision"))
            .build();
        let node = HeaderBuilder::new()
            .schema(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(1)),
            )
            .description(Some("the responding node's id"))
            .build();
        for (path, item) in paths.iter_mut() {
            let removable = !serves_when_removed(path);
            let probe = path == OPENAPI_PATH
                || path == "/health/live"
                || path == "/metrics"
                || path.starts_with("/ui");
            for op in operations(item) {
                add_response(
                    op,
                    "414",
                    "`uri_too_long`: the request target is over `--max-uri-bytes`",
                );
                add_response(
                    op,
                    "431",
                    "`headers_too_large`: the request headers are over `--max-header-bytes`",
                );
                if removable {
                    add_response(
                        op,
                        "410",
                        "`removed`: this node was removed from the cluster",
                    );
                }
                if !probe {
                    add_response(op, "500", "`internal`: a fault on the node (storage)");
                }
                if !super::auth::is_open(path) {
                    add_response(
                        op,
                        "401",
                        "`unauthenticated`: auth is on and the bearer token is missing, unknown, revoked or expired",
                    );
                    if path != "/v1/auth/whoami" {
                        add_response(
                            op,
                            "403",
                            "`permission_denied`: the token's role does not allow this route or these keys",
                        );
                    }
                }
                for response in op.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        response
                            .headers
                            .insert(REVISION_HEADER.to_string(), revision.clone());
                        response
                            .headers
                            .insert(NODE_HEADER.to_string(), node.clone());
                    }
                }
            }
        }
    }
}

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "ballast HTTP API",
        description = "The client API of a ballast node (see docs/api.md). Errors are \
                       `{\"error\": {\"code\", \"message\"}}`; `503` and `429` carry `Retry-After`."
    ),
    paths(
        super::kv::get,
        super::kv::put,
        super::kv::delete,
        super::kv::txn,
        super::session::register,
        super::watch::watch,
        super::watch::compact,
        super::status::status,
        super::status::live,
        super::status::ready,
        super::status::metrics,
        super::replicas::list,
        super::replicas::report,
        super::members::endpoints,
        super::members::list,
        super::members::add,
        super::members::remove,
        super::members::promote,
        super::members::transfer,
        super::snapshot::snapshot,
        super::alarms::list,
        super::alarms::disarm,
        super::auth::create_token,
        super::auth::list_tokens,
        super::auth::revoke_token,
        super::auth::create_role,
        super::auth::list_roles,
        super::auth::delete_role,
        super::auth::whoami,
        super::ui::dashboard,
        openapi_json,
    ),
    components(schemas(ErrorBody, ErrorDetail, LeaderHint)),
    modifiers(&SharedResponses)
)]
pub struct ApiDoc;

/// The document as JSON, built once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the document: {e}\"}}"))
    })
}

/// `GET /openapi.json`: the OpenAPI document of this API.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    responses((status = 200, description = "the OpenAPI document", content_type = "application/json"))
)]
pub async fn openapi_json() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}
