//! The peer listener: serves Raft RPCs, forwarded writes and read-index
//! requests from other nodes. One task per connection, requests answered in
//! order.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::node::Node;
use super::wire::{self, PeerRequest, PeerResponse};
use crate::codec;
use crate::storage::SnapshotFile;

/// Numbers incoming snapshot streams.
static NEXT_STREAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A snapshot being received on one connection.
struct Incoming {
    file: std::fs::File,
    path: PathBuf,
    next_offset: u64,
}

/// Completes once `rx` reads true (or its sender is gone).
pub async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// Serves peer connections on `listener` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    node: Arc<Node>,
    snapshot_dir: PathBuf,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    let node = node.clone();
                    let dir = snapshot_dir.clone();
                    let shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        if let Err(e) = serve_conn(wire::framed(stream), node, dir, shutdown).await {
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
    mut conn: wire::PeerConn,
    node: Arc<Node>,
    snapshot_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let mut incoming: Option<Incoming> = None;
    loop {
        let frame = tokio::select! {
            _ = stopped(&mut shutdown) => return Ok(()),
            frame = conn.next() => frame,
        };
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame?;
        if node.fault().is_isolated() {
            // Traffic to an isolated node is dropped, connection and all.
            return Ok(());
        }
        let response = match codec::decode::<PeerRequest>(&frame) {
            Ok(req) => handle(req, &node, &snapshot_dir, &mut incoming).await,
            Err(e) => PeerResponse::Error(format!("undecodable request: {e}")),
        };
        if node.fault().is_isolated() {
            return Ok(());
        }
        let bytes = codec::encode(&response)?;
        conn.send(Bytes::from(bytes)).await?;
    }
}

async fn handle(
    req: PeerRequest,
    node: &Node,
    snapshot_dir: &std::path::Path,
    incoming: &mut Option<Incoming>,
) -> PeerResponse {
    let raft = node.raft();
    match req {
        PeerRequest::AppendEntries(r) => match raft.append_entries(r).await {
            Ok(resp) => PeerResponse::AppendEntries(resp),
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
        PeerRequest::ReadIndex => PeerResponse::ReadIndex(node.handle_read_index().await),
        PeerRequest::Replicas => PeerResponse::Replicas(node.replicas().current()),
        PeerRequest::SnapshotChunk {
            vote,
            meta,
            offset,
            data,
            done,
        } => match receive_chunk(snapshot_dir, incoming, offset, &data) {
            Err(e) => {
                *incoming = None;
                PeerResponse::Error(format!("snapshot chunk: {e}"))
            }
            Ok(()) if !done => PeerResponse::Snapshot(None),
            Ok(()) => {
                let Some(inc) = incoming.take() else {
                    return PeerResponse::Error("snapshot finished before it started".into());
                };
                if let Err(e) = inc.file.sync_all() {
                    return PeerResponse::Error(format!("snapshot sync: {e}"));
                }
                let snapshot = openraft::Snapshot {
                    meta,
                    snapshot: SnapshotFile { path: inc.path },
                };
                match raft.install_full_snapshot(vote, snapshot).await {
                    Ok(resp) => PeerResponse::Snapshot(Some(resp)),
                    Err(e) => PeerResponse::Error(e.to_string()),
                }
            }
        },
    }
}

fn receive_chunk(
    dir: &std::path::Path,
    incoming: &mut Option<Incoming>,
    offset: u64,
    data: &[u8],
) -> std::io::Result<()> {
    if offset == 0 {
        std::fs::create_dir_all(dir)?;
        // One file per stream: two streams to one node never share a file.
        let stream = NEXT_STREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("incoming-{stream}.recv"));
        let file = std::fs::File::create(&path)?;
        *incoming = Some(Incoming {
            file,
            path,
            next_offset: 0,
        });
    }
    let Some(inc) = incoming.as_mut() else {
        return Err(std::io::Error::other("chunk without a snapshot start"));
    };
    if inc.next_offset != offset {
        return Err(std::io::Error::other(format!(
            "chunk at offset {offset}, expected {}",
            inc.next_offset
        )));
    }
    inc.file.write_all(data)?;
    inc.next_offset += data.len() as u64;
    Ok(())
}
