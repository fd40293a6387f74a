//! The replica checker's history part: what each data-plane `Replica`
//! applied (its [`Replica::updates`](ballast_client::Replica::updates)
//! stream, recorded from the moment it started) against the writers'
//! history.
//!
//! A replica may skip revisions only by replacing its whole state (a
//! re-bootstrap after compaction, `reset`) or when the recorder itself fell
//! behind (`lagged`). Otherwise every revision that exists under the prefix
//! between the revision the replica started at and the last one it reached
//! must have been applied, once, in order, with the values that were written
//! at that revision. The live part of the checker (never backwards, reads
//! answered through outages, convergence to the cluster's final state) is in
//! `workload::replica`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::stream::{self, EventFault, Known, Order};
use super::watch::{WatchEvent, Write};
use super::Verdict;

/// One item of a replica's update stream, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "update", rename_all = "lowercase")]
pub enum Update {
    /// One revision's changes under the prefix, applied.
    Change {
        /// Revision.
        revision: u64,
        /// Events (values reduced to the writers' unique values).
        events: Vec<WatchEvent>,
    },
    /// The whole state was replaced by a fresh read at `revision`.
    Reset {
        /// Revision of the new state.
        revision: u64,
    },
    /// The recorder fell behind and missed `missed` updates.
    Lagged {
        /// How many.
        missed: u64,
    },
}

/// What one replica applied, from its start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplicaHistory {
    /// Replica name.
    pub name: String,
    /// The revision the replica held when recording began: everything up to
    /// it came with its first bootstrap (or its cache).
    pub start_revision: u64,
    /// Updates in the order the replica published them.
    pub updates: Vec<Update>,
}

impl ReplicaHistory {
    /// The highest revision the replica applied or reset to.
    pub fn reached(&self) -> u64 {
        self.updates
            .iter()
            .filter_map(|u| match u {
                Update::Change { revision, .. } | Update::Reset { revision } => Some(*revision),
                Update::Lagged { .. } => None,
            })
            .max()
            .unwrap_or(0)
            .max(self.start_revision)
    }
}

/// A violated replica guarantee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, thiserror::Error)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum ReplicaError {
    /// Reliable: a revision that exists under the prefix was passed over
    /// without being applied (and without a reset covering it).
    #[error("{replica}: gap: revision {revision} was never applied (applied up to {up_to}, then {next})")]
    Gap {
        /// Replica.
        replica: String,
        /// The revision never applied.
        revision: u64,
        /// The revision applied before it.
        up_to: u64,
        /// The revision applied next (or reached, at the end).
        next: u64,
    },
    /// Ordered: revisions applied in increasing order.
    #[error("{replica}: unordered: revision {revision} applied after {after}")]
    Unordered {
        /// Replica.
        replica: String,
        /// Revision applied.
        revision: u64,
        /// The higher revision applied before it.
        after: u64,
    },
    /// Unique: no revision applied twice.
    #[error("{replica}: duplicate: revision {revision} applied twice")]
    Duplicate {
        /// Replica.
        replica: String,
        /// Revision.
        revision: u64,
    },
    /// The applied events must be the writes of that revision.
    #[error("{replica}: wrong change at revision {revision}: {detail}")]
    WrongChange {
        /// Replica.
        replica: String,
        /// Revision.
        revision: u64,
        /// What was wrong.
        detail: String,
    },
}

/// Checks every replica's updates against the writes. `exists` is built from
/// the acknowledged writes and from every revision any replica applied (an
/// indeterminate write that happened). With `final_revision`, a replica must
/// also have applied every existing revision up to it (the run healed and the
/// replica converged).
pub fn check(
    writes: &[Write],
    replicas: &[ReplicaHistory],
    final_revision: Option<u64>,
) -> Verdict<ReplicaError> {
    let mut errors = Vec::new();
    let applied_anywhere = replicas
        .iter()
        .flat_map(|r| &r.updates)
        .filter_map(|u| match u {
            Update::Change { revision, .. } => Some(*revision),
            _ => None,
        });
    let known = Known::new(writes, applied_anywhere);
    for r in replicas {
        let name = &r.name;
        let mut applied: BTreeSet<u64> = BTreeSet::new();
        // Everything up to `floor` is accounted for: applied, reset over,
        // or part of the starting state.
        let mut floor = r.start_revision;
        let mut lagged = false;
        for u in &r.updates {
            match u {
                Update::Change { revision, events } => {
                    let rev = *revision;
                    match stream::order(&applied, rev) {
                        Some(Order::Repeated) => errors.push(ReplicaError::Duplicate {
                            replica: name.clone(),
                            revision: rev,
                        }),
                        Some(Order::Unordered { after }) => errors.push(ReplicaError::Unordered {
                            replica: name.clone(),
                            revision: rev,
                            after,
                        }),
                        None => {}
                    }
                    if !lagged {
                        for missing in known.existing(floor + 1, rev) {
                            if !applied.contains(&missing) {
                                errors.push(ReplicaError::Gap {
                                    replica: name.clone(),
                                    revision: missing,
                                    up_to: floor,
                                    next: rev,
                                });
                            }
                        }
                    }
                    for fault in known.event_faults(rev, events) {
                        let detail = match fault {
                            EventFault::Empty => "no event".to_owned(),
                            EventFault::Misplaced(detail) | EventFault::NotWritten(detail) => {
                                detail
                            }
                        };
                        errors.push(ReplicaError::WrongChange {
                            replica: name.clone(),
                            revision: rev,
                            detail,
                        });
                    }
                    lagged = false;
                    applied.insert(rev);
                    floor = floor.max(rev);
                }
                Update::Reset { revision } => {
                    floor = floor.max(*revision);
                    lagged = false;
                }
                Update::Lagged { .. } => lagged = true,
            }
        }
        if let Some(f) = final_revision {
            if !lagged {
                for missing in known.existing(floor + 1, f + 1) {
                    errors.push(ReplicaError::Gap {
                        replica: name.clone(),
                        revision: missing,
                        up_to: floor,
                        next: f,
                    });
                }
            }
        }
    }
    if errors.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail { errors }
    }
}

#[cfg(test)]
#[path = "replica_test.rs"]
mod tests;
