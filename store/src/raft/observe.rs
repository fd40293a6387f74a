//! What a node tells about itself beyond the request paths: the gauges
//! `/metrics` reads at scrape time, the quorum and data-plane view of
//! `/v1/status`, the leader-change counter, and the storage quota check the
//! leader runs before it proposes a write.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;
use serde::Serialize;

use super::node::{Node, NodeError};
use super::types::Raft;
use crate::kv::size::DbSize;
use crate::kv::{Command, SessionOp, TxnOp};
use crate::metrics::{Metrics, NodeGauges};
use crate::replicas::ReplicaEntry;

/// Counts leader changes as this node sees them, for as long as Raft runs
/// (the task holds only Raft's metrics receiver, never Raft itself).
///
/// It watches the server metrics (vote, state, leader, membership), which
/// change only when those do. The full metrics change with every heartbeat
/// answer, so a task on them woke several times per linearizable read and
/// cost reads at high concurrency measurably.
pub(crate) fn count_leader_changes(raft: &Raft, metrics: Arc<Metrics>) {
    let mut rx = raft.server_metrics();
    tokio::spawn(async move {
        let mut leader = rx.borrow_watched().current_leader;
        while rx.changed().await.is_ok() {
            let now = rx.borrow_watched().current_leader;
            if now != leader {
                leader = now;
                metrics.leader_changes.inc();
            }
        }
    });
}

/// Whether `command` can make the key space bigger. Deletes, compactions,
/// session registrations and auth changes cannot (each writes a small row),
/// so they pass a full quota: they are how an operator gets back under it.
pub(crate) fn may_add_data(command: &Command) -> bool {
    match command {
        Command::Put { .. } => true,
        Command::Delete { .. } | Command::Compact { .. } => false,
        Command::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .any(|op| matches!(op, TxnOp::Put { .. })),
        Command::Session(s) => match &s.op {
            SessionOp::Register => false,
            SessionOp::Write { command, .. } => may_add_data(command),
        },
        // Tokens and roles are small rows outside the key space, and an
        // operator must still be able to manage (and revoke) them when full.
        Command::Auth(_) => false,
        // Raising or disarming an alarm is how a full disk is handled.
        Command::Alarm(_) => false,
    }
}

/// The quorum as this node sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct QuorumStatus {
    /// Voters in the membership.
    pub voters: usize,
    /// Voters needed for a majority.
    pub needed: usize,
    /// On the leader: voters that answered it within the election timeout
    /// (itself included). Absent on other nodes, which cannot know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_voters: Option<usize>,
    /// On the leader: whether `healthy_voters` reaches `needed`. Elsewhere:
    /// whether this node knows a leader (one needs a quorum to be elected).
    pub has_quorum: bool,
}

/// A replica's lag behind the node's applied revision.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ReplicaLag {
    /// Replica id.
    pub id: String,
    /// The prefix it replicates.
    pub prefix: String,
    /// The revision it applied.
    pub revision: u64,
    /// Revisions behind the node's applied revision.
    pub lag: u64,
    /// Whether it serves from its on-disk copy with no cluster connection.
    pub serving_from_disk: bool,
    /// Milliseconds since its report.
    pub age_ms: u64,
}

/// The data plane as the cluster sees it: every reporting replica (merged
/// over the members that answered) and how far the latest revision has
/// rolled out.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DataPlaneStatus {
    /// Replicas reporting.
    pub replicas_reporting: usize,
    /// The largest lag among them, in revisions.
    pub max_lag: u64,
    /// The revision whose rollout is summarized (this node's applied one).
    pub latest_revision: u64,
    /// Replicas at or past `latest_revision`.
    pub converged: usize,
    /// `converged / replicas_reporting` (1 when none report).
    pub convergence: f64,
    /// Members whose reports are missing (they did not answer in time).
    pub nodes_unreachable: Vec<u64>,
    /// Every replica, furthest behind first.
    pub replicas: Vec<ReplicaLag>,
}

impl DataPlaneStatus {
    /// Summarizes `replicas` against `latest`.
    pub fn new(latest: u64, replicas: &[ReplicaEntry], nodes_unreachable: Vec<u64>) -> Self {
        let mut lags: Vec<ReplicaLag> = replicas
            .iter()
            .map(|r| ReplicaLag {
                id: r.report.id.clone(),
                prefix: r.report.prefix.clone(),
                revision: r.report.revision,
                lag: latest.saturating_sub(r.report.revision),
                serving_from_disk: r.report.serving_from_disk,
                age_ms: r.age_ms,
            })
            .collect();
        lags.sort_by(|a, b| b.lag.cmp(&a.lag).then(a.id.cmp(&b.id)));
        let converged = lags.iter().filter(|r| r.lag == 0).count();
        DataPlaneStatus {
            replicas_reporting: lags.len(),
            max_lag: lags.first().map_or(0, |r| r.lag),
            latest_revision: latest,
            converged,
            convergence: if lags.is_empty() {
                1.0
            } else {
                converged as f64 / lags.len() as f64
            },
            nodes_unreachable,
            replicas: lags,
        }
    }
}

fn majority(n: usize) -> usize {
    n / 2 + 1
}

impl Node {
    /// Refuses a write that could add data while the key space is over the
    /// quota. Checked by the leader before it proposes, so a refused write
    /// never enters the log.
    pub(crate) fn check_quota(&self, command: &Command) -> Result<(), NodeError> {
        let quota = self.options().quota_bytes;
        if quota == 0 || !may_add_data(command) {
            return Ok(());
        }
        let size = self.reader().size().total();
        if size < quota {
            return Ok(());
        }
        self.metrics().quota_refusals.inc();
        Err(NodeError::QuotaExceeded(format!(
            "the key space holds {size} bytes on disk, at or over the quota of {quota} bytes; \
             delete keys and compact history to free space (reads, watches, deletes and \
             compaction still work)"
        )))
    }

    /// The key space's size on disk.
    pub fn db_size(&self) -> DbSize {
        self.reader().size()
    }

    /// The quorum as this node sees it.
    pub fn quorum(&self) -> QuorumStatus {
        let (voters, leader_known) = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow_watched();
            (
                m.membership_config.membership().voter_ids().count(),
                m.current_leader.is_some(),
            )
        };
        let needed = majority(voters);
        match self.voter_health() {
            Some((_, healthy)) => QuorumStatus {
                voters,
                needed,
                healthy_voters: Some(healthy),
                has_quorum: healthy >= needed,
            },
            None => QuorumStatus {
                voters,
                needed,
                healthy_voters: None,
                has_quorum: leader_known,
            },
        }
    }

    /// The data plane as the cluster sees it, asking every member for its
    /// replica reports (each within `timeout`).
    pub async fn data_plane(&self, timeout: Duration) -> DataPlaneStatus {
        let (replicas, _, unreachable) = self.merged_replicas(timeout).await;
        DataPlaneStatus::new(self.applied().revision, &replicas, unreachable)
    }

    /// Watch streams open on this node.
    pub fn watch_streams(&self) -> u64 {
        u64::try_from(self.metrics().watchers_open.get()).unwrap_or(0)
    }

    /// The values `/metrics` reads at scrape time (local only: no peer calls).
    pub fn gauges(&self) -> NodeGauges {
        let applied = self.applied();
        let (term, leader, commit, last) = {
            let metrics = self.raft().metrics();
            let m = metrics.borrow_watched();
            (
                m.current_term,
                m.current_leader,
                m.local_committed.as_ref().map_or(0, |id| id.index),
                m.last_log_index.unwrap_or(0),
            )
        };
        let reports = self.replicas().current();
        let db = self.db_size();
        let max_lag = reports
            .iter()
            .map(|r| applied.revision.saturating_sub(r.report.revision))
            .max()
            .unwrap_or(0);
        NodeGauges {
            revision: applied.revision,
            compact_revision: applied.compact_revision,
            term,
            is_leader: leader == Some(self.id()),
            has_leader: leader.is_some(),
            applied_index: applied.log_index,
            commit_index: commit,
            last_log_index: last,
            replicas_reporting: reports.len() as u64,
            replicas_max_lag: max_lag,
            db_sst_bytes: db.sst_bytes,
            db_memtable_bytes: db.memtable_bytes,
            quota_bytes: self.options().quota_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::TxnRequest;
    use crate::replicas::ReplicaReport;

    #[test]
    fn only_writes_that_can_add_data_meet_the_quota() {
        let put = Command::Put {
            key: "a".into(),
            value: b"v".to_vec(),
            prev_kv: false,
        };
        let delete = Command::Delete {
            key: "a".into(),
            prefix: true,
            prev_kv: false,
        };
        assert!(may_add_data(&put));
        assert!(!may_add_data(&delete));
        assert!(!may_add_data(&Command::Compact { revision: 3 }));
        let deletes_only = Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![TxnOp::Delete {
                key: "a".into(),
                prefix: false,
            }],
            failure: vec![],
        });
        assert!(!may_add_data(&deletes_only));
        let put_on_failure = Command::Txn(TxnRequest {
            compare: vec![],
            success: vec![],
            failure: vec![TxnOp::Put {
                key: "a".into(),
                value: vec![],
            }],
        });
        assert!(may_add_data(&put_on_failure));
    }

    #[test]
    fn data_plane_summary_orders_by_lag_and_counts_convergence() {
        let entry = |id: &str, revision| ReplicaEntry {
            report: ReplicaReport {
                id: id.into(),
                prefix: "/app/".into(),
                revision,
                serving_from_disk: false,
            },
            node: 1,
            age_ms: 5,
        };
        let s = DataPlaneStatus::new(10, &[entry("a", 10), entry("b", 7), entry("c", 9)], vec![]);
        assert_eq!(s.replicas_reporting, 3);
        assert_eq!(s.max_lag, 3);
        assert_eq!(s.converged, 1);
        assert_eq!(s.replicas[0].id, "b");
        assert!((s.convergence - 1.0 / 3.0).abs() < 1e-9);
        let none = DataPlaneStatus::new(10, &[], vec![2]);
        assert_eq!((none.max_lag, none.convergence), (0, 1.0));
    }
}
