//! The workload phase: the clients (and, by workload, the watchers or the
//! data-plane replicas with their readers), the nemeses and the progress line,
//! running until the run time is up or a signal arrives.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::setup::Setup;
use super::{RunConfig, Workload};
use crate::checker::watch::Watcher;
use crate::client::NodeClient;
use crate::history::Recorder;
use crate::members::Endpoints;
use crate::nemesis::{self, Background, Context, NemesisStats};
use crate::report;
use crate::workload::register as register_workload;
use crate::workload::replica::{self as replica_workload, ReplicaLog};
use crate::workload::watch as watch_workload;

/// Everything the workload started, for the teardown to stop and collect.
pub(super) struct Running {
    /// `true` stops the clients, readers and nemeses.
    pub(super) stop_tx: watch::Sender<bool>,
    pub(super) node_clients: Vec<NodeClient>,
    /// The writing (or register) clients.
    pub(super) tasks: Vec<JoinHandle<()>>,
    /// The revision the watchers must reach, and by when, before they stop.
    pub(super) target_tx: watch::Sender<Option<(u64, Instant)>>,
    pub(super) watchers: Vec<(Arc<Mutex<Watcher>>, JoinHandle<()>)>,
    pub(super) replicas: Vec<(Arc<ballast_client::Replica>, Arc<Mutex<ReplicaLog>>)>,
    pub(super) readers: Vec<JoinHandle<()>>,
    pub(super) nemesis_task: JoinHandle<NemesisStats>,
    /// Nemesis observers that outlive the schedule.
    pub(super) background: Background,
}

/// Starts the workload's clients and the nemeses against the ready cluster.
pub(super) async fn start(cfg: &RunConfig, setup: &Setup) -> anyhow::Result<Running> {
    tracing::info!(time = ?cfg.time, nemeses = ?cfg.nemeses, "--- workload");
    let (stop_tx, stop_rx) = watch::channel(false);
    let node_clients: Vec<NodeClient> = setup
        .ids
        .iter()
        .map(|&id| {
            NodeClient::new(id, &setup.clients_addr[&id], cfg.request_timeout)
                .map(|c| c.with_padding(cfg.padding))
        })
        .collect::<anyhow::Result<_>>()?;
    let endpoints = Endpoints::new(node_clients.clone(), setup.cluster.members().clone());
    // The members at the start: one watcher or replica per member.
    let initial: Vec<NodeClient> = node_clients
        .iter()
        .filter(|c| setup.cluster.members().contains(c.node))
        .cloned()
        .collect();
    let mut tasks = Vec::new();
    let (target_tx, target_rx) = watch::channel(None);
    let mut watchers = Vec::new();
    for i in 0..cfg.register.clients {
        tasks.push(match cfg.workload {
            Workload::Register => tokio::spawn(register_workload::client(
                i,
                endpoints.clone(),
                cfg.register.clone(),
                setup.rec.clone(),
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
                endpoints.clone(),
                setup.rec.clone(),
                stop_rx.clone(),
            )),
        });
    }
    if cfg.workload == Workload::Watch {
        for (i, c) in initial.iter().enumerate() {
            let log = Arc::new(Mutex::new(Watcher {
                name: format!("w{}@node{}", i + 1, c.node),
                sessions: Vec::new(),
            }));
            let task = tokio::spawn(watch_workload::watcher(
                i,
                endpoints.clone(),
                log.clone(),
                target_rx.clone(),
            ));
            watchers.push((log, task));
        }
    }
    let mut replicas = Vec::new();
    let mut readers = Vec::new();
    if cfg.workload == Workload::Replica {
        let endpoints: Vec<String> = initial.iter().map(|c| c.base().to_string()).collect();
        for (i, c) in initial.iter().enumerate() {
            // Each replica prefers a different node first.
            let mut eps = endpoints.clone();
            eps.rotate_left(i);
            let mut builder = ballast_client::Replica::builder(eps)
                .endpoints_in_order(true)
                .prefix(watch_workload::PREFIX)
                .cache_dir(setup.data.path().join(format!("replica{}", i + 1)))
                .id(format!("r{}@node{}", i + 1, c.node))
                .tls(crate::tls::client_options())
                .unsafe_skip_first_change(cfg.planted_replica_skip);
            if cfg.planted_replica_skip {
                tracing::warn!(
                    replica = i + 1,
                    "planted bug: the replica drops the first change of every stream"
                );
            }
            if let Some(token) = crate::auth::token() {
                builder = builder.token(token);
            }
            let replica = builder.start().await?;
            let replica = Arc::new(replica);
            let log = Arc::new(Mutex::new(ReplicaLog {
                name: format!("r{}", i + 1),
                ..ReplicaLog::default()
            }));
            replica_workload::recorder(&replica, log.clone(), cfg.padding);
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
        cluster: setup.cluster.clone(),
        net: setup.net.clone(),
        recorder: setup.rec.clone(),
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
    Ok(Running {
        stop_tx,
        node_clients: initial,
        tasks,
        target_tx,
        watchers,
        replicas,
        readers,
        nemesis_task,
        background,
    })
}

/// Logs progress every 10 s until the run time is up or `cancel` turns true.
/// Returns whether a signal cut the run short.
pub(super) async fn wait_for_end(
    cfg: &RunConfig,
    rec: &Recorder,
    mut cancel: watch::Receiver<bool>,
) -> bool {
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
    let interrupted = tokio::select! {
        _ = tokio::time::sleep(cfg.time) => false,
        _ = cancel.wait_for(|c| *c) => {
            tracing::warn!("interrupted: stopping early");
            true
        }
    };
    progress.abort();
    interrupted
}
