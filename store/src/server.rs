//! Starting and stopping a node: storage, Raft, the peer listener and the
//! client HTTP API.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rocksdb::DB;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, ConfigError};
use crate::db;
use crate::kv::compactor;
use crate::kv::KvReader;
use crate::metrics::Metrics;
use crate::raft::identity;
use crate::raft::inbox::SnapshotInbox;
use crate::raft::join;
use crate::raft::network::{NetFault, PeerNetwork};
use crate::raft::node::{Node, NodeOptions};
use crate::raft::peer;
use crate::raft::retention;
use crate::raft::types::{Member, Raft};
use crate::raft::wire::{FrameCaps, PeerIdentity};
use crate::stop::stopped;
use crate::storage::backup::BackupSource;
use crate::storage::log_store::LogFlusher;
use crate::storage::{LogStore, StateMachine};
use crate::watch::WatchHub;

/// Why a node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage could not be opened.
    #[error("storage: {0}")]
    Storage(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Raft failed to start or initialize.
    #[error("raft: {0}")]
    Raft(String),
    /// Shutdown could not confirm that the node's log is on disk.
    #[error("shutdown incomplete: {0}")]
    Shutdown(String),
    /// This data directory may not be used as configured.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// The cluster named by `--join` did not add this node.
    #[error(transparent)]
    Join(#[from] join::JoinError),
    /// A certificate, key or CA file could not be used.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

mod auth_bootstrap;
mod data_plane;
mod h2c;
mod shutdown;
mod supervise;
mod write_timeout;

pub use auth_bootstrap::write_token_file;

pub use shutdown::ShutdownReport;
pub use supervise::keep_running;

/// Pre-bound listeners (tests bind `127.0.0.1:0` first to learn the ports).
pub struct Listeners {
    /// Client HTTP API listener.
    pub client: TcpListener,
    /// Peer listener.
    pub peer: TcpListener,
}

impl Listeners {
    /// Binds both listeners of `config`.
    pub async fn bind(config: &Config) -> Result<Listeners, ServerError> {
        let bind = |addr: String| async move {
            TcpListener::bind(&addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        Ok(Listeners {
            client: bind(config.listen_client.clone()).await?,
            peer: bind(config.listen_peer.clone()).await?,
        })
    }
}

/// A started node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    /// The node's request paths.
    pub node: Arc<Node>,
    /// Where the client API listens.
    pub client_addr: SocketAddr,
    /// Where the peer listener listens.
    pub peer_addr: SocketAddr,
    /// Where the probe listener (`--listen-metrics`) listens, when set.
    pub metrics_addr: Option<SocketAddr>,
    /// The node's watch hub (above Raft, so not owned by the node).
    pub(crate) hub: Arc<WatchHub>,
    /// The admission control of bootstraps and watch catch-ups (tests take
    /// its permits to fill the node's bounds deterministically).
    pub admission: Arc<crate::api::Admission>,
    /// The limits of streamed range reads (tests look at the bytes they
    /// hold).
    pub ranges: Arc<crate::api::RangeLimiter>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// Kept so that shutdown closes the database itself, once every other
    /// holder is gone, rather than whichever thread drops the last handle.
    db: Arc<DB>,
    /// The Raft log's flusher thread, which must stop before the database
    /// closes.
    log_flusher: LogFlusher,
}

impl RunningNode {
    /// Stops serving, shuts Raft down, waits for the log flusher and every
    /// other holder of the database, syncs the WAL and closes the database,
    /// all within a few seconds (see `server/shutdown.rs`). When it reports
    /// [`ShutdownReport::clean`], the data directory can be reopened at once.
    pub async fn shutdown(self) -> ShutdownReport {
        shutdown::stop(shutdown::Parts {
            node: self.node,
            hub: self.hub,
            stop: self.stop,
            tasks: self.tasks,
            db: self.db,
            flusher: self.log_flusher,
        })
        .await
    }
}

/// Most entries in one AppendEntries message; the byte budget
/// (`raft::wire::APPEND_BATCH_BYTES`) usually ends a message first.
const MAX_PAYLOAD_ENTRIES: u64 = 1024;

fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, ServerError> {
    let raft = openraft::Config {
        cluster_name: "ballast".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_logs),
        // The deadline of each snapshot chunk; the install after the last one
        // runs without it (see raft::network).
        install_snapshot_timeout: config.snapshot_chunk_timeout_ms,
        // AppendEntries are sized by bytes (storage::log_store); the entry
        // count is only a backstop.
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        max_in_snapshot_log_to_keep: config.snapshot_logs.min(1000),
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    Ok(Arc::new(
        raft.validate()
            .map_err(|e| ServerError::Raft(e.to_string()))?,
    ))
}

/// Starts a node: opens its data directory, starts Raft, the peer listener and
/// the client API, and forms the initial cluster on a first start.
pub async fn start(
    config: Config,
    listeners: Option<Listeners>,
) -> Result<RunningNode, ServerError> {
    config.validate()?;
    let listeners = match listeners {
        Some(l) => l,
        None => Listeners::bind(&config).await?,
    };
    let client_addr = listeners
        .client
        .local_addr()
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let peer_addr = listeners
        .peer
        .local_addr()
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    std::fs::create_dir_all(&config.data_dir).map_err(|e| ServerError::Storage(e.to_string()))?;
    // Before RocksDB opens: on a full disk this deletes the reserve file,
    // which gives the database room to open and replay its log.
    let space = if config.min_free_bytes > 0 || config.reserve_bytes > 0 {
        Some(Arc::new(
            crate::storage::space::DiskSpace::at_start(&config.data_dir, config.space_options())
                .map_err(|e| {
                    ServerError::Storage(format!("free space of the data directory: {e}"))
                })?,
        ))
    } else {
        None
    };

    let database = db::open_with_wal_cap(
        &config.data_dir.join("db"),
        db::wal_cap_for_reserve(config.reserve_bytes),
    )
    .map_err(|e| ServerError::Storage(e.to_string()))?;
    let metrics = Arc::new(Metrics::default());
    let log_store = LogStore::with_metrics(database.clone(), metrics.clone())
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let log_flusher = log_store.flusher();
    let snapshot_dir = config.data_dir.join("snapshots");
    let state_machine = StateMachine::open(database.clone(), snapshot_dir.clone())
        .map_err(|e| ServerError::Storage(e.to_string()))?
        .with_metrics(metrics.clone())
        .with_space(space.clone());
    let applied = state_machine.subscribe();
    let auth = state_machine.auth();
    let alarms = state_machine.alarms();
    let install_gate = state_machine.install_gate();
    let fault = NetFault::default();
    let dial = std::sync::Arc::new(config.dial_override_map()?);
    let caps = FrameCaps::for_limits(&config.limits());
    let members = config.initial_members()?;
    let join = config.join_endpoints()?;
    let join_token = match &join {
        Some(_) => config.join_token()?,
        None => None,
    };
    let advertised = config.advertised_member();
    let tls = TlsSetup::from_config(&config)?;
    let join_tls = join::JoinTls::from_config(&config)?;
    let discovered = match &join {
        Some(endpoints) => Some(
            join::discover(
                endpoints,
                config.request_timeout(),
                &join_tls,
                join_token.as_deref(),
            )
            .await,
        ),
        None => None,
    };
    // Whether this data directory holds no Raft state yet (read before the
    // identity is stored, which lives next to the Raft metadata).
    let fresh = !crate::storage::identity::has_raft_state(&database)
        .map_err(|e| ServerError::Storage(e.to_string()))?;
    let identity = identity::resolve(
        &database,
        identity::Bootstrap {
            node_id: config.node_id,
            members: members.as_ref(),
            token: &config.cluster_token,
            dial: &dial,
            probe_timeout: config.connect_timeout(),
            caps,
            tls: &tls.peer,
            join: discovered.as_ref(),
            advertised: &advertised,
        },
    )
    .await?;
    let me = PeerIdentity {
        cluster_id: identity.cluster_id,
        node_id: identity.node_id,
    };
    if let Some(endpoints) = &join {
        // A joining node with no Raft state asks to be added before it
        // answers any peer: the leader must know first that this node's log
        // starts empty (a wiped learner's log is shorter than the leader
        // remembers). (A removed node has Raft state: it is never fresh.)
        if fresh {
            let deadline = tokio::time::Instant::now() + config.request_timeout() * 6;
            join::request_learner(
                endpoints,
                config.node_id,
                &advertised,
                config.request_timeout(),
                deadline,
                &join_tls,
                join_token.as_deref(),
            )
            .await?;
            tracing::info!(node = config.node_id, "added to the cluster as a learner");
        }
    }
    let network = PeerNetwork::new(
        fault.clone(),
        config.connect_timeout(),
        dial.clone(),
        caps,
        me,
        config.request_timeout(),
        tls.peer.clone(),
    );
    let raft = Raft::new(
        config.node_id,
        raft_config(&config)?,
        network,
        log_store,
        state_machine,
    )
    .await
    .map_err(|e| ServerError::Raft(e.to_string()))?;

    let backups = BackupSource::new(
        database.clone(),
        install_gate.clone(),
        config.data_dir.join("backup"),
    );
    let reader = KvReader::new(database.clone()).with_gate(install_gate);
    let hub = WatchHub::new(
        reader.clone(),
        *applied.borrow(),
        config.watch_options(),
        metrics.clone(),
    );
    let node = Node::new(
        config.node_id,
        raft.clone(),
        reader,
        applied.clone(),
        fault,
        NodeOptions {
            request_timeout: config.request_timeout(),
            connect_timeout: config.connect_timeout(),
            limits: config.limits(),
            dial,
            replica_ttl: std::time::Duration::from_secs(config.replica_report_ttl_secs),
            identity: me,
            peer_tls: tls.peer.clone(),
            max_inflight_write_bytes: config.max_inflight_write_bytes,
            election_timeout_max: std::time::Duration::from_millis(config.election_timeout_max_ms),
            backups,
            sessions: config.session_limits(),
            auth,
            quota_bytes: config.quota_bytes,
            alarms,
            space: space.clone(),
        },
        metrics.clone(),
    );
    if let Some(reason) = crate::storage::identity::load_removed(&database)
        .map_err(|e| ServerError::Storage(e.to_string()))?
    {
        node.mark_removed(reason);
    }

    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(5);
    tasks.push(tokio::spawn(peer::serve(
        listeners.peer,
        node.clone(),
        Arc::new(SnapshotInbox::new(snapshot_dir)),
        caps,
        tls.peer.clone(),
        stop_rx.clone(),
    )));
    let reloadables = tls.reloadables();
    if !reloadables.is_empty() {
        tasks.push(tokio::spawn(crate::tls::run_reloader(
            reloadables,
            std::time::Duration::from_millis(config.tls_reload_interval_ms),
            crate::tls::hangup_signal(),
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(crate::watch::run_feeder(
        hub.clone(),
        applied.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(compactor::run_physical(
        database.clone(),
        applied,
        metrics,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(retention::run_retention(
        node.clone(),
        config.retention(),
        stop_rx.clone(),
    )));
    if let Some(space) = space {
        node.metrics()
            .disk_min_free_bytes
            .set(i64::try_from(config.min_free_bytes).unwrap_or(i64::MAX));
        tasks.push(tokio::spawn(crate::raft::alarm::run_space_monitor(
            node.clone(),
            space,
            stop_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(identity::run_recorder(
        node.clone(),
        database.clone(),
        stop_rx.clone(),
    )));
    if config.auth {
        tasks.push(tokio::spawn(auth_bootstrap::run(
            node.clone(),
            config.auth_token_path(),
            stop_rx.clone(),
        )));
    }
    let ranges = Arc::new(crate::api::RangeLimiter::new(config.range_options()));
    // Bookmarks vouch for freshness only while in contact with a leader.
    // Weak: the hub must not keep the node alive past shutdown.
    let weak = Arc::downgrade(&node);
    hub.set_freshness(Box::new(move || {
        weak.upgrade()
            .is_some_and(|node| node.in_contact_with_leader())
    }));
    let admission = Arc::new(crate::api::Admission::new(
        config.admission_options(),
        hub.shared_metrics(),
    ));
    let buffer = Arc::new(crate::api::SnapshotBuffer::new(
        config.buffer_options(),
        hub.clone(),
    ));
    let request_limits = config.request_limits();
    let mut app = crate::api::router_with_limits(
        node.clone(),
        hub.clone(),
        ranges.clone(),
        admission.clone(),
        buffer,
        request_limits,
    );
    if tls.client.is_some() {
        app = app.layer(axum::middleware::map_response(https_leader_hint));
    }
    let limits = HttpLimits {
        head_buffer_bytes: request_limits.head_buffer_bytes(),
        header_read_timeout: std::time::Duration::from_millis(config.header_read_timeout_ms),
        write_timeout: std::time::Duration::from_millis(config.client_write_timeout_ms),
        max_connections: config.client_connection_cap(open_file_limit()),
        tls: tls.client.clone(),
        data_plane: data_plane::handle(config.data_plane_nice).map(|handle| {
            if let Some(running) = data_plane::nice().filter(|n| *n != config.data_plane_nice) {
                tracing::warn!(
                    running,
                    asked = config.data_plane_nice,
                    "this process's data-plane threads already run at another nice value; keeping it"
                );
            }
            DataPlane {
                handle,
                metrics: hub.shared_metrics(),
            }
        }),
    };
    tasks.push(tokio::spawn(serve_http(
        listeners.client,
        app,
        limits,
        stop_rx.clone(),
    )));
    let metrics_addr = match &config.listen_metrics {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: addr.clone(),
                    source,
                })?;
            let bound = listener.local_addr().ok();
            let probe_limits = HttpLimits {
                head_buffer_bytes: request_limits.head_buffer_bytes(),
                header_read_timeout: std::time::Duration::from_millis(
                    config.header_read_timeout_ms,
                ),
                write_timeout: std::time::Duration::from_millis(config.client_write_timeout_ms),
                max_connections: PROBE_CONNECTIONS,
                tls: None,
                data_plane: None,
            };
            tasks.push(tokio::spawn(serve_http(
                listener,
                crate::api::probe_router(node.clone()),
                probe_limits,
                stop_rx.clone(),
            )));
            bound
        }
        None => None,
    };

    if let Some(members) = members {
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| ServerError::Raft(e.to_string()))?;
        if !initialized {
            tracing::info!(
                node = config.node_id,
                members = members.len(),
                "forming the initial cluster"
            );
            let members: std::collections::BTreeMap<u64, Member> = members;
            if let Err(e) = raft.initialize(members).await {
                // Another member may have initialized first; that is fine.
                tracing::info!(error = %e, "initialize skipped");
            }
        }
    }
    tracing::info!(
        node = config.node_id,
        %client_addr,
        %peer_addr,
        client_tls = tls.client.is_some(),
        peer_tls = tls.peer.enabled(),
        "node started"
    );
    Ok(RunningNode {
        node,
        hub,
        admission,
        ranges,
        client_addr,
        peer_addr,
        metrics_addr,
        stop,
        tasks,
        db: database,
        log_flusher,
    })
}

/// Serves the client API over HTTP/1.1 (and HTTP/2 with prior knowledge on
/// plain TCP) until `stop`, then shuts down gracefully (idle keep-alive
/// connections at once, requests in flight within the drain grace) and
/// closes whatever is left: no connection, and so no handle on the node and
/// its database, outlives this task.
///
/// Each connection is served by hyper's HTTP/1.1 or HTTP/2 server alone,
/// chosen by its first bytes, rather than by axum's auto-detecting HTTP/1+2
/// server: watch streams hold a connection each, and the auto server's
/// per-connection state measurably raised memory per watcher.
///
/// Hostile clients are bounded: a connection that does not send its headers
/// within the header read timeout (or sits idle between requests that long)
/// is closed, and beyond `max_connections` a new connection is closed at
/// once, so the file descriptors that peers and storage need are never taken
/// by the client port. A connection whose writes make no progress for the
/// write timeout (a client that stopped reading) is closed, releasing what
/// its response holds (see `server/write_timeout.rs`).
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.head_buffer_bytes);
    // The HTTP/1.1 and HTTP/2 servers, shared by the connection tasks.
    let builders = Arc::new((http1, h2c::builder(limits.head_buffer_bytes)));
    let first_bytes_within = limits.header_read_timeout;
    let mut conns = tokio::task::JoinSet::new();
    let mut refused_since_log = 0u64;
    let mut last_refusal_log: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stopped(&mut stop) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "client accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if conns.len() >= limits.max_connections {
                    // Closed at once: the cap keeps descriptors for peers.
                    drop(stream);
                    refused_since_log += 1;
                    if last_refusal_log.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                        tracing::warn!(
                            open = conns.len(),
                            refused = refused_since_log,
                            "client connection cap reached; closing new connections"
                        );
                        refused_since_log = 0;
                        last_refusal_log = Some(std::time::Instant::now());
                    }
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let write_timeout = limits.write_timeout;
                let Some(tls) = &limits.tls else {
                    // Plain TCP: HTTP/1.1, or HTTP/2 for a client that opens
                    // with its preface (see `server/h2c.rs`). The first bytes
                    // are awaited in the connection's task, within the header
                    // read timeout.
                    let watcher = graceful.watcher();
                    let builders = builders.clone();
                    let data_plane = limits.data_plane.clone();
                    conns.spawn(async move {
                        // Boxed: the wait is over once the connection is
                        // served, so it takes no room in the task after.
                        let sniff = Box::pin(first_step(
                            "the first bytes",
                            first_bytes_within,
                            h2c::opens_with_preface(&stream),
                        ));
                        let Some(h2) = sniff.await else { return };
                        let data_plane = match data_plane {
                            Some(dp) if !h2 && data_plane::opens_with_data_plane_request(&stream).await => Some(dp),
                            _ => None,
                        };
                        let ended = if h2 {
                            // The HTTP/2 connection is boxed, so an HTTP/1.1
                            // connection's task (an idle watch stream) holds
                            // no room for it.
                            let stream = write_timeout::WriteTimeout::new(stream, write_timeout);
                            let conn = builders.1.serve_connection(TokioIo::new(stream), service);
                            Box::pin(watcher.watch(conn)).await.map_err(|e| e.to_string())
                        } else if let Some(dp) = data_plane {
                            // A replica's connection: served on the data
                            // plane's threads (see `server/data_plane.rs`),
                            // for as long as this task (which the shutdown
                            // ends) waits for it.
                            dp.metrics.data_plane_connections.inc();
                            let Ok(stream) = stream.into_std() else { return };
                            let task = dp.handle.spawn(async move {
                                let stream = tokio::net::TcpStream::from_std(stream)?;
                                let stream = write_timeout::WriteTimeout::new(stream, write_timeout);
                                let conn = builders.0.serve_connection(TokioIo::new(stream), service);
                                watcher.watch(conn).await.map_err(std::io::Error::other)
                            });
                            match tokio_util::task::AbortOnDropHandle::new(task).await {
                                Ok(ended) => ended.map_err(|e| e.to_string()),
                                Err(e) => Err(e.to_string()),
                            }
                        } else {
                            let stream = write_timeout::WriteTimeout::new(stream, write_timeout);
                            let conn = builders.0.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await.map_err(|e| e.to_string())
                        };
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "client connection ended");
                        }
                    });
                    continue;
                };
                let stream = write_timeout::WriteTimeout::new(stream, write_timeout);
                // The handshake runs in the connection's task (never in the
                // accept loop) and within the header read timeout, so a
                // client that stalls it holds one slot for that long only.
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let watcher = graceful.watcher();
                let builders = builders.clone();
                let data_plane = limits.data_plane.clone();
                conns.spawn(async move {
                    let handshake = acceptor.accept(stream);
                    let Some(mut stream) = first_step("the TLS handshake", first_bytes_within, handshake).await
                    else {
                        return;
                    };
                    let Some(dp) = data_plane else {
                        let conn = watcher.watch(builders.0.serve_connection(TokioIo::new(stream), service));
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "client connection ended");
                        }
                        return;
                    };
                    // The request line is only readable now: its bytes are
                    // read, and replayed in front of the stream for hyper.
                    let first = data_plane::read_first_bytes(&mut stream);
                    let Some(head) = first_step("the first bytes", first_bytes_within, first).await else {
                        return;
                    };
                    let on_data_plane = data_plane::is_data_plane(&head);
                    let stream = data_plane::Replay::new(head, stream);
                    let ended = if on_data_plane {
                        // Served on the data plane's threads; the socket
                        // stays registered with this runtime's reactor.
                        dp.metrics.data_plane_connections.inc();
                        let task = dp.handle.spawn(async move {
                            let conn = builders.0.serve_connection(TokioIo::new(stream), service);
                            watcher.watch(conn).await
                        });
                        match tokio_util::task::AbortOnDropHandle::new(task).await {
                            Ok(ended) => ended.map_err(|e| e.to_string()),
                            Err(e) => Err(e.to_string()),
                        }
                    } else {
                        let conn = builders.0.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn).await.map_err(|e| e.to_string())
                    };
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "client connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(shutdown::HTTP_DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open = conns.len(),
            "client connections still busy after the drain grace; closing them"
        );
    }
    conns.shutdown().await;
}

/// The first step of a client connection (the TLS handshake, the wait for
/// its first bytes) within `limit`; `None`, logged, if it failed or the
/// client stalled it, and the connection is then dropped.
async fn first_step<T>(
    step: &'static str,
    limit: std::time::Duration,
    work: impl Future<Output = std::io::Result<T>>,
) -> Option<T> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(done)) => Some(done),
        Ok(Err(e)) => {
            tracing::debug!(step, error = %e, "client connection ended in its first step");
            None
        }
        Err(_) => {
            tracing::debug!(
                step,
                "client stalled its first step past the header read timeout"
            );
            None
        }
    }
}

/// The API names the leader by `http://` URL; over HTTPS the leader is
/// reached with `https://` (every node of a cluster serves the same way).
async fn https_leader_hint(mut response: axum::response::Response) -> axum::response::Response {
    use crate::api::error::LEADER_HEADER;
    let https = response
        .headers()
        .get(LEADER_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("http://"))
        .and_then(|rest| axum::http::HeaderValue::from_str(&format!("https://{rest}")).ok());
    if let Some(value) = https {
        response.headers_mut().insert(LEADER_HEADER, value);
    }
    response
}

/// Connections the probe listener (`--listen-metrics`) keeps open at once:
/// scrapers and health checkers, a handful each.
const PROBE_CONNECTIONS: usize = 64;

/// Bounds of the client listener, and its TLS.
struct HttpLimits {
    header_read_timeout: std::time::Duration,
    /// Longest a connection's writes may make no progress before it is
    /// closed (`--client-write-timeout-ms`).
    write_timeout: std::time::Duration,
    /// Largest request head read (see `api::limits`).
    head_buffer_bytes: usize,
    max_connections: usize,
    /// HTTPS only when set.
    tls: Option<Arc<crate::tls::Live<rustls::ServerConfig>>>,
    /// Where plain HTTP/1.1 connections of replicas are served, when not
    /// with the rest.
    data_plane: Option<DataPlane>,
}

/// The data plane's threads, and the metrics that count what they serve.
#[derive(Clone)]
struct DataPlane {
    handle: tokio::runtime::Handle,
    metrics: Arc<crate::metrics::Metrics>,
}

/// The TLS of both listeners and the peer dialer, from the configuration.
struct TlsSetup {
    client: Option<Arc<crate::tls::Live<rustls::ServerConfig>>>,
    peer: crate::tls::PeerTls,
}

impl TlsSetup {
    /// Loads every configured file; a bad one stops the start.
    fn from_config(config: &Config) -> Result<TlsSetup, ServerError> {
        use crate::tls::{server_config, Live, PeerTls, TlsFiles, CLIENT_ALPN};
        let client = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: config.tls_client_ca.clone(),
                };
                let paths = files.paths();
                Some(Arc::new(Live::new("client listener", paths, move || {
                    server_config(&files, CLIENT_ALPN)
                })?))
            }
            _ => None,
        };
        let peer = match (
            &config.peer_tls_cert,
            &config.peer_tls_key,
            &config.peer_tls_ca,
        ) {
            (Some(cert), Some(key), Some(ca)) => PeerTls::mutual(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: Some(ca.clone()),
            })?,
            _ => PeerTls::plain(),
        };
        Ok(TlsSetup { client, peer })
    }

    /// What the reloader watches.
    fn reloadables(&self) -> Vec<Arc<dyn crate::tls::Reload>> {
        let mut items = self.peer.reloadables();
        if let Some(client) = &self.client {
            items.push(client.clone());
        }
        items
    }
}

/// At most one log line per this interval for refused client connections.
const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The process's open-file limit, after raising the soft limit to the hard
/// one (as servers commonly do at start).
pub fn open_file_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-file limit; assuming 1024");
            1024
        }
    }
}

/// Runs one node until `shutdown` completes, then stops it. If the node's
/// Raft stops on an error meanwhile (a storage failure), the node is
/// restarted in this process ([`keep_running`]). An error means the first
/// start failed, or the final shutdown could not confirm that the node's log
/// is on disk (see [`ShutdownReport::durable`]).
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let node = start(config.clone(), None).await?;
    durable_or_error(&keep_running(node, config, shutdown).await)
}

/// `Ok` when `report` says the node's log is durable; otherwise the problems.
pub fn durable_or_error(report: &ShutdownReport) -> Result<(), ServerError> {
    if report.durable() {
        Ok(())
    } else {
        Err(ServerError::Shutdown(report.problems.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leader_hints_name_https_over_tls() {
        use crate::api::error::LEADER_HEADER;
        let mut response = axum::response::Response::new(axum::body::Body::empty());
        response.headers_mut().insert(
            LEADER_HEADER,
            axum::http::HeaderValue::from_static("http://10.0.0.2:2379"),
        );
        let response = https_leader_hint(response).await;
        assert_eq!(
            response
                .headers()
                .get(LEADER_HEADER)
                .and_then(|v| v.to_str().ok()),
            Some("https://10.0.0.2:2379")
        );
        let plain =
            https_leader_hint(axum::response::Response::new(axum::body::Body::empty())).await;
        assert!(plain.headers().get(LEADER_HEADER).is_none());
    }
}
