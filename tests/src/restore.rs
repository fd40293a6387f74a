//! Restored clusters: [`restore_cluster`] restores `n` new members from one
//! source with `ballast_store::restore` (what `ballastd restore` runs), on
//! new ports and data directories, and starts them as a [`TestCluster`].

use std::time::Duration;

use anyhow::{Context, Result};
use ballast_store::{Listeners, RestoreOptions, RestoreReport, RestoreSource};
use tokio::net::TcpListener;

use crate::{init_logging, test_config, TestCluster};

/// The token restored test clusters are formed with.
pub const RESTORE_TOKEN: &str = "restored";

/// Restores `n` members (ids 1..=n) of a new cluster from `source`, starts
/// them with the same `--initial-cluster`, and waits for a leader. Returns
/// the cluster and each member's restore report.
pub async fn restore_cluster(
    n: usize,
    source: RestoreSource,
) -> Result<(TestCluster, Vec<RestoreReport>)> {
    init_logging();
    let dir = tempfile::Builder::new()
        .prefix("ballast-restored-")
        .tempdir()?;
    let mut listeners = Vec::new();
    for _ in 0..n {
        let client = TcpListener::bind("127.0.0.1:0").await?;
        let peer = TcpListener::bind("127.0.0.1:0").await?;
        listeners.push(Listeners { client, peer });
    }
    let mut members = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        members.push(format!(
            "{}={}/{}",
            i + 1,
            l.client.local_addr()?,
            l.peer.local_addr()?
        ));
    }
    let initial_cluster = members.join(",");
    let mut configs = Vec::new();
    let mut reports = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let mut c = test_config();
        c.node_id = (i + 1) as u64;
        c.data_dir = dir.path().join(format!("node{}", i + 1));
        c.listen_client = l.client.local_addr()?.to_string();
        c.listen_peer = l.peer.local_addr()?.to_string();
        c.initial_cluster = Some(initial_cluster.clone());
        c.cluster_token = RESTORE_TOKEN.to_string();
        let options = RestoreOptions {
            node_id: c.node_id,
            data_dir: c.data_dir.clone(),
            initial_cluster: initial_cluster.clone(),
            cluster_token: RESTORE_TOKEN.to_string(),
            source: source.clone(),
            new_cluster: true,
        };
        let report = tokio::task::spawn_blocking(move || ballast_store::restore(&options))
            .await?
            .with_context(|| format!("restoring node {}", i + 1))?;
        reports.push(report);
        configs.push(c);
    }
    let mut nodes = Vec::new();
    for (c, l) in configs.iter().zip(listeners) {
        nodes.push(Some(ballast_store::start(c.clone(), Some(l)).await?));
    }
    let tc = TestCluster {
        _dir: dir,
        configs,
        nodes,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?,
        streams: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?,
    };
    tc.wait_leader(Duration::from_secs(20)).await?;
    Ok((tc, reports))
}
