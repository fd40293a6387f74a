//! A ballast node: Raft plus the key space, with the read and write paths the
//! API uses.
//!
//! - Writes go to the leader. A follower forwards them over the peer protocol
//!   (one hop); the client sees one answer either way.
//! - `linearizable_read` first passes a read-index barrier: the leader confirms
//!   its leadership with a quorum (openraft's ReadIndex) and names a log index;
//!   the serving node (leader or follower) waits until it has applied that
//!   index, then reads its own state. A follower never answers from its own
//!   state without that barrier.
//! - `local_read` (serializable) reads the node's applied state at once.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use serde::Serialize;
use tokio::sync::watch;

use super::network::{dial_addr, DialMap, NetFault};
use super::pool::PeerPool;
use super::types::{Member, NodeId, Raft, TypeConfig};
use super::wire::{CallError, ForwardError, PeerRequest, PeerResponse};
use crate::kv::{Command, CommandResponse, KvError, KvReader, Limits, ReadError};
use crate::metrics::Metrics;
use crate::replicas::{merge, ReplicaEntry, ReplicaRegistry};
use crate::storage::Applied;
use crate::watch::WatchHub;

/// Why a node could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The request itself is invalid.
    #[error(transparent)]
    Kv(#[from] KvError),
    /// No leader is reachable or known; nothing was applied. Retry later,
    /// preferably at `leader` when known.
    #[error("no leader available: {reason}")]
    NoLeader {
        /// Why.
        reason: String,
        /// The leader this node knows of, if any.
        leader: Option<(NodeId, Member)>,
    },
    /// The request may or may not have taken effect (writes) or could not be
    /// confirmed in time (reads).
    #[error("timed out: {0}")]
    Timeout(String),
    /// Storage or Raft failed on this node.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<ForwardError> for NodeError {
    fn from(e: ForwardError) -> Self {
        match e {
            ForwardError::NotLeader { leader } => NodeError::NoLeader {
                reason: "the node asked is not the leader".into(),
                leader,
            },
            ForwardError::Timeout(m) => NodeError::Timeout(m),
            ForwardError::Unavailable(m) => NodeError::NoLeader {
                reason: m,
                leader: None,
            },
            ForwardError::Invalid(m) => NodeError::Kv(KvError::InvalidRequest(format!(
                "refused by the leader: {m}"
            ))),
            ForwardError::Internal(m) => NodeError::Internal(format!("on the leader: {m}")),
        }
    }
}

impl From<ReadError> for NodeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Kv(k) => NodeError::Kv(k),
            ReadError::Storage(s) => NodeError::Internal(s.to_string()),
        }
    }
}

impl NodeError {
    /// The form a leader sends back to a follower that forwarded a request.
    fn into_forward_error(self) -> ForwardError {
        match self {
            NodeError::NoLeader { leader, .. } => ForwardError::NotLeader { leader },
            NodeError::Timeout(m) => ForwardError::Timeout(m),
            NodeError::Kv(k) => ForwardError::Invalid(k.to_string()),
            NodeError::Internal(m) => ForwardError::Internal(m),
        }
    }
}

/// Timeouts and limits of a node's request paths.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// Longest a client request may take before it is answered with a timeout.
    pub request_timeout: Duration,
    /// Connect timeout for peer connections.
    pub connect_timeout: Duration,
    /// Input limits.
    pub limits: Limits,
    /// Test-only: skip the read-index barrier (see the config flag).
    pub unsafe_local_linearizable_reads: bool,
    /// Test-only: resumed watches skip a revision (see the config flag).
    pub unsafe_watch_skip_on_resume: bool,
    /// Addresses to dial instead of peers' advertised ones.
    pub dial: DialMap,
    /// How long a data-plane replica's report is remembered.
    pub replica_ttl: Duration,
}

/// The Raft-side view reported by `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RaftStatus {
    /// Last log index written on this node.
    pub last_log_index: u64,
    /// Committed log index known to this node.
    pub committed: u64,
    /// Last applied log index.
    pub applied: u64,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
}

/// A member as listed in `/v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// Node id.
    pub id: NodeId,
    /// Client address.
    pub client_addr: String,
    /// Peer address.
    pub peer_addr: String,
    /// Voter (true) or learner (false).
    pub voter: bool,
}

/// Everything `/v1/status` reports.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// The leader this node knows of.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: u64,
    /// Applied key-space revision.
    pub revision: u64,
    /// Oldest readable revision.
    pub compact_revision: u64,
    /// Digest of the key space (hex); equal on nodes at the same revision.
    pub state_hash: String,
    /// Raft indexes.
    pub raft: RaftStatus,
    /// Cluster members.
    pub members: Vec<MemberStatus>,
}

/// A running node's request paths.
pub struct Node {
    id: NodeId,
    raft: Raft,
    reader: KvReader,
    applied: watch::Receiver<Applied>,
    pool: PeerPool,
    fault: NetFault,
    options: NodeOptions,
    watch: Arc<WatchHub>,
    metrics: Arc<Metrics>,
    replicas: ReplicaRegistry,
}

fn forward_hint(f: &ForwardToLeader<TypeConfig>) -> Option<(NodeId, Member)> {
    match (&f.leader_id, &f.leader_node) {
        (Some(id), Some(node)) => Some((*id, node.clone())),
        _ => None,
    }
}

impl Node {
    /// Assembles a node from its parts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        raft: Raft,
        reader: KvReader,
        applied: watch::Receiver<Applied>,
        fault: NetFault,
        options: NodeOptions,
        watch: Arc<WatchHub>,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let pool = PeerPool::new(fault.clone(), options.connect_timeout);
        let replicas = ReplicaRegistry::new(options.replica_ttl);
        Arc::new(Node {
            id,
            raft,
            reader,
            applied,
            pool,
            fault,
            options,
            watch,
            metrics,
            replicas,
        })
    }

    /// Replica reports received by this node.
    pub fn replicas(&self) -> &ReplicaRegistry {
        &self.replicas
    }

    /// Every member's replica reports, merged (freshest per replica). Returns
    /// the merged reports, the members that answered and those that did not.
    pub async fn merged_replicas(
        &self,
        timeout: Duration,
    ) -> (Vec<ReplicaEntry>, Vec<NodeId>, Vec<NodeId>) {
        let members: Vec<(NodeId, Member)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        let calls = members.into_iter().map(|(id, member)| async move {
            if id == self.id {
                return (id, Some(self.replicas.current()));
            }
            let addr = dial_addr(&self.options.dial, id, &member);
            match self.pool.call(&addr, &PeerRequest::Replicas, timeout).await {
                Ok(PeerResponse::Replicas(entries)) => (id, Some(entries)),
                _ => (id, None),
            }
        });
        let results = futures::future::join_all(calls).await;
        let mut answered = Vec::new();
        let mut missing = Vec::new();
        let mut per_node = Vec::new();
        for (id, entries) in results {
            match entries {
                Some(e) => {
                    answered.push(id);
                    per_node.push((id, e));
                }
                None => missing.push(id),
            }
        }
        (merge(per_node), answered, missing)
    }

    /// The node's watch hub.
    pub fn watch_hub(&self) -> &Arc<WatchHub> {
        &self.watch
    }

    /// Test-only planted watch bug (see the config flag).
    pub fn unsafe_watch_skip_on_resume(&self) -> bool {
        self.options.unsafe_watch_skip_on_resume
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The key-space reader (local state).
    pub fn reader(&self) -> &KvReader {
        &self.reader
    }

    /// Input limits.
    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    /// The network fault switch of this node.
    pub fn fault(&self) -> &NetFault {
        &self.fault
    }

    /// Cuts or restores this node's peer traffic (tests and fault injection).
    pub fn set_isolated(&self, isolated: bool) {
        self.fault.set_isolated(isolated);
        self.pool.clear();
    }

    /// The applied position, as of now.
    pub fn applied(&self) -> Applied {
        *self.applied.borrow()
    }

    /// The leader this node currently knows of, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    fn no_leader(&self, reason: &str) -> NodeError {
        NodeError::NoLeader {
            reason: reason.to_string(),
            leader: self.leader().filter(|(id, _)| *id != self.id),
        }
    }

    /// Applies a command through Raft, from any node.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn write(&self, command: Command) -> Result<CommandResponse, NodeError> {
        self.options.limits.check_command(&command)?;
        match self.leader() {
            Some((id, _)) if id == self.id => self.propose(command).await,
            Some((id, member)) => {
                let addr = dial_addr(&self.options.dial, id, &member);
                self.forward_write(&addr, command).await
            }
            None => Err(self.no_leader("no leader is known (election in progress or no quorum)")),
        }
    }

    /// Proposes a command on this node, which must be the leader.
    pub async fn propose(&self, command: Command) -> Result<CommandResponse, NodeError> {
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(timeout, self.raft.client_write(command)).await {
            Err(_) => Err(NodeError::Timeout(format!(
                "the write was not committed within {timeout:?}; it may or may not take effect"
            ))),
            Ok(Ok(resp)) => Ok(resp.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => Err(NodeError::NoLeader {
                reason: format!("this node is not a writable leader ({:?})", f.reason),
                leader: forward_hint(&f),
            }),
            Ok(Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)))) => Err(NodeError::Timeout(
                "leadership changed while the write was in flight; it may or may not take effect".into(),
            )),
            Ok(Err(e)) => Err(NodeError::Internal(e.to_string())),
        }
    }

    async fn forward_write(
        &self,
        peer_addr: &str,
        command: Command,
    ) -> Result<CommandResponse, NodeError> {
        let req = PeerRequest::Forward(command);
        // A little longer than the leader's own timeout, so the leader answers first.
        let timeout = self.options.request_timeout + self.options.connect_timeout;
        match self.pool.call(peer_addr, &req, timeout).await {
            Ok(PeerResponse::Forward(result)) => result.map_err(NodeError::from),
            Ok(other) => Err(NodeError::Internal(format!(
                "unexpected peer response: {other:?}"
            ))),
            Err(CallError::Connect { message, .. }) => {
                Err(self.no_leader(&format!("leader unreachable: {message}")))
            }
            Err(CallError::Lost { message, .. }) => Err(NodeError::Timeout(format!(
                "the leader did not answer ({message}); the write may or may not take effect"
            ))),
            Err(CallError::Remote(m)) => Err(NodeError::Internal(m)),
        }
    }

    /// Handles a write forwarded by a follower: propose it here, never
    /// forward again (one hop only).
    pub async fn handle_forward(&self, command: Command) -> Result<CommandResponse, ForwardError> {
        if let Err(e) = self.options.limits.check_command(&command) {
            return Err(ForwardError::Invalid(e.to_string()));
        }
        self.propose(command)
            .await
            .map_err(NodeError::into_forward_error)
    }

    /// On the leader: confirms leadership with a quorum and returns the log
    /// index a linearizable read must have applied.
    pub async fn read_index(&self) -> Result<u64, NodeError> {
        let timeout = self.options.request_timeout;
        match tokio::time::timeout(
            timeout,
            self.raft.get_read_linearizer(ReadPolicy::ReadIndex),
        )
        .await
        {
            Err(_) => Err(NodeError::Timeout(format!(
                "leadership not confirmed within {timeout:?}"
            ))),
            Ok(Ok(linearizer)) => Ok(linearizer.read_log_id().index()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(NodeError::NoLeader {
                    reason: format!("this node is not the leader ({:?})", f.reason),
                    leader: forward_hint(&f),
                })
            }
            Ok(Err(RaftError::APIError(LinearizableReadError::QuorumNotEnough(q)))) => {
                Err(NodeError::NoLeader {
                    reason: format!("the leader cannot reach a quorum: {q}"),
                    leader: None,
                })
            }
            Ok(Err(e)) => Err(NodeError::Internal(e.to_string())),
        }
    }

    /// Answers a follower's read-index request.
    pub async fn handle_read_index(&self) -> Result<u64, ForwardError> {
        self.read_index()
            .await
            .map_err(NodeError::into_forward_error)
    }

    /// Waits until the read-index barrier has passed on this node: afterwards a
    /// read of local state is linearizable.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn linearizable_barrier(&self) -> Result<(), NodeError> {
        if self.options.unsafe_local_linearizable_reads {
            return Ok(());
        }
        let index = match self.leader() {
            Some((id, _)) if id == self.id => self.read_index().await?,
            Some((id, member)) => {
                let timeout = self.options.request_timeout;
                let addr = dial_addr(&self.options.dial, id, &member);
                match self
                    .pool
                    .call(&addr, &PeerRequest::ReadIndex, timeout)
                    .await
                {
                    Ok(PeerResponse::ReadIndex(r)) => r.map_err(NodeError::from)?,
                    Ok(other) => {
                        return Err(NodeError::Internal(format!(
                            "unexpected peer response: {other:?}"
                        )))
                    }
                    Err(CallError::Connect { message, .. }) => {
                        return Err(self.no_leader(&format!("leader unreachable: {message}")))
                    }
                    Err(CallError::Lost { message, .. }) => {
                        return Err(NodeError::Timeout(message))
                    }
                    Err(CallError::Remote(m)) => return Err(NodeError::Internal(m)),
                }
            }
            None => {
                return Err(self.no_leader("no leader is known (election in progress or no quorum)"))
            }
        };
        self.wait_applied_index(index, self.options.request_timeout)
            .await
    }

    /// Waits until this node has applied log index `index`.
    pub async fn wait_applied_index(&self, index: u64, timeout: Duration) -> Result<(), NodeError> {
        let mut rx = self.applied.clone();
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|a| a.log_index >= index).await.map(|_| ())
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(NodeError::Internal("the state machine has stopped".into())),
            Err(_) => Err(NodeError::Timeout(format!(
                "this node did not apply log index {index} within {timeout:?}"
            ))),
        }
    }

    /// The node's status for `/v1/status`.
    pub fn status(&self) -> Result<NodeStatus, NodeError> {
        let mvcc = self
            .reader
            .state()
            .map_err(|e| NodeError::Internal(e.to_string()))?;
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, node)| MemberStatus {
                id: *id,
                client_addr: node.client_addr.clone(),
                peer_addr: node.peer_addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        let state = match m.state {
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        Ok(NodeStatus {
            node_id: self.id,
            leader: m.current_leader,
            term: m.current_term,
            revision: mvcc.revision,
            compact_revision: mvcc.compact_revision,
            state_hash: format!("{:032x}", mvcc.state_hash),
            raft: RaftStatus {
                last_log_index: m.last_log_index.unwrap_or(0),
                committed: m.local_committed.as_ref().map_or(0, |id| id.index),
                applied: m.last_applied.as_ref().map_or(0, |id| id.index),
                state: state.to_string(),
            },
            members,
        })
    }
}
