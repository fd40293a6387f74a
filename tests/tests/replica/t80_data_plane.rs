//! A replica's connections are served on the node's data-plane threads
//! (lower CPU priority than writes); a control-plane client's are not.

use anyhow::{bail, Result};
use ballast_client::Client;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{endpoints, put, replica, wait_until, WAIT};

/// The data plane's threads of this process (the test cluster runs in it)
/// and their nice values, read from `/proc`.
fn data_plane_threads() -> Result<Vec<i64>> {
    let mut nice = Vec::new();
    for task in std::fs::read_dir("/proc/self/task")? {
        let dir = task?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim() != "ballast-dplane" {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the command name (which ends with the last ')'):
        // state is field 3, nice field 19.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            bail!("unexpected stat: {stat}");
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        nice.push(fields[16].parse()?);
    }
    Ok(nice)
}

/// The data-plane connections all nodes have served.
async fn data_plane_connections(tc: &TestCluster) -> Result<u64> {
    let mut sum = 0;
    for id in tc.ids() {
        sum += tc
            .metric(id, "ballast_data_plane_connections_total")
            .await?;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_connections_are_served_at_the_data_planes_priority() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let client = Client::new(endpoints(&tc))?;

    info!("--- control-plane traffic stays on the main threads");
    let before = data_plane_connections(&tc).await?;
    for i in 0..20 {
        put(&client, &format!("/dp/k{i:02}"), "v").await?;
    }
    let _ = client.get("/dp/k00").await?;
    assert_eq!(data_plane_connections(&tc).await?, before);

    info!("--- a replica's bootstrap and watch go to the data plane");
    let dir = tempfile::tempdir()?;
    let r = replica(endpoints(&tc), "/dp/", dir.path(), "dp-1").await?;
    assert_eq!(r.range("/dp/").len(), 20);
    let rev = put(&client, "/dp/after", "w").await?;
    wait_until("the replica applies a change (its watch)", WAIT, || {
        r.revision() >= rev
    })
    .await?;
    // The bootstrap's connection and the watch's.
    assert!(
        data_plane_connections(&tc).await? >= before + 2,
        "the bootstrap and the watch were served on the data plane"
    );

    info!("--- those threads run at the default nice value (10)");
    let nice = data_plane_threads()?;
    assert!(!nice.is_empty(), "data-plane threads are running");
    assert!(nice.iter().all(|n| *n == 10), "nice values: {nice:?}");

    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}
