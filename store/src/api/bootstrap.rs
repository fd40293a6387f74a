//! The bootstrap snapshot buffer: one scan of a prefix serves every replica
//! that bootstraps it.
//!
//! When a fleet restarts, hundreds of replicas read the same prefix at
//! once. Each bootstrap (`GET /v1/kv/{prefix}?prefix=true&bootstrap=true`)
//! is served from the node's buffer:
//!
//! - **One entry per prefix**: the prefix's key-values encoded once as the
//!   JSON of a range answer at some revision R, held as shared bytes. Every
//!   bootstrap of the prefix sends the same bytes (no copy per response).
//! - **Shared builds**: the bootstraps of a prefix that find no usable entry
//!   wait for one scan (a per-prefix build lock) instead of scanning each.
//!   The bootstrap that will build claims the lock on arrival, before its
//!   read's barrier, so those arriving meanwhile find the build under way,
//!   wait for it without an admission slot, and are answered from it.
//! - **Kept current by the watch feed**: an entry is a member of the watch
//!   hub's group for its prefix, so the feed records the last revision that
//!   changed a key under it. An entry at R serves a bootstrap that needs
//!   revision A ≥ R when nothing under the prefix changed in (R, A]: the
//!   prefix's state at A is the one at R, so the answer says A (rolled
//!   forward, and the replica watches from A + 1). A change under the prefix
//!   invalidates the entry; the next bootstrap rebuilds it.
//! - **Followers too**: A is the node's applied revision after the read's
//!   consistency is met (a read-index barrier for a linearizable
//!   bootstrap), so a follower's answer is as current as the leader's.
//! - **Compressed when large**: an entry of at least 64 KiB also keeps its
//!   key-values as one zstd frame, sent (`Content-Encoding: zstd`) to
//!   clients that send `Accept-Encoding: zstd`; the opening and closing of
//!   the document are compressed per answer as frames of their own (zstd
//!   frames concatenate), so the compressed entry rolls forward too. Other
//!   clients get the plain document.
//! - **Bounded**: entries are evicted least recently used first once they
//!   hold more than `max_bytes`; a prefix whose answer alone would exceed
//!   `max_entry_bytes` is not buffered (it is streamed as a plain range
//!   read, with that path's bounded memory).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

use super::error::ApiError;
use super::range::encode_whole;
use crate::raft::node::{Node, NodeError};
use crate::watch::event::Filter;
use crate::watch::hub::GroupHandle;
use crate::watch::WatchHub;

/// How long a bootstrap waits for the watch feed to evaluate the revision
/// it needs before it rebuilds the entry instead.
const FEED_WAIT: Duration = Duration::from_millis(200);
/// Entries at least this large are also kept compressed.
const ZSTD_MIN_BYTES: usize = 64 * 1024;
/// zstd level of entries: fast, and most of the gain on JSON.
const ZSTD_LEVEL: i32 = 3;

/// Bounds of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferOptions {
    /// Most bytes all entries together hold (0 = no buffer: every
    /// bootstrap is a plain prefix read).
    pub max_bytes: usize,
    /// Most bytes of one entry; a larger prefix is streamed instead.
    pub max_entry_bytes: usize,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            max_bytes: 256 * 1024 * 1024,
            max_entry_bytes: 64 * 1024 * 1024,
        }
    }
}

/// One prefix's encoded answer.
struct Entry {
    /// The revision the key-values reflect.
    revision: u64,
    /// The key-values as the inside of the `kvs` JSON array.
    kvs: Bytes,
    /// The same, as one zstd frame, for a large entry.
    kvs_zstd: Option<Bytes>,
    /// Membership of the prefix's watch group: the feed tracks changes
    /// under the prefix for as long as the entry lives.
    group: GroupHandle,
    /// Last use, for LRU eviction.
    used: AtomicU64,
}

impl Entry {
    /// Whether the prefix's state at `self.revision` is its state at
    /// `need`: the feed evaluated every revision up to `need` for the
    /// prefix, and none changed it after ours.
    fn current_at(&self, need: u64) -> bool {
        let g = self.group.group();
        g.created_at <= self.revision
            && g.last_match.load(Ordering::Acquire) <= self.revision
            && g.last_checked.load(Ordering::Acquire) >= need
    }

    /// Bytes it holds.
    fn size(&self, prefix: &str) -> usize {
        self.kvs.len() + self.kvs_zstd.as_ref().map_or(0, Bytes::len) + prefix.len()
    }

    /// Whether it is current at `need` or could become so once the feed has
    /// evaluated up to `need` (nothing under the prefix changed so far).
    fn may_be_current_at(&self, need: u64) -> bool {
        let g = self.group.group();
        g.created_at <= self.revision
            && g.last_match.load(Ordering::Acquire) <= self.revision
            && need >= self.revision
    }
}

#[derive(Default)]
struct Entries {
    by_prefix: HashMap<String, Arc<Entry>>,
    bytes: usize,
}

/// The node's bootstrap buffer.
pub struct SnapshotBuffer {
    options: BufferOptions,
    hub: Arc<WatchHub>,
    entries: Mutex<Entries>,
    /// One build at a time per prefix: the others wait and reuse it.
    builds: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    clock: AtomicU64,
}

impl std::fmt::Debug for SnapshotBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBuffer")
            .field("options", &self.options)
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl SnapshotBuffer {
    /// A buffer within `options`, kept current by `hub`'s feed.
    pub fn new(options: BufferOptions, hub: Arc<WatchHub>) -> Self {
        SnapshotBuffer {
            options,
            hub,
            entries: Mutex::new(Entries::default()),
            builds: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
        }
    }

    /// Whether bootstraps are buffered at all.
    pub fn enabled(&self) -> bool {
        self.options.max_bytes > 0
    }

    /// Bytes the entries hold.
    pub fn bytes(&self) -> usize {
        self.entries.lock().map(|e| e.bytes).unwrap_or(0)
    }

    fn lookup(&self, prefix: &str) -> Option<Arc<Entry>> {
        let entries = self.entries.lock().ok()?;
        let entry = entries.by_prefix.get(prefix)?.clone();
        entry.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(entry)
    }

    /// An entry current at `need`, waiting briefly for the feed when only
    /// it is behind.
    async fn current(&self, prefix: &str, need: u64) -> Option<Arc<Entry>> {
        let entry = self.lookup(prefix)?;
        let deadline = tokio::time::Instant::now() + FEED_WAIT;
        loop {
            if entry.current_at(need) {
                return Some(entry);
            }
            if !entry.may_be_current_at(need) || tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Whether the buffer holds an entry of `prefix` that nothing under
    /// the prefix has changed since it was built: a bootstrap of it is then
    /// most likely answered with those bytes, without a scan. Cheap (a map
    /// lookup): it decides whether a bootstrap needs an admission slot
    /// before any other work is done.
    pub fn holds_unchanged(&self, prefix: &str) -> bool {
        self.lookup(prefix)
            .is_some_and(|entry| entry.may_be_current_at(entry.revision))
    }

    /// The answer to a bootstrap of `prefix` at revision `need` when an
    /// entry is current at `need`; `None` otherwise. Never scans.
    pub async fn hit(&self, prefix: &str, need: u64, zstd: bool) -> Option<Response> {
        let entry = self.current(prefix, need).await?;
        self.hub.metrics().bootstrap_buffer_hits.inc();
        Some(answer(&entry, need, zstd))
    }

    /// Claims the build of `prefix`'s entry for the calling bootstrap, or
    /// `None` when another bootstrap's build of it is under way (the caller
    /// then waits for that one: [`after_build`](Self::after_build)). Taken
    /// before the read's barrier and held until the entry is in place, so a
    /// fleet arriving at once finds the build under way from its first
    /// request on.
    pub fn claim(&self, prefix: &str) -> Option<BuildClaim> {
        let lock = self.build_lock(prefix)?;
        lock.try_lock_owned().ok().map(BuildClaim)
    }

    /// Waits for the build of `prefix` under way (if any) to end, then
    /// answers like [`hit`](Self::hit). Never scans.
    pub async fn after_build(&self, prefix: &str, need: u64, zstd: bool) -> Option<Response> {
        let lock = self.build_lock(prefix)?;
        drop(lock.lock().await);
        self.hit(prefix, need, zstd).await
    }

    /// Build locks the buffer keeps (tests).
    #[cfg(test)]
    pub(crate) fn build_locks(&self) -> usize {
        self.builds.lock().map(|b| b.len()).unwrap_or(0)
    }

    fn build_lock(&self, prefix: &str) -> Option<Arc<tokio::sync::Mutex<()>>> {
        let mut builds = self.builds.lock().ok()?;
        Some(builds.entry(prefix.to_owned()).or_default().clone())
    }

    fn insert(&self, prefix: &str, entry: Arc<Entry>) {
        if let Ok(mut builds) = self.builds.lock() {
            // A build lock that nobody holds or waits for (only the map
            // refers to it) goes: the map holds the prefixes being built,
            // not every prefix this node ever built. The caller still holds
            // its own, so that one stays until its next build.
            builds.retain(|_, lock| Arc::strong_count(lock) > 1);
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        let size = entry.size(prefix);
        if let Some(old) = entries.by_prefix.insert(prefix.to_owned(), entry) {
            entries.bytes -= old.size(prefix);
        }
        entries.bytes += size;
        while entries.bytes > self.options.max_bytes {
            let oldest = entries
                .by_prefix
                .iter()
                .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                .map(|(p, _)| p.clone());
            let Some(oldest) = oldest else { break };
            if let Some(gone) = entries.by_prefix.remove(&oldest) {
                entries.bytes -= gone.size(&oldest);
            }
        }
    }

    /// The bootstrap answer for `prefix` at a revision at least `need`
    /// (the node's applied revision once the read's consistency is met)
    /// when [`hit`](Self::hit) found no current entry: the entry is built
    /// by one scan, which the concurrent bootstraps of the prefix wait for
    /// and share. `None` when the prefix is too large to buffer (the caller
    /// streams it). `zstd`: the client accepts a zstd-encoded answer.
    ///
    /// `claim`: this bootstrap's [`claim`](Self::claim) on the build, if it
    /// took one; without it the build waits for any other under way.
    pub async fn build(
        &self,
        node: &Node,
        prefix: &str,
        need: u64,
        zstd: bool,
        claim: Option<BuildClaim>,
    ) -> Result<Option<Response>, ApiError> {
        let _building = match claim {
            Some(BuildClaim(held)) => held,
            None => {
                self.build_lock(prefix)
                    .ok_or_else(|| NodeError::Internal("bootstrap buffer lock poisoned".into()))?
                    .lock_owned()
                    .await
            }
        };
        // Another bootstrap may have built it while we waited.
        if let Some(response) = self.hit(prefix, need, zstd).await {
            return Ok(Some(response));
        }
        // Join first, scan second: every change after the scan's revision
        // is then seen by the group.
        let group = self
            .hub
            .join(Filter {
                key: prefix.to_owned(),
                prefix: true,
            })
            .ok_or_else(|| ApiError::NotReady("the node is shutting down".into()))?;
        let max = self.options.max_entry_bytes.min(self.options.max_bytes);
        let scanned = node
            .read_local(|reader| {
                let prefix = prefix.to_owned();
                async move {
                    tokio::task::spawn_blocking(move || encode_whole(&reader, &prefix, max))
                        .await
                        .unwrap_or_else(|e| {
                            Err(crate::kv::ReadError::Storage(std::io::Error::other(e)))
                        })
                }
            })
            .await?;
        self.hub.metrics().bootstrap_buffer_scans.inc();
        let Some((revision, kvs)) = scanned else {
            return Ok(None);
        };
        let kvs = Bytes::from(kvs);
        let kvs_zstd = if kvs.len() >= ZSTD_MIN_BYTES {
            let plain = kvs.clone();
            tokio::task::spawn_blocking(move || zstd::bulk::compress(&plain, ZSTD_LEVEL))
                .await
                .ok()
                .and_then(Result::ok)
                .map(Bytes::from)
        } else {
            None
        };
        let entry = Arc::new(Entry {
            revision,
            kvs,
            kvs_zstd,
            group,
            used: AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed)),
        });
        self.insert(prefix, entry.clone());
        // The scan saw at least `need` (the node had applied it), so the
        // answer's revision is the scan's.
        Ok(Some(answer(&entry, revision.max(need), zstd)))
    }
}

/// A bootstrap's claim on the build of its prefix's entry
/// ([`SnapshotBuffer::claim`]); the build is under way while it is held.
pub struct BuildClaim(tokio::sync::OwnedMutexGuard<()>);

/// The range document `{"revision": at, "kvs": [...], "more": false}` from
/// an entry current at `at`, sharing its bytes; zstd-encoded when the
/// client accepts it and the entry has a compressed copy.
fn answer(entry: &Entry, at: u64, zstd: bool) -> Response {
    let head = format!("{{\"revision\":{at},\"kvs\":[");
    let tail = "],\"more\":false}";
    if let (true, Some(kvs)) = (zstd, &entry.kvs_zstd) {
        let frame = |s: &str| zstd::bulk::compress(s.as_bytes(), 1).map(Bytes::from);
        if let (Ok(head), Ok(tail)) = (frame(&head), frame(tail)) {
            let mut response = document([head, kvs.clone(), tail]);
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            return response;
        }
    }
    document([
        Bytes::from(head),
        entry.kvs.clone(),
        Bytes::from_static(tail.as_bytes()),
    ])
}

/// A `200` JSON answer made of `parts`, with its length.
fn document([head, kvs, tail]: [Bytes; 3]) -> Response {
    let length = head.len() + kvs.len() + tail.len();
    let parts = [head, kvs, tail].map(Ok::<_, std::convert::Infallible>);
    let mut response = Response::new(Body::from_stream(futures::stream::iter(parts)));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    response
}
