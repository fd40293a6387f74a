//! Data-plane replica reports: what each replica applied, kept in memory on
//! the node that received the report, with an expiry. Not replicated through
//! Raft: reports are frequent, disposable, and only ever read as a merged
//! view of every node's registry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Longest replica id accepted.
pub const MAX_REPLICA_ID_BYTES: usize = 256;
/// Most replicas one node remembers (oldest reports are dropped beyond it).
pub const MAX_REPLICAS_PER_NODE: usize = 100_000;

/// A replica's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplicaReport {
    /// Stable identity of the replica (for example host and process).
    #[schema(min_length = 1, max_length = 256)]
    pub id: String,
    /// The prefix it replicates.
    pub prefix: String,
    /// The revision it has applied.
    pub revision: u64,
    /// Whether it is serving from its on-disk copy without a cluster connection.
    #[serde(default)]
    pub serving_from_disk: bool,
}

/// A report as seen by the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaEntry {
    /// The report.
    #[serde(flatten)]
    pub report: ReplicaReport,
    /// The node that received it.
    pub node: u64,
    /// Milliseconds since it was received.
    pub age_ms: u64,
}

/// The wire form of a node's registry, for the merged view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// The report.
    pub report: ReplicaReport,
    /// Milliseconds since it was received.
    pub age_ms: u64,
}

/// One node's registry of recent reports.
pub struct ReplicaRegistry {
    ttl: Duration,
    entries: Mutex<HashMap<String, (ReplicaReport, Instant)>>,
}

impl ReplicaRegistry {
    /// A registry that forgets reports after `ttl`.
    pub fn new(ttl: Duration) -> Self {
        ReplicaRegistry {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Records a report.
    pub fn record(&self, report: ReplicaReport) {
        let now = Instant::now();
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= MAX_REPLICAS_PER_NODE && !entries.contains_key(&report.id) {
                entries.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
                if entries.len() >= MAX_REPLICAS_PER_NODE {
                    if let Some(oldest) = entries
                        .iter()
                        .min_by_key(|(_, (_, at))| *at)
                        .map(|(k, _)| k.clone())
                    {
                        entries.remove(&oldest);
                    }
                }
            }
            entries.insert(report.id.clone(), (report, now));
        }
    }

    /// The unexpired reports.
    pub fn current(&self) -> Vec<WireEntry> {
        let now = Instant::now();
        let Ok(mut entries) = self.entries.lock() else {
            return Vec::new();
        };
        entries.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        entries
            .values()
            .map(|(report, at)| WireEntry {
                report: report.clone(),
                age_ms: now.duration_since(*at).as_millis() as u64,
            })
            .collect()
    }
}

/// Merges every node's reports: per replica id, the freshest report wins.
pub fn merge(per_node: Vec<(u64, Vec<WireEntry>)>) -> Vec<ReplicaEntry> {
    let mut best: HashMap<String, ReplicaEntry> = HashMap::new();
    for (node, entries) in per_node {
        for e in entries {
            let candidate = ReplicaEntry {
                report: e.report,
                node,
                age_ms: e.age_ms,
            };
            match best.get(&candidate.report.id) {
                Some(existing) if existing.age_ms <= candidate.age_ms => {}
                _ => {
                    best.insert(candidate.report.id.clone(), candidate);
                }
            }
        }
    }
    let mut out: Vec<ReplicaEntry> = best.into_values().collect();
    out.sort_by(|a, b| a.report.id.cmp(&b.report.id));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: &str, revision: u64) -> ReplicaReport {
        ReplicaReport {
            id: id.into(),
            prefix: "/app/".into(),
            revision,
            serving_from_disk: false,
        }
    }

    #[test]
    fn reports_expire_and_merge_freshest() {
        let r = ReplicaRegistry::new(Duration::from_millis(50));
        r.record(report("a", 1));
        r.record(report("a", 2));
        assert_eq!(r.current().len(), 1);
        assert_eq!(r.current()[0].report.revision, 2);
        std::thread::sleep(Duration::from_millis(60));
        assert!(r.current().is_empty());

        let merged = merge(vec![
            (
                1,
                vec![WireEntry {
                    report: report("a", 5),
                    age_ms: 900,
                }],
            ),
            (
                2,
                vec![
                    WireEntry {
                        report: report("a", 7),
                        age_ms: 10,
                    },
                    WireEntry {
                        report: report("b", 1),
                        age_ms: 5,
                    },
                ],
            ),
        ]);
        assert_eq!(merged.len(), 2);
        assert_eq!((merged[0].report.revision, merged[0].node), (7, 2));
    }
}
