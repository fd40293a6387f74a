//! Setup: a clean output folder, the fault proxies on every peer link, and
//! the `ballastd` nodes, started and with a leader.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::RunConfig;
use crate::cluster::{Cluster, ClusterOptions, NodeSpec};
use crate::history::{Clock, Recorder};
use crate::proxy::Network;

/// A started cluster and what records it.
pub(super) struct Setup {
    /// Node data and replica caches; removed when dropped, at the end of the run.
    pub(super) data: tempfile::TempDir,
    pub(super) rec: Recorder,
    pub(super) ids: Vec<u64>,
    /// Node id -> client address.
    pub(super) clients_addr: BTreeMap<u64, String>,
    pub(super) net: Arc<Network>,
    pub(super) cluster: Arc<Cluster>,
}

/// Creates `out` and removes what an earlier run left there: node logs are
/// appended across restarts, so each run starts from clean files.
pub(super) fn prepare_out_dir(out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out)?;
    for entry in std::fs::read_dir(out)?.flatten() {
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
    Ok(())
}

/// Starts the proxies and the nodes and waits for a leader.
pub(super) async fn start_cluster(cfg: &RunConfig) -> anyhow::Result<Setup> {
    let data = tempfile::Builder::new().prefix("jepsen-lite-").tempdir()?;
    crate::cluster::register_temp_dir(data.path());
    anyhow::ensure!(cfg.ballastd.exists(), "no ballastd at {} (build it: cargo build -p ballast-store --bin ballastd, or pass --ballastd)", cfg.ballastd.display());
    let clock = Clock::new();
    let rec = Recorder::new(clock);
    // Spares get ports, proxies and a data dir too, but start only when a
    // membership nemesis adds them.
    let ids: Vec<u64> = (1..=cfg.nodes + cfg.spares).collect();
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
    let mut env = vec![(
        "RUST_LOG".into(),
        std::env::var("BALLAST_LOG").unwrap_or_else(|_| "info".into()),
    )];
    if !cfg.planted_bugs.is_empty() {
        // At every start, so that a node the kill nemesis restarts keeps the
        // planted bug (a failpoint set over HTTP dies with the process).
        let points: Vec<String> = cfg
            .planted_bugs
            .iter()
            .map(|p| format!("{p}=return"))
            .collect();
        env.push(("FAILPOINTS".into(), points.join(";")));
    }
    let mut extra_args = cfg.node_args.clone();
    let join_token = data.path().join("join.token");
    if cfg.auth {
        // Every node may bootstrap auth (into its own data dir); nodes that
        // join later send the token the run adopts.
        extra_args.push("--auth".into());
        extra_args.push(format!("--join-token-file={}", join_token.display()));
    }
    if cfg.tls {
        crate::tls::enable(&data.path().join("tls"))?;
        extra_args.extend(crate::tls::node_args());
    }
    let opts = ClusterOptions {
        ballastd: cfg.ballastd.clone(),
        extra_args,
        env,
    };
    let initial = usize::try_from(cfg.nodes)?;
    let cluster = Arc::new(Cluster::new(opts, specs, initial)?);
    cluster.start_all()?;
    tracing::info!(nodes = cfg.nodes, out = %cfg.out.display(), "--- cluster started, waiting for a leader");
    cluster.wait_ready(Duration::from_secs(30)).await?;
    if cfg.auth {
        let dirs: Vec<std::path::PathBuf> = ids
            .iter()
            .map(|id| data.path().join(format!("node{id}")))
            .collect();
        let dirs: Vec<&std::path::Path> = dirs.iter().map(|d| d.as_path()).collect();
        let endpoints: Vec<String> = ids
            .iter()
            .map(|id| crate::tls::url(&clients_addr[id]))
            .collect();
        crate::auth::adopt_initial_token(&dirs, &endpoints, &join_token, Duration::from_secs(30))
            .await?;
    }
    plant_bugs(cfg, &cluster, &cluster.ids()).await?;
    rec.nemesis(crate::history::EventType::Info, "cluster ready".to_string());
    Ok(Setup {
        data,
        rec,
        ids,
        clients_addr,
        net,
        cluster,
    })
}

/// Sets the planted-bug failpoints on every node. They are on from the start
/// already (`FAILPOINTS`), but a ballastd without the `failpoints` feature
/// ignores that variable: setting them over HTTP is what proves the bugs are
/// there, and refuses the run if they cannot be.
async fn plant_bugs(cfg: &RunConfig, cluster: &Cluster, ids: &[u64]) -> anyhow::Result<()> {
    for &name in &cfg.planted_bugs {
        for &id in ids {
            let client = cluster
                .client(id)
                .ok_or_else(|| anyhow::anyhow!("no client for node {id}"))?;
            client.failpoint(name, Some("return")).await?;
        }
        tracing::warn!(failpoint = name, "planted bug set on every node");
    }
    Ok(())
}
