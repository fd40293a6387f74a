//! One run: start proxies and nodes, run the workload under the nemeses,
//! stop everything, check the history and write the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::json;

use crate::checker::register::{self, RegisterError, RegisterReport};
use crate::checker::watch::{self as watch_checker, WatchError, Watcher};
use crate::checker::Verdict;
use crate::client::{NodeClient, Padding};
use crate::cluster::{Cluster, ClusterOptions, NodeSpec};
use crate::history::{self, Clock, Event, Recorder};
use crate::nemesis::lagging::LagSummary;
use crate::nemesis::{self, Background, Context, NemesisOptions, NemesisStats, Schedule};
use crate::proxy::Network;
use crate::report::{self, timeline};
use crate::workload::register::{self as register_workload, RegisterOptions};
use crate::workload::replica::{self as replica_workload, ReplicaLog};
use crate::workload::watch as watch_workload;

/// Which workload a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Reads, writes and CAS on a few keys; linearizability.
    Register,
    /// Writers under a prefix, one SSE watcher per node; the watch guarantees.
    Watch,
    /// Writers under a prefix, one data-plane replica per node; the replica
    /// guarantees.
    Replica,
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// `ballastd` binary.
    pub ballastd: PathBuf,
    /// Output folder (history, node logs, report).
    pub out: PathBuf,
    /// Nodes (3 or 5).
    pub nodes: u64,
    /// Workload duration.
    pub time: Duration,
    /// Nemesis names.
    pub nemeses: Vec<String>,
    /// Settings of the nemeses that need more than a name.
    pub nemesis_options: NemesisOptions,
    /// Fault schedule.
    pub schedule: Schedule,
    /// Workload.
    pub workload: Workload,
    /// Register workload settings (the watch workload's writers use the
    /// client count, keys and think time).
    pub register: RegisterOptions,
    /// Client request timeout (an answer later than this is `info`).
    pub request_timeout: Duration,
    /// Size of the values written (every workload's writes and CAS).
    pub padding: Padding,
    /// Extra ballastd flags.
    pub node_args: Vec<String>,
    /// Checker time limit.
    pub check_limit: Duration,
    /// Seed.
    pub seed: u64,
}

/// What a run found.
#[derive(Debug)]
pub struct RunOutcome {
    /// Register checker result.
    pub register: RegisterReport,
    /// Watch checker result (watch workload).
    pub watch: Option<Verdict<WatchError>>,
    /// Whether all nodes converged to one state after healing.
    pub convergence: Verdict<String>,
    /// Whether every check passed.
    pub pass: bool,
    /// Whether nothing failed and yet the run is no pass: a checker could
    /// not decide, or no write took effect.
    pub unknown: bool,
    /// Whether a signal cut the workload short.
    pub interrupted: bool,
}

async fn converge(cluster: &Cluster, timeout: Duration) -> Verdict<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut seen = Vec::new();
        for c in &cluster.clients {
            if let Some(s) = c.status().await {
                seen.push((
                    c.node,
                    s.get("revision").and_then(|v| v.as_u64()).unwrap_or(0),
                    s.get("state_hash")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string(),
                ));
            }
        }
        let all = seen.len() == cluster.clients.len();
        if all
            && seen
                .windows(2)
                .all(|w| w[0].1 == w[1].1 && w[0].2 == w[1].2)
        {
            return Verdict::Pass;
        }
        if Instant::now() >= deadline {
            return Verdict::Fail {
                errors: vec![format!("nodes did not converge within {timeout:?}: (node, revision, state_hash) = {seen:?}")],
            };
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the register workload; `cancel` turning true (a signal) ends the
/// workload early, and the run still tears down and checks what it has.
pub async fn run(
    cfg: RunConfig,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<RunOutcome> {
    std::fs::create_dir_all(&cfg.out)?;
    // Node logs are appended across restarts: start from clean files.
    for entry in std::fs::read_dir(&cfg.out)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let ours = (name.starts_with("node") && name.ends_with(".log"))
            || [
                "history.jsonl",
                "timeline.html",
                "summary.txt",
                "results.json",
            ]
            .contains(&name.as_str());
        if ours {
            std::fs::remove_file(entry.path())?;
        }
    }
    let data = tempfile::Builder::new().prefix("jepsen-lite-").tempdir()?;
    crate::cluster::register_temp_dir(data.path());
    anyhow::ensure!(cfg.ballastd.exists(), "no ballastd at {} (build it: cargo build -p ballast-store --bin ballastd, or pass --ballastd)", cfg.ballastd.display());
    let clock = Clock::new();
    let rec = Recorder::new(clock);
    let ids: Vec<u64> = (1..=cfg.nodes).collect();
    let mut peers = BTreeMap::new();
    let mut clients_addr = BTreeMap::new();
    for &id in &ids {
        peers.insert(id, format!("127.0.0.1:{}", crate::cluster::free_port()?));
        clients_addr.insert(id, format!("127.0.0.1:{}", crate::cluster::free_port()?));
    }
    let net = Arc::new(Network::start(&peers, rec.clone()).await?);
    let specs = ids
        .iter()
        .map(|&id| NodeSpec {
            id,
            client_addr: clients_addr[&id].clone(),
            peer_addr: peers[&id].clone(),
            data_dir: data.path().join(format!("node{id}")),
            log: cfg.out.join(format!("node{id}.log")),
            dial_overrides: net.dial_overrides(id),
        })
        .collect();
    let opts = ClusterOptions {
        ballastd: cfg.ballastd.clone(),
        extra_args: cfg.node_args.clone(),
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("BALLAST_LOG").unwrap_or_else(|_| "info".into()),
        )],
    };
    let cluster = Arc::new(Cluster::new(opts, specs)?);
    cluster.start_all()?;
    tracing::info!(nodes = cfg.nodes, out = %cfg.out.display(), "--- cluster started, waiting for a leader");
    cluster.wait_ready(Duration::from_secs(30)).await?;
    rec.nemesis(crate::history::EventType::Info, "cluster ready".to_string());

    tracing::info!(time = ?cfg.time, nemeses = ?cfg.nemeses, "--- workload");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let node_clients: Vec<NodeClient> = ids
        .iter()
        .map(|&id| {
            NodeClient::new(id, &clients_addr[&id], cfg.request_timeout)
                .map(|c| c.with_padding(cfg.padding))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut tasks = Vec::new();
    let (target_tx, target_rx) = tokio::sync::watch::channel(None);
    let mut watchers: Vec<(Arc<std::sync::Mutex<Watcher>>, tokio::task::JoinHandle<()>)> =
        Vec::new();
    for i in 0..cfg.register.clients {
        tasks.push(match cfg.workload {
            Workload::Register => tokio::spawn(register_workload::client(
                i,
                node_clients.clone(),
                cfg.register.clone(),
                rec.clone(),
                stop_rx.clone(),
            )),
            Workload::Watch | Workload::Replica => tokio::spawn(watch_workload::writer(
                watch_workload::WriterOptions {
                    index: i,
                    clients: cfg.register.clients,
                    keys: cfg.register.keys,
                    think: cfg.register.think,
                    seed: cfg.seed,
                },
                node_clients.clone(),
                rec.clone(),
                stop_rx.clone(),
            )),
        });
    }
    if cfg.workload == Workload::Watch {
        for (i, c) in node_clients.iter().enumerate() {
            let log = Arc::new(std::sync::Mutex::new(Watcher {
                name: format!("w{}@node{}", i + 1, c.node),
                sessions: Vec::new(),
            }));
            let task = tokio::spawn(watch_workload::watcher(
                i,
                node_clients.clone(),
                log.clone(),
                target_rx.clone(),
            ));
            watchers.push((log, task));
        }
    }
    let mut replicas: Vec<(
        Arc<ballast_client::Replica>,
        Arc<std::sync::Mutex<ReplicaLog>>,
    )> = Vec::new();
    let mut readers = Vec::new();
    if cfg.workload == Workload::Replica {
        let endpoints: Vec<String> = node_clients.iter().map(|c| c.base().to_string()).collect();
        for (i, c) in node_clients.iter().enumerate() {
            // Each replica prefers a different node first.
            let mut eps = endpoints.clone();
            eps.rotate_left(i);
            let replica = ballast_client::Replica::builder(eps)
                .prefix(watch_workload::PREFIX)
                .cache_dir(data.path().join(format!("replica{}", i + 1)))
                .id(format!("r{}@node{}", i + 1, c.node))
                .start()
                .await?;
            let replica = Arc::new(replica);
            let log = Arc::new(std::sync::Mutex::new(ReplicaLog {
                name: format!("r{}", i + 1),
                ..ReplicaLog::default()
            }));
            readers.push(tokio::spawn(replica_workload::reader(
                replica.clone(),
                log.clone(),
                stop_rx.clone(),
            )));
            replicas.push((replica, log));
        }
    }
    let nemeses = cfg
        .nemeses
        .iter()
        .map(|n| nemesis::by_name(n, &cfg.nemesis_options))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let background = Background::default();
    let ctx = Context {
        cluster: cluster.clone(),
        net: net.clone(),
        recorder: rec.clone(),
        stop: stop_rx.clone(),
        background: background.clone(),
    };
    let nemesis_task = tokio::spawn(nemesis::run(
        nemeses,
        ctx,
        cfg.schedule.clone(),
        cfg.seed,
        stop_rx.clone(),
    ));
    let progress = {
        let rec = rec.clone();
        let total = cfg.time;
        tokio::spawn(async move {
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let c = report::count(&rec.snapshot());
                tracing::info!(
                    elapsed = start.elapsed().as_secs(),
                    of = total.as_secs(),
                    ops = c.ops,
                    ok = c.ok,
                    fail = c.fail,
                    info = c.info,
                    "progress"
                );
            }
        })
    };
    let mut cancel = cancel;
    let interrupted = tokio::select! {
        _ = tokio::time::sleep(cfg.time) => false,
        _ = cancel.wait_for(|c| *c) => {
            tracing::warn!("interrupted: stopping early");
            true
        }
    };
    progress.abort();
    let _ = stop_tx.send(true);
    tracing::info!("--- healing and stopping clients");
    let stats: NemesisStats =
        match tokio::time::timeout(Duration::from_secs(30), nemesis_task).await {
            Ok(Ok(s)) => s,
            _ => NemesisStats::default(),
        };
    net.heal_all();
    for id in cluster.ids() {
        if cluster.running(id) {
            let _ = cluster.resume(id);
        } else {
            let _ = cluster.start(id);
        }
    }
    for t in tasks {
        // A client finishes within its request timeout.
        if tokio::time::timeout(cfg.request_timeout + Duration::from_secs(2), t)
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
        let last = watch_workload::writes(&rec.snapshot())
            .iter()
            .filter_map(|w| w.revision)
            .max()
            .unwrap_or(0);
        tracing::info!(revision = last, "--- waiting for replicas to converge");
        let (cluster_rev, cluster_kvs) = read_prefix(&node_clients).await?;
        let outage = stats_has(&stats, "outage");
        let report =
            replica_workload::check(&replicas, last, &cluster_kvs, cluster_rev, outage).await;
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
        let last = watch_workload::writes(&rec.snapshot())
            .iter()
            .filter_map(|w| w.revision)
            .max()
            .unwrap_or(0);
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

    let events = rec.snapshot();
    let hist_path = cfg.out.join("history.jsonl");
    history::write_jsonl(&hist_path, &events)?;
    tracing::info!(events = events.len(), "--- checking");
    let reg = register::check(&events, cfg.check_limit);
    let watch = (cfg.workload == Workload::Watch).then(|| {
        let writes = watch_workload::writes(&events);
        let last = writes.iter().filter_map(|w| w.revision).max();
        watch_checker::check(&writes, &watch_logs, last)
    });
    let counts = report::count(&events);
    let lagging = cfg
        .nemeses
        .iter()
        .any(|n| n == "lagging")
        .then(|| LagSummary::of(&events));
    // A run in which no write took effect checked nothing: not a pass.
    let writes_acknowledged = acknowledged_writes(&events);
    let idle = writes_acknowledged == 0;
    if idle {
        tracing::warn!("no write was acknowledged during the whole run: nothing was checked");
    }
    let replica_ok = replica_report.as_ref().is_none_or(|r| r.is_pass());
    let pass = reg.verdict.is_pass()
        && convergence.is_pass()
        && watch.as_ref().is_none_or(|w| w.is_pass())
        && replica_ok
        && !idle;
    let failed = matches!(reg.verdict, Verdict::Fail { .. })
        || matches!(convergence, Verdict::Fail { .. })
        || watch.as_ref().is_some_and(|w| !w.is_pass())
        || !replica_ok;
    // Not failed and not passed: a checker could not decide, or no write
    // took effect.
    let unknown = !failed && !pass;
    let summary = summary(
        &cfg,
        &Findings {
            c: &counts,
            stats: &stats,
            reg: &reg,
            watch: watch.as_ref(),
            conv: &convergence,
            starts: &starts,
            lagging: lagging.as_ref(),
            writes_acknowledged,
            replica_ok,
        },
        &hist_path,
    );
    let summary = match &replica_report {
        None => summary,
        Some(r) => {
            let reads: u64 = r.logs.iter().map(|l| l.reads).sum();
            let offline: u64 = r.logs.iter().map(|l| l.reads_disconnected).sum();
            let mut section = format!(
                "checker replica (never backwards, answering through outages, converging): {}\n  {} replicas, {reads} reads, {offline} while disconnected from the cluster\n",
                if r.is_pass() { "pass" } else { "FAIL" },
                r.logs.len()
            );
            for e in &r.errors {
                section.push_str(&format!("  - {e}\n"));
            }
            // Before the history line and the verdict, with the other checkers.
            match summary.find("history: ") {
                Some(at) => format!("{}{section}{}", &summary[..at], &summary[at..]),
                None => format!("{summary}{section}"),
            }
        }
    };
    println!("{summary}");
    std::fs::write(cfg.out.join("summary.txt"), &summary)?;
    std::fs::write(
        cfg.out.join("results.json"),
        serde_json::to_string_pretty(&json!({
            "counts": counts, "nemesis": stats, "register": reg, "watch": watch, "convergence": convergence,
            "pass": pass, "nodes": cfg.nodes, "time_s": cfg.time.as_secs(), "nemeses": cfg.nemeses, "seed": cfg.seed,
            "value_size": cfg.padding.size(), "lagging": lagging,
        }))?,
    )?;
    if let Verdict::Fail { .. } = reg.verdict {
        write_timeline(&cfg.out, &reg, &events)?;
    }
    Ok(RunOutcome {
        register: reg,
        watch,
        convergence,
        pass,
        unknown,
        interrupted,
    })
}

/// Writes `timeline.html` for the first violations of a register report.
pub fn write_timeline(
    out: &Path,
    reg: &RegisterReport,
    events: &[Event],
) -> anyhow::Result<PathBuf> {
    let mut sections = Vec::new();
    if let Verdict::Fail { errors } = &reg.verdict {
        // Per key: its non-linearizable search result first, then its first
        // stale read; other errors as text.
        let mut picked: Vec<&RegisterError> = Vec::new();
        let mut seen_stale = std::collections::HashSet::new();
        for e in errors
            .iter()
            .filter(|e| matches!(e, RegisterError::NonLinearizable { .. }))
        {
            picked.push(e);
        }
        for e in errors {
            match e {
                RegisterError::NonLinearizable { .. } => {}
                RegisterError::StaleRead { key, .. } => {
                    if seen_stale.insert(key.clone()) {
                        picked.push(e);
                    }
                }
                other => picked.push(other),
            }
        }
        for e in picked.into_iter().take(12) {
            if let Some(s) = timeline::render(&reg.ops, events, e) {
                sections.push(s);
            } else {
                sections.push(
                    format!("<p>{}</p>", e)
                        .replace('<', "&lt;")
                        .replacen("&lt;p>", "<p>", 1)
                        .replace("&lt;/p>", "</p>"),
                );
            }
        }
    }
    let path = out.join("timeline.html");
    std::fs::write(
        &path,
        timeline::page("jepsen-lite: register violations", &sections),
    )
    .context("writing timeline.html")?;
    Ok(path)
}

/// What a run found, for the summary.
struct Findings<'a> {
    c: &'a report::Counts,
    stats: &'a NemesisStats,
    reg: &'a RegisterReport,
    watch: Option<&'a Verdict<WatchError>>,
    conv: &'a Verdict<String>,
    starts: &'a [(u64, u32)],
    lagging: Option<&'a LagSummary>,
    /// Writes and successful CAS acknowledged.
    writes_acknowledged: usize,
    /// Whether the replica checker (if it ran) passed.
    replica_ok: bool,
}

fn summary(cfg: &RunConfig, f: &Findings<'_>, hist: &Path) -> String {
    use std::fmt::Write;
    let Findings {
        c,
        stats,
        reg,
        watch,
        conv,
        starts,
        lagging,
        writes_acknowledged,
        replica_ok,
    } = *f;
    let mut s = String::new();
    let _ = writeln!(s, "== jepsen-lite summary");
    let _ = writeln!(
        s,
        "workload {:?}, {} nodes, {} clients, {} keys, {}s, nemesis {:?}, seed {}, values {}",
        cfg.workload,
        cfg.nodes,
        cfg.register.clients,
        cfg.register.keys,
        cfg.time.as_secs(),
        cfg.nemeses,
        cfg.seed,
        match cfg.padding.size() {
            Some(n) => format!("{n} bytes"),
            None => "unpadded".to_string(),
        }
    );
    let _ = writeln!(
        s,
        "operations: {} (ok {}, fail {}, info {}); ok by function: {:?}",
        c.ops, c.ok, c.fail, c.info, c.ok_by_f
    );
    if writes_acknowledged == 0 {
        let _ = writeln!(
            s,
            "no write was acknowledged in {}s: the checkers had nothing to check",
            cfg.time.as_secs()
        );
    }
    let _ = writeln!(
        s,
        "faults injected: {:?} (failed injections: {}); node starts: {:?}",
        stats.injected, stats.failed, starts
    );
    if let Some(l) = lagging {
        let _ = writeln!(
            s,
            "lagging followers: {} cut off; caught up by snapshot {}, by log replication {}, not within {:?} {}, not observed {} (snapshot-logs {})",
            l.cut_off,
            l.by_snapshot,
            l.by_log,
            crate::nemesis::lagging::CATCH_UP_LIMIT,
            l.not_caught_up,
            l.cut_off
                .saturating_sub(l.by_snapshot + l.by_log + l.not_caught_up),
            cfg.nemesis_options.lagging.snapshot_logs
        );
    }
    let _ = writeln!(
        s,
        "checker register (linearizability + version/mod_revision): {} in {} ms over {} keys",
        reg.verdict.label(),
        reg.elapsed_ms,
        reg.keys.len()
    );
    match &reg.verdict {
        Verdict::Fail { errors } => {
            for e in errors.iter().take(10) {
                let _ = writeln!(s, "  - {e}");
            }
            if errors.len() > 10 {
                let _ = writeln!(s, "  ... and {} more", errors.len() - 10);
            }
            let _ = writeln!(s, "  timeline: {}", cfg.out.join("timeline.html").display());
        }
        Verdict::Unknown { reason } => {
            let _ = writeln!(s, "  unknown: {reason}");
        }
        Verdict::Pass => {}
    }
    let _ = writeln!(
        s,
        "checker convergence (equal revision and state_hash after healing): {}",
        conv.label()
    );
    if let Verdict::Fail { errors } = conv {
        for e in errors {
            let _ = writeln!(s, "  - {e}");
        }
    }
    if let Some(w) = watch {
        let _ = writeln!(
            s,
            "checker watch (ordered, unique, reliable, atomic, resumable, bookmarkable, same events on every watcher): {}",
            w.label()
        );
        if let Verdict::Fail { errors } = w {
            for e in errors.iter().take(10) {
                let _ = writeln!(s, "  - {e}");
            }
            if errors.len() > 10 {
                let _ = writeln!(s, "  ... and {} more", errors.len() - 10);
            }
        }
    }
    let watch_fail = watch.is_some_and(|w| !w.is_pass());
    let verdict = if matches!(reg.verdict, Verdict::Fail { .. })
        || matches!(conv, Verdict::Fail { .. })
        || watch_fail
        || !replica_ok
    {
        "FAIL"
    } else if reg.verdict.is_pass() && conv.is_pass() && writes_acknowledged > 0 {
        "PASS"
    } else {
        "UNKNOWN"
    };
    let _ = writeln!(
        s,
        "history: {}  node logs: {}",
        hist.display(),
        cfg.out.display()
    );
    let _ = write!(s, "verdict: {verdict}");
    s
}

/// Writes and successful CAS that were acknowledged (took effect).
fn acknowledged_writes(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            e.kind == history::EventType::Ok
                && match e.f {
                    history::Func::Write => true,
                    history::Func::Cas => e.succeeded == Some(true),
                    _ => false,
                }
        })
        .count()
}

/// Whether the nemesis statistics show at least one `name` fault injected.
fn stats_has(stats: &NemesisStats, name: &str) -> bool {
    stats.injected.get(name).is_some_and(|n| *n > 0)
}

/// A linearizable read of the watch prefix from the first node that answers:
/// (revision, key -> value).
async fn read_prefix(clients: &[NodeClient]) -> anyhow::Result<(u64, BTreeMap<String, Vec<u8>>)> {
    let http = reqwest::Client::builder()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{EventType, Func};

    #[test]
    fn only_writes_that_took_effect_count_as_acknowledged() {
        let ev = |kind, f, succeeded| {
            let mut e = Event::new(1, kind, f, "k", 0);
            e.succeeded = succeeded;
            e
        };
        let events = vec![
            ev(EventType::Ok, Func::Read, None),
            ev(EventType::Info, Func::Write, None),
            ev(EventType::Fail, Func::Write, None),
            ev(EventType::Ok, Func::Cas, Some(false)),
        ];
        assert_eq!(acknowledged_writes(&events), 0);
        let more = [
            ev(EventType::Ok, Func::Write, None),
            ev(EventType::Ok, Func::Cas, Some(true)),
        ];
        let events: Vec<Event> = events.into_iter().chain(more).collect();
        assert_eq!(acknowledged_writes(&events), 2);
    }
}
