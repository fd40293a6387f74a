//! A full disk is an alarm, not a crash: three `ballastd` processes, node 3's
//! data directory on a small tmpfs. Needs root (to mount the tmpfs); skipped
//! with a message otherwise.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use ballast_tests::sse::WatchStream;
use serde_json::{json, Value};
use tokio::time::Instant;
use tracing::info;

static BUILD: Mutex<()> = Mutex::new(());

/// Size of node 3's filesystem.
const TMPFS_MIB: u64 = 128;
/// Node 3's floor and reserve. The reserve caps node 3's WAL at 4 MiB (a
/// quarter of it), so what RocksDB has in flight (a memtable flush) is a
/// few MiB at most.
const MIN_FREE: u64 = 40 * 1024 * 1024;
const RESERVE: u64 = 16 * 1024 * 1024;
/// What the filler leaves free: below half the floor, so node 3 deletes its
/// reserve, and room for RocksDB's work in flight. The reserve back, node 3
/// is still below its floor (12 + 16 < 40 MiB).
const FILL_LEAVES: u64 = 12 * 1024 * 1024;
/// Bytes per value written to fill the disk.
const VALUE_BYTES: usize = 256 * 1024;
/// At most this many values are written (128 MiB of them, at least three
/// times the tmpfs once the Raft log, history and WAL count).
const MAX_WRITES: usize = 512;
const WAIT: Duration = Duration::from_secs(30);

/// The built binary `name` of package `package` (built through cargo, next
/// to this test binary).
fn binary(package: &str, name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test path {}", exe.display()))?;
    let path = profile_dir.join(name);
    let _guard = BUILD.lock().map_err(|_| anyhow!("build lock poisoned"))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", package, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .with_context(|| format!("building {name}"))?;
    if !status.success() || !path.exists() {
        bail!("could not build {name} at {}", path.display());
    }
    Ok(path)
}

/// A tmpfs mounted for the test, unmounted on drop (also on failure).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB at `path`, or says why not.
    fn mount(path: &Path, mib: u64) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }
}

impl Tmpfs {
    /// Grows the filesystem to `mib` MiB.
    fn grow(&self, mib: u64) -> Result<()> {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={mib}m")])
            .arg(&self.path)
            .output()?;
        if !out.status.success() {
            bail!("remount: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Busy (a process we started has not exited yet): detach it.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

/// One `ballastd` process and how it was started.
struct Proc {
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

/// Three `ballastd` processes; every process it started is killed (by its
/// own PID) when it is dropped.
struct Cluster {
    bin: PathBuf,
    procs: BTreeMap<u64, Proc>,
    client: BTreeMap<u64, String>,
    http: reqwest::Client,
}

impl Cluster {
    /// Starts one process per entry of `dirs`; node 3 with the floor and
    /// reserve `node3_space` (`--min-free-bytes`, `--reserve-bytes`), the
    /// others with neither.
    fn start(
        bin: PathBuf,
        dirs: &BTreeMap<u64, PathBuf>,
        logs: &Path,
        node3_space: (u64, u64),
    ) -> Result<Cluster> {
        let mut addrs = BTreeMap::new();
        for id in dirs.keys() {
            addrs.insert(
                *id,
                (ballast_tests::free_port()?, ballast_tests::free_port()?),
            );
        }
        let initial = addrs
            .iter()
            .map(|(id, (c, p))| format!("{id}=127.0.0.1:{c}/127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            bin,
            procs: BTreeMap::new(),
            client: BTreeMap::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        for (id, dir) in dirs {
            let (c, p) = addrs[id];
            let (min_free, reserve) = if *id == 3 { node3_space } else { (0, 0) };
            let args = vec![
                format!("--node-id={id}"),
                format!("--data-dir={}", dir.display()),
                format!("--listen-client=127.0.0.1:{c}"),
                format!("--listen-peer=127.0.0.1:{p}"),
                format!("--initial-cluster={initial}"),
                format!("--min-free-bytes={min_free}"),
                format!("--reserve-bytes={reserve}"),
                "--disk-check-interval-ms=100".to_string(),
                "--max-value-bytes=1048576".to_string(),
            ];
            cluster.client.insert(*id, format!("http://127.0.0.1:{c}"));
            cluster.procs.insert(
                *id,
                Proc {
                    child: None,
                    args,
                    log: logs.join(format!("node{id}.log")),
                },
            );
            cluster.spawn(*id)?;
        }
        Ok(cluster)
    }

    fn spawn(&mut self, id: u64) -> Result<()> {
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let log = File::options().create(true).append(true).open(&p.log)?;
        let child = Command::new(&self.bin)
            .args(&p.args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting ballastd")?;
        p.child = Some(child);
        Ok(())
    }

    fn url(&self, id: u64, path: &str) -> String {
        format!("{}{path}", self.client[&id])
    }

    /// The last lines of every node's log, to explain a failure.
    fn tails(&self) -> String {
        let mut out = String::new();
        for (id, p) in &self.procs {
            let log = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("\n--- node {id}:\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Fails if a process we started is no longer running.
    fn assert_alive(&mut self) -> Result<()> {
        for (id, p) in &mut self.procs {
            if let Some(child) = p.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
                    let tail: String = log
                        .lines()
                        .rev()
                        .take(40)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    bail!("node {id} exited ({status}); its log ends with:\n{tail}");
                }
            }
        }
        Ok(())
    }

    /// Stops node `id` with SIGTERM (SIGKILL after a deadline).
    async fn stop(&mut self, id: u64) -> Result<()> {
        let p = self
            .procs
            .get_mut(&id)
            .ok_or_else(|| anyhow!("no node {id}"))?;
        let Some(mut child) = p.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + WAIT;
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("node {id} did not stop on SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn get_json(&self, url: &str) -> Result<(u16, Value)> {
        let r = self.http.get(url).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn put(&self, id: u64, key: &str, value: &str) -> Result<(u16, Value)> {
        let r = self
            .http
            .put(self.url(id, &format!("/v1/kv/{key}")))
            .body(value.to_string())
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    async fn read(&self, id: u64, key: &str, consistency: &str) -> Result<Option<String>> {
        let (status, body) = self
            .get_json(&self.url(id, &format!("/v1/kv/{key}?consistency={consistency}")))
            .await?;
        match status {
            200 => Ok(body["kv"]["value"].as_str().map(str::to_string)),
            404 => Ok(None),
            s => bail!("read of {key} on node {id}: {s} {body}"),
        }
    }

    async fn alarms(&self, id: u64) -> Result<Value> {
        let (status, body) = self.get_json(&self.url(id, "/v1/alarms")).await?;
        if status != 200 {
            bail!("GET /v1/alarms on node {id}: {status} {body}");
        }
        Ok(body["alarms"].clone())
    }

    /// Waits until `check` holds, for at most [`WAIT`].
    async fn wait_for<F, Fut>(&self, what: &str, mut check: F) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + WAIT;
        while !check().await {
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}; the nodes' logs end with:{}",
                    self.tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Node `id`'s log so far.
    fn log(&self, id: u64) -> String {
        self.procs
            .get(&id)
            .and_then(|p| std::fs::read_to_string(&p.log).ok())
            .unwrap_or_default()
    }

    /// Waits until node `id` serves `key` with [`value_for`]`(i)` from its own
    /// state (a serializable read), for at most [`WAIT`].
    /// Fails at once, with its log, if a node we started has exited.
    async fn wait_serves(&mut self, id: u64, key: &str, i: usize) -> Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            self.assert_alive()?;
            let served = self
                .read(id, key, "serializable")
                .await
                .is_ok_and(|v| v.as_deref() == Some(value_for(i).as_str()));
            if served {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for node {id} to serve {key}; the nodes' logs end with:{}",
                    self.tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Moves leadership to node `to` (asking node `via`), again until it
    /// is accepted, for at most [`WAIT`].
    async fn make_leader(&self, via: u64, to: u64) -> Result<()> {
        self.wait_for(&format!("node {to} to lead"), || async {
            let moved = self
                .http
                .post(self.url(via, "/v1/leader/transfer"))
                .json(&json!({ "to": to }))
                .send()
                .await;
            moved.is_ok_and(|r| r.status() == 200)
        })
        .await
    }

    async fn ready(&self, id: u64) -> bool {
        self.get_json(&self.url(id, "/health/ready"))
            .await
            .is_ok_and(|(s, _)| s == 200)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in self.procs.values_mut() {
            if let Some(mut child) = p.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A value no compressor shrinks much (xorshift over the key).
fn value_for(i: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut x = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..VALUE_BYTES)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % 64) as usize] as char
        })
        .collect()
}

fn has_nospace(alarms: &Value, member: u64) -> bool {
    alarms.as_array().is_some_and(|a| {
        a.iter()
            .any(|x| x["member"] == member && x["alarm"] == "nospace")
    })
}

/// Runs `ballastctl --endpoints endpoint [--output json] alarm disarm`, again
/// while its outcome is unknown or the cluster is unavailable (exit 4 or 5:
/// a leader change), for at most [`WAIT`]; returns its stdout.
async fn disarm(ctl: &Path, endpoint: &str, json: bool) -> Result<Vec<u8>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut cmd = Command::new(ctl);
        cmd.args(["--endpoints", endpoint]);
        if json {
            cmd.args(["--output", "json"]);
        }
        let out = cmd.args(["alarm", "disarm"]).output()?;
        match out.status.code() {
            Some(0) => return Ok(out.stdout),
            Some(4 | 5) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ => bail!("ballastctl alarm disarm: {out:?}"),
        }
    }
}

/// Fills `dir` with a file until the filesystem is full; returns its path.
/// Fills the filesystem of `dir` until [`FILL_LEAVES`] bytes are free, as
/// another process on the same disk would. (Filling it to the last byte at
/// once can fail a RocksDB write of node 3 that was already under way: that
/// is a storage error, not an abort (`db::tests` checks that), and it stops
/// node 3's Raft until a restart, which is not what this test is about.)
fn fill(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("filler");
    let mut f = File::create(&path)?;
    let chunk = vec![7u8; 64 * 1024];
    // Bounded: at most the whole tmpfs.
    for _ in 0..(TMPFS_MIB * 16) {
        let stat = nix::sys::statvfs::statvfs(dir)?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
        let free = (stat.blocks_available() as u64).saturating_mul(stat.fragment_size() as u64);
        if free <= FILL_LEAVES + chunk.len() as u64 {
            f.sync_all()?;
            return Ok(path);
        }
        f.write_all(&chunk)?;
    }
    bail!("the tmpfs did not fill up")
}

/// Three `ballastd` processes under `root`, node 3's data directory on a
/// tmpfs of `fs_mib` MiB with `node3_space` (floor, reserve), every node
/// ready; also the data directories. `None`, after saying why, when no tmpfs
/// can be mounted (not root). Bind the cluster after the tmpfs, so that on
/// any failure its processes are killed before the tmpfs is unmounted.
async fn node3_on_a_tmpfs(
    root: &Path,
    fs_mib: u64,
    node3_space: (u64, u64),
) -> Result<Option<(Tmpfs, Cluster, BTreeMap<u64, PathBuf>)>> {
    let mount = root.join("n3");
    let tmpfs = match Tmpfs::mount(&mount, fs_mib) {
        Ok(t) => t,
        Err(why) => {
            ballast_tests::skipped(&format!(
                "t60_nospace (node 3 on a small tmpfs): cannot mount a tmpfs (needs root): {why}"
            ));
            return Ok(None);
        }
    };
    let bin = binary("ballast-store", "ballastd")?;
    let mut dirs = BTreeMap::new();
    dirs.insert(1, root.join("n1"));
    dirs.insert(2, root.join("n2"));
    dirs.insert(3, mount.join("data"));
    let c = Cluster::start(bin, &dirs, root, node3_space)?;
    for id in [1, 2, 3] {
        c.wait_for("every node ready", || c.ready(id)).await?;
    }
    Ok(Some((tmpfs, c, dirs)))
}

/// Node 3's disk fills up under writes: the cluster raises a nospace alarm
/// and every node refuses writes with `507 no_space` while reads, watches
/// and deletes work and no process dies; node 3 restarts on a nearly
/// full disk and serves reads; disarming while space is short re-raises the
/// alarm; once space is freed and the alarm disarmed, writes are accepted
/// and nothing acknowledged was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_raises_a_nospace_alarm_and_nothing_crashes() -> Result<()> {
    ballast_tests::init_logging();
    let root = tempfile::tempdir()?;
    let Some((tmpfs, mut c, dirs)) =
        node3_on_a_tmpfs(root.path(), TMPFS_MIB, (MIN_FREE, RESERVE)).await?
    else {
        return Ok(());
    };
    let ctl = binary("ballast-client", "ballastctl")?;
    assert!(
        dirs[&3].join("space.reserve").is_file(),
        "node 3 wrote its reserve file"
    );

    info!("--- write large values until the alarm refuses them");
    let mut acked: BTreeMap<String, usize> = BTreeMap::new();
    let mut refusal = None;
    for i in 0..MAX_WRITES {
        let key = format!("fill/{i:04}");
        let (status, body) = c.put(1 + (i as u64 % 3), &key, &value_for(i)).await?;
        match status {
            200 => {
                acked.insert(key, i);
            }
            507 => {
                refusal = Some(body);
                break;
            }
            // A retryable refusal (e.g. a leader busy flushing): go on.
            503 => tokio::time::sleep(Duration::from_millis(100)).await,
            s => bail!("write {i}: {s} {body}"),
        }
    }
    let refusal = refusal.ok_or_else(|| anyhow!("no write refused after {MAX_WRITES}"))?;
    assert_eq!(refusal["error"]["code"], "no_space", "{refusal}");
    assert!(!acked.is_empty(), "the first write was refused");
    info!(acknowledged = acked.len(), "refused with no_space");
    c.assert_alive()?;

    info!("--- the alarm is cluster state: every node lists it and refuses writes");
    for id in [1, 2, 3] {
        c.wait_for("the alarm on every node", || async {
            c.alarms(id).await.is_ok_and(|a| has_nospace(&a, 3))
        })
        .await?;
        let (s, body) = c.put(id, "after/alarm", "small").await?;
        assert_eq!((s, body["error"]["code"].clone()), (507, json!("no_space")));
        let txn = c
            .http
            .post(c.url(id, "/v1/txn"))
            .json(&json!({"compare": [], "success": [{"put": {"key": "after/txn", "value": "v"}}], "failure": []}))
            .send()
            .await?;
        assert_eq!(txn.status(), 507);
    }
    let (_, status) = c.get_json(&c.url(2, "/v1/status")).await?;
    assert!(has_nospace(&status["alarms"], 3), "{status}");
    let (_, status3) = c.get_json(&c.url(3, "/v1/status")).await?;
    assert_eq!(status3["disk"]["min_free_bytes"], MIN_FREE, "{status3}");
    let metrics = c
        .http
        .get(c.url(1, "/metrics"))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        metrics.contains("ballast_alarm_active{alarm=\"nospace\",member=\"3\"} 1"),
        "{metrics}"
    );

    info!("--- reads, watches and deletes keep working");
    let (first_key, first_i) = acked
        .iter()
        .next()
        .map(|(k, i)| (k.clone(), *i))
        .ok_or_else(|| anyhow!("nothing acknowledged"))?;
    for id in [1, 2, 3] {
        assert_eq!(
            c.read(id, &first_key, "serializable").await?,
            Some(value_for(first_i))
        );
    }
    assert_eq!(
        c.read(3, &first_key, "linearizable").await?,
        Some(value_for(first_i))
    );
    let (_, now) = c.get_json(&c.url(3, "/v1/status")).await?;
    let from = now["revision"].as_u64().unwrap_or(0) + 1;
    let mut watch = WatchStream::open(
        &c.http,
        &c.url(
            3,
            &format!("/v1/watch/fill/?prefix=true&start_revision={from}"),
        ),
        None,
    )
    .await?;
    assert_eq!(watch.status, 200);
    let r = c
        .http
        .delete(c.url(1, &format!("/v1/kv/{first_key}")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    acked.remove(&first_key);
    let event = watch
        .next(Duration::from_secs(10))
        .await?
        .ok_or_else(|| anyhow!("the watch on node 3 ended"))?;
    assert_eq!(event.keys(), vec![first_key.clone()]);
    drop(watch);
    c.assert_alive()?;

    info!("--- fill node 3's disk to below half its floor: the reserve goes, nothing dies");
    let filler = fill(&tmpfs.path)?;
    c.wait_for("node 3 to delete its reserve", || async {
        !dirs[&3].join("space.reserve").exists()
    })
    .await?;
    c.assert_alive()?;

    info!("--- disarming while node 3 is still short raises the alarm again");
    disarm(&ctl, &c.client[&1], false).await?;
    c.wait_for("the alarm to come back", || async {
        c.alarms(1).await.is_ok_and(|a| has_nospace(&a, 3))
    })
    .await?;

    info!("--- node 3 leads on the full disk: leadership is moved to it first");
    // The harder case: the restarted node was the leader, so at its start
    // it writes a new vote and the blank entry of the new leader.
    c.make_leader(1, 3).await?;
    c.assert_alive()?;

    info!("--- restart node 3 on the full disk: it serves reads and rejoins");
    c.stop(3).await?;
    c.spawn(3)?;
    let (probe, probe_i) = acked
        .iter()
        .next_back()
        .map(|(k, i)| (k.clone(), *i))
        .ok_or_else(|| anyhow!("nothing acknowledged is left"))?;
    c.wait_serves(3, &probe, probe_i).await?;
    c.wait_for("node 3 to rejoin", || c.ready(3)).await?;
    c.assert_alive()?;
    let (s, body) = c.put(3, "after/restart", "small").await?;
    assert_eq!((s, body["error"]["code"].clone()), (507, json!("no_space")));

    info!("--- free space, disarm: writes are accepted again");
    // The filler, and room for what node 3 itself wrote.
    std::fs::remove_file(&filler)?;
    tmpfs.grow(TMPFS_MIB * 2)?;
    let answer: Value = serde_json::from_slice(&disarm(&ctl, &c.client[&2], true).await?)?;
    assert!(has_nospace(&answer["disarmed"], 3), "{answer}");
    c.wait_for("a write to be accepted", || async {
        c.put(3, "after/free", "small")
            .await
            .is_ok_and(|(s, _)| s == 200)
    })
    .await?;
    // Each node lists what it has applied: one that lags behind the disarm
    // catches up within the wait.
    for id in [1, 2, 3] {
        c.wait_for(&format!("node {id} to list no alarms"), || async {
            c.alarms(id)
                .await
                .is_ok_and(|a| a.as_array().is_some_and(Vec::is_empty))
        })
        .await?;
    }
    let out = Command::new(&ctl)
        .args(["--endpoints", &c.client[&3], "alarm", "list"])
        .output()?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "no active alarms\n");

    info!("--- nothing acknowledged was lost");
    for (key, i) in &acked {
        assert_eq!(
            c.read(3, key, "linearizable").await?.as_deref(),
            Some(value_for(*i).as_str()),
            "{key}"
        );
    }
    c.assert_alive()?;
    drop(c);
    drop(tmpfs);
    Ok(())
}

/// Fills the filesystem of `dir` to the last byte with a file (in smaller and
/// smaller writes until even one byte does not fit); returns its path.
fn fill_to_the_last_byte(dir: &Path, fs_mib: u64) -> Result<PathBuf> {
    let path = dir.join("filler");
    let mut f = File::create(&path)?;
    for size in [64 * 1024, 4096, 1] {
        let chunk = vec![7u8; size];
        // Bounded: at most the whole filesystem in chunks of this size.
        let mut full = false;
        for _ in 0..(fs_mib * 1024 * 1024 / size as u64 + 1) {
            if f.write_all(&chunk).is_err() {
                full = true;
                break;
            }
        }
        if !full {
            bail!("{} did not fill up", dir.display());
        }
    }
    Ok(path)
}

/// A storage failure that openraft cannot survive: node 3 runs without a
/// floor or a reserve (`--min-free-bytes 0 --reserve-bytes 0`), so nothing
/// keeps RocksDB away from `ENOSPC`, and its disk is filled to the last byte
/// while the cluster takes writes. Its Raft log append (or state-machine
/// write) fails and its Raft stops; the process restarts the node by itself,
/// retrying while the disk is full, and once there is room again node 3 is
/// back: same process, caught up, taking writes. The other two nodes keep
/// acknowledging writes throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raft_stops_on_a_full_disk_restarts_itself_in_process() -> Result<()> {
    const FS_MIB: u64 = 64;
    ballast_tests::init_logging();
    let root = tempfile::tempdir()?;
    let Some((tmpfs, mut c, _)) = node3_on_a_tmpfs(root.path(), FS_MIB, (0, 0)).await? else {
        return Ok(());
    };
    // Node 3 must not lead: the writes below go through the other two.
    c.make_leader(2, 1).await?;
    let (s, _) = c.put(1, "before/full", "small").await?;
    assert_eq!(s, 200);
    c.wait_for("node 3 to apply the first write", || async {
        c.read(3, "before/full", "serializable")
            .await
            .is_ok_and(|v| v.as_deref() == Some("small"))
    })
    .await?;

    info!("--- fill node 3's disk to the last byte, then write");
    let filler = fill_to_the_last_byte(&tmpfs.path, FS_MIB)?;
    for i in 0..64 {
        let key = format!("full/{i:03}");
        let (status, body) = c.put(1 + (i as u64 % 2), &key, &value_for(i)).await?;
        // Nodes 1 and 2 are a quorum: every write is acknowledged.
        assert_eq!(status, 200, "write {i}: {body}");
        if c.log(3).contains("Raft stopped on an error") {
            break;
        }
    }
    c.wait_for("node 3's Raft to stop and a restart to begin", || async {
        c.log(3)
            .contains("Raft stopped on an error: restarting the node in this process")
    })
    .await?;
    c.assert_alive()?;
    // The disk stays full a while, under writes: node 3 may reopen on it
    // (RocksDB opens on a full tmpfs) and stop again at its next append, or
    // fail to start; either way it retries, ever less often, and the
    // process stays up.
    for i in 64..80 {
        let key = format!("full/{i:03}");
        let (status, body) = c.put(1 + (i as u64 % 2), &key, &value_for(i)).await?;
        assert_eq!(status, 200, "write {i}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.assert_alive()?;
    }
    let (probe, probe_i) = ("full/079".to_owned(), 79);
    info!("--- room again: node 3 comes back in the same process and catches up");
    std::fs::remove_file(&filler)?;
    c.wait_for("node 3 to restart", || async {
        c.log(3).contains("node restarted after Raft stopped")
    })
    .await?;
    c.wait_serves(3, &probe, probe_i).await?;
    c.wait_for("node 3 to be ready", || c.ready(3)).await?;
    let (s, body) = c.put(3, "after/restart", "small").await?;
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        c.read(3, "before/full", "linearizable").await?.as_deref(),
        Some("small")
    );
    c.assert_alive()?;
    for line in c.log(3).lines().filter(|l| l.contains("restart")) {
        info!("node 3: {line}");
    }
    drop(c);
    drop(tmpfs);
    Ok(())
}
