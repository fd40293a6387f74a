//! The leader's side of history retention: it samples the revision, asks
//! the retention policy ([`crate::kv::compactor::retention_target`]) how far
//! history may go, and proposes a `Compact` command through Raft, so every
//! node compacts at the same point of the log.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::node::Node;
use crate::kv::compactor::{retention_target, Retention};
use crate::kv::{Command, CommandResponse};
use crate::stop::stopped;

/// How often the leader samples the revision and checks retention.
const RETENTION_TICK: Duration = Duration::from_secs(1);

/// On the leader, proposes compactions that retention allows. Runs on every
/// node; only the leader acts.
pub async fn run_retention(node: Arc<Node>, retention: Retention, mut stop: watch::Receiver<bool>) {
    if retention.revisions == 0 && retention.age.is_zero() {
        return;
    }
    let mut samples: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut tick = tokio::time::interval(RETENTION_TICK);
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => return,
            _ = tick.tick() => {}
        }
        if !node.is_leader() {
            samples.clear();
            continue;
        }
        let now = Instant::now();
        let applied = node.applied();
        samples.push_back((now, applied.revision));
        // Keep only what the age rule can still need: the newest sample
        // older than the age limit, and everything after it.
        while samples.len() > 1
            && samples
                .get(1)
                .is_some_and(|(at, _)| now.duration_since(*at) >= retention.age)
        {
            samples.pop_front();
        }
        let target = retention_target(&retention, &samples, now, applied.revision);
        if target
            < applied
                .compact_revision
                .saturating_add(retention.min_step.max(1))
        {
            continue;
        }
        match node.write(Command::Compact { revision: target }).await {
            Ok(CommandResponse::Compact {
                compact_revision, ..
            }) => {
                tracing::info!(compact_revision, "history retention compacted");
            }
            Ok(other) => tracing::warn!(?other, "unexpected compaction response"),
            Err(e) => tracing::debug!(error = %e, "retention compaction not proposed"),
        }
    }
}
