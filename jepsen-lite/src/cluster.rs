//! A cluster of `ballastd` processes on loopback: one OS process per node, in
//! its own process group, with its own data directory and log file. Only the
//! process groups started here are ever signalled, and every one of them is
//! resumed (SIGCONT) and killed when the cluster is dropped, even on panic.
//!
//! The first nodes form the initial cluster (`--initial-cluster`); the
//! others are spares that a membership nemesis starts with `--join`. Which
//! nodes are members right now is a [`MemberSet`]: a removed node is not
//! one, and the teardown restarts and checks only members.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::client::NodeClient;
use crate::members::MemberSet;

/// Process groups started by this process and not yet reaped: the emergency
/// teardown (signal watchdog) kills exactly these.
fn live_groups() -> &'static Mutex<BTreeMap<u32, u64>> {
    static LIVE: OnceLock<Mutex<BTreeMap<u32, u64>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Data directories to remove on an emergency exit (normally their
/// `TempDir` removes them).
fn temp_dirs() -> &'static Mutex<Vec<PathBuf>> {
    static DIRS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    DIRS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Registers a directory for [`emergency_teardown`] to remove.
pub fn register_temp_dir(path: &Path) {
    temp_dirs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(path.to_path_buf());
}

/// SIGCONT then SIGKILL to every process group this process started, then
/// removes the registered data directories. Safe to call from a watchdog
/// thread while the main thread is stuck, before `std::process::exit`.
pub fn emergency_teardown() {
    let groups: Vec<u32> = live_groups()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .copied()
        .collect();
    for pg in groups {
        if let Ok(pid) = i32::try_from(pg) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGCONT);
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    // Give the kernel a moment to reap the nodes before their files go.
    std::thread::sleep(Duration::from_millis(200));
    for dir in temp_dirs()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
    {
        let _ = std::fs::remove_dir_all(dir);
    }
}

pub use ballast_testkit::free_port;

/// Static description of one node.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// Node id (1-based).
    pub id: u64,
    /// HTTP API address.
    pub client_addr: String,
    /// Peer listener address.
    pub peer_addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Log file (appended across restarts).
    pub log: PathBuf,
    /// `--dial-overrides` value (the fault proxies of this node's outgoing links).
    pub dial_overrides: String,
}

struct NodeProc {
    spec: NodeSpec,
    child: Option<Child>,
    paused: bool,
    starts: u32,
    /// Started with `--join` (on an empty data dir) at least once: from then
    /// on it always restarts with `--join`, never with `--initial-cluster`,
    /// which could make a node that had not been added yet form a cluster
    /// of its own.
    joins: bool,
}

/// Settings shared by every node.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `ballastd` binary.
    pub ballastd: PathBuf,
    /// Extra flags for every node (timeouts, the planted-bug switch).
    pub extra_args: Vec<String>,
    /// Environment for every node (`RUST_LOG`, `FAILPOINTS`).
    pub env: Vec<(String, String)>,
}

/// The running cluster.
pub struct Cluster {
    opts: ClusterOptions,
    nodes: Mutex<Vec<NodeProc>>,
    initial_cluster: String,
    members: Arc<MemberSet>,
    /// Clients of each node's API, for status and readiness.
    pub clients: Vec<NodeClient>,
}

impl Cluster {
    /// Describes (does not start) a cluster of `specs`, the first `initial`
    /// of which form the initial cluster; the rest are spares.
    pub fn new(opts: ClusterOptions, specs: Vec<NodeSpec>, initial: usize) -> anyhow::Result<Self> {
        anyhow::ensure!(
            (1..=specs.len()).contains(&initial),
            "the initial cluster needs between 1 and {} nodes",
            specs.len()
        );
        let members = Arc::new(MemberSet::new(specs.iter().take(initial).map(|s| s.id)));
        let initial_cluster = specs
            .iter()
            .take(initial)
            .map(|s| format!("{}={}/{}", s.id, s.client_addr, s.peer_addr))
            .collect::<Vec<_>>()
            .join(",");
        let clients = specs
            .iter()
            .map(|s| NodeClient::new(s.id, &s.client_addr, Duration::from_millis(1000)))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let nodes = specs
            .into_iter()
            .map(|spec| NodeProc {
                spec,
                child: None,
                paused: false,
                starts: 0,
                joins: false,
            })
            .collect();
        Ok(Self {
            opts,
            nodes: Mutex::new(nodes),
            initial_cluster,
            members,
            clients,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<NodeProc>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ids of the current members (see [`MemberSet`]).
    pub fn ids(&self) -> Vec<u64> {
        self.members.all()
    }

    /// Every node id, members, spares and removed nodes.
    pub fn all_ids(&self) -> Vec<u64> {
        self.lock().iter().map(|n| n.spec.id).collect()
    }

    /// The current members, shared with the clients.
    pub fn members(&self) -> &Arc<MemberSet> {
        &self.members
    }

    /// Nodes that are neither members nor running: spares to add.
    pub fn spares(&self) -> Vec<u64> {
        self.lock()
            .iter()
            .filter(|n| n.child.is_none() && !self.members.contains(n.spec.id))
            .map(|n| n.spec.id)
            .collect()
    }

    /// Node `id`'s description.
    pub fn spec(&self, id: u64) -> Option<NodeSpec> {
        self.lock()
            .iter()
            .find(|n| n.spec.id == id)
            .map(|n| n.spec.clone())
    }

    /// Client of node `id`.
    pub fn client(&self, id: u64) -> Option<&NodeClient> {
        self.clients.iter().find(|c| c.node == id)
    }

    /// Starts every node.
    pub fn start_all(&self) -> anyhow::Result<()> {
        for id in self.ids() {
            self.start(id)?;
        }
        Ok(())
    }

    /// Starts node `id` as a new member: with `--join` the current members'
    /// client endpoints instead of `--initial-cluster`, and with `--join`
    /// again on every later restart. Its data directory should be empty.
    pub fn start_joining(&self, id: u64) -> anyhow::Result<u32> {
        if let Some(n) = self.lock().iter_mut().find(|n| n.spec.id == id) {
            n.joins = true;
        }
        self.start(id)
    }

    /// `--join` endpoints for node `id`: every other member's client API.
    fn join_endpoints(&self, nodes: &[NodeProc], id: u64) -> String {
        nodes
            .iter()
            .filter(|n| n.spec.id != id && self.members.contains(n.spec.id))
            .map(|n| crate::tls::url(&n.spec.client_addr))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts node `id` (again, on the same data directory).
    pub fn start(&self, id: u64) -> anyhow::Result<u32> {
        let mut nodes = self.lock();
        let join = self.join_endpoints(&nodes, id);
        let n = nodes
            .iter_mut()
            .find(|n| n.spec.id == id)
            .context("no such node")?;
        if n.child.is_some() {
            bail!("node {id} is already running");
        }
        let s = &n.spec;
        let log = OpenOptions::new().create(true).append(true).open(&s.log)?;
        let mut cmd = Command::new(&self.opts.ballastd);
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--data-dir")
            .arg(&s.data_dir)
            .arg("--listen-client")
            .arg(&s.client_addr)
            .arg("--listen-peer")
            .arg(&s.peer_addr);
        if n.joins {
            anyhow::ensure!(!join.is_empty(), "node {id}: no member to join");
            cmd.arg("--join").arg(&join);
        } else {
            cmd.arg("--initial-cluster").arg(&self.initial_cluster);
        }
        cmd.arg("--dial-overrides")
            .arg(&s.dial_overrides)
            .args(&self.opts.extra_args)
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: signals reach the node and nothing else,
            // and a Ctrl-C on our terminal does not reach it first.
            .process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.opts.ballastd.display()))?;
        let pid = child.id();
        live_groups()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(pid, id);
        n.child = Some(child);
        n.paused = false;
        n.starts += 1;
        Ok(pid)
    }

    fn signal(&self, id: u64, sig: Signal) -> anyhow::Result<u32> {
        let nodes = self.lock();
        let n = nodes
            .iter()
            .find(|n| n.spec.id == id)
            .context("no such node")?;
        let child = n.child.as_ref().context("node is not running")?;
        let pid = child.id();
        killpg(Pid::from_raw(i32::try_from(pid)?), sig)?;
        Ok(pid)
    }

    /// SIGKILL node `id`'s process group and reap it.
    pub fn kill(&self, id: u64) -> anyhow::Result<u32> {
        let mut nodes = self.lock();
        let n = nodes
            .iter_mut()
            .find(|n| n.spec.id == id)
            .context("no such node")?;
        let mut child = n.child.take().context("node is not running")?;
        let pid = child.id();
        let pg = Pid::from_raw(i32::try_from(pid)?);
        let _ = killpg(pg, Signal::SIGCONT);
        let _ = killpg(pg, Signal::SIGKILL);
        let _ = child.wait();
        n.paused = false;
        live_groups()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        Ok(pid)
    }

    /// Stops node `id` the way an operator would: SIGTERM, then SIGKILL
    /// if it has not exited within `grace`. Waits without holding the
    /// cluster or a runtime thread: the proxies and clients run meanwhile.
    pub async fn stop(&self, id: u64, grace: Duration) -> anyhow::Result<u32> {
        let mut child = {
            let mut nodes = self.lock();
            let n = nodes
                .iter_mut()
                .find(|n| n.spec.id == id)
                .context("no such node")?;
            n.paused = false;
            n.child.take().context("node is not running")?
        };
        let pid = child.id();
        let pg = Pid::from_raw(i32::try_from(pid)?);
        let _ = killpg(pg, Signal::SIGCONT);
        let _ = killpg(pg, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = killpg(pg, Signal::SIGKILL);
        let _ = child.wait();
        live_groups()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        Ok(pid)
    }

    /// Removes node `id`'s data directory, so that it starts as a new
    /// node. Refused while it runs.
    pub fn wipe(&self, id: u64) -> anyhow::Result<()> {
        let dir = {
            let nodes = self.lock();
            let n = nodes
                .iter()
                .find(|n| n.spec.id == id)
                .context("no such node")?;
            anyhow::ensure!(n.child.is_none(), "node {id} is running");
            n.spec.data_dir.clone()
        };
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", dir.display()))
            }
            _ => Ok(()),
        }
    }

    /// If node `id` was started and its process has exited by itself (a
    /// refused `--join`), reaps it and says how it ended.
    pub fn exited(&self, id: u64) -> Option<String> {
        let mut nodes = self.lock();
        let n = nodes.iter_mut().find(|n| n.spec.id == id)?;
        let status = n.child.as_mut()?.try_wait().ok()??;
        let child = n.child.take()?;
        live_groups()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&child.id());
        Some(status.to_string())
    }

    /// Whether node `id` is stopped with SIGSTOP.
    pub fn paused(&self, id: u64) -> bool {
        self.lock().iter().any(|n| n.spec.id == id && n.paused)
    }

    /// SIGSTOP node `id`.
    pub fn pause(&self, id: u64) -> anyhow::Result<u32> {
        let pid = self.signal(id, Signal::SIGSTOP)?;
        if let Some(n) = self.lock().iter_mut().find(|n| n.spec.id == id) {
            n.paused = true;
        }
        Ok(pid)
    }

    /// SIGCONT node `id`.
    pub fn resume(&self, id: u64) -> anyhow::Result<u32> {
        let pid = self.signal(id, Signal::SIGCONT)?;
        if let Some(n) = self.lock().iter_mut().find(|n| n.spec.id == id) {
            n.paused = false;
        }
        Ok(pid)
    }

    /// Whether node `id` is running.
    pub fn running(&self, id: u64) -> bool {
        self.lock()
            .iter()
            .any(|n| n.spec.id == id && n.child.is_some())
    }

    /// How many times each node was started.
    pub fn starts(&self) -> Vec<(u64, u32)> {
        self.lock().iter().map(|n| (n.spec.id, n.starts)).collect()
    }

    /// Waits until every running node answers `/health/ready`.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut all = true;
            for c in &self.clients {
                if self.running(c.node) && !c.ready().await {
                    all = false;
                }
            }
            if all {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("the cluster was not ready within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader: the node that reports itself `Leader` in the highest term.
    pub async fn leader(&self) -> Option<u64> {
        let mut best: Option<(u64, u64)> = None;
        for c in &self.clients {
            if !self.running(c.node) {
                continue;
            }
            let Some(s) = c.status().await else { continue };
            let state = s.pointer("/raft/state").and_then(|v| v.as_str());
            let term = s.get("term").and_then(|v| v.as_u64()).unwrap_or(0);
            if state == Some("Leader") && best.is_none_or(|(t, _)| term > t) {
                best = Some((term, c.node));
            }
        }
        best.map(|(_, id)| id)
    }

    /// Stops every node: SIGCONT, SIGTERM, then SIGKILL whatever did not exit
    /// within `grace`.
    pub fn stop_all(&self, grace: Duration) {
        let mut nodes = self.lock();
        for n in nodes.iter_mut() {
            if let Some(child) = &n.child {
                if let Ok(pid) = i32::try_from(child.id()) {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGCONT);
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
            n.paused = false;
        }
        let deadline = Instant::now() + grace;
        for n in nodes.iter_mut() {
            let Some(mut child) = n.child.take() else {
                continue;
            };
            let pid = child.id();
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        if let Ok(p) = i32::try_from(pid) {
                            let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
                        }
                        let _ = child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            // The group may hold other processes if ballastd ever forks.
            if let Ok(p) = i32::try_from(pid) {
                let _ = killpg(Pid::from_raw(p), Signal::SIGKILL);
            }
            live_groups()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&pid);
        }
    }

    /// Node log paths.
    pub fn logs(&self) -> Vec<PathBuf> {
        self.lock().iter().map(|n| n.spec.log.clone()).collect()
    }

    /// Node `id`'s log file.
    pub fn log_path(&self, id: u64) -> Option<PathBuf> {
        self.lock()
            .iter()
            .find(|n| n.spec.id == id)
            .map(|n| n.spec.log.clone())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all(Duration::from_secs(3));
    }
}

/// Default `ballastd` path: next to this executable (`target/<profile>/`).
pub fn default_ballastd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .map(|d| {
            // A bench or test binary lives in target/<profile>/deps.
            if d.ends_with("deps") {
                d.parent().map(Path::to_path_buf).unwrap_or(d)
            } else {
                d
            }
        })
        .unwrap_or_default()
        .join("ballastd")
}
