//! The node's Prometheus metrics, kept in a `prometheus-client` registry and
//! encoded in the OpenMetrics text format at `/metrics`.
//!
//! Counters and histograms are updated where things happen (the write path,
//! the state machine, the WAL flusher, the watch hub, the HTTP layer). Values
//! that are cheaper to read than to track (term, indexes, revision, database
//! size, replica lag) are gauges set from the node's state at scrape time.
//! `docs/operations.md` lists every series.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::{text, EncodeLabelSet};
pub use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The content type of the text `render` returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Labels of an HTTP request: the route template (`/v1/kv/{*key}`, never
/// the raw path, so keys do not explode the series count), the method and
/// the status code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The matched route template, or `unmatched`.
    pub route: String,
    /// The request method.
    pub method: String,
    /// The response status code.
    pub status: u16,
}

/// Labels of an active alarm: its kind (`nospace`) and the member that
/// raised it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    /// The alarm's kind.
    pub alarm: String,
    /// The member that raised it.
    pub member: u64,
}

/// Latency buckets from 100 µs to about 26 s.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 4.0, 10))
}

/// Gauges set from the node's state at scrape time.
#[derive(Default)]
struct ScrapeGauges {
    revision: Gauge,
    compact_revision: Gauge,
    term: Gauge,
    is_leader: Gauge,
    has_leader: Gauge,
    applied_index: Gauge,
    commit_index: Gauge,
    last_log_index: Gauge,
    replicas_reporting: Gauge,
    replicas_max_lag: Gauge,
    db_size: Gauge,
    db_sst: Gauge,
    db_memtable: Gauge,
    quota: Gauge,
}

/// Values of the scrape-time gauges.
#[derive(Debug, Default, Clone, Copy)]
pub struct NodeGauges {
    /// Applied revision.
    pub revision: u64,
    /// Compact revision.
    pub compact_revision: u64,
    /// Raft term.
    pub term: u64,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Whether this node knows a leader.
    pub has_leader: bool,
    /// Last applied log index.
    pub applied_index: u64,
    /// Committed log index known to this node.
    pub commit_index: u64,
    /// Last log index written on this node.
    pub last_log_index: u64,
    /// Data-plane replicas whose unexpired report this node holds.
    pub replicas_reporting: u64,
    /// The largest lag, in revisions behind this node's applied revision, of
    /// those replicas.
    pub replicas_max_lag: u64,
    /// Bytes of the key space's live SST files (see `kv::size`).
    pub db_sst_bytes: u64,
    /// Bytes of the key space's memtables.
    pub db_memtable_bytes: u64,
    /// The configured quota (0: none).
    pub quota_bytes: u64,
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The node's metrics.
pub struct Metrics {
    registry: Mutex<Registry>,
    scrape: ScrapeGauges,
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
    /// Client connections served on the data plane's lower-priority threads.
    pub data_plane_connections: Counter,
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
    /// Times this node saw the leader change (including to none).
    pub leader_changes: Counter,
    /// Proposals this node made as leader that were committed and applied.
    pub proposals_committed: Counter,
    /// Proposals this node made as leader that failed or timed out.
    pub proposals_failed: Counter,
    /// Time from proposing a write on the leader to its applied answer.
    pub commit_seconds: Histogram,
    /// Time the state machine took to apply one batch of entries.
    pub apply_seconds: Histogram,
    /// Snapshots built on this node.
    pub snapshot_builds: Counter,
    /// Bytes of the snapshot files built.
    pub snapshot_build_bytes: Counter,
    /// Snapshots installed on this node (sent by a leader).
    pub snapshot_installs: Counter,
    /// Bytes of the snapshot files installed.
    pub snapshot_install_bytes: Counter,
    /// Time one WAL sync (group commit) took.
    pub wal_sync_seconds: Histogram,
    /// WAL syncs that failed.
    pub wal_sync_failures: Counter,
    /// Writes refused because the key space was over its quota.
    pub quota_refusals: Counter,
    /// Writes refused because a member is short of disk space (a local
    /// measurement or an active `nospace` alarm).
    pub no_space_refusals: Counter,
    /// Read-index rounds run for linearizable reads (shared by the reads
    /// waiting when each started).
    pub read_index_rounds: Counter,
    /// Free bytes on the data directory's filesystem at the last check.
    pub disk_free_bytes: Gauge,
    /// The configured free-space floor (`--min-free-bytes`).
    pub disk_min_free_bytes: Gauge,
    /// 1 while the reserve file is in place.
    pub disk_reserve_present: Gauge,
    /// 1 for each active alarm (set at scrape time from the alarm table).
    pub alarm_active: Family<AlarmLabels, Gauge>,
    /// HTTP requests by route, method and status.
    pub http_seconds: Family<HttpLabels, Histogram>,
    /// Client sessions in the session table.
    pub session_clients: Gauge,
    /// Results the session table remembers, in all sessions.
    pub session_results: Gauge,
    /// Size of those results, as the table's byte bound counts it.
    pub session_result_bytes: Gauge,
    /// Retried writes answered from the session table (not applied again).
    pub session_replays: Counter,
    /// Sessions removed because their client was idle past the TTL.
    pub sessions_expired: Counter,
    /// Sessions evicted to make room at the client limit.
    pub sessions_evicted: Counter,
    /// Live keys in the state machine's in-memory key index.
    pub key_index_keys: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics, registered under the `ballast` prefix.
    pub fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("ballast")),
            scrape: ScrapeGauges::default(),
            watchers_open: Gauge::default(),
            watchers_refused: Counter::default(),
            watchers_catching_up: Gauge::default(),
            watch_messages_sent: Counter::default(),
            watch_events_sent: Counter::default(),
            watch_progress_sent: Counter::default(),
            watch_progress_withheld: Counter::default(),
            watch_catchup_revisions: Counter::default(),
            data_plane_connections: Counter::default(),
            bootstraps_running: Gauge::default(),
            bootstraps_refused: Counter::default(),
            catchups_running: Gauge::default(),
            catchups_refused: Counter::default(),
            bootstrap_buffer_hits: Counter::default(),
            bootstrap_buffer_scans: Counter::default(),
            compactions: Counter::default(),
            history_entries_compacted: Counter::default(),
            leader_changes: Counter::default(),
            proposals_committed: Counter::default(),
            proposals_failed: Counter::default(),
            commit_seconds: latency_histogram(),
            apply_seconds: latency_histogram(),
            snapshot_builds: Counter::default(),
            snapshot_build_bytes: Counter::default(),
            snapshot_installs: Counter::default(),
            snapshot_install_bytes: Counter::default(),
            wal_sync_seconds: latency_histogram(),
            wal_sync_failures: Counter::default(),
            quota_refusals: Counter::default(),
            no_space_refusals: Counter::default(),
            read_index_rounds: Counter::default(),
            disk_free_bytes: Gauge::default(),
            disk_min_free_bytes: Gauge::default(),
            disk_reserve_present: Gauge::default(),
            alarm_active: Family::default(),
            http_seconds: Family::new_with_constructor(latency_histogram),
            session_clients: Gauge::default(),
            session_results: Gauge::default(),
            session_result_bytes: Gauge::default(),
            session_replays: Counter::default(),
            sessions_expired: Counter::default(),
            sessions_evicted: Counter::default(),
            key_index_keys: Gauge::default(),
        };
        m.register();
        m
    }

    /// Registers every metric (the registry holds clones sharing their values).
    fn register(&self) {
        let Ok(mut r) = self.registry.lock() else {
            return;
        };
        let s = &self.scrape;
        let gauges: [(&str, &str, &Gauge); 14] = [
            ("revision", "Applied key-space revision.", &s.revision),
            (
                "compact_revision",
                "Oldest readable and watchable revision.",
                &s.compact_revision,
            ),
            ("raft_term", "Current Raft term.", &s.term),
            ("raft_is_leader", "1 on the leader.", &s.is_leader),
            (
                "raft_has_leader",
                "1 while this node knows a leader.",
                &s.has_leader,
            ),
            (
                "raft_applied_index",
                "Last applied Raft log index.",
                &s.applied_index,
            ),
            (
                "raft_commit_index",
                "Committed Raft log index known to this node.",
                &s.commit_index,
            ),
            (
                "raft_last_log_index",
                "Last Raft log index written on this node.",
                &s.last_log_index,
            ),
            (
                "replicas_reporting",
                "Data-plane replicas whose unexpired report this node holds.",
                &s.replicas_reporting,
            ),
            (
                "replicas_max_lag_revisions",
                "Largest lag, in revisions behind this node, of the replicas reporting to it.",
                &s.replicas_max_lag,
            ),
            (
                "db_size_bytes",
                "Size of the key space in RocksDB (SST files plus memtables); the quota is checked against it.",
                &s.db_size,
            ),
            (
                "db_sst_bytes",
                "Size of the key space's SST files.",
                &s.db_sst,
            ),
            (
                "db_memtable_bytes",
                "Size of the key space's memtables.",
                &s.db_memtable,
            ),
            (
                "quota_bytes",
                "Configured storage quota (0: none).",
                &s.quota,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        let plain_gauges: [(&str, &str, &Gauge); 7] = [
            (
                "disk_free_bytes",
                "Free bytes on the data directory's filesystem at the last check.",
                &self.disk_free_bytes,
            ),
            (
                "disk_min_free_bytes",
                "Free-space floor (--min-free-bytes): below it the node raises a nospace alarm.",
                &self.disk_min_free_bytes,
            ),
            (
                "disk_reserve_present",
                "1 while the reserve file (--reserve-bytes) is in place.",
                &self.disk_reserve_present,
            ),
            ("watchers_open", "Watch streams open.", &self.watchers_open),
            (
                "watchers_catching_up",
                "Watch streams reading history from storage.",
                &self.watchers_catching_up,
            ),
            (
                "bootstraps_running",
                "Replica bootstraps being served.",
                &self.bootstraps_running,
            ),
            (
                "catchups_running",
                "Admitted watch catch-ups not yet at the in-memory window.",
                &self.catchups_running,
            ),
        ];
        for (name, help, g) in plain_gauges {
            r.register(name, help, g.clone());
        }
        // prometheus-client appends `_total` to counter names.
        let counters: [(&str, &str, &Counter); 24] = [
            (
                "data_plane_connections",
                "Client connections served on the data plane's lower-priority threads (a replica's bootstrap, watch or reports).",
                &self.data_plane_connections,
            ),
            (
                "no_space_refusals",
                "Writes refused with no_space (a member short of disk space).",
                &self.no_space_refusals,
            ),
            (
                "read_index_rounds",
                "Read-index rounds run for linearizable reads; the reads waiting when a round starts share it.",
                &self.read_index_rounds,
            ),
            (
                "watch_progress_withheld",
                "Watch progress bookmarks withheld while out of contact with a current leader.",
                &self.watch_progress_withheld,
            ),
            (
                "bootstraps_refused",
                "Replica bootstraps refused by admission control (429).",
                &self.bootstraps_refused,
            ),
            (
                "catchups_refused",
                "Watch catch-ups refused by admission control (429).",
                &self.catchups_refused,
            ),
            (
                "bootstrap_buffer_hits",
                "Replica bootstraps answered from the snapshot buffer without a scan.",
                &self.bootstrap_buffer_hits,
            ),
            (
                "bootstrap_buffer_scans",
                "Prefix scans made to fill the snapshot buffer.",
                &self.bootstrap_buffer_scans,
            ),
            (
                "watchers_refused",
                "Watch streams refused at the per-node limit.",
                &self.watchers_refused,
            ),
            (
                "watch_messages_sent",
                "Watch change messages sent (one per revision per watcher).",
                &self.watch_messages_sent,
            ),
            (
                "watch_events_sent",
                "Watch events sent (one per key change per watcher).",
                &self.watch_events_sent,
            ),
            (
                "watch_progress_sent",
                "Watch progress bookmarks sent.",
                &self.watch_progress_sent,
            ),
            (
                "watch_catchup_revisions",
                "Revisions read from storage to catch watchers up.",
                &self.watch_catchup_revisions,
            ),
            (
                "compactions",
                "History compactions completed on this node.",
                &self.compactions,
            ),
            (
                "history_entries_compacted",
                "History entries removed by compaction.",
                &self.history_entries_compacted,
            ),
            (
                "raft_leader_changes",
                "Leader changes this node saw (including to no leader).",
                &self.leader_changes,
            ),
            (
                "raft_proposals_committed",
                "Writes this node proposed as leader that were committed and applied.",
                &self.proposals_committed,
            ),
            (
                "raft_proposals_failed",
                "Writes this node proposed as leader that failed or timed out.",
                &self.proposals_failed,
            ),
            (
                "snapshot_builds",
                "Snapshots built on this node.",
                &self.snapshot_builds,
            ),
            (
                "snapshot_build_bytes",
                "Bytes of the snapshot files built on this node.",
                &self.snapshot_build_bytes,
            ),
            (
                "snapshot_installs",
                "Snapshots installed on this node.",
                &self.snapshot_installs,
            ),
            (
                "snapshot_install_bytes",
                "Bytes of the snapshot files installed on this node.",
                &self.snapshot_install_bytes,
            ),
            (
                "wal_sync_failures",
                "WAL syncs that failed.",
                &self.wal_sync_failures,
            ),
            (
                "quota_refusals",
                "Writes refused because the key space was over its quota.",
                &self.quota_refusals,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
        let histograms: [(&str, &str, &Histogram); 3] = [
            (
                "raft_commit_duration_seconds",
                "Time from proposing a write on the leader to its applied answer.",
                &self.commit_seconds,
            ),
            (
                "raft_apply_duration_seconds",
                "Time the state machine took to apply one batch of entries.",
                &self.apply_seconds,
            ),
            (
                "wal_sync_duration_seconds",
                "Time one WAL sync (a group commit of log appends) took.",
                &self.wal_sync_seconds,
            ),
        ];
        for (name, help, h) in histograms {
            r.register(name, help, h.clone());
        }
        r.register(
            "alarm_active",
            "1 for each active alarm, by kind and the member that raised it.",
            self.alarm_active.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP requests by route template, method and status: time to the response head.",
            self.http_seconds.clone(),
        );
        self.register_state_machine(&mut r);
    }

    /// Registers the session table's and the key index's metrics.
    fn register_state_machine(&self, r: &mut Registry) {
        let gauges: [(&str, &str, &Gauge); 4] = [
            (
                "session_clients",
                "Client sessions in the session table.",
                &self.session_clients,
            ),
            (
                "session_results",
                "Write results the session table remembers for retries.",
                &self.session_results,
            ),
            (
                "session_result_bytes",
                "Size of the remembered results, as the table's byte bound counts it.",
                &self.session_result_bytes,
            ),
            (
                "key_index_keys",
                "Live keys in the in-memory key index.",
                &self.key_index_keys,
            ),
        ];
        for (name, help, g) in gauges {
            r.register(name, help, g.clone());
        }
        let counters: [(&str, &str, &Counter); 3] = [
            (
                "session_replays",
                "Retried writes answered from the session table instead of applied again.",
                &self.session_replays,
            ),
            (
                "sessions_expired",
                "Sessions removed because their client was idle past the TTL.",
                &self.sessions_expired,
            ),
            (
                "sessions_evicted",
                "Sessions evicted to make room at the client limit.",
                &self.sessions_evicted,
            ),
        ];
        for (name, help, c) in counters {
            r.register(name, help, c.clone());
        }
    }

    /// Records the outcome of one proposal made as leader and the time to
    /// its answer.
    pub fn count_proposal(&self, committed: bool, elapsed: Duration) {
        if committed {
            self.proposals_committed.inc();
            self.commit_seconds.observe(elapsed.as_secs_f64());
        } else {
            self.proposals_failed.inc();
        }
    }

    /// Sets `alarm_active` to exactly the alarms given as (kind, member).
    pub fn set_alarms<'a>(&self, active: impl IntoIterator<Item = (&'a str, u64)>) {
        self.alarm_active.clear();
        for (alarm, member) in active {
            self.alarm_active
                .get_or_create(&AlarmLabels {
                    alarm: alarm.to_string(),
                    member,
                })
                .set(1);
        }
    }

    /// Records one HTTP request.
    pub fn observe_http(&self, labels: HttpLabels, elapsed: Duration) {
        self.http_seconds
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the scrape-time gauges and encodes everything in the OpenMetrics
    /// text format.
    pub fn render(&self, node: &NodeGauges) -> String {
        let s = &self.scrape;
        s.revision.set(gauge_value(node.revision));
        s.compact_revision.set(gauge_value(node.compact_revision));
        s.term.set(gauge_value(node.term));
        s.is_leader.set(i64::from(node.is_leader));
        s.has_leader.set(i64::from(node.has_leader));
        s.applied_index.set(gauge_value(node.applied_index));
        s.commit_index.set(gauge_value(node.commit_index));
        s.last_log_index.set(gauge_value(node.last_log_index));
        s.replicas_reporting
            .set(gauge_value(node.replicas_reporting));
        s.replicas_max_lag.set(gauge_value(node.replicas_max_lag));
        s.db_size.set(gauge_value(
            node.db_sst_bytes.saturating_add(node.db_memtable_bytes),
        ));
        s.db_sst.set(gauge_value(node.db_sst_bytes));
        s.db_memtable.set(gauge_value(node.db_memtable_bytes));
        s.quota.set(gauge_value(node.quota_bytes));
        let mut out = String::with_capacity(8192);
        match self.registry.lock() {
            Ok(r) => {
                if let Err(e) = text::encode(&mut out, &r) {
                    tracing::error!(error = %e, "encoding metrics failed");
                }
            }
            Err(_) => tracing::error!("metrics registry lock poisoned"),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_in_openmetrics_text() {
        let m = Metrics::new();
        m.proposals_committed.inc();
        m.commit_seconds.observe(0.002);
        m.observe_http(
            HttpLabels {
                route: "/v1/kv/{*key}".into(),
                method: "PUT".into(),
                status: 200,
            },
            Duration::from_millis(3),
        );
        let text = m.render(&NodeGauges {
            term: 4,
            ..NodeGauges::default()
        });
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("\nballast_raft_term 4\n"), "{text}");
        assert!(
            text.contains("\nballast_raft_proposals_committed_total 1\n"),
            "{text}"
        );
        assert!(text.contains("ballast_raft_commit_duration_seconds_count 1\n"));
        assert!(text.contains(
            "ballast_http_request_duration_seconds_count{route=\"/v1/kv/{*key}\",method=\"PUT\",status=\"200\"} 1\n"
        ), "{text}");
    }

    #[test]
    fn active_alarms_are_one_series_each_and_disarmed_ones_disappear() {
        let m = Metrics::new();
        m.set_alarms([("nospace", 3), ("nospace", 1)]);
        let text = m.render(&NodeGauges::default());
        assert!(
            text.contains("ballast_alarm_active{alarm=\"nospace\",member=\"3\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("ballast_alarm_active{alarm=\"nospace\",member=\"1\"} 1\n"),
            "{text}"
        );
        m.set_alarms([("nospace", 1)]);
        let text = m.render(&NodeGauges::default());
        assert!(!text.contains("member=\"3\""), "{text}");
        assert!(text.contains("member=\"1\""), "{text}");
        m.set_alarms([]);
        let text = m.render(&NodeGauges::default());
        assert!(!text.contains("ballast_alarm_active{"), "{text}");
    }

    /// Every series `/metrics` can serve is listed in the metrics table of
    /// `docs/operations.md`, which promises the complete list.
    #[test]
    fn the_operations_guide_lists_every_series() {
        let doc = include_str!("../../docs/operations.md");
        let m = Metrics::new();
        // Families with labels only show once they have a series.
        m.set_alarms([("nospace", 1)]);
        let text = m.render(&NodeGauges::default());
        let mut names: Vec<String> = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# TYPE ") else {
                continue;
            };
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            // OpenMetrics names a counter's family without `_total`; its
            // series (and the docs) carry it.
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_string()
            };
            names.push(name);
        }
        assert!(names.len() > 40, "too few families found: {names:?}");
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| !doc.contains(&format!("`{n}`")) && !doc.contains(&format!("`{n}{{")))
            .collect();
        assert!(
            missing.is_empty(),
            "series missing from the metrics table of docs/operations.md: {missing:?}"
        );
    }
}
