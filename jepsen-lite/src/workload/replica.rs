//! The `replica` workload: writers write under the watch prefix while
//! data-plane `Replica`s of that prefix read from memory continuously. The
//! checker (in this module) verifies what the data plane promises: a
//! replica's revision never goes backwards, reads keep being answered while
//! the control plane is down, and after healing every replica converges to
//! the cluster's final state. Each replica's update stream is recorded too,
//! for `checker::replica`: every revision under the prefix applied, once, in
//! order, with the values written.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ballast_client::{EventKind, Replica, ReplicaUpdate};
use futures::StreamExt as _;
use serde::Serialize;

use super::watch::PREFIX;
use crate::checker::replica::{self as replica_checker, ReplicaHistory, Update};
use crate::checker::watch::{WatchEvent, Write};
use crate::client::Padding;

/// What one replica's reader saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplicaLog {
    /// Replica name.
    pub name: String,
    /// Reads answered (every read is answered: `get` cannot fail).
    pub reads: u64,
    /// Reads answered while the replica had no connection to the cluster.
    pub reads_disconnected: u64,
    /// `(before, after)` pairs where the revision went backwards.
    pub regressions: Vec<(u64, u64)>,
    /// Highest revision observed.
    pub max_revision: u64,
    /// What the replica applied, from its update stream (see [`recorder`]).
    pub history: ReplicaHistory,
}

/// Records `replica`'s update stream into `log.history` from now on, until
/// the replica is shut down. Call it right after the replica started: what
/// it held before is its starting revision.
pub fn recorder(replica: &Replica, log: Arc<Mutex<ReplicaLog>>, padding: Padding) {
    let mut updates = replica.updates();
    // After subscribing: a change applied before it is part of this revision.
    let start = replica.revision();
    if let Ok(mut l) = log.lock() {
        l.history.name = l.name.clone();
        l.history.start_revision = start;
    }
    tokio::spawn(async move {
        while let Some(u) = updates.next().await {
            let update = match u {
                ReplicaUpdate::Change { revision, events } => Update::Change {
                    revision,
                    events: events
                        .iter()
                        .map(|e| WatchEvent {
                            kind: match e.kind {
                                EventKind::Put => "put",
                                EventKind::Delete => "delete",
                            }
                            .to_string(),
                            key: e.kv.key.clone(),
                            value: (e.kind == EventKind::Put)
                                .then(|| padding.unpad(&String::from_utf8_lossy(&e.kv.value))),
                            mod_revision: e.kv.mod_revision,
                        })
                        .collect(),
                },
                ReplicaUpdate::Reset { revision } => Update::Reset { revision },
                ReplicaUpdate::Lagged { missed } => Update::Lagged { missed },
            };
            let Ok(mut l) = log.lock() else { return };
            l.history.updates.push(update);
        }
    });
}

/// Reads `replica` every millisecond until `stop`, recording into `log`.
pub async fn reader(
    replica: Arc<Replica>,
    log: Arc<Mutex<ReplicaLog>>,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut i = 0u64;
    while !*stop.borrow() {
        tick.tick().await;
        let rev = replica.revision();
        let _ = std::hint::black_box(replica.get(&format!("{PREFIX}k{}", i % 4)));
        let connected = replica.status().connected;
        i += 1;
        let Ok(mut l) = log.lock() else { return };
        l.reads += 1;
        if !connected {
            l.reads_disconnected += 1;
        }
        if rev < last {
            l.regressions.push((last, rev));
        }
        last = last.max(rev);
        l.max_revision = last;
    }
}

/// The replica checker's findings.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaReport {
    /// One line per violated guarantee.
    pub errors: Vec<String>,
    /// Per replica: what its reader saw.
    pub logs: Vec<ReplicaLog>,
}

impl ReplicaReport {
    /// Whether every guarantee held.
    pub fn is_pass(&self) -> bool {
        self.errors.is_empty()
    }
}

/// After healing: every replica must reach `final_revision` and hold exactly
/// `cluster` (a linearizable read of the prefix at that revision or later).
/// `outage` says whether a full outage was injected (then reads must have
/// been answered while disconnected). Then the recorded update streams go
/// through `checker::replica` against `writes`.
pub async fn check(
    replicas: &[(Arc<Replica>, Arc<Mutex<ReplicaLog>>)],
    writes: &[Write],
    final_revision: u64,
    cluster: &BTreeMap<String, Vec<u8>>,
    cluster_revision: u64,
    outage: bool,
) -> ReplicaReport {
    let mut errors = Vec::new();
    let mut logs = Vec::new();
    for (replica, log) in replicas {
        let l = log.lock().map(|l| l.clone()).unwrap_or_default();
        for (before, after) in &l.regressions {
            errors.push(format!(
                "{}: revision went backwards from {before} to {after}",
                l.name
            ));
        }
        if l.reads == 0 {
            errors.push(format!("{}: answered no read", l.name));
        }
        if outage && l.reads_disconnected == 0 {
            errors.push(format!(
                "{}: no read was answered while the cluster was down",
                l.name
            ));
        }
        match replica
            .wait_for_revision(
                cluster_revision.max(final_revision),
                Duration::from_secs(20),
            )
            .await
        {
            Err(e) => errors.push(format!("{}: did not converge: {e}", l.name)),
            Ok(_) => {
                // The update stream is published just after the revision:
                // let the recorder catch up (a replica that never applied the
                // last write never gets there; the checker then names it).
                let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                while log.lock().map(|l| l.history.reached()).unwrap_or(0) < final_revision
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let snap = replica.snapshot();
                let held: BTreeMap<String, Vec<u8>> = snap
                    .range(PREFIX)
                    .map(|kv| (kv.key.clone(), kv.value.clone()))
                    .collect();
                if snap.revision() != cluster_revision {
                    errors.push(format!(
                        "{}: converged to revision {}, the cluster is at {cluster_revision}",
                        l.name,
                        snap.revision()
                    ));
                } else if &held != cluster {
                    errors.push(format!(
                        "{}: at revision {cluster_revision} holds {} keys that differ from the cluster's {}",
                        l.name,
                        held.len(),
                        cluster.len()
                    ));
                }
            }
        }
        logs.push(log.lock().map(|l| l.clone()).unwrap_or_default());
    }
    let histories: Vec<ReplicaHistory> = logs.iter().map(|l| l.history.clone()).collect();
    if let crate::checker::Verdict::Fail { errors: found } =
        replica_checker::check(writes, &histories, Some(final_revision))
    {
        errors.extend(found.iter().map(|e| e.to_string()));
    }
    ReplicaReport { errors, logs }
}
