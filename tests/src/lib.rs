//! The in-process `TestCluster` fixture: N ballast nodes on `127.0.0.1:0`
//! ports with temporary data directories, and the operations the integration
//! tests drive them with (`kill`, `restart`, `isolate`, `heal`, `wait_leader`,
//! `wait_applied`).
//!
//! Every node keeps its ports across restarts (they are chosen once, when the
//! cluster starts), so a restarted node rejoins at the same address.

pub mod answer_drop;
pub mod metrics;
pub mod pki;
pub mod restore;
pub mod sse;
pub mod throttle;

use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use ballast_store::{Config, Listeners, Node, RunningNode};
use tempfile::TempDir;
use tokio::net::TcpListener;

/// The file names in a node's `snapshots/` directory, sorted (empty when the
/// directory is missing).
pub fn snapshot_files(data_dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(data_dir.join("snapshots"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until `data_dir` holds exactly one snapshot file, a finished
/// `.snap`, and returns the files last seen (so the caller's assertion names
/// them when the wait runs out). A node builds its next snapshot in the
/// background (a `.tmp` file, renamed when done, after which the older one is
/// removed), so a check right after a catch-up may see two files.
pub async fn wait_single_snapshot(
    data_dir: &std::path::Path,
    timeout: std::time::Duration,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let files = snapshot_files(data_dir);
        let settled = files.len() == 1 && files[0].ends_with(".snap");
        if settled || std::time::Instant::now() > deadline {
            return files;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub use ballast_testkit::{free_port, skipped};

/// Turns on test logging once (filter with `RUST_LOG`).
pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}

/// Binds a client and a peer listener on `127.0.0.1:0` for each of `n`
/// members, and returns them with the `--initial-cluster` they make (ids
/// 1..=n).
pub(crate) async fn bind_members(n: usize) -> Result<(Vec<Listeners>, String)> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        let client = TcpListener::bind("127.0.0.1:0").await?;
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        listeners.push(Listeners { client, peer });
    }
    let mut cluster = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        cluster.push(format!(
            "{}={}/{}",
            i + 1,
            l.client.local_addr()?,
            l.peer.local_addr()?
        ));
    }
    Ok((listeners, cluster.join(",")))
}

/// The [`test_config`] of member `id` on `listeners`, with its data under
/// `dir`, in the cluster `initial_cluster`.
pub(crate) fn member_config(
    dir: &std::path::Path,
    id: u64,
    listeners: &Listeners,
    initial_cluster: &str,
) -> Result<Config> {
    let mut c = test_config();
    c.node_id = id;
    c.data_dir = dir.join(format!("node{id}"));
    c.listen_client = listeners.client.local_addr()?.to_string();
    c.listen_peer = listeners.peer.local_addr()?.to_string();
    c.initial_cluster = Some(initial_cluster.to_string());
    Ok(c)
}

/// A cluster of in-process nodes.
pub struct TestCluster {
    /// Owns every node's data directory; removed on drop.
    _dir: TempDir,
    configs: Vec<Config>,
    nodes: Vec<Option<RunningNode>>,
    http: reqwest::Client,
    streams: reqwest::Client,
}

/// Settings tests commonly change; the rest come from `Config::default()`.
pub fn test_config() -> Config {
    Config {
        heartbeat_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        request_timeout_ms: 3000,
        connect_timeout_ms: 300,
        // No 64 MiB reserve file per test node (t60_nospace sets its own).
        reserve_bytes: 0,
        ..Config::default()
    }
}

impl TestCluster {
    /// Starts `n` nodes with [`test_config`] and waits for a leader.
    pub async fn start(n: usize) -> Result<TestCluster> {
        Self::start_with(n, |_| {}).await
    }

    /// Starts `n` nodes with [`test_config`] changed by `tweak`, and waits for
    /// a leader. `tweak` sees each node's config with its id, addresses and
    /// data directory already set.
    pub async fn start_with(n: usize, tweak: impl Fn(&mut Config)) -> Result<TestCluster> {
        init_logging();
        let dir = tempfile::Builder::new().prefix("ballast-test-").tempdir()?;
        let (listeners, cluster) = bind_members(n).await?;
        let mut configs = Vec::new();
        for (i, l) in listeners.iter().enumerate() {
            let mut c = member_config(dir.path(), i as u64 + 1, l, &cluster)?;
            tweak(&mut c);
            configs.push(c);
        }
        Self::launch(dir, configs, listeners).await
    }

    /// Starts a node per config on its listeners and waits for a leader.
    pub(crate) async fn launch(
        dir: TempDir,
        configs: Vec<Config>,
        listeners: Vec<Listeners>,
    ) -> Result<TestCluster> {
        let mut nodes = Vec::new();
        for (c, l) in configs.iter().zip(listeners) {
            nodes.push(Some(ballast_store::start(c.clone(), Some(l)).await?));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        // Watch streams live as long as a test wants: no overall timeout.
        let streams = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let tc = TestCluster {
            _dir: dir,
            configs,
            nodes,
            http,
            streams,
        };
        tc.wait_leader(Duration::from_secs(20)).await?;
        Ok(tc)
    }

    /// Node ids, 1-based.
    pub fn ids(&self) -> Vec<u64> {
        (1..=self.configs.len() as u64).collect()
    }

    /// Every node id but `id`, in order (`others(leader)[0]`: a follower).
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.ids().into_iter().filter(|i| *i != id).collect()
    }

    /// Ids of the nodes currently running.
    pub fn running(&self) -> Vec<u64> {
        self.ids()
            .into_iter()
            .filter(|id| self.nodes[idx(*id)].is_some())
            .collect()
    }

    /// The configuration node `id` was started with.
    pub fn config(&self, id: u64) -> &Config {
        &self.configs[idx(id)]
    }

    /// The HTTP base URL of node `id`.
    pub fn endpoint(&self, id: u64) -> String {
        format!("http://{}", self.configs[idx(id)].listen_client)
    }

    /// Where node `id`'s probe listener (`--listen-metrics`) listens, when
    /// it has one: the bound address, so a test can ask for port 0.
    pub fn metrics_addr(&self, id: u64) -> Result<Option<std::net::SocketAddr>> {
        self.nodes[idx(id)]
            .as_ref()
            .map(|n| n.metrics_addr)
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    /// Node `id`'s admission control (bootstraps and watch catch-ups).
    pub fn admission(&self, id: u64) -> Result<&Arc<ballast_store::Admission>> {
        self.nodes[idx(id)]
            .as_ref()
            .map(|n| &n.admission)
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    /// The running node `id`.
    pub fn node(&self, id: u64) -> Result<&Arc<Node>> {
        self.nodes[idx(id)]
            .as_ref()
            .map(|n| &n.node)
            .ok_or_else(|| anyhow!("node {id} is not running"))
    }

    /// An HTTP client for the tests' requests.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// An HTTP client without an overall timeout, for watch streams.
    pub fn stream_http(&self) -> &reqwest::Client {
        &self.streams
    }

    /// Waits until every running, connected node agrees on one running leader.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.agreed_leader() {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                bail!("no agreed leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn agreed_leader(&self) -> Option<u64> {
        let mut agreed = None;
        for id in self.running() {
            let node = self.node(id).ok()?;
            if node.fault().is_isolated() {
                continue;
            }
            let leader = node.leader()?.0;
            if agreed.is_some_and(|a| a != leader) {
                return None;
            }
            agreed = Some(leader);
        }
        let leader = agreed?;
        let node = self.node(leader).ok()?;
        (!node.fault().is_isolated() && node.raft().is_leader()).then_some(leader)
    }

    /// Waits for a leader other than `old`.
    pub async fn wait_new_leader(&self, old: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let leader = self.wait_leader(remaining).await?;
            if leader != old {
                return Ok(leader);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until node `id` has purged its log behind a snapshot. The
    /// snapshot is built, and the log purged, in the background after the
    /// write that crossed the snapshot threshold, so a check right after that
    /// write would race them.
    pub async fn wait_log_purged(&self, id: u64, timeout: Duration) -> Result<()> {
        use openraft::async_runtime::watch::WatchReceiver;
        let deadline = Instant::now() + timeout;
        while self
            .node(id)?
            .raft()
            .metrics()
            .borrow_watched()
            .purged
            .is_none()
        {
            if Instant::now() > deadline {
                bail!("node {id} did not purge its log after a snapshot within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Waits until every running node has applied key-space revision `revision`.
    pub async fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let behind: Vec<u64> = self
                .running()
                .into_iter()
                .filter(|id| {
                    self.node(*id)
                        .map(|n| n.applied().revision < revision)
                        .unwrap_or(true)
                })
                .collect();
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("nodes {behind:?} did not apply revision {revision} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops node `id` abruptly: its peer traffic is cut first, then it is shut
    /// down without waiting for anything to be handed over.
    pub async fn kill(&mut self, id: u64) -> Result<()> {
        let node = self.nodes[idx(id)]
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        node.node.set_isolated(true);
        node.shutdown().await;
        Ok(())
    }

    /// Starts node `id` again on its data directory and ports.
    pub async fn restart(&mut self, id: u64) -> Result<()> {
        if self.nodes[idx(id)].is_some() {
            bail!("node {id} is running");
        }
        let config = self.configs[idx(id)].clone();
        // The database lock and ports may take a moment to be released.
        let deadline = Instant::now() + Duration::from_secs(10);
        let node = loop {
            match ballast_store::start(config.clone(), None).await {
                Ok(n) => break n,
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, "restart retry");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("restarting node {id}")),
            }
        };
        self.nodes[idx(id)] = Some(node);
        Ok(())
    }

    /// Cuts all of node `id`'s peer traffic, both ways.
    pub fn isolate(&self, id: u64) -> Result<()> {
        self.node(id)?.set_isolated(true);
        Ok(())
    }

    /// Restores node `id`'s peer traffic.
    pub fn heal(&self, id: u64) -> Result<()> {
        self.node(id)?.set_isolated(false);
        Ok(())
    }

    /// `PUT` through node `id`; returns the revision. A `503 no_leader`
    /// (nothing was applied) is retried for a few seconds, as a client would.
    pub async fn put(&self, id: u64, key: &str, value: &str) -> Result<u64> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let resp = self
                .http
                .put(format!("{}/v1/kv/{key}", self.endpoint(id)))
                .body(value.to_string())
                .send()
                .await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await?;
            if status.is_success() {
                return body["revision"]
                    .as_u64()
                    .ok_or_else(|| anyhow!("no revision in {body}"));
            }
            if status.as_u16() == 503
                && body["error"]["code"] == "no_leader"
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            bail!("put {key} via node {id}: {status} {body}");
        }
    }

    /// `GET` one key from node `id` with `consistency`; returns the HTTP status
    /// and the JSON body.
    pub async fn get(
        &self,
        id: u64,
        key: &str,
        consistency: &str,
    ) -> Result<(u16, serde_json::Value)> {
        let resp = self
            .http
            .get(format!(
                "{}/v1/kv/{key}?consistency={consistency}",
                self.endpoint(id)
            ))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }

    /// The value of `key` read from node `id`, if it exists.
    pub async fn value(&self, id: u64, key: &str, consistency: &str) -> Result<Option<String>> {
        let (status, body) = self.get(id, key, consistency).await?;
        match status {
            200 => Ok(body["kv"]["value"].as_str().map(str::to_string)),
            404 => Ok(None),
            _ => bail!("get {key} via node {id}: {status} {body}"),
        }
    }

    /// The value of the unlabelled series `name` in node `id`'s `/metrics`.
    pub async fn metric(&self, id: u64, name: &str) -> Result<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.endpoint(id)))
            .send()
            .await?
            .text()
            .await?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .ok_or_else(|| anyhow::anyhow!("{name} missing from node {id}'s /metrics"))
    }

    /// `GET /v1/status` of node `id`.
    pub async fn status(&self, id: u64) -> Result<serde_json::Value> {
        Ok(self
            .http
            .get(format!("{}/v1/status", self.endpoint(id)))
            .send()
            .await?
            .json()
            .await?)
    }

    /// The HTTP status of node `id`'s `/health/ready`.
    pub async fn ready(&self, id: u64) -> Result<u16> {
        let url = format!("{}/health/ready", self.endpoint(id));
        Ok(self.http.get(url).send().await?.status().as_u16())
    }

    /// The client endpoints of the running nodes, comma-separated (for
    /// `--join`).
    pub fn running_endpoints(&self) -> String {
        self.running()
            .into_iter()
            .map(|id| self.endpoint(id))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts a new node with the next unused id and an empty data directory
    /// that joins the running cluster as a learner (`--join` the running
    /// nodes). Returns its id.
    pub async fn join_node(&mut self) -> Result<u64> {
        let id = self.configs.len() as u64 + 1;
        let client = TcpListener::bind("127.0.0.1:0").await?;
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        let mut c = self.configs[0].clone();
        c.node_id = id;
        c.data_dir = self._dir.path().join(format!("node{id}"));
        c.listen_client = client.local_addr()?.to_string();
        c.listen_peer = peer.local_addr()?.to_string();
        c.initial_cluster = None;
        c.join = Some(self.running_endpoints());
        let node = ballast_store::start(c.clone(), Some(Listeners { client, peer }))
            .await
            .with_context(|| format!("starting node {id} with --join"))?;
        self.configs.push(c);
        self.nodes.push(Some(node));
        Ok(id)
    }

    /// Starts stopped node `id` again on an empty data directory, as a new
    /// member that joins the running cluster (the last step of replacing a
    /// dead node: it must have been removed first).
    pub async fn rejoin_wiped(&mut self, id: u64) -> Result<()> {
        if self.nodes[idx(id)].is_some() {
            bail!("node {id} is running");
        }
        let mut config = self.configs[idx(id)].clone();
        match std::fs::remove_dir_all(&config.data_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("wiping the data dir"),
        }
        config.initial_cluster = None;
        config.join = Some(self.running_endpoints());
        let deadline = Instant::now() + Duration::from_secs(10);
        let node = loop {
            match ballast_store::start(config.clone(), None).await {
                Ok(n) => break n,
                Err(ballast_store::ServerError::Bind { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e).with_context(|| format!("rejoining node {id}")),
            }
        };
        self.configs[idx(id)] = config;
        self.nodes[idx(id)] = Some(node);
        Ok(())
    }

    /// Calls a membership endpoint of node `id`: `method` on `path` with an
    /// optional JSON body; returns the status and the JSON answer.
    pub async fn admin(
        &self,
        id: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.endpoint(id)));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let doc = resp.json().await.unwrap_or(serde_json::Value::Null);
        Ok((status, doc))
    }

    /// Promotes learner `learner` through node `via`, retrying while it has
    /// not caught up (`409 learner_not_ready`) for up to `timeout`.
    pub async fn promote_when_ready(
        &self,
        via: u64,
        learner: u64,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, doc) = self
                .admin(
                    via,
                    reqwest::Method::POST,
                    &format!("/v1/members/{learner}/promote"),
                    None,
                )
                .await?;
            match status {
                200 => return Ok(()),
                409 | 503 if Instant::now() < deadline => {
                    tracing::debug!(%doc, "promote not yet");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => bail!("promoting {learner} failed: {status} {doc}"),
            }
        }
    }

    /// The voters and learners in node `id`'s membership.
    pub fn voters_and_learners(&self, id: u64) -> Result<(Vec<u64>, Vec<u64>)> {
        let status = self.node(id)?.status()?;
        let voters = status
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.id)
            .collect();
        let learners = status
            .members
            .iter()
            .filter(|m| !m.voter)
            .map(|m| m.id)
            .collect();
        Ok((voters, learners))
    }

    /// Shuts every node down.
    pub async fn shutdown(mut self) {
        for slot in &mut self.nodes {
            if let Some(node) = slot.take() {
                node.shutdown().await;
            }
        }
    }
}

fn idx(id: u64) -> usize {
    (id - 1) as usize
}

impl TestCluster {
    /// The files in every node's `backup/` directory (where backups are
    /// written while they stream), as `nodeN/name`, sorted.
    pub fn snapshot_backup_files(&self) -> Vec<String> {
        let mut names = Vec::new();
        for id in self.ids() {
            if let Ok(dir) = std::fs::read_dir(self.config(id).data_dir.join("backup")) {
                names.extend(
                    dir.filter_map(|e| e.ok())
                        .map(|e| format!("node{id}/{}", e.file_name().to_string_lossy())),
                );
            }
        }
        names.sort();
        names
    }
}
