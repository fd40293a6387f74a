//! Admission control seen from the data plane: replicas refused with `429`
//! (a bootstrap, a watch catch-up) obey `Retry-After`, back off and converge;
//! writes go on meanwhile.

use std::time::Instant;

use anyhow::{bail, Result};
use ballast_client::Client;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{cluster_map, endpoints, put, replica, replica_map, WAIT};

/// Waits until node `id`'s counter `name` reaches `at_least`.
async fn wait_metric(tc: &TestCluster, id: u64, name: &str, at_least: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = tc.metric(id, name).await?;
        if now >= at_least {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} at {now}, waited for {at_least}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_refused_at_the_bootstrap_bound_back_off_and_converge() -> Result<()> {
    const BOUND: usize = 2;
    const REPLICAS: usize = 6;
    let tc = TestCluster::start_with(1, |c| c.max_bootstraps = BOUND).await?;
    let eps = endpoints(&tc);
    let client = Client::new(eps.clone())?;
    for i in 0..40 {
        put(&client, &format!("/adm/{i:03}"), "v").await?;
    }

    info!("--- fill the node's bootstrap bound");
    let admission = tc.admission(1)?.clone();
    let held = (0..BOUND)
        .map(|_| admission.try_bootstrap())
        .collect::<Result<Vec<_>, _>>()?;

    info!("--- one more bootstrap is refused at once, with Retry-After");
    let resp = tc
        .http()
        .get(format!(
            "{}/v1/kv/adm/?prefix=true&bootstrap=true",
            tc.endpoint(1)
        ))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 429);
    let after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(after.as_deref(), Some("1"));
    let doc: serde_json::Value = resp.json().await?;
    assert_eq!(doc["error"]["code"], "too_many_bootstraps", "{doc}");

    info!("--- {REPLICAS} replicas start: every one is refused, none gives up");
    let dirs = (0..REPLICAS)
        .map(|_| tempfile::tempdir())
        .collect::<std::io::Result<Vec<_>>>()?;
    let starts: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let (eps, path) = (eps.clone(), dir.path().to_owned());
            tokio::spawn(async move { replica(eps, "/adm/", &path, &format!("adm-{i}")).await })
        })
        .collect();
    wait_metric(
        &tc,
        1,
        "ballast_bootstraps_refused_total",
        REPLICAS as u64 + 1,
    )
    .await?;
    // Writes keep their priority.
    put(&client, "/adm/during", "w").await?;

    info!("--- release the bound: every replica bootstraps and converges");
    drop(held);
    let mut replicas = Vec::new();
    for start in starts {
        replicas.push(start.await??);
    }
    let rev = put(&client, "/adm/after", "x").await?;
    let (_, expected) = cluster_map(&client, "/adm/").await?;
    for r in &replicas {
        r.wait_for_revision(rev, WAIT).await?;
        assert_eq!(replica_map(r, "/adm/"), expected);
    }
    for r in replicas {
        r.shutdown().await;
    }
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_refused_a_catchup_serves_its_cache_then_catches_up() -> Result<()> {
    let tc = TestCluster::start_with(1, |c| {
        c.max_watch_catchups = 1;
        c.watch_window = 8;
    })
    .await?;
    let eps = endpoints(&tc);
    let client = Client::new(eps.clone())?;
    let dir = tempfile::tempdir()?;
    let first = put(&client, "/cu/a", "1").await?;
    let r = replica(eps.clone(), "/cu/", dir.path(), "cu-1").await?;
    r.wait_for_revision(first, WAIT).await?;
    r.shutdown().await;

    info!("--- history moves past the watch window while the replica is down");
    let mut last = first;
    for i in 0..30 {
        let key = if i % 3 == 0 { "/cu/b" } else { "/other/x" };
        last = put(&client, key, &i.to_string()).await?;
    }

    info!("--- fill the catch-up bound; the restarted replica serves its cache");
    let held = tc.admission(1)?.try_catchup()?;
    let refused_before = tc.metric(1, "ballast_catchups_refused_total").await?;
    let r = replica(eps.clone(), "/cu/", dir.path(), "cu-1").await?;
    assert!(r.status().serving_from_disk);
    wait_metric(&tc, 1, "ballast_catchups_refused_total", refused_before + 1).await?;
    assert_eq!(r.revision(), first, "no catch-up while refused");
    assert_eq!(
        r.get("/cu/a").map(|kv| kv.value.clone()),
        Some(b"1".to_vec())
    );

    info!("--- release: the replica catches up from its revision");
    drop(held);
    r.wait_for_revision(last, WAIT).await?;
    let (_, expected) = cluster_map(&client, "/cu/").await?;
    assert_eq!(replica_map(&r, "/cu/"), expected);
    r.shutdown().await;
    tc.shutdown().await;
    Ok(())
}
