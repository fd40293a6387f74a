//! Restored clusters: [`restore_cluster`] restores `n` new members from one
//! source with `ballast_store::restore` (what `ballastd restore` runs), on
//! new ports and data directories, and starts them as a [`TestCluster`].

use anyhow::{Context, Result};
use ballast_store::{RestoreOptions, RestoreReport, RestoreSource};

use crate::{bind_members, init_logging, member_config, TestCluster};

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
    let (listeners, initial_cluster) = bind_members(n).await?;
    let mut configs = Vec::new();
    let mut reports = Vec::new();
    for (i, l) in listeners.iter().enumerate() {
        let mut c = member_config(dir.path(), i as u64 + 1, l, &initial_cluster)?;
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
    let tc = TestCluster::launch(dir, configs, listeners).await?;
    Ok((tc, reports))
}
