//! One module per subcommand. Each `run` does the requests and returns an
//! [`Outcome`]: what to print and how to exit. Rendering lives in pure
//! functions next to each `run`, so formats are unit-tested without a cluster.

use std::time::Duration;

use ballast_client::Client;

use crate::cli::{Command, GlobalArgs, OutputFormat};
use crate::exit::CliError;

pub mod alarm;
pub mod auth;
pub mod cas;
pub mod compact;
pub mod del;
pub mod get;
pub mod members;
pub mod put;
pub mod rollout;
pub mod snapshot;
pub mod status;
pub mod txn;
pub mod watch;

/// Connecting never waits longer than this, even with a long `--timeout`: a
/// node that does not accept a connection in this time is treated as down and
/// the next endpoint is tried.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What a subcommand produced: bytes for stdout, warnings for stderr, and
/// possibly an error that still comes with a result to print (a missing key's
/// `{"kv": null}`, a failed compare's current value, a status table with every
/// endpoint down).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Written to stdout as is.
    pub stdout: Vec<u8>,
    /// Written to stderr, one line each, before exiting.
    pub warnings: Vec<String>,
    /// Set when the exit code is not 0.
    pub error: Option<CliError>,
}

impl Outcome {
    /// Success with this output.
    pub fn ok(stdout: impl Into<Vec<u8>>) -> Self {
        Self {
            stdout: stdout.into(),
            ..Self::default()
        }
    }

    /// This output, then a non-zero exit.
    pub fn fail(stdout: impl Into<Vec<u8>>, error: CliError) -> Self {
        Self {
            stdout: stdout.into(),
            error: Some(error),
            ..Self::default()
        }
    }
}

/// The global flags, shared by the subcommands.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Parsed global flags.
    pub global: GlobalArgs,
}

impl Ctx {
    /// The output format.
    pub fn format(&self) -> OutputFormat {
        self.global.output
    }

    /// A client over every endpoint, following the leader and retrying only
    /// when safe, within `--timeout`.
    pub fn client(&self) -> Result<Client, CliError> {
        self.client_for(self.global.endpoints.clone(), None)
    }

    /// A client for `endpoints`; `max_attempts` overrides the retry count
    /// (`Some(1)`: ask once, as `status` does for each endpoint).
    pub fn client_for(
        &self,
        endpoints: Vec<String>,
        max_attempts: Option<u32>,
    ) -> Result<Client, CliError> {
        let timeout = self.global.timeout;
        let mut builder = Client::builder(endpoints)
            .request_timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .retry_deadline(timeout);
        if let Some(n) = max_attempts {
            builder = builder.max_attempts(n);
        }
        if let Some(ca) = &self.global.cacert {
            builder = builder.ca_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.global.cert, &self.global.key) {
            builder = builder.client_identity_files(cert, key);
        }
        if let Some(token) = &self.global.token {
            builder = builder.bearer_token(token.clone());
        }
        builder.build().map_err(CliError::from)
    }
}

/// Runs one subcommand.
pub async fn run(ctx: &Ctx, command: Command) -> Result<Outcome, CliError> {
    match command {
        Command::Get(args) => get::run(ctx, args).await,
        Command::Put(args) => put::run(ctx, args).await,
        Command::Del(args) => del::run(ctx, args).await,
        Command::Txn(args) => txn::run(ctx, args).await,
        Command::Cas(args) => cas::run(ctx, args).await,
        Command::Status(args) => status::run(ctx, args).await,
        Command::Watch(args) => watch::run(ctx, args).await,
        Command::Rollout(crate::cli::RolloutCommand::Status(args)) => rollout::run(ctx, args).await,
        Command::Compact(args) => compact::run(ctx, args).await,
        Command::Alarm(command) => alarm::run(ctx, command).await,
        Command::Members(command) => members::run(ctx, command).await,
        Command::Leader(crate::cli::LeaderCommand::Transfer(args)) => {
            members::transfer(ctx, args).await
        }
        Command::Snapshot(command) => snapshot::run(ctx, command).await,
        Command::Auth(command) => auth::run(ctx, command).await,
    }
}
