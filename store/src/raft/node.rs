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

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use openraft::{ReadPolicy, ServerState};
use serde::Serialize;
use tokio::sync::watch;

use super::forwarder::{batchable, Forwarder};
use super::membership::{AdminError, AdminRequest, AdminResponse};
use super::network::{dial_addr, DialMap, NetFault};
use super::pool::PeerPool;
use super::proposer::{ProposeError, Proposer};
use super::types::{Member, NodeId, Raft, TypeConfig};
use super::wire::{CallError, ForwardError, FrameCaps, PeerIdentity, PeerRequest, PeerResponse};
use crate::kv::limits::command_bytes;
use crate::kv::sessions;
use crate::kv::{
    Applied, Command, CommandResponse, KvError, KvReader, Limits, ReadError, SessionLimits,
};
use crate::metrics::Metrics;
use crate::replicas::{merge, ReplicaEntry, ReplicaRegistry};
use crate::storage::backup::BackupSource;

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
    /// Too much is waiting to be committed or applied: nothing was
    /// proposed. Retry after a short wait.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// Storage or Raft failed on this node.
    #[error("internal error: {0}")]
    Internal(String),
    /// The key space is over its storage quota: a write that could add data
    /// was not proposed. Delete keys and compact history to get under it.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// A member is short of disk space (this node measured it, or a
    /// `nospace` alarm is active): a write that could add data was not
    /// proposed. Free space, then disarm the alarm.
    #[error("no space: {0}")]
    NoSpace(String),
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
            ForwardError::Overloaded(m) => NodeError::Overloaded(format!("the leader: {m}")),
            ForwardError::Internal(m) => NodeError::Internal(format!("on the leader: {m}")),
            ForwardError::QuotaExceeded(m) => NodeError::QuotaExceeded(m),
            ForwardError::NoSpace(m) => NodeError::NoSpace(m),
        }
    }
}

impl From<ReadError> for NodeError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Kv(k) => NodeError::Kv(k),
            ReadError::Storage(s) => NodeError::Internal(s.to_string()),
            ReadError::Installing(i) => NodeError::Timeout(i.to_string()),
        }
    }
}

impl NodeError {
    /// The form a leader sends back to a follower that forwarded a request.
    pub(crate) fn into_forward_error(self) -> ForwardError {
        match self {
            NodeError::NoLeader { leader, .. } => ForwardError::NotLeader { leader },
            NodeError::Timeout(m) => ForwardError::Timeout(m),
            NodeError::Kv(k) => ForwardError::Invalid(k.to_string()),
            NodeError::Overloaded(m) => ForwardError::Overloaded(m),
            NodeError::Internal(m) => ForwardError::Internal(m),
            NodeError::QuotaExceeded(m) => ForwardError::QuotaExceeded(m),
            NodeError::NoSpace(m) => ForwardError::NoSpace(m),
        }
    }
}

/// Most log entries a leader lets run ahead of its state machine before it
/// refuses new writes (etcd's `maxGapBetweenApplyAndCommitIndex`).
const MAX_UNAPPLIED_ENTRIES: u64 = 5_000;
/// Counts a proposal's bytes as in flight until dropped.
struct InflightGuard {
    counter: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.bytes, Ordering::AcqRel);
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
    /// Addresses to dial instead of peers' advertised ones.
    pub dial: DialMap,
    /// How long a data-plane replica's report is remembered.
    pub replica_ttl: Duration,
    /// This node's cluster and id, carried in every peer request.
    pub identity: PeerIdentity,
    /// TLS of the peer connections this node dials.
    pub peer_tls: crate::tls::PeerTls,
    /// Most bytes of writes a leader lets wait for their commit before it
    /// answers new ones with `503 too_many_requests`.
    pub max_inflight_write_bytes: usize,
    /// The upper bound of the election timeout: a member that has not
    /// answered the leader within it counts as unhealthy for membership
    /// changes.
    pub election_timeout_max: Duration,
    /// Where backups (`GET /v1/snapshot`) are taken from, one at a time.
    pub backups: BackupSource,
    /// Bounds of the client session table, stamped into the session
    /// commands this node proposes as leader.
    pub sessions: SessionLimits,
    /// Tokens and roles, kept up to date by the state machine; the client
    /// API checks every request against it (a local lookup).
    pub auth: crate::kv::auth::SharedAuth,
    /// Most bytes the key space may hold on disk before the leader refuses
    /// writes that could add data (0: no quota). See `kv::size`.
    pub quota_bytes: u64,
    /// Active alarms, kept up to date by the state machine; a `nospace`
    /// alarm makes every node refuse writes that could add data.
    pub alarms: crate::kv::alarms::SharedAlarms,
    /// Free space of the data directory, measured before each write that
    /// could add data (absent: not watched).
    pub space: Option<Arc<crate::storage::space::DiskSpace>>,
}

/// The Raft-side view reported by `/v1/status`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// This node's id.
    pub node_id: NodeId,
    /// The cluster's id (hex).
    pub cluster_id: String,
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
    pool: Arc<PeerPool>,
    fault: NetFault,
    options: NodeOptions,
    metrics: Arc<Metrics>,
    replicas: ReplicaRegistry,
    inflight_bytes: Arc<AtomicUsize>,
    peers_with_data: std::sync::Mutex<BTreeSet<NodeId>>,
    /// Held by the leader while a membership change runs.
    change_lock: tokio::sync::Mutex<()>,
    /// Why this node no longer belongs to the cluster, once it was removed.
    removed: watch::Sender<Option<String>>,
    /// One more than the log index of the latest membership seen listing
    /// this node (0: none seen yet).
    seen_in_membership: std::sync::atomic::AtomicU64,
    /// Batches this node's proposals while it leads.
    proposer: Proposer<InflightGuard>,
    /// Batches the writes this node forwards while it follows.
    forwarder: Forwarder,
    /// When this node last accepted an AppendEntries (entries or a
    /// heartbeat) from a leader: what lets a follower vouch that its state
    /// is current (see [`Node::in_contact_with_leader`]).
    leader_contact: std::sync::Mutex<Option<std::time::Instant>>,
    /// The linearizable reads waiting for a read-index round, and whether
    /// one is running (see [`Node::linearizable_barrier`]).
    read_rounds: std::sync::Mutex<ReadRounds>,
    /// This node, for the task that runs the read-index rounds.
    me: std::sync::Weak<Node>,
    /// The runtime the node was started on (its main threads), where the
    /// read-index rounds run whichever thread a reader came from.
    runtime: tokio::runtime::Handle,
}

/// The linearizable reads of a node waiting for their read index.
#[derive(Default)]
struct ReadRounds {
    /// A task is running rounds.
    running: bool,
    /// Readers that arrived since the round in flight (if any) started.
    waiting: Vec<tokio::sync::oneshot::Sender<Result<u64, NodeError>>>,
}

/// The same error again, for each reader that shared a failed round.
fn retell(e: &NodeError) -> NodeError {
    match e {
        NodeError::Kv(e) => NodeError::Internal(e.to_string()),
        NodeError::NoLeader { reason, leader } => NodeError::NoLeader {
            reason: reason.clone(),
            leader: leader.clone(),
        },
        NodeError::Timeout(s) => NodeError::Timeout(s.clone()),
        NodeError::Overloaded(s) => NodeError::Overloaded(s.clone()),
        NodeError::Internal(s) => NodeError::Internal(s.clone()),
        NodeError::QuotaExceeded(s) => NodeError::QuotaExceeded(s.clone()),
        NodeError::NoSpace(s) => NodeError::NoSpace(s.clone()),
    }
}

/// How long a follower waits for the leader to answer a forwarded write: a
/// little longer than the leader's own timeout, so the leader answers first.
fn forward_timeout(options: &NodeOptions) -> Duration {
    options.request_timeout + options.connect_timeout
}

fn unexpected(response: PeerResponse) -> NodeError {
    NodeError::Internal(format!("unexpected peer response: {response:?}"))
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
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let caps = FrameCaps::for_limits(&options.limits);
        let pool = Arc::new(PeerPool::new(
            fault.clone(),
            options.connect_timeout,
            caps,
            options.identity,
            options.peer_tls.clone(),
        ));
        let forwarder = Forwarder::start(pool.clone(), forward_timeout(&options));
        let replicas = ReplicaRegistry::new(options.replica_ttl);
        let proposer = Proposer::start(raft.clone());
        super::observe::count_leader_changes(&raft, metrics.clone());
        Arc::new_cyclic(|me| Node {
            id,
            read_rounds: std::sync::Mutex::new(ReadRounds::default()),
            me: me.clone(),
            runtime: tokio::runtime::Handle::current(),
            proposer,
            forwarder,
            raft,
            reader,
            applied,
            pool,
            fault,
            options,
            metrics,
            replicas,
            inflight_bytes: Arc::new(AtomicUsize::new(0)),
            peers_with_data: std::sync::Mutex::new(BTreeSet::new()),
            change_lock: tokio::sync::Mutex::new(()),
            removed: watch::Sender::new(None),
            seen_in_membership: std::sync::atomic::AtomicU64::new(0),
            leader_contact: std::sync::Mutex::new(None),
        })
    }

    /// Tokens and roles, as this node has applied them.
    pub fn auth(&self) -> &crate::kv::auth::SharedAuth {
        &self.options.auth
    }

    /// Records that a leader's AppendEntries was just accepted.
    pub(crate) fn note_leader_contact(&self) {
        if let Ok(mut last) = self.leader_contact.lock() {
            *last = Some(std::time::Instant::now());
        }
    }

    /// Whether this node is, as of now, in contact with a current leader,
    /// so that its applied state can be vouched for as current (a progress
    /// bookmark proves freshness only then). A leader: a quorum acknowledged
    /// it within the (minimum) election timeout, or it is the only voter. A
    /// follower: it accepted the leader's AppendEntries within it — past
    /// that, a majority may have elected another leader and moved on
    /// without it.
    pub fn in_contact_with_leader(&self) -> bool {
        // The shorter election timeout: a follower that has not heard from
        // the leader for that long may already be outvoted.
        let window = Duration::from_millis(self.raft.config().election_timeout_min);
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        if m.current_leader == Some(self.id) && m.state == ServerState::Leader {
            let voters = m.membership_config.membership().voter_ids().count();
            return voters <= 1
                || m.last_quorum_acked
                    .as_ref()
                    .is_some_and(|acked| openraft::Instant::elapsed(&**acked) <= window);
        }
        m.current_leader.is_some()
            && self
                .leader_contact
                .lock()
                .ok()
                .and_then(|last| *last)
                .is_some_and(|at| at.elapsed() <= window)
    }

    /// Timeouts and limits.
    pub(crate) fn options(&self) -> &NodeOptions {
        &self.options
    }

    /// Held by the leader while a membership change runs.
    pub(crate) fn change_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.change_lock
    }

    /// Why this node was removed from the cluster, if it was.
    pub fn removed(&self) -> Option<String> {
        self.removed.borrow().clone()
    }

    /// Follows [`Node::removed`].
    pub fn subscribe_removed(&self) -> watch::Receiver<Option<String>> {
        self.removed.subscribe()
    }

    /// Marks this node removed from its cluster: from now on it serves
    /// nothing and has no peer traffic. Idempotent; the first reason stays.
    pub fn mark_removed(&self, reason: String) {
        let changed = self.removed.send_if_modified(|r| {
            if r.is_some() {
                return false;
            }
            *r = Some(reason.clone());
            true
        });
        if changed {
            tracing::warn!(node = self.id, %reason, "this node was removed from the cluster; it stops serving");
            self.set_isolated(true);
        }
    }

    /// Whether Raft's committed membership no longer lists this node although
    /// an earlier membership did: it was removed while it could still hear
    /// the leader. Returns the log index of that membership. A node catching
    /// up from the start of the log passes memberships from before it was
    /// added; those do not count, since it has not yet seen itself in one.
    pub fn removed_by_membership(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        for stored in [&m.membership_config, &m.committed_membership_config] {
            if stored.membership().get_node(&self.id).is_some() {
                let index = stored.log_id().as_ref().map_or(0, |l| l.index);
                self.seen_in_membership
                    .fetch_max(index + 1, Ordering::AcqRel);
            }
        }
        let seen = self.seen_in_membership.load(Ordering::Acquire);
        let committed = &m.committed_membership_config;
        let index = committed.log_id().as_ref().map_or(0, |l| l.index);
        (seen > 0 && index + 1 > seen && committed.membership().get_node(&self.id).is_none())
            .then_some(index)
    }

    /// The log index of this node's committed membership, and whether it
    /// lists `id`.
    pub fn committed_membership_lists(&self, id: NodeId) -> (u64, bool) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let committed = &m.committed_membership_config;
        (
            committed.log_id().as_ref().map_or(0, |l| l.index),
            committed.membership().get_node(&id).is_some(),
        )
    }

    /// Asks the members this node knows whether their committed membership
    /// still lists it (a removed node may still believe in its old leader:
    /// nothing tells it otherwise). A membership committed
    /// after the latest one this node saw itself in, that leaves it out,
    /// means it was removed while it was down or cut off (committed entries
    /// are never lost, and memberships are ordered by their log index).
    /// Marks it removed then; returns whether it did.
    pub async fn ask_peers_whether_removed(&self) -> bool {
        let seen = self.seen_in_membership.load(Ordering::Acquire);
        if seen == 0 || self.removed().is_some() || self.is_leader() {
            return false;
        }
        let peers: Vec<(NodeId, Member)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.id)
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        let timeout = self.options.connect_timeout * 2;
        let calls = peers.iter().map(|(id, member)| async move {
            let addr = dial_addr(&self.options.dial, *id, member);
            (
                *id,
                self.pool
                    .call(&addr, *id, &PeerRequest::MembershipOf, timeout)
                    .await,
            )
        });
        for (peer, answer) in futures::future::join_all(calls).await {
            if let Ok(PeerResponse::MembershipOf {
                committed_index,
                includes_you: false,
            }) = answer
            {
                if committed_index + 1 > seen {
                    self.mark_removed(format!(
                        "node {} is not in the membership committed at log index \
                         {committed_index} of cluster {:032x} (as node {peer} reports): it was \
                         removed while it was down or cut off",
                        self.id,
                        self.cluster_id()
                    ));
                    return true;
                }
            }
        }
        false
    }

    /// Runs a membership or leadership operation on the leader: here when
    /// this node leads, else forwarded. Removing the leader hands leadership
    /// over first and then asks the new leader.
    pub async fn admin(&self, request: AdminRequest) -> Result<AdminResponse, AdminError> {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout * 2;
        loop {
            let result = match self.leader() {
                Some((id, _)) if id == self.id => self.handle_admin(request.clone()).await,
                Some((id, member)) => {
                    let addr = dial_addr(&self.options.dial, id, &member);
                    self.forward_admin(&addr, id, request.clone()).await
                }
                None => Err(AdminError::from(self.no_leader(
                    "no leader is known (election in progress or no quorum)",
                ))),
            };
            match result {
                // Leadership moved meanwhile (or is moving): ask again.
                Err(AdminError::Forward(ForwardError::NotLeader { .. }))
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Runs an admin operation if this node leads; never forwards. Asked to
    /// remove itself, it hands leadership over and answers "not the leader"
    /// so that the caller asks the new one.
    pub async fn handle_admin(&self, request: AdminRequest) -> Result<AdminResponse, AdminError> {
        if !self.is_leader() {
            return Err(AdminError::Forward(ForwardError::NotLeader {
                leader: self.leader().filter(|(id, _)| *id != self.id),
            }));
        }
        if matches!(request, AdminRequest::Remove { id } if id == self.id) {
            self.hand_over_leadership().await?;
            return Err(AdminError::Forward(ForwardError::NotLeader {
                leader: self.leader().filter(|(id, _)| *id != self.id),
            }));
        }
        self.execute_admin(request).await
    }

    async fn forward_admin(
        &self,
        peer_addr: &str,
        leader: NodeId,
        request: AdminRequest,
    ) -> Result<AdminResponse, AdminError> {
        // Room for a transfer before a removal on the leader.
        let timeout = self.options.request_timeout * 2 + self.options.connect_timeout;
        let outcome = "; the change may or may not take effect";
        match self
            .call_leader(
                peer_addr,
                leader,
                &PeerRequest::Admin(request),
                timeout,
                outcome,
            )
            .await?
        {
            PeerResponse::Admin(result) => result,
            other => Err(unexpected(other).into()),
        }
    }

    /// Tells a removed member that it was removed (best effort: a member
    /// that misses it finds out from the membership it applies, or stays cut
    /// off, since the leader no longer replicates to it).
    pub(crate) async fn notify_removed(&self, id: NodeId, member: &Member) {
        let addr = dial_addr(&self.options.dial, id, member);
        let reason = format!(
            "node {id} was removed from cluster {:032x} by leader {} in term {}",
            self.cluster_id(),
            self.id,
            self.term_and_role().0
        );
        let notice = PeerRequest::Removed { reason };
        if let Err(e) = self
            .pool
            .call(&addr, id, &notice, self.options.connect_timeout * 2)
            .await
        {
            tracing::info!(node = id, error = %e, "could not tell the removed node");
        }
    }

    /// Replica reports received by this node.
    pub fn replicas(&self) -> &ReplicaRegistry {
        &self.replicas
    }

    /// Asks every member for one answer, each within `timeout`: this node
    /// answers itself with `local`, the others through `request`, read back
    /// with `answer`. `None` for a member that did not answer. In membership
    /// order.
    async fn ask_members<T>(
        &self,
        request: PeerRequest,
        timeout: Duration,
        local: impl Fn() -> T,
        answer: impl Fn(PeerResponse) -> Option<T>,
    ) -> Vec<(NodeId, Option<T>)> {
        let members: Vec<(NodeId, Member)> = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            m.membership_config
                .membership()
                .nodes()
                .map(|(id, n)| (*id, n.clone()))
                .collect()
        };
        let (request, local, answer) = (&request, &local, &answer);
        let calls = members.into_iter().map(|(id, member)| async move {
            if id == self.id {
                return (id, Some(local()));
            }
            let addr = dial_addr(&self.options.dial, id, &member);
            match self.pool.call(&addr, id, request, timeout).await {
                Ok(response) => (id, answer(response)),
                Err(_) => (id, None),
            }
        });
        futures::future::join_all(calls).await
    }

    /// Every member's replica reports, merged (freshest per replica). Returns
    /// the merged reports, the members that answered and those that did not.
    pub async fn merged_replicas(
        &self,
        timeout: Duration,
    ) -> (Vec<ReplicaEntry>, Vec<NodeId>, Vec<NodeId>) {
        let results = self
            .ask_members(
                PeerRequest::Replicas,
                timeout,
                || self.replicas.current(),
                |r| match r {
                    PeerResponse::Replicas(entries) => Some(entries),
                    _ => None,
                },
            )
            .await;
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

    /// The watch streams each member has open, asking every other member
    /// (each within `timeout`); `None` for a member that did not answer.
    /// In membership order.
    pub async fn member_watch_streams(&self, timeout: Duration) -> Vec<(NodeId, Option<u64>)> {
        self.ask_members(
            PeerRequest::WatchStreams,
            timeout,
            || self.watch_streams(),
            |r| match r {
                PeerResponse::WatchStreams(n) => Some(n),
                _ => None,
            },
        )
        .await
    }

    /// The node's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// This node's cluster id.
    pub fn cluster_id(&self) -> u128 {
        self.options.identity.cluster_id
    }

    /// This node's cluster and id as peers see them.
    pub fn identity(&self) -> PeerIdentity {
        self.options.identity
    }

    /// Whether this node has seen `peer` hold Raft log entries.
    pub fn saw_data_of(&self, peer: NodeId) -> bool {
        self.peers_with_data
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&peer)
    }

    /// Notes peers seen holding Raft log entries; returns the whole set if it
    /// grew (for the caller to persist).
    pub fn note_data_of(
        &self,
        peers: impl IntoIterator<Item = NodeId>,
    ) -> Option<BTreeSet<NodeId>> {
        let mut known = self
            .peers_with_data
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = known.len();
        known.extend(peers.into_iter().filter(|p| *p != self.id));
        (known.len() > before).then(|| known.clone())
    }

    /// Peers seen holding data according to Raft's view right now: as
    /// leader, followers that acknowledged an entry; as follower, the leader
    /// it applied entries from.
    pub fn peers_holding_data_now(&self) -> Vec<NodeId> {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        let mut out = Vec::new();
        if let Some(replication) = &m.replication {
            out.extend(
                replication
                    .iter()
                    .filter(|(_, matched)| matched.as_ref().is_some_and(|id| id.index > 0))
                    .map(|(id, _)| *id),
            );
        }
        if let Some(leader) = m.current_leader {
            if m.last_applied.as_ref().is_some_and(|id| id.index > 0) {
                out.push(leader);
            }
        }
        out
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

    /// Reads this node's applied key space with `read`. A read that
    /// overlaps a snapshot install is not answered from the half-installed
    /// state: it waits for the install to finish (up to the request timeout)
    /// and reads again.
    pub async fn read_local<T, Fut>(&self, read: impl Fn(KvReader) -> Fut) -> Result<T, NodeError>
    where
        Fut: std::future::Future<Output = Result<T, ReadError>>,
    {
        let deadline = tokio::time::Instant::now() + self.options.request_timeout;
        loop {
            match read(self.reader.clone()).await {
                Err(ReadError::Installing(_)) => {
                    let idle = self.reader.gate().wait_idle();
                    if tokio::time::timeout_at(deadline, idle).await.is_err() {
                        return Err(NodeError::Timeout(
                            "a snapshot install on this node did not finish within the request \
                             timeout; retry, or read from another node"
                                .into(),
                        ));
                    }
                }
                other => return other.map_err(NodeError::from),
            }
        }
    }

    /// Where this node's backups are taken from.
    pub fn backups(&self) -> &BackupSource {
        &self.options.backups
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

    /// The term this node is in and whether it leads in it, as of now.
    pub fn term_and_role(&self) -> (u64, bool) {
        let metrics = self.raft.metrics();
        let m = metrics.borrow_watched();
        (m.current_term, m.current_leader == Some(self.id))
    }

    /// Whether this node is the leader, as of now.
    pub fn is_leader(&self) -> bool {
        self.raft.is_leader()
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
        self.check_space(&command)?;
        match self.leader() {
            Some((id, _)) if id == self.id => self.propose(command).await,
            Some((id, member)) => {
                let addr = dial_addr(&self.options.dial, id, &member);
                self.forward_write(&addr, id, command).await
            }
            None => Err(self.no_leader("no leader is known (election in progress or no quorum)")),
        }
    }

    /// Refuses a new proposal while the log runs too far ahead of the state
    /// machine, or too many bytes of proposals wait for their commit (etcd
    /// refuses with "too many requests" past 5,000 unapplied entries). One
    /// write is always admitted, whatever its size.
    fn admit(&self, bytes: usize) -> Result<InflightGuard, NodeError> {
        let backlog = {
            let metrics = self.raft.metrics();
            let m = metrics.borrow_watched();
            let last = m.last_log_index.unwrap_or(0);
            let applied = m.last_applied.as_ref().map_or(0, |id| id.index);
            last.saturating_sub(applied)
        };
        if backlog > MAX_UNAPPLIED_ENTRIES {
            return Err(NodeError::Overloaded(format!(
                "{backlog} log entries are not applied yet (the limit is {MAX_UNAPPLIED_ENTRIES}); retry shortly"
            )));
        }
        let before = self.inflight_bytes.fetch_add(bytes, Ordering::AcqRel);
        let guard = InflightGuard {
            counter: self.inflight_bytes.clone(),
            bytes,
        };
        let max = self.options.max_inflight_write_bytes;
        if before > 0 && before + bytes > max {
            return Err(NodeError::Overloaded(format!(
                "{before} bytes of writes are waiting for their commit (the limit is {max}); retry shortly"
            )));
        }
        Ok(guard)
    }

    /// Proposes a command on this node, which must be the leader. Writes
    /// waiting at the same time go to Raft together (see `proposer`).
    pub async fn propose(&self, mut command: Command) -> Result<CommandResponse, NodeError> {
        // Session commands run on the leader's clock and bounds.
        sessions::stamp(
            &mut command,
            sessions::wall_clock_ms(),
            self.options.sessions,
        );
        self.check_quota(&command)?;
        self.check_space(&command)?;
        // The proposal's bytes count until Raft is done with it, also when
        // the client has been answered with a timeout meanwhile.
        let inflight = self.admit(command_bytes(&command))?;
        let timeout = self.options.request_timeout;
        let outcome = self.proposer.propose(command, inflight);
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(timeout, outcome).await;
        self.metrics
            .count_proposal(matches!(outcome, Ok(Ok(Ok(_)))), started.elapsed());
        match outcome {
            Ok(Ok(Ok(written))) => Ok(written.response),
            Ok(Ok(Err(ProposeError::Write(e)))) => Err(self.refused(e)),
            Ok(Ok(Err(ProposeError::Fatal(e)))) => Err(NodeError::Internal(e.to_string())),
            Ok(Err(_)) => Err(NodeError::Internal(
                "Raft stopped before answering the write; it may or may not take effect".into(),
            )),
            Err(_) => Err(NodeError::Timeout(format!(
                "the write was not committed within {timeout:?}; it may or may not take effect"
            ))),
        }
    }

    /// Maps a write Raft refused or lost.
    fn refused(&self, error: ClientWriteError<TypeConfig>) -> NodeError {
        match error {
            ClientWriteError::ForwardToLeader(f) => NodeError::NoLeader {
                reason: format!("this node is not a writable leader ({:?})", f.reason),
                leader: forward_hint(&f),
            },
            ClientWriteError::LogEntryDiscarded(_) => NodeError::Timeout(
                "leadership changed while the write was in flight; it may or may not take effect"
                    .into(),
            ),
            e => NodeError::Internal(e.to_string()),
        }
    }

    async fn forward_write(
        &self,
        peer_addr: &str,
        leader: NodeId,
        command: Command,
    ) -> Result<CommandResponse, NodeError> {
        let outcome = "; the write may or may not take effect";
        if batchable(&command) {
            let timeout = forward_timeout(&self.options);
            let answer = self
                .forwarder
                .forward(leader, peer_addr.to_string(), command);
            return match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(Ok(result))) => result.map_err(NodeError::from),
                Ok(Ok(Err(e))) => Err(self.call_failed(e, outcome)),
                Ok(Err(_)) => Err(NodeError::Internal(format!(
                    "the forwarding task stopped{outcome}"
                ))),
                Err(_) => Err(NodeError::Timeout(format!(
                    "the leader did not answer within {timeout:?}{outcome}"
                ))),
            };
        }
        let req = PeerRequest::Forward(command);
        match self
            .call_leader(
                peer_addr,
                leader,
                &req,
                forward_timeout(&self.options),
                outcome,
            )
            .await?
        {
            PeerResponse::Forward(result) => result.map_err(NodeError::from),
            other => Err(unexpected(other)),
        }
    }

    /// Calls the leader over the peer protocol. A leader that cannot be
    /// reached is `NoLeader` (nothing was sent); one that took the request
    /// and did not answer is `Timeout`, its message ending with `outcome`
    /// (what that means for the request).
    async fn call_leader(
        &self,
        peer_addr: &str,
        leader: NodeId,
        request: &PeerRequest,
        timeout: Duration,
        outcome: &str,
    ) -> Result<PeerResponse, NodeError> {
        self.pool
            .call(peer_addr, leader, request, timeout)
            .await
            .map_err(|e| self.call_failed(e, outcome))
    }

    /// Maps a failed call to the leader; `outcome` ends the message when the
    /// leader may have taken the request.
    fn call_failed(&self, error: CallError, outcome: &str) -> NodeError {
        match error {
            CallError::Connect { message, .. } => {
                self.no_leader(&format!("leader unreachable: {message}"))
            }
            CallError::Lost { message, .. } => {
                NodeError::Timeout(format!("the leader did not answer ({message}){outcome}"))
            }
            CallError::Remote(m) => NodeError::Internal(m),
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

    /// Handles writes a follower forwarded together: each is proposed here
    /// on its own and answered on its own, in order.
    pub async fn handle_forward_batch(
        &self,
        commands: Vec<Command>,
    ) -> Vec<Result<CommandResponse, ForwardError>> {
        futures::future::join_all(commands.into_iter().map(|c| self.handle_forward(c))).await
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
    ///
    /// Concurrent readers share read-index rounds (as etcd batches its
    /// reads): a reader joins the next round to start, never one already
    /// in flight, so the index it gets was read after it arrived. While a
    /// round runs, the readers arriving meanwhile wait together for the one
    /// after it: a burst of N linearizable reads (a fleet of replicas
    /// bootstrapping, say) costs the leader a few rounds, and a follower a
    /// few calls to the leader, instead of N.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn linearizable_barrier(&self) -> Result<(), NodeError> {
        // Planted bug for the fault-injection checker, compiled in only with
        // the `failpoints` feature: set to `return`, linearizable reads skip
        // the barrier and may be stale.
        fail::fail_point!("unsafe-local-linearizable-reads", |_| Ok(()));
        let index = self.shared_read_index().await?;
        self.wait_applied_index(index, self.options.request_timeout)
            .await
    }

    /// A read index from a round that starts after this call.
    async fn shared_read_index(&self) -> Result<u64, NodeError> {
        let Some(me) = self.me.upgrade() else {
            return self.read_index_round().await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut rounds = self
                .read_rounds
                .lock()
                .map_err(|_| NodeError::Internal("read-index rounds lock poisoned".into()))?;
            rounds.waiting.push(tx);
            !std::mem::replace(&mut rounds.running, true)
        };
        if start {
            // On the node's own runtime: a round started by a reader on the
            // data plane's lower-priority threads must not make the readers
            // of the control plane wait for those threads.
            self.runtime
                .spawn(async move { me.run_read_rounds().await });
        }
        rx.await
            .map_err(|_| NodeError::Internal("the read-index round was dropped".into()))?
    }

    /// Runs rounds until no reader waits: each round takes every reader
    /// waiting when it starts and answers them all with its index.
    async fn run_read_rounds(&self) {
        loop {
            let readers = match self.read_rounds.lock() {
                Ok(mut rounds) => {
                    if rounds.waiting.is_empty() {
                        rounds.running = false;
                        return;
                    }
                    std::mem::take(&mut rounds.waiting)
                }
                // Poisoned: the waiting readers' senders are dropped with
                // it, and each gets an internal error.
                Err(_) => return,
            };
            let result = self.read_index_round().await;
            self.metrics.read_index_rounds.inc();
            for reader in readers {
                // A reader that went away meanwhile is not waiting any more.
                let _ = reader.send(result.as_ref().map(|i| *i).map_err(retell));
            }
        }
    }

    /// One read-index round: this node's own when it leads, else the
    /// leader's, asked for with one call.
    async fn read_index_round(&self) -> Result<u64, NodeError> {
        match self.leader() {
            Some((id, _)) if id == self.id => self.read_index().await,
            Some((id, member)) => {
                let timeout = self.options.request_timeout;
                let addr = dial_addr(&self.options.dial, id, &member);
                match self
                    .call_leader(&addr, id, &PeerRequest::ReadIndex, timeout, "")
                    .await?
                {
                    PeerResponse::ReadIndex(r) => r.map_err(NodeError::from),
                    other => Err(unexpected(other)),
                }
            }
            None => Err(self.no_leader("no leader is known (election in progress or no quorum)")),
        }
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

    /// The node's status for `/v1/status`. The key-space figures are those
    /// of the last applied batch or installed snapshot, never of a
    /// half-installed one.
    pub fn status(&self) -> Result<NodeStatus, NodeError> {
        let applied = self.applied();
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
            _ if self.removed().is_some() => "Removed",
            ServerState::Leader => "Leader",
            ServerState::Follower => "Follower",
            ServerState::Candidate => "Candidate",
            ServerState::Learner => "Learner",
            ServerState::Shutdown => "Shutdown",
        };
        Ok(NodeStatus {
            node_id: self.id,
            cluster_id: format!("{:032x}", self.cluster_id()),
            leader: m.current_leader,
            term: m.current_term,
            revision: applied.revision,
            compact_revision: applied.compact_revision,
            state_hash: format!("{:032x}", applied.state_hash),
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
