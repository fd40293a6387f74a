use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use ballast_tests::TestCluster;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_under_load_loses_no_acknowledged_write() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let endpoints: Vec<String> = tc.ids().iter().map(|id| tc.endpoint(*id)).collect();

    info!("--- writers load every node");
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4usize {
        let (acked, stop, endpoints) = (acked.clone(), stop.clone(), endpoints.clone());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        writers.push(tokio::spawn(async move {
            // Bounded: at most 2,000 writes per writer, and only until stopped.
            for i in 0..2000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let key = format!("load/w{w}/k{}", i % 50);
                let value = format!("{w}-{i}");
                let ep = &endpoints[(w + i) % endpoints.len()];
                let ok = match http
                    .put(format!("{ep}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await
                {
                    Ok(r) => r.status().is_success(),
                    Err(_) => false,
                };
                if ok {
                    if let Ok(mut a) = acked.lock() {
                        a.push((key, value));
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    info!("--- kill the leader {leader}");
    tc.kill(leader).await?;
    let new_leader = tc.wait_new_leader(leader, Duration::from_secs(15)).await?;
    info!(new_leader, "--- new leader elected, writes resume");
    let before = acked.lock().map(|a| a.len()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = acked.lock().map(|a| a.len()).unwrap_or(0);
    assert!(
        after > before,
        "writes resumed after failover ({before} -> {after})"
    );
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.await?;
    }

    info!("--- restart the old leader; every acknowledged write is there, on every node");
    tc.restart(leader).await?;
    let acked = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let mut last = std::collections::BTreeMap::new();
    for (k, v) in acked {
        last.insert(k, v);
    }
    let rev = tc.put(new_leader, "load/marker", "end").await?;
    tc.wait_applied(rev, Duration::from_secs(15)).await?;
    // Each key is written by one writer, in order, with values "w-i" for
    // increasing i. A write after the last acknowledged one may have failed
    // with an unknown outcome and still be applied, so a node must hold the
    // last acknowledged value or a later one of that writer's sequence.
    let seq = |v: &str| v.split_once('-').and_then(|(_, i)| i.parse::<usize>().ok());
    for id in tc.ids() {
        for (k, v) in &last {
            let stored = tc.value(id, k, "serializable").await?;
            let stored_i = stored.as_deref().and_then(seq);
            assert!(
                stored_i.is_some() && stored_i >= seq(v),
                "node {id} key {k}: holds {stored:?}, but {v} was acknowledged"
            );
        }
    }
    tc.shutdown().await;
    Ok(())
}
