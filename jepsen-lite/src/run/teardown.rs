//! The teardown: stop the clients, heal every fault, wait for the nodes to
//! converge and for the replicas or watchers to catch up with the last
//! acknowledged write, then stop the nodes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::workload::Running;
use super::{RunConfig, Workload};
use crate::checker::watch::Watcher;
use crate::checker::Verdict;
use crate::client::NodeClient;
use crate::cluster::Cluster;
use crate::history::Recorder;
use crate::nemesis::NemesisStats;
use crate::proxy::Network;
use crate::workload::replica::{self as replica_workload, ReplicaReport};
use crate::workload::watch as watch_workload;

/// What the run left once everything stopped, for the checkers.
pub(super) struct Settled {
    pub(super) stats: NemesisStats,
    /// Whether all nodes reached one state after healing.
    pub(super) convergence: Verdict<String>,
    /// The replica checker's report (replica workload).
    pub(super) replica_report: Option<ReplicaReport>,
    /// What each watcher saw (watch workload).
    pub(super) watch_logs: Vec<Watcher>,
    /// (node, times started).
    pub(super) starts: Vec<(u64, u32)>,
}

/// Stops the workload and the nemeses, heals, lets everything settle and
/// stops the nodes.
pub(super) async fn stop_and_settle(
    cfg: &RunConfig,
    rec: &Recorder,
    cluster: Arc<Cluster>,
    net: Arc<Network>,
    running: Running,
) -> anyhow::Result<Settled> {
    let Running {
        stop_tx,
        node_clients,
        tasks,
        target_tx,
        watchers,
        mut replicas,
        readers,
        nemesis_task,
        background,
    } = running;
    let _ = stop_tx.send(true);
    tracing::info!("--- healing and stopping clients");
    // The last heals: a node rejoining must catch up before its promotion
    // (a membership nemesis gives each step 30 s).
    let stats: NemesisStats =
        match tokio::time::timeout(Duration::from_secs(90), nemesis_task).await {
            Ok(Ok(s)) => s,
            _ => {
                tracing::warn!("the nemeses did not finish healing in time");
                NemesisStats::default()
            }
        };
    net.heal_all();
    // The members, as the membership nemeses left them; removed nodes and
    // spares stay stopped.
    for id in cluster.ids() {
        if cluster.running(id) {
            let _ = cluster.resume(id);
        } else {
            let _ = cluster.start(id);
        }
    }
    // A client finishes within its request timeout; with --client-retries,
    // once its retry deadline has passed and the last attempt ended.
    let last_request = if cfg.register.client_retries {
        cfg.request_timeout + crate::client::retrying::RETRY_DEADLINE
    } else {
        cfg.request_timeout
    };
    for t in tasks {
        if tokio::time::timeout(last_request + Duration::from_secs(2), t)
            .await
            .is_err()
        {
            tracing::warn!("a client did not stop in time");
        }
    }
    let convergence = converge(&cluster, Duration::from_secs(20)).await;
    // With the nodes converged, what the nemeses still watch has settled.
    let unfinished = background.finish(Duration::from_secs(10)).await;
    if unfinished > 0 {
        tracing::warn!(unfinished, "nemesis observers did not finish in time");
    }
    for r in readers {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    let replica_report = if cfg.workload == Workload::Replica {
        let last = last_write_revision(rec);
        tracing::info!(revision = last, "--- waiting for replicas to converge");
        let (cluster_rev, cluster_kvs) = read_prefix(&node_clients).await?;
        let outage = stats_has(&stats, "outage");
        let writes = watch_workload::writes(&rec.snapshot());
        let report =
            replica_workload::check(&replicas, &writes, last, &cluster_kvs, cluster_rev, outage)
                .await;
        std::fs::write(
            cfg.out.join("replica.json"),
            serde_json::to_string(&report)?,
        )?;
        for (r, _) in replicas.drain(..) {
            if let Ok(r) = Arc::try_unwrap(r) {
                r.shutdown().await;
            }
        }
        Some(report)
    } else {
        None
    };
    // Watchers: with the writers stopped and every fault healed, each must
    // catch up to the last acknowledged write.
    let mut watch_logs = Vec::new();
    if cfg.workload == Workload::Watch {
        let last = last_write_revision(rec);
        tracing::info!(revision = last, "--- waiting for watchers to catch up");
        let _ = target_tx.send(Some((last, Instant::now() + Duration::from_secs(20))));
        for (log, task) in watchers {
            if tokio::time::timeout(Duration::from_secs(25), task)
                .await
                .is_err()
            {
                tracing::warn!("a watcher did not stop in time");
            }
            let w = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
            watch_logs.push(w);
        }
        std::fs::write(
            cfg.out.join("watch.json"),
            serde_json::to_string(&watch_logs)?,
        )?;
    }
    let starts = cluster.starts();
    cluster.stop_all(Duration::from_secs(3));
    drop(cluster);
    drop(net);
    Ok(Settled {
        stats,
        convergence,
        replica_report,
        watch_logs,
        starts,
    })
}

/// The revision of the last acknowledged write under the watch prefix (0: none).
fn last_write_revision(rec: &Recorder) -> u64 {
    watch_workload::writes(&rec.snapshot())
        .iter()
        .filter_map(|w| w.revision)
        .max()
        .unwrap_or(0)
}

/// Waits until every member reports the same revision and state hash, and
/// the same members: the ones jepsen-lite added and did not remove.
async fn converge(cluster: &Cluster, timeout: Duration) -> Verdict<String> {
    let deadline = Instant::now() + timeout;
    let ids = cluster.ids();
    loop {
        let mut seen = Vec::new();
        for &id in &ids {
            let Some(c) = cluster.client(id) else {
                continue;
            };
            if let Some(s) = c.status().await {
                seen.push(NodeState::of(c.node, &s));
            }
        }
        let all = seen.len() == ids.len();
        if all
            && seen.iter().all(|n| n.members == ids)
            && seen
                .windows(2)
                .all(|w| w[0].revision == w[1].revision && w[0].state_hash == w[1].state_hash)
        {
            return Verdict::Pass;
        }
        if Instant::now() >= deadline {
            return Verdict::Fail {
                errors: vec![format!(
                    "members {ids:?} did not converge within {timeout:?}: {}",
                    seen.iter()
                        .map(NodeState::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                )],
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a node's status says, for the convergence check.
struct NodeState {
    node: u64,
    revision: u64,
    state_hash: String,
    /// The members in its view, in id order.
    members: Vec<u64>,
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {}: revision {}, state_hash {}, members {:?}",
            self.node, self.revision, self.state_hash, self.members
        )
    }
}

impl NodeState {
    fn of(node: u64, s: &serde_json::Value) -> Self {
        let mut members: Vec<u64> = s
            .get("members")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("id").and_then(|v| v.as_u64()))
            .collect();
        members.sort_unstable();
        Self {
            node,
            revision: s.get("revision").and_then(|v| v.as_u64()).unwrap_or(0),
            state_hash: s
                .get("state_hash")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
            members,
        }
    }
}

/// Whether the nemesis statistics show at least one `name` fault injected.
fn stats_has(stats: &NemesisStats, name: &str) -> bool {
    stats.injected.get(name).is_some_and(|n| *n > 0)
}

/// A linearizable read of the watch prefix from the first node that answers:
/// (revision, key -> value).
async fn read_prefix(clients: &[NodeClient]) -> anyhow::Result<(u64, BTreeMap<String, Vec<u8>>)> {
    let http = crate::tls::apply(reqwest::Client::builder())
        .default_headers(crate::auth::headers())
        .timeout(Duration::from_secs(5))
        .build()?;
    for _ in 0..50 {
        for c in clients {
            let url = format!("{}/v1/kv/{}?prefix=true", c.base(), watch_workload::PREFIX);
            let Ok(resp) = http.get(&url).send().await else {
                continue;
            };
            if !resp.status().is_success() {
                continue;
            }
            let Ok(body) = resp.json::<serde_json::Value>().await else {
                continue;
            };
            let revision = body["revision"].as_u64().unwrap_or(0);
            let kvs = body["kvs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|kv| {
                    Some((
                        kv["key"].as_str()?.to_string(),
                        kv["value"].as_str()?.as_bytes().to_vec(),
                    ))
                })
                .collect();
            return Ok((revision, kvs));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("no node answered a linearizable read of the prefix")
}
