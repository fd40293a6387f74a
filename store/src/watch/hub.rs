//! The watch hub of one node: a bounded in-memory window of recently applied
//! revisions (encoded once), a notification of the newest one, and the count
//! of open streams.
//!
//! Memory is bounded whatever the watchers do: the window holds a fixed
//! number of revisions, and a watcher that falls out of it (slow reader, or a
//! start revision older than the window) reads history from storage instead
//! of holding anything up.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::watch;

use super::event::{encode_revision, EncodedRevision};
use crate::kv::KvReader;
use crate::metrics::Metrics;
use crate::raft::peer::stopped;
use crate::storage::Applied;

/// Limits and intervals of the watch API.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// Most watch streams open at once on this node.
    pub max_watchers: usize,
    /// Revisions kept encoded in memory.
    pub window_revisions: usize,
    /// Shortest progress interval a client may ask for.
    pub min_progress_interval: Duration,
    /// Longest progress interval a client may ask for.
    pub max_progress_interval: Duration,
    /// Progress interval when the client asks for progress without one.
    pub default_progress_interval: Duration,
    /// An SSE comment is sent on a stream idle this long.
    pub keepalive_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        WatchOptions {
            max_watchers: 20_000,
            window_revisions: 4096,
            min_progress_interval: Duration::from_millis(100),
            max_progress_interval: Duration::from_secs(600),
            default_progress_interval: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
        }
    }
}

/// What the window holds for a revision.
pub enum WindowRead {
    /// Encoded revisions from the one asked for, in order (possibly fewer than asked).
    Revisions(Vec<Arc<EncodedRevision>>),
    /// The revision is older than the window: read storage.
    Behind,
    /// Not applied yet.
    Ahead,
}

#[derive(Default)]
struct Window {
    /// Revision of `revisions[0]`.
    first: u64,
    revisions: VecDeque<Arc<EncodedRevision>>,
}

/// Shared watch state of a node.
pub struct WatchHub {
    window: RwLock<Window>,
    /// Newest revision watchers may read (in the window or storage).
    tip_tx: watch::Sender<u64>,
    compact_revision: AtomicU64,
    open: AtomicUsize,
    /// Set at shutdown: every stream ends, so nothing keeps the node's
    /// storage open.
    closed: std::sync::atomic::AtomicBool,
    reader: KvReader,
    options: WatchOptions,
    metrics: Arc<Metrics>,
}

/// A slot among the node's watch streams; released on drop.
pub struct WatcherSlot {
    hub: Arc<WatchHub>,
}

impl Drop for WatcherSlot {
    fn drop(&mut self) {
        self.hub.open.fetch_sub(1, Ordering::AcqRel);
        self.hub.metrics.watchers_open.dec();
    }
}

impl WatchHub {
    /// A hub starting at the node's applied position.
    pub fn new(
        reader: KvReader,
        applied: Applied,
        options: WatchOptions,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (tip_tx, _) = watch::channel(applied.revision);
        Arc::new(WatchHub {
            window: RwLock::new(Window {
                first: applied.revision + 1,
                revisions: VecDeque::new(),
            }),
            tip_tx,
            compact_revision: AtomicU64::new(applied.compact_revision),
            open: AtomicUsize::new(0),
            closed: std::sync::atomic::AtomicBool::new(false),
            reader,
            options,
            metrics,
        })
    }

    /// Ends every stream (at shutdown) and refuses new ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wake every idle watcher so it notices.
        self.tip_tx.send_modify(|_| {});
    }

    /// Whether [`WatchHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Options in force.
    pub fn options(&self) -> &WatchOptions {
        &self.options
    }

    /// The key-space reader, for catching up from storage.
    pub fn reader(&self) -> &KvReader {
        &self.reader
    }

    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The newest revision available to watchers.
    pub fn tip(&self) -> u64 {
        *self.tip_tx.borrow()
    }

    /// A receiver notified whenever the tip moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.tip_tx.subscribe()
    }

    /// The compact revision as last applied.
    pub fn compact_revision(&self) -> u64 {
        self.compact_revision.load(Ordering::Acquire)
    }

    /// Takes a stream slot, or `None` at the limit.
    pub fn try_open(self: &Arc<Self>) -> Option<WatcherSlot> {
        if self.is_closed() {
            return None;
        }
        let max = self.options.max_watchers;
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(_) => {
                self.metrics.watchers_open.inc();
                Some(WatcherSlot { hub: self.clone() })
            }
            Err(_) => {
                self.metrics.watchers_refused.inc();
                None
            }
        }
    }

    /// Up to `max` encoded revisions starting at `revision`.
    pub fn read(&self, revision: u64, max: usize) -> WindowRead {
        let Ok(window) = self.window.read() else {
            return WindowRead::Behind;
        };
        if revision < window.first {
            return WindowRead::Behind;
        }
        let offset = (revision - window.first) as usize;
        if offset >= window.revisions.len() {
            return WindowRead::Ahead;
        }
        WindowRead::Revisions(
            window
                .revisions
                .iter()
                .skip(offset)
                .take(max)
                .cloned()
                .collect(),
        )
    }

    /// Loads newly applied revisions into the window and moves the tip.
    fn advance(&self, applied: Applied) {
        self.compact_revision
            .store(applied.compact_revision, Ordering::Release);
        let tip = self.tip();
        if applied.revision <= tip {
            if applied.revision < tip {
                // A snapshot moved the node backwards? Never expected; restart the window.
                tracing::warn!(
                    tip,
                    revision = applied.revision,
                    "applied revision went backwards"
                );
            }
            return;
        }
        let cap = self.options.window_revisions as u64;
        // After a big jump (snapshot install) only the newest part is loaded;
        // older revisions are read from storage by whoever needs them.
        let from = (tip + 1).max(applied.revision.saturating_sub(cap) + 1);
        let mut loaded = Vec::new();
        for rev in from..=applied.revision {
            match self.reader.changes(rev) {
                Ok(Some(changes)) => loaded.push(Arc::new(encode_revision(rev, &changes))),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(revision = rev, error = %e, "cannot read changes for watchers")
                }
            }
        }
        let complete = loaded.len() as u64 == applied.revision - from + 1;
        if let Ok(mut window) = self.window.write() {
            if window.first + window.revisions.len() as u64 != from {
                window.revisions.clear();
                window.first = from;
            }
            if complete {
                window.revisions.extend(loaded);
            } else {
                // A revision could not be loaded: serve everything up to the tip
                // from storage, which reports the problem to the watchers.
                window.revisions.clear();
                window.first = applied.revision + 1;
            }
            while window.revisions.len() > self.options.window_revisions {
                window.revisions.pop_front();
                window.first += 1;
            }
        }
        self.tip_tx.send_replace(applied.revision);
    }
}

/// Feeds the hub from the state machine's applied position until `stop`.
pub async fn run_feeder(
    hub: Arc<WatchHub>,
    mut applied: watch::Receiver<Applied>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let current = *applied.borrow_and_update();
        let h = hub.clone();
        if tokio::task::spawn_blocking(move || h.advance(current))
            .await
            .is_err()
        {
            return;
        }
        tokio::select! {
            _ = stopped(&mut stop) => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}
