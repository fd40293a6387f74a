//! `ballast-bench`: parses the command line, starts tracing, and hands over to
//! [`ballast_bench::run`] (a benchmark run), [`ballast_bench::report_dir`]
//! (`ballast-bench report DIR`) or [`ballast_bench::storm::run_storm`]
//! (`ballast-bench restart-storm`).

use std::process::ExitCode;

use ballast_bench::config::{Cli, Command};
use clap::Parser as _;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::Report(args)) = cli.command {
        return match ballast_bench::report_dir(&args) {
            Ok(files) => {
                for file in files {
                    println!("wrote {}", file.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ballast-bench report: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let storm = match cli.command {
        Some(Command::RestartStorm(args)) => Some(args),
        _ => None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ballast-bench: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(args) = storm {
        return match runtime.block_on(ballast_bench::storm::run_storm(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ballast-bench restart-storm: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    match runtime.block_on(ballast_bench::run(cli.run)) {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(e) => {
            eprintln!("ballast-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
