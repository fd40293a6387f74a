//! One run: start proxies and nodes, run the workload under the nemeses,
//! stop everything, check the history and write the report.
//!
//! [`run`] goes through the phases in order, one file each:
//! - `setup`: a clean output folder, the fault proxies and the nodes, up with
//!   a leader.
//! - `workload`: the clients, watchers or replicas, the nemeses and the
//!   progress line, until the run time is up or a signal arrives.
//! - `teardown`: stop the clients, heal every fault, wait for the nodes to
//!   converge and for watchers and replicas to catch up, stop the nodes.
//! - `check`: the checkers over the history, then the history, summary,
//!   results and (on a violation) timeline files; `summary` writes the text.

mod check;
mod setup;
mod summary;
mod teardown;
mod workload;

use std::path::PathBuf;
use std::time::Duration;

use crate::checker::register::RegisterReport;
use crate::checker::watch::WatchError;
use crate::checker::Verdict;
use crate::client::Padding;
use crate::nemesis::{NemesisOptions, Schedule};
use crate::workload::register::RegisterOptions;

pub use check::write_timeline;

/// Which workload a run drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Reads, writes and CAS on a few keys; linearizability.
    Register,
    /// Writers under a prefix, one SSE watcher per node; the watch guarantees.
    Watch,
    /// Writers under a prefix, one data-plane replica per node; the replica
    /// guarantees.
    Replica,
}

/// Failpoint of a `--features failpoints` ballastd that plants a stale-read
/// bug: linearizable reads skip the read-index barrier.
pub const PLANTED_STALE_READS: &str = "unsafe-local-linearizable-reads";
/// Failpoint of a `--features failpoints` ballastd that plants a watch bug:
/// a resumed watch skips its first revision.
pub const PLANTED_WATCH_SKIP: &str = "unsafe-watch-skip-on-resume";
/// Failpoint of a `--features failpoints` ballastd that plants an
/// exactly-once bug: a retried session write is applied again instead of
/// answered from the session table. Shows only with `--client-retries`.
pub const PLANTED_DOUBLE_APPLY: &str = "unsafe-session-double-apply";

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// `ballastd` binary.
    pub ballastd: PathBuf,
    /// Output folder (history, node logs, report).
    pub out: PathBuf,
    /// Nodes (3 or 5).
    pub nodes: u64,
    /// Spare nodes, started only by the `member` nemesis to grow the
    /// cluster (ids after the initial ones).
    pub spares: u64,
    /// Workload duration.
    pub time: Duration,
    /// Nemesis names.
    pub nemeses: Vec<String>,
    /// Settings of the nemeses that need more than a name.
    pub nemesis_options: NemesisOptions,
    /// Fault schedule.
    pub schedule: Schedule,
    /// Workload.
    pub workload: Workload,
    /// Register workload settings (the watch workload's writers use the
    /// client count, keys and think time).
    pub register: RegisterOptions,
    /// Client request timeout (an answer later than this is `info`).
    pub request_timeout: Duration,
    /// Size of the values written (every workload's writes and CAS).
    pub padding: Padding,
    /// Extra ballastd flags.
    pub node_args: Vec<String>,
    /// Failpoints set to `return` on every node for the whole run: planted
    /// bugs that the checkers must catch ([`PLANTED_STALE_READS`],
    /// [`PLANTED_WATCH_SKIP`]).
    pub planted_bugs: Vec<&'static str>,
    /// A planted client bug: every replica of the run drops the first change
    /// of each watch stream (`ReplicaBuilder::unsafe_skip_first_change`); the
    /// replica checker must catch it.
    pub planted_replica_skip: bool,
    /// Checker time limit.
    pub check_limit: Duration,
    /// Seed.
    pub seed: u64,
    /// Run with auth on: nodes start with `--auth` and every request of the
    /// run carries the initial admin token (see `crate::auth`).
    pub auth: bool,
    /// Run with TLS on both ports, mutual TLS between the nodes (see
    /// `crate::tls`).
    pub tls: bool,
}

/// What a run found.
#[derive(Debug)]
pub struct RunOutcome {
    /// Register checker result.
    pub register: RegisterReport,
    /// Watch checker result (watch workload).
    pub watch: Option<Verdict<WatchError>>,
    /// Whether all nodes converged to one state after healing.
    pub convergence: Verdict<String>,
    /// Whether every check passed.
    pub pass: bool,
    /// Whether nothing failed and yet the run is no pass: a checker could
    /// not decide, or no write took effect.
    pub unknown: bool,
    /// Whether a signal cut the workload short.
    pub interrupted: bool,
}

/// Runs `cfg.workload` on a fresh cluster; `cancel` turning true (a signal) ends the
/// workload early, and the run still tears down and checks what it has.
pub async fn run(
    cfg: RunConfig,
    cancel: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<RunOutcome> {
    setup::prepare_out_dir(&cfg.out)?;
    let setup = setup::start_cluster(&cfg).await?;
    let running = workload::start(&cfg, &setup).await?;
    let interrupted = workload::wait_for_end(&cfg, &setup.rec, cancel).await;
    let settled =
        teardown::stop_and_settle(&cfg, &setup.rec, setup.cluster, setup.net, running).await?;
    let outcome = check::check_and_report(&cfg, &setup.rec, settled, interrupted)?;
    // The nodes' data folders go only now, after everything that reads them.
    drop(setup.data);
    Ok(outcome)
}
