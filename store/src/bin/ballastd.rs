//! `ballastd`: one ballast node, or (`ballastd dev`) a local 3-node cluster,
//! or (`ballastd restore`) a new data directory from a backup.

use std::path::PathBuf;
use std::process::ExitCode;

use ballast_store::config::{expand_config_file, Config};
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

/// ballast control-plane node.
#[derive(Parser)]
#[command(name = "ballastd", version, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    config: Config,
    /// Validate the configuration (flags, `--config` file, environment),
    /// print it, and exit: 0 when it is valid, 2 when not. Starts nothing.
    #[arg(long)]
    check_config: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a local 3-node cluster on 127.0.0.1 (client ports BASE, BASE+100,
    /// BASE+200; peer ports one above each) with data under DIR.
    Dev {
        /// Data directory of the cluster (one folder per node).
        #[arg(long, default_value = "data/dev")]
        dir: PathBuf,
        /// Client port of node 1.
        #[arg(long, default_value_t = 2379)]
        base_port: u16,
        /// Turn bearer-token auth on (off by default in dev): node 1 writes
        /// the initial admin token to `DIR/node1/admin.token`.
        #[arg(long)]
        auth: bool,
        /// Serve HTTPS and mutual TLS between the nodes, with a throwaway CA
        /// and certificates for 127.0.0.1 created in DIR (reused if there).
        #[arg(long, value_name = "DIR")]
        tls: Option<PathBuf>,
    },
    /// Create the data directory of one member of a NEW cluster from a backup
    /// file or a stopped node's data directory (disaster recovery). Run it for
    /// every member with the same --initial-cluster and --cluster-token, then
    /// start each with `ballastd --node-id N --data-dir DIR --initial-cluster ...`.
    Restore(RestoreArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["snapshot", "from_data_dir"])))]
struct RestoreArgs {
    /// A backup file (`ballastctl snapshot save`).
    #[arg(long, value_name = "FILE")]
    snapshot: Option<PathBuf>,
    /// The data directory of a stopped node of the old cluster (read, never changed).
    #[arg(long, value_name = "DIR")]
    from_data_dir: Option<PathBuf>,
    /// The id of the member being restored.
    #[arg(long)]
    node_id: u64,
    /// The data directory to create; it must not exist or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    /// The new cluster: `ID=CLIENT_ADDR/PEER_ADDR,...`, this node included.
    #[arg(long)]
    initial_cluster: String,
    /// The new cluster's token (part of its cluster id).
    #[arg(long, default_value = "ballast")]
    cluster_token: String,
    /// Confirms that this forms a new cluster, with a new cluster id.
    #[arg(long)]
    new_cluster: bool,
}

fn run_restore(args: RestoreArgs) -> Result<(), String> {
    let source = match (args.snapshot, args.from_data_dir) {
        (Some(file), _) => ballast_store::RestoreSource::Snapshot(file),
        (None, Some(dir)) => ballast_store::RestoreSource::DataDir(dir),
        (None, None) => return Err("give --snapshot FILE or --from-data-dir DIR".into()),
    };
    let options = ballast_store::RestoreOptions {
        node_id: args.node_id,
        data_dir: args.data_dir,
        initial_cluster: args.initial_cluster,
        cluster_token: args.cluster_token,
        source,
        new_cluster: args.new_cluster,
    };
    let report = ballast_store::restore(&options).map_err(|e| format!("restore: {e}"))?;
    println!(
        "restored node {} into {}: revision {}, compact revision {}, {} keys, state hash {:032x}",
        options.node_id,
        options.data_dir.display(),
        report.revision,
        report.compact_revision,
        report.key_count,
        report.state_hash
    );
    println!("new cluster id: {:032x}", report.cluster_id);
    Ok(())
}

/// How long the runtime may take to drop what is left after the nodes have
/// stopped (idle tasks, finished blocking threads).
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_millis(300);

fn init_tracing(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn dev_configs(
    dir: &std::path::Path,
    base_port: u16,
    template: &Config,
) -> Result<Vec<Config>, String> {
    let port = |node: u16, offset: u16| {
        base_port
            .checked_add((node - 1) * 100 + offset)
            .ok_or_else(|| format!("--base-port {base_port} leaves no room for three nodes"))
    };
    let mut cluster = Vec::new();
    for n in 1..=3u16 {
        cluster.push(format!(
            "{n}=127.0.0.1:{}/127.0.0.1:{}",
            port(n, 0)?,
            port(n, 1)?
        ));
    }
    let cluster = cluster.join(",");
    (1..=3u16)
        .map(|n| {
            Ok(Config {
                node_id: u64::from(n),
                data_dir: dir.join(format!("node{n}")),
                listen_client: format!("127.0.0.1:{}", port(n, 0)?),
                listen_peer: format!("127.0.0.1:{}", port(n, 1)?),
                // Three nodes in one process cannot share one address.
                listen_metrics: None,
                initial_cluster: Some(cluster.clone()),
                ..template.clone()
            })
        })
        .collect()
}

async fn run_dev(
    dir: PathBuf,
    base_port: u16,
    auth: bool,
    tls: Option<PathBuf>,
    mut template: Config,
) -> Result<(), String> {
    let certs = match &tls {
        Some(tls_dir) => {
            let certs = ballast_store::dev_certs(tls_dir).map_err(|e| e.to_string())?;
            template.tls_cert = Some(certs.node_cert.clone());
            template.tls_key = Some(certs.node_key.clone());
            template.peer_tls_cert = Some(certs.node_cert.clone());
            template.peer_tls_key = Some(certs.node_key.clone());
            template.peer_tls_ca = Some(certs.ca.clone());
            Some(certs)
        }
        None => None,
    };
    let scheme = if certs.is_some() { "https" } else { "http" };
    // `ballastd --auth dev` turns it on for all three nodes.
    let auth = auth || template.auth;
    let mut configs = dev_configs(&dir, base_port, &template)?;
    // Node 1 alone bootstraps auth, so the token file has one known place
    // (auth is replicated: the other two enforce it all the same).
    for (i, c) in configs.iter_mut().enumerate() {
        c.auth = auth && i == 0;
    }
    let token_file = configs[0].auth_token_path();
    // Each node with the configuration it is restarted from.
    let mut nodes = Vec::new();
    for config in configs {
        match ballast_store::start(config.clone(), None).await {
            Ok(node) => nodes.push((node, config)),
            Err(e) => {
                // Stop the nodes already running before leaving, so that no
                // database is open while the process exits.
                futures::future::join_all(nodes.into_iter().map(|(n, _)| n.shutdown())).await;
                return Err(e.to_string());
            }
        }
    }
    let endpoints: Vec<String> = nodes
        .iter()
        .map(|(n, _)| format!("{scheme}://{}", n.client_addr))
        .collect();
    println!("ballast dev cluster: 3 nodes, data in {}", dir.display());
    for (i, e) in endpoints.iter().enumerate() {
        println!("  node {}: {e}", i + 1);
    }
    println!("endpoints: {}", endpoints.join(","));
    if auth {
        println!(
            "auth is on: the admin token is written to {} (send it as `Authorization: Bearer ...`)",
            token_file.display()
        );
    }
    let curl = match &certs {
        Some(c) => {
            println!(
                "TLS: CA {}, client certificate {} (key {})",
                c.ca.display(),
                c.client_cert.display(),
                c.client_key.display()
            );
            format!("curl --cacert {}", c.ca.display())
        }
        None => "curl".to_owned(),
    };
    let curl = if auth {
        format!(
            "{curl} -H \"Authorization: Bearer $(cat {})\"",
            token_file.display()
        )
    } else {
        curl
    };
    println!("try:");
    println!("  {curl} -X PUT {}/v1/kv/app/mode -d green", endpoints[0]);
    println!("  {curl} {}/v1/kv/app/mode", endpoints[1]);
    println!("  {curl} {}/v1/status", endpoints[2]);
    println!("press Ctrl-C to stop");
    // Each node is restarted in the process if its Raft stops on an error;
    // at the signal all three stop at once: each is bounded by the shutdown
    // deadline, so the whole cluster stops within it too.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = futures::future::join_all(nodes.into_iter().map(|(node, config)| {
        let mut stop = stop_rx.clone();
        ballast_store::server::keep_running(node, config, async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
    }));
    let signal = async {
        shutdown_signal().await;
        tracing::info!("shutting down");
        stop_tx.send_replace(true);
    };
    let (reports, ()) = tokio::join!(running, signal);
    let problems: Vec<String> = reports
        .iter()
        .zip(1..)
        .filter_map(|(report, n)| {
            ballast_store::server::durable_or_error(report)
                .err()
                .map(|e| format!("node {n}: {e}"))
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `--check-config`: what a service manager runs before starting a node.
fn check_config(config: &Config) -> ExitCode {
    if let Err(e) = config.validate() {
        eprintln!("ballastd: {e}");
        return ExitCode::from(2);
    }
    let member = config.advertised_member();
    println!(
        "configuration valid: node {} data-dir {} client {} (advertised {}) peer {} (advertised {})",
        config.node_id,
        config.data_dir.display(),
        config.listen_client,
        member.client_addr,
        config.listen_peer,
        member.peer_addr
    );
    match config.initial_members() {
        Ok(Some(members)) => {
            for (id, m) in members {
                println!(
                    "initial member {id}: client {} peer {}",
                    m.client_addr, m.peer_addr
                );
            }
        }
        Ok(None) => {}
        Err(e) => {
            eprintln!("ballastd: {e}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    // With the `failpoints` feature, FAILPOINTS=name=action;... configures
    // failpoints at start; they stay adjustable over /debug/failpoints.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let args = match expand_config_file(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ballastd: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    if cli.check_config {
        return check_config(&cli.config);
    }
    init_tracing(cli.config.log_json);
    if let Some(Cmd::Restore(args)) = cli.command {
        // Blocking file work: no runtime and no node.
        return match run_restore(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("ballastd: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ballastd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Cmd::Dev {
                dir,
                base_port,
                auth,
                tls,
            }) => run_dev(dir, base_port, auth, tls, cli.config).await,
            Some(Cmd::Restore(_)) => Err("restore runs without a runtime".into()),
            None => ballast_store::run(cli.config, shutdown_signal())
                .await
                .map_err(|e| e.to_string()),
        }
    });
    // Shutdown has closed the database (or reported why not); nothing left
    // in the runtime touches it, so do not wait long for stragglers.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballastd: {e}");
            ExitCode::FAILURE
        }
    }
}
