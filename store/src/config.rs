//! `ballastd` configuration: flags, environment variables and an optional TOML
//! file, validated before anything starts.
//!
//! Precedence: command-line flags, then the TOML file given with `--config`,
//! then `BALLAST_*` environment variables, then defaults. TOML keys are the
//! long flag names (`node-id = 2`, `data-dir = "/var/lib/ballast"`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::kv::limits::{
    Limits, DEFAULT_MAX_KEY_BYTES, DEFAULT_MAX_TXN_OPS, DEFAULT_MAX_VALUE_BYTES,
    MAX_VALUE_BYTES_CEILING,
};
use crate::kv::sessions::{
    DEFAULT_MAX_BYTES as DEFAULT_SESSION_MAX_BYTES,
    DEFAULT_MAX_CLIENTS as DEFAULT_SESSION_MAX_CLIENTS,
    DEFAULT_MAX_RESULTS as DEFAULT_SESSION_MAX_RESULTS, DEFAULT_TTL_MS as DEFAULT_SESSION_TTL_MS,
};
use crate::kv::SessionLimits;
use crate::raft::types::{Member, NodeId};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// The initial admin token's file name in the data directory.
pub const DEFAULT_AUTH_TOKEN_FILE: &str = "admin.token";

/// Default free-space floor of the data directory (`--min-free-bytes`):
/// room for what is in flight when the alarm is raised (writes waiting for
/// their commit, the WAL and memtable flushes they cause).
pub const DEFAULT_MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// Default size of the reserve file (`--reserve-bytes`): enough for RocksDB
/// to open, replay and flush on an otherwise full disk.
pub const DEFAULT_RESERVE_BYTES: u64 = 64 * 1024 * 1024;
/// Default period of the free-space check (`--disk-check-interval-ms`).
pub const DEFAULT_DISK_CHECK_INTERVAL_MS: u64 = 500;

/// The derived client connection cap never goes below this.
const MIN_CLIENT_CONNECTIONS: usize = 64;

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

/// One node's configuration.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
pub struct Config {
    /// This node's id (non-zero, unique in the cluster).
    #[arg(long, env = "BALLAST_NODE_ID", default_value_t = 1)]
    pub node_id: NodeId,
    /// Directory holding the node's RocksDB data and snapshots.
    #[arg(long, env = "BALLAST_DATA_DIR", default_value = "data/node1")]
    pub data_dir: PathBuf,
    /// Address the client HTTP API listens on.
    #[arg(long, env = "BALLAST_LISTEN_CLIENT", default_value = "127.0.0.1:2379")]
    pub listen_client: String,
    /// Address the peer (Raft) listener listens on.
    #[arg(long, env = "BALLAST_LISTEN_PEER", default_value = "127.0.0.1:2380")]
    pub listen_peer: String,
    /// A separate plain-HTTP listener for `/metrics`, `/health/live` and
    /// `/health/ready` only (scrapers and probes on a private network, no
    /// token, no TLS). The client port keeps serving them too.
    #[arg(long, env = "BALLAST_LISTEN_METRICS")]
    pub listen_metrics: Option<String>,
    /// The cluster to form on first start: `ID=CLIENT_ADDR/PEER_ADDR,...`, this node
    /// included; addresses are `host:port` (IP or DNS name). Ignored once the node
    /// has state. A node that joins a running cluster gives `--join` instead.
    #[arg(long, env = "BALLAST_INITIAL_CLUSTER")]
    pub initial_cluster: Option<String>,
    /// Join a running cluster as a new learner: client endpoints of its members
    /// (`http://host:port,...`). On first start the node learns the cluster id
    /// from them and asks the leader to add it; later starts only check that the
    /// cluster id still matches. Promote it with `ballastctl members promote`.
    #[arg(long, env = "BALLAST_JOIN", conflicts_with = "initial_cluster")]
    pub join: Option<String>,
    /// Client address other nodes and clients use to reach this node
    /// (`host:port`, a DNS name allowed). Defaults to `--listen-client`.
    #[arg(long, env = "BALLAST_ADVERTISE_CLIENT")]
    pub advertise_client: Option<String>,
    /// Peer address other nodes use to reach this node (`host:port`, a DNS
    /// name allowed). Defaults to `--listen-peer`.
    #[arg(long, env = "BALLAST_ADVERTISE_PEER")]
    pub advertise_peer: Option<String>,
    /// Mixed into the cluster id when a new cluster is formed, so that two
    /// clusters formed from the same member list still refuse each other's
    /// peers. Only read on a node's first start.
    #[arg(long, env = "BALLAST_CLUSTER_TOKEN", default_value = "ballast")]
    pub cluster_token: String,
    /// Dial these addresses instead of the peers' advertised peer addresses:
    /// `ID=ADDR,...`. For routing peer traffic through proxies (fault
    /// injection); the advertised addresses in the membership are unchanged.
    #[arg(long, env = "BALLAST_DIAL_OVERRIDES")]
    pub dial_overrides: Option<String>,
    /// Leader heartbeat interval, milliseconds.
    #[arg(long, env = "BALLAST_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Lower bound of the randomized election timeout, milliseconds.
    #[arg(long, env = "BALLAST_ELECTION_TIMEOUT_MIN_MS", default_value_t = 1000)]
    pub election_timeout_min_ms: u64,
    /// Upper bound of the randomized election timeout, milliseconds.
    #[arg(long, env = "BALLAST_ELECTION_TIMEOUT_MAX_MS", default_value_t = 2000)]
    pub election_timeout_max_ms: u64,
    /// Longest a client request may wait for Raft before it is answered with a
    /// `503 timeout`, milliseconds.
    #[arg(long, env = "BALLAST_REQUEST_TIMEOUT_MS", default_value_t = 5000)]
    pub request_timeout_ms: u64,
    /// Peer connect timeout, milliseconds.
    #[arg(long, env = "BALLAST_CONNECT_TIMEOUT_MS", default_value_t = 500)]
    pub connect_timeout_ms: u64,
    /// Build a snapshot (and purge the log before it) every this many entries.
    /// A snapshot copies the whole key space and its history, so it is kept
    /// rare (as etcd does).
    #[arg(long, env = "BALLAST_SNAPSHOT_LOGS", default_value_t = 100_000)]
    pub snapshot_logs: u64,
    /// Most bytes of writes the leader lets wait for their commit; beyond
    /// it new writes are answered `503 too_many_requests` (one write is
    /// always admitted, whatever its size). Bounds the leader's memory and
    /// how long a new write queues behind a burst.
    #[arg(long, env = "BALLAST_MAX_INFLIGHT_WRITE_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_inflight_write_bytes: usize,
    /// Storage quota of the key space, bytes on disk (RocksDB SST files
    /// plus memtables of the key, history and change-feed families; 0: no
    /// quota). At or beyond it the leader refuses writes that could add
    /// data with `507 quota_exceeded`; reads, watches, deletes and compaction
    /// keep working, and compaction gives the space back.
    #[arg(long, env = "BALLAST_QUOTA_BYTES", default_value_t = 0)]
    pub quota_bytes: u64,
    /// Free-space floor of the data directory's filesystem, bytes (0: not
    /// watched). Below it the node raises a replicated `nospace` alarm, and
    /// while the alarm is active every member refuses writes that could add
    /// data with `507 no_space`; reads, watches, deletes and compaction keep
    /// working. Measured every `disk-check-interval-ms` and before each write.
    #[arg(long, env = "BALLAST_MIN_FREE_BYTES", default_value_t = DEFAULT_MIN_FREE_BYTES)]
    pub min_free_bytes: u64,
    /// Size of the reserve file kept in the data directory, bytes (0: none).
    /// Deleted when the disk is nearly full (below half the floor, or below
    /// the floor at start) so the database can open and flush; written
    /// again once the disk has room for it above the floor.
    #[arg(long, env = "BALLAST_RESERVE_BYTES", default_value_t = DEFAULT_RESERVE_BYTES)]
    pub reserve_bytes: u64,
    /// Period of the free-space check, milliseconds.
    #[arg(long, env = "BALLAST_DISK_CHECK_INTERVAL_MS", default_value_t = DEFAULT_DISK_CHECK_INTERVAL_MS)]
    pub disk_check_interval_ms: u64,
    /// Deadline of one snapshot chunk (1 MiB) sent to a follower,
    /// milliseconds. The install after the last chunk has no deadline.
    #[arg(
        long,
        env = "BALLAST_SNAPSHOT_CHUNK_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub snapshot_chunk_timeout_ms: u64,
    /// History retention by count: keep at most this many revisions of
    /// history for past-revision reads and watches (0 = no count limit).
    #[arg(long, env = "BALLAST_HISTORY_REVISIONS", default_value_t = 100_000)]
    pub history_revisions: u64,
    /// History retention by age, seconds: compact history older than this
    /// (0 = no age limit). Whichever rule allows more compaction applies.
    #[arg(long, env = "BALLAST_HISTORY_AGE_SECS", default_value_t = 86_400)]
    pub history_age_secs: u64,
    /// Longest a client may take to send a request's headers, milliseconds;
    /// also how long an idle keep-alive connection stays open. A connection
    /// that sends half a header is closed after it.
    #[arg(long, env = "BALLAST_HEADER_READ_TIMEOUT_MS", default_value_t = 30_000)]
    pub header_read_timeout_ms: u64,
    /// Longest a client connection's writes may make no progress, ms: a
    /// client that keeps its connection open but stops reading (its socket
    /// does not drain) is disconnected after it, and what its response held
    /// (a streamed range read's buffered chunks) is released. Idle
    /// connections and idle watches send nothing, so this never cuts them.
    #[arg(
        long,
        env = "BALLAST_CLIENT_WRITE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub client_write_timeout_ms: u64,
    /// Most client connections open at once; beyond it new connections are
    /// closed at once, so a flood on the client port never takes the file
    /// descriptors peers and storage need. 0: three quarters of the process's
    /// open-file limit.
    #[arg(long, env = "BALLAST_MAX_CLIENT_CONNECTIONS", default_value_t = 0)]
    pub max_client_connections: usize,
    /// Longest request target (path and query) a client may send, bytes;
    /// beyond it `414 uri_too_long`. At least three times `--max-key-bytes`
    /// plus 1024, so every valid key fits percent-encoded.
    #[arg(long, env = "BALLAST_MAX_URI_BYTES", default_value_t = crate::api::limits::DEFAULT_MAX_URI_BYTES)]
    pub max_uri_bytes: usize,
    /// Most bytes of request header fields, all together; beyond it `431
    /// headers_too_large`.
    #[arg(long, env = "BALLAST_MAX_HEADER_BYTES", default_value_t = crate::api::limits::DEFAULT_MAX_HEADER_BYTES)]
    pub max_header_bytes: usize,
    /// Most requests each admin route (membership, leader transfer,
    /// snapshot, compaction) serves at once; beyond it `429
    /// too_many_admin_requests`.
    #[arg(long, env = "BALLAST_MAX_ADMIN_REQUESTS", default_value_t = crate::api::limits::DEFAULT_MAX_ADMIN_REQUESTS)]
    pub max_admin_requests: usize,
    /// Most watch streams open at once on this node (beyond: 429).
    #[arg(long, env = "BALLAST_MAX_WATCHERS", default_value_t = 20_000)]
    pub max_watchers: usize,
    /// Revisions kept encoded in memory for watchers; slower watchers read
    /// history from storage.
    #[arg(long, env = "BALLAST_WATCH_WINDOW", default_value_t = 4096)]
    pub watch_window: usize,
    /// Bytes of JSON per chunk of a streamed prefix read.
    #[arg(long, env = "BALLAST_RANGE_CHUNK_BYTES", default_value_t = 256 * 1024)]
    pub range_chunk_bytes: usize,
    /// Most bytes one prefix read may have encoded and not yet written to
    /// its client; then it waits for the client (backpressure).
    #[arg(long, env = "BALLAST_RANGE_RESPONSE_BUFFER_BYTES", default_value_t = 1024 * 1024)]
    pub range_response_buffer_bytes: usize,
    /// Most bytes all prefix reads of this node together may have encoded
    /// and not yet written; then they wait, and new ones get 429.
    #[arg(long, env = "BALLAST_RANGE_BUFFER_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub range_buffer_bytes: usize,
    /// Most prefix reads running at once on this node (each holds a storage
    /// snapshot and a blocking thread while it streams).
    #[arg(long, env = "BALLAST_MAX_RANGE_STREAMS", default_value_t = 64)]
    pub max_range_streams: usize,
    /// Longest a prefix read waits for a stream slot and buffer before it
    /// is answered 429, milliseconds.
    #[arg(long, env = "BALLAST_RANGE_QUEUE_TIMEOUT_MS", default_value_t = 5_000)]
    pub range_queue_timeout_ms: u64,
    /// Longest a streaming prefix read waits for its client to take the
    /// next chunk before it is cut off and its storage snapshot released,
    /// milliseconds.
    #[arg(long, env = "BALLAST_RANGE_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub range_idle_timeout_ms: u64,
    /// Most replica bootstraps (prefix reads asked with `bootstrap=true`)
    /// that scan or stream the prefix served at once (one answered from the
    /// snapshot buffer's unchanged copy, or waiting for another bootstrap's
    /// build of it, is not counted); beyond it
    /// `429 too_many_bootstraps`. 0 = unbounded.
    #[arg(long, env = "BALLAST_MAX_BOOTSTRAPS", default_value_t = 32)]
    pub max_bootstraps: usize,
    /// Nice value of the threads that serve data-plane connections (a
    /// `Replica`'s bootstrap, watch and reports), so that writes and
    /// linearizable reads run first when the CPU is contended: 1 to 19
    /// (lower priority as it grows); 0 serves them with everything else.
    /// The first node of a process sets it for the process.
    #[arg(long, env = "BALLAST_DATA_PLANE_NICE", default_value_t = 10,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub data_plane_nice: i32,
    /// Most watches replaying history from storage (a start revision older
    /// than the watch window) at once; beyond it `429 too_many_catchups`.
    /// 0 = unbounded.
    #[arg(long, env = "BALLAST_MAX_WATCH_CATCHUPS", default_value_t = 64)]
    pub max_watch_catchups: usize,
    /// Bytes of encoded prefixes kept to serve replica bootstraps (one scan
    /// serves every bootstrap of a prefix, until a change under it); least
    /// recently used first out. 0 = no buffer.
    #[arg(long, env = "BALLAST_BOOTSTRAP_BUFFER_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub bootstrap_buffer_bytes: usize,
    /// Largest encoded prefix the bootstrap buffer keeps; a larger one is
    /// streamed as a plain prefix read.
    #[arg(long, env = "BALLAST_BOOTSTRAP_BUFFER_ENTRY_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub bootstrap_buffer_entry_bytes: usize,
    /// Seconds a data-plane replica's report is remembered.
    #[arg(long, env = "BALLAST_REPLICA_REPORT_TTL_SECS", default_value_t = 60)]
    pub replica_report_ttl_secs: u64,
    /// Longest key, bytes.
    #[arg(long, env = "BALLAST_MAX_KEY_BYTES", default_value_t = DEFAULT_MAX_KEY_BYTES)]
    pub max_key_bytes: usize,
    /// Largest value, bytes.
    #[arg(long, env = "BALLAST_MAX_VALUE_BYTES", default_value_t = DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// Most compares, and most ops per branch, in a transaction.
    #[arg(long, env = "BALLAST_MAX_TXN_OPS", default_value_t = DEFAULT_MAX_TXN_OPS)]
    pub max_txn_ops: usize,
    /// Most clients with a session (exactly-once writes); registering one
    /// more evicts the least recently active. Set on the leader, which
    /// stamps it into the log: give every node the same value.
    #[arg(long, env = "BALLAST_SESSION_MAX_CLIENTS", default_value_t = DEFAULT_SESSION_MAX_CLIENTS)]
    pub session_max_clients: u64,
    /// Most remembered write results per client session.
    #[arg(long, env = "BALLAST_SESSION_MAX_RESULTS", default_value_t = DEFAULT_SESSION_MAX_RESULTS)]
    pub session_max_results: u64,
    /// Most bytes of remembered write results in the whole session table.
    #[arg(long, env = "BALLAST_SESSION_MAX_BYTES", default_value_t = DEFAULT_SESSION_MAX_BYTES)]
    pub session_max_bytes: u64,
    /// Milliseconds a client session may stay idle before it expires.
    #[arg(long, env = "BALLAST_SESSION_TTL_MS", default_value_t = DEFAULT_SESSION_TTL_MS)]
    pub session_ttl_ms: u64,
    /// Certificate chain (PEM) the client listener presents; with
    /// `--tls-key` the client API is served over TLS (HTTPS) only.
    #[arg(long, env = "BALLAST_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--tls-cert`.
    #[arg(long, env = "BALLAST_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates must chain to: when
    /// given, the client listener requires a client certificate (mutual
    /// TLS). Needs `--tls-cert`.
    #[arg(long, env = "BALLAST_TLS_CLIENT_CA", value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Certificate chain (PEM) this node presents to its peers, both when
    /// they dial it and when it dials them. With `--peer-tls-key` and
    /// `--peer-tls-ca` the peer port speaks mutual TLS only.
    #[arg(long, env = "BALLAST_PEER_TLS_CERT", value_name = "FILE")]
    pub peer_tls_cert: Option<PathBuf>,
    /// Private key (PEM) of `--peer-tls-cert`.
    #[arg(long, env = "BALLAST_PEER_TLS_KEY", value_name = "FILE")]
    pub peer_tls_key: Option<PathBuf>,
    /// The cluster CA (PEM): a peer's certificate must chain to it, in both
    /// directions. Also the CA a joining node trusts for `https://` join
    /// endpoints.
    #[arg(long, env = "BALLAST_PEER_TLS_CA", value_name = "FILE")]
    pub peer_tls_ca: Option<PathBuf>,
    /// How often the certificate, key and CA files are checked for changes
    /// (a changed file is loaded for new connections; SIGHUP reloads at
    /// once), milliseconds.
    #[arg(long, env = "BALLAST_TLS_RELOAD_INTERVAL_MS", default_value_t = 5_000)]
    pub tls_reload_interval_ms: u64,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "BALLAST_LOG_JSON")]
    pub log_json: bool,
    /// Turn bearer-token auth on for the cluster. Auth is replicated state:
    /// if it is off when this node starts, the node creates the initial
    /// admin token, writes it to `--auth-token-file` and turns auth on for
    /// every node through the log. Once on, it stays on, whatever flag any
    /// node starts with.
    #[arg(long, env = "BALLAST_AUTH")]
    pub auth: bool,
    /// Where a node that turns auth on writes the initial admin token (mode
    /// 0600). Default: `admin.token` in the data directory.
    #[arg(long, env = "BALLAST_AUTH_TOKEN_FILE")]
    pub auth_token_file: Option<PathBuf>,
    /// A file holding an admin token, which `--join` sends to a cluster with
    /// auth on (a file, so the token stays out of the process list and the
    /// environment). Read only when the node joins.
    #[arg(long, env = "BALLAST_JOIN_TOKEN_FILE")]
    pub join_token_file: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Only {
            #[command(flatten)]
            config: Config,
        }
        // Defaults live in one place: the clap attributes above.
        match Only::try_parse_from(["ballastd"]) {
            Ok(only) => only.config,
            Err(e) => unreachable!("defaults must parse: {e}"),
        }
    }
}

fn parse_addr(what: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse()
        .map_err(|e| invalid(format!("{what} {addr:?} is not an IP:port address: {e}")))
}

/// Checks a `host:port` address a peer dials: an IP address or a DNS name
/// (resolved on each connect), and a port. IPv6 literals go in brackets.
pub fn check_host_port(what: &str, addr: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| invalid(format!("{what} {addr:?} is not host:port: {why}"));
    let (host, port) = addr.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    port.parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port must be 1-65535"))?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| bad("not an IPv6 address in brackets"));
    }
    let dns_name = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if dns_name {
        Ok(())
    } else {
        Err(bad("the host must be an IP address or a DNS name"))
    }
}

/// Parses `--join`: client endpoints, `http://host:port`, `https://host:port`
/// or `host:port` (plain HTTP).
pub fn parse_join(s: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, hostport) = match part.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (scheme, rest),
            Some(_) => {
                return Err(invalid(format!(
                    "join endpoint {part:?} must be http://host:port or https://host:port"
                )))
            }
            None => ("http", part),
        };
        if hostport.contains('/') {
            return Err(invalid(format!(
                "join endpoint {part:?} must be http://host:port or https://host:port"
            )));
        }
        check_host_port("join endpoint", hostport)?;
        out.push(format!("{scheme}://{hostport}"));
    }
    if out.is_empty() {
        return Err(invalid("join names no endpoint"));
    }
    Ok(out)
}

/// Parses `ID=ADDR,...` (dial overrides).
pub fn parse_dial_overrides(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || invalid(format!("dial-overrides entry {part:?} is not ID=HOST:PORT"));
        let (id, addr) = part.split_once('=').ok_or_else(bad)?;
        let id: NodeId = id.trim().parse().map_err(|_| bad())?;
        check_host_port("dial override", addr)?;
        out.insert(id, addr.to_string());
    }
    Ok(out)
}

/// Parses `ID=CLIENT_ADDR/PEER_ADDR,...`.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, Member>, ConfigError> {
    let mut members = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || {
            invalid(format!(
                "initial-cluster entry {part:?} is not ID=CLIENT_ADDR/PEER_ADDR"
            ))
        };
        let (id, addrs) = part.split_once('=').ok_or_else(bad)?;
        let (client, peer) = addrs.split_once('/').ok_or_else(bad)?;
        let id: NodeId = id.trim().parse().map_err(|_| bad())?;
        if id == 0 {
            return Err(invalid("node ids must be non-zero"));
        }
        check_host_port("client address", client)?;
        check_host_port("peer address", peer)?;
        let member = Member {
            client_addr: client.to_string(),
            peer_addr: peer.to_string(),
        };
        if members.insert(id, member).is_some() {
            return Err(invalid(format!(
                "node {id} appears twice in initial-cluster"
            )));
        }
    }
    if members.is_empty() {
        return Err(invalid("initial-cluster is empty"));
    }
    Ok(members)
}

impl Config {
    /// Checks every value; the error names the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_id == 0 {
            return Err(invalid("node-id must be non-zero"));
        }
        if self.disk_check_interval_ms == 0 {
            return Err(invalid("disk-check-interval-ms must be at least 1"));
        }
        parse_addr("listen-client", &self.listen_client)?;
        parse_addr("listen-peer", &self.listen_peer)?;
        if self.listen_client == self.listen_peer {
            return Err(invalid("listen-client and listen-peer must differ"));
        }
        if let Some(metrics) = &self.listen_metrics {
            parse_addr("listen-metrics", metrics)?;
            if *metrics == self.listen_client || *metrics == self.listen_peer {
                return Err(invalid(
                    "listen-metrics must differ from listen-client and listen-peer",
                ));
            }
        }
        if let Some(cluster) = &self.initial_cluster {
            let members = parse_initial_cluster(cluster)?;
            if !members.contains_key(&self.node_id) {
                return Err(invalid(format!(
                    "initial-cluster does not include this node ({})",
                    self.node_id
                )));
            }
        }
        if self.initial_cluster.is_some() && self.join.is_some() {
            return Err(invalid(
                "give either initial-cluster (to form a new cluster) or join (to join a running one)",
            ));
        }
        if let Some(join) = &self.join {
            let endpoints = parse_join(join)?;
            if endpoints.iter().any(|e| e.starts_with("https://")) && self.peer_tls_ca.is_none() {
                return Err(invalid(
                    "https:// join endpoints need peer-tls-ca (the CA that signed the \
                     cluster's certificates)",
                ));
            }
        }
        self.validate_tls()?;
        if let Some(a) = &self.advertise_client {
            check_host_port("advertise-client", a)?;
        }
        if let Some(a) = &self.advertise_peer {
            check_host_port("advertise-peer", a)?;
        }
        if let Some(d) = &self.dial_overrides {
            parse_dial_overrides(d)?;
        }
        if self.heartbeat_ms == 0 {
            return Err(invalid("heartbeat-ms must be positive"));
        }
        if self.election_timeout_min_ms <= self.heartbeat_ms * 2 {
            return Err(invalid(
                "election-timeout-min-ms must be more than twice heartbeat-ms",
            ));
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return Err(invalid(
                "election-timeout-max-ms must be above election-timeout-min-ms",
            ));
        }
        if self.request_timeout_ms == 0 || self.connect_timeout_ms == 0 {
            return Err(invalid(
                "request-timeout-ms and connect-timeout-ms must be positive",
            ));
        }
        if self.replica_report_ttl_secs == 0 {
            return Err(invalid("replica-report-ttl-secs must be positive"));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(invalid("header-read-timeout-ms must be positive"));
        }
        if self.client_write_timeout_ms == 0 {
            return Err(invalid("client-write-timeout-ms must be positive"));
        }
        let min_uri = self.max_key_bytes.saturating_mul(3).saturating_add(1024);
        if self.max_uri_bytes < min_uri {
            return Err(invalid(format!(
                "max-uri-bytes must be at least three times max-key-bytes plus 1024 ({min_uri}), \
                 so every valid key fits percent-encoded"
            )));
        }
        if self.max_header_bytes < 1024 {
            return Err(invalid("max-header-bytes must be at least 1024"));
        }
        if self.max_admin_requests == 0 {
            return Err(invalid("max-admin-requests must be positive"));
        }
        if self.max_watchers == 0 || self.watch_window == 0 {
            return Err(invalid("max-watchers and watch-window must be positive"));
        }
        if self.range_chunk_bytes == 0
            || self.max_range_streams == 0
            || self.range_idle_timeout_ms == 0
        {
            return Err(invalid(
                "range-chunk-bytes, max-range-streams and range-idle-timeout-ms must be positive",
            ));
        }
        if self.range_response_buffer_bytes < self.range_chunk_bytes
            || self.range_buffer_bytes < self.range_response_buffer_bytes
        {
            return Err(invalid(
                "need range-chunk-bytes <= range-response-buffer-bytes <= range-buffer-bytes",
            ));
        }
        if self.max_inflight_write_bytes == 0 {
            return Err(invalid("max-inflight-write-bytes must be positive"));
        }
        if self.snapshot_chunk_timeout_ms == 0 {
            return Err(invalid("snapshot-chunk-timeout-ms must be positive"));
        }
        if self.snapshot_logs == 0 {
            return Err(invalid("snapshot-logs must be positive"));
        }
        if self.max_key_bytes == 0 || self.max_txn_ops == 0 || self.max_value_bytes == 0 {
            return Err(invalid(
                "max-key-bytes, max-value-bytes and max-txn-ops must be positive",
            ));
        }
        // Peer frames and snapshot records are sized from this limit; a
        // config store's values are small, so it has a ceiling.
        if self.max_value_bytes > MAX_VALUE_BYTES_CEILING {
            return Err(invalid(format!(
                "max-value-bytes must be at most {MAX_VALUE_BYTES_CEILING} bytes"
            )));
        }
        if self.session_max_clients == 0
            || self.session_max_results == 0
            || self.session_max_bytes == 0
            || self.session_ttl_ms == 0
        {
            return Err(invalid(
                "session-max-clients, session-max-results, session-max-bytes and \
                 session-ttl-ms must be positive",
            ));
        }
        Ok(())
    }

    /// Certificate, key and CA flags come in working sets.
    fn validate_tls(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => return Err(invalid("tls-cert needs tls-key")),
            (None, Some(_)) => return Err(invalid("tls-key needs tls-cert")),
            _ => {}
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(invalid(
                "tls-client-ca (require client certificates) needs tls-cert and tls-key",
            ));
        }
        let peer = [
            self.peer_tls_cert.is_some(),
            self.peer_tls_key.is_some(),
            self.peer_tls_ca.is_some(),
        ];
        if peer.contains(&true) && peer.contains(&false) {
            return Err(invalid(
                "peer TLS is mutual: give peer-tls-cert, peer-tls-key and peer-tls-ca together",
            ));
        }
        if self.tls_reload_interval_ms == 0 {
            return Err(invalid("tls-reload-interval-ms must be positive"));
        }
        for (flag, path) in [
            ("tls-cert", &self.tls_cert),
            ("tls-key", &self.tls_key),
            ("tls-client-ca", &self.tls_client_ca),
            ("peer-tls-cert", &self.peer_tls_cert),
            ("peer-tls-key", &self.peer_tls_key),
            ("peer-tls-ca", &self.peer_tls_ca),
        ] {
            if let Some(path) = path {
                if !path.is_file() {
                    return Err(invalid(format!(
                        "{flag} {} is not a readable file",
                        path.display()
                    )));
                }
            }
        }
        Ok(())
    }

    /// The initial cluster, if configured.
    pub fn initial_members(&self) -> Result<Option<BTreeMap<NodeId, Member>>, ConfigError> {
        self.initial_cluster
            .as_deref()
            .map(parse_initial_cluster)
            .transpose()
    }

    /// The join endpoints, if configured (validated by [`Config::validate`]).
    pub fn join_endpoints(&self) -> Result<Option<Vec<String>>, ConfigError> {
        self.join.as_deref().map(parse_join).transpose()
    }

    /// How this node appears in the membership: its advertised addresses.
    pub fn advertised_member(&self) -> Member {
        Member {
            client_addr: self
                .advertise_client
                .clone()
                .unwrap_or_else(|| self.listen_client.clone()),
            peer_addr: self
                .advertise_peer
                .clone()
                .unwrap_or_else(|| self.listen_peer.clone()),
        }
    }

    /// Dial overrides, if configured (validated by [`Config::validate`]).
    pub fn dial_override_map(&self) -> Result<BTreeMap<NodeId, String>, ConfigError> {
        self.dial_overrides
            .as_deref()
            .map(parse_dial_overrides)
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// History retention.
    pub fn retention(&self) -> crate::kv::compactor::Retention {
        crate::kv::compactor::Retention {
            revisions: self.history_revisions,
            age: Duration::from_secs(self.history_age_secs),
            // At most one compaction per tenth of the count window (or per
            // 1,000 revisions when only age applies).
            min_step: if self.history_revisions > 0 {
                (self.history_revisions / 10).max(1)
            } else {
                1000
            },
        }
    }

    /// Watch limits.
    pub fn watch_options(&self) -> crate::watch::WatchOptions {
        crate::watch::WatchOptions {
            max_watchers: self.max_watchers,
            window_revisions: self.watch_window,
            ..crate::watch::WatchOptions::default()
        }
    }

    /// Limits of streamed prefix reads.
    pub fn range_options(&self) -> crate::api::RangeOptions {
        crate::api::RangeOptions {
            chunk_bytes: self.range_chunk_bytes,
            response_buffer_bytes: self.range_response_buffer_bytes,
            node_buffer_bytes: self.range_buffer_bytes,
            max_streams: self.max_range_streams,
            queue_timeout: Duration::from_millis(self.range_queue_timeout_ms),
            idle_timeout: Duration::from_millis(self.range_idle_timeout_ms),
        }
    }

    /// Bounds of the admission control of bootstraps and watch catch-ups.
    pub fn admission_options(&self) -> crate::api::AdmissionOptions {
        crate::api::AdmissionOptions {
            max_bootstraps: self.max_bootstraps,
            max_catchups: self.max_watch_catchups,
        }
    }

    /// Bounds of the bootstrap snapshot buffer.
    pub fn buffer_options(&self) -> crate::api::BufferOptions {
        crate::api::BufferOptions {
            max_bytes: self.bootstrap_buffer_bytes,
            max_entry_bytes: self.bootstrap_buffer_entry_bytes,
        }
    }

    /// Input limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_key_bytes: self.max_key_bytes,
            max_value_bytes: self.max_value_bytes,
            max_txn_ops: self.max_txn_ops,
        }
    }

    /// The admin token `--join` sends, read from `--join-token-file`.
    pub fn join_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.join_token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(invalid(format!(
                "--join-token-file {} is empty",
                path.display()
            )));
        }
        Ok(Some(token.to_owned()))
    }

    /// Where this node writes the initial admin token if it turns auth on.
    pub fn auth_token_path(&self) -> PathBuf {
        self.auth_token_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(DEFAULT_AUTH_TOKEN_FILE))
    }

    /// How the node guards the free space of its data directory.
    pub fn space_options(&self) -> crate::storage::space::SpaceOptions {
        crate::storage::space::SpaceOptions {
            min_free_bytes: self.min_free_bytes,
            reserve_bytes: self.reserve_bytes,
            check_interval: Duration::from_millis(self.disk_check_interval_ms),
        }
    }

    /// The bounds of the client session table.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_clients: self.session_max_clients,
            max_results: self.session_max_results,
            max_bytes: self.session_max_bytes,
            ttl_ms: self.session_ttl_ms,
        }
    }

    /// Request limits of the client API.
    pub(crate) fn request_limits(&self) -> crate::api::RequestLimits {
        crate::api::RequestLimits {
            max_uri_bytes: self.max_uri_bytes,
            max_header_bytes: self.max_header_bytes,
            max_admin_requests: self.max_admin_requests,
        }
    }

    /// The client connection cap: `--max-client-connections`, or three
    /// quarters of `open_files` (the process's open-file limit) when it is 0.
    pub fn client_connection_cap(&self, open_files: u64) -> usize {
        if self.max_client_connections > 0 {
            return self.max_client_connections;
        }
        usize::try_from(open_files / 4 * 3)
            .unwrap_or(usize::MAX)
            .max(MIN_CLIENT_CONNECTIONS)
    }

    /// Request timeout.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// Peer connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
}

/// Expands `--config FILE` into flags placed before the real command line, so
/// that flags given on the command line win (the command must be built with
/// `args_override_self`). Returns the arguments unchanged without `--config`.
pub fn expand_config_file(args: Vec<OsString>) -> Result<Vec<OsString>, ConfigError> {
    let mut path = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy().to_string();
        if text == "--config" {
            path = iter.next().map(|p| p.to_string_lossy().to_string());
            if path.is_none() {
                return Err(invalid("--config needs a file path"));
            }
        } else if let Some(p) = text.strip_prefix("--config=") {
            path = Some(p.to_string());
        } else {
            rest.push(arg);
        }
    }
    let Some(path) = path else { return Ok(rest) };
    let file_err = |message: String| ConfigError::File {
        path: path.clone(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| file_err(e.to_string()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
    let mut expanded: Vec<OsString> = rest.first().cloned().into_iter().collect();
    for (key, value) in table {
        let flag = format!("--{key}");
        match value {
            toml::Value::Boolean(true) => expanded.push(flag.into()),
            toml::Value::Boolean(false) => {}
            toml::Value::String(s) => expanded.push(format!("{flag}={s}").into()),
            toml::Value::Integer(i) => expanded.push(format!("{flag}={i}").into()),
            other => {
                return Err(file_err(format!(
                    "key {key:?} has an unsupported value {other}"
                )))
            }
        }
    }
    expanded.extend(rest.into_iter().skip(1));
    Ok(expanded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn the_probe_listener_needs_its_own_address() {
        let mut c = Config {
            listen_metrics: Some("127.0.0.1:2381".into()),
            ..Config::default()
        };
        c.validate().expect("a third address is fine");
        for bad in ["127.0.0.1:2379", "127.0.0.1:2380", "nope"] {
            c.listen_metrics = Some(bad.into());
            let e = c.validate().expect_err(bad).to_string();
            assert!(e.contains("listen-metrics"), "{bad}: {e}");
        }
    }

    #[test]
    fn initial_cluster_parses_and_rejects_garbage() {
        let m = parse_initial_cluster("1=127.0.0.1:1/127.0.0.1:2, 2=127.0.0.1:3/127.0.0.1:4")
            .expect("parses");
        assert_eq!(m.len(), 2);
        assert_eq!(m[&2].peer_addr, "127.0.0.1:4");
        for bad in [
            "",
            "1",
            "1=a/b",
            "0=127.0.0.1:1/127.0.0.1:2",
            "x=127.0.0.1:1/127.0.0.1:2",
            "1=127.0.0.1:1",
            "1=host_x:1/h:2",
            "1=h:0/h:2",
            "1=:1/h:2",
        ] {
            assert!(
                parse_initial_cluster(bad).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(
            parse_initial_cluster("1=127.0.0.1:1/127.0.0.1:2,1=127.0.0.1:3/127.0.0.1:4").is_err()
        );
    }

    #[test]
    fn the_connection_cap_leaves_a_quarter_of_the_files() {
        let mut c = Config::default();
        assert_eq!(c.client_connection_cap(20_000), 15_000);
        assert_eq!(c.client_connection_cap(10), MIN_CLIENT_CONNECTIONS);
        c.max_client_connections = 7;
        assert_eq!(c.client_connection_cap(20_000), 7);
    }

    #[test]
    fn addresses_may_be_dns_names() {
        let m = parse_initial_cluster(
            "1=ballast-0.ballast:2379/ballast-0.ballast:2380,2=[::1]:1/10.0.0.2:2",
        )
        .expect("parses");
        assert_eq!(m[&1].peer_addr, "ballast-0.ballast:2380");
        for bad in ["a..b:1", "-a:1", "a:99999", "[zz]:1", "a b:1"] {
            assert!(
                check_host_port("x", bad).is_err(),
                "{bad:?} must be refused"
            );
        }
        assert_eq!(
            parse_join("http://a:1, b.c:2").expect("parses"),
            vec!["http://a:1".to_string(), "http://b.c:2".to_string()]
        );
        assert_eq!(
            parse_join("https://a:1").expect("parses"),
            vec!["https://a:1".to_string()]
        );
        assert!(parse_join("ftp://a:1").is_err());
        assert!(parse_join("http://a:1/x").is_err());
        assert!(parse_join(" , ").is_err());
    }

    #[test]
    fn dial_overrides_parse() {
        let m = parse_dial_overrides("2=127.0.0.1:9000, 3=127.0.0.1:9001").expect("parses");
        assert_eq!(m[&3], "127.0.0.1:9001");
        assert!(parse_dial_overrides("2=nowhere").is_err());
        assert_eq!(
            parse_dial_overrides("2=node-2.ballast.svc:2380").expect("dns")[&2],
            "node-2.ballast.svc:2380"
        );
        assert!(parse_dial_overrides("x=127.0.0.1:1").is_err());
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = Config {
            initial_cluster: Some("2=127.0.0.1:1/127.0.0.1:2".into()),
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("does not include this node"));
        c.initial_cluster = None;
        c.election_timeout_max_ms = c.election_timeout_min_ms;
        assert!(c.validate().is_err());
        c = Config {
            listen_client: "nope".into(),
            ..Config::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("listen-client"));
    }

    #[test]
    fn config_file_values_come_before_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "node-id = 3\ndata-dir = \"/x\"\nlog-json = true\n").expect("write");
        let args: Vec<OsString> = [
            "ballastd",
            "--config",
            path.to_str().expect("utf8"),
            "--node-id",
            "4",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let out: Vec<String> = expand_config_file(args)
            .expect("expands")
            .iter()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert_eq!(out[0], "ballastd");
        let file_pos = out
            .iter()
            .position(|a| a == "--node-id=3")
            .expect("file value");
        let flag_pos = out.iter().position(|a| a == "--node-id").expect("flag");
        assert!(file_pos < flag_pos);
        assert!(out.contains(&"--log-json".to_string()));
    }
}
