//! `/v1/kv` and `/v1/txn` handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection, RawPathParamsRejection};
use axum::extract::{FromRequestParts, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::json::{kvs_json, DeleteJson, GetJson, KvJson, PutJson, RangeJson, TxnJson};
use super::txn::TxnRequestJson;
use crate::kv::{Command, CommandResponse, ReadError, TxnRequest};
use crate::raft::node::{Node, NodeError};

/// Read consistency of a `GET`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Read-index barrier first; never stale.
    #[default]
    Linearizable,
    /// This node's applied state; may be stale.
    Serializable,
}

/// Query of `GET /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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
    pub consistency: Consistency,
}

/// Query of `PUT /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// Return the previous key-value.
    #[serde(default)]
    pub prev_kv: bool,
}

/// Query of `DELETE /v1/kv/{key}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteQuery {
    /// Delete a prefix.
    #[serde(default)]
    pub prefix: bool,
    /// Return the deleted key-values.
    #[serde(default)]
    pub prev_kv: bool,
}

/// The shared state of the handlers.
pub type AppState = Arc<Node>;

/// The key from the path (`/v1/kv/{*key}`, percent-decoded), empty on the
/// bare `/v1/kv/` routes. A malformed percent escape (`%ZZ`, a lone `%`) is
/// refused rather than stored literally, so one key has one spelling.
pub struct KeyPath(pub String);

/// Whether every `%` in `path` starts a two-hex-digit escape.
fn well_escaped(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |j: usize| bytes.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if !well_escaped(parts.uri.path()) {
            return Err(ApiError::bad_request(
                "invalid_key",
                "the key in the path has a malformed percent escape",
            ));
        }
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e: RawPathParamsRejection| {
                ApiError::bad_request("invalid_key", format!("bad key in path: {}", e.body_text()))
            })?;
        Ok(KeyPath(
            params
                .iter()
                .find(|(name, _)| *name == "key")
                .map(|(_, value)| value.to_string())
                .unwrap_or_default(),
        ))
    }
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
}

fn unexpected(resp: CommandResponse) -> ApiError {
    ApiError::Node(NodeError::Internal(format!(
        "unexpected state machine response {resp:?}"
    )))
}

/// `GET /v1/kv/{key}`: one key, or a prefix with `prefix=true`.
pub async fn get(
    State(node): State<AppState>,
    KeyPath(key): KeyPath,
    q: Result<Query<GetQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let q = query(q)?;
    if q.limit.is_some() && !q.prefix {
        return Err(ApiError::bad_request(
            "invalid_query",
            "limit is only valid with prefix=true",
        ));
    }
    if q.prefix {
        node.limits().check_prefix(&key)?;
    } else {
        node.limits().check_key(&key)?;
    }
    if q.consistency == Consistency::Linearizable {
        node.linearizable_barrier().await?;
    }
    let revision = q.revision;
    if q.prefix {
        let limit = q.limit.filter(|l| *l > 0);
        let r = node
            .read_local(|reader| {
                let key = key.clone();
                async move {
                    tokio::task::spawn_blocking(move || reader.range(&key, limit, revision))
                        .await
                        .map_err(|e| ReadError::Storage(std::io::Error::other(e)))?
                }
            })
            .await?;
        Ok(Json(RangeJson {
            revision: r.revision,
            kvs: kvs_json(r.kvs),
            more: r.more,
        })
        .into_response())
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
pub async fn put(
    State(node): State<AppState>,
    KeyPath(key): KeyPath,
    q: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PutJson>, ApiError> {
    let q = query(q)?;
    node.limits().check_key(&key)?;
    let value = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::BodyTooLarge(format!(
            "could not read the value: {} (limit {} bytes)",
            e.body_text(),
            node.limits().max_value_bytes
        )),
        other => ApiError::bad_request("invalid_request", other.body_text()),
    })?;
    let cmd = Command::Put {
        key,
        value: value.to_vec(),
        prev_kv: q.prev_kv,
    };
    match node.write(cmd).await? {
        CommandResponse::Put { revision, prev_kv } => Ok(Json(PutJson {
            revision,
            prev_kv: prev_kv.map(KvJson::from),
        })),
        other => Err(unexpected(other)),
    }
}

/// `DELETE /v1/kv/{key}`: one key, or a prefix with `prefix=true`.
pub async fn delete(
    State(node): State<AppState>,
    KeyPath(key): KeyPath,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<DeleteJson>, ApiError> {
    let q = query(q)?;
    let cmd = Command::Delete {
        key,
        prefix: q.prefix,
        prev_kv: q.prev_kv,
    };
    match node.write(cmd).await? {
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
pub async fn txn(
    State(node): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TxnJson>, ApiError> {
    let body = body.map_err(|e| {
        ApiError::BodyTooLarge(format!("could not read the body: {}", e.body_text()))
    })?;
    let parsed: TxnRequestJson = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request("invalid_json", format!("invalid transaction JSON: {e}"))
    })?;
    let txn = TxnRequest::try_from(parsed)?;
    match node.write(Command::Txn(txn)).await? {
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
