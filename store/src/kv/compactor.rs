//! History retention: the policy that decides how far history may be
//! compacted (by revision count and by age), and the physical compaction
//! every node runs in the background, in bounded steps, so compaction never
//! holds up writes. Proposing the `Compact` command through Raft is the
//! leader's job, in [`crate::raft::retention`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::DB;
use tokio::sync::watch;

use super::applied::Applied;
use super::mvcc::{compact_step, physical_compact_revision};
use crate::metrics::Metrics;
use crate::stop::stopped;

/// Revisions removed per physical compaction step (one RocksDB write).
const STEP_REVISIONS: u64 = 256;
/// Pause between steps, so a long compaction yields to writes.
const STEP_PAUSE: Duration = Duration::from_millis(2);

/// Retention settings.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep at most this many revisions of history (0 = no count limit).
    pub revisions: u64,
    /// Keep history at most this old (zero = no age limit).
    pub age: Duration,
    /// Propose a compaction only when it would advance the compact revision
    /// by at least this much (fewer, larger compactions).
    pub min_step: u64,
}

/// Removes history below the logical compact revision, step by step, until
/// `stop` is set. Runs on every node.
pub async fn run_physical(
    db: Arc<DB>,
    mut applied: watch::Receiver<Applied>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let target = applied.borrow().compact_revision;
        let step = {
            let db = db.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<Option<(u64, usize)>> {
                // Read back every time: a snapshot install resets it.
                let done = physical_compact_revision(&db)?;
                if done >= target {
                    return Ok(None);
                }
                let hi = (done + STEP_REVISIONS).min(target);
                let deleted = compact_step(&db, done, hi)?;
                Ok(Some((hi, deleted)))
            })
            .await
        };
        match step {
            Ok(Ok(Some((hi, deleted)))) => {
                metrics.history_entries_compacted.inc_by(deleted as u64);
                if hi == target {
                    metrics.compactions.inc();
                    tracing::debug!(revision = hi, "history compacted");
                    // Give the space of the removed history (and of deleted
                    // keys) back now, so the size the quota checks falls.
                    let db = db.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        crate::kv::size::defragment(&db);
                    })
                    .await;
                }
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(STEP_PAUSE) => {}
                }
            }
            Ok(Ok(None)) => {
                // Caught up: sleep until the compact revision moves (rare),
                // not on every applied batch.
                let waiting = async {
                    applied
                        .wait_for(|a| a.compact_revision != target)
                        .await
                        .map(|_| ())
                };
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    changed = waiting => if changed.is_err() { return },
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "history compaction failed; retrying");
                tokio::select! {
                    _ = stopped(&mut stop) => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(_) => return,
        }
    }
}

/// The revision retention allows compacting to, given `(when, revision)`
/// samples (oldest first) and the current revision.
pub fn retention_target(
    r: &Retention,
    samples: &VecDeque<(Instant, u64)>,
    now: Instant,
    current: u64,
) -> u64 {
    let by_count = if r.revisions > 0 {
        current.saturating_sub(r.revisions)
    } else {
        0
    };
    let by_age = if r.age.is_zero() {
        0
    } else {
        samples
            .iter()
            .take_while(|(at, _)| now.duration_since(*at) >= r.age)
            .last()
            .map_or(0, |(_, rev)| *rev)
    };
    by_count.max(by_age)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_count_and_age() {
        let t0 = Instant::now();
        let samples: VecDeque<(Instant, u64)> = [
            (t0, 10),
            (t0 + Duration::from_secs(10), 50),
            (t0 + Duration::from_secs(20), 90),
        ]
        .into();
        let now = t0 + Duration::from_secs(25);
        let count_only = Retention {
            revisions: 30,
            age: Duration::ZERO,
            min_step: 1,
        };
        assert_eq!(retention_target(&count_only, &samples, now, 100), 70);
        let age_only = Retention {
            revisions: 0,
            age: Duration::from_secs(12),
            min_step: 1,
        };
        // Samples at 0 s and 10 s are at least 12 s old at 25 s; the newer wins.
        assert_eq!(retention_target(&age_only, &samples, now, 100), 50);
        let both = Retention {
            revisions: 80,
            age: Duration::from_secs(12),
            min_step: 1,
        };
        assert_eq!(retention_target(&both, &samples, now, 100), 50);
        assert_eq!(retention_target(&count_only, &samples, now, 20), 0);
    }
}
