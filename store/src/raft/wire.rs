//! The peer protocol: length-delimited frames carrying versioned postcard
//! messages over one TCP connection, request then response.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedRead, FramedWrite, LengthDelimitedCodec};

use super::types::{Member, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::codec;
use crate::kv::types::{Command, CommandResponse};
use crate::kv::Limits;
use crate::tls::{PeerStream, PeerTls};

/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Target size of the entries of one AppendEntries message (etcd's
/// `maxSizePerMsg` is 1 MiB). A message holds at least one entry, so a larger
/// entry travels alone.
pub const APPEND_BATCH_BYTES: usize = 1024 * 1024;
/// Room in a frame for everything around the entries or chunk it carries:
/// vote, log ids, membership, snapshot meta, enum tags.
const FRAME_OVERHEAD_BYTES: usize = 256 * 1024;
/// Largest response frame. Responses to forwarded requests carry what the
/// client asked for (a transaction's reads, a delete's previous values), so
/// they are bounded by the key space, not by the request limits.
const MAX_RESPONSE_FRAME_BYTES: usize = 1024 * 1024 * 1024;

/// The frame caps of the peer protocol, derived in one place from the
/// configured input limits. Every node of a cluster must use the same limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameCaps {
    /// Largest request frame: an AppendEntries message (at most
    /// [`APPEND_BATCH_BYTES`] of entries, or one entry of the largest allowed
    /// request), a snapshot chunk or a forwarded request.
    pub request: usize,
    /// Largest response frame.
    pub response: usize,
}

impl FrameCaps {
    /// The caps for a cluster whose nodes accept requests within `limits`.
    pub fn for_limits(limits: &Limits) -> Self {
        let payload = limits
            .max_request_bytes()
            .max(APPEND_BATCH_BYTES)
            .max(SNAPSHOT_CHUNK_BYTES);
        let request = payload + FRAME_OVERHEAD_BYTES;
        FrameCaps {
            request,
            response: MAX_RESPONSE_FRAME_BYTES.max(request),
        }
    }
}

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft log replication / heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft vote.
    Vote(VoteRequest<TypeConfig>),
    /// Raft pre-vote.
    PreVote(VoteRequest<TypeConfig>),
    /// Announces a snapshot transfer; answered with [`PeerResponse::SnapshotResume`]:
    /// where the receiver's copy of this snapshot ends, so an interrupted
    /// transfer resumes instead of starting over.
    SnapshotOffer {
        /// Snapshot meta.
        meta: SnapshotMeta,
        /// Size of the whole snapshot file.
        len: u64,
    },
    /// One chunk of a snapshot file. After the last one (`done`) the receiver
    /// starts installing it and answers at once; the sender then polls with
    /// [`PeerRequest::SnapshotStatus`], so an install of any length never
    /// runs against one request's deadline.
    SnapshotChunk {
        /// The sender's vote.
        vote: Vote,
        /// Snapshot meta (sent with every chunk; checked at the end).
        meta: SnapshotMeta,
        /// Size of the whole snapshot file.
        len: u64,
        /// Byte offset of this chunk in the file.
        offset: u64,
        /// Chunk bytes.
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        /// Whether this is the final chunk.
        done: bool,
    },
    /// How the install of a fully sent snapshot is going.
    SnapshotStatus {
        /// Snapshot meta.
        meta: SnapshotMeta,
        /// Size of the whole snapshot file.
        len: u64,
    },
    /// Leadership transfer.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A client write received by a follower, for the leader to propose.
    Forward(Command),
    /// A follower asking the leader for a read index (linearizable read).
    ReadIndex,
    /// The data-plane replica reports this node holds.
    Replicas,
    /// Who are you? Sent by a node that starts on an empty data directory,
    /// before it forms a cluster. Answered even across clusters.
    Hello,
    /// A membership or leadership operation, for the leader to run.
    Admin(super::membership::AdminRequest),
    /// The leader tells a member it has removed: it must stop serving.
    Removed {
        /// Who removed it, when.
        reason: String,
    },
    /// Asked by a node without a leader: does your committed membership
    /// list me? (A member removed while it was down or cut off learns it so.)
    MembershipOf,
    /// Client writes received by a follower, for the leader to propose, each
    /// answered on its own (see `forwarder`).
    ForwardBatch(Vec<Command>),
    /// How many watch streams this node has open (for the dashboard's
    /// per-member view).
    WatchStreams,
}

/// What travels in every request frame: the request, addressed to one node
/// of one cluster. A node refuses a request whose cluster id or target node
/// id is not its own.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<R> {
    /// The sender's cluster.
    pub cluster_id: u128,
    /// The sender's node id.
    pub from: NodeId,
    /// The node the sender means to reach.
    pub to: NodeId,
    /// The request.
    pub request: R,
}

/// Who a node is, as it addresses its peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The cluster's id.
    pub cluster_id: u128,
    /// This node's id.
    pub node_id: NodeId,
}

/// Why a forwarded write or read index could not be served by the node asked.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The node is not the leader; it names the leader it knows of.
    #[error("not the leader")]
    NotLeader {
        /// The leader it knows of, if any.
        leader: Option<(NodeId, Member)>,
    },
    /// The leader could not reach a quorum in time (outcome unknown for writes).
    #[error("timed out: {0}")]
    Timeout(String),
    /// Refused before it was proposed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The leader refused the request as invalid (its limits differ).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The leader failed internally (storage or Raft).
    #[error("internal: {0}")]
    Internal(String),
    /// The leader refused the request because too much is in flight.
    #[error("overloaded: {0}")]
    Overloaded(String),
    /// The leader refused a write because the key space is over its quota.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// The leader refused a write because a member is short of disk space.
    #[error("no space: {0}")]
    NoSpace(String),
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To `AppendEntries`.
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    /// To `Vote` and `PreVote`.
    Vote(VoteResponse<TypeConfig>),
    /// To a snapshot chunk or status: `None` until the snapshot is installed.
    Snapshot(Option<SnapshotResponse<TypeConfig>>),
    /// To a snapshot offer: the offset to send from (0: from the start), or
    /// `None` when the whole snapshot was received and is being installed.
    SnapshotResume(Option<u64>),
    /// To `TransferLeader`.
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// To `Forward`.
    Forward(Result<CommandResponse, ForwardError>),
    /// To `ReadIndex`: the log index the reader must have applied.
    ReadIndex(Result<u64, ForwardError>),
    /// To `Replicas`.
    Replicas(Vec<crate::replicas::WireEntry>),
    /// To `Hello`.
    Hello {
        /// The answering node's cluster id.
        cluster_id: u128,
        /// The answering node's id.
        node_id: NodeId,
        /// Whether the answering node has seen the asking node hold Raft log
        /// entries: if so, an asking node with an empty data directory has
        /// lost its data and must not form a cluster.
        saw_your_data: bool,
    },
    /// To `Admin`.
    Admin(Result<super::membership::AdminResponse, super::membership::AdminError>),
    /// To `Removed`.
    Ack,
    /// To `MembershipOf`.
    MembershipOf {
        /// Log index of the answering node's committed membership.
        committed_index: u64,
        /// Whether that membership lists the asking node.
        includes_you: bool,
    },
    /// The request failed on the remote node.
    Error(String),
    /// To `ForwardBatch`: one answer per write, in order.
    ForwardBatch(Vec<Result<CommandResponse, ForwardError>>),
    /// To `WatchStreams`.
    WatchStreams(u64),
}

/// One framed peer connection, as its client sees it (requests out,
/// responses in).
pub type PeerConn = Framed<PeerStream, LengthDelimitedCodec>;

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max)
        .new_codec()
}

/// Wraps a dialled stream in the peer framing. Its frames are at most the
/// response cap (what it reads), and what it sends stays within the request
/// cap because the sender builds it so.
pub fn framed(stream: PeerStream, caps: FrameCaps) -> PeerConn {
    Framed::new(stream, codec(caps.response))
}

/// The listener's side of a peer connection: requests in (at most the
/// request cap, so no peer can make this node allocate more), responses out.
pub struct ServerConn {
    /// Incoming requests.
    pub requests: FramedRead<ReadHalf<PeerStream>, LengthDelimitedCodec>,
    /// Outgoing responses.
    pub responses: FramedWrite<WriteHalf<PeerStream>, LengthDelimitedCodec>,
}

/// Wraps an accepted stream (after its TLS handshake, if any) in the peer
/// framing.
pub fn serve_framed(stream: PeerStream, caps: FrameCaps) -> ServerConn {
    let (read, write) = tokio::io::split(stream);
    ServerConn {
        requests: FramedRead::new(read, codec(caps.request)),
        responses: FramedWrite::new(write, codec(caps.response)),
    }
}

/// Errors of one peer call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// Could not connect: nothing was sent.
    #[error("cannot connect to {addr}: {message}")]
    Connect {
        /// Target address.
        addr: String,
        /// Why.
        message: String,
    },
    /// Sent (maybe), but no answer: the outcome is unknown.
    #[error("no answer from {addr}: {message}")]
    Lost {
        /// Target address.
        addr: String,
        /// Why.
        message: String,
    },
    /// The remote answered with an error.
    #[error("{0}")]
    Remote(String),
}

/// Whether an idle connection is still usable. Peers never send unsolicited
/// frames, so anything readable on an idle connection means it was closed
/// (or broke): reusing it would turn a request that was never delivered into
/// one whose outcome looks unknown.
pub fn is_usable(conn: &mut PeerConn) -> bool {
    use futures::FutureExt;
    conn.next().now_or_never().is_none()
}

/// Connects to `addr` within `timeout`, over plain TCP.
pub async fn connect(
    addr: &str,
    timeout: Duration,
    caps: FrameCaps,
) -> Result<PeerConn, CallError> {
    connect_with(addr, timeout, caps, &PeerTls::plain()).await
}

/// Connects to `addr` within `timeout`, then completes the TLS handshake of
/// `tls` (if on) within another `timeout`. A handshake failure (the peer's
/// certificate not signed by the cluster CA, or this node's refused) is a
/// connect error: nothing was sent.
pub async fn connect_with(
    addr: &str,
    timeout: Duration,
    caps: FrameCaps,
    tls: &PeerTls,
) -> Result<PeerConn, CallError> {
    let failed = |message: String| CallError::Connect {
        addr: addr.to_string(),
        message,
    };
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(failed(e.to_string())),
        Err(_) => return Err(failed("connect timed out".into())),
    };
    match tokio::time::timeout(timeout, tls.dial(stream, addr)).await {
        Ok(Ok(stream)) => Ok(framed(stream, caps)),
        Ok(Err(e)) => Err(failed(format!("TLS handshake: {e}"))),
        Err(_) => Err(failed("TLS handshake timed out".into())),
    }
}

/// Sends one request from `me` to node `to` on `conn` and waits (up to
/// `timeout`) for its response. On any error the connection must be dropped
/// by the caller.
pub async fn call(
    conn: &mut PeerConn,
    addr: &str,
    me: PeerIdentity,
    to: NodeId,
    req: &PeerRequest,
    timeout: Duration,
) -> Result<PeerResponse, CallError> {
    let lost = |message: String| CallError::Lost {
        addr: addr.to_string(),
        message,
    };
    let envelope = Envelope {
        cluster_id: me.cluster_id,
        from: me.node_id,
        to,
        request: req,
    };
    let frame = codec::encode(&envelope).map_err(|e| CallError::Remote(e.to_string()))?;
    let exchange = async {
        conn.send(Bytes::from(frame))
            .await
            .map_err(|e| lost(e.to_string()))?;
        match conn.next().await {
            Some(Ok(bytes)) => codec::decode::<PeerResponse>(&bytes)
                .map_err(|e| lost(format!("bad response: {e}"))),
            Some(Err(e)) => Err(lost(e.to_string())),
            None => Err(lost("connection closed".into())),
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(PeerResponse::Error(message))) => Err(CallError::Remote(message)),
        Ok(result) => result,
        Err(_) => Err(lost(format!("timed out after {timeout:?}"))),
    }
}
