//! Durability across real process crashes: three `ballastd` processes under
//! write load are killed with SIGKILL (the leader alone, then all of them at
//! once) and restarted on their data directories; every acknowledged write
//! must still be there, on every node.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use common::{leader, Cluster};

/// Writes unique keys through every running node until `until`; returns the
/// acknowledged (key, value) pairs. Bounded by count and time.
async fn load(
    endpoints: Vec<String>,
    until: Instant,
    acked: Arc<Mutex<Vec<(String, String)>>>,
    writer: usize,
) {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()
    else {
        return;
    };
    for i in 0..20_000usize {
        if Instant::now() >= until {
            break;
        }
        let key = format!("crash/w{writer}/k{i}");
        let value = format!("v{writer}-{i}");
        let ep = &endpoints[(writer + i) % endpoints.len()];
        match http
            .put(format!("{ep}/v1/kv/{key}"))
            .body(value.clone())
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                if let Ok(mut a) = acked.lock() {
                    a.push((key, value));
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn check_all(http: &reqwest::Client, c: &Cluster, acked: &[(String, String)]) -> Result<()> {
    for id in c.procs.children.keys() {
        let ep = c.endpoint(*id);
        let range: serde_json::Value = http
            .get(format!("{ep}/v1/kv/crash/?prefix=true"))
            .send()
            .await?
            .json()
            .await?;
        let stored: BTreeMap<String, String> = range["kvs"]
            .as_array()
            .ok_or_else(|| anyhow!("no kvs from node {id}: {range}"))?
            .iter()
            .map(|kv| {
                (
                    kv["key"].as_str().unwrap_or_default().into(),
                    kv["value"].as_str().unwrap_or_default().into(),
                )
            })
            .collect();
        for (k, v) in acked {
            if stored.get(k) != Some(v) {
                bail!(
                    "node {id} lost acknowledged write {k}={v} (has {:?})",
                    stored.get(k)
                );
            }
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_never_loses_an_acknowledged_write() -> Result<()> {
    let mut c = Cluster::new(3, "ballast-crash-")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let first = leader(&http, &c, Duration::from_secs(20)).await?;
    let endpoints: Vec<String> = c.ports.keys().map(|id| c.endpoint(*id)).collect();
    let acked = Arc::new(Mutex::new(Vec::new()));

    // Phase 1: SIGKILL the leader under load, restart it.
    let until = Instant::now() + Duration::from_secs(4);
    let writers: Vec<_> = (0..4)
        .map(|w| tokio::spawn(load(endpoints.clone(), until, acked.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.kill9(first)?;
    for w in writers {
        w.await?;
    }
    c.start(first)?;
    leader(&http, &c, Duration::from_secs(20)).await?;

    // Phase 2: SIGKILL every node at once under load, restart them all.
    let until = Instant::now() + Duration::from_secs(3);
    let writers: Vec<_> = (4..8)
        .map(|w| tokio::spawn(load(endpoints.clone(), until, acked.clone(), w)))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for id in [1, 2, 3] {
        c.kill9(id)?;
    }
    for w in writers {
        w.await?;
    }
    for id in [1, 2, 3] {
        c.start(id)?;
    }
    leader(&http, &c, Duration::from_secs(20)).await?;

    let acked = acked
        .lock()
        .map(|a| a.clone())
        .map_err(|_| anyhow!("poisoned"))?;
    assert!(
        acked.len() > 100,
        "the load made progress ({} acknowledged writes)",
        acked.len()
    );
    // A linearizable read through the leader first, so every node has caught up
    // to everything committed before checking each node's local state.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let rev: Option<u64> = async {
            let r = http
                .put(format!("{}/v1/kv/crash-marker", endpoints[0]))
                .body("x")
                .send()
                .await
                .ok()?;
            r.json::<serde_json::Value>().await.ok()?["revision"].as_u64()
        }
        .await;
        if rev.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("cluster did not accept writes after restart\n{}", c.logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match check_all(&http, &c, &acked).await {
            Ok(()) => break,
            Err(e) if Instant::now() > deadline => return Err(e.context(c.logs())),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    Ok(())
}
