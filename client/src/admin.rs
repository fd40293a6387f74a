//! Maintenance calls: compaction, the data-plane rollout view and alarms
//! (`POST /v1/compact`, `GET /v1/replicas`, `GET /v1/alarms`,
//! `POST /v1/alarms/disarm`).

use reqwest::Method;
use serde::Deserialize;
use tracing::instrument;

use crate::client::{decode, Client};
use crate::error::Result;
use crate::transport::{Call, Kind};

/// Answer to [`Client::compact`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CompactResponse {
    /// The current revision.
    pub revision: u64,
    /// The compact revision now in force: watches and reads before it fail
    /// with `compacted`.
    pub compact_revision: u64,
}

/// One data-plane replica's latest report, from [`Client::replicas`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplicaInfo {
    /// The replica's id.
    pub id: String,
    /// The prefix it replicates.
    pub prefix: String,
    /// The revision it has applied.
    pub revision: u64,
    /// Whether it was serving its on-disk copy without a cluster connection.
    #[serde(default)]
    pub serving_from_disk: bool,
    /// The node that received the report.
    pub node: u64,
    /// Milliseconds since the report was received.
    pub age_ms: u64,
}

/// A replica that has not applied the rollout revision.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct LaggingReplica {
    /// The replica's id.
    pub id: String,
    /// The revision it has applied.
    pub revision: u64,
    /// How many revisions it is behind the rollout revision.
    pub behind: u64,
}

/// How far the rollout of one revision has converged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Rollout {
    /// The revision asked about.
    pub revision: u64,
    /// Replicas reporting.
    pub total: usize,
    /// Replicas at or past the revision.
    pub applied: usize,
    /// The others, furthest behind first.
    #[serde(default)]
    pub lagging: Vec<LaggingReplica>,
}

impl Rollout {
    /// True when every reporting replica applied the revision.
    pub fn converged(&self) -> bool {
        self.lagging.is_empty() && self.applied == self.total
    }
}

/// Answer to [`Client::replicas`] and [`Client::rollout`]: every node's
/// replica reports, merged.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReplicasResponse {
    /// The answering node's applied revision.
    pub revision: u64,
    /// Nodes whose reports are included.
    #[serde(default)]
    pub nodes_answered: Vec<u64>,
    /// Nodes that did not answer in time: their replicas' reports are missing.
    #[serde(default)]
    pub nodes_unreachable: Vec<u64>,
    /// The freshest report of every replica.
    #[serde(default)]
    pub replicas: Vec<ReplicaInfo>,
    /// With [`Client::rollout`]: the convergence of the asked revision.
    #[serde(default)]
    pub rollout: Option<Rollout>,
}

/// One active alarm, from [`Client::alarms`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AlarmInfo {
    /// The member that raised it.
    pub member: u64,
    /// What it is about (`nospace`).
    pub alarm: String,
}

/// Answer to [`Client::alarms`] and [`Client::disarm`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AlarmsResponse {
    /// The alarms active after the call.
    pub alarms: Vec<AlarmInfo>,
    /// With [`Client::disarm`]: the alarms it disarmed.
    #[serde(default)]
    pub disarmed: Option<Vec<AlarmInfo>>,
}

impl Client {
    /// The active alarms (`GET /v1/alarms`).
    #[instrument(skip(self), level = "debug")]
    pub async fn alarms(&self) -> Result<AlarmsResponse> {
        let call = Call {
            method: Method::GET,
            target: "/v1/alarms".to_owned(),
            body: None,
            kind: Kind::Read,
        };
        let answer = self.inner.execute(call).await?;
        decode(&answer)
    }

    /// Disarms the alarms that match (`member` and `alarm` absent: every
    /// one). A member still short of disk space raises its alarm again.
    /// Goes through Raft; a lost answer is `Indeterminate`.
    #[instrument(skip(self), level = "debug")]
    pub async fn disarm(&self, member: Option<u64>, alarm: Option<&str>) -> Result<AlarmsResponse> {
        let body = serde_json::json!({ "member": member, "alarm": alarm }).to_string();
        let call = Call {
            method: Method::POST,
            target: "/v1/alarms/disarm".to_owned(),
            body: Some(("application/json", body.into_bytes())),
            kind: Kind::Write,
        };
        let answer = self.inner.execute(call).await?;
        decode(&answer)
    }

    /// Compacts history up to `revision`: older revisions can no longer be
    /// read or watched. Goes through Raft; a lost answer is `Indeterminate`.
    #[instrument(skip(self), level = "debug")]
    pub async fn compact(&self, revision: u64) -> Result<CompactResponse> {
        let body = serde_json::json!({ "revision": revision }).to_string();
        let call = Call {
            method: Method::POST,
            target: "/v1/compact".to_owned(),
            body: Some(("application/json", body.into_bytes())),
            kind: Kind::Write,
        };
        let answer = self.inner.execute(call).await?;
        decode(&answer)
    }

    /// Every data-plane replica's latest report, merged from every node.
    #[instrument(skip(self), level = "debug")]
    pub async fn replicas(&self) -> Result<ReplicasResponse> {
        self.replicas_call("/v1/replicas".to_owned()).await
    }

    /// Like [`Client::replicas`], with a summary of how many replicas applied
    /// `revision` and which lag ([`ReplicasResponse::rollout`]).
    #[instrument(skip(self), level = "debug")]
    pub async fn rollout(&self, revision: u64) -> Result<ReplicasResponse> {
        self.replicas_call(format!("/v1/replicas?revision={revision}"))
            .await
    }

    async fn replicas_call(&self, target: String) -> Result<ReplicasResponse> {
        let call = Call {
            method: Method::GET,
            target,
            body: None,
            kind: Kind::Read,
        };
        let answer = self.inner.execute(call).await?;
        decode(&answer)
    }
}
