//! Stopping a node within a bounded time, and closing its database last.
//!
//! The order matters because many threads and tasks hold the database: the
//! Raft log's flusher thread, openraft's state-machine worker, replication
//! and snapshot tasks, `spawn_blocking` readers, the compactor, the watch hub
//! and every request handler. RocksDB must not be closed, nor the process
//! torn down, while one of them is still inside it (that is what crashed
//! nodes on SIGTERM). So:
//!
//! 1. stop accepting and close the watch streams;
//! 2. shut Raft down: writes and reads waiting on it fail at once, and its
//!    core task drops the log store, which stops the flusher once it has
//!    synced and completed every callback still queued;
//! 3. join the server tasks (HTTP connections get a short grace, then are cut);
//! 4. wait for the flusher thread to end;
//! 5. wait until this handle is the last one on the database, then sync the
//!    WAL a final time and close the database here.
//!
//! Steps 2 to 5 share one deadline, so that SIGTERM ends a node within a few
//! seconds even when replication is stalled. Past it, tasks are aborted; a
//! database still held elsewhere is left to its last holder (RocksDB recovers
//! from its WAL at the next start, as after a crash), and the report says so.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rocksdb::DB;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout_at;

use crate::raft::node::Node;
use crate::storage::log_store::{FlusherReport, LogFlusher};
use crate::watch::WatchHub;

/// Longest a node waits for Raft, its tasks, the log flusher and the other
/// holders of its database before it gives up on them. Below the 5 seconds
/// that service managers (and operators) commonly allow after SIGTERM.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(4);
/// Extra time for the final WAL sync and the close of the database, past
/// the deadline: the close may also use whatever the deadline's waits left
/// over (RocksDB waits for its background flush or compaction in progress,
/// which on a loaded machine took more than this allowance alone).
const CLOSE_ALLOWANCE: Duration = Duration::from_millis(500);
/// How long requests in flight may still finish once shutdown starts. Raft
/// is stopped meanwhile, so requests waiting on it end at once; this bounds
/// those waiting on another node (forwarded writes) and slow clients.
pub(super) const HTTP_DRAIN_GRACE: Duration = Duration::from_secs(2);
/// How often shutdown looks whether the other database holders are gone.
const RELEASE_POLL: Duration = Duration::from_millis(5);

/// How a node's shutdown went.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    /// Time from the start of the shutdown to its end.
    pub elapsed: Duration,
    /// openraft's core task ended (and with it the log store): nothing can
    /// write to the Raft log any more.
    pub raft_stopped: bool,
    /// The log flusher's account, once it stopped: every write handed to it
    /// was synced (or failed) and its callback completed. `None` if it did
    /// not stop in time or panicked.
    pub flusher: Option<FlusherReport>,
    /// The WAL sync done after every other holder was gone (or at the
    /// deadline): `None` if it did not finish in time.
    pub final_sync: Option<Result<(), String>>,
    /// The database was closed by the shutdown itself.
    pub db_closed: bool,
    /// What did not go to plan, in order.
    pub problems: Vec<String>,
}

impl ShutdownReport {
    /// Whether everything the node wrote to its Raft log is known to be on
    /// disk, so that no sync is left pending or failed: no sync failed, and
    /// either the flusher stopped after syncing and completing every
    /// callback, or Raft stopped (no more log writes) and the final sync
    /// succeeded. Nothing is ever acknowledged before its sync in any case;
    /// this is what lets a stop be reported as clean (exit status 0).
    pub fn durable(&self) -> bool {
        let no_failure = self.flusher.is_none_or(|f| f.failed_syncs == 0)
            && !matches!(self.final_sync, Some(Err(_)));
        let all_synced = self.flusher.is_some()
            || (self.raft_stopped && matches!(self.final_sync, Some(Ok(()))));
        no_failure && all_synced
    }

    /// Durable, the database closed, and nothing cut off.
    pub fn clean(&self) -> bool {
        self.durable() && self.db_closed && self.problems.is_empty()
    }

    fn problem(&mut self, node: u64, what: String) {
        tracing::warn!(node, problem = %what, "shutdown");
        self.problems.push(what);
    }
}

/// What [`stop`] takes apart.
pub(super) struct Parts {
    pub node: Arc<Node>,
    pub hub: Arc<WatchHub>,
    pub stop: watch::Sender<bool>,
    pub tasks: Vec<JoinHandle<()>>,
    pub db: Arc<DB>,
    pub flusher: LogFlusher,
}

/// Stops a node and closes its database; see the module docs for the order.
pub(super) async fn stop(parts: Parts) -> ShutdownReport {
    let Parts {
        node,
        hub,
        stop,
        tasks,
        db,
        flusher,
    } = parts;
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + SHUTDOWN_DEADLINE;
    let id = node.id();
    let mut report = ShutdownReport::default();

    let _ = stop.send(true);
    hub.close();
    // The hub reads the key space for catch-ups, so it holds the database:
    // this handle must not outlive the close, or the database never becomes
    // this function's alone and is left open at the deadline.
    drop(hub);
    match timeout_at(deadline, node.raft().shutdown()).await {
        Ok(Ok(())) => report.raft_stopped = true,
        Ok(Err(e)) => report.problem(id, format!("raft shutdown: {e}")),
        Err(_) => report.problem(id, "raft did not stop by the deadline".into()),
    }
    let mut cut = 0;
    for mut task in tasks {
        if timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
            cut += 1;
        }
    }
    if cut > 0 {
        report.problem(id, format!("{cut} server task(s) cut off at the deadline"));
    }
    drop(node);

    match timeout_at(deadline, flusher.wait()).await {
        Ok(Some(f)) => {
            if f.failed_syncs > 0 {
                report.problem(id, format!("{} log sync(s) failed", f.failed_syncs));
            }
            report.flusher = Some(f);
        }
        Ok(None) => report.problem(id, "the log flusher thread panicked".into()),
        Err(_) => report.problem(id, "the log flusher did not stop by the deadline".into()),
    }

    let sole = sole_holder(&db, deadline).await;
    if !sole {
        report.problem(
            id,
            format!(
                "{} other handle(s) on the database at the deadline; it is left open \
                 (recovered from the WAL at the next start)",
                Arc::strong_count(&db).saturating_sub(1)
            ),
        );
    }
    // Sync even when others still hold it: whatever was written is then on disk.
    let closing = tokio::task::spawn_blocking(move || {
        let synced = crate::db::sync_wal(&db).map_err(|e| e.into_string());
        // Closes the database when this is the last handle; RocksDB waits
        // for its own background work here.
        drop(db);
        synced
    });
    let close_by = deadline.max(tokio::time::Instant::now()) + CLOSE_ALLOWANCE;
    match timeout_at(close_by, closing).await {
        Ok(Ok(synced)) => {
            if let Err(e) = &synced {
                report.problem(id, format!("final WAL sync failed: {e}"));
            }
            report.final_sync = Some(synced);
            report.db_closed = sole;
        }
        Ok(Err(e)) => report.problem(id, format!("final WAL sync: {e}")),
        Err(_) => report.problem(id, "final WAL sync and close did not finish in time".into()),
    }

    report.elapsed = started.elapsed();
    if report.clean() {
        tracing::info!(
            node = id,
            elapsed_ms = report.elapsed.as_millis() as u64,
            "node stopped, database closed"
        );
    } else {
        tracing::warn!(
            node = id,
            elapsed_ms = report.elapsed.as_millis() as u64,
            durable = report.durable(),
            db_closed = report.db_closed,
            "node stopped with problems"
        );
    }
    report
}

/// Waits until `db` is the only handle on the database, or the deadline.
async fn sole_holder(db: &Arc<DB>, deadline: tokio::time::Instant) -> bool {
    // No one can clone a handle they do not have: once the count is 1 it
    // stays 1. The holders left at this point are short-lived (tasks openraft
    // does not join, `spawn_blocking` reads), so a short poll is enough.
    loop {
        if Arc::strong_count(db) == 1 {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(RELEASE_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flushed(failed_syncs: u64) -> Option<FlusherReport> {
        Some(FlusherReport {
            syncs: 3,
            failed_syncs,
            callbacks: 7,
        })
    }

    #[test]
    fn durable_only_when_no_sync_is_pending_or_failed() {
        let clean = ShutdownReport {
            raft_stopped: true,
            flusher: flushed(0),
            final_sync: Some(Ok(())),
            db_closed: true,
            ..Default::default()
        };
        assert!(clean.durable() && clean.clean());
        // The database left open at the deadline: durable, not clean.
        let left_open = ShutdownReport {
            db_closed: false,
            problems: vec!["other handles".into()],
            ..clean.clone()
        };
        assert!(left_open.durable() && !left_open.clean());
        // A flusher stuck past the deadline is covered by the final sync, once
        // Raft can no longer write to the log...
        let stuck = ShutdownReport {
            flusher: None,
            ..left_open.clone()
        };
        assert!(stuck.durable());
        // ...but not while Raft may still be writing, nor without that sync.
        assert!(!ShutdownReport {
            raft_stopped: false,
            ..stuck.clone()
        }
        .durable());
        assert!(!ShutdownReport {
            final_sync: None,
            ..stuck.clone()
        }
        .durable());
        // Any failed sync means the disk is not to be trusted.
        assert!(!ShutdownReport {
            flusher: flushed(1),
            ..clean.clone()
        }
        .durable());
        assert!(!ShutdownReport {
            final_sync: Some(Err("EIO".into())),
            ..clean
        }
        .durable());
    }
}
