//! # Layout
//!
//! `ballast-bench`, a closed-loop load generator measuring a running cluster the
//! way the etcd baseline in `docs/benchmarks.md` was measured: 256-byte values over 1,000 keys, N concurrent
//! clients spread round-robin over connections to every endpoint, a fixed time
//! per row, latency percentiles from an HDR histogram.
//!
//! - `config.rs`: [`Config`] (clap), defaults and validation.
//! - `target.rs`: the [`target::Target`] / [`target::Connection`] seam between the
//!   loop and the system under test.
//! - `ballast.rs`: the ballast target, through `ballast-client`.
//! - `runner.rs`: preload, connection layout, the closed loop and its histograms.
//! - `report.rs`: rows, the markdown table and the JSON document.

pub mod ballast;
pub mod config;
pub mod report;
pub mod runner;
pub mod target;

use anyhow::Result;

pub use config::Config;
use config::{OutputFormat, TargetKind};
use report::Report;
use runner::Workbench;
use target::Target;

/// Exit status when `--fail-on-errors` is set and a request failed.
const EXIT_REQUEST_ERRORS: u8 = 3;

/// How a run ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Failed requests over all rows.
    pub errors: u64,
    /// Whether failed requests should fail the process.
    pub fail_on_errors: bool,
}

impl Outcome {
    /// 0, or 3 when requests failed and `--fail-on-errors` was given.
    pub fn exit_code(self) -> u8 {
        if self.fail_on_errors && self.errors > 0 {
            EXIT_REQUEST_ERRORS
        } else {
            0
        }
    }
}

/// Runs every row of `config` and prints the report on stdout.
pub async fn run(config: Config) -> Result<Outcome> {
    config.validate()?;
    match config.target {
        TargetKind::Ballast => {
            let target = ballast::BallastTarget::new(config.request_timeout);
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
        config.connections,
        config.seed,
        progress,
    );
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
                    "{} x{}: {:.0} ops/s, p99 {:.2} ms, {} errors",
                    row.workload, row.clients, row.ops_per_sec, row.p99_ms, row.errors
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
    Ok(Outcome {
        errors: report.errors(),
        fail_on_errors: report.config.fail_on_errors,
    })
}
