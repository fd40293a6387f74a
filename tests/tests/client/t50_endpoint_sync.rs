//! The client follows membership changes: seeded with one node it learns
//! the voters, and one that syncs by itself moves to a node that joined and
//! keeps writing after the node it was configured with is removed and gone.
//! A replica that syncs by itself does the same, and keeps receiving changes.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use ballast_client::{Client, Error, Replica};
use ballast_tests::TestCluster;
use reqwest::Method;
use tracing::info;

const WAIT: Duration = Duration::from_secs(20);

fn set(urls: Vec<String>) -> BTreeSet<String> {
    urls.into_iter().collect()
}

fn endpoints(tc: &TestCluster, ids: &[u64]) -> BTreeSet<String> {
    ids.iter().map(|id| tc.endpoint(*id)).collect()
}

/// Retries a put while the cluster says it was certainly not applied (a
/// leader change under way), up to [`WAIT`].
async fn put(client: &Client, key: &str, value: &str) -> Result<u64> {
    let deadline = Instant::now() + WAIT;
    loop {
        match client.put(key, value).await {
            Ok(r) => return Ok(r.revision),
            Err(e) if e.is_definitely_not_applied() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Waits up to [`WAIT`] until `check` holds.
async fn wait_until(what: &str, check: impl Fn() -> bool) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    while !check() {
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Waits up to [`WAIT`] until `client` has synced to `want`.
async fn wait_for(client: &Client, want: BTreeSet<String>) -> Result<()> {
    let what = format!("the client to sync to {want:?}");
    wait_until(&what, || set(client.endpoints()) == want).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_membership_changes() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    tc.wait_leader(WAIT).await?;

    info!("--- a client seeded with node 1 learns every voter");
    let seeded = Client::new(vec![tc.endpoint(1)])?;
    let synced = seeded.sync_endpoints().await?;
    assert_eq!(set(synced), endpoints(&tc, &[1, 2, 3]));
    assert_eq!(seeded.preferred_endpoint(), tc.endpoint(1));

    // Seeded with node 2 only, syncing by itself.
    let auto = Client::builder(vec![tc.endpoint(2)])
        .request_timeout(Duration::from_secs(4))
        .auto_sync_interval(Duration::from_secs(1))
        .build()?;
    put(&auto, "/sync/before", "1").await?;
    let replica = Replica::builder(vec![tc.endpoint(2)])
        .prefix("/sync/")
        .auto_sync_interval(Duration::from_secs(1))
        .start()
        .await?;
    assert!(replica.get("/sync/before").is_some());

    info!("--- node 4 joins: a learner is not an endpoint until promoted");
    let joined = tc.join_node().await?;
    ensure!(joined == 4, "the new node is 4, not {joined}");
    assert_eq!(
        set(seeded.sync_endpoints().await?),
        endpoints(&tc, &[1, 2, 3])
    );
    tc.promote_when_ready(1, 4, WAIT).await?;
    assert_eq!(
        set(seeded.sync_endpoints().await?),
        endpoints(&tc, &[1, 2, 3, 4])
    );
    wait_for(&auto, endpoints(&tc, &[1, 2, 3, 4])).await?;
    wait_until("the replica to sync to 1-4", || {
        set(replica.endpoints()) == endpoints(&tc, &[1, 2, 3, 4])
    })
    .await?;

    info!("--- node 2 is removed");
    let (status, doc) = tc.admin(1, Method::DELETE, "/v1/members/2", None).await?;
    ensure!(status == 200, "removing 2: {status} {doc}");
    let deadline = Instant::now() + WAIT;
    loop {
        let (voters, _) = tc.voters_and_learners(1)?;
        if voters == [1, 3, 4] {
            break;
        }
        if Instant::now() > deadline {
            bail!("node 1 still sees voters {voters:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    info!("--- the auto-syncing client moves to the voters by itself");
    // Its preferred endpoint, node 2, now answers `410 removed`: the sync
    // moves past it like any request.
    wait_for(&auto, endpoints(&tc, &[1, 3, 4])).await?;
    tc.kill(2).await?;
    let revision = put(&auto, "/sync/after", "2").await?;
    let got = auto.get("/sync/after").await?;
    assert_eq!(got.kv.map(|kv| kv.value), Some(b"2".to_vec()));
    assert!(got.revision >= revision);
    assert_ne!(auto.preferred_endpoint(), tc.endpoint(2));

    info!("--- the auto-syncing replica, seeded with node 2 only, follows too");
    wait_until("the replica to sync to 1, 3, 4", || {
        set(replica.endpoints()) == endpoints(&tc, &[1, 3, 4])
    })
    .await?;
    wait_until("the replica to see /sync/after", || {
        replica
            .get("/sync/after")
            .is_some_and(|kv| kv.value == b"2".to_vec())
    })
    .await?;
    assert!(replica.revision() >= revision);

    info!("--- a client that knows only the gone node cannot sync, and keeps its list");
    let stranded = Client::builder(vec![tc.endpoint(2)])
        .max_attempts(1)
        .build()?;
    assert!(matches!(
        stranded.sync_endpoints().await,
        Err(Error::Transport { .. })
    ));
    assert_eq!(stranded.endpoints(), vec![tc.endpoint(2)]);

    assert_eq!(
        set(seeded.sync_endpoints().await?),
        endpoints(&tc, &[1, 3, 4])
    );
    drop(auto);
    drop(replica);
    tc.shutdown().await;
    Ok(())
}
