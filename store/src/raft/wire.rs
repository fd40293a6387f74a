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
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use super::types::{Member, NodeId, SnapshotMeta, TypeConfig, Vote};
use crate::codec;
use crate::kv::types::{Command, CommandResponse};

/// Largest frame accepted: a snapshot chunk or a batch of log entries, with
/// room for a maximum-size value.
pub const MAX_FRAME_BYTES: usize = 64 * 1024 * 1024;
/// Size of one snapshot chunk on the wire.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// Raft log replication / heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft vote.
    Vote(VoteRequest<TypeConfig>),
    /// Raft pre-vote.
    PreVote(VoteRequest<TypeConfig>),
    /// One chunk of a snapshot file; the last one (`done`) installs it.
    SnapshotChunk {
        /// The sender's vote.
        vote: Vote,
        /// Snapshot meta (sent with every chunk; checked at the end).
        meta: SnapshotMeta,
        /// Byte offset of this chunk in the file.
        offset: u64,
        /// Chunk bytes.
        data: Vec<u8>,
        /// Whether this is the final chunk.
        done: bool,
    },
    /// Leadership transfer.
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    /// A client write received by a follower, for the leader to propose.
    Forward(Command),
    /// A follower asking the leader for a read index (linearizable read).
    ReadIndex,
    /// The data-plane replica reports this node holds.
    Replicas,
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
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// To `AppendEntries`.
    AppendEntries(AppendEntriesResponse<TypeConfig>),
    /// To `Vote` and `PreVote`.
    Vote(VoteResponse<TypeConfig>),
    /// To a snapshot chunk: `None` until the final chunk is installed.
    Snapshot(Option<SnapshotResponse<TypeConfig>>),
    /// To `TransferLeader`.
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    /// To `Forward`.
    Forward(Result<CommandResponse, ForwardError>),
    /// To `ReadIndex`: the log index the reader must have applied.
    ReadIndex(Result<u64, ForwardError>),
    /// To `Replicas`.
    Replicas(Vec<crate::replicas::WireEntry>),
    /// The request failed on the remote node.
    Error(String),
}

/// One framed peer connection.
pub type PeerConn = Framed<TcpStream, LengthDelimitedCodec>;

/// Wraps a TCP stream in the peer framing.
pub fn framed(stream: TcpStream) -> PeerConn {
    let _ = stream.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec();
    Framed::new(stream, codec)
}

/// Errors of one peer call.
#[derive(Debug, thiserror::Error)]
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

/// Connects to `addr` within `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<PeerConn, CallError> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(framed(stream)),
        Ok(Err(e)) => Err(CallError::Connect {
            addr: addr.to_string(),
            message: e.to_string(),
        }),
        Err(_) => Err(CallError::Connect {
            addr: addr.to_string(),
            message: "connect timed out".into(),
        }),
    }
}

/// Sends one request on `conn` and waits (up to `timeout`) for its response.
/// On any error the connection must be dropped by the caller.
pub async fn call(
    conn: &mut PeerConn,
    addr: &str,
    req: &PeerRequest,
    timeout: Duration,
) -> Result<PeerResponse, CallError> {
    let lost = |message: String| CallError::Lost {
        addr: addr.to_string(),
        message,
    };
    let frame = codec::encode(req).map_err(|e| CallError::Remote(e.to_string()))?;
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
