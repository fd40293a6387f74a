//! `/v1/kv` and `/v1/txn` handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::{Extension, Json};
use serde::Deserialize;

use super::admission::{hold_until_sent, Admission};
use super::auth::{require, require_command};
use super::bootstrap::SnapshotBuffer;
use super::error::ApiError;
use super::input::{invalid_query, parse_json, read_body, ApiQuery, BodyKind, KeyPath};
use super::json::{kvs_json, DeleteJson, GetJson, KvJson, PutJson, TxnJson};
use super::range::{self, RangeLimiter};
use super::session::{self, WriteSession};
use super::txn::TxnRequestJson;
use crate::kv::auth::{Access, Principal};
use crate::kv::{Command, CommandResponse, TxnRequest};
use crate::raft::node::{Node, NodeError};

/// Read consistency of a `GET`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read-index barrier first; never stale.
    #[default]
    Linearizable,
    /// This node's applied state; may be stale.
    Serializable,
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetQuery {
    /// Read a prefix.
    #[serde(default)]
    pub prefix: bool,
    /// Most keys returned by a prefix read (0 = no limit).
    pub limit: Option<usize>,
    /// Read at this past revision (0 or absent = now).
    pub revision: Option<u64>,
    /// Read consistency.
    #[serde(default)]
    #[param(inline)]
    pub consistency: Consistency,
    /// A replica's bootstrap read (with `prefix=true`): counted against the
    /// node's bootstrap bound, `429 too_many_bootstraps` beyond it, unless
    /// the snapshot buffer holds an unchanged copy of the prefix.
    #[serde(default)]
    pub bootstrap: bool,
}

/// Query of `PUT /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// Return the previous key-value.
    #[serde(default)]
    pub prev_kv: bool,
    /// Session: client id (see [`super::session`]).
    pub client: Option<String>,
    /// Session: the session.
    pub session: Option<u64>,
    /// Session: the write's sequence number.
    pub seq: Option<u64>,
    /// Session: every sequence number below it was answered.
    pub acked_below: Option<u64>,
}

/// Query of `DELETE /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete a prefix.
    #[serde(default)]
    pub prefix: bool,
    /// Return the deleted key-values.
    #[serde(default)]
    pub prev_kv: bool,
    /// Session: client id (see [`super::session`]).
    pub client: Option<String>,
    /// Session: the session.
    pub session: Option<u64>,
    /// Session: the write's sequence number.
    pub seq: Option<u64>,
    /// Session: every sequence number below it was answered.
    pub acked_below: Option<u64>,
}

/// Whether `Accept-Encoding` lists `zstd` (with a non-zero weight).
fn accepts_zstd(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("zstd"))
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

fn unexpected(resp: CommandResponse) -> ApiError {
    ApiError::Node(NodeError::Internal(format!(
        "unexpected state machine response {resp:?}"
    )))
}

/// `GET /v1/kv/{key}`: one key, or a prefix with `prefix=true` (streamed
/// in bounded chunks, see [`super::range`]).
#[utoipa::path(
    get,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(
        ("key" = String, Path, description = "the key (percent-encoded); with `prefix=true` a prefix"),
        GetQuery,
    ),
    responses(
        (status = 200, description = "the key-value, or with `prefix=true` the key-values under the prefix", body = super::openapi::GetAnswer),
        (status = 400, description = "`invalid_key`, `invalid_query`, `compacted`, `future_revision`", body = super::openapi::ErrorBody),
        (status = 404, description = "`key_not_found`, with the revision the read reflects", body = super::openapi::ErrorBody),
        (status = 413, description = "`key_too_large`", body = super::openapi::ErrorBody),
        (status = 429, description = "`too_many_range_reads`; with `bootstrap=true`, `too_many_bootstraps` (`Retry-After`)", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`: a linearizable read found no leader in time (`Retry-After`)", body = super::openapi::ErrorBody),
    )
)]
// One extractor per input, as axum handlers take them.
#[allow(clippy::too_many_arguments)]
pub async fn get(
    State(node): State<Arc<Node>>,
    State(ranges): State<Arc<RangeLimiter>>,
    Extension(principal): Extension<Principal>,
    State(admission): State<Arc<Admission>>,
    State(buffer): State<Arc<SnapshotBuffer>>,
    headers: axum::http::HeaderMap,
    KeyPath(key): KeyPath,
    ApiQuery(q): ApiQuery<GetQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if q.limit.is_some() && !q.prefix {
        return Err(invalid_query("limit is only valid with prefix=true"));
    }
    if q.bootstrap && !q.prefix {
        return Err(invalid_query("bootstrap is only valid with prefix=true"));
    }
    if q.prefix {
        node.limits().check_prefix(&key)?;
    } else {
        node.limits().check_key(&key)?;
    }
    require(&principal, Access::Read, &key, q.prefix)?;
    let revision = q.revision;
    let limit = q.limit.filter(|l| *l > 0);
    // A bootstrap of the whole prefix as of now may be answered from the
    // snapshot buffer.
    let buffered =
        q.bootstrap && limit.is_none() && revision.is_none_or(|r| r == 0) && buffer.enabled();
    // Refused before any work: a refusal must cost the node nothing. The
    // slots bound the bootstraps that scan or stream; one the buffer holds
    // an unchanged copy of takes none, since it only sends bytes already
    // encoded and shared by every such answer, and neither does one that
    // arrives while another bootstrap builds its prefix's copy: it waits
    // for that build (see docs/data-plane.md). A bootstrap that will build
    // claims the build first, so those arriving meanwhile see it under way.
    let mut claim = None;
    let needs_slot = if !q.bootstrap {
        false
    } else if !buffered {
        true
    } else if buffer.holds_unchanged(&key) {
        false
    } else {
        claim = buffer.claim(&key);
        claim.is_some()
    };
    let mut permit = if needs_slot {
        Some(admission.try_bootstrap()?)
    } else {
        None
    };
    if q.consistency == Consistency::Linearizable {
        node.linearizable_barrier().await?;
    }
    if q.prefix {
        if buffered {
            // Current as of now: the node applied at least this after the
            // read's consistency was met (the barrier, if linearizable).
            let need = node.applied().revision;
            let zstd = accepts_zstd(&headers);
            if let Some(response) = buffer.hit(&key, need, zstd).await {
                return Ok(hold_until_sent(response, permit));
            }
            if permit.is_none() {
                // A copy was expected: the one another bootstrap is building
                // answers this one too once it is in place.
                if let Some(response) = buffer.after_build(&key, need, zstd).await {
                    return Ok(hold_until_sent(response, permit));
                }
                // The copy went stale, or its build found the prefix too
                // large to buffer: this bootstrap scans, and needs a slot
                // like any other that does.
                permit = Some(admission.try_bootstrap()?);
            }
            if let Some(response) = buffer.build(&node, &key, need, zstd, claim).await? {
                return Ok(hold_until_sent(response, permit));
            }
        }
        let response = range::respond(&node, &ranges, key, limit, revision).await?;
        Ok(hold_until_sent(response, permit))
    } else {
        let (revision, kv) = node
            .read_local(|reader| std::future::ready(reader.get(&key, revision)))
            .await?;
        match kv {
            Some(kv) => Ok(Json(GetJson {
                revision,
                kv: KvJson::from(kv),
            })
            .into_response()),
            None => Err(ApiError::KeyNotFound { key, revision }),
        }
    }
}

/// `PUT /v1/kv/{key}`: the raw body is the value.
#[utoipa::path(
    put,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(("key" = String, Path, description = "the key (percent-encoded)"), PutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the value, raw bytes (any content type)"),
    responses(
        (status = 200, description = "committed", body = PutJson),
        (status = 400, description = "`invalid_key`, `invalid_query`, `invalid_request`", body = super::openapi::ErrorBody),
        (status = 410, description = "`session_expired` (a session write), `removed`", body = super::openapi::ErrorBody),
        (status = 413, description = "`key_too_large`, `value_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `too_many_requests` (`Retry-After`)", body = super::openapi::ErrorBody),
        (status = 507, description = "`quota_exceeded`: the key space is over `--quota-bytes`; `no_space`: a member is short of disk space (a `nospace` alarm); nothing was written", body = super::openapi::ErrorBody),
    )
)]
pub async fn put(
    State(node): State<Arc<Node>>,
    Extension(principal): Extension<Principal>,
    KeyPath(key): KeyPath,
    ApiQuery(q): ApiQuery<PutQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PutJson>, ApiError> {
    node.limits().check_key(&key)?;
    let session = WriteSession::from_query(q.client, q.session, q.seq, q.acked_below)?;
    let value = read_body(body, BodyKind::Value, node.limits().max_value_bytes)?;
    let cmd = Command::Put {
        key,
        value: value.to_vec(),
        prev_kv: q.prev_kv,
    };
    require_command(&principal, &cmd)?;
    match session::answer(node.write(session::wrap(&node, session, cmd)).await?)? {
        CommandResponse::Put { revision, prev_kv } => Ok(Json(PutJson {
            revision,
            prev_kv: prev_kv.map(KvJson::from),
        })),
        other => Err(unexpected(other)),
    }
}

/// `DELETE /v1/kv/{key}`: one key, or a prefix with `prefix=true`.
#[utoipa::path(
    delete,
    path = "/v1/kv/{key}",
    tag = "kv",
    params(("key" = String, Path, description = "the key, or with `prefix=true` a prefix (percent-encoded)"), DeleteQuery),
    responses(
        (status = 200, description = "committed (`deleted` is 0 when nothing matched)", body = DeleteJson),
        (status = 400, description = "`invalid_key`, `invalid_query`", body = super::openapi::ErrorBody),
        (status = 410, description = "`session_expired` (a session write), `removed`", body = super::openapi::ErrorBody),
        (status = 413, description = "`key_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `too_many_requests` (`Retry-After`)", body = super::openapi::ErrorBody),
    )
)]
pub async fn delete(
    State(node): State<Arc<Node>>,
    Extension(principal): Extension<Principal>,
    KeyPath(key): KeyPath,
    ApiQuery(q): ApiQuery<DeleteQuery>,
) -> Result<Json<DeleteJson>, ApiError> {
    let session = WriteSession::from_query(q.client, q.session, q.seq, q.acked_below)?;
    let cmd = Command::Delete {
        key,
        prefix: q.prefix,
        prev_kv: q.prev_kv,
    };
    require_command(&principal, &cmd)?;
    match session::answer(node.write(session::wrap(&node, session, cmd)).await?)? {
        CommandResponse::Delete {
            revision,
            deleted,
            prev_kvs,
        } => Ok(Json(DeleteJson {
            revision,
            deleted,
            prev_kvs: q.prev_kv.then(|| kvs_json(prev_kvs)),
        })),
        other => Err(unexpected(other)),
    }
}

/// `POST /v1/txn`.
#[utoipa::path(
    post,
    path = "/v1/txn",
    tag = "kv",
    request_body(content = TxnRequestJson, description = "compares, then the `success` or the `failure` ops"),
    responses(
        (status = 200, description = "committed (or, with only gets, read) at one revision", body = TxnJson),
        (status = 400, description = "`invalid_json`, `invalid_request`, `invalid_key`, `too_many_ops`", body = super::openapi::ErrorBody),
        (status = 410, description = "`session_expired` (a session write), `removed`", body = super::openapi::ErrorBody),
        (status = 413, description = "`key_too_large`, `value_too_large`, `request_too_large`", body = super::openapi::ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `too_many_requests` (`Retry-After`)", body = super::openapi::ErrorBody),
        (status = 507, description = "`quota_exceeded`: a transaction with a put while the key space is over `--quota-bytes`; `no_space`: the same while a member is short of disk space (a `nospace` alarm); nothing was written", body = super::openapi::ErrorBody),
    )
)]
pub async fn txn(
    State(node): State<Arc<Node>>,
    Extension(principal): Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TxnJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let mut parsed: TxnRequestJson = parse_json(&body, "invalid transaction JSON")?;
    let session = WriteSession::from_json(parsed.session.take())?;
    let txn = Command::Txn(TxnRequest::try_from(parsed)?);
    require_command(&principal, &txn)?;
    let cmd = session::wrap(&node, session, txn);
    match session::answer(node.write(cmd).await?)? {
        CommandResponse::Txn {
            succeeded,
            revision,
            responses,
        } => Ok(Json(TxnJson {
            succeeded,
            revision,
            responses: responses.into_iter().map(Into::into).collect(),
        })),
        other => Err(unexpected(other)),
    }
}
