//! Membership and leadership: `GET/POST /v1/members`,
//! `DELETE /v1/members/{id}`, `POST /v1/members/{id}/promote`,
//! `POST /v1/leader/transfer`.
//!
//! Every call may go to any node: the node forwards it to the leader. A
//! change refused as things stand answers `409` with one of the codes
//! `change_in_progress`, `learner_not_ready`, `would_lose_quorum` or
//! `member_exists` ([`crate::Error::Api`]).

use reqwest::Method;
use serde::Deserialize;
use tracing::instrument;

use crate::client::{decode, Client};
use crate::error::Result;
use crate::transport::{Call, Kind};

/// One member, with the leader's view of its progress.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MemberInfo {
    /// Node id.
    pub id: u64,
    /// Client address.
    pub client_addr: String,
    /// Peer address.
    pub peer_addr: String,
    /// `leader`, `voter` or `learner`.
    pub role: String,
    /// Last log index the leader knows it holds.
    pub match_index: Option<u64>,
    /// Entries it is behind the leader.
    pub lag: Option<u64>,
    /// Milliseconds since it last answered the leader.
    pub last_ack_ms: Option<u64>,
    /// Whether it answered the leader within the election timeout.
    pub healthy: bool,
}

/// The membership as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MembersView {
    /// The leader.
    pub leader: u64,
    /// The leader's term.
    pub term: u64,
    /// The leader's last log index.
    pub last_log_index: u64,
    /// Log index of the membership in force.
    pub membership_log_index: u64,
    /// The members, voters first.
    pub members: Vec<MemberInfo>,
}

/// Answer to [`Client::transfer_leader`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TransferResponse {
    /// The new leader.
    pub leader: u64,
    /// Its term.
    pub term: u64,
}

impl Client {
    /// The members and the leader's view of their progress.
    #[instrument(skip(self), level = "debug")]
    pub async fn members(&self) -> Result<MembersView> {
        self.admin_call(Method::GET, "/v1/members".into(), None, Kind::Read)
            .await
    }

    /// Adds node `id` as a learner (a non-voting member that receives the
    /// log). Start the node with `ballastd --join` (which also asks for
    /// this); adding the same id with the same addresses again is accepted.
    #[instrument(skip(self), level = "debug")]
    pub async fn add_learner(
        &self,
        id: u64,
        client_addr: &str,
        peer_addr: &str,
    ) -> Result<MembersView> {
        let body = serde_json::json!({
            "id": id, "client_addr": client_addr, "peer_addr": peer_addr,
        });
        self.admin_call(Method::POST, "/v1/members".into(), Some(body), Kind::Write)
            .await
    }

    /// Makes learner `id` a voter; refused (`409 learner_not_ready`) until its
    /// log holds 90% of the leader's.
    #[instrument(skip(self), level = "debug")]
    pub async fn promote(&self, id: u64) -> Result<MembersView> {
        self.admin_call(
            Method::POST,
            format!("/v1/members/{id}/promote"),
            None,
            Kind::Write,
        )
        .await
    }

    /// Removes member `id` (the leader hands leadership over first).
    #[instrument(skip(self), level = "debug")]
    pub async fn remove_member(&self, id: u64) -> Result<MembersView> {
        self.admin_call(
            Method::DELETE,
            format!("/v1/members/{id}"),
            None,
            Kind::Write,
        )
        .await
    }

    /// Hands leadership to voter `to` and waits until it leads.
    #[instrument(skip(self), level = "debug")]
    pub async fn transfer_leader(&self, to: u64) -> Result<TransferResponse> {
        let body = serde_json::json!({ "to": to });
        self.admin_call(
            Method::POST,
            "/v1/leader/transfer".into(),
            Some(body),
            Kind::Write,
        )
        .await
    }

    async fn admin_call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        target: String,
        body: Option<serde_json::Value>,
        kind: Kind,
    ) -> Result<T> {
        let call = Call {
            method,
            target,
            body: body.map(|b| ("application/json", b.to_string().into_bytes())),
            kind,
        };
        let answer = self.inner.execute(call).await?;
        decode(&answer)
    }
}
