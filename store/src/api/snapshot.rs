//! `GET /v1/snapshot`: a backup of this node's applied state, streamed.
//!
//! The backup (see `storage::backup` for the envelope) is written from one
//! RocksDB snapshot into a file under the node's data directory on a
//! blocking thread, then streamed from that file in chunks, so memory stays
//! flat whatever the size. The file is removed as soon as it is open for
//! streaming (Unix keeps it readable), and in any case when the response
//! body is dropped: at the end, on a disconnect, or on an error. One backup
//! at a time per node; a second gets `429 snapshot_in_progress`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::stream::{self, StreamExt};
use tokio::io::AsyncReadExt;

use super::error::{ApiError, ErrorCode};
use crate::raft::node::{Node, NodeError};
use crate::storage::backup::{Backup, BackupError, BackupSlot};

/// Header carrying the backup's key-space revision.
pub const SNAPSHOT_REVISION_HEADER: &str = "x-ballast-snapshot-revision";
/// Header carrying the backup's checksum: the envelope trailer, xxh3-64 in
/// 16 hex digits.
pub const SNAPSHOT_CHECKSUM_HEADER: &str = "x-ballast-snapshot-checksum";
/// Bytes read from the file per body chunk.
const CHUNK_BYTES: usize = 256 * 1024;
/// Longest a backup waits for a snapshot install on this node to finish.
const INSTALL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /v1/snapshot`.
#[utoipa::path(
    get,
    path = "/v1/snapshot",
    tag = "admin",
    responses(
        (status = 200, description = "the backup file, streamed", content_type = "application/octet-stream", body = Vec<u8>,
         headers(
             ("x-ballast-snapshot-revision" = u64, description = "the key-space revision of the copy"),
             ("x-ballast-snapshot-checksum" = String, description = "xxh3-64 of the file before its trailer, 16 hex digits"),
         )),
        (status = 429, description = "`snapshot_in_progress`, `too_many_admin_requests` (`Retry-After`)", body = super::openapi::ErrorBody),
        (status = 503, description = "`not_ready`: a snapshot install did not finish in time (`Retry-After`)", body = super::openapi::ErrorBody),
    )
)]
#[tracing::instrument(skip_all)]
pub async fn snapshot(State(node): State<Arc<Node>>) -> Result<Response, ApiError> {
    let source = node.backups().clone();
    let Some(slot) = source.try_claim() else {
        return Err(ApiError::refused(
            ErrorCode::SnapshotInProgress,
            "this node is already streaming a backup; retry when it is done, or ask another node",
        ));
    };
    let slot = Arc::new(slot);
    let (cluster_id, node_id) = (node.cluster_id(), node.id());
    let deadline = tokio::time::Instant::now() + INSTALL_WAIT;
    let backup = loop {
        let (building, slot) = (source.clone(), slot.clone());
        let built =
            tokio::task::spawn_blocking(move || building.build(&slot, cluster_id, node_id)).await;
        match built {
            Ok(Ok(backup)) => break backup,
            Ok(Err(BackupError::Installing)) => {
                if tokio::time::timeout_at(deadline, source.wait_idle())
                    .await
                    .is_err()
                {
                    return Err(ApiError::NotReady(format!(
                        "a snapshot install on this node did not finish within {INSTALL_WAIT:?}; \
                         retry, or ask another node"
                    )));
                }
            }
            Ok(Err(BackupError::Io(e))) => {
                return Err(NodeError::Internal(format!("building the backup: {e}")).into())
            }
            Err(e) => {
                return Err(NodeError::Internal(format!("the backup task failed: {e}")).into())
            }
        }
    };
    let file = tokio::fs::File::open(backup.file.path())
        .await
        .map_err(|e| NodeError::Internal(format!("opening the backup: {e}")))?;
    if cfg!(unix) {
        backup.file.remove_now();
    }
    tracing::info!(
        revision = backup.header.revision,
        keys = backup.header.key_count,
        bytes = backup.total_bytes(),
        "streaming a backup"
    );
    response(backup, file, slot)
}

fn response(
    backup: Backup,
    file: tokio::fs::File,
    slot: Arc<BackupSlot>,
) -> Result<Response, ApiError> {
    let revision = backup.header.revision;
    let checksum = format!("{:016x}", backup.checksum);
    let total = backup.total_bytes();
    let prefix = Bytes::from(backup.prefix.clone());
    let trailer = Bytes::copy_from_slice(&backup.trailer());
    // The body owns the file, its removal guard and the slot: all go when
    // the body is dropped.
    let held = (backup, slot);
    let chunks = stream::try_unfold(file, |mut file| async move {
        let mut buf = BytesMut::with_capacity(CHUNK_BYTES);
        let n = file.read_buf(&mut buf).await?;
        Ok::<_, std::io::Error>((n > 0).then(|| (buf.freeze(), file)))
    });
    let body = stream::once(async move { Ok(prefix) })
        .chain(chunks)
        .chain(stream::once(async move {
            drop(held);
            Ok(trailer)
        }));
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, total)
        .header(SNAPSHOT_REVISION_HEADER, HeaderValue::from(revision))
        .header(SNAPSHOT_CHECKSUM_HEADER, checksum)
        .header(
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"ballast-{revision}.snap\""),
        )
        .body(Body::from_stream(body))
        .map_err(|e| NodeError::Internal(format!("building the response: {e}")).into())
}
