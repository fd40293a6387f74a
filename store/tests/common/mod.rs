//! Helpers shared by the tests that run real `ballastd` processes: a cluster
//! of child processes on free loopback ports with a temporary data directory,
//! started, killed and stopped by PID.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The processes a test started; killed (by PID, via `Child`) on drop,
/// whether the test passed or not.
pub struct Procs {
    pub children: BTreeMap<u64, Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// N `ballastd` processes forming one cluster.
pub struct Cluster {
    /// Declared first so that it is dropped first: the processes are gone
    /// before their data directory is removed.
    pub procs: Procs,
    pub dir: tempfile::TempDir,
    pub ports: BTreeMap<u64, (u16, u16)>,
}

pub use ballast_testkit::free_port;

/// The `ballastd` binary to run: the one cargo built for this test, or the
/// one named by `BALLASTD_BIN` (to run a scenario against a release build).
pub fn ballastd() -> PathBuf {
    std::env::var_os("BALLASTD_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ballastd")))
}

impl Cluster {
    /// Starts `n` nodes with data under a new temporary directory named
    /// `prefix...`.
    pub fn new(n: u64, prefix: &str) -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let mut ports = BTreeMap::new();
        for id in 1..=n {
            ports.insert(id, (free_port()?, free_port()?));
        }
        let mut c = Cluster {
            procs: Procs {
                children: BTreeMap::new(),
            },
            dir,
            ports,
        };
        for id in 1..=n {
            c.start(id)?;
        }
        Ok(c)
    }

    pub fn initial_cluster(&self) -> String {
        self.ports
            .iter()
            .map(|(id, (c, p))| format!("{id}=127.0.0.1:{c}/127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    pub fn endpoint(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.ports[&id].0)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.ports.keys().map(|id| self.endpoint(*id)).collect()
    }

    /// Ids of the nodes this test has running.
    pub fn running(&self) -> Vec<u64> {
        self.procs.children.keys().copied().collect()
    }

    /// Starts node `id`; its log goes to `node<id>.log` (appended across
    /// restarts).
    pub fn start(&mut self, id: u64) -> Result<()> {
        let (client, peer) = self.ports[&id];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("node{id}.log")))?;
        let child = Command::new(ballastd())
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--listen-client", &format!("127.0.0.1:{client}")])
            .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--heartbeat-ms", "50", "--election-timeout-min-ms", "300"])
            .args([
                "--election-timeout-max-ms",
                "600",
                "--request-timeout-ms",
                "3000",
            ])
            .env("RUST_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning ballastd")?;
        self.procs.children.insert(id, child);
        Ok(())
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self, id: u64) -> Result<()> {
        let mut child = self
            .procs
            .children
            .remove(&id)
            .ok_or_else(|| anyhow!("node {id} not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM to each of `ids` at once, then waits for every one of them to
    /// exit; returns each exit status and the time from its signal to its
    /// exit. A node still running after `hang_guard` is an error (and is
    /// killed when the cluster is dropped).
    pub async fn terminate(
        &mut self,
        ids: &[u64],
        hang_guard: Duration,
    ) -> Result<Vec<(u64, ExitStatus, Duration)>> {
        let mut signalled = Vec::new();
        for id in ids {
            let child = self
                .procs
                .children
                .get(id)
                .ok_or_else(|| anyhow!("node {id} not running"))?;
            // The child is not reaped before `try_wait` below sees it exit,
            // so this PID is still ours.
            let sent = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .context("running kill")?;
            if !sent.success() {
                bail!("kill -TERM {} (node {id}) failed: {sent}", child.id());
            }
            signalled.push((*id, Instant::now()));
        }
        let mut out = Vec::new();
        for (id, at) in signalled {
            loop {
                let child = self
                    .procs
                    .children
                    .get_mut(&id)
                    .ok_or_else(|| anyhow!("node {id} not running"))?;
                if let Some(status) = child.try_wait()? {
                    out.push((id, status, at.elapsed()));
                    self.procs.children.remove(&id);
                    break;
                }
                if at.elapsed() > hang_guard {
                    bail!(
                        "node {id} still running {hang_guard:?} after SIGTERM\n{}",
                        self.logs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(out)
    }

    /// The last lines of every node's log.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for id in self.ports.keys() {
            let path: &Path = &self.dir.path().join(format!("node{id}.log"));
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            out.push_str(&format!(
                "--- node {id}\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

/// The id of the running node that reports itself leader, within `timeout`.
pub async fn leader(http: &reqwest::Client, c: &Cluster, timeout: Duration) -> Result<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        for id in c.procs.children.keys() {
            if let Ok(resp) = http
                .get(format!("{}/v1/status", c.endpoint(*id)))
                .send()
                .await
            {
                if let Ok(status) = resp.json::<serde_json::Value>().await {
                    if status["raft"]["state"] == "Leader" {
                        return Ok(*id);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("no leader within {timeout:?}\n{}", c.logs())
}
