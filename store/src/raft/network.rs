//! The Raft network: openraft's RPCs over the peer protocol, one reused TCP
//! connection per (target, purpose), reconnected after any error.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
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
use super::wire::{
    self, CallError, FrameCaps, PeerConn, PeerIdentity, PeerRequest, PeerResponse,
    SNAPSHOT_CHUNK_BYTES,
};
use crate::storage::SnapshotFile;
use crate::tls::PeerTls;

/// How often a sender asks whether its snapshot is installed yet.
const SNAPSHOT_POLL_INTERVAL: Duration = Duration::from_millis(100);

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
    caps: FrameCaps,
    me: PeerIdentity,
    append_timeout: Duration,
    tls: PeerTls,
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
    /// AppendEntries that carry entries may take up to `append_timeout`.
    /// Connections use `tls` (mutual TLS, or plain).
    pub fn new(
        fault: NetFault,
        connect_timeout: Duration,
        dial: DialMap,
        caps: FrameCaps,
        me: PeerIdentity,
        append_timeout: Duration,
        tls: PeerTls,
    ) -> Self {
        PeerNetwork {
            fault,
            connect_timeout,
            dial,
            caps,
            me,
            append_timeout,
            tls,
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
            caps: self.caps,
            me: self.me,
            append_timeout: self.append_timeout,
            tls: self.tls.clone(),
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
    caps: FrameCaps,
    me: PeerIdentity,
    append_timeout: Duration,
    tls: PeerTls,
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
            None => {
                let connect = self.connect_timeout.min(timeout);
                wire::connect_with(&self.addr, connect, self.caps, &self.tls).await?
            }
        };
        let result = wire::call(&mut conn, &self.addr, self.me, self.target, req, timeout).await;
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    /// Sends a snapshot: offer it (the receiver names the offset to resume
    /// from), stream the chunks each within `option`'s deadline, then poll
    /// until the receiver has installed it. The install itself has no
    /// deadline here: it takes as long as the snapshot's size needs, and the
    /// transfer is cancelled by openraft when replication stops.
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<TypeConfig, SnapshotFile>,
        option: &RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let chunk_timeout = option.hard_ttl();
        let stream_err = |e: CallError| match e {
            CallError::Connect { .. } => StreamingError::Unreachable(unreachable(e)),
            other => StreamingError::Network(network(other)),
        };
        let io_err = |e: std::io::Error| StreamingError::Network(network(e));
        let unexpected = |other: PeerResponse| {
            StreamingError::Network(network(format!("unexpected response: {other:?}")))
        };
        let meta = snapshot.meta.clone();
        let mut file = std::fs::File::open(&snapshot.snapshot.path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let offer = PeerRequest::SnapshotOffer {
            meta: meta.clone(),
            len,
        };
        let resume = match self.call(&offer, chunk_timeout).await.map_err(stream_err)? {
            PeerResponse::SnapshotResume(r) => r,
            other => return Err(unexpected(other)),
        };
        if let Some(mut offset) = resume {
            if offset > len {
                offset = 0;
            }
            if offset > 0 {
                tracing::info!(
                    target = self.target,
                    offset,
                    len,
                    "resuming a snapshot transfer"
                );
            }
            file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
            loop {
                let mut data = Vec::with_capacity(SNAPSHOT_CHUNK_BYTES);
                (&mut file)
                    .take(SNAPSHOT_CHUNK_BYTES as u64)
                    .read_to_end(&mut data)
                    .map_err(io_err)?;
                let chunk_len = data.len() as u64;
                let done = offset + chunk_len >= len;
                let req = PeerRequest::SnapshotChunk {
                    vote,
                    meta: meta.clone(),
                    len,
                    offset,
                    data,
                    done,
                };
                match self.call(&req, chunk_timeout).await.map_err(stream_err)? {
                    PeerResponse::Snapshot(None) => {}
                    PeerResponse::Snapshot(Some(r)) => return Ok(r),
                    other => return Err(unexpected(other)),
                }
                offset += chunk_len;
                if done {
                    break;
                }
            }
        }
        let status = PeerRequest::SnapshotStatus { meta, len };
        loop {
            match self
                .call(&status, chunk_timeout)
                .await
                .map_err(stream_err)?
            {
                PeerResponse::Snapshot(Some(r)) => return Ok(r),
                PeerResponse::Snapshot(None) => {
                    tokio::time::sleep(SNAPSHOT_POLL_INTERVAL).await;
                }
                other => return Err(unexpected(other)),
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
        // openraft gives every AppendEntries the heartbeat interval. That is
        // right for a heartbeat, but a message carrying a megabyte of entries
        // must also cross the link and be synced on the follower: with the
        // heartbeat's deadline it times out, is sent again, and times out
        // again, for good. Entries get the longer deadline; a dead follower is
        // still noticed by the heartbeats, which run on their own connection.
        let timeout = if rpc.entries.is_empty() {
            option.hard_ttl()
        } else {
            option.hard_ttl().max(self.append_timeout)
        };
        match self
            .call(&PeerRequest::AppendEntries(rpc), timeout)
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
