//! Failpoint control, compiled only with the `failpoints` feature:
//! `PUT /debug/failpoints/{name}` with a `fail` action as the body
//! (`sleep(200)`, `panic`, `return`, `20%sleep(50)`, `off`), `DELETE` to clear,
//! `GET /debug/failpoints` to list. Failpoints: `log-sync` (before the log
//! fsync), `apply` (before an applied batch is written), `snapshot-build`,
//! `snapshot-install`; and two planted bugs that the fault-injection checkers
//! must catch, on with `return`: `unsafe-local-linearizable-reads` (no
//! read-index barrier) and `unsafe-watch-skip-on-resume` (a resumed watch
//! skips a revision).

use axum::body::Bytes;
use axum::extract::Path;
use axum::Json;
use serde_json::{json, Value};

use super::error::{ApiError, ErrorCode};

/// `GET /debug/failpoints`.
pub async fn list() -> Json<Value> {
    let points: Vec<Value> = fail::list()
        .into_iter()
        .map(|(name, actions)| json!({ "name": name, "actions": actions }))
        .collect();
    Json(json!({ "failpoints": points }))
}

/// `PUT /debug/failpoints/{name}`.
pub async fn set(Path(name): Path<String>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let actions = std::str::from_utf8(&body)
        .map_err(|_| ApiError::refused(ErrorCode::InvalidRequest, "the action must be UTF-8"))?
        .trim()
        .to_string();
    fail::cfg(name.clone(), &actions)
        .map_err(|e| ApiError::refused(ErrorCode::InvalidRequest, e))?;
    tracing::warn!(failpoint = %name, %actions, "failpoint set");
    Ok(Json(json!({ "name": name, "actions": actions })))
}

/// `DELETE /debug/failpoints/{name}`.
pub async fn remove(Path(name): Path<String>) -> Json<Value> {
    fail::remove(&name);
    tracing::warn!(failpoint = %name, "failpoint removed");
    Json(json!({ "name": name, "removed": true }))
}
