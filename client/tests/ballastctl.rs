//! `ballastctl` tested as a process against a real 3-node cluster of `ballastd`
//! processes: what it prints on stdout and stderr, and the exit code.
//!
//! `ballastd` belongs to the `ballast-store` crate, so Cargo does not build it
//! for this test; it is looked up next to this test's executable
//! (`target/<profile>/ballastd`) and built with `cargo build -p ballast-store
//! --bin ballastd` when missing.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

const CTL: &str = env!("CARGO_BIN_EXE_ballastctl");

/// Serializes the one-time build of `ballastd` between tests of this binary.
static BUILD: Mutex<()> = Mutex::new(());

/// `target/<profile>/ballastd`, built first if it is not there.
fn ballastd() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/ballastctl-<hash> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test path {}", exe.display()))?;
    let path = profile_dir.join("ballastd");
    let _guard = BUILD.lock().map_err(|_| anyhow!("build lock poisoned"))?;
    if path.exists() {
        return Ok(path);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "-p", "ballast-store", "--bin", "ballastd"])
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    // CARGO_TARGET_DIR, when set, is inherited and lands the binary where we look.
    let status = build.status().context("running cargo build for ballastd")?;
    if !status.success() || !path.exists() {
        bail!(
            "could not build ballastd ({status}); expected it at {}",
            path.display()
        );
    }
    Ok(path)
}

use ballast_testkit::free_port;

/// Client and peer port of each node.
type Ports = BTreeMap<u64, (u16, u16)>;

fn new_ports() -> Result<Ports> {
    // Six distinct ports: nothing holds them until the nodes start, so
    // free_port alone may hand out the same one twice.
    let mut taken = std::collections::BTreeSet::new();
    let mut distinct = || -> Result<u16> {
        loop {
            let port = free_port()?;
            if taken.insert(port) {
                return Ok(port);
            }
        }
    };
    let mut ports = BTreeMap::new();
    for id in 1..=3u64 {
        ports.insert(id, (distinct()?, distinct()?));
    }
    Ok(ports)
}

/// `--initial-cluster` of `ports`.
fn initial_cluster(ports: &Ports) -> String {
    ports
        .iter()
        .map(|(id, (c, p))| format!("{id}=127.0.0.1:{c}/127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Three `ballastd` processes; killed (exactly these PIDs, via `Child`) on drop.
struct Cluster {
    dir: tempfile::TempDir,
    children: Vec<Child>,
    endpoints: Vec<String>,
    /// The `--initial-cluster` the nodes were started with.
    initial: String,
    /// Data directories and logs are `<name>N`.
    name: String,
    /// Environment of every ballastctl run against it (TLS files).
    env: Vec<(&'static str, PathBuf)>,
    /// The admin token of a cluster started with `--auth`, sent by [`Cluster::ctl`].
    token: Option<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let dir = tempfile::Builder::new().prefix("ballastctl-").tempdir()?;
        Self::launch(dir, &new_ports()?, "node", &[])
    }

    /// Starts three nodes on `ports` with data directories `DIR/<name>N`
    /// (which may already hold restored data) and `extra` flags.
    fn launch(
        dir: tempfile::TempDir,
        ports: &Ports,
        name: &str,
        extra: &[&str],
    ) -> Result<Cluster> {
        Self::launch_with(dir, ports, name, extra, Vec::new())
    }

    /// [`launch`](Self::launch), with `env` set for every ballastctl run;
    /// the endpoints are `https://` when `extra` turns TLS on.
    fn launch_with(
        dir: tempfile::TempDir,
        ports: &Ports,
        name: &str,
        extra: &[&str],
        env: Vec<(&'static str, PathBuf)>,
    ) -> Result<Cluster> {
        let bin = ballastd()?;
        let initial = initial_cluster(ports);
        let scheme = if extra.contains(&"--tls-cert") {
            "https"
        } else {
            "http"
        };
        let mut cluster = Cluster {
            endpoints: ports
                .values()
                .map(|(c, _)| format!("{scheme}://127.0.0.1:{c}"))
                .collect(),
            dir,
            children: Vec::new(),
            initial: initial.clone(),
            name: name.to_owned(),
            env,
            token: None,
        };
        for (id, (client, peer)) in ports {
            let log = std::fs::File::create(cluster.dir.path().join(format!("{name}{id}.log")))?;
            let child = Command::new(&bin)
                .args(["--node-id", &id.to_string()])
                .arg("--data-dir")
                .arg(cluster.dir.path().join(format!("{name}{id}")))
                .args(["--listen-client", &format!("127.0.0.1:{client}")])
                .args(["--listen-peer", &format!("127.0.0.1:{peer}")])
                .args(["--initial-cluster", &initial])
                .args(["--heartbeat-ms", "50"])
                .args(["--election-timeout-min-ms", "300"])
                .args(["--election-timeout-max-ms", "600"])
                .args(extra)
                .env("RUST_LOG", "info,openraft=warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("spawning ballastd")?;
            cluster.children.push(child);
        }
        if extra.contains(&"--auth") {
            cluster.token = Some(cluster.initial_token(Duration::from_secs(30))?);
        }
        cluster.wait_ready(Duration::from_secs(30))?;
        Ok(cluster)
    }

    /// The initial admin token of a cluster started with `--auth`: the
    /// token file of the node whose bootstrap entry won (the others remove
    /// theirs), once the cluster accepts it.
    fn initial_token(&self, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            for id in 1..=3 {
                let file = self.path(&format!("{}{id}/admin.token", self.name));
                let Ok(text) = std::fs::read_to_string(&file) else {
                    continue;
                };
                let token = text.trim();
                let run = run_full(
                    &["-o", "json", "auth", "token", "list"],
                    &self.endpoints.join(","),
                    None,
                    &self.env,
                    Some(token),
                )?;
                // With auth off anyone may list (no tokens yet); with auth on
                // only a valid token, and it is in the list.
                let listed = run
                    .json()
                    .ok()
                    .and_then(|d| d["tokens"].as_array().map(Vec::len));
                if run.code == 0 && listed.is_some_and(|n| n > 0) {
                    return Ok(token.to_owned());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("no initial admin token within {timeout:?}\n{}", self.logs())
    }

    /// Until every node reports the same leader (asked through ballastctl itself).
    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut last = String::new();
        while Instant::now() < deadline {
            let run = self.ctl(&["-o", "json", "--timeout", "1s", "status"])?;
            if let Ok(doc) = serde_json::from_slice::<Value>(&run.stdout) {
                let eps = doc["endpoints"].as_array().cloned().unwrap_or_default();
                let leaders: Vec<&Value> = eps.iter().map(|e| &e["leader"]).collect();
                let has_leader = eps.iter().any(|e| e["raft"]["state"] == "Leader");
                if has_leader
                    && eps.len() == 3
                    && leaders.iter().all(|l| l.is_u64() && *l == leaders[0])
                {
                    return Ok(());
                }
            }
            last = format!("{run:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("cluster not ready: {last}\n{}", self.logs())
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|id| {
                let text =
                    std::fs::read_to_string(self.dir.path().join(format!("{}{id}.log", self.name)))
                        .unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(10).collect();
                format!("--- node {id}\n{}\n", tail.join("\n"))
            })
            .collect()
    }

    /// Runs ballastctl with this cluster's endpoints (through the environment).
    fn ctl(&self, args: &[&str]) -> Result<Run> {
        run_full(
            args,
            &self.endpoints.join(","),
            None,
            &self.env,
            self.token.as_deref(),
        )
    }

    /// Runs ballastctl with `token` (none: no token at all).
    fn ctl_as(&self, token: Option<&str>, args: &[&str]) -> Result<Run> {
        run_full(args, &self.endpoints.join(","), None, &self.env, token)
    }

    fn ctl_stdin(&self, args: &[&str], stdin: &[u8]) -> Result<Run> {
        run_full(
            args,
            &self.endpoints.join(","),
            Some(stdin),
            &self.env,
            self.token.as_deref(),
        )
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// What one ballastctl process did.
struct Run {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code,
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        )
    }
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.stdout).with_context(|| format!("not JSON: {self:?}"))
    }

    /// Asserts the exit code, with the whole run in the message.
    fn expect(self, code: i32) -> Result<Run> {
        if self.code != code {
            bail!("expected exit {code}, got {self:?}");
        }
        if code != 0 && self.stderr.trim().is_empty() {
            bail!("exit {code} without a message on stderr: {self:?}");
        }
        Ok(self)
    }
}

fn run(args: &[&str], endpoints: &str, stdin: Option<&[u8]>) -> Result<Run> {
    run_full(args, endpoints, stdin, &[], None)
}

/// [`run`], with `env` set (TLS files).
fn run_env(
    args: &[&str],
    endpoints: &str,
    stdin: Option<&[u8]>,
    env: &[(&'static str, PathBuf)],
) -> Result<Run> {
    run_full(args, endpoints, stdin, env, None)
}

/// [`run`], with `env` set and `token` in `BALLAST_TOKEN` (or no token at
/// all).
fn run_full(
    args: &[&str],
    endpoints: &str,
    stdin: Option<&[u8]>,
    env: &[(&'static str, PathBuf)],
    token: Option<&str>,
) -> Result<Run> {
    let mut cmd = Command::new(CTL);
    cmd.args(args)
        .env("BALLAST_ENDPOINTS", endpoints)
        .env_remove("BALLAST_OUTPUT")
        .env_remove("BALLAST_TIMEOUT")
        .env_remove("BALLAST_CACERT")
        .env_remove("BALLAST_CERT")
        .env_remove("BALLAST_KEY")
        .env_remove("BALLAST_TOKEN")
        .envs(env.iter().map(|(k, v)| (*k, v.as_os_str())));
    if let Some(token) = token {
        cmd.env("BALLAST_TOKEN", token);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("spawning ballastctl")?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input)?;
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output()?;
    Ok(Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// A port nothing listens on.
fn dead_endpoint() -> Result<String> {
    Ok(format!("http://127.0.0.1:{}", free_port()?))
}

#[test]
fn ballastctl_against_a_live_cluster() -> Result<()> {
    let c = Cluster::start()?;
    put_then_get(&c)?;
    put_from_stdin_and_file(&c)?;
    missing_key(&c)?;
    prefix_reads_and_deletes(&c)?;
    compare_and_swap(&c)?;
    transactions(&c)?;
    binary_values(&c)?;
    api_errors(&c)?;
    status_marks_dead_endpoints(&c)?;
    Ok(())
}

fn put_then_get(c: &Cluster) -> Result<()> {
    let put = c.ctl(&["put", "app/mode", "green"])?.expect(0)?;
    assert!(put.text().starts_with("OK (revision "), "{put:?}");

    let get = c.ctl(&["get", "app/mode"])?.expect(0)?;
    let lines: Vec<String> = get.text().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{get:?}");
    assert!(lines[0].starts_with("KEY") && lines[0].contains("VALUE"));
    assert!(lines[1].starts_with("app/mode") && lines[1].contains("green"));

    let raw = c.ctl(&["get", "app/mode", "--value-only"])?.expect(0)?;
    assert_eq!(raw.stdout, b"green");

    let doc = c
        .ctl(&["-o", "json", "get", "app/mode"])?
        .expect(0)?
        .json()?;
    assert_eq!(doc["kv"]["key"], "app/mode");
    assert_eq!(doc["kv"]["value"], "green");
    assert_eq!(doc["kv"]["version"], 1);
    assert!(doc["revision"].as_u64().is_some_and(|r| r >= 1));

    // --prev-kv returns what was overwritten; --serializable reads locally.
    let doc = c
        .ctl(&["put", "app/mode", "blue", "--prev-kv", "--output", "json"])?
        .expect(0)?
        .json()?;
    assert_eq!(doc["prev_kv"]["value"], "green");
    let doc = c
        .ctl(&["get", "app/mode", "--serializable", "-o", "json"])?
        .expect(0)?
        .json()?;
    // A serializable read may lag, but only to a value the key really had.
    assert!(doc["kv"]["value"] == "blue" || doc["kv"]["value"] == "green");

    // --revision reads the past.
    let first_rev = c
        .ctl(&["-o", "json", "get", "app/mode"])?
        .expect(0)?
        .json()?["kv"]["create_revision"]
        .as_u64()
        .ok_or_else(|| anyhow!("no create_revision"))?;
    let old = c.ctl(&[
        "get",
        "app/mode",
        "--value-only",
        "--revision",
        &first_rev.to_string(),
    ])?;
    assert_eq!(old.expect(0)?.stdout, b"green");
    Ok(())
}

fn put_from_stdin_and_file(c: &Cluster) -> Result<()> {
    // No VALUE and stdin not a terminal: stdin is the value, bytes as they are.
    c.ctl_stdin(&["put", "app/stdin"], b"line one\nline two\n")?
        .expect(0)?;
    let raw = c.ctl(&["get", "app/stdin", "--value-only"])?.expect(0)?;
    assert_eq!(raw.stdout, b"line one\nline two\n");
    // `-` reads stdin too.
    c.ctl_stdin(&["put", "app/dash", "-"], b"dashed")?
        .expect(0)?;
    let raw = c.ctl(&["get", "app/dash", "--value-only"])?.expect(0)?;
    assert_eq!(raw.stdout, b"dashed");
    // The table escapes the newlines so a row stays one line.
    let table = c.ctl(&["get", "app/stdin"])?.expect(0)?;
    assert!(table.text().contains("line one\\nline two\\n"), "{table:?}");

    let path = c.path("config.yaml");
    std::fs::write(&path, b"timeout: 250ms\nretries: 3\n")?;
    let path_str = path.to_string_lossy().into_owned();
    c.ctl(&["put", "app/config", "--file", &path_str])?
        .expect(0)?;
    let raw = c.ctl(&["get", "app/config", "--value-only"])?.expect(0)?;
    assert_eq!(raw.stdout, b"timeout: 250ms\nretries: 3\n");

    // A missing file is a usage error, and nothing is written.
    let missing = c.path("nope.yaml").to_string_lossy().into_owned();
    let run = c
        .ctl(&["put", "app/config", "--file", &missing])?
        .expect(2)?;
    assert!(run.stderr.contains("cannot open"), "{run:?}");
    Ok(())
}

fn missing_key(c: &Cluster) -> Result<()> {
    let run = c.ctl(&["get", "app/missing"])?.expect(1)?;
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
    let run = c.ctl(&["-o", "json", "get", "app/missing"])?.expect(1)?;
    let doc = run.json()?;
    assert!(doc["kv"].is_null(), "{run:?}");
    assert!(doc["revision"].is_u64());
    // --value-only prints nothing either.
    let run = c.ctl(&["get", "app/missing", "--value-only"])?.expect(1)?;
    assert!(run.stdout.is_empty());
    Ok(())
}

fn prefix_reads_and_deletes(c: &Cluster) -> Result<()> {
    for (k, v) in [
        ("list/a", "1"),
        ("list/b", "2"),
        ("list/c", "3"),
        ("listx", "no"),
    ] {
        c.ctl(&["put", k, v])?.expect(0)?;
    }
    let doc = c
        .ctl(&["-o", "json", "get", "list/", "--prefix", "--limit", "2"])?
        .expect(0)?
        .json()?;
    let keys: Vec<&str> = doc["kvs"]
        .as_array()
        .map(|a| a.iter().filter_map(|kv| kv["key"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(keys, ["list/a", "list/b"]);
    assert_eq!(doc["more"], true);

    let table = c
        .ctl(&["get", "list/", "--prefix", "--limit", "2"])?
        .expect(0)?;
    assert!(table.text().contains("more keys exist"), "{table:?}");

    let doc = c
        .ctl(&["-o", "json", "get", "list/", "--prefix"])?
        .expect(0)?
        .json()?;
    assert_eq!(doc["kvs"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["more"], false);

    let del = c
        .ctl(&["del", "list/", "--prefix", "--prev-kv"])?
        .expect(0)?;
    assert!(del.text().starts_with("deleted 3 (revision "), "{del:?}");
    assert!(del.text().contains("list/c"), "{del:?}");
    let doc = c
        .ctl(&["-o", "json", "get", "list/", "--prefix"])?
        .expect(0)?
        .json()?;
    assert_eq!(doc["kvs"].as_array().map(Vec::len), Some(0));
    // The prefix matched bytes: listx survived.
    c.ctl(&["get", "listx"])?.expect(0)?;

    // Deleting a single key, then nothing: both succeed.
    let doc = c.ctl(&["-o", "json", "del", "listx"])?.expect(0)?.json()?;
    assert_eq!(doc["deleted"], 1);
    let doc = c.ctl(&["-o", "json", "del", "listx"])?.expect(0)?.json()?;
    assert_eq!(doc["deleted"], 0);
    Ok(())
}

fn compare_and_swap(c: &Cluster) -> Result<()> {
    let ok = c
        .ctl(&["cas", "lock/deploy", "host-1", "--absent"])?
        .expect(0)?;
    assert!(ok.text().starts_with("OK (revision "), "{ok:?}");
    c.ctl(&["cas", "lock/deploy", "host-2", "--expect", "host-1"])?
        .expect(0)?;

    let failed = c
        .ctl(&["cas", "lock/deploy", "host-3", "--expect", "host-1"])?
        .expect(1)?;
    assert!(failed.text().contains("host-2"), "{failed:?}");
    assert!(failed.stderr.contains("was not changed"), "{failed:?}");

    let failed = c
        .ctl(&["-o", "json", "cas", "lock/deploy", "host-3", "--absent"])?
        .expect(1)?;
    let doc = failed.json()?;
    assert_eq!(doc["succeeded"], false);
    assert_eq!(doc["current"]["value"], "host-2");
    assert!(failed.stderr.contains("already exists"), "{failed:?}");

    let raw = c.ctl(&["get", "lock/deploy", "--value-only"])?.expect(0)?;
    assert_eq!(raw.stdout, b"host-2");
    Ok(())
}

fn transactions(c: &Cluster) -> Result<()> {
    c.ctl(&["put", "txn/mode", "green"])?.expect(0)?;
    let doc = r#"{
        "compare": [{"key": "txn/mode", "target": "value", "op": "=", "value": "green"}],
        "success": [{"put": {"key": "txn/mode", "value": "blue"}},
                    {"put": {"key": "txn/blob", "value": "/wAB", "encoding": "base64"}},
                    {"get": {"key": "txn/", "prefix": true}}],
        "failure": [{"get": {"key": "txn/mode"}}]
    }"#;
    let path = c.path("txn.json");
    std::fs::write(&path, doc)?;
    let path = path.to_string_lossy().into_owned();

    let run = c.ctl(&["txn", "--file", &path])?.expect(0)?;
    let text = run.text();
    assert!(text.starts_with("succeeded (revision "), "{run:?}");
    assert!(text.contains("[2] get: 2 keys"), "{run:?}");
    assert!(text.contains("base64:/wAB"), "{run:?}");

    // The same document again: the compare fails, the failure branch reads.
    let run = c.ctl(&["-o", "json", "txn", "--file", &path])?.expect(1)?;
    let out = run.json()?;
    assert_eq!(out["succeeded"], false);
    assert_eq!(out["responses"][0]["get"]["kvs"][0]["value"], "blue");
    assert!(run.stderr.contains("compare did not hold"), "{run:?}");

    // From stdin.
    let stdin_doc = br#"{"success": [{"delete": {"key": "txn/", "prefix": true}}]}"#;
    let run = c.ctl_stdin(&["-o", "json", "txn"], stdin_doc)?.expect(0)?;
    assert_eq!(run.json()?["responses"][0]["delete"]["deleted"], 2);

    // A malformed document is refused before anything is sent.
    let run = c
        .ctl_stdin(&["txn"], br#"{"compare": [{"key": "a", "op": "~"}]}"#)?
        .expect(2)?;
    assert!(run.stderr.contains("txn document"), "{run:?}");
    Ok(())
}

fn binary_values(c: &Cluster) -> Result<()> {
    let path = c.path("bin.dat");
    std::fs::write(&path, [0xff, 0x00, 0x01])?;
    let path = path.to_string_lossy().into_owned();
    c.ctl(&["put", "app/blob", "--file", &path])?.expect(0)?;

    let doc = c
        .ctl(&["-o", "json", "get", "app/blob"])?
        .expect(0)?
        .json()?;
    assert_eq!(doc["kv"]["value"], "/wAB");
    assert_eq!(doc["kv"]["encoding"], "base64");
    let table = c.ctl(&["get", "app/blob"])?.expect(0)?;
    assert!(table.text().contains("base64:/wAB"), "{table:?}");
    let raw = c.ctl(&["get", "app/blob", "--value-only"])?.expect(0)?;
    assert_eq!(raw.stdout, [0xff, 0x00, 0x01]);
    Ok(())
}

fn api_errors(c: &Cluster) -> Result<()> {
    // Over the default 1.5 MiB value limit: 413 value_too_large, exit 3.
    let path = c.path("big.dat");
    std::fs::write(&path, vec![b'x'; 1_600_000])?;
    let path = path.to_string_lossy().into_owned();
    let run = c.ctl(&["put", "app/big", "--file", &path])?.expect(3)?;
    assert!(run.stderr.contains("value_too_large"), "{run:?}");
    let run = c
        .ctl(&["-o", "json", "put", "app/big", "--file", &path])?
        .expect(3)?;
    let doc = run.json()?;
    assert_eq!(doc["error"]["code"], "value_too_large");
    assert_eq!(doc["error"]["exit_code"], 3);
    // The key was not written.
    c.ctl(&["get", "app/big"])?.expect(1)?;
    Ok(())
}

fn status_marks_dead_endpoints(c: &Cluster) -> Result<()> {
    let dead = dead_endpoint()?;
    let endpoints = format!("{},{dead}", c.endpoints.join(","));
    let run = c
        .ctl(&["--endpoints", &endpoints, "--timeout", "2s", "status"])?
        .expect(0)?;
    let text = run.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{run:?}");
    assert!(lines[0].starts_with("ENDPOINT") && lines[0].contains("STATE_HASH"));
    for (i, ep) in c.endpoints.iter().enumerate() {
        assert!(lines[i + 1].starts_with(ep.as_str()), "{run:?}");
    }
    assert_eq!(
        lines[1..4].iter().filter(|l| l.ends_with("Leader")).count(),
        1,
        "{run:?}"
    );
    assert_eq!(
        lines[1..4]
            .iter()
            .filter(|l| l.ends_with("Follower"))
            .count(),
        2,
        "{run:?}"
    );
    assert!(
        lines[4].starts_with(&dead) && lines[4].ends_with("UNREACHABLE"),
        "{run:?}"
    );
    assert!(run.stderr.contains(&dead), "{run:?}");

    let doc = c
        .ctl(&["--endpoints", &endpoints, "-o", "json", "status"])?
        .expect(0)?
        .json()?;
    let eps = doc["endpoints"].as_array().cloned().unwrap_or_default();
    assert_eq!(eps.len(), 4);
    let ids: Vec<u64> = eps.iter().filter_map(|e| e["node_id"].as_u64()).collect();
    assert_eq!(ids, [1, 2, 3]);
    assert_eq!(eps[3]["reachable"], false);
    Ok(())
}

#[test]
fn unreachable_cluster_exits_4() -> Result<()> {
    let endpoints = format!("{},{}", dead_endpoint()?, dead_endpoint()?);
    for args in [
        &["--timeout", "1s", "get", "k"][..],
        &["--timeout", "1s", "put", "k", "v"],
        &["--timeout", "1s", "status"],
    ] {
        let run = run(args, &endpoints, None)?.expect(4)?;
        assert!(run.stderr.contains("unavailable"), "{args:?}: {run:?}");
        assert!(run.stdout.is_empty() || args.contains(&"status"), "{run:?}");
    }
    let run = run(
        &["-o", "json", "--timeout", "1s", "get", "k"],
        &endpoints,
        None,
    )?
    .expect(4)?;
    assert_eq!(run.json()?["error"]["kind"], "unavailable");
    Ok(())
}

#[test]
fn bad_arguments_exit_2() -> Result<()> {
    // No cluster is needed: every one of these is refused before any request.
    let endpoints = dead_endpoint()?;
    for args in [
        &[][..],
        &["frobnicate"],
        &["get"],
        &["get", "k", "--limit", "2"],
        &["get", "k", "--prefix", "--value-only"],
        &["-o", "json", "get", "k", "--value-only"],
        &["--timeout", "0s", "get", "k"],
        &["-o", "yaml", "get", "k"],
        &["put", "k", "v", "--file", "f"],
        &["cas", "k", "v"],
        &["cas", "k", "v", "--absent", "--expect", "x"],
        &["get", "a/../b"],
        &["--endpoints", "https://127.0.0.1:1", "get", "k"],
    ] {
        let run = run(args, &endpoints, None)?;
        if run.code != 2 || run.stderr.trim().is_empty() {
            bail!("{args:?}: expected exit 2 with a message, got {run:?}");
        }
        assert!(run.stdout.is_empty(), "{args:?}: {run:?}");
    }
    // --help is not an error.
    let help = run(&["--help"], &endpoints, None)?.expect(0)?;
    assert!(help.text().contains("Exit codes"), "{help:?}");
    Ok(())
}

/// Runs `ballastd` with `args` to completion.
fn ballastd_run(args: &[&str]) -> Result<Run> {
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(ballastd()?)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .context("running ballastd")?;
    Ok(Run {
        code: status.code().unwrap_or(-1),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// The backup and disaster-recovery steps of docs/operations.md, through the
/// real binaries: `snapshot save`, `snapshot status`, `ballastd restore` of
/// every member, and the restored cluster started with plain `ballastd`.
#[test]
fn snapshot_save_status_and_restore_through_the_binaries() -> Result<()> {
    let mut c = Cluster::start()?;
    for i in 0..20 {
        c.ctl(&["put", &format!("cfg/k{i}"), &format!("v{i}")])?
            .expect(0)?;
    }
    c.ctl(&["put", "cfg/k3", "changed"])?.expect(0)?;
    c.ctl(&["del", "cfg/k4"])?.expect(0)?;
    let before = c
        .ctl(&["-o", "json", "get", "cfg/", "--prefix"])?
        .expect(0)?
        .json()?;
    let revision = before["revision"].as_u64().context("revision")?;

    // save: FILE appears whole, FILE.part does not stay.
    let file = c.path("backup.snap");
    let file_arg = file.to_string_lossy().into_owned();
    let saved = c.ctl(&["snapshot", "save", &file_arg])?.expect(0)?;
    assert!(saved.text().starts_with("saved "), "{saved:?}");
    assert!(file.is_file());
    assert!(!c.path("backup.snap.part").exists());
    // A second save to the same name is refused and leaves the file alone.
    let size = std::fs::metadata(&file)?.len();
    c.ctl(&["snapshot", "save", &file_arg])?.expect(2)?;
    assert_eq!(std::fs::metadata(&file)?.len(), size);

    let status = c
        .ctl(&["snapshot", "status", &file_arg, "--json"])?
        .expect(0)?
        .json()?;
    assert_eq!(status["revision"], revision);
    assert_eq!(status["key_count"], 19);
    assert_eq!(status["size"], size);
    let table = c.ctl(&["snapshot", "status", &file_arg])?.expect(0)?;
    assert!(table.text().contains("REVISION"), "{table:?}");

    // Corrupt and truncated copies: exit 6 with a clear message.
    let bytes = std::fs::read(&file)?;
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x10;
    let corrupt = c.path("corrupt.snap");
    std::fs::write(&corrupt, &flipped)?;
    let run = c
        .ctl(&["snapshot", "status", &corrupt.to_string_lossy()])?
        .expect(6)?;
    assert!(run.stderr.contains("corrupt"), "{run:?}");
    let truncated = c.path("truncated.snap");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100])?;
    let run = c
        .ctl(&["snapshot", "status", &truncated.to_string_lossy()])?
        .expect(6)?;
    assert!(run.stderr.contains("truncated"), "{run:?}");

    // A save that cannot reach a node leaves nothing behind.
    let nowhere = c.path("nowhere.snap");
    let nowhere_arg = nowhere.to_string_lossy().into_owned();
    let dead = dead_endpoint()?;
    self::run(
        &["--timeout", "1s", "snapshot", "save", &nowhere_arg],
        &dead,
        None,
    )?
    .expect(4)?;
    assert!(!nowhere.exists() && !c.path("nowhere.snap.part").exists());

    // Disaster: every node of the old cluster is gone.
    for child in &mut c.children {
        child.kill()?;
        child.wait()?;
    }
    c.children.clear();

    let ports = new_ports()?;
    let initial = initial_cluster(&ports);
    let target = |id: u64| {
        c.path(&format!("restored{id}"))
            .to_string_lossy()
            .into_owned()
    };
    let restore = |id: u64, source: &str, extra: &[&str]| -> Result<Run> {
        let (id, data_dir) = (id.to_string(), target(id));
        let mut args = vec![
            "restore",
            "--snapshot",
            source,
            "--node-id",
            &id,
            "--data-dir",
            &data_dir,
            "--initial-cluster",
            &initial,
            "--cluster-token",
            "drill",
        ];
        args.extend_from_slice(extra);
        ballastd_run(&args)
    };
    // Refusals first: each leaves no data directory.
    let run = restore(1, &file_arg, &[])?;
    assert!(
        run.code != 0 && run.stderr.contains("--new-cluster"),
        "{run:?}"
    );
    let run = restore(1, &corrupt.to_string_lossy(), &["--new-cluster"])?;
    assert!(run.code != 0 && run.stderr.contains("corrupt"), "{run:?}");
    let run = ballastd_run(&[
        "restore",
        "--snapshot",
        &file_arg,
        "--node-id",
        "4",
        "--data-dir",
        &target(4),
        "--initial-cluster",
        &initial,
        "--new-cluster",
    ])?;
    assert!(
        run.code != 0 && run.stderr.contains("not in --initial-cluster"),
        "{run:?}"
    );
    assert!(!Path::new(&target(1)).exists() && !Path::new(&target(4)).exists());
    let old_data = c.path("node1").to_string_lossy().into_owned();
    let run = ballastd_run(&[
        "restore",
        "--snapshot",
        &file_arg,
        "--node-id",
        "1",
        "--data-dir",
        &old_data,
        "--initial-cluster",
        &initial,
        "--new-cluster",
    ])?;
    assert!(run.code != 0 && run.stderr.contains("not empty"), "{run:?}");

    for id in 1..=3 {
        let run = restore(id, &file_arg, &["--new-cluster"])?;
        assert!(run.code == 0, "{run:?}");
        assert!(
            run.text().contains(&format!("revision {revision}")),
            "{run:?}"
        );
    }
    let dir = std::mem::replace(&mut c.dir, tempfile::tempdir()?);
    let restored = Cluster::launch(dir, &ports, "restored", &["--cluster-token", "drill"])?;
    let after = restored
        .ctl(&["-o", "json", "get", "cfg/", "--prefix"])?
        .expect(0)?
        .json()?;
    assert_eq!(after["kvs"], before["kvs"]);
    let put = restored
        .ctl(&["-o", "json", "put", "cfg/new", "x"])?
        .expect(0)?
        .json()?;
    assert_eq!(put["revision"], revision + 1);
    assert_eq!(restored.initial, initial);
    Ok(())
}

impl Cluster {
    /// Starts `ballastd --node-id ID --join <this cluster's endpoints>` on an
    /// empty data directory, as docs/operations.md shows; returns its client
    /// and peer addresses. The process is killed with the others.
    fn join(&mut self, id: u64) -> Result<(String, String)> {
        let (client, peer) = (
            format!("127.0.0.1:{}", free_port()?),
            format!("127.0.0.1:{}", free_port()?),
        );
        let log = std::fs::File::create(self.path(&format!("{}{id}.log", self.name)))?;
        let child = Command::new(ballastd()?)
            .args(["--node-id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.path(&format!("{}{id}", self.name)))
            .args(["--listen-client", &client])
            .args(["--listen-peer", &peer])
            .args(["--join", &self.endpoints.join(",")])
            .args(["--heartbeat-ms", "50"])
            .args(["--election-timeout-min-ms", "300"])
            .args(["--election-timeout-max-ms", "600"])
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning ballastd --join")?;
        self.children.push(child);
        Ok((client, peer))
    }

    /// `members list -o json`, as a map of id to role.
    fn roles(&self) -> Result<BTreeMap<u64, String>> {
        let doc = self
            .ctl(&["-o", "json", "members", "list"])?
            .expect(0)?
            .json()?;
        Ok(doc["members"]
            .as_array()
            .context("members")?
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap_or(0),
                    m["role"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Runs `args` until it exits 0 (up to `timeout`), as an operator would
    /// retry a refused promote.
    fn ctl_until_ok(&self, args: &[&str], timeout: Duration) -> Result<Run> {
        let deadline = Instant::now() + timeout;
        loop {
            let run = self.ctl(args)?;
            if run.code == 0 || Instant::now() > deadline {
                return run.expect(0);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The membership steps of docs/operations.md through the real binaries:
/// join a node, list, promote, transfer leadership to it, remove it while it
/// leads; pre-add a learner with `members add --learner` and start it; and
/// the refusals.
#[test]
fn members_and_leader_transfer_through_the_binaries() -> Result<()> {
    let mut c = Cluster::start()?;
    for i in 0..10 {
        c.ctl(&["put", &format!("m/k{i}"), "v"])?.expect(0)?;
    }

    // A node joins with --join and shows up as a learner.
    c.join(4)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.roles()?.get(&4).map(String::as_str) != Some("learner") {
        if Instant::now() > deadline {
            bail!("node 4 did not join: {:?}\n{}", c.roles()?, c.logs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let table = c.ctl(&["members", "list"])?.expect(0)?;
    assert!(
        table.text().starts_with("ID") && table.text().contains("learner"),
        "{table:?}"
    );

    // Promote (retried while it catches up), then hand it leadership.
    c.ctl_until_ok(&["members", "promote", "4"], Duration::from_secs(30))?;
    assert_eq!(c.roles()?.get(&4).map(String::as_str), Some("voter"));
    let moved = c.ctl(&["leader", "transfer", "--to", "4"])?.expect(0)?;
    assert!(
        moved.text().starts_with("node 4 is the leader"),
        "{moved:?}"
    );
    assert_eq!(c.roles()?.get(&4).map(String::as_str), Some("leader"));

    // Remove it while it leads: leadership moves first.
    let removed = c.ctl(&["members", "remove", "4"])?.expect(0)?;
    assert!(removed.text().starts_with("node 4 removed"), "{removed:?}");
    let roles = c.roles()?;
    assert!(!roles.contains_key(&4), "{roles:?}");
    assert_eq!(roles.values().filter(|r| *r == "leader").count(), 1);
    c.ctl(&["put", "m/after", "ok"])?.expect(0)?;

    // An operator may add the learner first and start it afterwards.
    let (client, peer) = (
        format!("127.0.0.1:{}", free_port()?),
        format!("127.0.0.1:{}", free_port()?),
    );
    c.ctl(&[
        "members",
        "add",
        "5",
        "--learner",
        "--client-addr",
        &client,
        "--peer-addr",
        &peer,
    ])?
    .expect(0)?;
    assert_eq!(c.roles()?.get(&5).map(String::as_str), Some("learner"));
    c.ctl(&["members", "remove", "5"])?.expect(0)?;

    // Refusals: a clear message and a non-zero exit, nothing changed.
    let run = c.ctl(&["members", "promote", "99"])?.expect(3)?;
    assert!(run.stderr.contains("member_not_found"), "{run:?}");
    let run = c
        .ctl(&[
            "members",
            "add",
            "6",
            "--client-addr",
            "a:1",
            "--peer-addr",
            "a:2",
        ])?
        .expect(2)?;
    assert!(run.stderr.contains("--learner"), "{run:?}");
    let run = c.ctl(&["leader", "transfer", "--to", "77"])?.expect(3)?;
    assert!(run.stderr.contains("member_not_found"), "{run:?}");
    let roles = c.roles()?;
    assert_eq!(roles.len(), 3, "{roles:?}");
    Ok(())
}

/// A child process killed (this one, by its handle) and reaped on drop,
/// also when the test fails early.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Test certificates: a CA, and certificates it signs for 127.0.0.1.
struct TestCa {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
    ca_file: PathBuf,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> Result<TestCa> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key)?;
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, cert.pem())?;
        Ok(TestCa { cert, key, ca_file })
    }

    /// (certificate, key) files for `who`.
    fn issue(&self, dir: &Path, who: &str) -> Result<(PathBuf, PathBuf)> {
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        let paths = (
            dir.join(format!("{who}.pem")),
            dir.join(format!("{who}-key.pem")),
        );
        std::fs::write(&paths.0, cert.pem())?;
        std::fs::write(&paths.1, key.serialize_pem())?;
        Ok(paths)
    }
}

/// Three `ballastd` processes serving HTTPS (client certificates required)
/// with mutual TLS between them; ballastctl with and without the CA and a
/// client certificate; a rogue `ballastd` whose certificate another CA
/// signed cannot join, and the cluster keeps its leader.
#[test]
fn tls_cluster_of_processes_and_a_rogue_node() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("ballastctl-tls-")
        .tempdir()?;
    let certs = dir.path().join("certs");
    std::fs::create_dir(&certs)?;
    let ca = TestCa::new(&certs, "cluster")?;
    let (node_cert, node_key) = ca.issue(&certs, "node")?;
    let (client_cert, client_key) = ca.issue(&certs, "client")?;
    let rogue_ca = TestCa::new(&certs, "rogue")?;
    let (rogue_cert, rogue_key) = rogue_ca.issue(&certs, "rogue")?;
    let path = |p: &PathBuf| p.to_string_lossy().into_owned();
    let (node_cert_s, node_key_s, ca_s) = (path(&node_cert), path(&node_key), path(&ca.ca_file));
    let c = Cluster::launch_with(
        dir,
        &new_ports()?,
        "tls",
        &[
            "--tls-cert",
            &node_cert_s,
            "--tls-key",
            &node_key_s,
            "--tls-client-ca",
            &ca_s,
            "--peer-tls-cert",
            &node_cert_s,
            "--peer-tls-key",
            &node_key_s,
            "--peer-tls-ca",
            &ca_s,
        ],
        vec![
            ("BALLAST_CACERT", ca.ca_file.clone()),
            ("BALLAST_CERT", client_cert.clone()),
            ("BALLAST_KEY", client_key.clone()),
        ],
    )?;

    // Writes through any node are committed over the mutual-TLS peer links.
    c.ctl(&["put", "tls/k", "v1"])?.expect(0)?;
    let got = c.ctl(&["get", "tls/k", "--value-only"])?.expect(0)?;
    assert_eq!(got.text().trim(), "v1");

    // No CA: refused before any request, with a message that says why.
    let endpoints = c.endpoints.join(",");
    let no_ca = run(&["get", "tls/k"], &endpoints, None)?.expect(2)?;
    assert!(no_ca.stderr.contains("CA"), "{no_ca:?}");
    // The CA but no client certificate: the nodes refuse the handshake.
    let no_cert = run_env(
        &["--timeout", "2s", "get", "tls/k"],
        &endpoints,
        None,
        &[("BALLAST_CACERT", ca.ca_file.clone())],
    )?
    .expect(4)?;
    assert!(no_cert.stderr.contains("unavailable"), "{no_cert:?}");

    // A rogue node: trusts the cluster CA, but its own certificate comes
    // from another CA. It cannot join (and exits), and the cluster is intact.
    let rogue_ports = new_ports()?;
    let (rogue_client, rogue_peer) = rogue_ports[&1];
    let mut rogue = Reap(
        Command::new(ballastd()?)
            .args(["--node-id", "4"])
            .arg("--data-dir")
            .arg(c.path("rogue"))
            .args(["--listen-client", &format!("127.0.0.1:{rogue_client}")])
            .args(["--listen-peer", &format!("127.0.0.1:{rogue_peer}")])
            .args(["--join", &endpoints])
            .args([
                "--tls-cert",
                &path(&rogue_cert),
                "--tls-key",
                &path(&rogue_key),
            ])
            .args([
                "--peer-tls-cert",
                &path(&rogue_cert),
                "--peer-tls-key",
                &path(&rogue_key),
            ])
            .args(["--peer-tls-ca", &ca_s])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning the rogue ballastd")?,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = rogue.0.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            bail!("the rogue node did not give up within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = rogue.0.stderr.take() {
        std::io::Read::read_to_string(&mut pipe, &mut stderr)?;
    }
    assert!(!status.success(), "the rogue node started: {stderr}");
    assert!(stderr.contains("join"), "{stderr}");

    c.wait_ready(Duration::from_secs(10))?;
    let roles = c.roles()?;
    assert_eq!(
        roles.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3],
        "{roles:?}"
    );
    c.ctl(&["put", "tls/k", "v2"])?.expect(0)?;
    Ok(())
}

/// Tokens and roles through the binaries: `ballastd --auth` bootstraps the
/// admin token; `ballastctl auth ...` makes a role and a token; the token
/// works inside its prefix only; a revoked one stops working; no command
/// prints a secret it was not asked to create.
#[test]
fn auth_tokens_and_roles_through_the_binaries() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("ballastctl-auth-")
        .tempdir()?;
    let c = Cluster::launch(dir, &new_ports()?, "node", &["--auth"])?;
    let admin = c.token.clone().ok_or_else(|| anyhow!("no admin token"))?;

    c.ctl(&[
        "auth", "role", "create", "app", "--kind", "writer", "--prefix", "app/",
    ])?
    .expect(0)?;
    let created = c
        .ctl(&["-o", "json", "auth", "token", "create", "--role", "app"])?
        .expect(0)?
        .json()?;
    let token = created["token"].as_str().unwrap_or_default().to_owned();
    let id = created["id"].as_str().unwrap_or_default().to_owned();
    assert!(token.starts_with("bal_") && !id.is_empty(), "{created}");

    // Inside its prefix: fine. Outside: 403, exit 3.
    c.ctl_as(Some(&token), &["put", "app/x", "1"])?.expect(0)?;
    let run = c.ctl_as(Some(&token), &["put", "other", "1"])?.expect(3)?;
    assert!(run.stderr.contains("permission_denied"), "{run:?}");
    let run = c
        .ctl_as(Some(&token), &["del", "--prefix", "ap"])?
        .expect(3)?;
    assert!(run.stderr.contains("permission_denied"), "{run:?}");
    let run = c.ctl_as(Some(&token), &["members", "list"])?.expect(3)?;
    assert!(run.stderr.contains("permission_denied"), "{run:?}");
    // No token: 401, exit 3.
    let run = c.ctl_as(None, &["get", "app/x"])?.expect(3)?;
    assert!(run.stderr.contains("unauthenticated"), "{run:?}");
    c.ctl(&["get", "other"])?.expect(1)?;

    // Listings never hold a secret.
    let list = c.ctl(&["auth", "token", "list"])?.expect(0)?.text();
    assert!(list.contains(&id), "{list}");
    assert!(!list.contains(&token) && !list.contains(&admin), "{list}");
    let roles = c
        .ctl(&["-o", "json", "auth", "role", "list"])?
        .expect(0)?
        .json()?;
    let names: Vec<&str> = roles["roles"]
        .as_array()
        .map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["admin", "writer", "reader", "app"]);

    // A role in use stays; once its token is revoked it can go.
    let run = c.ctl(&["auth", "role", "delete", "app"])?.expect(3)?;
    assert!(run.stderr.contains("auth_conflict"), "{run:?}");
    c.ctl(&["auth", "token", "revoke", &id])?.expect(0)?;
    let run = c.ctl_as(Some(&token), &["get", "app/x"])?.expect(3)?;
    assert!(run.stderr.contains("unauthenticated"), "{run:?}");
    c.ctl(&["auth", "role", "delete", "app"])?.expect(0)?;
    let run = c.ctl(&["auth", "token", "revoke", &id])?.expect(3)?;
    assert!(run.stderr.contains("auth_not_found"), "{run:?}");
    Ok(())
}
