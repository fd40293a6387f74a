//! Results: one [`RowResult`] per workload and client count, printed as a
//! markdown table or one JSON document (the CSV files of `--out` are in
//! `results.rs`).

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{Config, TargetKind, Workload};

/// Measurements of one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// Workload name (`put`, `get-linearizable`, `txn-cas`, ...).
    pub workload: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Connections the clients shared.
    pub connections: usize,
    /// Completed requests (failed compares of `txn-cas` included).
    pub ops: u64,
    /// `txn-cas` transactions whose compare failed: completed, but nothing
    /// was written.
    pub compare_failed: u64,
    /// Failed requests (error answers, timeouts, transport errors).
    pub errors: u64,
    /// Wall time from the first request to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Median latency of completed requests, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile latency, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// 99.9th percentile latency, milliseconds.
    pub p999_ms: f64,
    /// Slowest completed request, milliseconds.
    pub max_ms: f64,
    /// A few distinct error messages, to tell what failed.
    pub error_samples: Vec<String>,
    /// Latencies of the completed requests in microseconds, for the CDF files.
    #[serde(skip)]
    pub latencies: Histogram<u64>,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl RowResult {
    /// Summarizes a row from its merged latency histogram (microseconds).
    pub fn new(
        workload: Workload,
        clients: usize,
        connections: usize,
        latencies: Histogram<u64>,
        counts: Counts,
        error_samples: Vec<String>,
        elapsed: Duration,
    ) -> Self {
        let ops = latencies.len();
        let secs = elapsed.as_secs_f64();
        let at = |q: f64| {
            if ops == 0 {
                0.0
            } else {
                ms(latencies.value_at_quantile(q))
            }
        };
        Self {
            workload: workload.name(),
            clients,
            connections,
            ops,
            compare_failed: counts.compare_failed,
            errors: counts.errors,
            elapsed_secs: secs,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            p999_ms: at(0.999),
            max_ms: if ops == 0 { 0.0 } else { ms(latencies.max()) },
            error_samples,
            latencies,
        }
    }
}

/// What a row counted besides latencies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Failed requests.
    pub errors: u64,
    /// Completed `txn-cas` requests whose compare failed.
    pub compare_failed: u64,
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// System under test.
    pub target: &'static str,
    /// The settings the run used.
    pub config: Config,
    /// One entry per workload and client count, in run order.
    pub rows: Vec<RowResult>,
}

impl Report {
    /// Total failed requests over all rows.
    pub fn errors(&self) -> u64 {
        self.rows.iter().map(|r| r.errors).sum()
    }

    /// Rows without a single completed request.
    pub fn idle_rows(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.ops == 0)
            .map(|r| format!("{} x{}", r.workload, r.clients))
            .collect()
    }

    /// The markdown table (plus a settings line and error samples, if any).
    pub fn to_table(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let layout = match c.target {
            TargetKind::Ballast => {
                let layout = match c.http2_connections {
                    Some(n) => format!("HTTP/2 connections: {n} in all"),
                    None => format!("HTTP connections per endpoint: {}", c.connections),
                };
                if c.no_sessions {
                    format!("{layout}, writes without client sessions")
                } else {
                    layout
                }
            }
            TargetKind::Etcd => format!("gRPC connections: {}", c.connection_layout()),
        };
        let _ = writeln!(
            out,
            "{} at {} ({} keys, {}-byte values, {:?} per row, {layout})\n",
            self.target,
            c.endpoint_list().join(","),
            c.keys,
            c.value_size,
            c.duration,
        );
        let cas = self
            .rows
            .iter()
            .any(|r| r.workload == Workload::TxnCas.name());
        out.push_str("| workload | clients | ops/s | p50 | p90 | p99 | p99.9 | max | errors |");
        out.push_str(if cas { " failed compares |\n" } else { "\n" });
        out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        out.push_str(if cas { "---:|\n" } else { "\n" });
        for r in &self.rows {
            let _ = write!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.workload,
                r.clients,
                thousands(r.ops_per_sec.round() as u64),
                latency(r.p50_ms),
                latency(r.p90_ms),
                latency(r.p99_ms),
                latency(r.p999_ms),
                latency(r.max_ms),
                r.errors
            );
            if cas {
                let _ = write!(out, " {} |", thousands(r.compare_failed));
            }
            out.push('\n');
        }
        for r in self.rows.iter().filter(|r| !r.error_samples.is_empty()) {
            let _ = writeln!(
                out,
                "\n{} x{}: {}",
                r.workload,
                r.clients,
                r.error_samples.join("; ")
            );
        }
        out
    }

    /// Pretty-printed JSON.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(self)
    }
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        let left = digits.len() - i;
        if i > 0 && left.is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A latency in milliseconds with three significant digits or so.
pub fn latency(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.2} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(9622), "9,622");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(latency(2.5), "2.50 ms");
        assert_eq!(latency(71.04), "71.0 ms");
        assert_eq!(latency(250.4), "250 ms");
    }

    #[test]
    fn summarizes_a_row() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        for us in [1000, 1000, 1000, 2000, 50_000] {
            h.record(us).expect("in range");
        }
        let counts = Counts {
            errors: 2,
            compare_failed: 0,
        };
        let row = RowResult::new(
            Workload::Put,
            16,
            16,
            h,
            counts,
            vec![],
            Duration::from_secs(2),
        );
        assert_eq!((row.ops, row.errors), (5, 2));
        assert!((row.ops_per_sec - 2.5).abs() < 1e-9);
        assert!((row.p50_ms - 1.0).abs() < 0.01);
        assert!((row.p90_ms - 50.0).abs() < 0.1);
        assert!((row.max_ms - 50.0).abs() < 0.1);

        let report = Report {
            target: "ballast",
            config: Config::default(),
            rows: vec![row],
        };
        let table = report.to_table();
        assert!(table
            .contains("| workload | clients | ops/s | p50 | p90 | p99 | p99.9 | max | errors |\n"));
        assert!(table.contains("| put | 16 | 3 | 1.00 ms |"), "{table}");
        assert!(!table.contains("failed compares"));
        let json: serde_json::Value =
            serde_json::from_str(&report.to_json().expect("serializes")).expect("valid JSON");
        assert_eq!(json["rows"][0]["workload"], "put");
        assert_eq!(json["rows"][0]["errors"], 2);
        assert_eq!(json["config"]["connections"], "auto");
        assert_eq!(json["config"]["duration"], 8.0);
    }

    #[test]
    fn empty_row_has_zero_latencies() {
        let h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        let counts = Counts {
            errors: 7,
            compare_failed: 0,
        };
        let row = RowResult::new(
            Workload::GetLinearizable,
            1,
            1,
            h,
            counts,
            vec![],
            Duration::from_secs(1),
        );
        assert_eq!((row.ops, row.p99_ms, row.errors), (0, 0.0, 7));
        let report = Report {
            target: "ballast",
            config: Config::default(),
            rows: vec![row],
        };
        assert_eq!(report.idle_rows(), ["get-linearizable x1"]);
    }

    #[test]
    fn failed_compares_get_a_column() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
        h.record(1500).expect("in range");
        let counts = Counts {
            errors: 0,
            compare_failed: 1234,
        };
        let row = RowResult::new(
            Workload::TxnCas,
            4,
            4,
            h,
            counts,
            vec![],
            Duration::from_secs(1),
        );
        let report = Report {
            target: "etcd",
            config: Config {
                target: TargetKind::Etcd,
                ..Config::default()
            },
            rows: vec![row],
        };
        let table = report.to_table();
        assert!(table.contains("gRPC connections: 16 in all"), "{table}");
        assert!(table.contains("| errors | failed compares |"), "{table}");
        assert!(table.ends_with("| 0 | 1,234 |\n"), "{table}");
    }
}
