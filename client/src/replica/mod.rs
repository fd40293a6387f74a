//! [`Replica`]: the data plane's local, read-only copy of one prefix.
//!
//! # Layout
//!
//! - `mod.rs`: [`Replica`] (the read API), [`ReplicaStatus`], [`ReplicaUpdate`].
//! - `builder.rs`: [`ReplicaBuilder`] and start-up (cache load, first bootstrap).
//! - `snapshot.rs`: [`ReplicaSnapshot`], the immutable map swapped per batch.
//! - `sync.rs`: the one writer: bootstrap from a prefix read, then watch and
//!   apply, reconnecting and re-bootstrapping, never moving backwards.
//! - `cache.rs`: the on-disk last-known-good copy (atomic, versioned postcard).
//! - `tasks.rs`: the background persister and the rollout reporter.
//!
//! # How reads stay cheap
//!
//! The state is an `Arc<ReplicaSnapshot>` behind an [`arc_swap::ArcSwap`]. The
//! sync task builds the next snapshot off to the side and swaps it in once
//! per batch of applied revisions; a read loads the current pointer (no lock,
//! no allocation) and looks the key up in an immutable map.

mod builder;
mod cache;
mod snapshot;
pub(crate) mod sync;
mod tasks;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use futures::Stream;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

pub use builder::ReplicaBuilder;
pub use snapshot::ReplicaSnapshot;

use crate::types::KeyValue;
use crate::watch::Event;

/// A local, read-only, eventually consistent copy of every key under one
/// prefix, for data-plane processes. See the [crate docs](crate) and
/// `docs/data-plane.md`.
///
/// - Reads ([`get`](Replica::get), [`range`](Replica::range),
///   [`snapshot`](Replica::snapshot)) are answered from memory: no network
///   call, no lock held by the writer, no allocation for `get`.
/// - The copy **may be stale**: [`status`](Replica::status) says how stale.
///   When the cluster is unreachable the replica keeps serving its last-known
///   state, and after a restart it serves its on-disk copy at once.
/// - Its [`revision`](Replica::revision) never goes backwards, not across
///   failovers to lagging nodes, re-bootstraps, or restarts with a cache.
///
/// Dropping the replica stops its background tasks; [`shutdown`](Replica::shutdown)
/// also writes the cache one last time.
#[derive(Debug)]
pub struct Replica {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    cache_dir: Option<PathBuf>,
    /// The connection settings and endpoints its tasks share.
    transport: Arc<crate::transport::Transport>,
}

/// What the sync task publishes and everyone else reads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) id: String,
    pub(crate) prefix: String,
    /// The read path: swapped whole, once per applied batch.
    pub(crate) state: ArcSwap<ReplicaSnapshot>,
    /// The applied revision, for waiters, the persister and the reporter.
    pub(crate) revision_tx: watch::Sender<u64>,
    pub(crate) health: Mutex<Health>,
    pub(crate) updates: broadcast::Sender<ReplicaUpdate>,
    /// Serializes cache writes (they share one temporary file name).
    pub(crate) persist_lock: Mutex<()>,
    /// A stream counts as connected only while its node confirmed the
    /// state within this long (two progress intervals): a node cut off from
    /// the leader stops confirming, and must not look like a good source.
    pub(crate) contact_window: Duration,
}

/// Connection facts, written by the sync task, read by [`Replica::status`].
#[derive(Debug, Default)]
pub(crate) struct Health {
    pub(crate) endpoint: Option<String>,
    pub(crate) last_contact: Option<Instant>,
    pub(crate) serving_from_disk: bool,
    pub(crate) last_error: Option<String>,
}

impl Shared {
    /// Publishes a new state. Only the sync task (and start-up) call this.
    pub(crate) fn install(&self, snapshot: ReplicaSnapshot) {
        let revision = snapshot.revision;
        self.state.store(Arc::new(snapshot));
        self.revision_tx.send_replace(revision);
    }

    pub(crate) fn revision(&self) -> u64 {
        self.state.load().revision
    }

    pub(crate) fn with_health(&self, f: impl FnOnce(&mut Health)) {
        // A poisoned lock only means a panic elsewhere; the data is plain facts.
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut h);
    }
}

/// How fresh a replica is, from [`Replica::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// The revision the served state reflects.
    pub revision: u64,
    /// True while a watch stream to a node is open **and** that node
    /// confirmed the state current (a change or a progress bookmark) within
    /// the last two progress intervals. A node cut off from the cluster's
    /// leader stops sending bookmarks, so a replica following it reports
    /// `false` (and soon moves to another node) instead of fresh data that
    /// may be stale.
    pub connected: bool,
    /// The node the stream is open to.
    pub endpoint: Option<String>,
    /// Time since the cluster last confirmed this state was current (a change
    /// or a progress bookmark at or past our revision, or a bootstrap read).
    /// `None`: never, since this process started (serving from disk).
    pub since_contact: Option<Duration>,
    /// True while the state comes from the on-disk cache and no node has
    /// confirmed or updated it yet.
    pub serving_from_disk: bool,
    /// The last connection or bootstrap error, if any since the last contact.
    pub last_error: Option<String>,
}

impl ReplicaStatus {
    /// True when the state was not confirmed current within `max_age`
    /// (serving from disk counts as stale).
    pub fn is_stale(&self, max_age: Duration) -> bool {
        self.serving_from_disk || self.since_contact.is_none_or(|d| d > max_age)
    }
}

/// A change applied by the replica, from [`Replica::updates`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicaUpdate {
    /// One revision's changes under the prefix, applied.
    Change {
        /// The revision, now [`Replica::revision`] (or older, if more followed).
        revision: u64,
        /// The changes.
        events: Vec<Event>,
    },
    /// The whole state was replaced by a fresh read at `revision` (after the
    /// watch history was compacted); re-read what you derived from it.
    Reset {
        /// The revision of the new state.
        revision: u64,
    },
    /// This subscriber fell behind and missed `missed` updates; re-read the
    /// state with [`Replica::snapshot`].
    Lagged {
        /// How many updates were dropped.
        missed: u64,
    },
}

/// [`Replica::wait_for_revision`] ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("replica at revision {current}, wanted {wanted}")]
pub struct WaitTimeout {
    /// The revision reached when the time ran out.
    pub current: u64,
    /// The revision waited for.
    pub wanted: u64,
}

impl Replica {
    /// A builder; `endpoints` as for [`Client::new`](crate::Client::new).
    pub fn builder(endpoints: Vec<String>) -> ReplicaBuilder {
        ReplicaBuilder::new(endpoints)
    }

    /// One key from memory, possibly stale. Allocation-free: the value is
    /// shared with the replica's state.
    pub fn get(&self, key: &str) -> Option<Arc<KeyValue>> {
        self.shared.state.load().get(key).cloned()
    }

    /// Every key starting with `prefix` (within the replicated prefix), from
    /// memory, possibly stale, in key order, all from one revision.
    pub fn range(&self, prefix: &str) -> Vec<Arc<KeyValue>> {
        self.shared.state.load().range(prefix).cloned().collect()
    }

    /// The endpoints it reads from: those it was built with, or the
    /// cluster's voters since its last endpoint sync
    /// ([`ReplicaBuilder::auto_sync_interval`]).
    pub fn endpoints(&self) -> Vec<String> {
        self.transport.endpoints.urls()
    }

    /// The applied revision. Never decreases.
    pub fn revision(&self) -> u64 {
        self.shared.revision()
    }

    /// The whole current state at one revision, to read several keys
    /// consistently.
    pub fn snapshot(&self) -> Arc<ReplicaSnapshot> {
        self.shared.state.load_full()
    }

    /// The replica's id (as reported to the cluster).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The replicated prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    /// How fresh the state is and whether the cluster is reachable.
    pub fn status(&self) -> ReplicaStatus {
        let revision = self.revision();
        let h = self.shared.health.lock().unwrap_or_else(|p| p.into_inner());
        ReplicaStatus {
            revision,
            connected: h.endpoint.is_some()
                && h.last_contact
                    .is_some_and(|t| t.elapsed() <= self.shared.contact_window),
            endpoint: h.endpoint.clone(),
            since_contact: h.last_contact.map(|t| t.elapsed()),
            serving_from_disk: h.serving_from_disk,
            last_error: h.last_error.clone(),
        }
    }

    /// Waits until the replica applied `revision` (for example the revision a
    /// control-plane write returned), at most `timeout`. Returns the applied
    /// revision.
    pub async fn wait_for_revision(
        &self,
        revision: u64,
        timeout: Duration,
    ) -> Result<u64, WaitTimeout> {
        let mut rx = self.shared.revision_tx.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
        match waited {
            Ok(Ok(r)) => Ok(*r),
            _ => Err(WaitTimeout {
                current: self.revision(),
                wanted: revision,
            }),
        }
    }

    /// The changes the replica applies from now on, in revision order. A slow
    /// subscriber gets [`ReplicaUpdate::Lagged`] instead of blocking the
    /// replica.
    pub fn updates(&self) -> impl Stream<Item = ReplicaUpdate> + Send + Unpin + 'static {
        let rx = self.shared.updates.subscribe();
        Box::pin(futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(u) => Some((u, rx)),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    Some((ReplicaUpdate::Lagged { missed }, rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        }))
    }

    /// Stops the background tasks and writes the cache one last time (when a
    /// cache directory is set).
    pub async fn shutdown(mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
        if let Some(dir) = self.cache_dir.clone() {
            let shared = self.shared.clone();
            let _ = tokio::task::spawn_blocking(move || tasks::persist_now(&shared, &dir)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
