//! Backups: [`Client::snapshot`] streams `GET /v1/snapshot` into a writer,
//! verifying it on the way; [`verify_snapshot_file`] checks a saved file.
//!
//! A backup file is an envelope around the node's snapshot file (integers
//! little-endian; see `docs/operations.md`):
//!
//! ```text
//! magic "BALLBKUP" | header length u32 | header (JSON) | snapshot file | xxh3-64 of all before
//! ```
//!
//! The snapshot file inside ends with its own xxh3-64 of the bytes before
//! it. Both checksums, the header and the lengths are checked here without
//! decoding the snapshot's records; `ballastd restore` also checks the state
//! digest of the key space they hold.

use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt as _};
use tracing::instrument;
use xxhash_rust::xxh3::Xxh3;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::transport::{api_error, chain};
use crate::types::WireErrorDoc;

/// First bytes of a backup file.
const MAGIC: &[u8; 8] = b"BALLBKUP";
/// First bytes of the snapshot file inside.
const INNER_MAGIC: &[u8; 8] = b"BALLSNAP";
/// The envelope format this client reads.
const FORMAT: u32 = 1;
/// Largest envelope header accepted (a real one is a few hundred bytes).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Magic and header length.
const FIXED_BYTES: usize = 12;
/// A checksum trailer.
const TRAILER_BYTES: u64 = 8;
/// Header of the response carrying the envelope checksum.
const CHECKSUM_HEADER: &str = "x-ballast-snapshot-checksum";
/// Longest wait for the answer to start (the node writes the whole snapshot
/// first) and, afterwards, for the next bytes of the body.
pub const SNAPSHOT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Bytes read at a time from a file.
const CHUNK_BYTES: usize = 1 << 20;

/// What a verified backup holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotInfo {
    /// Envelope format version.
    pub format: u32,
    /// The cluster the backup was taken from (hex).
    pub cluster_id: String,
    /// The node that served it.
    pub node_id: u64,
    /// Key-space revision of the copy.
    pub revision: u64,
    /// Oldest revision whose history the copy holds.
    pub compact_revision: u64,
    /// Live keys.
    pub key_count: u64,
    /// Digest of the key space (hex), as `/v1/status` reports it.
    pub state_hash: String,
    /// When the copy was taken, seconds since the Unix epoch.
    pub created_unix_secs: u64,
    /// Bytes of the whole backup file.
    pub size: u64,
    /// The envelope checksum (xxh3-64, hex).
    pub checksum: String,
}

#[derive(Debug, Deserialize)]
struct WireHeader {
    format: u32,
    cluster_id: String,
    node_id: u64,
    revision: u64,
    compact_revision: u64,
    key_count: u64,
    state_hash: String,
    snapshot_bytes: u64,
    created_unix_secs: u64,
}

/// The layout once the header is known: absolute offsets.
#[derive(Debug)]
struct Layout {
    header: WireHeader,
    /// Where the snapshot file starts.
    inner_start: u64,
    /// Where the snapshot file's own trailer starts.
    inner_trailer: u64,
    /// Where the envelope trailer starts.
    outer_trailer: u64,
    /// Total length.
    end: u64,
}

/// Checks a backup as its bytes arrive, holding only the header and the
/// trailers in memory.
pub struct SnapshotVerifier {
    received: u64,
    head: Vec<u8>,
    layout: Option<Layout>,
    outer: Xxh3,
    inner: Xxh3,
    inner_magic: Vec<u8>,
    inner_trailer: Vec<u8>,
    outer_trailer: Vec<u8>,
}

impl std::fmt::Debug for SnapshotVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotVerifier")
            .field("received", &self.received)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Default for SnapshotVerifier {
    fn default() -> Self {
        Self::new()
    }
}

fn corrupt(message: impl Into<String>) -> Error {
    Error::Snapshot(message.into())
}

/// The part of `data` (starting at absolute offset `at`) inside `[from, to)`.
fn part(data: &[u8], at: u64, from: u64, to: u64) -> &[u8] {
    let end = at + data.len() as u64;
    let (start, stop) = (from.max(at), to.min(end));
    if start >= stop {
        return &[];
    }
    &data[(start - at) as usize..(stop - at) as usize]
}

impl SnapshotVerifier {
    /// A verifier expecting the first byte of a backup.
    pub fn new() -> Self {
        SnapshotVerifier {
            received: 0,
            head: Vec::new(),
            layout: None,
            outer: Xxh3::new(),
            inner: Xxh3::new(),
            inner_magic: Vec::new(),
            inner_trailer: Vec::new(),
            outer_trailer: Vec::new(),
        }
    }

    /// Bytes fed so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Feeds the next bytes; fails as soon as they cannot be a valid backup.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if self.layout.is_some() {
            return self.process(data);
        }
        self.head.extend_from_slice(data);
        let Some(layout) = Self::parse_head(&self.head)? else {
            return Ok(());
        };
        self.layout = Some(layout);
        let head = std::mem::take(&mut self.head);
        self.process(&head)
    }

    fn parse_head(head: &[u8]) -> Result<Option<Layout>> {
        let magic_seen = head.len().min(MAGIC.len());
        if head[..magic_seen] != MAGIC[..magic_seen] {
            return Err(corrupt("not a ballast backup file (wrong magic)"));
        }
        if head.len() < FIXED_BYTES {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[8..FIXED_BYTES]);
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_HEADER_BYTES {
            return Err(corrupt(format!(
                "header length {len} is over {MAX_HEADER_BYTES}: the file is corrupt"
            )));
        }
        if head.len() < FIXED_BYTES + len {
            return Ok(None);
        }
        let header: WireHeader = serde_json::from_slice(&head[FIXED_BYTES..FIXED_BYTES + len])
            .map_err(|e| corrupt(format!("the header is not valid: {e}")))?;
        if header.format != FORMAT {
            return Err(corrupt(format!(
                "backup format {} is not supported (this client reads {FORMAT})",
                header.format
            )));
        }
        if header.snapshot_bytes < INNER_MAGIC.len() as u64 + TRAILER_BYTES {
            return Err(corrupt(format!(
                "the header gives the snapshot {} bytes, too few to be one",
                header.snapshot_bytes
            )));
        }
        let inner_start = (FIXED_BYTES + len) as u64;
        let outer_trailer = inner_start + header.snapshot_bytes;
        Ok(Some(Layout {
            header,
            inner_start,
            inner_trailer: outer_trailer - TRAILER_BYTES,
            outer_trailer,
            end: outer_trailer + TRAILER_BYTES,
        }))
    }

    fn process(&mut self, data: &[u8]) -> Result<()> {
        let Some(l) = &self.layout else {
            return Ok(());
        };
        let at = self.received;
        if at + data.len() as u64 > l.end {
            return Err(corrupt(format!(
                "more than the {} bytes the header announces: the file is corrupt",
                l.end
            )));
        }
        self.outer.update(part(data, at, 0, l.outer_trailer));
        self.inner
            .update(part(data, at, l.inner_start, l.inner_trailer));
        let magic_end = l.inner_start + INNER_MAGIC.len() as u64;
        self.inner_magic
            .extend_from_slice(part(data, at, l.inner_start, magic_end));
        self.inner_trailer
            .extend_from_slice(part(data, at, l.inner_trailer, l.outer_trailer));
        self.outer_trailer
            .extend_from_slice(part(data, at, l.outer_trailer, l.end));
        self.received += data.len() as u64;
        Ok(())
    }

    /// Checks the end of the backup: length, both checksums.
    pub fn finish(self) -> Result<SnapshotInfo> {
        let Some(l) = self.layout else {
            return Err(corrupt(format!(
                "the file ends after {} bytes, inside its header: it is truncated or not a \
                 ballast backup",
                self.head.len()
            )));
        };
        if self.received != l.end {
            return Err(corrupt(format!(
                "the file ends after {} of the {} bytes its header announces: it is truncated",
                self.received, l.end
            )));
        }
        let checksum = self.outer.digest();
        let trailer = u64::from_le_bytes(self.outer_trailer.try_into().unwrap_or_default());
        if trailer != checksum {
            return Err(corrupt(format!(
                "checksum mismatch (the file says {trailer:016x}, its bytes hash to \
                 {checksum:016x}): the file is corrupt"
            )));
        }
        if self.inner_magic != INNER_MAGIC {
            return Err(corrupt("the snapshot inside is not a ballast snapshot"));
        }
        let inner = u64::from_le_bytes(self.inner_trailer.try_into().unwrap_or_default());
        if inner != self.inner.digest() {
            return Err(corrupt(
                "the checksum of the snapshot inside does not match",
            ));
        }
        let h = l.header;
        Ok(SnapshotInfo {
            format: h.format,
            cluster_id: h.cluster_id,
            node_id: h.node_id,
            revision: h.revision,
            compact_revision: h.compact_revision,
            key_count: h.key_count,
            state_hash: h.state_hash,
            created_unix_secs: h.created_unix_secs,
            size: l.end,
            checksum: format!("{checksum:016x}"),
        })
    }
}

/// Verifies a backup file: magic, header, length and both checksums.
pub fn verify_snapshot_file(path: &Path) -> Result<SnapshotInfo> {
    let io = |e: std::io::Error| Error::Io(format!("{}: {e}", path.display()));
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut verifier = SnapshotVerifier::new();
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        verifier.feed(&buf[..n])?;
    }
    verifier.finish()
}

impl Client {
    /// Streams a backup of one node's applied state (`GET /v1/snapshot`)
    /// into `out`, verifying it on the way, and calls `progress(received,
    /// total)` after each chunk. Tries the endpoints in turn (the preferred
    /// first) while they cannot start one; once bytes have been written to
    /// `out`, a failure is final and what was written is incomplete.
    ///
    /// Waits up to [`SNAPSHOT_IDLE_TIMEOUT`] for the node to start the answer
    /// and then for each next chunk.
    #[instrument(skip_all)]
    pub async fn snapshot<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        mut progress: impl FnMut(u64, Option<u64>),
    ) -> Result<SnapshotInfo> {
        let urls = self.endpoints();
        let preferred = self.preferred_endpoint();
        let first = urls.iter().position(|u| *u == preferred).unwrap_or(0);
        let mut last = None;
        for endpoint in urls.iter().cycle().skip(first).take(urls.len()) {
            match self.start_snapshot(endpoint).await {
                Ok(response) => return download(endpoint, response, out, &mut progress).await,
                Err(e) => {
                    tracing::debug!(endpoint, error = %e, "no snapshot from this node");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| Error::InvalidArgument("no endpoints".to_owned())))
    }

    /// Asks `endpoint` for a snapshot; `Ok` once a 200 answer has started.
    async fn start_snapshot(&self, endpoint: &str) -> Result<reqwest::Response> {
        let url = format!("{endpoint}/v1/snapshot");
        let transport = |message: String| Error::Transport {
            endpoint: endpoint.to_owned(),
            message,
        };
        let send = self.inner.stream_http.get(&url).send();
        let response = match tokio::time::timeout(SNAPSHOT_IDLE_TIMEOUT, send).await {
            Err(_) => {
                return Err(transport(format!(
                    "no answer within {SNAPSHOT_IDLE_TIMEOUT:?}"
                )))
            }
            Ok(Err(e)) => return Err(transport(chain(&e))),
            Ok(Ok(r)) => r,
        };
        let status = response.status();
        if status == StatusCode::OK {
            return Ok(response);
        }
        let revision = response
            .headers()
            .get("x-ballast-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = response.bytes().await.unwrap_or_default();
        let doc = serde_json::from_slice::<WireErrorDoc>(&body).ok();
        Err(api_error(status.as_u16(), doc, &body, revision))
    }
}

async fn download<W: AsyncWrite + Unpin>(
    endpoint: &str,
    response: reqwest::Response,
    out: &mut W,
    progress: &mut impl FnMut(u64, Option<u64>),
) -> Result<SnapshotInfo> {
    let total = response.content_length();
    let announced = response
        .headers()
        .get(CHECKSUM_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut verifier = SnapshotVerifier::new();
    let mut body = response.bytes_stream();
    loop {
        let next = tokio::time::timeout(SNAPSHOT_IDLE_TIMEOUT, body.next()).await;
        let chunk = match next {
            Err(_) => {
                return Err(Error::Transport {
                    endpoint: endpoint.to_owned(),
                    message: format!(
                        "the download stalled for {SNAPSHOT_IDLE_TIMEOUT:?} after {} bytes",
                        verifier.received()
                    ),
                })
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(Error::Transport {
                    endpoint: endpoint.to_owned(),
                    message: format!(
                        "the download broke off after {} bytes: {}",
                        verifier.received(),
                        chain(&e)
                    ),
                })
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        verifier.feed(&chunk)?;
        out.write_all(&chunk)
            .await
            .map_err(|e| Error::Io(format!("writing the snapshot: {e}")))?;
        progress(verifier.received(), total);
    }
    out.flush()
        .await
        .map_err(|e| Error::Io(format!("writing the snapshot: {e}")))?;
    let info = verifier.finish()?;
    if let Some(announced) = announced {
        if announced != info.checksum {
            return Err(corrupt(format!(
                "the node announced checksum {announced}, the bytes received hash to {}",
                info.checksum
            )));
        }
    }
    Ok(info)
}

#[cfg(test)]
#[path = "snapshot_test.rs"]
mod tests;
