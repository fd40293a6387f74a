//! The Raft network: openraft's RPCs over the peer protocol, one reused TCP
//! connection per (target, purpose), reconnected after any error.

use std::future::Future;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::alias::SnapshotOf;
use openraft::errors::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::type_config::TypeConfigExt;
use openraft::RaftNetworkV2;

use super::types::{Member, NodeId, TypeConfig, Vote};
use super::wire::{self, CallError, PeerConn, PeerRequest, PeerResponse, SNAPSHOT_CHUNK_BYTES};
use crate::storage::SnapshotFile;

/// A switch that cuts all of a node's peer traffic, in and out. Tests use it
/// to partition a node for real: its RPCs fail and its listener drops every
/// frame it receives.
#[derive(Debug, Clone, Default)]
pub struct NetFault {
    isolated: Arc<AtomicBool>,
}

impl NetFault {
    /// Cuts (true) or restores (false) the node's peer traffic.
    pub fn set_isolated(&self, isolated: bool) {
        self.isolated.store(isolated, Ordering::SeqCst);
    }

    /// Whether peer traffic is cut.
    pub fn is_isolated(&self) -> bool {
        self.isolated.load(Ordering::SeqCst)
    }
}

/// Creates a [`PeerClient`] per target for openraft.
#[derive(Clone)]
pub struct PeerNetwork {
    fault: NetFault,
    connect_timeout: Duration,
    dial: DialMap,
}

/// Addresses to dial instead of peers' advertised peer addresses.
pub type DialMap = Arc<std::collections::BTreeMap<NodeId, String>>;

/// The address to dial for `target`: its override, or its advertised address.
pub fn dial_addr(dial: &DialMap, target: NodeId, node: &Member) -> String {
    dial.get(&target)
        .cloned()
        .unwrap_or_else(|| node.peer_addr.clone())
}

impl PeerNetwork {
    /// A network whose traffic obeys `fault` and dials through `dial`.
    pub fn new(fault: NetFault, connect_timeout: Duration, dial: DialMap) -> Self {
        PeerNetwork {
            fault,
            connect_timeout,
            dial,
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for PeerNetwork {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: dial_addr(&self.dial, target, node),
            conn: None,
            fault: self.fault.clone(),
            connect_timeout: self.connect_timeout,
        }
    }
}

/// One connection to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    conn: Option<PeerConn>,
    fault: NetFault,
    connect_timeout: Duration,
}

fn unreachable(msg: impl std::fmt::Display) -> Unreachable<TypeConfig> {
    Unreachable::new(&TypeConfig::err_from_string(msg.to_string()))
}

fn network(msg: impl std::fmt::Display) -> NetworkError<TypeConfig> {
    NetworkError::new(&TypeConfig::err_from_string(msg.to_string()))
}

fn rpc_error(e: CallError) -> RPCError<TypeConfig> {
    match e {
        CallError::Connect { .. } => RPCError::Unreachable(unreachable(e)),
        other => RPCError::Network(network(other)),
    }
}

fn unexpected(resp: PeerResponse) -> RPCError<TypeConfig> {
    RPCError::Network(network(format!("unexpected response: {resp:?}")))
}

impl PeerClient {
    async fn call(
        &mut self,
        req: &PeerRequest,
        timeout: Duration,
    ) -> Result<PeerResponse, CallError> {
        if self.fault.is_isolated() {
            return Err(CallError::Connect {
                addr: self.addr.clone(),
                message: "this node's peer traffic is cut".into(),
            });
        }
        let reusable = self
            .conn
            .take()
            .and_then(|mut c| wire::is_usable(&mut c).then_some(c));
        let mut conn = match reusable {
            Some(c) => c,
            None => wire::connect(&self.addr, self.connect_timeout.min(timeout)).await?,
        };
        let result = wire::call(&mut conn, &self.addr, req, timeout).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotFile>,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let path = snapshot.snapshot.path.clone();
        let mut file =
            std::fs::File::open(&path).map_err(|e| StreamingError::Network(network(e)))?;
        let mut offset = 0u64;
        loop {
            let mut data = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
            (&mut file)
                .take(SNAPSHOT_CHUNK_BYTES as u64)
                .read_to_end(&mut data)
                .map_err(|e| StreamingError::Network(network(e)))?;
            let done = data.len() < SNAPSHOT_CHUNK_BYTES;
            let len = data.len() as u64;
            let req = PeerRequest::SnapshotChunk {
                vote,
                meta: snapshot.meta.clone(),
                offset,
                data,
                done,
            };
            let resp = self
                .call(&req, option.hard_ttl())
                .await
                .map_err(|e| match e {
                    CallError::Connect { .. } => StreamingError::Unreachable(unreachable(e)),
                    other => StreamingError::Network(network(other)),
                })?;
            offset += len;
            match resp {
                PeerResponse::Snapshot(Some(r)) if done => return Ok(r),
                PeerResponse::Snapshot(None) if !done => continue,
                other => {
                    return Err(StreamingError::Network(network(format!(
                        "unexpected response: {other:?}"
                    ))))
                }
            }
        }
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotFile;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&PeerRequest::AppendEntries(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::AppendEntries(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&PeerRequest::Vote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&PeerRequest::PreVote(rpc), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::Vote(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotFile>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        tracing::info!(target = self.target, last_log_id = ?snapshot.meta.last_log_id, "sending snapshot");
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.send_snapshot(vote, snapshot, &option) => result,
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self
            .call(&PeerRequest::TransferLeader(req), option.hard_ttl())
            .await
            .map_err(rpc_error)?
        {
            PeerResponse::TransferLeader(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }
}
