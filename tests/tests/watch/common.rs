use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{bail, Result};
use ballast_tests::sse::{SseEvent, WatchStream};
use ballast_tests::TestCluster;

/// The watch URL of node `id` for `query` (`prefix=true&start_revision=1`...).
pub fn url(tc: &TestCluster, id: u64, key: &str, query: &str) -> String {
    format!("{}/v1/watch/{key}?{query}", tc.endpoint(id))
}

/// Opens a watch and checks it was accepted.
pub async fn open(
    tc: &TestCluster,
    id: u64,
    key: &str,
    query: &str,
    last_id: Option<u64>,
) -> Result<WatchStream> {
    let w = WatchStream::open(tc.stream_http(), &url(tc, id, key, query), last_id).await?;
    if w.status != 200 {
        bail!("watch on node {id} answered {}", w.status);
    }
    Ok(w)
}

/// The change messages of `events`, checked to be ordered and unique (each
/// revision once, increasing) and consistent (`id` equals the revision, every
/// event of a message carries that revision).
pub fn changes(events: &[SseEvent]) -> Result<Vec<&SseEvent>> {
    let mut out: Vec<&SseEvent> = Vec::new();
    for e in events.iter().filter(|e| e.event == "change") {
        let rev = e.revision();
        if e.id != Some(rev) {
            bail!("message id {:?} is not its revision {rev}", e.id);
        }
        if let Some(prev) = out.last() {
            if rev <= prev.revision() {
                bail!(
                    "ordered/unique violated: revision {rev} after {}",
                    prev.revision()
                );
            }
        }
        for ev in e.data["events"].as_array().into_iter().flatten() {
            if ev["kv"]["mod_revision"].as_u64() != Some(rev) {
                bail!("atomic violated: event {ev} inside message of revision {rev}");
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// Writes `n` keys under `prefix` round-robin through every node; returns the
/// revisions the writes got.
pub async fn write_many(tc: &TestCluster, prefix: &str, n: usize) -> Result<BTreeSet<u64>> {
    let ids = tc.running();
    let mut revs = BTreeSet::new();
    for i in 0..n {
        let id = ids[i % ids.len()];
        revs.insert(
            tc.put(id, &format!("{prefix}k{}", i % 17), &format!("v{i}"))
                .await?,
        );
    }
    Ok(revs)
}

/// Generous wait for watch deliveries in tests.
pub const WAIT: Duration = Duration::from_secs(15);
