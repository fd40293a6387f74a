//! Process counters, rendered in the Prometheus text format at `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge held up for as long as this guard lives.
pub struct GaugeGuard<'a>(&'a Gauge);

impl<'a> GaugeGuard<'a> {
    /// Increments `gauge` until the guard is dropped.
    pub fn new(gauge: &'a Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The node's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Watch streams open now.
    pub watchers_open: Gauge,
    /// Watch streams refused because the node was at its limit.
    pub watchers_refused: Counter,
    /// Watch streams reading history from storage because they fell behind
    /// the in-memory window (or started before it).
    pub watchers_catching_up: Gauge,
    /// Change messages (one per revision per watcher) sent.
    pub watch_messages_sent: Counter,
    /// Events (one per key change per watcher) sent.
    pub watch_events_sent: Counter,
    /// Progress bookmarks sent.
    pub watch_progress_sent: Counter,
    /// Progress bookmarks not sent because the node was out of contact
    /// with a current leader (it cannot vouch that its state is current).
    pub watch_progress_withheld: Counter,
    /// Revisions read from storage to catch watchers up.
    pub watch_catchup_revisions: Counter,
    /// Replica bootstraps being served now.
    pub bootstraps_running: Gauge,
    /// Replica bootstraps refused by admission control.
    pub bootstraps_refused: Counter,
    /// Watch catch-ups admitted and not yet at the in-memory window.
    pub catchups_running: Gauge,
    /// Watch catch-ups refused by admission control.
    pub catchups_refused: Counter,
    /// Replica bootstraps answered from an entry of the snapshot buffer.
    pub bootstrap_buffer_hits: Counter,
    /// Prefix scans made to fill the snapshot buffer.
    pub bootstrap_buffer_scans: Counter,
    /// Physical compactions completed.
    pub compactions: Counter,
    /// History entries removed by compaction.
    pub history_entries_compacted: Counter,
}

/// Extra gauges of the node, read at render time.
pub struct NodeGauges {
    /// Applied revision.
    pub revision: u64,
    /// Compact revision.
    pub compact_revision: u64,
    /// Raft term.
    pub term: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Last applied log index.
    pub applied_index: u64,
}

impl Metrics {
    /// Renders everything in the Prometheus text exposition format.
    pub fn render(&self, node: &NodeGauges) -> String {
        let mut out = String::with_capacity(2048);
        let mut line = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "ballast_revision",
            "gauge",
            "Applied key-space revision.",
            node.revision,
        );
        line(
            "ballast_compact_revision",
            "gauge",
            "Oldest readable and watchable revision.",
            node.compact_revision,
        );
        line(
            "ballast_raft_term",
            "gauge",
            "Current Raft term.",
            node.term,
        );
        line(
            "ballast_raft_is_leader",
            "gauge",
            "1 on the leader.",
            u64::from(node.is_leader),
        );
        line(
            "ballast_raft_applied_index",
            "gauge",
            "Last applied Raft log index.",
            node.applied_index,
        );
        line(
            "ballast_watchers_open",
            "gauge",
            "Watch streams open.",
            self.watchers_open.get(),
        );
        line(
            "ballast_watchers_refused_total",
            "counter",
            "Watch streams refused at the per-node limit.",
            self.watchers_refused.get(),
        );
        line(
            "ballast_watchers_catching_up",
            "gauge",
            "Watch streams reading history from storage.",
            self.watchers_catching_up.get(),
        );
        line(
            "ballast_watch_messages_sent_total",
            "counter",
            "Watch change messages sent (one per revision per watcher).",
            self.watch_messages_sent.get(),
        );
        line(
            "ballast_watch_events_sent_total",
            "counter",
            "Watch events sent (one per key change per watcher).",
            self.watch_events_sent.get(),
        );
        line(
            "ballast_watch_progress_sent_total",
            "counter",
            "Watch progress bookmarks sent.",
            self.watch_progress_sent.get(),
        );
        line(
            "ballast_watch_progress_withheld_total",
            "counter",
            "Watch progress bookmarks withheld while out of contact with a current leader.",
            self.watch_progress_withheld.get(),
        );
        line(
            "ballast_watch_catchup_revisions_total",
            "counter",
            "Revisions read from storage to catch watchers up.",
            self.watch_catchup_revisions.get(),
        );
        line(
            "ballast_bootstraps_running",
            "gauge",
            "Replica bootstraps being served.",
            self.bootstraps_running.get(),
        );
        line(
            "ballast_bootstraps_refused_total",
            "counter",
            "Replica bootstraps refused by admission control (429).",
            self.bootstraps_refused.get(),
        );
        line(
            "ballast_catchups_running",
            "gauge",
            "Admitted watch catch-ups not yet at the in-memory window.",
            self.catchups_running.get(),
        );
        line(
            "ballast_catchups_refused_total",
            "counter",
            "Watch catch-ups refused by admission control (429).",
            self.catchups_refused.get(),
        );
        line(
            "ballast_bootstrap_buffer_hits_total",
            "counter",
            "Replica bootstraps answered from the snapshot buffer without a scan.",
            self.bootstrap_buffer_hits.get(),
        );
        line(
            "ballast_bootstrap_buffer_scans_total",
            "counter",
            "Prefix scans made to fill the snapshot buffer.",
            self.bootstrap_buffer_scans.get(),
        );
        line(
            "ballast_compactions_total",
            "counter",
            "History compactions completed on this node.",
            self.compactions.get(),
        );
        line(
            "ballast_history_entries_compacted_total",
            "counter",
            "History entries removed by compaction.",
            self.history_entries_compacted.get(),
        );
        out
    }
}
