//! The command line: global flags and one argument struct per subcommand
//! (clap derive). Parsing only; nothing here touches the network.
//!
//! To add a subcommand (`watch`, `members`, `rollout status`, `snapshot` once
//! the server serves them): add a variant to [`Command`] with its own `Args`
//! struct, a module under `commands/`, and a match arm in `commands::run`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// The endpoints of `ballastd dev` (`make cluster`).
pub const DEFAULT_ENDPOINTS: &str =
    "http://127.0.0.1:2379,http://127.0.0.1:2479,http://127.0.0.1:2579";

/// `ballastctl`: operate a ballast cluster from a shell or a script.
#[derive(Debug, Parser)]
#[command(
    name = "ballastctl",
    version,
    about = "Read, write and inspect a ballast cluster",
    after_help = "Exit codes: 0 ok; 1 key not found / compare failed; 2 usage or invalid \
                  argument; 3 API error; 4 cluster unavailable; 5 write outcome unknown; 6 invalid \
                  snapshot file or local file error."
)]
pub struct Cli {
    /// Flags every subcommand takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags shared by every subcommand (accepted before or after it).
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Cluster client endpoints, comma-separated (`http://host:port`,
    /// `https://host:port` with `--cacert`, or `host:port`).
    #[arg(
        long,
        global = true,
        env = "BALLAST_ENDPOINTS",
        value_delimiter = ',',
        default_value = DEFAULT_ENDPOINTS
    )]
    pub endpoints: Vec<String>,

    /// Output format: `table` for people, `json` for scripts (one JSON document on stdout).
    #[arg(
        long,
        short = 'o',
        global = true,
        env = "BALLAST_OUTPUT",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,

    /// Time budget of the command's requests: `500ms`, `5s`, `1m` (a bare number is seconds).
    /// No attempt starts after it, and an attempt in flight is cut at it.
    #[arg(
        long,
        global = true,
        env = "BALLAST_TIMEOUT",
        value_parser = parse_duration,
        default_value = "5s"
    )]
    pub timeout: Duration,

    /// CA certificate(s), PEM, that `https://` endpoints must chain to.
    #[arg(long, global = true, env = "BALLAST_CACERT", value_name = "FILE")]
    pub cacert: Option<std::path::PathBuf>,

    /// Client certificate, PEM, for nodes that require one (with `--key`).
    // Ids apart from the flag names: subcommands have a `key` argument.
    #[arg(
        long = "cert",
        id = "client_cert",
        global = true,
        env = "BALLAST_CERT",
        value_name = "FILE",
        requires = "client_key"
    )]
    pub cert: Option<std::path::PathBuf>,

    /// Private key, PEM, of `--cert`.
    #[arg(
        long = "key",
        id = "client_key",
        global = true,
        env = "BALLAST_KEY",
        value_name = "FILE",
        requires = "client_cert"
    )]
    pub key: Option<std::path::PathBuf>,
    /// Bearer token for a cluster with auth on (`ballastctl auth token create` makes one).
    #[arg(
        long,
        global = true,
        env = "BALLAST_TOKEN",
        hide_env_values = true,
        value_parser = parse_token
    )]
    pub token: Option<ballast_client::BearerToken>,
}

fn parse_token(s: &str) -> Result<ballast_client::BearerToken, String> {
    if s.trim().is_empty() {
        return Err("the token is empty".into());
    }
    Ok(ballast_client::BearerToken::new(s.trim()))
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people (binary values shown as `base64:...`).
    Table,
    /// One JSON document on stdout, values as in the HTTP API.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read a key, or every key under a prefix.
    Get(GetArgs),
    /// Set a key from an argument, a file or stdin.
    Put(PutArgs),
    /// Delete a key, or every key under a prefix.
    Del(DelArgs),
    /// Run a transaction given as JSON (the body of `POST /v1/txn`).
    Txn(TxnArgs),
    /// Compare-and-swap: set a key only if it holds a given value (or is absent).
    Cas(CasArgs),
    /// Status of every endpoint: node, leader, term, revision, state hash, Raft state.
    Status(StatusArgs),
    /// Print changes to a key (or prefix) as they happen, until Ctrl-C.
    Watch(WatchArgs),
    /// Data-plane rollout: which replicas applied a revision.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Compact history up to a revision (older revisions can no longer be read or watched).
    Compact(CompactArgs),
    /// Alarms (a member short of disk space): list, disarm.
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Backups: save one node's snapshot to a file, or check a saved file.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Cluster membership: list, add a learner, promote, remove.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Leadership: hand it to another voter.
    #[command(subcommand)]
    Leader(LeaderCommand),
    /// Tokens and roles of a cluster with auth on (admin token needed).
    #[command(subcommand)]
    Auth(AuthCommand),
}

/// `ballastctl auth ...`.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Tokens: create (the secret is printed once), list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Roles: create, list, delete.
    #[command(subcommand)]
    Role(RoleCommand),
}

/// `ballastctl auth token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token for a role and print its secret (shown only this once).
    Create(TokenCreateArgs),
    /// List tokens: ids, roles, creation and expiry (never secrets).
    List,
    /// Revoke a token by id: every node refuses it once it applies the revocation.
    Revoke(TokenRevokeArgs),
}

/// `ballastctl auth token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The role: `admin`, `writer`, `reader` (every key) or a custom role.
    #[arg(long)]
    pub role: String,
    /// Lifetime (`90s`, `30m`, a bare number is seconds); without it the token never expires.
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
}

/// `ballastctl auth token revoke`.
#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (from `auth token list`).
    pub id: String,
}

/// `ballastctl auth role ...`.
#[derive(Debug, Subcommand)]
pub enum RoleCommand {
    /// Create a custom role: a kind and the key prefixes it applies to.
    Create(RoleCreateArgs),
    /// List roles, built-in ones first.
    List,
    /// Delete a custom role (refused while tokens use it).
    Delete(RoleDeleteArgs),
}

/// `ballastctl auth role create`.
#[derive(Debug, Args)]
pub struct RoleCreateArgs {
    /// The role's name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// What it may do: `admin`, `writer` (read and write) or `reader` (read and watch).
    #[arg(long)]
    pub kind: String,
    /// A key prefix it applies to; repeat for more (`--prefix ""` is every key).
    #[arg(long = "prefix", value_name = "PREFIX")]
    pub prefixes: Vec<String>,
}

/// `ballastctl auth role delete`.
#[derive(Debug, Args)]
pub struct RoleDeleteArgs {
    /// The role's name.
    pub name: String,
}

/// `ballastctl members ...`.
#[derive(Debug, Subcommand)]
pub enum MembersCommand {
    /// Every member with its role, addresses, match index, lag and health (the leader's view).
    List,
    /// Add a node as a non-voting learner (then start it with `ballastd --join`).
    Add(MemberAddArgs),
    /// Make a learner a voter; refused until its log holds 90% of the leader's.
    Promote(MemberIdArgs),
    /// Remove a member (the leader hands leadership over first).
    Remove(MemberIdArgs),
}

/// `ballastctl members add`.
#[derive(Debug, Args)]
pub struct MemberAddArgs {
    /// The new node's id (unused in the cluster).
    pub id: u64,
    /// Add it as a learner (required: a voter is made by `members promote` once caught up).
    #[arg(long, required = true)]
    pub learner: bool,
    /// Its client address, `host:port`.
    #[arg(long, value_name = "HOST:PORT")]
    pub client_addr: String,
    /// Its peer address, `host:port`.
    #[arg(long, value_name = "HOST:PORT")]
    pub peer_addr: String,
}

/// `ballastctl members promote|remove`.
#[derive(Debug, Args)]
pub struct MemberIdArgs {
    /// The member's id.
    pub id: u64,
}

/// `ballastctl leader ...`.
#[derive(Debug, Subcommand)]
pub enum LeaderCommand {
    /// Hand leadership to voter N and wait until it leads.
    Transfer(LeaderTransferArgs),
}

/// `ballastctl leader transfer`.
#[derive(Debug, Args)]
pub struct LeaderTransferArgs {
    /// The voter to lead.
    #[arg(long, value_name = "N")]
    pub to: u64,
}

/// `ballastctl snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Download a backup from a node (the first endpoint that serves one) into FILE,
    /// verified, synced and renamed into place; FILE must not exist.
    Save(SnapshotSaveArgs),
    /// Verify a backup file and print its revision, key count, size and cluster id.
    Status(SnapshotStatusArgs),
}

/// `ballastctl snapshot save`.
#[derive(Debug, Args)]
pub struct SnapshotSaveArgs {
    /// Where to save the backup (written as FILE.part until verified).
    pub file: PathBuf,
}

/// `ballastctl snapshot status`.
#[derive(Debug, Args)]
pub struct SnapshotStatusArgs {
    /// The backup file.
    pub file: PathBuf,
    /// Print JSON (same as `--output json`).
    #[arg(long)]
    pub json: bool,
}

/// `ballastctl watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The key; with `--prefix`, the prefix (`""` = every key).
    pub key: String,
    /// Watch every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// First revision to print (default: changes from now on).
    #[arg(long, value_name = "R")]
    pub start_revision: Option<u64>,
    /// Also print each key's previous value.
    #[arg(long)]
    pub prev_kv: bool,
}

/// `ballastctl rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// How many replicas applied revision R, and which lag by how much.
    /// Exit 0 when every reporting replica applied it, 1 when some lag.
    Status(RolloutStatusArgs),
}

/// `ballastctl rollout status`.
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// The revision being rolled out (the revision a write returned).
    #[arg(long, value_name = "R")]
    pub revision: u64,
}

/// `ballastctl alarm`.
#[derive(Debug, Subcommand)]
pub enum AlarmCommand {
    /// The active alarms.
    List,
    /// Disarm alarms once the cause is gone (a member still short of space
    /// raises its alarm again within a second).
    Disarm(DisarmArgs),
}

/// `ballastctl alarm disarm`.
#[derive(Debug, Args)]
pub struct DisarmArgs {
    /// Only this member's alarms (default: every member's).
    #[arg(long)]
    pub member: Option<u64>,
    /// Only alarms of this kind (`nospace`; default: every kind).
    #[arg(long)]
    pub alarm: Option<String>,
}

/// `ballastctl compact`.
#[derive(Debug, Args)]
pub struct CompactArgs {
    /// Forget history before this revision.
    pub revision: u64,
}

/// `ballastctl get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The key; with `--prefix`, the prefix (`""` = every key).
    pub key: String,
    /// Read every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// At most N keys (with `--prefix`); the output says when more exist.
    #[arg(long, value_name = "N", requires = "prefix")]
    pub limit: Option<u64>,
    /// Read as of this past revision.
    #[arg(long, value_name = "R")]
    pub revision: Option<u64>,
    /// Answer from the contacted node's local state: cheaper, may be stale.
    #[arg(long)]
    pub serializable: bool,
    /// Print only the value's raw bytes, nothing added (one key, table output).
    #[arg(long, conflicts_with = "prefix")]
    pub value_only: bool,
}

/// `ballastctl put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// The key.
    pub key: String,
    /// The value; `-` or absent (with stdin not a terminal) reads stdin.
    #[arg(conflicts_with = "file")]
    pub value: Option<OsString>,
    /// Read the value from this file (bytes as they are).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Also print the key's previous value.
    #[arg(long)]
    pub prev_kv: bool,
}

/// `ballastctl del`.
#[derive(Debug, Args)]
pub struct DelArgs {
    /// The key; with `--prefix`, the prefix (`""` = every key).
    pub key: String,
    /// Delete every key starting with KEY.
    #[arg(long)]
    pub prefix: bool,
    /// Also print what was deleted.
    #[arg(long)]
    pub prev_kv: bool,
}

/// `ballastctl txn`.
#[derive(Debug, Args)]
pub struct TxnArgs {
    /// Read the JSON document from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
}

/// `ballastctl cas`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("expectation").required(true).args(["expect", "absent"])))]
pub struct CasArgs {
    /// The key.
    pub key: String,
    /// The value to set when the expectation holds.
    pub new_value: OsString,
    /// Swap only if the key currently holds exactly this value.
    #[arg(long, value_name = "VALUE")]
    pub expect: Option<OsString>,
    /// Swap only if the key does not exist (create-if-absent).
    #[arg(long)]
    pub absent: bool,
}

/// `ballastctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {}

/// Parses `250ms`, `5s`, `2m`, or a bare number of seconds (`1.5`).
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration (examples: 500ms, 5s, 1m)"))?;
    let seconds = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{raw:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    let d = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{raw:?}: {e}"))?;
    if d.is_zero() {
        return Err("the timeout must be greater than zero".to_owned());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ballastctl").chain(args.iter().copied()))
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_and_globals_anywhere() {
        let Ok(cli) = parse(&["get", "app/mode"]) else {
            panic!("plain get refused");
        };
        // BALLAST_ENDPOINTS may be set in the environment running the tests.
        if std::env::var_os("BALLAST_ENDPOINTS").is_none() {
            assert_eq!(cli.global.endpoints.len(), 3);
            assert_eq!(cli.global.endpoints[0], "http://127.0.0.1:2379");
        }
        let Ok(cli) = parse(&["get", "k", "--endpoints", "a:1,b:2", "-o", "json"]) else {
            panic!("globals after the subcommand refused");
        };
        assert_eq!(cli.global.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.global.output, OutputFormat::Json);
        let Ok(cli) = parse(&["--timeout", "300ms", "status"]) else {
            panic!("globals before the subcommand refused");
        };
        assert_eq!(cli.global.timeout, Duration::from_millis(300));
        assert!(matches!(cli.command, Command::Status(_)));
    }

    #[test]
    fn tls_flags_do_not_clash_with_a_key_argument() {
        let Ok(cli) = parse(&[
            "get", "app/mode", "--cacert", "ca.pem", "--cert", "c.pem", "--key", "k.pem",
        ]) else {
            panic!("TLS flags refused");
        };
        assert_eq!(
            cli.global.cacert.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(
            cli.global.key.as_deref(),
            Some(std::path::Path::new("k.pem"))
        );
        assert!(matches!(cli.command, Command::Get(_)));
        // A certificate without its key (or the reverse) is a usage error.
        assert!(parse(&["get", "k", "--cert", "c.pem"]).is_err());
        assert!(parse(&["get", "k", "--key", "k.pem"]).is_err());
    }

    #[test]
    fn get_flags() {
        let Ok(Cli {
            command: Command::Get(g),
            ..
        }) = parse(&[
            "get",
            "app/",
            "--prefix",
            "--limit",
            "2",
            "--revision",
            "7",
            "--serializable",
        ])
        else {
            panic!("get with every flag refused");
        };
        assert!(g.prefix && g.serializable);
        assert_eq!((g.limit, g.revision), (Some(2), Some(7)));
        // --limit needs --prefix; --value-only excludes it.
        assert!(parse(&["get", "k", "--limit", "2"]).is_err());
        assert!(parse(&["get", "k", "--prefix", "--value-only"]).is_err());
        assert!(parse(&["get", "k", "--limit", "x", "--prefix"]).is_err());
        assert!(parse(&["get"]).is_err());
    }

    #[test]
    fn put_and_cas_flags() {
        assert!(parse(&["put", "k", "v", "--file", "f"]).is_err());
        let Ok(Cli {
            command: Command::Put(p),
            ..
        }) = parse(&["put", "k", "-"])
        else {
            panic!("put k - refused");
        };
        assert_eq!(p.value.as_deref(), Some(std::ffi::OsStr::new("-")));
        // cas needs exactly one of --expect / --absent.
        assert!(parse(&["cas", "k", "new"]).is_err());
        assert!(parse(&["cas", "k", "new", "--expect", "a", "--absent"]).is_err());
        assert!(parse(&["cas", "k", "new", "--absent"]).is_ok());
        assert!(parse(&["cas", "k", "new", "--expect", "old"]).is_ok());
    }

    #[test]
    fn watch_rollout_compact_flags() {
        let Ok(Cli {
            command: Command::Watch(w),
            ..
        }) = parse(&[
            "watch",
            "app/",
            "--prefix",
            "--start-revision",
            "5",
            "--prev-kv",
        ])
        else {
            panic!("watch refused");
        };
        assert!(w.prefix && w.prev_kv);
        assert_eq!(w.start_revision, Some(5));
        assert!(matches!(
            parse(&["rollout", "status", "--revision", "9"]),
            Ok(Cli {
                command: Command::Rollout(RolloutCommand::Status(RolloutStatusArgs {
                    revision: 9
                })),
                ..
            })
        ));
        assert!(matches!(
            parse(&["compact", "12"]),
            Ok(Cli {
                command: Command::Compact(CompactArgs { revision: 12 }),
                ..
            })
        ));
    }

    #[test]
    fn bad_output_and_unknown_command() {
        assert!(parse(&["-o", "yaml", "status"]).is_err());
        assert!(parse(&["watch"]).is_err());
        assert!(parse(&["rollout", "status"]).is_err());
        assert!(parse(&["compact", "x"]).is_err());
        assert!(parse(&["--timeout", "0", "status"]).is_err());
    }
}
