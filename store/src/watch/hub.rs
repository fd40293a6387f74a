//! The watch hub of one node: a bounded in-memory window of recently applied
//! revisions (encoded once), a notification of the newest one, and the count
//! of open streams.
//!
//! Memory is bounded whatever the watchers do: the window holds a fixed
//! number of revisions, and a watcher that falls out of it (slow reader, or a
//! start revision older than the window) reads history from storage instead
//! of holding anything up.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::event::{encode_revision, EncodedRevision, Filter};
use crate::kv::{Applied, KvReader};
use crate::metrics::Metrics;
use crate::stop::stopped;

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

/// The watchers of one filter. Watchers with the same filter share a group,
/// and a group is only woken by revisions that have an event it matches, so
/// thousands of watchers of other keys cost a write almost nothing.
pub struct Group {
    filter: Filter,
    /// Wakes the group's idle watchers.
    pub notify: Notify,
    members: AtomicUsize,
    /// Revisions after this one have been evaluated for the group.
    pub created_at: u64,
    /// Highest revision evaluated for the group.
    pub last_checked: AtomicU64,
    /// Highest evaluated revision with an event the group matches.
    pub last_match: AtomicU64,
}

/// A watcher's membership of its group; leaves on drop.
pub struct GroupHandle {
    hub: Arc<WatchHub>,
    group: Arc<Group>,
}

impl GroupHandle {
    /// The group.
    pub fn group(&self) -> &Arc<Group> {
        &self.group
    }
}

impl std::ops::Deref for GroupHandle {
    type Target = Group;
    fn deref(&self) -> &Group {
        &self.group
    }
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        if let Ok(mut groups) = self.hub.groups.lock() {
            if self.group.members.fetch_sub(1, Ordering::AcqRel) == 1 {
                groups.remove(&self.group.filter);
            }
        }
    }
}

/// Shared watch state of a node.
pub struct WatchHub {
    window: RwLock<Window>,
    /// Newest revision watchers may read (in the window or storage).
    tip: AtomicU64,
    compact_revision: AtomicU64,
    open: AtomicUsize,
    /// Watcher groups by filter. Also serializes group creation with the
    /// feeder's evaluation and tip publication.
    groups: std::sync::Mutex<HashMap<Filter, Arc<Group>>>,
    /// Set at shutdown: every stream ends, so nothing keeps the node's
    /// storage open.
    closed: std::sync::atomic::AtomicBool,
    reader: KvReader,
    options: WatchOptions,
    metrics: Arc<Metrics>,
    /// Whether the node can vouch, now, that its state is current (in
    /// contact with a current leader); progress bookmarks are sent only
    /// then. Unset: always (a hub without a Raft node, in tests).
    freshness: std::sync::OnceLock<Freshness>,
}

/// Tells whether the node can vouch that its applied state is current.
pub type Freshness = Box<dyn Fn() -> bool + Send + Sync>;

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
        Arc::new(WatchHub {
            window: RwLock::new(Window {
                first: applied.revision + 1,
                revisions: VecDeque::new(),
            }),
            tip: AtomicU64::new(applied.revision),
            compact_revision: AtomicU64::new(applied.compact_revision),
            open: AtomicUsize::new(0),
            groups: std::sync::Mutex::new(HashMap::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
            reader,
            options,
            metrics,
            freshness: std::sync::OnceLock::new(),
        })
    }

    /// Sets how the hub learns whether the node's state is current (once;
    /// later calls are ignored).
    pub fn set_freshness(&self, fresh: Freshness) {
        let _ = self.freshness.set(fresh);
    }

    /// Whether the node can vouch, now, that every revision up to its tip
    /// is all there is: what a progress bookmark claims.
    pub fn is_fresh(&self) -> bool {
        self.freshness.get().is_none_or(|fresh| fresh())
    }

    /// Ends every stream (at shutdown) and refuses new ones.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        // Wake every idle watcher so it notices.
        self.wake_all();
    }

    fn wake_all(&self) {
        if let Ok(groups) = self.groups.lock() {
            for g in groups.values() {
                g.notify.notify_waiters();
            }
        }
    }

    /// Joins (or creates) the group of `filter`.
    pub fn join(self: &Arc<Self>, filter: Filter) -> Option<GroupHandle> {
        let mut groups = self.groups.lock().ok()?;
        let tip = self.tip();
        let group = groups
            .entry(filter.clone())
            .or_insert_with(|| {
                Arc::new(Group {
                    filter,
                    notify: Notify::new(),
                    members: AtomicUsize::new(0),
                    created_at: tip,
                    last_checked: AtomicU64::new(tip),
                    last_match: AtomicU64::new(0),
                })
            })
            .clone();
        group.members.fetch_add(1, Ordering::AcqRel);
        Some(GroupHandle {
            hub: self.clone(),
            group,
        })
    }

    /// Whether [`WatchHub::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Options in force.
    pub fn options(&self) -> &WatchOptions {
        &self.options
    }

    /// The node's counters, shared.
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
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
        self.tip.load(Ordering::Acquire)
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
        let compact_moved = self
            .compact_revision
            .swap(applied.compact_revision, Ordering::AcqRel)
            != applied.compact_revision;
        let tip = self.tip();
        if applied.revision <= tip {
            if applied.revision < tip {
                tracing::warn!(
                    tip,
                    revision = applied.revision,
                    "applied revision went backwards"
                );
            }
            if compact_moved {
                // Compaction makes no revision, but watchers behind it must end.
                self.wake_all();
            }
            return;
        }
        let watched = self.groups.lock().map(|g| !g.is_empty()).unwrap_or(true);
        let cap = if watched {
            self.options.window_revisions as u64
        } else {
            0
        };
        // After a big jump (snapshot install) only the newest part is loaded;
        // older revisions are read from storage by whoever needs them. With
        // no watcher at all nothing is loaded or encoded: a watcher that
        // arrives later reads what it needs from storage.
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
        let complete = loaded.len() as u64 == (applied.revision + 1).saturating_sub(from);
        // Revisions not held in the window (a jump, or one that could not be
        // loaded) cannot be evaluated per group: every group must look.
        let evaluated_all = complete && from == tip + 1;
        if let Ok(mut window) = self.window.write() {
            if window.first + window.revisions.len() as u64 != from {
                window.revisions.clear();
                window.first = from;
            }
            if complete {
                window.revisions.extend(loaded.iter().cloned());
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
        // Evaluate the groups and publish the tip under the groups lock, so a
        // group created meanwhile knows exactly which revisions were evaluated.
        let Ok(groups) = self.groups.lock() else {
            return;
        };
        let mut woken = Vec::new();
        for g in groups.values() {
            let matched = if evaluated_all {
                loaded
                    .iter()
                    .rev()
                    .find(|r| r.events.iter().any(|e| g.filter.matches(&e.key)))
                    .map(|r| r.revision)
            } else {
                Some(applied.revision)
            };
            if let Some(m) = matched {
                g.last_match.fetch_max(m, Ordering::AcqRel);
            }
            g.last_checked.store(applied.revision, Ordering::Release);
            if matched.is_some() || compact_moved {
                woken.push(g.clone());
            }
        }
        self.tip.store(applied.revision, Ordering::Release);
        drop(groups);
        for g in woken {
            g.notify.notify_waiters();
        }
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
        let watched = hub.groups.lock().map(|g| !g.is_empty()).unwrap_or(true);
        let h = hub.clone();
        // Without watchers nothing is read from storage: no need for a
        // blocking thread on every applied batch.
        if !watched {
            hub.advance(current);
        } else if tokio::task::spawn_blocking(move || {
            // Test-only (the `failpoints` feature): holds the hub behind
            // the applied position, as a busy node does for a moment.
            fail::fail_point!("watch-feed");
            h.advance(current)
        })
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
