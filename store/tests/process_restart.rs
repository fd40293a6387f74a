//! Clean stops of real processes: three `ballastd` processes under continuous
//! write load are stopped with SIGTERM and started again, 12 times. Odd
//! rounds stop all three at once; even rounds stop the followers first, so
//! that the leader is stopped last with replication stalled and client writes
//! waiting for a commit that cannot come. Every stop must exit with status 0,
//! and at the end every acknowledged write must be readable on every node,
//! with its value or a later one.
//!
//! The target is a stop within 5 s; the test reports the times and asserts
//! only a generous bound against hangs.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use common::{leader, Cluster};

const ROUNDS: usize = 12;
const WRITERS: usize = 4;
const KEYS_PER_WRITER: u64 = 8;
/// New acknowledgements each round waits for before stopping the cluster, so
/// that every stop happens under load.
const WRITES_PER_ROUND: u64 = 20;
/// Against hangs only; see the module docs.
const HANG_GUARD: Duration = Duration::from_secs(10);
/// Writers stop by then whatever happens.
const LOAD_BUDGET: Duration = Duration::from_secs(300);

/// What the writers sent and what was acknowledged.
#[derive(Default)]
struct History {
    /// Per key, the revision and value of the newest acknowledged write.
    acked: BTreeMap<String, (u64, String)>,
    /// Per key, the highest sequence number ever sent (acknowledged or not).
    sent: BTreeMap<String, u64>,
    /// Acknowledged writes so far.
    acks: u64,
}

fn key_of(writer: usize, seq: u64) -> String {
    format!("restart/w{writer}/k{}", seq % KEYS_PER_WRITER)
}

fn value_of(writer: usize, seq: u64) -> String {
    format!("w{writer}-{seq}")
}

/// The writer and sequence number of a value made by [`value_of`].
fn parse_value(value: &str) -> Option<(usize, u64)> {
    let (w, seq) = value.strip_prefix('w')?.split_once('-')?;
    Some((w.parse().ok()?, seq.parse().ok()?))
}

/// Overwrites this writer's keys, one write at a time, through the nodes in
/// turn, until `stop` (or the load budget). Failures (node down, no leader,
/// timeout) are expected here; their outcome is unknown, so they are only
/// remembered as sent.
async fn writer(
    w: usize,
    endpoints: Vec<String>,
    history: Arc<Mutex<History>>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()?;
    let until = Instant::now() + LOAD_BUDGET;
    let mut seq = 0u64;
    while !stop.load(Ordering::Acquire) && Instant::now() < until {
        seq += 1;
        let (key, value) = (key_of(w, seq), value_of(w, seq));
        history
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .sent
            .insert(key.clone(), seq);
        let ep = &endpoints[(w + seq as usize) % endpoints.len()];
        let revision = async {
            let r = http
                .put(format!("{ep}/v1/kv/{key}"))
                .body(value.clone())
                .send()
                .await
                .ok()?;
            if r.status() != reqwest::StatusCode::OK {
                return None;
            }
            r.json::<serde_json::Value>().await.ok()?["revision"].as_u64()
        }
        .await;
        match revision {
            Some(rev) => {
                let mut h = history.lock().map_err(|_| anyhow!("poisoned"))?;
                h.acks += 1;
                let newest = h.acked.entry(key).or_insert((rev, value.clone()));
                if rev >= newest.0 {
                    *newest = (rev, value);
                }
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    Ok(())
}

/// Every acknowledged write is readable through node `id`: each key holds
/// its newest acknowledged value at that revision, or a value written to it
/// later (one whose acknowledgement was lost in a stop may still have been
/// committed).
async fn check_node(http: &reqwest::Client, c: &Cluster, id: u64, h: &History) -> Result<()> {
    let range: serde_json::Value = http
        .get(format!(
            "{}/v1/kv/restart/?prefix=true&limit=0",
            c.endpoint(id)
        ))
        .send()
        .await?
        .json()
        .await?;
    let stored: BTreeMap<&str, (u64, &str)> = range["kvs"]
        .as_array()
        .ok_or_else(|| anyhow!("no kvs from node {id}: {range}"))?
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap_or_default(),
                (
                    kv["mod_revision"].as_u64().unwrap_or(0),
                    kv["value"].as_str().unwrap_or_default(),
                ),
            )
        })
        .collect();
    for (key, (rev, value)) in &h.acked {
        let Some((stored_rev, stored_value)) = stored.get(key.as_str()) else {
            bail!("node {id} lost {key}: acknowledged {value} at revision {rev}, now absent");
        };
        let later_write = *stored_rev > *rev
            && parse_value(stored_value).is_some_and(|(w, seq)| {
                key_of(w, seq) == *key && seq <= h.sent.get(key).copied().unwrap_or(0)
            });
        let same_write = *stored_rev == *rev && stored_value == value;
        if !same_write && !later_write {
            bail!(
                "node {id} lost {key}: acknowledged {value} at revision {rev}, \
                 has {stored_value} at revision {stored_rev}"
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_keeps_acknowledged_writes() -> Result<()> {
    let mut c = Cluster::new(3, "ballast-restart-")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    leader(&http, &c, Duration::from_secs(20)).await?;
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, c.endpoints(), history.clone(), stop.clone())))
        .collect();
    let acks = || history.lock().map(|h| h.acks).unwrap_or(0);

    // (round, node, was it the leader, time from SIGTERM to exit)
    let mut stops: Vec<(usize, u64, bool, Duration)> = Vec::new();
    for round in 1..=ROUNDS {
        // --- load flowing through the cluster
        let target = acks() + WRITES_PER_ROUND;
        let deadline = Instant::now() + Duration::from_secs(30);
        while acks() < target {
            if Instant::now() > deadline {
                bail!("round {round}: writes stalled\n{}", c.logs());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let lead = leader(&http, &c, Duration::from_secs(20)).await?;

        // --- SIGTERM: all at once, or the followers first and the leader alone
        let mut exits = Vec::new();
        if round % 2 == 1 {
            exits.extend(c.terminate(&c.running(), HANG_GUARD).await?);
        } else {
            let followers: Vec<u64> = c.running().into_iter().filter(|id| *id != lead).collect();
            for id in followers {
                exits.extend(c.terminate(&[id], HANG_GUARD).await?);
            }
            // Let writes reach the leader, which can no longer commit them.
            tokio::time::sleep(Duration::from_millis(300)).await;
            exits.extend(c.terminate(&[lead], HANG_GUARD).await?);
        }
        for (id, status, took) in exits {
            if !status.success() {
                bail!(
                    "round {round}: node {id} exited with {status} after SIGTERM\n{}",
                    c.logs()
                );
            }
            stops.push((round, id, id == lead, took));
        }

        // --- restart on the same data directories
        for id in 1..=3 {
            c.start(id)?;
        }
        leader(&http, &c, Duration::from_secs(20)).await?;
    }

    stop.store(true, Ordering::Release);
    for w in writers {
        w.await??;
    }
    let mut times: Vec<Duration> = stops.iter().map(|(.., t)| *t).collect();
    times.sort();
    let slowest = stops.iter().max_by_key(|(.., t)| *t);
    eprintln!(
        "{} stops, all exit status 0; stop time median {:?}, max {:?} ({:?})",
        times.len(),
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
        slowest.map(|(round, id, leader, _)| format!(
            "round {round}, node {id}, {}",
            if *leader { "leader" } else { "follower" }
        )),
    );

    // --- every acknowledged write, on every node
    let h = std::mem::take(&mut *history.lock().map_err(|_| anyhow!("poisoned"))?);
    assert!(
        h.acks >= ROUNDS as u64 * WRITES_PER_ROUND,
        "the load made progress ({} acknowledged writes)",
        h.acks
    );
    for id in c.running() {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match check_node(&http, &c, id, &h).await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => return Err(e.context(c.logs())),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    Ok(())
}
