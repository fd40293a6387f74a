//! Three `ballastd` hosts and a data-plane host, each in its own network
//! namespace, addressing each other only by host name: writes and
//! linearizable reads through every node, a SIGKILLed leader replaced, and a
//! `Replica` on the fourth host that converges and keeps serving.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::hosts::Hosts;

const CLIENT_PORT: u16 = 2379;
const PEER_PORT: u16 = 2380;
const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(100);
const PREFIX: &str = "/netns/";

/// The binary `name` of `package`: the path in `env_var` when it is set
/// (`scripts/test-netns.sh` builds the binaries first and sets it), else
/// `<target>/<profile>/<name>` built through cargo (so never stale).
fn binary(package: &str, name: &str, env_var: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{env_var}={} is not a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test path {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", package, "--bin", name])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .with_context(|| format!("building {name}"))?;
    let path = profile_dir.join(name);
    if !status.success() || !path.exists() {
        bail!("could not build {name} at {}", path.display());
    }
    Ok(path)
}

/// Polls `f` every 100 ms until it yields a value, for at most `WAIT`.
fn wait_for<T>(what: &str, hosts: &Hosts, mut f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let deadline = Instant::now() + WAIT;
    let mut last_err = None;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what} (last error: {last_err:?})\n{}",
                hosts.logs()
            );
        }
        std::thread::sleep(POLL);
    }
}

struct Cluster {
    hosts: Hosts,
    ctl: PathBuf,
    /// Process index of node `i` at `[i - 1]`.
    nodes: Vec<usize>,
    /// The host the clients run on.
    client_host: usize,
}

impl Cluster {
    fn endpoint(&self, node: usize) -> String {
        format!("http://{}:{CLIENT_PORT}", self.hosts.host(node).name)
    }

    /// `ballastctl -o json --endpoints <endpoints> args...` on the client
    /// host; its JSON output, or the error with stderr.
    fn ctl(&self, endpoints: &[usize], args: &[&str]) -> Result<Value> {
        let eps = endpoints
            .iter()
            .map(|n| self.endpoint(*n))
            .collect::<Vec<_>>()
            .join(",");
        let mut all = vec!["--endpoints", &eps, "-o", "json", "--timeout", "3s"];
        all.extend_from_slice(args);
        let out = self.hosts.run(self.client_host, &self.ctl, &all)?;
        if !out.status.success() {
            bail!(
                "ballastctl {} via {eps}: {} {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// The leader as every node in `among` sees it, once they all agree
    /// and the leader itself is among them.
    fn agreed_leader(&self, among: &[usize]) -> Result<Option<u64>> {
        let doc = self.ctl(among, &["status"])?;
        let eps = doc["endpoints"].as_array().context("endpoints")?;
        let leaders: Vec<Option<u64>> = eps.iter().map(|e| e["leader"].as_u64()).collect();
        let first = leaders.first().copied().flatten();
        let all_agree = eps.len() == among.len()
            && eps.iter().all(|e| e["reachable"] == true)
            && leaders.iter().all(|l| *l == first);
        Ok(first.filter(|l| all_agree && among.contains(&(*l as usize))))
    }

    fn put(&self, via: usize, key: &str, value: &str) -> Result<u64> {
        let doc = self.ctl(&[via], &["put", key, value])?;
        doc["revision"].as_u64().context("put revision")
    }

    /// A linearizable read through node `via`.
    fn get(&self, via: usize, key: &str) -> Result<Option<String>> {
        let doc = self.ctl(&[via], &["get", key])?;
        Ok(doc["kv"]["value"].as_str().map(str::to_owned))
    }
}

/// The latest state line the replica probe printed.
type ProbeState = Arc<Mutex<Option<Value>>>;

fn replica_state(state: &ProbeState) -> Option<Value> {
    state.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// The replica's keys and values, once it is connected at `revision` or later.
fn replica_at(state: &ProbeState, revision: u64) -> Option<BTreeMap<String, String>> {
    let s = replica_state(state)?;
    if s["connected"] != true || s["revision"].as_u64()? < revision {
        return None;
    }
    serde_json::from_value(s["kvs"].clone()).ok()
}

#[test]
#[ignore = "needs root and network namespaces: run by `make test-netns`"]
fn three_hosts_by_name_survive_a_leader_kill_with_a_replica_on_a_fourth() -> Result<()> {
    let ballastd = binary("ballast-store", "ballastd", "BALLAST_NETNS_BALLASTD")?;
    let ctl = binary("ballast-client", "ballastctl", "BALLAST_NETNS_BALLASTCTL")?;
    let probe = PathBuf::from(env!("CARGO_BIN_EXE_replica-probe"));
    let dir = tempfile::tempdir()?;

    eprintln!("--- four hosts: node-1..3 and a data-plane host, one namespace each");
    let hosts = Hosts::create(4, "node")?;
    let initial_cluster = (1..=3)
        .map(|i| {
            let name = &hosts.host(i).name;
            format!("{i}={name}:{CLIENT_PORT}/{name}:{PEER_PORT}")
        })
        .collect::<Vec<_>>()
        .join(",");
    let mut cluster = Cluster {
        hosts,
        ctl,
        nodes: Vec::new(),
        client_host: 4,
    };

    eprintln!("--- start ballastd on hosts 1..3, advertising host names only");
    for i in 1..=3 {
        let h = cluster.hosts.host(i);
        let (name, ip) = (h.name.clone(), h.ip.clone());
        let data = dir.path().join(format!("node-{i}"));
        let args: Vec<String> = [
            "--node-id".into(),
            i.to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--listen-client".into(),
            format!("{ip}:{CLIENT_PORT}"),
            "--listen-peer".into(),
            format!("{ip}:{PEER_PORT}"),
            "--advertise-client".into(),
            format!("{name}:{CLIENT_PORT}"),
            "--advertise-peer".into(),
            format!("{name}:{PEER_PORT}"),
            "--initial-cluster".into(),
            initial_cluster.clone(),
            "--election-timeout-min-ms".into(),
            "500".into(),
            "--election-timeout-max-ms".into(),
            "1000".into(),
        ]
        .into();
        let log = dir.path().join(format!("node-{i}.log"));
        let (index, _) = cluster.hosts.spawn(
            i,
            &format!("ballastd node {i}"),
            &ballastd,
            &args,
            log,
            false,
        )?;
        // `ip netns exec` execs the node: the PID we hold is ballastd's own.
        let pid = cluster.hosts.proc(index).pid();
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        let comm = wait_for("the node to be exec'd", &cluster.hosts, || {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
            Ok((comm.trim() == "ballastd").then_some(comm))
        })
        .with_context(|| format!("pid {pid} ({exe:?}) is not ballastd"))?;
        assert_eq!(comm.trim(), "ballastd");
        cluster.nodes.push(index);
    }

    let leader = wait_for("a leader all three agree on", &cluster.hosts, || {
        cluster.agreed_leader(&[1, 2, 3])
    })?;
    eprintln!("leader: node {leader}");

    eprintln!(
        "--- a write through each node's host name, read back linearizably through every node"
    );
    let mut expected = BTreeMap::new();
    let mut revision = 0;
    for i in 1..=3 {
        let key = format!("{PREFIX}k{i}");
        let value = format!("from-node-{i}");
        revision = cluster.put(i, &key, &value)?;
        expected.insert(key.clone(), value.clone());
        for j in 1..=3 {
            assert_eq!(
                cluster.get(j, &key)?.as_deref(),
                Some(value.as_str()),
                "{key} read through node {j}"
            );
        }
    }
    let members = cluster.ctl(&[1], &["members", "list"])?;
    let text = members.to_string();
    for i in 1..=3 {
        let name = &cluster.hosts.host(i).name;
        assert!(
            text.contains(&format!("{name}:{CLIENT_PORT}")),
            "node {i} is not advertised by name: {members}"
        );
    }
    assert!(
        !text.contains("127.0.0.1"),
        "a loopback address advertised: {members}"
    );

    eprintln!("--- a data-plane Replica on host 4 converges to the writes");
    let all_endpoints = (1..=3)
        .map(|i| cluster.endpoint(i))
        .collect::<Vec<_>>()
        .join(",");
    let probe_args: Vec<String> = [
        "--endpoints".into(),
        all_endpoints,
        "--prefix".into(),
        PREFIX.into(),
        "--cache-dir".into(),
        dir.path().join("replica").display().to_string(),
        "--id".into(),
        "netns-web-1".into(),
    ]
    .into();
    let (probe_index, stdout) = cluster.hosts.spawn(
        4,
        "replica-probe",
        &probe,
        &probe_args,
        dir.path().join("replica.log"),
        true,
    )?;
    let state: ProbeState = Arc::default();
    {
        let state = state.clone();
        let stdout = stdout.context("probe stdout")?;
        // Ends when the probe is killed (end of its stdout).
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    *state.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                }
            }
        });
    }
    let seen = wait_for("the replica to converge", &cluster.hosts, || {
        Ok(replica_at(&state, revision).filter(|kvs| *kvs == expected))
    })
    .with_context(|| format!("replica state: {:?}", replica_state(&state)))?;
    assert_eq!(seen, expected);
    let before_kill = replica_state(&state).context("replica state")?;
    let replica_endpoint = before_kill["endpoint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        replica_endpoint.contains(crate::hosts::DOMAIN),
        "the replica does not follow a node by name: {before_kill}"
    );

    eprintln!("--- SIGKILL the leader's ballastd (node {leader})");
    let leader_index = cluster.nodes[leader as usize - 1];
    let leader_pid = cluster.hosts.proc(leader_index).pid();
    cluster.hosts.kill(leader_index)?;
    let comm = std::fs::read_to_string(format!("/proc/{leader_pid}/comm")).ok();
    assert!(
        comm.is_none_or(|c| c.trim() != "ballastd"),
        "pid {leader_pid} still runs ballastd"
    );
    let survivors: Vec<usize> = (1..=3).filter(|i| *i as u64 != leader).collect();
    let new_leader = wait_for("a new leader among the survivors", &cluster.hosts, || {
        cluster.agreed_leader(&survivors)
    })?;
    assert_ne!(new_leader, leader);
    eprintln!("new leader: node {new_leader}");

    eprintln!("--- writes continue through both survivors, read linearizably through both");
    for &i in &survivors {
        let key = format!("{PREFIX}k{leader}");
        let value = format!("after-kill-via-{i}");
        // The first write after the kill may wait for the election.
        wait_for("a write through a survivor", &cluster.hosts, || {
            cluster.put(i, &key, &value).map(Some)
        })?;
        expected.insert(key.clone(), value.clone());
        let fresh = format!("{PREFIX}new-{i}");
        revision = cluster.put(i, &fresh, "fresh")?;
        expected.insert(fresh.clone(), "fresh".into());
        for &j in &survivors {
            assert_eq!(cluster.get(j, &key)?.as_deref(), Some(value.as_str()));
            assert_eq!(cluster.get(j, &fresh)?.as_deref(), Some("fresh"));
        }
    }

    eprintln!("--- the replica keeps serving and converges to the writes made after the kill");
    let seen = wait_for(
        "the replica to converge after the kill",
        &cluster.hosts,
        || Ok(replica_at(&state, revision).filter(|kvs| *kvs == expected)),
    )
    .with_context(|| format!("replica state: {:?}", replica_state(&state)))?;
    assert_eq!(seen, expected);
    assert!(
        cluster.hosts.exited(probe_index).is_none(),
        "the replica process exited"
    );
    let after = replica_state(&state).context("replica state")?;
    let follows = after["endpoint"].as_str().unwrap_or_default();
    assert!(
        !follows.contains(&cluster.hosts.host(leader as usize).name),
        "the replica still follows the killed node: {after}"
    );
    for &i in &survivors {
        assert!(
            cluster.hosts.exited(cluster.nodes[i - 1]).is_none(),
            "node {i} exited\n{}",
            cluster.hosts.logs()
        );
    }
    // `cluster.hosts` drops here: kills the survivors and the probe, removes
    // links, namespaces and /etc/netns entries; then the temp dir goes.
    drop(cluster);
    Ok(())
}
