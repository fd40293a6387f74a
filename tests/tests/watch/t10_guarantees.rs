use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::Result;
use ballast_tests::TestCluster;
use tracing::info;

use crate::common::{changes, open, write_many, WAIT};

/// Ordered, unique and reliable: watchers on the leader and on a follower see
/// every revision of the written prefix, once each, in order — the same
/// sequence on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_unique_reliable_and_the_same_on_every_node() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc
        .ids()
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    let mut on_leader = open(&tc, leader, "g/", "prefix=true&start_revision=1", None).await?;
    let mut on_follower = open(&tc, follower, "g/", "prefix=true&start_revision=1", None).await?;
    let written = write_many(&tc, "g/", 200).await?;
    let last = *written.iter().last().expect("writes");
    let a = on_leader.read_until(last, WAIT).await?;
    let b = on_follower.read_until(last, WAIT).await?;
    let seq_a: Vec<u64> = changes(&a)?.iter().map(|e| e.revision()).collect();
    let seq_b: Vec<u64> = changes(&b)?.iter().map(|e| e.revision()).collect();
    assert_eq!(
        seq_a.iter().copied().collect::<BTreeSet<_>>(),
        written,
        "reliable: every write, no extra"
    );
    assert_eq!(
        seq_a, seq_b,
        "leader and follower watchers saw the same sequence"
    );
    assert_eq!(a, b, "byte-for-byte the same messages");
    tc.shutdown().await;
    Ok(())
}

/// Atomic: a transaction's events arrive in one message, never split.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_arrives_as_one_message() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    tc.put(1, "t/old", "x").await?;
    // The barrier makes "now" include the put above, even on a lagging follower.
    let mut w = open(
        &tc,
        2,
        "t/",
        "prefix=true&prev_kv=true&linearizable=true",
        None,
    )
    .await?;
    let resp: serde_json::Value = tc
        .http()
        .post(format!("{}/v1/txn", tc.endpoint(3)))
        .json(&serde_json::json!({"success": [
            {"put": {"key": "t/a", "value": "1"}},
            {"put": {"key": "t/b", "value": "2"}},
            {"delete": {"key": "t/old"}},
            {"put": {"key": "elsewhere", "value": "3"}}
        ]}))
        .send()
        .await?
        .json()
        .await?;
    let rev = resp["revision"].as_u64().expect("revision");
    let got = w.read_until(rev, WAIT).await?;
    let msgs = changes(&got)?;
    assert_eq!(msgs.len(), 1, "one message: {got:?}");
    assert_eq!(
        msgs[0].keys(),
        vec!["t/a", "t/b", "t/old"],
        "the prefix's events, in apply order"
    );
    assert_eq!(msgs[0].data["events"][2]["type"], "delete");
    assert_eq!(msgs[0].data["events"][2]["prev_kv"]["value"], "x");
    tc.shutdown().await;
    Ok(())
}

/// Resumable: from any retained revision, on any node, and with
/// `Last-Event-ID` after a disconnect, exactly the missing messages follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_from_any_revision_on_any_node() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let written: Vec<u64> = write_many(&tc, "r/", 60).await?.into_iter().collect();
    let last = *written.last().expect("writes");
    let mut full = open(&tc, 1, "r/", "prefix=true&start_revision=1", None).await?;
    let reference: Vec<_> = full.read_until(last, WAIT).await?;
    let reference: Vec<u64> = changes(&reference)?.iter().map(|e| e.revision()).collect();
    for (i, start) in [written[0], written[10], written[59]]
        .into_iter()
        .enumerate()
    {
        let node = 1 + (i as u64 % 3);
        let mut w = open(
            &tc,
            node,
            "r/",
            &format!("prefix=true&start_revision={start}"),
            None,
        )
        .await?;
        let got = w.read_until(last, WAIT).await?;
        let got: Vec<u64> = changes(&got)?.iter().map(|e| e.revision()).collect();
        let expected: Vec<u64> = reference.iter().copied().filter(|r| *r >= start).collect();
        assert_eq!(got, expected, "from {start} on node {node}");
    }
    info!(
        "--- disconnect after revision {}, resume on another node",
        written[29]
    );
    let mut first = open(&tc, 1, "r/", "prefix=true&start_revision=1", None).await?;
    let part = first.read_until(written[29], WAIT).await?;
    drop(first);
    let seen = changes(&part)?.last().map(|e| e.revision()).expect("seen");
    let mut again = open(&tc, 3, "r/", "prefix=true&start_revision=1", Some(seen)).await?;
    let rest = again.read_until(last, WAIT).await?;
    let mut all: Vec<u64> = changes(&part)?.iter().map(|e| e.revision()).collect();
    all.extend(changes(&rest)?.iter().map(|e| e.revision()));
    assert_eq!(
        all, reference,
        "no gap and no duplicate across the reconnect"
    );
    tc.shutdown().await;
    Ok(())
}

/// Bookmarkable: a progress message at R comes after every event up to R, and
/// R reaches the last write once the writes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_bookmarks_cover_everything_before_them() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let mut w = open(
        &tc,
        2,
        "b/",
        "prefix=true&progress_notify=true&progress_interval_ms=200",
        None,
    )
    .await?;
    let mut other = open(
        &tc,
        3,
        "elsewhere/",
        "prefix=true&progress_notify=true&progress_interval_ms=200",
        None,
    )
    .await?;
    let written = write_many(&tc, "b/", 30).await?;
    let last = *written.iter().last().expect("writes");
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let ev = w.next(WAIT).await?.expect("stream open");
        match ev.event.as_str() {
            "change" => {
                seen.insert(ev.revision());
            }
            "progress" => {
                let r = ev.revision();
                let due: BTreeSet<u64> = written.iter().copied().filter(|w| *w <= r).collect();
                assert!(
                    due.is_subset(&seen),
                    "progress at {r} before all its events: {due:?} vs {seen:?}"
                );
                assert_eq!(ev.id, Some(r), "a bookmark's id resumes after it");
                if r >= last {
                    break;
                }
            }
            other => panic!("unexpected {other}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no bookmark reached {last}"
        );
    }
    info!("--- a watcher of untouched keys still gets bookmarks that advance");
    let mut latest = 0;
    while latest < last {
        let ev = other.next(WAIT).await?.expect("open");
        assert_eq!(ev.event, "progress", "no change of elsewhere/: {ev:?}");
        latest = ev.revision();
    }
    tc.shutdown().await;
    Ok(())
}

/// A watch that asks for a read-index barrier starts from a state that
/// includes every write acknowledged before it, even on a lagging node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linearizable_start_includes_acknowledged_writes() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let rev = tc.put(1, "lin/k", "v").await?;
    let mut w = open(
        &tc,
        3,
        "lin/",
        "prefix=true&linearizable=true&progress_notify=true&progress_interval_ms=100",
        None,
    )
    .await?;
    let ev = w.next(WAIT).await?.expect("open");
    assert_eq!(ev.event, "progress");
    assert!(
        ev.revision() >= rev,
        "started at {} before acknowledged write {rev}",
        ev.revision()
    );
    tc.shutdown().await;
    Ok(())
}
