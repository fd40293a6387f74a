//! Membership changes and leader transfer, run on the leader.
//!
//! Every operation reaches the leader (a follower forwards it over the peer
//! protocol, [`super::wire::PeerRequest::Admin`]) and is checked there
//! against the leader's view of its followers before anything is proposed:
//!
//! - **One change at a time.** A change is refused with `change_in_progress`
//!   while another runs on the leader, while the last membership entry is not
//!   committed, or while the cluster is in a joint configuration. The change
//!   itself is proposed with openraft's `LastMembershipLogId` precondition, so
//!   a change made in between by another leader is refused too.
//! - **Promotion waits for catch-up** (etcd's rule): a learner becomes a voter
//!   only once its log has reached 90% of the leader's and it answered within
//!   the election timeout.
//! - **No change may cost the quorum** (etcd's strict reconfiguration check):
//!   a voter is removed only if the voters left that answered recently still
//!   form a quorum of the new configuration; a voter is added only if the
//!   healthy voters, the new one included, form a quorum of the larger one.
//! - **Removing the leader** hands leadership to the most caught-up healthy
//!   voter first; the new leader then removes the old one.
//! - A removed node is told so ([`super::wire::PeerRequest::Removed`]); it stops
//!   serving and its API answers `410 removed`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ChangeMembershipError, ClientWriteError, RaftError};
use openraft::raft::Precondition;
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};

use super::node::{Node, NodeError};
use super::types::{Member, NodeId, TypeConfig};
use super::wire::ForwardError;

/// A membership or leadership operation, as the API and the peer protocol
/// carry it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminRequest {
    /// The members with the leader's view of their progress.
    Members,
    /// Adds a non-voting learner (idempotent for the same id and addresses).
    AddLearner {
        /// Its id.
        id: NodeId,
        /// Its addresses.
        member: Member,
    },
    /// Makes a caught-up learner a voter.
    Promote {
        /// The learner.
        id: NodeId,
    },
    /// Removes a voter or a learner (the leader too).
    Remove {
        /// The member.
        id: NodeId,
    },
    /// Hands leadership to a voter.
    TransferLeader {
        /// The voter.
        to: NodeId,
    },
}

/// One member as `GET /v1/members` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberInfo {
    /// Node id.
    pub id: NodeId,
    /// Client address.
    pub client_addr: String,
    /// Peer address.
    pub peer_addr: String,
    /// `leader`, `voter` or `learner`.
    pub role: String,
    /// Last log index the leader knows this member holds (the leader's own
    /// last index for the leader); `None` before it acknowledged anything.
    pub match_index: Option<u64>,
    /// Entries this member is behind the leader's log; `None` when unknown.
    pub lag: Option<u64>,
    /// Milliseconds since the member last acknowledged the leader; `None` for
    /// the leader itself and for members that never answered.
    pub last_ack_ms: Option<u64>,
    /// Whether it answered within the election timeout (always true for the
    /// leader).
    pub healthy: bool,
}

/// The membership as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MembersView {
    /// The leader.
    pub leader: NodeId,
    /// The leader's term.
    pub term: u64,
    /// The leader's last log index.
    pub last_log_index: u64,
    /// Log index of the membership entry in force.
    pub membership_log_index: u64,
    /// Every member, voters first.
    pub members: Vec<MemberInfo>,
}

/// The voters' client addresses, as one node knows them: what a client
/// needs to follow membership changes (`GET /v1/endpoints`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointsView {
    /// The leader this node knows of, if any.
    pub leader: Option<NodeId>,
    /// Log index of the committed membership entry they come from.
    pub membership_log_index: u64,
    /// The voters of that membership (every voter of both halves of a joint
    /// configuration), by id.
    pub voters: Vec<VoterEndpoint>,
}

/// One voter of [`EndpointsView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct VoterEndpoint {
    /// Node id.
    pub id: NodeId,
    /// Its client address, `host:port`, as it was added.
    pub client_addr: String,
}

/// What an admin operation answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminResponse {
    /// The membership (after the change, for a change).
    Members(MembersView),
    /// Leadership moved.
    Transferred {
        /// The new leader.
        leader: NodeId,
        /// Its term.
        term: u64,
    },
}

/// Why an admin operation was refused or failed.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum AdminError {
    /// Another membership change is in flight.
    #[error("{0}")]
    InProgress(String),
    /// The learner is too far behind to be promoted.
    #[error("{0}")]
    NotCaughtUp(String),
    /// The change would leave the cluster without a working quorum.
    #[error("{0}")]
    WouldLoseQuorum(String),
    /// The id or address is already taken.
    #[error("{0}")]
    Exists(String),
    /// No such member.
    #[error("{0}")]
    NotFound(String),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// No leader could serve it, it timed out, or the leader failed.
    #[error(transparent)]
    Forward(#[from] ForwardError),
}

impl From<NodeError> for AdminError {
    fn from(e: NodeError) -> Self {
        AdminError::Forward(e.into_forward_error())
    }
}

/// The leader's view of one follower.
struct Progress {
    matched: Option<u64>,
    since_ack: Option<Duration>,
}

/// A snapshot of what the leader knows, taken from Raft's metrics.
struct LeaderView {
    term: u64,
    last_log_index: u64,
    uncommitted_change: bool,
    joint: bool,
    voters: BTreeSet<NodeId>,
    nodes: BTreeMap<NodeId, Member>,
    progress: BTreeMap<NodeId, Progress>,
    membership_log_id: Option<super::types::LogId>,
}

impl LeaderView {
    fn membership_log_index(&self) -> u64 {
        self.membership_log_id.as_ref().map_or(0, |l| l.index)
    }

    fn healthy(&self, id: NodeId, me: NodeId, window: Duration) -> bool {
        id == me
            || self
                .progress
                .get(&id)
                .and_then(|p| p.since_ack)
                .is_some_and(|d| d <= window)
    }

    fn info(&self, me: NodeId, window: Duration) -> MembersView {
        let mut members: Vec<MemberInfo> = self
            .nodes
            .iter()
            .map(|(id, member)| {
                let progress = self.progress.get(id);
                let match_index = if *id == me {
                    Some(self.last_log_index)
                } else {
                    progress.and_then(|p| p.matched)
                };
                MemberInfo {
                    id: *id,
                    client_addr: member.client_addr.clone(),
                    peer_addr: member.peer_addr.clone(),
                    role: if *id == me {
                        "leader"
                    } else if self.voters.contains(id) {
                        "voter"
                    } else {
                        "learner"
                    }
                    .to_string(),
                    match_index,
                    lag: match_index.map(|m| self.last_log_index.saturating_sub(m)),
                    last_ack_ms: if *id == me {
                        None
                    } else {
                        progress
                            .and_then(|p| p.since_ack)
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    },
                    healthy: self.healthy(*id, me, window),
                }
            })
            .collect();
        members.sort_by_key(|m| (m.role == "learner", m.id));
        MembersView {
            leader: me,
            term: self.term,
            last_log_index: self.last_log_index,
            membership_log_index: self.membership_log_index(),
            members,
        }
    }
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The promotion rule: the learner holds at least 90% of the leader's log.
pub fn caught_up(learner_match: Option<u64>, leader_last: u64) -> bool {
    match learner_match {
        Some(m) => m.saturating_mul(10) >= leader_last.saturating_mul(9),
        None => leader_last == 0,
    }
}

impl Node {
    fn leader_view(&self) -> Result<LeaderView, AdminError> {
        let metrics = self.raft().metrics();
        let m = metrics.borrow_watched();
        if m.state != ServerState::Leader {
            return Err(AdminError::Forward(ForwardError::NotLeader {
                leader: None,
            }));
        }
        let stored = &m.membership_config;
        let membership = stored.membership();
        let committed = &m.committed_membership_config;
        let mut progress = BTreeMap::new();
        for (id, _) in membership.nodes() {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map(|l| l.index);
            let since_ack = m
                .heartbeat
                .as_ref()
                .and_then(|h| h.get(id).cloned().flatten())
                .map(|t| openraft::Instant::elapsed(&*t));
            progress.insert(*id, Progress { matched, since_ack });
        }
        Ok(LeaderView {
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            uncommitted_change: stored.log_id() != committed.log_id(),
            joint: membership.get_joint_config().len() > 1,
            voters: membership.voter_ids().collect(),
            nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
            progress,
            membership_log_id: *stored.log_id(),
        })
    }

    /// The voters of the membership this node knows to be committed, with
    /// their client addresses: from its own state, with no leader involved
    /// (learners are left out until promoted).
    pub fn endpoints_view(&self) -> EndpointsView {
        let metrics = self.raft().metrics();
        let m = metrics.borrow_watched();
        let committed = &m.committed_membership_config;
        let membership = committed.membership();
        EndpointsView {
            leader: m.current_leader,
            membership_log_index: committed.log_id().as_ref().map_or(0, |l| l.index),
            voters: membership
                .voter_ids()
                .filter_map(|id| {
                    membership.get_node(&id).map(|n| VoterEndpoint {
                        id,
                        client_addr: n.client_addr.clone(),
                    })
                })
                .collect(),
        }
    }

    /// The leader's view once every member has answered this leader at least
    /// once (a new leader knows nothing of its followers yet), or after the
    /// health window, whichever comes first.
    async fn settled_view(&self) -> Result<LeaderView, AdminError> {
        let deadline = tokio::time::Instant::now() + self.health_window();
        loop {
            let view = self.leader_view()?;
            let me = self.id();
            let unknown = view
                .nodes
                .keys()
                .any(|id| *id != me && view.progress.get(id).is_none_or(|p| p.since_ack.is_none()));
            if !unknown || tokio::time::Instant::now() >= deadline {
                return Ok(view);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The window in which a member must have answered to count as healthy.
    fn health_window(&self) -> Duration {
        self.options().election_timeout_max
    }

    /// On the leader: its voters and how many of them answered it within the
    /// health window (the leader counts itself). `None` on other nodes.
    pub(crate) fn voter_health(&self) -> Option<(usize, usize)> {
        let view = self.leader_view().ok()?;
        let window = self.health_window();
        let healthy = view
            .voters
            .iter()
            .filter(|id| view.healthy(**id, self.id(), window))
            .count();
        Some((view.voters.len(), healthy))
    }

    /// Runs an admin operation on this node, which must be the leader.
    pub(crate) async fn execute_admin(
        &self,
        request: AdminRequest,
    ) -> Result<AdminResponse, AdminError> {
        match request {
            AdminRequest::Members => Ok(AdminResponse::Members(
                self.leader_view()?.info(self.id(), self.health_window()),
            )),
            AdminRequest::TransferLeader { to } => {
                let (leader, term) = self.transfer_to(to).await?;
                Ok(AdminResponse::Transferred { leader, term })
            }
            change => {
                let _guard = self.change_lock().try_lock().map_err(|_| {
                    AdminError::InProgress(
                        "another membership change is in flight on the leader; retry when it \
                         has finished"
                            .into(),
                    )
                })?;
                self.change(change).await
            }
        }
    }

    async fn change(&self, request: AdminRequest) -> Result<AdminResponse, AdminError> {
        let view = self.settled_view().await?;
        let me = self.id();
        let window = self.health_window();
        if view.uncommitted_change || view.joint {
            return Err(AdminError::InProgress(format!(
                "the membership change at log index {} is not complete yet; retry when it has \
                 committed",
                view.membership_log_index()
            )));
        }
        let healthy_voters = view
            .voters
            .iter()
            .filter(|v| view.healthy(**v, me, window))
            .count();
        let (changes, removed): (ChangeMembers<NodeId, Member>, Option<(NodeId, Member)>) =
            match request {
                AdminRequest::AddLearner { id, member } => {
                    if id == 0 {
                        return Err(AdminError::Invalid("node ids must be non-zero".into()));
                    }
                    if let Some(existing) = view.nodes.get(&id) {
                        if *existing == member && !view.voters.contains(&id) {
                            // Already added with these addresses: nothing to
                            // change. A learner asks again when it joins with
                            // an empty data directory (a first start, or a
                            // wiped learner): its log may now be shorter than
                            // the leader remembers, which openraft treats as
                            // fatal unless allowed once.
                            self.raft()
                                .trigger()
                                .allow_next_revert(&id, true)
                                .await
                                .map_err(|e| {
                                    AdminError::Forward(ForwardError::Internal(e.to_string()))
                                })?
                                .map_err(|e| AdminError::Invalid(e.to_string()))?;
                            return Ok(AdminResponse::Members(view.info(me, window)));
                        }
                        return Err(AdminError::Exists(format!(
                            "node {id} is already a {} ({existing}); remove it first to add it \
                             again",
                            if view.voters.contains(&id) {
                                "voter"
                            } else {
                                "learner"
                            }
                        )));
                    }
                    if let Some((other, _)) = view.nodes.iter().find(|(_, n)| {
                        n.peer_addr == member.peer_addr || n.client_addr == member.client_addr
                    }) {
                        return Err(AdminError::Exists(format!(
                            "node {other} already uses one of these addresses ({member})"
                        )));
                    }
                    (
                        ChangeMembers::AddNodes(BTreeMap::from([(id, member)])),
                        None,
                    )
                }
                AdminRequest::Promote { id } => {
                    if view.voters.contains(&id) {
                        return Err(AdminError::Exists(format!("node {id} is already a voter")));
                    }
                    if !view.nodes.contains_key(&id) {
                        return Err(AdminError::NotFound(format!(
                            "node {id} is not a member; add it as a learner first"
                        )));
                    }
                    let matched = view.progress.get(&id).and_then(|p| p.matched);
                    if !caught_up(matched, view.last_log_index) {
                        return Err(AdminError::NotCaughtUp(format!(
                            "learner {id} holds {} of the leader's {} log entries; it can be \
                             promoted once it holds 90% of them",
                            matched.unwrap_or(0),
                            view.last_log_index
                        )));
                    }
                    if !view.healthy(id, me, window) {
                        return Err(AdminError::NotCaughtUp(format!(
                            "learner {id} has not answered the leader within {window:?}; it \
                             cannot be promoted while unreachable"
                        )));
                    }
                    let new_voters = view.voters.len() + 1;
                    if healthy_voters + 1 < majority(new_voters) {
                        return Err(AdminError::WouldLoseQuorum(format!(
                            "only {healthy_voters} of {} voters are healthy: with {id} there \
                             would be {new_voters} voters needing {} healthy ones",
                            view.voters.len(),
                            majority(new_voters)
                        )));
                    }
                    (ChangeMembers::AddVoterIds(BTreeSet::from([id])), None)
                }
                AdminRequest::Remove { id } => {
                    let Some(member) = view.nodes.get(&id).cloned() else {
                        return Err(AdminError::NotFound(format!("node {id} is not a member")));
                    };
                    if id == me {
                        // The caller hands leadership over first (Node::admin).
                        return Err(AdminError::Forward(ForwardError::NotLeader {
                            leader: None,
                        }));
                    }
                    if view.voters.contains(&id) {
                        if view.voters.len() == 1 {
                            return Err(AdminError::Invalid(format!(
                                "node {id} is the only voter; a cluster needs one"
                            )));
                        }
                        let left = view.voters.len() - 1;
                        let healthy_left =
                            healthy_voters - usize::from(view.healthy(id, me, window));
                        if healthy_left < majority(left) {
                            return Err(AdminError::WouldLoseQuorum(format!(
                                "removing voter {id} leaves {left} voters of which only \
                                 {healthy_left} are healthy, fewer than the {} a quorum needs",
                                majority(left)
                            )));
                        }
                        (
                            ChangeMembers::RemoveVoters(BTreeSet::from([id])),
                            Some((id, member)),
                        )
                    } else {
                        (
                            ChangeMembers::RemoveNodes(BTreeSet::from([id])),
                            Some((id, member)),
                        )
                    }
                }
                AdminRequest::Members | AdminRequest::TransferLeader { .. } => {
                    return Err(AdminError::Invalid("not a membership change".into()))
                }
            };
        let precondition = Precondition::LastMembershipLogId {
            last_membership_log_id: view.membership_log_id,
        };
        let timeout = self.options().request_timeout;
        let raft = self.raft().clone();
        // Runs to its end even when the client gives up: a membership change
        // must not be abandoned between its joint and uniform entries.
        let proposal = tokio::spawn(async move {
            raft.change_membership_if(changes, false, [precondition])
                .await
        });
        match tokio::time::timeout(timeout, proposal).await {
            Err(_) => {
                return Err(AdminError::Forward(ForwardError::Timeout(format!(
                    "the membership change was not committed within {timeout:?}; it may or may \
                     not take effect (check `members list`)"
                ))))
            }
            Ok(Err(join)) => {
                return Err(AdminError::Forward(ForwardError::Internal(format!(
                    "membership task failed: {join}"
                ))))
            }
            Ok(Ok(Err(e))) => return Err(change_error(e)),
            Ok(Ok(Ok(_))) => {}
        }
        if let Some((id, member)) = removed {
            self.notify_removed(id, &member).await;
        }
        Ok(AdminResponse::Members(self.leader_view()?.info(me, window)))
    }

    /// Hands leadership to `to`; returns it with its term once it leads.
    async fn transfer_to(&self, to: NodeId) -> Result<(NodeId, u64), AdminError> {
        let view = self.settled_view().await?;
        let me = self.id();
        if to == me {
            return Ok((me, view.term));
        }
        if !view.voters.contains(&to) {
            return Err(if view.nodes.contains_key(&to) {
                AdminError::Invalid(format!(
                    "node {to} is a learner; only a voter can lead (promote it first)"
                ))
            } else {
                AdminError::NotFound(format!("node {to} is not a member"))
            });
        }
        if !view.healthy(to, me, self.health_window()) {
            return Err(AdminError::Invalid(format!(
                "voter {to} has not answered the leader within {:?}; transfer to a healthy voter",
                self.health_window()
            )));
        }
        self.raft()
            .trigger()
            .transfer_leader(to)
            .await
            .map_err(|e| AdminError::Forward(ForwardError::Internal(e.to_string())))?;
        let timeout = self.options().request_timeout;
        let mut rx = self.raft().metrics();
        let moved = tokio::time::timeout(timeout, async {
            loop {
                {
                    let m = rx.borrow_watched();
                    if m.current_leader == Some(to) && m.current_term > view.term {
                        return Some(m.current_term);
                    }
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match moved {
            Ok(Some(term)) => Ok((to, term)),
            Ok(None) => Err(AdminError::Forward(ForwardError::Internal(
                "Raft stopped during the transfer".into(),
            ))),
            Err(_) => Err(AdminError::Forward(ForwardError::Timeout(format!(
                "node {to} did not take over within {timeout:?}; leadership may still move"
            )))),
        }
    }

    /// Hands leadership to the healthiest, most caught-up other voter, for
    /// the removal of this (leading) node. Returns the new leader.
    pub(crate) async fn hand_over_leadership(&self) -> Result<NodeId, AdminError> {
        let view = self.settled_view().await?;
        let me = self.id();
        let window = self.health_window();
        let best = view
            .voters
            .iter()
            .filter(|v| **v != me && view.healthy(**v, me, window))
            .max_by_key(|v| view.progress.get(v).and_then(|p| p.matched))
            .copied()
            .ok_or_else(|| {
                AdminError::WouldLoseQuorum(
                    "the leader has no healthy voter to hand leadership to".into(),
                )
            })?;
        Ok(self.transfer_to(best).await?.0)
    }
}

fn change_error(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> AdminError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            AdminError::Forward(ForwardError::NotLeader {
                leader: match (f.leader_id, f.leader_node) {
                    (Some(id), Some(node)) => Some((id, node)),
                    _ => None,
                },
            })
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => match c {
            ChangeMembershipError::InProgress(p) => {
                AdminError::InProgress(format!("another membership change is in progress: {p}"))
            }
            ChangeMembershipError::LearnerNotFound(l) => AdminError::NotFound(format!(
                "node {} is not a learner of the cluster",
                l.node_id
            )),
            other => AdminError::Invalid(other.to_string()),
        },
        RaftError::APIError(ClientWriteError::PreconditionFailed(p)) => AdminError::InProgress(
            format!("the membership changed while this change was prepared ({p}); retry"),
        ),
        RaftError::APIError(other) => AdminError::Invalid(other.to_string()),
        RaftError::Fatal(f) => AdminError::Forward(ForwardError::Internal(f.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn promotion_needs_ninety_percent_of_the_log() {
        assert!(caught_up(Some(90), 100));
        assert!(!caught_up(Some(89), 100));
        assert!(!caught_up(None, 100));
        assert!(caught_up(None, 0));
        assert!(caught_up(Some(u64::MAX), u64::MAX));
    }

    #[test]
    fn majorities() {
        assert_eq!(majority(1), 1);
        assert_eq!(majority(3), 2);
        assert_eq!(majority(4), 3);
        assert_eq!(majority(5), 3);
    }
}
