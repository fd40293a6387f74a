//! # Layout
//!
//! `ballast-bench`, a closed-loop load generator that measures a running ballast
//! or etcd cluster the same way, as the etcd baseline in `docs/benchmarks.md`
//! was measured: 256-byte values over 1,000 keys, N concurrent clients spread
//! round-robin over connections to every endpoint, a fixed time per row,
//! latency percentiles from an HDR histogram. `ballast-bench report DIR` then
//! sets the two side by side.
//!
//! - `config.rs`: the command line ([`config::Cli`], [`Config`]), defaults and
//!   validation.
//! - `target.rs`: the [`target::Target`] / [`target::Connection`] seam between the
//!   loop and the system under test.
//! - `ballast.rs`: the ballast target, through `ballast-client` (HTTP/1.1).
//! - `etcd.rs`: the etcd target, through `etcd-client` (gRPC).
//! - `runner.rs`: readiness, preload, connection layout, the closed loop of
//!   every workload and its histograms.
//! - `report.rs`: rows, the markdown table and the JSON document.
//! - `results.rs`: the CSV files of `--out` (rows and latency histograms),
//!   written and read back.
//! - `summary.rs` and `charts.rs`: what `report` writes: `summary.md` and SVG
//!   charts.

pub mod ballast;
pub mod charts;
pub mod config;
pub mod etcd;
pub mod report;
pub mod results;
pub mod runner;
#[cfg(test)]
mod runner_test;
pub mod storm;
pub mod summary;
pub mod target;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

pub use config::Config;
use config::{OutputFormat, ReportArgs, TargetKind};
use report::Report;
use results::StoredRow;
use runner::Workbench;
use target::Target;

/// Exit status when failed requests fail the run (`--fail-on-errors`, `--smoke`).
const EXIT_REQUEST_ERRORS: u8 = 3;
/// Exit status of `--smoke` when a row completed no request at all.
const EXIT_NO_THROUGHPUT: u8 = 4;

/// How a run ended, for the exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Failed requests over all rows.
    pub errors: u64,
    /// Whether failed requests should fail the process.
    pub fail_on_errors: bool,
    /// Rows that completed no request (`workload xN`).
    pub idle_rows: Vec<String>,
    /// Whether this was a `--smoke` run, which also fails on idle rows.
    pub smoke: bool,
}

impl Outcome {
    /// 0; 3 when requests failed and that fails the run; 4 when a smoke run
    /// had a row without a single completed request.
    pub fn exit_code(&self) -> u8 {
        if self.fail_on_errors && self.errors > 0 {
            EXIT_REQUEST_ERRORS
        } else if self.smoke && !self.idle_rows.is_empty() {
            EXIT_NO_THROUGHPUT
        } else {
            0
        }
    }
}

/// Runs every row of `config` against its target and prints the report on
/// stdout (and writes it under `--out`).
pub async fn run(config: Config) -> Result<Outcome> {
    let config = if config.smoke {
        config.into_smoke()
    } else {
        config
    };
    config.validate()?;
    match config.target {
        TargetKind::Ballast => {
            let target = ballast::BallastTarget::new(config.request_timeout)
                .http2(config.http2_connections.is_some())
                .sessions(!config.no_sessions);
            run_with(target, config).await
        }
        TargetKind::Etcd => {
            let target = etcd::EtcdTarget::new(config.request_timeout);
            run_with(target, config).await
        }
    }
}

/// Runs every row against one target.
pub async fn run_with<T: Target>(target: T, config: Config) -> Result<Outcome> {
    let name = target.name();
    let progress = !config.no_progress;
    let bench = Workbench::new(
        target,
        config.endpoint_list(),
        &config.key_prefix,
        config.keys,
        config.value_size,
        config.connection_layout(),
        config.seed,
        progress,
    );
    if let Some(limit) = config.wait_ready {
        bench.wait_ready(limit).await?;
    }
    let mut rows = Vec::new();
    let mut preloaded = false;
    for &workload in &config.workloads {
        if workload.needs_preload() && !preloaded {
            bench.preload().await?;
            preloaded = true;
        }
        for &clients in &config.clients {
            let row = bench.run_row(workload, clients, config.duration).await?;
            if progress {
                eprintln!(
                    "{} {} x{}: {:.0} ops/s, p99 {:.2} ms, {} errors",
                    name, row.workload, row.clients, row.ops_per_sec, row.p99_ms, row.errors
                );
            }
            rows.push(row);
        }
    }
    let report = Report {
        target: name,
        config,
        rows,
    };
    match report.config.output {
        OutputFormat::Table => print!("{}", report.to_table()),
        OutputFormat::Json => println!("{}", report.to_json()?),
    }
    if let Some(dir) = &report.config.out {
        results::write_run(dir, &report)?;
    }
    let outcome = Outcome {
        errors: report.errors(),
        fail_on_errors: report.config.fail_on_errors,
        idle_rows: report.idle_rows(),
        smoke: report.config.smoke,
    };
    if outcome.smoke {
        if outcome.errors > 0 {
            eprintln!("smoke: {} requests failed", outcome.errors);
        }
        if !outcome.idle_rows.is_empty() {
            eprintln!(
                "smoke: no request completed in {}",
                outcome.idle_rows.join(", ")
            );
        }
    }
    Ok(outcome)
}

/// `ballast-bench report DIR`: reads the rows every run left in `dir` and
/// writes `summary.md` and the charts there. Returns the files written.
pub fn report_dir(args: &ReportArgs) -> Result<Vec<PathBuf>> {
    let dir = &args.dir;
    let rows = results::read_rows(dir)?;
    if rows.is_empty() {
        bail!(
            "no rows in {}: run ballast-bench with --out {} first",
            dir.display(),
            dir.display()
        );
    }
    let targets = summary::targets(&rows);
    let mut written = Vec::new();
    let mut chart_links = Vec::new();
    for workload in summary::workloads(&rows) {
        let lines: Vec<charts::Line> = targets
            .iter()
            .map(|t| charts::Line {
                target: t.clone(),
                points: summary::client_counts(&rows, &workload)
                    .into_iter()
                    .filter_map(|c| summary::find(&rows, t, &workload, c))
                    .map(|r| (r.clients as f64, r.ops_per_sec))
                    .collect(),
            })
            .filter(|l| !l.points.is_empty())
            .collect();
        let file = format!("throughput-{workload}.svg");
        write_file(
            dir,
            &file,
            &charts::throughput_svg(&workload, &lines)?,
            &mut written,
        )?;
        chart_links.push(summary::Chart {
            workload: workload.clone(),
            title: format!("{workload}: throughput against clients"),
            file,
        });

        let Some(clients) = cdf_clients(&rows, &targets, &workload, args.cdf_clients) else {
            continue;
        };
        let mut cdfs = Vec::new();
        for t in &targets {
            if let Some(points) = results::read_cdf(dir, t, &workload, clients)? {
                cdfs.push((t.clone(), points));
            }
        }
        let file = format!("cdf-{workload}-c{clients}.svg");
        write_file(
            dir,
            &file,
            &charts::cdf_svg(&workload, clients, &cdfs)?,
            &mut written,
        )?;
        chart_links.push(summary::Chart {
            workload: workload.clone(),
            title: format!("{workload} at {clients} clients: latency CDF"),
            file,
        });
    }
    let settings: Vec<(String, String)> = targets
        .iter()
        .filter_map(|t| {
            let table = fs::read_to_string(dir.join(format!("{t}.md"))).ok()?;
            let line = table.lines().next()?.trim().to_owned();
            Some((t.clone(), line))
        })
        .collect();
    let md = summary::markdown(&rows, &settings, &chart_links);
    write_file(dir, "summary.md", &md, &mut written)?;
    Ok(written)
}

/// The client count of a workload's CDF chart: `wanted` when every target
/// measured it, else the largest count every target measured, else the
/// largest measured at all.
fn cdf_clients(
    rows: &[StoredRow],
    targets: &[String],
    workload: &str,
    wanted: usize,
) -> Option<usize> {
    let counts = summary::client_counts(rows, workload);
    let by_all = |c: usize| {
        targets
            .iter()
            .filter(|t| {
                rows.iter()
                    .any(|r| &r.target == *t && r.workload == workload)
            })
            .all(|t| summary::find(rows, t, workload, c).is_some())
    };
    if counts.contains(&wanted) && by_all(wanted) {
        return Some(wanted);
    }
    counts
        .iter()
        .rev()
        .copied()
        .find(|&c| by_all(c))
        .or_else(|| counts.last().copied())
}

fn write_file(dir: &Path, name: &str, contents: &str, written: &mut Vec<PathBuf>) -> Result<()> {
    let path = dir.join(name);
    fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(errors: u64, fail_on_errors: bool, idle: &[&str], smoke: bool) -> Outcome {
        Outcome {
            errors,
            fail_on_errors,
            idle_rows: idle.iter().map(|s| s.to_string()).collect(),
            smoke,
        }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(outcome(0, false, &[], false).exit_code(), 0);
        assert_eq!(outcome(5, false, &[], false).exit_code(), 0);
        assert_eq!(outcome(5, true, &[], false).exit_code(), 3);
        assert_eq!(outcome(0, true, &["put x1"], false).exit_code(), 0);
        assert_eq!(outcome(0, true, &["put x1"], true).exit_code(), 4);
        assert_eq!(outcome(1, true, &["put x1"], true).exit_code(), 3);
    }

    fn stored(target: &str, workload: &str, clients: usize) -> StoredRow {
        StoredRow {
            target: target.to_owned(),
            workload: workload.to_owned(),
            clients,
            ops_per_sec: 100.0,
            p50_ms: 1.0,
            p90_ms: 1.0,
            p99_ms: 1.0,
            p999_ms: 1.0,
            max_ms: 1.0,
            errors: 0,
            ops: 100,
            compare_failed: 0,
            connections: 1,
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn cdf_at_the_asked_count_or_the_largest_common_one() {
        let targets = vec!["ballast".to_owned(), "etcd".to_owned()];
        let rows = vec![
            stored("ballast", "put", 1),
            stored("ballast", "put", 16),
            stored("ballast", "put", 256),
            stored("etcd", "put", 1),
            stored("etcd", "put", 16),
        ];
        assert_eq!(cdf_clients(&rows, &targets, "put", 16), Some(16));
        assert_eq!(cdf_clients(&rows, &targets, "put", 256), Some(16));
        let only_ballast = vec![stored("ballast", "mixed", 4)];
        assert_eq!(cdf_clients(&only_ballast, &targets, "mixed", 256), Some(4));
        assert_eq!(cdf_clients(&rows, &targets, "mixed", 256), None);
    }
}
