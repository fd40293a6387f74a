//! Prefix reads (`GET /v1/kv/{prefix}?prefix=true`) written as they are
//! read, with bounded memory.
//!
//! The answer is the documented JSON document, `{"revision", "kvs",
//! "more"}`, but it is never built whole. A blocking worker holds one
//! RocksDB snapshot for the read ([`RangeScan`], so every key-value
//! reflects one revision) and encodes key-values into chunks of at most
//! [`RangeOptions::chunk_bytes`] when the response body asks for the next
//! one; the body asks only when the connection has taken the previous
//! chunks (hyper polls a body when its write buffer has room), so a slow
//! client slows its worker down instead of piling chunks up.
//!
//! Every chunk's bytes are counted twice until the connection has written
//! them (the permits travel with the chunk and are released when hyper
//! drops it): against its response's buffer
//! ([`RangeOptions::response_buffer_bytes`]) and against the node's
//! ([`RangeOptions::node_buffer_bytes`]). A response that has its buffer's
//! worth unwritten waits for its client; a node whose range responses hold
//! its whole buffer makes the next chunk wait. A read that cannot start
//! (no stream slot or no buffer for its first chunk within
//! [`RangeOptions::queue_timeout`]) is answered `429 too_many_range_reads`
//! with `Retry-After`. A single key-value larger than a chunk goes alone in
//! one chunk, counted in full (up to the whole buffer).
//!
//! A read whose answer fits in its first chunk is answered whole, with a
//! `Content-Length`, as before; a larger one goes out with chunked transfer
//! encoding. A worker whose client takes no chunk for
//! [`RangeOptions::idle_timeout`] gives up: its snapshot is released and
//! the response ends early (the connection is closed mid-body, so the
//! client sees an incomplete document, never a wrong one).

use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ErrorCode};
use crate::kv::json::KvJsonRef;
use crate::kv::mvcc::Record;
use crate::kv::{KvReader, RangeScan, ReadError, Visit};
use crate::raft::node::{Node, NodeError};

/// Limits of streamed prefix reads on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOptions {
    /// Bytes of JSON per chunk of a response.
    pub chunk_bytes: usize,
    /// Most bytes one response may have encoded that its connection has not
    /// written yet.
    pub response_buffer_bytes: usize,
    /// Most bytes all range responses of this node together may have
    /// encoded and not written yet.
    pub node_buffer_bytes: usize,
    /// Most prefix reads running at once; each holds a RocksDB snapshot and
    /// a blocking thread while it streams.
    pub max_streams: usize,
    /// Longest a read waits for a stream slot and its first chunk's buffer
    /// before it is answered `429`.
    pub queue_timeout: Duration,
    /// Longest a streaming response may wait for its client (or for
    /// buffer) before it is cut off and its snapshot released.
    pub idle_timeout: Duration,
}

impl Default for RangeOptions {
    fn default() -> Self {
        RangeOptions {
            chunk_bytes: 256 * 1024,
            response_buffer_bytes: 1024 * 1024,
            node_buffer_bytes: 64 * 1024 * 1024,
            max_streams: 64,
            queue_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// The node-wide side of streamed prefix reads: the stream slots and the
/// byte budget that every range response's unwritten chunks count against.
#[derive(Debug)]
pub struct RangeLimiter {
    options: RangeOptions,
    node_bytes: Arc<Semaphore>,
    streams: Arc<Semaphore>,
}

impl RangeLimiter {
    /// A limiter enforcing `options` (sizes of 0 are raised to 1).
    pub fn new(options: RangeOptions) -> Self {
        let options = RangeOptions {
            chunk_bytes: options.chunk_bytes.max(1),
            response_buffer_bytes: options.response_buffer_bytes.max(1),
            node_buffer_bytes: options.node_buffer_bytes.clamp(1, Semaphore::MAX_PERMITS),
            max_streams: options.max_streams.clamp(1, Semaphore::MAX_PERMITS),
            ..options
        };
        RangeLimiter {
            node_bytes: Arc::new(Semaphore::new(options.node_buffer_bytes)),
            streams: Arc::new(Semaphore::new(options.max_streams)),
            options,
        }
    }

    /// The limits in force.
    pub fn options(&self) -> &RangeOptions {
        &self.options
    }

    /// Bytes of range responses encoded and not yet written, on this node.
    pub fn bytes_in_flight(&self) -> usize {
        self.options.node_buffer_bytes - self.node_bytes.available_permits()
    }

    /// Prefix reads running now.
    pub fn streams_open(&self) -> usize {
        self.options.max_streams - self.streams.available_permits()
    }
}

fn busy(what: &str) -> ApiError {
    ApiError::refused(
        ErrorCode::TooManyRangeReads,
        format!("this node is serving its maximum of large range reads ({what}); retry later or on another node"),
    )
}

fn internal(what: impl std::fmt::Display) -> ApiError {
    NodeError::Internal(format!("range read: {what}")).into()
}

/// Answers a prefix read: the whole document when it fits one chunk,
/// otherwise a stream of chunks (see the module docs).
pub async fn respond(
    node: &Node,
    limiter: &RangeLimiter,
    prefix: String,
    limit: Option<usize>,
    revision: Option<u64>,
) -> Result<Response, ApiError> {
    let options = limiter.options.clone();
    let slot = tokio::time::timeout(
        options.queue_timeout,
        limiter.streams.clone().acquire_owned(),
    )
    .await
    .map_err(|_| busy("no stream slot"))?
    .map_err(internal)?;
    let slot = Arc::new(slot);
    let worker = node
        .read_local(|reader| {
            Worker::open(
                reader,
                prefix.clone(),
                limit,
                revision,
                slot.clone(),
                options.idle_timeout,
            )
        })
        .await?;
    drop(slot);
    let mut feed = Feed {
        worker,
        response_bytes: Arc::new(Semaphore::new(options.response_buffer_bytes)),
        node_bytes: limiter.node_bytes.clone(),
        options,
        done: false,
    };
    let first = tokio::time::timeout(
        feed.options.queue_timeout,
        feed.reserve(feed.options.chunk_bytes),
    )
    .await
    .map_err(|_| busy("no buffer"))?
    .map_err(internal)?;
    let first = feed.next_with(first).await.map_err(internal)?;
    let builder = Response::builder().status(StatusCode::OK).header(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = if feed.done {
        // The whole answer: hyper sends its length.
        Body::from(first)
    } else {
        let rest = futures::stream::unfold(feed, |mut feed| async move {
            if feed.done {
                return None;
            }
            let item = feed.next().await;
            if item.is_err() {
                feed.done = true;
            }
            Some((item, feed))
        });
        Body::from_stream(futures::StreamExt::chain(
            futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
            rest,
        ))
    };
    builder.body(body).map_err(internal)
}

/// Permits for the bytes of one chunk: released when the chunk is dropped,
/// after its connection wrote it.
struct Reserved {
    bytes: usize,
    _response: OwnedSemaphorePermit,
    _node: OwnedSemaphorePermit,
}

/// One encoded chunk and the permits that count it.
struct Chunk {
    json: Vec<u8>,
    _reserved: Reserved,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.json
    }
}

/// The async side of one streamed read: reserves buffer, asks the worker
/// for the next chunk.
struct Feed {
    worker: Worker,
    response_bytes: Arc<Semaphore>,
    node_bytes: Arc<Semaphore>,
    options: RangeOptions,
    done: bool,
}

impl Feed {
    /// Waits for `bytes` of buffer from the response's and the node's
    /// budgets (all of a budget when it is smaller).
    async fn reserve(&self, bytes: usize) -> Result<Reserved, tokio::sync::AcquireError> {
        let from = |semaphore: &Arc<Semaphore>, limit: usize| {
            let n = u32::try_from(bytes.min(limit)).unwrap_or(u32::MAX);
            semaphore.clone().acquire_many_owned(n)
        };
        // The response's own budget first: only this response competes
        // for it, so holding it while waiting for the node's is harmless.
        let response = from(&self.response_bytes, self.options.response_buffer_bytes).await?;
        let node = from(&self.node_bytes, self.options.node_buffer_bytes).await?;
        Ok(Reserved {
            bytes,
            _response: response,
            _node: node,
        })
    }

    /// The next chunk, waiting for buffer at most the idle timeout.
    async fn next(&mut self) -> Result<Bytes, std::io::Error> {
        let reserved = tokio::time::timeout(
            self.options.idle_timeout,
            self.reserve(self.options.chunk_bytes),
        )
        .await
        .map_err(|_| std::io::Error::other("range read: no buffer within the idle timeout"))?
        .map_err(std::io::Error::other)?;
        self.next_with(reserved).await
    }

    /// The next chunk, encoded into `reserved`; a key-value too large for
    /// it gets a reservation of its size.
    async fn next_with(&mut self, mut reserved: Reserved) -> Result<Bytes, std::io::Error> {
        loop {
            match self.worker.fill(reserved.bytes).await? {
                Filled::Chunk { json, done } => {
                    self.done = done;
                    return Ok(Bytes::from_owner(Chunk {
                        json,
                        _reserved: reserved,
                    }));
                }
                Filled::Needs(bytes) => {
                    drop(reserved);
                    reserved = tokio::time::timeout(self.options.idle_timeout, self.reserve(bytes))
                        .await
                        .map_err(|_| {
                            std::io::Error::other("range read: no buffer within the idle timeout")
                        })?
                        .map_err(std::io::Error::other)?;
                }
            }
        }
    }
}

/// What the worker made of a request for a chunk.
enum Filled {
    /// JSON bytes, and whether they end the document.
    Chunk { json: Vec<u8>, done: bool },
    /// The next key-value alone needs this many bytes: ask again with them.
    Needs(usize),
}

/// A request to the worker: the bytes reserved for the chunk.
struct FillRequest {
    max_bytes: usize,
    reply: oneshot::Sender<std::io::Result<Filled>>,
}

/// The handle of a blocking worker that owns a [`RangeScan`]. Dropping it
/// ends the worker (and releases its snapshot).
struct Worker {
    requests: mpsc::Sender<FillRequest>,
}

impl Worker {
    /// Starts a worker on a blocking thread; it takes the snapshot and
    /// answers once it has (or could not).
    async fn open(
        reader: KvReader,
        prefix: String,
        limit: Option<usize>,
        revision: Option<u64>,
        slot: Arc<OwnedSemaphorePermit>,
        idle: Duration,
    ) -> Result<Worker, ReadError> {
        let (requests, inbox) = mpsc::channel();
        let (opened_tx, opened) = oneshot::channel();
        tokio::task::spawn_blocking(move || {
            let scan = match reader.range_scan(&prefix, limit, revision) {
                Ok(scan) => scan,
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    return;
                }
            };
            if opened_tx.send(Ok(())).is_ok() {
                serve(scan, &inbox, idle);
            }
            drop(slot);
        });
        opened
            .await
            .map_err(|_| ReadError::Storage(std::io::Error::other("range worker stopped")))??;
        Ok(Worker { requests })
    }

    /// Asks the worker for a chunk of at most `max_bytes`.
    async fn fill(&self, max_bytes: usize) -> std::io::Result<Filled> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(FillRequest { max_bytes, reply })
            .map_err(|_| std::io::Error::other("range read: the reader gave up (idle timeout)"))?;
        answer
            .await
            .map_err(|_| std::io::Error::other("range read: the reader stopped"))?
    }
}

/// The worker's loop: one chunk per request, until the document is
/// complete, the response is dropped, or no request comes for `idle`.
fn serve(mut scan: RangeScan<'_>, inbox: &mpsc::Receiver<FillRequest>, idle: Duration) {
    let mut writer = JsonWriter::new(scan.revision());
    while let Ok(request) = inbox.recv_timeout(idle) {
        let filled = writer.fill(&mut scan, request.max_bytes);
        let done = matches!(filled, Ok(Filled::Chunk { done: true, .. }) | Err(_));
        if request.reply.send(filled).is_err() || done {
            return;
        }
    }
}

/// The largest closing of the document: `],"more":false}`.
const CLOSING_MAX: usize = 16;

/// Writes the range document chunk by chunk.
struct JsonWriter {
    revision: u64,
    started: bool,
    any: bool,
}

impl JsonWriter {
    fn new(revision: u64) -> Self {
        JsonWriter {
            revision,
            started: false,
            any: false,
        }
    }

    /// Encodes key-values from `scan` into at most `max_bytes` (more only
    /// when one key-value alone is larger: then [`Filled::Needs`] first).
    fn fill(&mut self, scan: &mut RangeScan<'_>, max_bytes: usize) -> std::io::Result<Filled> {
        let mut json = Vec::new();
        let opening =
            (!self.started).then(|| format!("{{\"revision\":{},\"kvs\":[", self.revision));
        let room = max_bytes.saturating_sub(CLOSING_MAX);
        let mut needs = None;
        let mut first_in_chunk = true;
        if let Some(opening) = &opening {
            grow(&mut json, opening.len(), max_bytes);
            json.extend_from_slice(opening.as_bytes());
        }
        scan.step(|key, record: &Record| {
            let kv = KvJsonRef::new(
                key,
                &record.value,
                record.create_revision,
                record.mod_revision,
                record.version,
            );
            let comma = usize::from(self.any);
            let mut len = kv.encoded_len_bound() + comma;
            if json.len() + len > room {
                len = kv.encoded_len() + comma;
            }
            if json.len() + len > room {
                if first_in_chunk {
                    needs = Some(json.len() + len + CLOSING_MAX);
                }
                return Visit::Stop;
            }
            grow(&mut json, len, max_bytes);
            if self.any {
                json.push(b',');
            }
            // Serializing strings and integers into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut json, &kv);
            self.any = true;
            first_in_chunk = false;
            Visit::Take
        })?;
        if let Some(bytes) = needs {
            // Nothing was taken; the opening (if any) is written next time.
            return Ok(Filled::Needs(bytes));
        }
        self.started = true;
        let done = scan.finished();
        if done {
            let closing = if scan.more() {
                "],\"more\":true}"
            } else {
                "],\"more\":false}"
            };
            grow(&mut json, closing.len(), max_bytes);
            json.extend_from_slice(closing.as_bytes());
        }
        Ok(Filled::Chunk { json, done })
    }
}

/// The key-values under `prefix` now, encoded as the inside of a range
/// answer's `kvs` array, with the revision they reflect; `None` when that
/// would take more than `max_bytes` (the bootstrap buffer then streams the
/// prefix as a plain read instead).
pub(crate) fn encode_whole(
    reader: &KvReader,
    prefix: &str,
    max_bytes: usize,
) -> Result<Option<(u64, Vec<u8>)>, ReadError> {
    let mut scan = reader.range_scan(prefix, None, None)?;
    let revision = scan.revision();
    let mut writer = JsonWriter::new(revision);
    match writer.fill(&mut scan, max_bytes.saturating_add(CLOSING_MAX))? {
        Filled::Chunk {
            mut json,
            done: true,
        } if !scan.more() => {
            let opening = format!("{{\"revision\":{revision},\"kvs\":[").len();
            let closing = "],\"more\":false}".len();
            json.truncate(json.len() - closing);
            json.drain(..opening);
            Ok(Some((revision, json)))
        }
        _ => Ok(None),
    }
}

/// Makes room for `more` bytes in `buf`, growing it by doubling but never
/// past `cap` (unless `more` itself needs it), so a chunk's allocation
/// stays within the bytes reserved for it.
fn grow(buf: &mut Vec<u8>, more: usize, cap: usize) {
    let need = buf.len() + more;
    if need <= buf.capacity() {
        return;
    }
    let target = (buf.capacity() * 2).max(4096).min(cap).max(need);
    buf.reserve_exact(target - buf.len());
}
