//! `/v1/kv` and `/v1/txn` handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection, RawPathParamsRejection};
use axum::extract::{Query, RawPathParams, State};
use axum::Json;
use serde::Deserialize;

use super::error::ApiError;
use super::json::{kvs_json, DeleteJson, GetJson, KvJson, PutJson, RangeJson, TxnJson};
use super::txn::TxnRequestJson;
use crate::kv::{Command, CommandResponse, TxnRequest};
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

/// The key from the path (`/v1/kv/{*key}`), empty on the bare `/v1/kv/` routes.
fn path_key(path: Result<RawPathParams, RawPathParamsRejection>) -> Result<String, ApiError> {
    let params = path.map_err(|e| {
        ApiError::bad_request("invalid_key", format!("bad key in path: {}", e.body_text()))
    })?;
    Ok(params
        .iter()
        .find(|(name, _)| *name == "key")
        .map(|(_, value)| value.to_string())
        .unwrap_or_default())
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
    path: Result<RawPathParams, RawPathParamsRejection>,
    q: Result<Query<GetQuery>, QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let key = path_key(path)?;
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
    let reader = node.reader().clone();
    let revision = q.revision;
    if q.prefix {
        let limit = q.limit.filter(|l| *l > 0);
        let r = tokio::task::spawn_blocking(move || reader.range(&key, limit, revision))
            .await
            .map_err(|e| NodeError::Internal(e.to_string()))?
            .map_err(NodeError::from)?;
        Ok(Json(RangeJson {
            revision: r.revision,
            kvs: kvs_json(r.kvs),
            more: r.more,
        })
        .into_response())
    } else {
        let (revision, kv) = reader.get(&key, revision).map_err(NodeError::from)?;
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
    path: Result<RawPathParams, RawPathParamsRejection>,
    q: Result<Query<PutQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PutJson>, ApiError> {
    let key = path_key(path)?;
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
    path: Result<RawPathParams, RawPathParamsRejection>,
    q: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<DeleteJson>, ApiError> {
    let key = path_key(path)?;
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
