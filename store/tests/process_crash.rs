//! Durability across real process crashes: three `ballastd` processes under
//! write load are killed with SIGKILL (the leader alone, then all of them at
//! once) and restarted on their data directories; every acknowledged write
//! must still be there, on every node.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The processes this test started; killed (by PID, via `Child`) on drop,
/// whether the test passed or not.
struct Procs {
    children: BTreeMap<u64, Child>,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for child in self.children.values_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    ports: BTreeMap<u64, (u16, u16)>,
    procs: Procs,
}

/// A free loopback port for a child process to listen on. Chosen below the
/// kernel's ephemeral range (32768 and up on Linux), so the port cannot be
/// handed out meanwhile as the local port of some outgoing connection, which
/// is what makes "bind port 0, release, reuse" racy.
fn free_port() -> Result<u16> {
    for _ in 0..1000 {
        let port = 20_000
            + (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos() ^ std::process::id())
                .unwrap_or(0)
                % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    fn new(n: u64) -> Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("ballast-crash-")
            .tempdir()?;
        let mut ports = BTreeMap::new();
        for id in 1..=n {
            ports.insert(id, (free_port()?, free_port()?));
        }
        let mut c = Cluster {
            dir,
            ports,
            procs: Procs {
                children: BTreeMap::new(),
            },
        };
        for id in 1..=n {
            c.start(id)?;
        }
        Ok(c)
    }

    fn initial_cluster(&self) -> String {
        self.ports
            .iter()
            .map(|(id, (c, p))| format!("{id}=127.0.0.1:{c}/127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("node{id}"))
    }

    fn endpoint(&self, id: u64) -> String {
        format!("http://127.0.0.1:{}", self.ports[&id].0)
    }

    fn start(&mut self, id: u64) -> Result<()> {
        let (client, peer) = self.ports[&id];
        let log = std::fs::File::create(self.dir.path().join(format!("node{id}.log")))?;
        let child = Command::new(env!("CARGO_BIN_EXE_ballastd"))
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
    fn kill9(&mut self, id: u64) -> Result<()> {
        let mut child = self
            .procs
            .children
            .remove(&id)
            .ok_or_else(|| anyhow!("node {id} not running"))?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    fn logs(&self) -> String {
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

async fn leader(http: &reqwest::Client, c: &Cluster, timeout: Duration) -> Result<u64> {
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

/// Writes unique keys through every running node until `until`; returns the
/// acknowledged (key, value) pairs. Bounded by count and time.
async fn load(
    endpoints: Vec<String>,
    until: Instant,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    writer: usize,
) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
    else {
        return;
    };
    for i in 0..20_000usize {
        if Instant::now() >= until {
            break;
        }
        let key = format!("crash/w{writer}/k{i}");
        let value = format!("v{writer}-{i}");
        let ep = &endpoints[(writer + i) % endpoints.len()];
        match http
            .put(format!("{ep}/v1/kv/{key}"))
            .body(value.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                if let Ok(mut a) = acked.lock() {
                    a.push((key, value));
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn check_all(http: &reqwest::Client, c: &Cluster, acked: &[(String, String)]) -> Result<()> {
    for id in c.procs.children.keys() {
        let ep = c.endpoint(*id);
        let range: serde_json::Value = http
            .get(format!("{ep}/v1/kv/crash/?prefix=true"))
            .send()
            .await?
            .json()
            .await?;
        let stored: BTreeMap<String, String> = range["kvs"]
            .as_array()
            .ok_or_else(|| anyhow!("no kvs from node {id}: {range}"))?
            .iter()
            .map(|kv| {
                (
                    kv["key"].as_str().unwrap_or_default().into(),
                    kv["value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        for (k, v) in acked {
            if stored.get(k) != Some(v) {
                bail!(
                    "node {id} lost acknowledged write {k}={v} (has {:?})",
                    stored.get(k)
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_an_acknowledged_write() -> Result<()> {
    let mut c = Cluster::new(3)?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let first = leader(&http, &c, Duration::from_secs(20)).await?;
    let endpoints: Vec<String> = c.ports.keys().map(|id| c.endpoint(*id)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));

    // Phase 1: SIGKILL the leader under load, restart it.
    let until = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(load(endpoints.clone(), until, acked.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.kill9(first)?;
    for w in writers {
        w.await?;
    }
    c.start(first)?;
    leader(&http, &c, Duration::from_secs(20)).await?;

    // Phase 2: SIGKILL every node at once under load, restart them all.
    let until = Instant::now() + Duration::from_secs(3);
    let writers: Vec<_> = (4..8)
        .map(|w| tokio::spawn(load(endpoints.clone(), until, acked.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in [1, 2, 3] {
        c.kill9(id)?;
    }
    for w in writers {
        w.await?;
    }
    for id in [1, 2, 3] {
        c.start(id)?;
    }
    leader(&http, &c, Duration::from_secs(20)).await?;

    let acked = acked
        .lock()
        .map(|a| a.clone())
        .map_err(|_| anyhow!("poisoned"))?;
    assert!(
        acked.len() > 100,
        "the load made progress ({} acknowledged writes)",
        acked.len()
    );
    // A linearizable read through the leader first, so every node has caught up
    // to everything committed before checking each node's local state.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rev: Option<u64> = async {
            let r = http
                .put(format!("{}/v1/kv/crash-marker", endpoints[0]))
                .body("x")
                .send()
                .await
                .ok()?;
            r.json::<serde_json::Value>().await.ok()?["revision"].as_u64()
        }
        .await;
        if rev.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("cluster did not accept writes after restart\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check_all(&http, &c, &acked).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e.context(c.logs())),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok(())
}
