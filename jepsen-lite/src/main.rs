//! `jepsen-lite`: parses the command line and runs or re-checks.
//!
//! Exit codes: 0 every check passed; 1 a violation was found; 2 a checker
//! could not decide (unknown is not a pass); 3 the arguments were refused,
//! or the run itself failed or was interrupted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use jepsen_lite::checker::Verdict;
use jepsen_lite::client::padding::DEFAULT_MAX_VALUE_BYTES;
use jepsen_lite::client::Padding;
use jepsen_lite::cluster::{default_ballastd, emergency_teardown};
use jepsen_lite::nemesis::{LaggingOptions, NemesisOptions, Schedule};
use jepsen_lite::run::{
    self, RunConfig, PLANTED_DOUBLE_APPLY, PLANTED_STALE_READS, PLANTED_WATCH_SKIP,
};
use jepsen_lite::workload::register::RegisterOptions;
use jepsen_lite::{checker, history};

#[derive(Parser, Debug)]
#[command(
    name = "jepsen-lite",
    about = "Fault-injection tests of a real ballast cluster"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Workload {
    /// Reads, writes and CAS on a few keys; linearizability checker.
    Register,
    /// Writers under a prefix and one SSE watcher per node; watch checker.
    Watch,
    /// Writers under a prefix and data-plane replicas reading it; replica
    /// checker (never backwards, always answering, converging).
    Replica,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Start a cluster, run a workload under faults, check, report.
    Run(RunArgs),
    /// Re-check a watch run: its history (the writes) and watch.json.
    CheckWatch {
        /// history.jsonl of a watch run.
        history: PathBuf,
        /// watch.json of the same run.
        watch: PathBuf,
    },
    /// Re-check a recorded history file.
    Check {
        /// history.jsonl of a run.
        history: PathBuf,
        /// Checker time limit, seconds.
        #[arg(long, default_value_t = 60)]
        check_limit_s: u64,
        /// Where to write timeline.html on a violation (default: next to the history).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(clap::Args, Debug)]
// A flag given again replaces the earlier value (`make jepsen ARGS=...`
// adds flags after the defaults).
#[command(args_override_self = true)]
struct RunArgs {
    /// Workload.
    #[arg(long, value_enum, default_value = "register")]
    workload: Workload,
    /// Comma-separated nemeses: kill, kill-leader, pause, pause-leader,
    /// partition, delay, failpoint, outage, lagging, member, member-replace,
    /// transfer; `none` for no faults.
    #[arg(long, default_value = "kill,partition,pause")]
    nemesis: String,
    /// Workload duration, seconds.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Nodes: 3 or 5.
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Concurrent clients, spread over every node.
    #[arg(long, default_value_t = 10)]
    clients: usize,
    /// Keys.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Share of reads.
    #[arg(long, default_value_t = 0.5)]
    read_ratio: f64,
    /// Pause between a client's operations, ms.
    #[arg(long, default_value_t = 5)]
    think_ms: u64,
    /// Quiet time between faults, ms.
    #[arg(long, default_value_t = 3000)]
    interval_ms: u64,
    /// How long a fault lasts, ms.
    #[arg(long, default_value_t = 4000)]
    fault_ms: u64,
    /// Probability that two nemeses act at once.
    #[arg(long, default_value_t = 0.3)]
    combine: f64,
    /// Client request timeout, ms (a later answer is `info`; with
    /// --client-retries, the limit of one attempt).
    #[arg(long, default_value_t = 3000)]
    request_timeout_ms: u64,
    /// Register workload: send operations through ballast's `Client`, whose
    /// exactly-once sessions let it send a write again after a lost answer
    /// (up to 40 attempts within 10 s, over every member, preferring the
    /// client's node); an operation is `info` only when the client reports
    /// it indeterminate.
    #[arg(long)]
    client_retries: bool,
    /// Size of every value written, bytes: the unique value followed by a
    /// check pattern (histories keep the unique value only). At least 64,
    /// at most the nodes' --max-value-bytes (1572864 unless set with
    /// --node-arg) [default: unpadded, a few bytes].
    #[arg(long, value_name = "BYTES")]
    value_size: Option<usize>,
    /// Longest the lagging nemesis keeps a follower cut off, ms.
    #[arg(long, default_value_t = 30_000)]
    lagging_limit_ms: u64,
    /// Linearizability checker time limit, seconds (beyond it: unknown).
    #[arg(long, default_value_t = 60)]
    check_limit_s: u64,
    /// ballastd binary [default: ballastd next to this executable].
    #[arg(long)]
    ballastd: Option<PathBuf>,
    /// Output folder [default: target/jepsen-lite/<unix time>].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Seed for the workload and the nemesis schedule [default: time].
    #[arg(long)]
    seed: Option<u64>,
    /// TEST ONLY: plant the stale-read bug on every node (the
    /// `unsafe-local-linearizable-reads` failpoint; needs a ballastd built with
    /// `--features failpoints`).
    #[arg(long)]
    unsafe_local_linearizable_reads: bool,
    /// TEST ONLY: plant the watch bug on every node, a resumed watch skips a
    /// revision (the `unsafe-watch-skip-on-resume` failpoint; needs a ballastd
    /// built with `--features failpoints`).
    #[arg(long)]
    unsafe_watch_skip_on_resume: bool,
    /// TEST ONLY: plant the exactly-once bug on every node, a retried write is
    /// applied twice (the `unsafe-session-double-apply` failpoint; needs a
    /// ballastd built with `--features failpoints`, and shows only with
    /// `--client-retries`).
    #[arg(long)]
    unsafe_session_double_apply: bool,
    /// TEST ONLY: plant a replica bug in every data-plane replica of the run,
    /// the first change of every watch stream it opens is dropped (the
    /// client's `planted-bugs` switch; needs `--workload replica`).
    #[arg(long)]
    unsafe_replica_skip_first_change: bool,
    /// Extra ballastd flags, e.g. `--node-arg=--snapshot-logs=500`. With the
    /// lagging nemesis nodes get `--snapshot-logs=100` unless set here.
    #[arg(long = "node-arg", allow_hyphen_values = true)]
    node_args: Vec<String>,
    /// Run with auth on: every node starts with `--auth`, and every request
    /// of the run (workload, nemeses, final reads) carries the initial admin
    /// token; joining nodes get it with `--join-token-file`.
    #[arg(long)]
    auth: bool,
    /// Run with TLS on: a CA made for the run signs the nodes' certificate;
    /// every node serves HTTPS and uses mutual TLS with its peers, and every
    /// client of the run trusts only that CA.
    #[arg(long)]
    tls: bool,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; refused arguments exit 3,
            // never 2 (which means "unknown" to scripts).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.cmd {
        Cmd::Check {
            history: path,
            check_limit_s,
            out,
        } => check(&path, check_limit_s, out),
        Cmd::CheckWatch { history: h, watch } => check_watch(&h, &watch),
        Cmd::Run(args) => match run_cmd(args) {
            Ok(code) => code,
            Err(e) => {
                emergency_teardown();
                eprintln!("jepsen-lite: {e:#}");
                ExitCode::from(3)
            }
        },
    }
}

fn check_watch(history_path: &std::path::Path, watch_path: &std::path::Path) -> ExitCode {
    let loaded = history::read_jsonl(history_path).and_then(|events| {
        let text = std::fs::read_to_string(watch_path)?;
        let watchers: Vec<checker::watch::Watcher> = serde_json::from_str(&text)?;
        Ok((events, watchers))
    });
    let (events, watchers) = match loaded {
        Ok(x) => x,
        Err(e) => {
            eprintln!("jepsen-lite: {e:#}");
            return ExitCode::from(3);
        }
    };
    let writes = jepsen_lite::workload::watch::writes(&events);
    let last = writes.iter().filter_map(|w| w.revision).max();
    let v = checker::watch::check(&writes, &watchers, last);
    println!(
        "watch checker: {} ({} writes, {} watchers)",
        v.label(),
        writes.len(),
        watchers.len()
    );
    if let Verdict::Fail { errors } = &v {
        for e in errors.iter().take(20) {
            println!("  - {e}");
        }
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}

fn check(path: &std::path::Path, limit: u64, out: Option<PathBuf>) -> ExitCode {
    let events = match history::read_jsonl(path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("jepsen-lite: reading {}: {e:#}", path.display());
            return ExitCode::from(3);
        }
    };
    let r = checker::register::check(&events, Duration::from_secs(limit));
    println!(
        "register checker: {} in {} ms ({} events, {} keys)",
        r.verdict.label(),
        r.elapsed_ms,
        events.len(),
        r.keys.len()
    );
    match &r.verdict {
        Verdict::Pass => ExitCode::SUCCESS,
        Verdict::Unknown { reason } => {
            println!("unknown: {reason}");
            ExitCode::from(2)
        }
        Verdict::Fail { errors } => {
            for e in errors.iter().take(10) {
                println!("  - {e}");
            }
            let dir =
                out.unwrap_or_else(|| path.parent().map(|p| p.to_path_buf()).unwrap_or_default());
            match run::write_timeline(&dir, &r, &events) {
                Ok(p) => println!("timeline: {}", p.display()),
                Err(e) => eprintln!("jepsen-lite: {e:#}"),
            }
            ExitCode::from(1)
        }
    }
}

/// `--snapshot-logs` of nodes started without one, when the lagging nemesis
/// runs: low enough that a follower cut off for a few seconds of writes falls
/// behind the leader's log.
const LAGGING_SNAPSHOT_LOGS: u64 = 100;

/// ballastd's own default `--snapshot-logs`.
const BALLASTD_SNAPSHOT_LOGS: u64 = 100_000;

/// The value of ballastd flag `flag` among the `--node-arg`s
/// (`--flag=V` or `--flag V`; the last one wins).
fn node_flag(args: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')) {
            found = Some(v.to_string());
        } else if a == flag {
            found = it.next().cloned();
        }
    }
    found
}

/// [`node_flag`] parsed as a number.
fn node_flag_number<T: std::str::FromStr>(
    args: &[String],
    flag: &str,
) -> anyhow::Result<Option<T>> {
    node_flag(args, flag)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| anyhow::anyhow!("--node-arg {flag}={v}: not a number"))
        })
        .transpose()
}

fn run_cmd(a: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(a.nodes == 3 || a.nodes == 5, "--nodes must be 3 or 5");
    anyhow::ensure!(
        a.clients > 0 && a.keys > 0,
        "--clients and --keys must be positive"
    );
    let max_value_bytes =
        node_flag_number(&a.node_args, "--max-value-bytes")?.unwrap_or(DEFAULT_MAX_VALUE_BYTES);
    let padding = match a.value_size {
        None => Padding::none(),
        Some(size) => Padding::to_size(size, max_value_bytes)?,
    };
    if padding
        .size()
        .is_some_and(|n| n.saturating_mul(2) > max_value_bytes)
    {
        // ballastd limits a whole request, as etcd does.
        tracing::warn!(
            value_size = padding.size(),
            max_value_bytes,
            "a CAS carries two values (compared and new): over the nodes' request limit it is refused with 413 and recorded as a failure"
        );
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    let out = a.out.unwrap_or_else(|| {
        let target = default_ballastd()
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("target"));
        target.join("jepsen-lite").join(format!("run-{seed}"))
    });
    let nemeses: Vec<String> = a
        .nemesis
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "none")
        .map(String::from)
        .collect();
    for n in &nemeses {
        // Refused before anything starts.
        anyhow::ensure!(
            jepsen_lite::nemesis::NAMES.contains(&n.as_str()),
            "unknown nemesis {n:?} ({})",
            jepsen_lite::nemesis::NAMES.join(", ")
        );
    }
    let lagging = nemeses.iter().any(|n| n == "lagging");
    let membership = nemeses
        .iter()
        .any(|n| n == "member" || n == "member-replace");
    anyhow::ensure!(
        !a.client_retries || (matches!(a.workload, Workload::Register) && !membership),
        "--client-retries needs the register workload and no member or member-replace nemesis (the client keeps the endpoints it starts with)"
    );
    anyhow::ensure!(
        !(membership && matches!(a.workload, Workload::Replica)),
        "the member and member-replace nemeses need the register or watch workload (replicas keep the endpoints they start with)"
    );
    // The member nemesis grows the cluster with spare nodes.
    let spares = if nemeses.iter().any(|n| n == "member") {
        jepsen_lite::nemesis::member::GROW_BY as u64
    } else {
        0
    };
    let mut node_args = vec![
        "--heartbeat-ms=50".to_string(),
        "--election-timeout-min-ms=300".to_string(),
        "--election-timeout-max-ms=600".to_string(),
        "--request-timeout-ms=2000".to_string(),
    ];
    anyhow::ensure!(
        !a.unsafe_replica_skip_first_change || matches!(a.workload, Workload::Replica),
        "--unsafe-replica-skip-first-change needs --workload replica"
    );
    let planted_bugs = [
        (a.unsafe_local_linearizable_reads, PLANTED_STALE_READS),
        (a.unsafe_watch_skip_on_resume, PLANTED_WATCH_SKIP),
        (a.unsafe_session_double_apply, PLANTED_DOUBLE_APPLY),
    ]
    .into_iter()
    .filter_map(|(on, name)| on.then_some(name))
    .collect();
    let snapshot_logs = match node_flag_number::<u64>(&a.node_args, "--snapshot-logs")? {
        Some(n) => n,
        None if lagging => {
            node_args.push(format!("--snapshot-logs={LAGGING_SNAPSHOT_LOGS}"));
            LAGGING_SNAPSHOT_LOGS
        }
        None => BALLASTD_SNAPSHOT_LOGS,
    };
    anyhow::ensure!(
        snapshot_logs > 0,
        "--node-arg --snapshot-logs must be positive"
    );
    node_args.extend(a.node_args);
    let cfg = RunConfig {
        ballastd: a.ballastd.unwrap_or_else(default_ballastd),
        out,
        nodes: a.nodes,
        spares,
        time: Duration::from_secs(a.time),
        nemeses,
        nemesis_options: NemesisOptions {
            lagging: LaggingOptions {
                snapshot_logs,
                limit: Duration::from_millis(a.lagging_limit_ms),
            },
            nodes: usize::try_from(a.nodes)?,
        },
        schedule: Schedule {
            interval: Duration::from_millis(a.interval_ms),
            duration: Duration::from_millis(a.fault_ms),
            combine: a.combine,
        },
        workload: match a.workload {
            Workload::Register => run::Workload::Register,
            Workload::Watch => run::Workload::Watch,
            Workload::Replica => run::Workload::Replica,
        },
        register: RegisterOptions {
            clients: a.clients,
            keys: a.keys,
            prefix: "jl/r".to_string(),
            think: Duration::from_millis(a.think_ms),
            read_ratio: a.read_ratio,
            seed,
            client_retries: a.client_retries,
            request_timeout: Duration::from_millis(a.request_timeout_ms),
        },
        request_timeout: Duration::from_millis(a.request_timeout_ms),
        padding,
        node_args,
        planted_bugs,
        planted_replica_skip: a.unsafe_replica_skip_first_change,
        check_limit: Duration::from_secs(a.check_limit_s),
        seed,
        auth: a.auth,
        tls: a.tls,
    };
    // Hard bound on the whole run: workload + healing/teardown + checking.
    let hard_limit = cfg.time + cfg.check_limit + Duration::from_secs(120);
    std::thread::spawn(move || {
        std::thread::sleep(hard_limit);
        eprintln!(
            "jepsen-lite: the run exceeded its hard time limit ({hard_limit:?}); tearing down"
        );
        emergency_teardown();
        std::process::exit(3);
    });
    let rt = tokio::runtime::Runtime::new()?;
    let outcome = rt.block_on(async move {
        let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
                signal(SignalKind::hangup()),
            ) else {
                return;
            };
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {}, _ = hup.recv() => {} }
            let _ = cancel_tx.send(true);
            // Orderly teardown gets 20 s; a second signal or the deadline
            // kills the nodes we started and exits.
            std::thread::spawn(|| {
                std::thread::sleep(Duration::from_secs(20));
                emergency_teardown();
                std::process::exit(130);
            });
            tokio::select! { _ = int.recv() => {}, _ = term.recv() => {}, _ = hup.recv() => {} }
            emergency_teardown();
            std::process::exit(130);
        });
        run::run(cfg, cancel_rx).await
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    let o = outcome?;
    Ok(
        if o.interrupted && !matches!(o.register.verdict, Verdict::Fail { .. }) {
            eprintln!("jepsen-lite: interrupted: the history was checked up to the signal, but the run is incomplete");
            ExitCode::from(3)
        } else if o.pass {
            ExitCode::SUCCESS
        } else if o.unknown
            && !matches!(o.register.verdict, Verdict::Fail { .. })
            && o.convergence.is_pass()
        {
            ExitCode::from(2)
        } else {
            ExitCode::from(1)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_node_flags_in_both_spellings() {
        let a = args(&["--heartbeat-ms=50", "--snapshot-logs=500"]);
        assert_eq!(node_flag(&a, "--snapshot-logs").as_deref(), Some("500"));
        let a = args(&["--snapshot-logs", "7", "--max-value-bytes=2048"]);
        assert_eq!(node_flag(&a, "--snapshot-logs").as_deref(), Some("7"));
        assert_eq!(
            node_flag_number::<usize>(&a, "--max-value-bytes").expect("number"),
            Some(2048)
        );
        // A longer flag with the same beginning is another flag.
        let a = args(&["--snapshot-logs-extra=3"]);
        assert_eq!(node_flag(&a, "--snapshot-logs"), None);
        let a = args(&["--snapshot-logs=1", "--snapshot-logs=2"]);
        assert_eq!(node_flag(&a, "--snapshot-logs").as_deref(), Some("2"));
        assert!(node_flag_number::<u64>(&args(&["--snapshot-logs=x"]), "--snapshot-logs").is_err());
    }

    #[test]
    fn a_flag_given_again_wins() {
        let cli = Cli::try_parse_from([
            "jepsen-lite",
            "run",
            "--time",
            "60",
            "--value-size",
            "65536",
            "--time",
            "300",
            "--value-size",
            "128",
            "--node-arg=--snapshot-logs=50",
            "--node-arg=--snapshot-logs=70",
        ])
        .expect("parses");
        let Cmd::Run(a) = cli.cmd else {
            panic!("not a run")
        };
        assert_eq!((a.time, a.value_size), (300, Some(128)));
        assert_eq!(a.node_args.len(), 2, "node args accumulate");
        assert_eq!(
            node_flag(&a.node_args, "--snapshot-logs").as_deref(),
            Some("70")
        );
    }

    #[test]
    fn value_size_is_checked_before_anything_starts() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["jepsen-lite", "run", "--ballastd", "/nonexistent/ballastd"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("parses").cmd {
                Cmd::Run(a) => a,
                other => panic!("not a run: {other:?}"),
            }
        };
        for (extra, refused) in [
            (&["--value-size", "0"][..], "too small"),
            (
                &["--value-size", "1572865"][..],
                "over ballast's maximum value size of 1572864",
            ),
            (
                &["--value-size", "4096", "--node-arg=--max-value-bytes=1024"][..],
                "over ballast's maximum value size of 1024",
            ),
            (&["--nemesis", "kill,lagard"][..], "unknown nemesis"),
            (
                &["--workload", "replica", "--nemesis", "member-replace"][..],
                "need the register or watch workload",
            ),
        ] {
            let e = run_cmd(parse(extra)).expect_err("refused");
            assert!(format!("{e:#}").contains(refused), "{extra:?}: {e:#}");
        }
    }
}
