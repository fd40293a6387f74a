//! Command-line configuration, its defaults and validation.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, ValueEnum};
use serde::Serialize;

/// Default endpoints: the local 3-node cluster that `ballastd dev` starts.
const DEFAULT_ENDPOINTS: &str = "http://127.0.0.1:2379,http://127.0.0.1:2479,http://127.0.0.1:2579";

/// Closed-loop load generator for a running ballast cluster.
///
/// For every workload and every client count, runs that many concurrent clients
/// (each sends one request, waits for the answer, sends the next) for `--duration`,
/// then prints throughput, latency percentiles and errors.
#[derive(Debug, Clone, Parser, Serialize)]
#[command(name = "ballast-bench", version, about, long_about = None)]
pub struct Config {
    /// System under test. Only `ballast` for now; the runner is generic over a
    /// `Target` so others can be added.
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
        default_value = "put,get-linearizable,get-serializable"
    )]
    pub workloads: Vec<Workload>,

    /// Concurrent client counts: one table row per count and workload.
    #[arg(long, value_delimiter = ',', default_value = "1,16,256")]
    pub clients: Vec<usize>,

    /// HTTP connections per endpoint: `auto` gives every client its own connection
    /// (HTTP/1.1 carries one request at a time, so this is what N concurrent
    /// clients need); a number caps them, and clients sharing a connection queue.
    #[arg(long, default_value = "auto")]
    pub connections: Connections,

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

    /// `table` (markdown) or `json`.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Seed for key choice and values, so runs are repeatable.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Exit with status 3 when any request failed.
    #[arg(long)]
    pub fail_on_errors: bool,

    /// Do not draw progress bars on stderr.
    #[arg(long)]
    pub no_progress: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            target: TargetKind::Ballast,
            endpoints: DEFAULT_ENDPOINTS.split(',').map(str::to_owned).collect(),
            workloads: vec![
                Workload::Put,
                Workload::GetLinearizable,
                Workload::GetSerializable,
            ],
            clients: vec![1, 16, 256],
            connections: Connections::Auto,
            duration: Duration::from_secs(8),
            keys: 1000,
            value_size: 256,
            key_prefix: "bench/".to_owned(),
            request_timeout: Duration::from_secs(5),
            output: OutputFormat::Table,
            seed: 1,
            fail_on_errors: false,
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
        if self.duration.is_zero() || self.request_timeout.is_zero() {
            bail!("--duration and --request-timeout must be greater than zero");
        }
        if self.keys == 0 {
            bail!("--keys must be at least 1");
        }
        Ok(())
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
}

impl Workload {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::GetLinearizable => "get-linearizable",
            Workload::GetSerializable => "get-serializable",
        }
    }

    /// Whether the keys must exist before the row starts.
    pub fn needs_preload(self) -> bool {
        !matches!(self, Workload::Put)
    }
}

/// How many HTTP connections to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// One per client.
    Auto,
    /// At most this many per endpoint.
    PerEndpoint(usize),
}

impl Connections {
    /// Total connections for `clients` clients over `endpoints` endpoints.
    pub fn total(self, clients: usize, endpoints: usize) -> usize {
        match self {
            Connections::Auto => clients,
            Connections::PerEndpoint(n) => clients.min(n.saturating_mul(endpoints)),
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
        assert_eq!(parsed.workloads, default.workloads);
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
    }
}
