//! The peer listener: serves Raft RPCs, forwarded writes and read-index
//! requests from other nodes. One task per connection, requests answered in
//! order.

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::forwarder::UNDECODABLE;
use super::inbox::{Progress, Resume, SnapshotInbox};
use super::node::Node;
use super::types::NodeId;
use super::wire::{self, Envelope, FrameCaps, PeerRequest, PeerResponse};
use crate::codec;
use crate::stop::stopped;
use crate::tls::PeerTls;

/// Serves peer connections on `listener` until `shutdown` turns true.
/// Received snapshots go through `inbox`.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    inbox: Arc<SnapshotInbox>,
    caps: FrameCaps,
    tls: PeerTls,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let node = node.clone();
                    let inbox = inbox.clone();
                    let shutdown = shutdown.clone();
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let Some(stream) = handshake(&tls, stream, from, shutdown.clone()).await
                        else {
                            return;
                        };
                        let conn = wire::serve_framed(stream, caps);
                        if let Err(e) = serve_conn(conn, node, inbox, shutdown).await {
                            tracing::debug!(%from, error = %e, "peer connection ended");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_conn(
    mut conn: wire::ServerConn,
    node: Arc<Node>,
    inbox: Arc<SnapshotInbox>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    loop {
        let frame = tokio::select! {
            _ = stopped(&mut shutdown) => return Ok(()),
            frame = conn.requests.next() => frame,
        };
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame?;
        if node.fault().is_isolated() {
            // Traffic to an isolated node is dropped, connection and all.
            return Ok(());
        }
        let (response, refused) = match codec::decode::<Envelope<PeerRequest>>(&frame) {
            Ok(env) => match check_envelope(&node, &env) {
                Ok(()) => (handle(env.from, env.request, &node, &inbox).await, false),
                Err(reason) => {
                    warn_refused(&reason);
                    (PeerResponse::Error(reason), true)
                }
            },
            Err(e) => (PeerResponse::Error(format!("{UNDECODABLE}: {e}")), false),
        };
        if node.fault().is_isolated() {
            return Ok(());
        }
        let bytes = codec::encode(&response)?;
        conn.responses.send(Bytes::from(bytes)).await?;
        if refused {
            // A peer of another cluster, or a misaddressed one: nothing more
            // on this connection.
            return Ok(());
        }
    }
}

/// The TLS handshake of an accepted connection (mutual TLS: a dialler whose
/// certificate the cluster CA did not sign never gets a frame read), within
/// [`HANDSHAKE_TIMEOUT`] and until shutdown. Plain TCP passes through.
async fn handshake(
    tls: &PeerTls,
    stream: tokio::net::TcpStream,
    from: std::net::SocketAddr,
    mut shutdown: watch::Receiver<bool>,
) -> Option<crate::tls::PeerStream> {
    let accepted = tokio::select! {
        _ = stopped(&mut shutdown) => return None,
        accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)) => accepted,
    };
    match accepted {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(e)) => {
            warn_refused(&format!("TLS handshake with {from} failed: {e}"));
            None
        }
        Err(_) => {
            tracing::debug!(%from, "peer TLS handshake timed out");
            None
        }
    }
}

/// Refuses requests from another cluster or meant for another node. `Hello`
/// is answered whatever the sender's cluster, so that it learns why it is
/// refused.
fn check_envelope(node: &Node, env: &Envelope<PeerRequest>) -> Result<(), String> {
    if matches!(env.request, PeerRequest::Hello) {
        return Ok(());
    }
    let me = node.identity();
    if env.cluster_id != me.cluster_id {
        return Err(format!(
            "refused: node {} belongs to cluster {:032x}, this node (id {}) to cluster {:032x}",
            env.from, env.cluster_id, me.node_id, me.cluster_id
        ));
    }
    if env.to != me.node_id {
        return Err(format!(
            "refused: node {} addressed node {} at this address, but this is node {}",
            env.from, env.to, me.node_id
        ));
    }
    Ok(())
}

/// Logs a refused peer at most once per [`REFUSAL_LOG_INTERVAL`]: a
/// misconfigured peer retries many times a second.
fn warn_refused(reason: &str) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
        *last = Some(std::time::Instant::now());
        tracing::warn!(reason, "peer request refused");
    }
}

/// Longest an accepted peer connection may take to complete its TLS
/// handshake; a dialler that stalls is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// At most one log line per this interval for refused peer requests.
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

async fn handle(
    from: NodeId,
    req: PeerRequest,
    node: &Node,
    inbox: &SnapshotInbox,
) -> PeerResponse {
    let raft = node.raft();
    match req {
        PeerRequest::Hello => PeerResponse::Hello {
            cluster_id: node.cluster_id(),
            node_id: node.id(),
            saw_your_data: node.saw_data_of(from),
        },
        PeerRequest::AppendEntries(r) => match raft.append_entries(r).await {
            Ok(resp) => {
                // Any answer but "your vote is stale" means a current
                // leader reached us.
                if !matches!(resp, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                    node.note_leader_contact();
                }
                PeerResponse::AppendEntries(resp)
            }
            Err(e) => PeerResponse::Error(e.to_string()),
        },
        PeerRequest::Vote(r) => match raft.vote(r).await {
            Ok(resp) => PeerResponse::Vote(resp),
            Err(e) => PeerResponse::Error(e.to_string()),
        },
        PeerRequest::PreVote(r) => match raft.pre_vote(r).await {
            Ok(resp) => PeerResponse::Vote(resp),
            Err(e) => PeerResponse::Error(e.to_string()),
        },
        PeerRequest::TransferLeader(r) => match raft.handle_transfer_leader(r).await {
            Ok(resp) => PeerResponse::TransferLeader(resp),
            Err(e) => PeerResponse::Error(e.to_string()),
        },
        PeerRequest::Forward(command) => PeerResponse::Forward(node.handle_forward(command).await),
        PeerRequest::ForwardBatch(commands) => {
            PeerResponse::ForwardBatch(node.handle_forward_batch(commands).await)
        }
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.handle_read_index().await),
        PeerRequest::Replicas => PeerResponse::Replicas(node.replicas().current()),
        PeerRequest::WatchStreams => PeerResponse::WatchStreams(node.watch_streams()),
        PeerRequest::Admin(request) => PeerResponse::Admin(node.handle_admin(request).await),
        PeerRequest::MembershipOf => {
            let (committed_index, includes_you) = node.committed_membership_lists(from);
            PeerResponse::MembershipOf {
                committed_index,
                includes_you,
            }
        }
        PeerRequest::Removed { reason } => {
            node.mark_removed(reason);
            PeerResponse::Ack
        }
        PeerRequest::SnapshotOffer { meta, len } => match inbox.offer(&meta, len) {
            Resume::From(offset) => PeerResponse::SnapshotResume(Some(offset)),
            Resume::Installing => PeerResponse::SnapshotResume(None),
        },
        PeerRequest::SnapshotChunk {
            vote,
            meta,
            len,
            offset,
            data,
            done,
        } => match inbox.chunk(raft, vote, meta, len, offset, &data, done) {
            Ok(Progress::Pending) => PeerResponse::Snapshot(None),
            Ok(Progress::Done(resp)) => PeerResponse::Snapshot(Some(resp)),
            Err(e) => PeerResponse::Error(format!("snapshot chunk: {e}")),
        },
        PeerRequest::SnapshotStatus { meta, len } => match inbox.status(&meta, len) {
            Ok(Progress::Pending) => PeerResponse::Snapshot(None),
            Ok(Progress::Done(resp)) => PeerResponse::Snapshot(Some(resp)),
            Err(e) => PeerResponse::Error(e),
        },
    }
}
