//! `GET /v1/alarms` and `POST /v1/alarms/disarm`: the replicated alarms
//! (see `kv::alarms`) and how an operator clears them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ErrorCode};
use super::input::{parse_json, read_body, BodyKind};
use super::openapi::ErrorBody;
use crate::kv::alarms::{Alarm, AlarmKind};
use crate::raft::node::Node;

/// One active alarm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AlarmJson {
    /// The member that raised it.
    pub member: u64,
    /// What it is about: `nospace` (the member's disk is below
    /// `--min-free-bytes`; writes that could add data are refused).
    pub alarm: String,
}

impl From<&Alarm> for AlarmJson {
    fn from(a: &Alarm) -> Self {
        AlarmJson {
            member: a.member,
            alarm: a.kind.as_str().to_string(),
        }
    }
}

/// The alarms of `node` as JSON.
pub fn active(node: &Node) -> Vec<AlarmJson> {
    node.alarms().iter().map(AlarmJson::from).collect()
}

/// Answer of `GET /v1/alarms` and `POST /v1/alarms/disarm`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlarmsJson {
    /// The alarms active (as this node has applied them).
    pub alarms: Vec<AlarmJson>,
    /// With `POST /v1/alarms/disarm`: the alarms it disarmed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disarmed: Option<Vec<AlarmJson>>,
}

/// Body of `POST /v1/alarms/disarm`; an empty object disarms every alarm.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisarmBody {
    /// Only this member's alarms.
    pub member: Option<u64>,
    /// Only alarms of this kind (`nospace`).
    pub alarm: Option<String>,
}

/// `GET /v1/alarms`: the active alarms.
#[utoipa::path(
    get,
    path = "/v1/alarms",
    tag = "admin",
    responses(
        (status = 200, description = "the active alarms, as this node has applied them", body = AlarmsJson),
    )
)]
pub async fn list(State(node): State<Arc<Node>>) -> Json<AlarmsJson> {
    Json(AlarmsJson {
        alarms: active(&node),
        disarmed: None,
    })
}

/// `POST /v1/alarms/disarm`: disarms the alarms that match, through Raft. A
/// member still short of space raises its alarm again at its next check.
#[utoipa::path(
    post,
    path = "/v1/alarms/disarm",
    tag = "admin",
    request_body = DisarmBody,
    responses(
        (status = 200, description = "disarmed (`disarmed` lists what matched; the alarms left follow)", body = AlarmsJson),
        (status = 400, description = "`invalid_json`, `invalid_request` (an unknown alarm kind)", body = ErrorBody),
        (status = 413, description = "`request_too_large`", body = ErrorBody),
        (status = 503, description = "`no_leader`, `timeout`, `too_many_requests` (`Retry-After`)", body = ErrorBody),
    )
)]
pub async fn disarm(
    State(node): State<Arc<Node>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AlarmsJson>, ApiError> {
    let body = read_body(body, BodyKind::Request, node.limits().max_request_bytes())?;
    let parsed: DisarmBody = if body.iter().all(|b| b.is_ascii_whitespace()) {
        DisarmBody::default()
    } else {
        parse_json(
            &body,
            "expected {\"member\": N, \"alarm\": \"nospace\"} (both optional)",
        )?
    };
    let kind = match parsed.alarm.as_deref() {
        None => None,
        Some(name) => Some(AlarmKind::parse(name).ok_or_else(|| {
            ApiError::refused(
                ErrorCode::InvalidRequest,
                format!("unknown alarm {name:?}; the alarms are: nospace"),
            )
        })?),
    };
    let disarmed = node.disarm(parsed.member, kind).await?;
    Ok(Json(AlarmsJson {
        alarms: active(&node),
        disarmed: Some(disarmed.iter().map(AlarmJson::from).collect()),
    }))
}
