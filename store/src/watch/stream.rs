//! One watch stream: a pull-driven state machine that yields SSE frames as the
//! client reads them. A client that reads slowly only delays itself: when it
//! falls out of the hub's window it reads history from storage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use tokio::time::Instant;

use super::event::{
    compacted_frame, encode_revision, error_frame, keepalive_frame, progress_frame, Filter,
};
use super::hub::{GroupHandle, WatchHub, WatcherSlot, WindowRead};
use crate::metrics::GaugeGuard;

/// Revisions taken from the window per step.
const WINDOW_BATCH: usize = 64;
/// Revisions read from storage per catch-up step.
const CATCHUP_BATCH: u64 = 256;

/// What a watcher asked for, validated.
#[derive(Debug, Clone)]
pub struct WatchRequest {
    /// Keys to watch.
    pub filter: Filter,
    /// First revision to deliver.
    pub start_revision: u64,
    /// Include the previous key-value in events.
    pub prev_kv: bool,
    /// Progress bookmark interval, when asked for.
    pub progress: Option<Duration>,
}

struct Watcher {
    hub: Arc<WatchHub>,
    req: WatchRequest,
    next: u64,
    group: GroupHandle,
    pending: std::collections::VecDeque<Bytes>,
    done: bool,
    last_sent: Instant,
    next_progress: Option<Instant>,
    progress_due: bool,
    /// Held while the stream replays history from storage (admission
    /// control of catch-ups); released once it reaches the window.
    catchup: Option<CatchupGuard>,
    _slot: WatcherSlot,
}

/// Whatever a stream holds while it catches up; dropped at the window.
pub type CatchupGuard = Box<dyn Send + Sync>;

impl Watcher {
    fn push(&mut self, frame: Bytes) {
        self.pending.push_back(frame);
        self.last_sent = Instant::now();
    }

    fn finish(&mut self, frame: Bytes) {
        self.push(frame);
        self.done = true;
    }

    /// Catches up from storage: revisions `next ..= until`.
    async fn catch_up(&mut self, until: u64) {
        let hub = self.hub.clone();
        let _catching_up = GaugeGuard::new(&hub.metrics().watchers_catching_up);
        let to = until.min(self.next + CATCHUP_BATCH - 1);
        let from = self.next;
        let reader = self.hub.reader().clone();
        let read = tokio::task::spawn_blocking(move || {
            (from..=to)
                .map(|rev| Ok((rev, reader.changes(rev)?)))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await;
        let revisions = match read {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return self.finish(error_frame(&format!("reading history: {e}"))),
            Err(e) => return self.finish(error_frame(&format!("reading history: {e}"))),
        };
        self.hub
            .metrics()
            .watch_catchup_revisions
            .inc_by(revisions.len() as u64);
        for (rev, changes) in revisions {
            let Some(changes) = changes else {
                // Gone: compacted while we were reading.
                let compact = self.hub.compact_revision();
                if rev < compact {
                    return self.finish(compacted_frame(compact, self.hub.tip()));
                }
                return self.finish(error_frame(&format!(
                    "history of revision {rev} is missing"
                )));
            };
            let encoded = encode_revision(rev, &changes);
            if let Some((frame, events)) = encoded.frame_for(&self.req.filter, self.req.prev_kv) {
                self.count(events);
                self.push(frame);
            }
            self.next = rev + 1;
        }
    }

    fn count(&self, events: usize) {
        let m = self.hub.metrics();
        m.watch_messages_sent.inc();
        m.watch_events_sent.inc_by(events as u64);
    }

    async fn next_frame(&mut self) -> Option<Bytes> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if self.done || self.hub.is_closed() {
                return None;
            }
            // Registered before looking, so no wake-up between the look and
            // the wait is lost.
            let group = self.group.group().clone();
            let notified = group.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let tip = self.hub.tip();
            let compact = self.hub.compact_revision();
            if self.next < compact {
                self.finish(compacted_frame(compact, tip));
                continue;
            }
            if self.next <= tip {
                // Nothing this watcher matches in next..=last_checked: skip it
                // without reading a single revision.
                let checked = group
                    .last_checked
                    .load(std::sync::atomic::Ordering::Acquire);
                let matched = group.last_match.load(std::sync::atomic::Ordering::Acquire);
                if self.next > group.created_at && matched < self.next && checked >= self.next {
                    self.next = checked + 1;
                    continue;
                }
                match self.hub.read(self.next, WINDOW_BATCH) {
                    WindowRead::Revisions(revisions) => {
                        self.catchup = None;
                        for r in revisions {
                            if let Some((frame, events)) =
                                r.frame_for(&self.req.filter, self.req.prev_kv)
                            {
                                self.count(events);
                                self.push(frame);
                            }
                            self.next = r.revision + 1;
                        }
                    }
                    WindowRead::Behind => self.catch_up(tip).await,
                    // The tip moved before the window did; wait for the hub.
                    WindowRead::Ahead => tokio::task::yield_now().await,
                }
                continue;
            }
            // Idle: every event up to `tip` has been sent.
            self.catchup = None;
            let now = Instant::now();
            if self.progress_due {
                self.progress_due = false;
                if !self.hub.is_fresh() {
                    // Cut off from the leader: the majority may have moved
                    // on, so "nothing after `tip`" would be a lie. Silence
                    // lets the client see it is stale and move on.
                    self.hub.metrics().watch_progress_withheld.inc();
                    continue;
                }
                self.hub.metrics().watch_progress_sent.inc();
                // A watch that starts in the future has nothing before it.
                self.push(progress_frame(tip));
                continue;
            }
            let keepalive_at = self.last_sent + self.hub.options().keepalive_interval;
            if now >= keepalive_at {
                self.push(keepalive_frame());
                continue;
            }
            let wake = self
                .next_progress
                .map_or(keepalive_at, |p| p.min(keepalive_at));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(wake) => {
                    if let (Some(due), Some(every)) = (self.next_progress, self.req.progress) {
                        let now = Instant::now();
                        if now >= due {
                            // Sent once the loop has confirmed it is idle at the tip.
                            self.progress_due = true;
                            self.next_progress = Some(now + every);
                        }
                    }
                }
            }
        }
    }
}

/// The stream of SSE frames for one watcher, holding `slot` until dropped
/// (the client disconnecting drops it), and `catchup` until it reaches the
/// in-memory window.
pub fn watch_stream(
    hub: Arc<WatchHub>,
    req: WatchRequest,
    slot: WatcherSlot,
    catchup: Option<CatchupGuard>,
) -> Option<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send> {
    let now = Instant::now();
    let group = hub.join(req.filter.clone())?;
    let watcher = Watcher {
        group,
        progress_due: false,
        next: req.start_revision.max(1),
        next_progress: req.progress.map(|p| now + p),
        hub,
        req,
        pending: std::collections::VecDeque::new(),
        done: false,
        last_sent: now,
        catchup,
        _slot: slot,
    };
    Some(futures::stream::unfold(watcher, |mut w| async move {
        let frame = w.next_frame().await?;
        Some((Ok(frame), w))
    }))
}
