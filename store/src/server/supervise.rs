//! Keeping a node running when its Raft stops on an error.
//!
//! openraft stops a node's Raft for good when the storage under it fails: a
//! Raft log append or WAL sync that meets `ENOSPC`, a state-machine write that
//! fails. RocksDB, for its part, refuses every write after a failed WAL write
//! until the database is reopened (its C API has no `Resume`). So the node
//! heals the only way there is: it shuts itself down (closing the database)
//! and starts again from the same configuration, in the same process,
//! retrying with a growing delay while the start fails (the disk still full,
//! say). A restarted node reopens its data directory, replays its WAL, rejoins
//! the cluster and catches up from the leader like any restarted member.

use std::future::Future;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;

use super::{start, RunningNode, ShutdownReport};
use crate::config::Config;

/// The first delay before a restart; it doubles after each failed start.
const FIRST_RESTART_DELAY: Duration = Duration::from_millis(500);
/// The longest delay between two attempts to start the node again.
const MAX_RESTART_DELAY: Duration = Duration::from_secs(8);
/// A node that ran this long before its Raft stopped again counts as
/// healthy: its next restart starts from [`FIRST_RESTART_DELAY`] again.
const STABLE_RUN: Duration = Duration::from_secs(60);

impl RunningNode {
    /// Waits until this node's Raft has stopped on an error, and returns the
    /// error. Never returns while Raft runs, nor after a stop that shutdown
    /// asked for.
    pub async fn raft_failed(&self) -> String {
        let raft = self.node.raft().clone();
        // The server metrics change only with vote, state, leader and
        // membership; their sender goes when Raft's core task ends, after the
        // core has recorded why it stopped in the full metrics.
        let mut server = raft.server_metrics();
        loop {
            let ended = server.changed().await.is_err();
            let state = raft.metrics().borrow_watched().running_state.clone();
            match state {
                Err(openraft::error::Fatal::Stopped) => {
                    // Shutdown stopped it: nothing to heal.
                    return std::future::pending().await;
                }
                Err(e) => return e.to_string(),
                // The core is gone without saying why (it panicked).
                Ok(()) if ended => return "Raft's core task ended".to_owned(),
                Ok(()) => {}
            }
        }
    }
}

/// Runs `node` (started from `config`) until `shutdown` completes, restarting
/// it in this process whenever its Raft stops on an error (see the module
/// documentation); returns the report of the final shutdown.
///
/// The delay before a restart starts at 0.5 s and doubles, up to 8 s, after
/// every failed start and every stop that comes within 60 s of the last
/// start: a node on a disk that is still full (RocksDB may open on it,
/// and the next append fails again) restarts less and less often instead of
/// spinning.
pub async fn keep_running(
    mut node: RunningNode,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let id = config.node_id;
    tokio::pin!(shutdown);
    let mut delay = FIRST_RESTART_DELAY;
    let mut started = tokio::time::Instant::now();
    let mut restarts = 0u64;
    loop {
        let error = tokio::select! {
            () = &mut shutdown => break,
            error = node.raft_failed() => error,
        };
        if started.elapsed() >= STABLE_RUN {
            delay = FIRST_RESTART_DELAY;
        }
        tracing::error!(
            node = id,
            %error,
            retry_in = ?delay,
            "Raft stopped on an error: restarting the node in this process"
        );
        let report = node.shutdown().await;
        if !report.problems.is_empty() {
            tracing::warn!(
                node = id,
                problems = %report.problems.join("; "),
                "the failed node's shutdown reported problems"
            );
        }
        node = loop {
            tokio::select! {
                () = &mut shutdown => return report,
                () = tokio::time::sleep(delay) => {}
            }
            delay = (delay * 2).min(MAX_RESTART_DELAY);
            match start(config.clone(), None).await {
                Ok(node) => {
                    restarts += 1;
                    tracing::info!(node = id, restarts, "node restarted after Raft stopped");
                    break node;
                }
                Err(e) => {
                    tracing::warn!(
                        node = id,
                        error = %e,
                        retry_in = ?delay,
                        "restarting the node failed"
                    );
                }
            }
        };
        started = tokio::time::Instant::now();
    }
    tracing::info!(node = id, "shutting down");
    node.shutdown().await
}
