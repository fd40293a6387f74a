//! A replica failing over between nodes — including to a lagging, isolated
//! node — never moves its revision backwards and loses no update.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use ballast_client::Client;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{cluster_map, endpoints, put, replica, replica_map, wait_until, WAIT};

const PREFIX: &str = "/failover/";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_lagging_node_never_goes_backwards() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let client = Client::builder(endpoints(&tc))
        .request_timeout(Duration::from_secs(2))
        .build()?;
    let dir = tempfile::tempdir()?;
    let first = put(&client, &format!("{PREFIX}seed"), "0").await?;

    info!("--- a replica that only knows nodes 1 and 3");
    let r = Arc::new(
        replica(
            vec![tc.endpoint(1), tc.endpoint(3)],
            PREFIX,
            dir.path(),
            "fo-1",
        )
        .await?,
    );
    r.wait_for_revision(first, WAIT).await?;

    // Watches the replica's revision continuously.
    let stop = Arc::new(AtomicBool::new(false));
    let monitor = {
        let (r, stop) = (r.clone(), stop.clone());
        tokio::spawn(async move {
            let mut prev = r.revision();
            let mut samples = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let now = r.revision();
                if now < prev {
                    bail!("revision went backwards: {prev} -> {now}");
                }
                prev = now;
                samples += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(samples)
        })
    };
    // Writes continuously through whatever node takes them.
    let writer = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ok = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                if client
                    .put(&format!("{PREFIX}k{}", i % 23), format!("v{i}"))
                    .await
                    .is_ok()
                {
                    ok += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ok
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    info!("--- isolate node 3: it falls behind while 1 and 2 keep writing");
    tc.isolate(3)?;
    // If node 3 led, writes resume once 1 and 2 elect a new leader, which
    // takes longer on a loaded machine: wait for the replica to move ahead.
    // Node 3 may still be applying what it was told was committed just
    // before the cut: wait until it has applied all of that (it can learn
    // of no more) and the replica is past it.
    let isolated = tc.node(3)?.clone();
    wait_until(
        "the replica to move ahead of the isolated node 3",
        WAIT,
        || {
            isolated
                .status()
                .is_ok_and(|s| s.raft.applied >= s.raft.committed && r.revision() > s.revision)
        },
    )
    .await?;
    let node3 = isolated.applied().revision;
    let before_kill = r.revision();
    info!(node3, replica = before_kill, "node 3 lags the replica");
    assert!(
        node3 < before_kill,
        "node 3 ({node3}) is not behind the replica ({before_kill})"
    );

    info!("--- kill node 1: the replica's only other endpoint is the lagging node 3");
    tc.kill(1).await?;
    wait_until("the replica to fail over to node 3", WAIT, || {
        r.status().endpoint.as_deref() == Some(tc.endpoint(3).as_str())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(r.revision() >= before_kill);

    info!("--- heal node 3: 2 and 3 form a quorum, node 3 catches up, so does the replica");
    tc.heal(3)?;
    tc.wait_leader(WAIT).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    info!("--- node 1 returns");
    tc.restart(1).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.await?;
    let last = put(&client, &format!("{PREFIX}last"), "done").await?;
    let (rev, expected) = cluster_map(&client, PREFIX).await?;
    assert!(rev >= last);
    r.wait_for_revision(last, WAIT).await?;
    let samples = monitor.await??;
    info!(
        writes,
        samples,
        replica = r.revision(),
        "writes applied, revision samples taken"
    );
    assert!(writes > 50, "too few writes succeeded: {writes}");
    assert_eq!(replica_map(&r, PREFIX), expected);
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_passes_over_a_node_removed_from_the_cluster() -> Result<()> {
    const PREFIX: &str = "/removed/";
    let mut tc = TestCluster::start(3).await?;
    tc.wait_leader(WAIT).await?;

    info!("--- node 4 joins and votes; node 1 is removed and keeps running");
    let joined = tc.join_node().await?;
    tc.promote_when_ready(2, joined, WAIT).await?;
    let (status, doc) = tc
        .admin(2, reqwest::Method::DELETE, "/v1/members/1", None)
        .await?;
    if status != 200 {
        bail!("removing node 1: {status} {doc}");
    }
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let url = format!("{}/v1/kv{PREFIX}a", tc.endpoint(1));
        let status = tc.http().get(url).send().await?.status().as_u16();
        if status == 410 {
            break;
        }
        if std::time::Instant::now() > deadline {
            bail!("node 1 still answers {status} after its removal");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = Client::builder(vec![tc.endpoint(2), tc.endpoint(3), tc.endpoint(joined)])
        .request_timeout(Duration::from_secs(2))
        .build()?;
    let first = put(&client, &format!("{PREFIX}a"), "1").await?;

    info!("--- a replica that lists the removed node first bootstraps and follows");
    let dir = tempfile::tempdir()?;
    let r = replica(
        vec![
            tc.endpoint(1),
            tc.endpoint(2),
            tc.endpoint(3),
            tc.endpoint(joined),
        ],
        PREFIX,
        dir.path(),
        "removed-1",
    )
    .await?;
    r.wait_for_revision(first, WAIT).await?;
    // Its watch starts at the first endpoint, which answers `410 removed`:
    // it moves on instead of giving up.
    let second = put(&client, &format!("{PREFIX}b"), "2").await?;
    r.wait_for_revision(second, WAIT).await?;
    assert_eq!(
        r.get(&format!("{PREFIX}b")).map(|kv| kv.value.to_vec()),
        Some(b"2".to_vec())
    );
    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}
