//! A follower cut off until it can only catch up by snapshot (etcd's
//! robustness suite calls this `BlackholeUntilSnapshot`).
//!
//! Inject makes one follower unreachable over every peer link, both ways
//! (its process keeps running and serving its clients). Heal waits until
//! the leader has applied more than three times `--snapshot-logs` entries
//! past what the follower had. ballastd takes a snapshot every
//! `--snapshot-logs` applied entries and keeps at most `--snapshot-logs`
//! entries behind its latest one, so twice that is when the first snapshot
//! whose purge no longer reaches back to the follower is due; the third
//! allows for building it, and for the leader deferring the purge while a
//! replication request (to any follower) still has older entries in flight,
//! with a second snapshot and purge as a second chance. After that the
//! follower can only be brought back by sending it a snapshot. The wait
//! ends early when the run is over and is bounded by `--lagging-limit-ms`,
//! so a heal always ends.
//!
//! Unreachable rather than cut (the `partition` nemesis's blackhole): a
//! leader does not purge log entries that a replication request to the
//! follower still has in flight, and towards a blackholed follower one
//! almost always is (each request waits out its deadline and the next one
//! follows at once), so the leader keeps the entries and the follower
//! catches up from the log after all. With every connection refused each
//! request fails at once and the leader purges on schedule.
//!
//! After the links are restored a background observer watches the follower
//! catch up and records in the history how it did: by snapshot (the node
//! logged `installed snapshot`), by log replication, or not within
//! [`CATCH_UP_LIMIT`].

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;
use serde_json::Value;

use super::{Context, Nemesis};
use crate::cluster::Cluster;
use crate::history::{Event, EventType, Func, Recorder};

/// How many `--snapshot-logs` the leader must apply past the follower
/// before it is let back (see the module docs).
const LEAD_SNAPSHOTS: u64 = 3;

/// How often the leader's and the follower's progress are polled.
const POLL: Duration = Duration::from_millis(200);

/// How long the observer waits for a healed follower to catch up.
pub const CATCH_UP_LIMIT: Duration = Duration::from_secs(60);

/// What ballastd logs when it has installed a snapshot from its leader.
const INSTALLED_SNAPSHOT: &str = "installed snapshot";

/// The observer's verdicts, as they appear in the history.
const BY_SNAPSHOT: &str = "caught up by snapshot";
const BY_LOG: &str = "caught up by log replication";
const NOT_CAUGHT_UP: &str = "did not catch up";

/// Settings of the lagging nemesis.
#[derive(Clone, Copy, Debug)]
pub struct LaggingOptions {
    /// The nodes' `--snapshot-logs`.
    pub snapshot_logs: u64,
    /// Longest a follower is kept cut off.
    pub limit: Duration,
}

/// One follower being held back.
struct Lag {
    node: u64,
    /// The larger of the leader's and the follower's last log index when
    /// the follower was cut off: it has no entry beyond this.
    left_at: u64,
    /// The follower's applied index when it was cut off.
    applied: u64,
    since: Instant,
}

/// Cuts a follower off until the leader's log has moved on by more than a
/// snapshot's worth; restores it on heal.
pub struct LaggingNemesis {
    opts: LaggingOptions,
    active: Option<Lag>,
}

impl LaggingNemesis {
    /// A lagging nemesis for nodes started with `opts.snapshot_logs`.
    pub fn new(opts: LaggingOptions) -> Self {
        Self { opts, active: None }
    }

    /// Leader log progress the follower must miss before it is let back.
    fn lead(&self) -> u64 {
        self.opts.snapshot_logs.saturating_mul(LEAD_SNAPSHOTS)
    }
}

/// Raft progress of one node, from `GET /v1/status`.
#[derive(Clone, Copy, Debug)]
struct Progress {
    last_log_index: u64,
    applied: u64,
}

fn progress(status: &Value) -> Progress {
    let field = |name: &str| {
        status
            .pointer(&format!("/raft/{name}"))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Progress {
        last_log_index: field("last_log_index"),
        applied: field("applied"),
    }
}

/// The leader (the node that says so in the highest term) and its progress.
async fn leader_progress(cluster: &Cluster) -> Option<(u64, Progress)> {
    let mut best: Option<(u64, u64, Progress)> = None;
    for c in &cluster.clients {
        if !cluster.running(c.node) {
            continue;
        }
        let Some(s) = c.status().await else { continue };
        let leads = s.pointer("/raft/state").and_then(Value::as_str) == Some("Leader");
        let term = s.get("term").and_then(Value::as_u64).unwrap_or(0);
        if leads && best.is_none_or(|(t, _, _)| term > t) {
            best = Some((term, c.node, progress(&s)));
        }
    }
    best.map(|(_, id, p)| (id, p))
}

async fn node_progress(cluster: &Cluster, id: u64) -> Option<Progress> {
    let status = cluster.client(id)?.status().await?;
    Some(progress(&status))
}

impl Nemesis for LaggingNemesis {
    fn name(&self) -> &'static str {
        "lagging"
    }

    fn heal_last(&self) -> bool {
        true
    }

    fn inject<'a>(
        &'a mut self,
        ctx: &'a Context,
        rng: &'a mut StdRng,
    ) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            anyhow::ensure!(self.active.is_none(), "a follower is already lagging");
            let (leader, lp) = leader_progress(&ctx.cluster)
                .await
                .ok_or_else(|| anyhow::anyhow!("no leader to fall behind"))?;
            let followers: Vec<u64> = ctx
                .cluster
                .ids()
                .into_iter()
                .filter(|&id| id != leader && ctx.cluster.running(id))
                .collect();
            let node = *followers
                .choose(rng)
                .ok_or_else(|| anyhow::anyhow!("no running follower"))?;
            ctx.net.set_unreachable(node, true);
            // Read after the cut: nothing reaches the follower any more.
            let fp = node_progress(&ctx.cluster, node).await;
            let left_at = lp.last_log_index.max(fp.map_or(0, |p| p.last_log_index));
            let applied = fp.map_or(0, |p| p.applied);
            self.active = Some(Lag {
                node,
                left_at,
                applied,
                since: Instant::now(),
            });
            Ok(format!(
                "node {node} cut off at log index {left_at} (applied {applied}, leader {leader}); held until the leader has applied index {} ({LEAD_SNAPSHOTS} x snapshot-logs {} past it) or for {:?}",
                left_at.saturating_add(self.lead()),
                self.opts.snapshot_logs,
                self.opts.limit
            ))
        })
    }

    fn heal<'a>(&'a mut self, ctx: &'a Context) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move {
            let Some(lag) = self.active.take() else {
                return Ok(String::new());
            };
            let target = lag.left_at.saturating_add(self.lead());
            let deadline = lag.since + self.opts.limit;
            let mut stop = ctx.stop.clone();
            let mut seen: Option<(u64, Progress)> = None;
            let why = loop {
                if let Some(lp) = leader_progress(&ctx.cluster).await {
                    seen = Some(lp);
                    if lp.1.applied >= target {
                        break "the leader passed the target";
                    }
                }
                if *stop.borrow() {
                    break "the workload is over";
                }
                if Instant::now() >= deadline {
                    break "time limit";
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = stop.changed() => {}
                }
            };
            // Where the follower's log stands before anything can reach it.
            let log = ctx.cluster.log_path(lag.node);
            let log_offset = log.as_deref().map_or(0, file_len);
            ctx.net.set_unreachable(lag.node, false);
            let held = lag.since.elapsed();
            let what = match seen {
                Some((leader, lp)) => {
                    if let (Some(log), Some(goal)) =
                        (log, (lp.applied > lag.left_at).then_some(lp.applied))
                    {
                        ctx.background.spawn(observe(Observation {
                            cluster: ctx.cluster.clone(),
                            recorder: ctx.recorder.clone(),
                            node: lag.node,
                            applied: lag.applied,
                            goal,
                            log_offset,
                            log,
                        }));
                    }
                    format!(
                        "node {} let back after {:.1} s ({why}): leader {leader} at applied {} / last log index {}, {} entries past the {} it was cut off at (needed {})",
                        lag.node,
                        held.as_secs_f64(),
                        lp.applied,
                        lp.last_log_index,
                        lp.applied.saturating_sub(lag.left_at),
                        lag.left_at,
                        self.lead()
                    )
                }
                None => format!(
                    "node {} let back after {:.1} s ({why}); no leader was seen meanwhile",
                    lag.node,
                    held.as_secs_f64()
                ),
            };
            Ok(what)
        })
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// What a healed follower is watched for.
struct Observation {
    cluster: Arc<Cluster>,
    recorder: Recorder,
    node: u64,
    /// Its applied index when it was cut off.
    applied: u64,
    /// The leader's applied index when the follower was let back.
    goal: u64,
    /// Its log file, and how long it was when the follower was let back.
    log: PathBuf,
    log_offset: u64,
}

/// Watches the follower reach `goal` and records how it got there.
async fn observe(o: Observation) {
    let start = Instant::now();
    let mut last: Option<Progress> = None;
    let caught_up = loop {
        if let Some(p) = node_progress(&o.cluster, o.node).await {
            last = Some(p);
            if p.applied >= o.goal {
                break true;
            }
        }
        if start.elapsed() >= CATCH_UP_LIMIT {
            break false;
        }
        tokio::time::sleep(POLL).await;
    };
    let installs = count_in_log(&o.log, o.log_offset, INSTALLED_SNAPSHOT);
    let now = last.map_or(0, |p| p.applied);
    let what = if caught_up && installs > 0 {
        format!(
            "{BY_SNAPSHOT}: applied {} -> {now} (goal {}) within {:.1} s; its log says {INSTALLED_SNAPSHOT:?} {installs} time(s)",
            o.applied,
            o.goal,
            start.elapsed().as_secs_f64()
        )
    } else if caught_up {
        format!(
            "{BY_LOG}: applied {} -> {now} (goal {}) within {:.1} s, no snapshot installed",
            o.applied,
            o.goal,
            start.elapsed().as_secs_f64()
        )
    } else {
        format!(
            "{NOT_CAUGHT_UP} within {CATCH_UP_LIMIT:?}: applied {} -> {now}, goal {}; snapshots installed meanwhile: {installs}",
            o.applied, o.goal
        )
    };
    tracing::info!(nemesis = "lagging", node = o.node, %what, "follower catch-up");
    o.recorder
        .nemesis(EventType::Info, format!("lagging: node {} {what}", o.node));
}

/// Lines of `path` after byte `offset` that contain `needle`.
fn count_in_log(path: &Path, offset: u64, needle: &str) -> usize {
    let read = || -> std::io::Result<String> {
        let mut f = std::fs::File::open(path)?;
        f.seek(SeekFrom::Start(offset))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    read()
        .map(|text| text.lines().filter(|l| l.contains(needle)).count())
        .unwrap_or(0)
}

/// How the lagging followers of a run caught up, from its history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LagSummary {
    /// Followers cut off.
    pub cut_off: u64,
    /// Caught up by installing a snapshot.
    pub by_snapshot: u64,
    /// Caught up from the log (the leader still had the entries).
    pub by_log: u64,
    /// Not caught up within [`CATCH_UP_LIMIT`].
    pub not_caught_up: u64,
}

impl LagSummary {
    /// Counts the lagging nemesis's events of `history`.
    pub fn of(history: &[Event]) -> Self {
        let mut s = Self::default();
        for e in history.iter().filter(|e| e.f == Func::Nemesis) {
            let Some(text) = e.error.as_deref() else {
                continue;
            };
            let Some(rest) = text.strip_prefix("lagging: ") else {
                continue;
            };
            match e.kind {
                EventType::Ok if rest.contains(" cut off at log index ") => s.cut_off += 1,
                EventType::Info if rest.contains(BY_SNAPSHOT) => s.by_snapshot += 1,
                EventType::Info if rest.contains(BY_LOG) => s.by_log += 1,
                EventType::Info if rest.contains(NOT_CAUGHT_UP) => s.not_caught_up += 1,
                _ => {}
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nemesis_event(kind: EventType, text: &str) -> Event {
        let mut e = Event::new(0, kind, Func::Nemesis, "", 0);
        e.error = Some(text.to_string());
        e
    }

    #[test]
    fn summary_counts_cut_offs_and_catch_ups() {
        let history = vec![
            nemesis_event(EventType::Invoke, "lagging: inject"),
            nemesis_event(
                EventType::Ok,
                "lagging: node 2 cut off at log index 40 (applied 39, leader 1); held until ...",
            ),
            nemesis_event(EventType::Ok, "lagging: heal: node 2 let back after 3.0 s"),
            nemesis_event(
                EventType::Info,
                "lagging: node 2 caught up by snapshot: applied 39 -> 300",
            ),
            nemesis_event(
                EventType::Ok,
                "lagging: node 3 cut off at log index 400 (applied 400, leader 1); held until ...",
            ),
            nemesis_event(
                EventType::Info,
                "lagging: node 3 caught up by log replication: applied 400 -> 420",
            ),
            nemesis_event(
                EventType::Ok,
                "lagging: node 1 cut off at log index 500 (applied 500, leader 2); held until ...",
            ),
            nemesis_event(
                EventType::Info,
                "lagging: node 1 did not catch up within 60s",
            ),
            nemesis_event(EventType::Ok, "partition: isolate leader 1 from [2, 3]"),
        ];
        assert_eq!(
            LagSummary::of(&history),
            LagSummary {
                cut_off: 3,
                by_snapshot: 1,
                by_log: 1,
                not_caught_up: 1
            }
        );
    }

    #[test]
    fn counts_log_lines_after_an_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node1.log");
        std::fs::write(&path, "a installed snapshot\nb\n").expect("write");
        let offset = file_len(&path);
        let mut text = std::fs::read_to_string(&path).expect("read");
        text.push_str("c installed snapshot revision=9\nd\ne installed snapshot\n");
        std::fs::write(&path, text).expect("write");
        assert_eq!(count_in_log(&path, 0, INSTALLED_SNAPSHOT), 3);
        assert_eq!(count_in_log(&path, offset, INSTALLED_SNAPSHOT), 2);
        assert_eq!(count_in_log(&dir.path().join("none"), 0, "x"), 0);
    }

    #[test]
    fn progress_reads_the_status_indexes() {
        let s = serde_json::json!({"raft": {"last_log_index": 12, "committed": 11, "applied": 10, "state": "Follower"}});
        let p = progress(&s);
        assert_eq!((p.last_log_index, p.applied), (12, 10));
    }
}
