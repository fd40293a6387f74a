//! The simulated hosts: one network namespace per host, each with one veth
//! link to a bridge in a "switch" namespace, an address in a private subnet
//! and an `/etc/hosts` naming every host (`ip netns exec` bind-mounts
//! `/etc/netns/<ns>/hosts` over `/etc/hosts` for the command it runs). The
//! root namespace is never changed: every link is created inside the test's
//! own namespaces.
//!
//! [`Hosts`] owns everything it created and the processes it started; its
//! `Drop` kills exactly those processes and removes every link, namespace and
//! `/etc/netns/<ns>` directory, on success and on panic alike.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use anyhow::{bail, Context, Result};

/// The test subnet. Namespaces are isolated, so concurrent runs may share it.
const SUBNET: &str = "10.240.0";
/// The domain of the hosts' names.
pub const DOMAIN: &str = "ballast.test";

/// One simulated host.
pub struct Host {
    /// Its network namespace.
    pub ns: String,
    /// Its host name (resolvable in every host's namespace).
    pub name: String,
    /// Its address.
    pub ip: String,
    /// Its veth end in the switch namespace.
    port: String,
}

/// A process started in a host's namespace.
pub struct Proc {
    /// What it is, for messages.
    pub what: String,
    child: Child,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Its PID (the binary's own: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// The hosts, their network, and the processes running on them.
pub struct Hosts {
    /// The switch namespace holding the bridge.
    switch: String,
    /// Hosts 1..=n, in order.
    pub hosts: Vec<Host>,
    /// Namespaces created so far (removed on drop).
    namespaces: Vec<String>,
    /// `/etc/netns/<ns>` directories created so far (removed on drop).
    etc_dirs: Vec<PathBuf>,
    /// Processes started and not yet killed.
    procs: Vec<Proc>,
}

/// Runs `ip args...`; fails with its stderr.
pub fn ip(args: &[&str]) -> Result<Output> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

impl Hosts {
    /// Creates `n` hosts named `<base>-<i>.ballast.test` (names made unique
    /// per run by the process id, within the 15 characters an interface name
    /// may have), joined by a bridge.
    pub fn create(n: usize, base: &str) -> Result<Hosts> {
        let tag = format!("bl{}", std::process::id());
        let mut hosts = Hosts {
            switch: format!("{tag}-sw"),
            hosts: Vec::new(),
            namespaces: Vec::new(),
            etc_dirs: Vec::new(),
            procs: Vec::new(),
        };
        // Everything below is recorded as soon as it exists, so that a
        // failure half-way is cleaned up by the drop.
        let switch = hosts.switch.clone();
        hosts.add_namespace(&switch)?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        for i in 1..=n {
            let host = Host {
                ns: format!("{tag}-{i}"),
                name: format!("{base}-{i}.{DOMAIN}"),
                ip: format!("{SUBNET}.{i}"),
                port: format!("h{i}"),
            };
            hosts.add_namespace(&host.ns)?;
            // Both ends are created inside the test's namespaces: the
            // switch's port and the host's eth0.
            ip(&[
                "-n", &switch, "link", "add", &host.port, "type", "veth", "peer", "name", "eth0",
                "netns", &host.ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &host.port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &host.port, "up"])?;
            let cidr = format!("{}/24", host.ip);
            ip(&["-n", &host.ns, "addr", "add", &cidr, "dev", "eth0"])?;
            ip(&["-n", &host.ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &host.ns, "link", "set", "lo", "up"])?;
            hosts.hosts.push(host);
        }
        let mut etc_hosts = String::from("127.0.0.1 localhost\n");
        for h in &hosts.hosts {
            let short = h.name.split('.').next().unwrap_or(&h.name);
            etc_hosts.push_str(&format!("{} {} {short}\n", h.ip, h.name));
        }
        for i in 0..hosts.hosts.len() {
            let dir = Path::new("/etc/netns").join(&hosts.hosts[i].ns);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            hosts.etc_dirs.push(dir.clone());
            std::fs::write(dir.join("hosts"), &etc_hosts)?;
        }
        Ok(hosts)
    }

    fn add_namespace(&mut self, ns: &str) -> Result<()> {
        ip(&["netns", "add", ns])?;
        self.namespaces.push(ns.to_owned());
        Ok(())
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// Starts `program args...` on host `i`, stdout piped (when
    /// `pipe_stdout`) or discarded, stderr into `log`. Returns the index of
    /// the process for [`Hosts::kill`].
    pub fn spawn(
        &mut self,
        i: usize,
        what: &str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        pipe_stdout: bool,
    ) -> Result<(usize, Option<std::process::ChildStdout>)> {
        let stderr = std::fs::File::create(&log)?;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.host(i).ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(if pipe_stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stdout = child.stdout.take();
        self.procs.push(Proc {
            what: what.to_owned(),
            child,
            log,
        });
        Ok((self.procs.len() - 1, stdout))
    }

    /// The process at `index`.
    pub fn proc(&self, index: usize) -> &Proc {
        &self.procs[index]
    }

    /// SIGKILLs the process at `index` (its own PID) and reaps it.
    pub fn kill(&mut self, index: usize) -> Result<()> {
        let p = &mut self.procs[index];
        p.child
            .kill()
            .with_context(|| format!("killing {}", p.what))?;
        p.child.wait()?;
        Ok(())
    }

    /// Whether the process at `index` has exited, with its status.
    pub fn exited(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        self.procs[index].child.try_wait().ok().flatten()
    }

    /// Runs `program args...` on host `i` to completion.
    pub fn run(&self, i: usize, program: &Path, args: &[&str]) -> Result<Output> {
        Command::new("ip")
            .args(["netns", "exec", &self.host(i).ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} on {}", program.display(), self.host(i).name))
    }

    /// The last lines of every process's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text = std::fs::read_to_string(&p.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(15)..];
            out.push_str(&format!(
                "--- {} ({})\n{}\n",
                p.what,
                p.log.display(),
                tail.join("\n")
            ));
        }
        out
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for p in &mut self.procs {
            if p.child.try_wait().ok().flatten().is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
        for h in &self.hosts {
            if let Err(e) = ip(&["-n", &self.switch, "link", "del", &h.port]) {
                eprintln!("cleanup: {e}");
            }
        }
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("cleanup: {e}");
            }
        }
        for dir in &self.etc_dirs {
            if let Err(e) = std::fs::remove_dir_all(dir) {
                eprintln!("cleanup: removing {}: {e}", dir.display());
            }
        }
    }
}
