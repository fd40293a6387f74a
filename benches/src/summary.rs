//! `summary.md`: ballast against etcd, per workload and client count, from
//! the rows both runs wrote (`results.rs`).

use std::fmt::Write as _;

use crate::config::Workload;
use crate::report::{latency, thousands};
use crate::results::StoredRow;

/// The system measured.
pub const SUBJECT: &str = "ballast";
/// The system it is measured against.
pub const BASELINE: &str = "etcd";

/// A chart written next to the summary, linked under its workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chart {
    /// Workload it shows.
    pub workload: String,
    /// Alt text.
    pub title: String,
    /// File name, relative to the summary.
    pub file: String,
}

/// Workloads present in `rows`: the known ones in their usual order, then any
/// other in the order first seen.
pub fn workloads(rows: &[StoredRow]) -> Vec<String> {
    let mut out: Vec<String> = Workload::ALL
        .iter()
        .map(|w| w.name().to_owned())
        .filter(|w| rows.iter().any(|r| &r.workload == w))
        .collect();
    for r in rows {
        if !out.contains(&r.workload) {
            out.push(r.workload.clone());
        }
    }
    out
}

/// Client counts measured for `workload` by any target, ascending.
pub fn client_counts(rows: &[StoredRow], workload: &str) -> Vec<usize> {
    let mut counts: Vec<usize> = rows
        .iter()
        .filter(|r| r.workload == workload)
        .map(|r| r.clients)
        .collect();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// Targets present in `rows`: ballast, etcd, then others by name.
pub fn targets(rows: &[StoredRow]) -> Vec<String> {
    let mut names: Vec<String> = rows.iter().map(|r| r.target.clone()).collect();
    names.sort_by_key(|n| (n != SUBJECT, n != BASELINE, n.clone()));
    names.dedup();
    names
}

/// The row of `target` for `workload` at `clients` clients.
pub fn find<'a>(
    rows: &'a [StoredRow],
    target: &str,
    workload: &str,
    clients: usize,
) -> Option<&'a StoredRow> {
    rows.iter()
        .find(|r| r.target == target && r.workload == workload && r.clients == clients)
}

fn ops(row: Option<&StoredRow>) -> String {
    row.map_or("–".to_owned(), |r| thousands(r.ops_per_sec.round() as u64))
}

fn p99(row: Option<&StoredRow>) -> String {
    row.map_or("–".to_owned(), |r| latency(r.p99_ms))
}

fn count(row: Option<&StoredRow>, f: impl Fn(&StoredRow) -> u64) -> String {
    row.map_or("–".to_owned(), |r| thousands(f(r)))
}

/// `ballast ops/s ÷ etcd ops/s`, when both ran and etcd did something.
pub fn ratio(subject: Option<&StoredRow>, baseline: Option<&StoredRow>) -> Option<f64> {
    match (subject, baseline) {
        (Some(s), Some(b)) if b.ops_per_sec > 0.0 => Some(s.ops_per_sec / b.ops_per_sec),
        _ => None,
    }
}

/// The whole `summary.md`. `settings` are (target, settings line) pairs,
/// shown as given.
pub fn markdown(rows: &[StoredRow], settings: &[(String, String)], charts: &[Chart]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {SUBJECT} against {BASELINE}\n");
    out.push_str(
        "Written by `ballast-bench report` from the CSV files next to it. \
         Closed loop; each row ran alone, one system after the other on the same \
         machine. ratio = ballast ops/s ÷ etcd ops/s (above 1: ballast completed \
         more requests per second); p99 is the 99th percentile latency of \
         completed requests. A `txn-cas` whose compare failed is a completed \
         request (counted apart, never as an error).\n\n",
    );
    if !settings.is_empty() {
        for (target, line) in settings {
            let _ = writeln!(out, "- {target}: {line}");
        }
        out.push('\n');
    }
    let others: Vec<String> = targets(rows)
        .into_iter()
        .filter(|t| t != SUBJECT && t != BASELINE)
        .collect();
    if !others.is_empty() {
        let _ = writeln!(
            out,
            "Rows of other targets are not compared here: {}.\n",
            others.join(", ")
        );
    }
    for workload in workloads(rows) {
        let cas = workload == Workload::TxnCas.name();
        let _ = writeln!(out, "## {workload}\n");
        out.push_str(
            "| clients | ballast ops/s | etcd ops/s | ratio | ballast p99 | etcd p99 | errors (ballast / etcd) |",
        );
        out.push_str(if cas {
            " failed compares (ballast / etcd) |\n"
        } else {
            "\n"
        });
        out.push_str("|---:|---:|---:|---:|---:|---:|---:|");
        out.push_str(if cas { "---:|\n" } else { "\n" });
        for clients in client_counts(rows, &workload) {
            let s = find(rows, SUBJECT, &workload, clients);
            let b = find(rows, BASELINE, &workload, clients);
            let r = ratio(s, b).map_or("–".to_owned(), |r| format!("{r:.2}×"));
            let _ = write!(
                out,
                "| {clients} | {} | {} | {r} | {} | {} | {} / {} |",
                ops(s),
                ops(b),
                p99(s),
                p99(b),
                count(s, |r| r.errors),
                count(b, |r| r.errors),
            );
            if cas {
                let _ = write!(
                    out,
                    " {} / {} |",
                    count(s, |r| r.compare_failed),
                    count(b, |r| r.compare_failed)
                );
            }
            out.push('\n');
        }
        out.push('\n');
        for chart in charts.iter().filter(|c| c.workload == workload) {
            let _ = writeln!(out, "![{}]({})\n", chart.title, chart.file);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, workload: &str, clients: usize, ops_per_sec: f64, p99: f64) -> StoredRow {
        StoredRow {
            target: target.to_owned(),
            workload: workload.to_owned(),
            clients,
            ops_per_sec,
            p50_ms: p99 / 2.0,
            p90_ms: p99 / 1.5,
            p99_ms: p99,
            p999_ms: p99 * 1.5,
            max_ms: p99 * 2.0,
            errors: 0,
            ops: (ops_per_sec * 8.0) as u64,
            compare_failed: if workload == "txn-cas" { 12 } else { 0 },
            connections: clients.min(16),
            elapsed_s: 8.0,
        }
    }

    #[test]
    fn compares_per_workload_and_client_count() {
        let rows = vec![
            row("etcd", "put", 16, 3000.0, 11.0),
            row("ballast", "put", 16, 6000.0, 5.0),
            row("ballast", "put", 256, 10000.0, 60.0),
            row("etcd", "txn-cas", 1, 500.0, 2.0),
            row("ballast", "txn-cas", 1, 1000.0, 1.0),
            row("ballast", "get-linearizable", 1, 5000.0, 0.3),
        ];
        assert_eq!(workloads(&rows), ["put", "get-linearizable", "txn-cas"]);
        assert_eq!(client_counts(&rows, "put"), [16, 256]);
        assert_eq!(targets(&rows), ["ballast", "etcd"]);
        let charts = vec![Chart {
            workload: "put".into(),
            title: "put: throughput".into(),
            file: "throughput-put.svg".into(),
        }];
        let settings = vec![("ballast".to_owned(), "ballast at x (8s per row)".to_owned())];
        let md = markdown(&rows, &settings, &charts);
        assert!(md.starts_with("# ballast against etcd\n"), "{md}");
        assert!(
            md.contains("- ballast: ballast at x (8s per row)\n"),
            "{md}"
        );
        assert!(
            md.contains("| 16 | 6,000 | 3,000 | 2.00× | 5.00 ms | 11.0 ms | 0 / 0 |\n"),
            "{md}"
        );
        assert!(
            md.contains("| 256 | 10,000 | – | – | 60.0 ms | – | 0 / – |\n"),
            "{md}"
        );
        assert!(
            md.contains("![put: throughput](throughput-put.svg)"),
            "{md}"
        );
        assert!(md.contains("| errors (ballast / etcd) | failed compares (ballast / etcd) |"));
        assert!(md.contains("| 1 | 1,000 | 500 | 2.00× | 1.00 ms | 2.00 ms | 0 / 0 | 12 / 12 |"));
        // Sections follow the usual workload order, whatever the file order.
        let put = md.find("## put").expect("put section");
        let get = md.find("## get-linearizable").expect("get section");
        assert!(put < get);
    }

    #[test]
    fn no_ratio_without_a_baseline_throughput() {
        let s = row("ballast", "put", 1, 100.0, 1.0);
        let b = row("etcd", "put", 1, 0.0, 0.0);
        assert_eq!(ratio(Some(&s), Some(&b)), None);
        assert_eq!(ratio(Some(&s), None), None);
        let b = row("etcd", "put", 1, 50.0, 1.0);
        assert_eq!(ratio(Some(&s), Some(&b)), Some(2.0));
    }
}
