//! Honest staleness: a node cut off from the leader stops vouching for its
//! state (no progress bookmarks), so a replica following it reports
//! `connected: false`, counts its staleness and fails over to a node in the
//! majority, its revision never going backwards.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ballast_client::Client;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{cluster_map, endpoints, put, replica_builder, replica_map, wait_until, WAIT};

const PREFIX: &str = "/stale/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_following_an_isolated_node_reports_stale_and_moves_on() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(WAIT).await?;
    let follower = tc.others(leader)[0];
    let client = Client::builder(endpoints(&tc))
        .request_timeout(Duration::from_secs(2))
        .build()?;
    let first = put(&client, &format!("{PREFIX}a"), "1").await?;

    info!(follower, "--- a replica that tries node {follower} first");
    let mut eps = vec![tc.endpoint(follower)];
    eps.extend(tc.others(follower).iter().map(|id| tc.endpoint(*id)));
    let dir = tempfile::tempdir()?;
    let r = Arc::new(
        replica_builder(eps, PREFIX, dir.path(), "stale-1")
            .endpoints_in_order(true)
            .start()
            .await?,
    );
    r.wait_for_revision(first, WAIT).await?;
    let follower_url = tc.endpoint(follower);
    wait_until("the replica to follow the chosen node", WAIT, || {
        let s = r.status();
        s.connected && s.endpoint.as_deref() == Some(follower_url.as_str())
    })
    .await?;

    // Samples the replica continuously: its revision never decreases, and
    // after the cut it must report itself disconnected at some point.
    let cut = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let saw_stale = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (r, cut, stop, saw_stale) = (r.clone(), cut.clone(), stop.clone(), saw_stale.clone());
        tokio::spawn(async move {
            let mut prev = r.revision();
            while !stop.load(Ordering::Relaxed) {
                let s = r.status();
                if s.revision < prev {
                    bail!("revision went backwards: {prev} -> {}", s.revision);
                }
                prev = s.revision;
                if cut.load(Ordering::Relaxed) && !s.connected {
                    saw_stale.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        })
    };

    info!("--- isolate the node the replica follows");
    let cut_at = Instant::now();
    tc.isolate(follower)?;
    cut.store(true, Ordering::Relaxed);
    wait_until("the replica to report itself stale", WAIT, || {
        saw_stale.load(Ordering::Relaxed)
    })
    .await?;
    let stale_after = cut_at.elapsed();
    let status = r.status();
    info!(?stale_after, ?status, "replica reports stale");

    info!("--- the majority moves on; so does the replica");
    let next = put(&client, &format!("{PREFIX}b"), "2").await?;
    r.wait_for_revision(next, WAIT).await?;
    wait_until("the replica to follow a majority node", WAIT, || {
        let s = r.status();
        s.connected && s.endpoint.is_some() && s.endpoint.as_deref() != Some(follower_url.as_str())
    })
    .await?;
    let moved_after = cut_at.elapsed();
    let election_timeout = Duration::from_millis(tc.config(follower).election_timeout_max_ms);
    info!(
        ?moved_after,
        ?election_timeout,
        "replica follows the majority again"
    );
    let (_, expected) = cluster_map(&client, PREFIX).await?;
    assert_eq!(replica_map(&r, PREFIX), expected);
    let isolated = tc.node(follower)?.applied().revision;
    assert!(isolated < next, "the isolated node cannot have {next}");

    stop.store(true, Ordering::Relaxed);
    monitor.await??;
    tc.heal(follower)?;
    tc.shutdown().await;
    Ok(())
}
