//! Node identity: a wiped node may not form the cluster again, and peers of
//! another cluster are refused.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_store::internals::wire::{self, FrameCaps, PeerIdentity, PeerRequest, PeerResponse};
use ballast_store::Config;
use ballast_store::ServerError;
use ballast_tests::TestCluster;
use tracing::info;

/// Starts a node, retrying while its ports are still held by the node that
/// ran before; any other error is returned.
async fn start_refused_or_running(config: Config) -> Result<ServerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match ballast_store::start(config.clone(), None).await {
            Ok(node) => {
                node.shutdown().await;
                bail!("node {} started, but it must be refused", config.node_id);
            }
            Err(ServerError::Bind { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Ok(e),
        }
    }
}

async fn wait_until(what: &str, timeout: Duration, cond: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_and_the_cluster_keeps_its_data() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let victim = tc
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a follower");
    let mut rev = 0;
    for i in 0..20 {
        rev = tc
            .put(leader, &format!("id/k{i}"), &format!("v{i}"))
            .await?;
    }
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    // The leader records, within a second or so, that the follower holds data.
    let l = tc.node(leader)?.clone();
    wait_until(
        "the leader saw the follower's data",
        Duration::from_secs(10),
        || l.saw_data_of(victim),
    )
    .await?;

    info!("--- stop node {victim}, wipe its data dir, start it again as configured");
    tc.kill(victim).await?;
    let config = tc.config(victim).clone();
    std::fs::remove_dir_all(&config.data_dir).context("wiping the data dir")?;
    let err = start_refused_or_running(config.clone()).await?;
    let message = err.to_string();
    assert!(
        matches!(err, ServerError::Identity(_))
            && message.contains("must not form the cluster again"),
        "unexpected error: {message}"
    );
    info!(%message, "refused as expected");

    info!("--- the cluster still has every write and takes new ones");
    for id in tc.running() {
        for i in 0..20 {
            assert_eq!(
                tc.value(id, &format!("id/k{i}"), "linearizable").await?,
                Some(format!("v{i}"))
            );
        }
    }
    tc.put(leader, "id/after", "x").await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_another_cluster_are_refused() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let status = tc.status(leader).await?;
    let cluster_id = u128::from_str_radix(
        status["cluster_id"]
            .as_str()
            .context("status has a cluster id")?,
        16,
    )?;
    let target = tc.config(1).clone();
    let addr = target.listen_peer.clone();
    let caps = FrameCaps::for_limits(&target.limits());

    info!("--- raw peer requests: wrong cluster, wrong node, then right");
    let ask = |cluster_id: u128, to: u64| {
        let addr = addr.clone();
        async move {
            let mut conn = wire::connect(&addr, Duration::from_secs(2), caps).await?;
            let me = PeerIdentity {
                cluster_id,
                node_id: 2,
            };
            anyhow::Ok(
                wire::call(
                    &mut conn,
                    &addr,
                    me,
                    to,
                    &PeerRequest::Replicas,
                    Duration::from_secs(2),
                )
                .await,
            )
        }
    };
    let other = ask(cluster_id ^ 1, 1).await?;
    assert!(
        matches!(&other, Err(wire::CallError::Remote(m)) if m.contains("belongs to cluster")),
        "{other:?}"
    );
    let misaddressed = ask(cluster_id, 3).await?;
    assert!(
        matches!(&misaddressed, Err(wire::CallError::Remote(m)) if m.contains("addressed node 3")),
        "{misaddressed:?}"
    );
    let right = ask(cluster_id, 1).await?;
    assert!(matches!(right, Ok(PeerResponse::Replicas(_))), "{right:?}");

    info!("--- a new node whose member list names this cluster's node 1 is refused");
    let dir = tempfile::tempdir()?;
    let client = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let peer = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut stranger = ballast_tests::test_config();
    stranger.node_id = 3;
    stranger.data_dir = dir.path().join("stranger");
    stranger.listen_client = client.to_string();
    stranger.listen_peer = peer.to_string();
    stranger.initial_cluster = Some(format!(
        "1={}/{},3={client}/{peer}",
        target.listen_client, target.listen_peer
    ));
    let err = start_refused_or_running(stranger).await?;
    assert!(
        err.to_string().contains("belongs to cluster"),
        "unexpected error: {err}"
    );
    // The cluster is unharmed.
    tc.put(leader, "other/after", "x").await?;
    tc.shutdown().await;
    Ok(())
}
