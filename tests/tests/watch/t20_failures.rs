use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{changes, open, url, write_many, WAIT};

/// Across a leader kill and a restart: a watcher on a surviving follower keeps
/// going, and a watcher whose node dies resumes on another node with
/// `Last-Event-ID`; together they see every write once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_survive_leader_kill_restart_and_reconnect() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let third = tc
        .ids()
        .into_iter()
        .find(|id| *id != leader && *id != follower)
        .expect("third");
    let mut steady = open(&tc, follower, "f/", "prefix=true&start_revision=1", None).await?;
    let mut on_leader = open(&tc, leader, "f/", "prefix=true&start_revision=1", None).await?;

    let mut written: BTreeSet<u64> = write_many(&tc, "f/", 50).await?;
    let first_half = *written.iter().last().expect("writes");
    let seen_before = on_leader.read_until(first_half, WAIT).await?;

    info!("--- kill the leader {leader}; its watcher resumes on node {third}");
    tc.kill(leader).await?;
    tc.wait_new_leader(leader, Duration::from_secs(15)).await?;
    let resume_at = changes(&seen_before)?.last().map(|e| e.revision());
    let mut resumed = WatchStream::open(
        tc.stream_http(),
        &url(&tc, third, "f/", "prefix=true&start_revision=1"),
        resume_at,
    )
    .await?;
    assert_eq!(resumed.status, 200);
    written.extend(write_many(&tc, "f/", 50).await?);

    info!("--- restart the old leader; writes go on");
    tc.restart(leader).await?;
    tc.wait_leader(Duration::from_secs(15)).await?;
    written.extend(write_many(&tc, "f/", 50).await?);
    let last = *written.iter().last().expect("writes");

    let all_steady = steady.read_until(last, WAIT).await?;
    let steady_revs: Vec<u64> = changes(&all_steady)?.iter().map(|e| e.revision()).collect();
    assert_eq!(
        steady_revs.iter().copied().collect::<BTreeSet<_>>(),
        written,
        "follower watcher: all, once"
    );

    let rest = resumed.read_until(last, WAIT).await?;
    let mut stitched: Vec<u64> = changes(&seen_before)?
        .iter()
        .map(|e| e.revision())
        .collect();
    stitched.extend(changes(&rest)?.iter().map(|e| e.revision()));
    assert_eq!(
        stitched, steady_revs,
        "resumed watcher: same sequence, no gap, no duplicate"
    );

    info!("--- and a watcher on the restarted node replays the same history");
    let mut replay = open(&tc, leader, "f/", "prefix=true&start_revision=1", None).await?;
    let replayed = replay.read_until(last, WAIT).await?;
    let replayed: Vec<u64> = changes(&replayed)?.iter().map(|e| e.revision()).collect();
    assert_eq!(replayed, steady_revs);
    tc.shutdown().await;
    Ok(())
}

/// A watcher that does not read while many revisions go by is not buffered
/// without limit: it falls out of the in-memory window and is caught up from
/// storage, in order, and the writes were never held up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_watcher_catches_up_from_storage() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| c.watch_window = 16).await?;
    let mut fast_seen = Vec::new();
    let mut slow = open(&tc, 2, "s/", "prefix=true", None).await?;
    let mut fast = open(&tc, 2, "s/", "prefix=true", None).await?;
    // 100 x 200 KiB: far more than the socket buffers hold, so the slow
    // stream stops being polled and falls out of the 16-revision window.
    let value = "x".repeat(200 * 1024);
    let mut written = BTreeSet::new();
    for i in 0..100 {
        written.insert(
            tc.put(1 + (i % 3), &format!("s/k{}", i % 7), &value)
                .await?,
        );
        if i % 25 == 0 {
            // Keep the fast watcher drained as it goes.
            let last = *written.iter().last().expect("writes");
            fast_seen_push(&mut fast_seen, fast.read_until(last, WAIT).await?);
        }
    }
    let last = *written.iter().last().expect("writes");
    fast_seen_push(&mut fast_seen, fast.read_until(last, WAIT).await?);
    // Only now does the slow one start reading.
    let slow_seen = slow.read_until(last, WAIT).await?;
    let a: Vec<u64> = changes(&fast_seen)?.iter().map(|e| e.revision()).collect();
    let b: Vec<u64> = changes(&slow_seen)?.iter().map(|e| e.revision()).collect();
    assert_eq!(a, b);
    assert_eq!(b.iter().copied().collect::<BTreeSet<_>>(), written);
    let metrics = tc
        .http()
        .get(format!("{}/metrics", tc.endpoint(2)))
        .send()
        .await?
        .text()
        .await?;
    let catchup: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ballast_watch_catchup_revisions_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        catchup > 0,
        "the slow watcher read history from storage:\n{metrics}"
    );
    tc.shutdown().await;
    Ok(())
}

fn fast_seen_push(
    all: &mut Vec<ballast_tests::sse::SseEvent>,
    more: Vec<ballast_tests::sse::SseEvent>,
) {
    all.extend(more);
}
