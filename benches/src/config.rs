//! Command-line configuration, its defaults and validation.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

/// Default endpoints: the local 3-node cluster that `ballastd dev` starts.
const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:2479,http://127.0.0.1:2579";
/// gRPC connections the etcd clients share by default, as the etcd baseline
/// was measured.
const DEFAULT_GRPC_CONNECTIONS: usize = 16;
/// `--smoke`: client counts, time per row and key count.
const SMOKE_CLIENTS: [usize; 2] = [1, 4];
const SMOKE_DURATION: Duration = Duration::from_secs(1);
const SMOKE_KEYS: usize = 100;

/// Closed-loop load generator for ballast and etcd clusters.
///
/// For every workload and every client count, runs that many concurrent clients
/// (each sends one request, waits for the answer, sends the next) for `--duration`,
/// then prints throughput, latency percentiles and errors. `report DIR` compares
/// the results of two targets that were written with `--out DIR`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "ballast-bench",
    version,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// Settings of a benchmark run.
    #[command(flatten)]
    pub run: Config,
    /// A subcommand instead of a run.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Reads the CSV files that runs with `--out DIR` wrote (one per target) and
    /// writes DIR/summary.md and SVG charts next to them.
    Report(ReportArgs),
    /// Starts a `ballastd dev` cluster and measures a data-plane restart
    /// storm: many replicas bootstrapping at once while writers write.
    RestartStorm(crate::storm::StormArgs),
}

/// `ballast-bench report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// The directory given to `--out` of the runs.
    pub dir: PathBuf,
    /// Client count of the latency CDF charts; the largest count measured by
    /// both targets when that one was not run.
    #[arg(long, default_value_t = 256)]
    pub cdf_clients: usize,
}

/// Settings of one benchmark run.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "ballast-bench")]
pub struct Config {
    /// System under test: `ballast` (HTTP/1.1, one connection per client, or
    /// HTTP/2 with `--http2-connections`) or `etcd` (gRPC, clients spread over
    /// `--grpc-connections`).
    #[arg(long, value_enum, default_value_t = TargetKind::Ballast)]
    pub target: TargetKind,

    /// Client endpoints, comma separated (`http://host:port` or `host:port`).
    #[arg(long, env = "BALLAST_ENDPOINTS", value_delimiter = ',', default_value = DEFAULT_ENDPOINTS)]
    pub endpoints: Vec<String>,

    /// Workloads to run, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "put,get-linearizable,get-serializable,txn-cas,mixed"
    )]
    pub workloads: Vec<Workload>,

    /// Concurrent client counts: one table row per count and workload.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub clients: Vec<usize>,

    /// ballast: HTTP connections per endpoint. `auto` gives every client its
    /// own connection (HTTP/1.1 carries one request at a time, so this is what
    /// N concurrent clients need); a number caps them, and clients sharing a
    /// connection queue.
    #[arg(long, default_value = "auto")]
    pub connections: Connections,

    /// ballast: send requests over HTTP/2 ("h2c", plain `http://` only) on
    /// this many connections in all, opened round-robin over the endpoints
    /// and shared by the clients, as etcd's clients share gRPC connections.
    /// Without it, HTTP/1.1 as `--connections` says.
    #[arg(long)]
    pub http2_connections: Option<usize>,

    /// ballast: write without client sessions (`exactly_once(false)` on the
    /// client): no exactly-once retries, and none of the session table's
    /// work on the nodes. For measuring what sessions cost; the default
    /// (sessions on) is what `Client` users get. etcd, which has no client
    /// sessions, ignores it (so `benches/run.sh` can pass it to both).
    #[arg(long)]
    pub no_sessions: bool,

    /// etcd: gRPC connections in all, opened round-robin over the endpoints;
    /// the clients share them (HTTP/2 carries many requests at once).
    #[arg(long, default_value_t = DEFAULT_GRPC_CONNECTIONS)]
    pub grpc_connections: usize,

    /// How long each row runs (e.g. `8s`, `500ms`, `1m`).
    #[arg(long, default_value = "8s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub duration: Duration,

    /// Number of distinct keys; gets preload them all first.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,

    /// Value size in bytes.
    #[arg(long, default_value_t = 256)]
    pub value_size: usize,

    /// Prefix of every benchmark key.
    #[arg(long, default_value = "bench/")]
    pub key_prefix: String,

    /// Per-request timeout; a request that hits it counts as an error.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    #[serde(serialize_with = "as_secs")]
    pub request_timeout: Duration,

    /// Before the first row, wait up to this long for every endpoint to take a
    /// write and a linearizable read (a cluster that was just started).
    #[arg(long, value_parser = parse_duration)]
    #[serde(skip)]
    pub wait_ready: Option<Duration>,

    /// `table` (markdown) or `json`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Also write `DIR/<target>.csv` (one line per row), `DIR/<target>.md`
    /// (the table) and `DIR/hist/<target>/<workload>-c<clients>.csv` (each
    /// row's latency distribution, for a CDF). `ballast-bench report DIR` reads them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Seed for key choice and values, so runs are repeatable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Exit with status 3 when any request failed.
    #[arg(long)]
    pub fail_on_errors: bool,

    /// A quick check that every workload works: each one for 1 s at 1 and 4
    /// clients over 100 keys (replacing --workloads, --clients, --duration
    /// and --keys); exits 3 on any failed request and 4 on a row without a
    /// single completed operation.
    #[arg(long)]
    pub smoke: bool,

    /// Do not draw progress bars on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target: TargetKind::Ballast,
            endpoints: DEFAULT_ENDPOINTS.split(',').map(str::to_owned).collect(),
            workloads: Workload::ALL.to_vec(),
            clients: vec![1, 16, 64, 256],
            connections: Connections::Auto,
            http2_connections: None,
            no_sessions: false,
            grpc_connections: DEFAULT_GRPC_CONNECTIONS,
            duration: Duration::from_secs(8),
            keys: 1000,
            value_size: 256,
            key_prefix: "bench/".to_owned(),
            request_timeout: Duration::from_secs(5),
            wait_ready: None,
            output: OutputFormat::Table,
            out: None,
            seed: 1,
            fail_on_errors: false,
            smoke: false,
            no_progress: false,
        }
    }
}

impl Config {
    /// Refuses settings that cannot produce a meaningful run.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            bail!("--endpoints: at least one endpoint is required");
        }
        if self.workloads.is_empty() {
            bail!("--workloads: at least one workload is required");
        }
        if self.clients.is_empty() || self.clients.contains(&0) {
            bail!("--clients: counts must be at least 1");
        }
        if self.connections == Connections::PerEndpoint(0) {
            bail!("--connections: must be `auto` or at least 1");
        }
        if self.http2_connections == Some(0) {
            bail!("--http2-connections must be at least 1");
        }
        if self.grpc_connections == 0 {
            bail!("--grpc-connections must be at least 1");
        }
        if self.duration.is_zero() || self.request_timeout.is_zero() {
            bail!("--duration and --request-timeout must be greater than zero");
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        Ok(())
    }

    /// The settings `--smoke` runs with: every workload, few clients, short
    /// rows, and failed requests fail the process.
    pub fn into_smoke(self) -> Self {
        Self {
            workloads: Workload::ALL.to_vec(),
            clients: SMOKE_CLIENTS.to_vec(),
            duration: SMOKE_DURATION,
            keys: SMOKE_KEYS,
            fail_on_errors: true,
            ..self
        }
    }

    /// How the clients of this run's target share connections.
    pub fn connection_layout(&self) -> Connections {
        match self.target {
            TargetKind::Ballast => match self.http2_connections {
                Some(n) => Connections::Total(n),
                None => self.connections,
            },
            TargetKind::Etcd => Connections::Total(self.grpc_connections),
        }
    }

    /// The endpoints, trimmed, without empty entries.
    pub fn endpoint_list(&self) -> Vec<String> {
        self.endpoints
            .iter()
            .map(|e| e.trim().to_owned())
            .filter(|e| !e.is_empty())
            .collect()
    }
}

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetKind {
    /// A ballastd cluster over its HTTP API, through `ballast-client`.
    Ballast,
    /// An etcd cluster over its v3 gRPC API, through `etcd-client`.
    Etcd,
}

/// What each client does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Put a random key (of `--keys`) with a `--value-size` value.
    Put,
    /// Linearizable get of a random preloaded key.
    GetLinearizable,
    /// Serializable (local, possibly stale) get of a random preloaded key.
    GetSerializable,
    /// A compare-and-swap transaction on a random preloaded key: if its mod
    /// revision is the one last seen, put; otherwise read it. A failed compare
    /// is a completed operation, counted apart from errors.
    TxnCas,
    /// 90% linearizable gets and 10% puts of random preloaded keys.
    Mixed,
}

impl Workload {
    /// Every workload, in the default order.
    pub const ALL: [Workload; 5] = [
        Workload::Put,
        Workload::GetLinearizable,
        Workload::GetSerializable,
        Workload::TxnCas,
        Workload::Mixed,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::GetLinearizable => "get-linearizable",
            Workload::GetSerializable => "get-serializable",
            Workload::TxnCas => "txn-cas",
            Workload::Mixed => "mixed",
        }
    }

    /// The workload called `name` in reports.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }

    /// Whether the keys must exist before the row starts.
    pub fn needs_preload(self) -> bool {
        !matches!(self, Workload::Put)
    }
}

/// How many connections to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// One per client.
    Auto,
    /// At most this many per endpoint.
    PerEndpoint(usize),
    /// At most this many over all endpoints (etcd's gRPC connections).
    Total(usize),
}

impl Connections {
    /// Total connections for `clients` clients over `endpoints` endpoints.
    pub fn total(self, clients: usize, endpoints: usize) -> usize {
        match self {
            Connections::Auto => clients,
            Connections::PerEndpoint(n) => clients.min(n.saturating_mul(endpoints)),
            Connections::Total(n) => clients.min(n),
        }
        .max(1)
    }
}

impl FromStr for Connections {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Connections::Auto);
        }
        s.parse()
            .map(Connections::PerEndpoint)
            .map_err(|_| format!("expected `auto` or a number, got {s:?}"))
    }
}

impl fmt::Display for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Connections::Auto => f.write_str("auto"),
            Connections::PerEndpoint(n) => write!(f, "{n}"),
            Connections::Total(n) => write!(f, "{n} in all"),
        }
    }
}

impl Serialize for Connections {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Report format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputFormat {
    /// A markdown table.
    Table,
    /// One JSON document.
    Json,
}

/// Parses `8s`, `500ms`, `1.5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown duration unit {other:?} in {s:?}")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_match_the_baseline_and_validate() {
        let parsed = Config::parse_from(["ballast-bench"]);
        let default = Config::default();
        assert_eq!(parsed.clients, default.clients);
        assert_eq!(parsed.clients, [1, 16, 64, 256]);
        assert_eq!(parsed.workloads, default.workloads);
        assert_eq!(parsed.workloads, Workload::ALL);
        assert_eq!(parsed.grpc_connections, default.grpc_connections);
        assert_eq!(parsed.duration, Duration::from_secs(8));
        assert_eq!((parsed.keys, parsed.value_size), (1000, 256));
        assert_eq!(parsed.endpoint_list().len(), 3);
        assert!(parsed.validate().is_ok());
        let bad = Config::parse_from(["ballast-bench", "--clients", "0"]);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn connection_layout() {
        let parsed = Config::parse_from(["ballast-bench", "--connections", "16"]);
        assert_eq!(parsed.connections, Connections::PerEndpoint(16));
        assert_eq!(Connections::Auto.total(256, 3), 256);
        assert_eq!(Connections::PerEndpoint(16).total(256, 3), 48);
        assert_eq!(Connections::PerEndpoint(16).total(1, 3), 1);
        assert!("x".parse::<Connections>().is_err());

        let etcd = Config::parse_from(["ballast-bench", "--target", "etcd"]);
        assert_eq!(etcd.connection_layout(), Connections::Total(16));
        assert_eq!(etcd.connection_layout().total(256, 3), 16);
        assert_eq!(etcd.connection_layout().total(4, 3), 4);
        let ballast = Config::parse_from(["ballast-bench"]);
        assert_eq!(ballast.connection_layout().total(256, 3), 256);
        let none = Config::parse_from(["ballast-bench", "--grpc-connections", "0"]);
        assert!(none.validate().is_err());

        let h2 = Config::parse_from(["ballast-bench", "--http2-connections", "3"]);
        assert_eq!(h2.connection_layout(), Connections::Total(3));
        assert_eq!(h2.connection_layout().total(256, 3), 3);
        let h2_etcd = Config::parse_from([
            "ballast-bench",
            "--target",
            "etcd",
            "--http2-connections",
            "3",
        ]);
        assert_eq!(h2_etcd.connection_layout(), Connections::Total(16));
        let h2_none = Config::parse_from(["ballast-bench", "--http2-connections", "0"]);
        assert!(h2_none.validate().is_err());

        let no_sessions = Config::parse_from(["ballast-bench", "--no-sessions"]);
        assert!(no_sessions.no_sessions && no_sessions.validate().is_ok());
    }

    #[test]
    fn workload_names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(Workload::from_name(w.name()), Some(w));
            let parsed = Config::parse_from(["ballast-bench", "--workloads", w.name()]);
            assert_eq!(parsed.workloads, [w]);
        }
        assert_eq!(Workload::from_name("scan"), None);
    }

    #[test]
    fn smoke_replaces_the_matrix() {
        let smoke =
            Config::parse_from(["ballast-bench", "--smoke", "--clients", "256"]).into_smoke();
        assert_eq!(smoke.workloads, Workload::ALL);
        assert_eq!(smoke.clients, SMOKE_CLIENTS);
        assert_eq!(smoke.duration, SMOKE_DURATION);
        assert!(smoke.fail_on_errors);
        assert!(smoke.validate().is_ok());
    }

    #[test]
    fn report_is_a_subcommand() {
        let cli = Cli::parse_from(["ballast-bench", "report", "results/x"]);
        match cli.command {
            Some(Command::Report(args)) => {
                assert_eq!(args.dir, PathBuf::from("results/x"));
                assert_eq!(args.cdf_clients, 256);
            }
            other => panic!("not the report subcommand: {other:?}"),
        }
        let cli = Cli::parse_from(["ballast-bench", "--target", "etcd", "--out", "o"]);
        assert!(cli.command.is_none());
        assert_eq!(cli.run.target, TargetKind::Etcd);
        assert_eq!(cli.run.out, Some(PathBuf::from("o")));
    }

    #[test]
    fn restart_storm_is_a_subcommand_with_switches_to_compare() {
        let cli = Cli::parse_from([
            "ballast-bench",
            "restart-storm",
            "--no-buffer",
            "--small-replicas",
            "10",
            "--writer-cpus",
            "0,1",
            "--steady-replicas",
            "5",
            "--data-plane-nice",
            "0",
        ]);
        match cli.command {
            Some(Command::RestartStorm(args)) => {
                assert!(args.no_buffer && !args.no_admission);
                assert_eq!(args.small_replicas, 10);
                assert_eq!(args.large_replicas, 100);
                assert_eq!(args.writers, 16);
                assert_eq!(args.writer_cpus, vec![0, 1]);
                assert_eq!(args.steady_replicas, 5);
                assert_eq!(args.data_plane_nice, Some(0));
            }
            other => panic!("not the restart-storm subcommand: {other:?}"),
        }
    }
}
