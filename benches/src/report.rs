//! Results: one [`RowResult`] per workload and client count, printed as a
//! markdown table or one JSON document.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::{Config, Workload};

/// Measurements of one row.
#[derive(Debug, Clone, Serialize)]
pub struct RowResult {
    /// Workload name (`put`, `get-linearizable`, `get-serializable`).
    pub workload: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// HTTP connections the clients shared.
    pub connections: usize,
    /// Successful requests.
    pub ops: u64,
    /// Failed requests (non-2xx answers, timeouts, transport errors).
    pub errors: u64,
    /// Wall time from the first request to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// Successful requests per second.
    pub ops_per_sec: f64,
    /// Median latency of successful requests, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Slowest successful request, milliseconds.
    pub max_ms: f64,
    /// A few distinct error messages, to tell what failed.
    pub error_samples: Vec<String>,
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
        latencies: &Histogram<u64>,
        errors: u64,
        error_samples: Vec<String>,
        elapsed: Duration,
    ) -> Self {
        let ops = latencies.len();
        let secs = elapsed.as_secs_f64();
        let (p50, p99, max) = if ops == 0 {
            (0, 0, 0)
        } else {
            (
                latencies.value_at_quantile(0.50),
                latencies.value_at_quantile(0.99),
                latencies.max(),
            )
        };
        Self {
            workload: workload.name(),
            clients,
            connections,
            ops,
            errors,
            elapsed_secs: secs,
            ops_per_sec: if secs > 0.0 { ops as f64 / secs } else { 0.0 },
            p50_ms: ms(p50),
            p99_ms: ms(p99),
            max_ms: ms(max),
            error_samples,
        }
    }
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

    /// The markdown table (plus a settings line and error samples, if any).
    pub fn to_table(&self) -> String {
        let c = &self.config;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} at {} ({} keys, {}-byte values, {:?} per row, connections per endpoint: {})\n",
            self.target,
            c.endpoint_list().join(","),
            c.keys,
            c.value_size,
            c.duration,
            c.connections
        );
        out.push_str("| workload | clients | ops/s | p50 | p99 | max | errors |\n");
        out.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r.workload,
                r.clients,
                thousands(r.ops_per_sec.round() as u64),
                latency(r.p50_ms),
                latency(r.p99_ms),
                latency(r.max_ms),
                r.errors
            );
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
fn thousands(n: u64) -> String {
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

fn latency(ms: f64) -> String {
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
        let row = RowResult::new(Workload::Put, 16, 16, &h, 2, vec![], Duration::from_secs(2));
        assert_eq!((row.ops, row.errors), (5, 2));
        assert!((row.ops_per_sec - 2.5).abs() < 1e-9);
        assert!((row.p50_ms - 1.0).abs() < 0.01);
        assert!((row.max_ms - 50.0).abs() < 0.1);

        let report = Report {
            target: "ballast",
            config: Config::default(),
            rows: vec![row],
        };
        let table = report.to_table();
        assert!(table.contains("| workload | clients | ops/s | p50 | p99 | max | errors |"));
        assert!(table.contains("| put | 16 | 3 | 1.00 ms |"), "{table}");
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
        let row = RowResult::new(
            Workload::GetLinearizable,
            1,
            1,
            &h,
            7,
            vec![],
            Duration::from_secs(1),
        );
        assert_eq!((row.ops, row.p99_ms, row.errors), (0, 0.0, 7));
    }
}
