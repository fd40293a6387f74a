//! `ballastctl`: the operator's command line for a ballast cluster.
//!
//! # Layout
//!
//! - `cli.rs`: the clap definitions (global flags, one `Args` struct per
//!   subcommand) and duration parsing.
//! - `commands/`: one module per subcommand (`get`, `put`, `del`, `txn`, `cas`,
//!   `status`, `watch`, `rollout status`, `compact`, `snapshot save|status`); each runs its requests
//!   through [`ballast_client::Client`] and renders its output with pure,
//!   unit-tested functions.
//! - `exit.rs`: [`exit::CliError`], the one table from errors to exit codes and
//!   stderr messages.
//! - `output.rs`: JSON key-values (base64 when not UTF-8) and aligned tables.
//! - `input.rs`: bounded reads of values and documents from files and stdin.
//! - `progress.rs`: the spinner for operations that take more than a second,
//!   and the byte progress of a download.
//! - `txn_doc.rs`: the JSON transaction document of `ballastctl txn`.
//!
//! A new subcommand adds a `cli::Command` variant and a `commands/` module.
//!
//! Exit codes: 0 ok; 1 key not found / compare failed; 2 usage; 3 API error;
//! 4 cluster unavailable; 5 write outcome unknown; 6 invalid snapshot file or
//! local file error. See `docs/ballastctl.md`.

mod cli;
mod commands;
mod exit;
mod input;
mod output;
mod progress;
mod txn_doc;

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{Cli, OutputFormat};
use crate::commands::{Ctx, Outcome};
use crate::exit::CliError;
use crate::output::json_bytes;

fn main() -> ExitCode {
    // clap prints help/version on stdout (exit 0) and usage errors on stderr (exit 2).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let ctx = Ctx { global: cli.global };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ballastctl: cannot start the async runtime: {e}");
            return ExitCode::from(CliError::Unavailable(String::new()).code());
        }
    };
    let result = runtime.block_on(commands::run(&ctx, cli.command));
    finish(ctx.format(), result)
}

/// Prints the outcome and turns it into the exit code.
fn finish(format: OutputFormat, result: Result<Outcome, CliError>) -> ExitCode {
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(error) => {
            let stdout = match (format, error.json_document()) {
                (OutputFormat::Json, Some(doc)) => json_bytes(&doc),
                _ => Vec::new(),
            };
            Outcome::fail(stdout, error)
        }
    };
    let mut stdout = std::io::stdout().lock();
    // A closed pipe (`| head`) is not worth an error of its own.
    let _ = stdout
        .write_all(&outcome.stdout)
        .and_then(|()| stdout.flush());
    for warning in &outcome.warnings {
        eprintln!("ballastctl: {warning}");
    }
    match outcome.error {
        None => ExitCode::SUCCESS,
        Some(error) => {
            eprintln!("ballastctl: {}", error.message());
            error.exit_code()
        }
    }
}
