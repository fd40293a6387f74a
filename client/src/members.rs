//! Membership and leadership: `GET/POST /v1/members`,
//! `DELETE /v1/members/{id}`, `POST /v1/members/{id}/promote`,
//! `POST /v1/leader/transfer`; and `GET /v1/endpoints`, the voters' client
//! addresses, which any token may read ([`Client::sync_endpoints`]).
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

/// One voter's client address ([`EndpointsView`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct VoterEndpoint {
    /// Node id.
    pub id: u64,
    /// Its client address, `host:port`.
    pub client_addr: String,
}

/// The voters of the committed membership with their client addresses, as
/// the answering node knows them (`GET /v1/endpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct EndpointsView {
    /// The leader the node knows of.
    pub leader: Option<u64>,
    /// Log index of the membership entry.
    pub membership_log_index: u64,
    /// The voters, by id.
    pub voters: Vec<VoterEndpoint>,
}

impl From<&MembersView> for EndpointsView {
    fn from(view: &MembersView) -> Self {
        EndpointsView {
            leader: Some(view.leader),
            membership_log_index: view.membership_log_index,
            voters: view
                .members
                .iter()
                .filter(|m| m.role == "leader" || m.role == "voter")
                .map(|m| VoterEndpoint {
                    id: m.id,
                    client_addr: m.client_addr.clone(),
                })
                .collect(),
        }
    }
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

    /// The voters' client addresses (`GET /v1/endpoints`, linearizable):
    /// any node answers from its own state after a read-index barrier, for
    /// any token (not only an admin's), without the admin requests' limit.
    #[instrument(skip(self), level = "debug")]
    pub async fn cluster_endpoints(&self) -> Result<EndpointsView> {
        self.cluster_endpoints_with(true).await
    }

    async fn cluster_endpoints_with(&self, linearizable: bool) -> Result<EndpointsView> {
        let target = if linearizable {
            "/v1/endpoints"
        } else {
            "/v1/endpoints?consistency=serializable"
        };
        self.admin_call(Method::GET, target.into(), None, Kind::Read)
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

    /// Replaces the client's endpoints with the client addresses of the
    /// cluster's voters, read from `GET /v1/endpoints` (any token may; from
    /// a node of an earlier build, which answers that route `404`, from
    /// `GET /v1/members`, an admin route when auth is on), and returns the
    /// new list. etcd's clients call this
    /// `Sync`: a client started with one or two seed addresses then knows
    /// every voter, and one that follows membership changes (a node added,
    /// promoted, removed or replaced under a new address) keeps working
    /// after the nodes it was configured with are gone.
    ///
    /// Learners are left out until promoted. A member that advertises an
    /// unspecified address (`0.0.0.0:2379`, a bind address rather than one
    /// to dial) is skipped. The scheme of the endpoint the client prefers
    /// (`http://` or `https://`) is used for all. The preferred endpoint
    /// stays preferred if it is still a voter. If no voter gives a usable
    /// address the list is left as it was and the call fails with
    /// [`Error::Decode`](crate::Error::Decode). Requests in flight finish
    /// on the list they started with.
    ///
    /// [`ClientBuilder::auto_sync_interval`](crate::ClientBuilder::auto_sync_interval)
    /// calls this periodically.
    #[instrument(skip(self), level = "debug")]
    pub async fn sync_endpoints(&self) -> Result<Vec<String>> {
        self.sync_endpoints_with(true).await
    }

    /// [`sync_endpoints`](Self::sync_endpoints), from the answering node's
    /// own view without a read barrier unless `linearizable` (a replica's
    /// periodic sync: no leader round trip per data-plane process).
    pub(crate) async fn sync_endpoints_with(&self, linearizable: bool) -> Result<Vec<String>> {
        let view = match self.cluster_endpoints_with(linearizable).await {
            Err(crate::Error::Api {
                status: 404, code, ..
            }) if code == "not_found" => EndpointsView::from(&self.members().await?),
            answer => answer?,
        };
        let (_, preferred) = self.inner.endpoints.preferred();
        let scheme = if preferred.starts_with("https://") {
            "https"
        } else {
            "http"
        };
        let urls = voter_endpoints(&view, scheme);
        if urls.is_empty() {
            return Err(crate::Error::Decode(format!(
                "the member list names no voter with a client address to dial: {:?}",
                view.voters
            )));
        }
        if self.inner.endpoints.replace(&urls)? {
            tracing::info!(endpoints = ?self.endpoints(), "endpoints synced with the membership");
        }
        Ok(self.endpoints())
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

/// The voters' client addresses as `scheme://host:port`, voters in the
/// order the node listed them, addresses no client can dial left out.
fn voter_endpoints(view: &EndpointsView, scheme: &str) -> Vec<String> {
    view.voters
        .iter()
        .filter(|m| dialable(&m.client_addr))
        .map(|m| format!("{scheme}://{}", m.client_addr))
        .collect()
}

/// Whether `host:port` names something to connect to: not empty and not an
/// unspecified (bind-all) IP address.
fn dialable(addr: &str) -> bool {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return false;
    };
    if host.is_empty() || port.is_empty() {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => !ip.is_unspecified(),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, client_addr: &str, role: &str) -> MemberInfo {
        MemberInfo {
            id,
            client_addr: client_addr.to_owned(),
            peer_addr: format!("peer-{id}:2380"),
            role: role.to_owned(),
            match_index: None,
            lag: None,
            last_ack_ms: None,
            healthy: true,
        }
    }

    #[test]
    fn voters_with_dialable_addresses_become_endpoints() {
        let view = MembersView {
            leader: 2,
            term: 3,
            last_log_index: 10,
            membership_log_index: 4,
            members: vec![
                member(2, "10.0.0.2:2379", "leader"),
                member(1, "node1.ballast:2379", "voter"),
                member(3, "0.0.0.0:2379", "voter"),
                member(4, "[::]:2379", "voter"),
                member(5, "[::1]:2379", "voter"),
                member(6, "10.0.0.6:2379", "learner"),
                member(7, "", "voter"),
                member(8, "no-port", "voter"),
            ],
        };
        assert_eq!(
            voter_endpoints(&EndpointsView::from(&view), "https"),
            vec![
                "https://10.0.0.2:2379".to_owned(),
                "https://node1.ballast:2379".to_owned(),
                "https://[::1]:2379".to_owned(),
            ]
        );
    }
}
