//! Tests that force races with failpoints. Failpoints are process-wide, so
//! these run in their own test binary, built with the `failpoints` feature:
//! `cargo test -p ballast-tests --features failpoints --test failpoints`.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use ballast_client::{Client, PutOptions};
use ballast_tests::answer_drop::AnswerDropProxy;
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;
use openraft::async_runtime::watch::WatchReceiver;
use tracing::info;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_build_and_install_on_one_node_never_clash() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| c.snapshot_logs = 50).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let lagging = tc.others(leader)[0];

    info!("--- cut node {lagging} off and write past the leader's snapshot");
    for i in 0..20 {
        tc.put(leader, &format!("fp/k{i}"), "before").await?;
    }
    tc.isolate(lagging)?;
    let mut rev = 0;
    for i in 0..300 {
        rev = tc
            .put(leader, &format!("fp/k{}", i % 40), &format!("v{i}"))
            .await?;
    }

    info!("--- node {lagging} builds a snapshot of its old state; the leader's arrives meanwhile");
    // The build pauses with its file written but before it cleans up older
    // files: an install running then would have its file removed by the
    // build's clean-up, and remove the build's file in its own.
    fail::cfg("snapshot-build-written", "sleep(2000)").map_err(anyhow::Error::msg)?;
    let node = tc.node(lagging)?.clone();
    let build = tokio::spawn(async move { node.raft().trigger().snapshot().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    tc.heal(lagging)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tc.node(lagging)?.applied().revision < rev {
        if Instant::now() > deadline {
            bail!("node {lagging} did not catch up");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    build.await??;
    fail::remove("snapshot-build-written");
    // `trigger` returns once the build is asked for: give the paused build
    // time to finish whatever it still does.
    tokio::time::sleep(Duration::from_millis(3000)).await;

    // The build that waited for the install ran on the installed state: the
    // node's snapshot is not older than what it installed.
    let installed_index = tc
        .node(lagging)?
        .raft()
        .metrics()
        .borrow_watched()
        .snapshot
        .map(|id| id.index)
        .unwrap_or(0);
    assert!(installed_index > 0, "node {lagging} has a snapshot");

    info!("--- the node is healthy: same state, one snapshot file, takes writes");
    let installed = tc.node(lagging)?.raft().metrics().borrow_watched().snapshot;
    assert!(installed.is_some(), "node {lagging} has a snapshot");
    let files =
        ballast_tests::wait_single_snapshot(&tc.config(lagging).data_dir, Duration::from_secs(60))
            .await;
    assert!(
        files.len() == 1 && files[0].ends_with(".snap"),
        "node {lagging} keeps exactly its current snapshot: {files:?}"
    );
    // Snapshot files are named after the index after their last entry.
    let named: u64 = files[0]
        .trim_start_matches("snap-")
        .trim_end_matches(".snap")
        .parse()?;
    assert!(
        named > installed_index,
        "the snapshot file {} is older than the installed snapshot at {installed_index}",
        files[0]
    );
    let after = tc.put(lagging, "fp/after", "x").await?;
    tc.wait_applied(after, Duration::from_secs(10)).await?;
    let mut hashes = Vec::new();
    for id in tc.ids() {
        hashes.push(tc.status(id).await?["state_hash"].clone());
    }
    assert!(hashes.windows(2).all(|w| w[0] == w[1]), "{hashes:?}");
    for i in 260..300 {
        let key = format!("fp/k{}", i % 40);
        assert_eq!(
            tc.value(lagging, &key, "serializable").await?,
            Some(format!("v{i}"))
        );
    }
    tc.shutdown().await;
    Ok(())
}

/// The first change message of a watch on `key` from `start_revision`.
async fn first_change(tc: &TestCluster, id: u64, key: &str, start_revision: u64) -> Result<u64> {
    let url = format!(
        "{}/v1/watch/{key}?start_revision={start_revision}",
        tc.endpoint(id)
    );
    let mut w = WatchStream::open(tc.stream_http(), &url, None).await?;
    if w.status != 200 {
        bail!("watch on node {id} answered {}", w.status);
    }
    while let Some(e) = w.next(Duration::from_secs(10)).await? {
        if e.event == "change" {
            return Ok(e.revision());
        }
    }
    bail!("the watch on node {id} ended without a change")
}

// The planted bugs touch only linearizable reads on a cut-off node and resumed
// watches, which no other test of this binary uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_bugs_are_on_only_while_their_failpoints_return() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];

    info!("--- a resumed watch gets its first revision, unless the skip is planted");
    let first = tc.put(leader, "planted/w", "a").await?;
    tc.put(leader, "planted/w", "b").await?;
    assert_eq!(first_change(&tc, leader, "planted/w", first).await?, first);
    fail::cfg("unsafe-watch-skip-on-resume", "return").map_err(anyhow::Error::msg)?;
    let skipped = first_change(&tc, leader, "planted/w", first).await;
    fail::remove("unsafe-watch-skip-on-resume");
    assert_eq!(skipped?, first + 1);

    info!("--- cut node {follower} off: its linearizable reads are refused");
    let rev = tc.put(leader, "planted/r", "old").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    tc.isolate(follower)?;
    tc.put(leader, "planted/r", "new").await?;
    let (status, body) = tc.get(follower, "planted/r", "linearizable").await?;
    assert_ne!(status, 200, "a cut-off node answered {body}");

    info!("--- with the stale-read bug planted, node {follower} answers from its old state");
    fail::cfg("unsafe-local-linearizable-reads", "return").map_err(anyhow::Error::msg)?;
    let stale = tc.value(follower, "planted/r", "linearizable").await;
    fail::remove("unsafe-local-linearizable-reads");
    assert_eq!(stale?.as_deref(), Some("old"));
    tc.heal(follower)?;
    tc.shutdown().await;
    Ok(())
}

/// The exactly-once check of `client/t40_exactly_once` can fail: with the
/// session table's replay planted away, a write whose answer was lost is
/// applied a second time by the client's retry (its version goes up by two),
/// and without it the same sequence applies once. Only session writes of a
/// retried request replay, which no other test of this binary makes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_double_apply_is_visible_in_the_version() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let upstream = tc.endpoint(leader).trim_start_matches("http://").to_owned();
    let proxy = AnswerDropProxy::start(upstream).await?;
    let direct = Client::new(tc.ids().iter().map(|id| tc.endpoint(*id)).collect())?;
    let client = Client::builder(vec![proxy.url()])
        .request_timeout(Duration::from_secs(5))
        .build()?;
    let version = |key: &'static str| {
        let direct = direct.clone();
        async move {
            let kv = direct.get(key).await?.kv;
            anyhow::Ok(kv.map(|kv| kv.version).unwrap_or(0))
        }
    };

    info!("--- a lost answer, retried: applied once");
    direct.put("/planted/once", "v0").await?;
    proxy.arm("PUT /v1/kv//planted/once");
    client
        .put_with("/planted/once", "v1", PutOptions { prev_kv: false })
        .await?;
    assert_eq!(proxy.dropped(), 1, "the first answer was dropped");
    assert_eq!(version("/planted/once").await?, 2);

    info!("--- the same with the replay planted away: applied twice");
    direct.put("/planted/twice", "v0").await?;
    fail::cfg("unsafe-session-double-apply", "return").map_err(anyhow::Error::msg)?;
    proxy.arm("PUT /v1/kv//planted/twice");
    let put = client
        .put_with("/planted/twice", "v1", PutOptions { prev_kv: false })
        .await;
    fail::remove("unsafe-session-double-apply");
    put?;
    assert_eq!(proxy.dropped(), 2, "the second answer was dropped");
    assert_eq!(
        version("/planted/twice").await?,
        3,
        "the planted bug applied it twice"
    );
    tc.shutdown().await;
    Ok(())
}

/// The replica checker's planted bug (`ReplicaBuilder::unsafe_skip_first_change`,
/// the client's `planted-bugs` feature, which this binary's `failpoints`
/// feature turns on) is a real one: the replica's revision passes a write
/// whose change it never applied. Without the switch the same sequence is
/// applied in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_replica_skip_loses_a_change_its_revision_passed() -> Result<()> {
    let tc = TestCluster::start(1).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let endpoints = vec![tc.endpoint(leader)];
    let client = Client::new(endpoints.clone())?;
    for (planted, prefix) in [(false, "/honest/"), (true, "/planted/")] {
        info!("--- a replica of {prefix}, bug planted: {planted}");
        let replica = ballast_client::Replica::builder(endpoints.clone())
            .prefix(prefix)
            .unsafe_skip_first_change(planted)
            .start()
            .await?;
        // The watch stream is open: the next change is its first.
        let deadline = Instant::now() + Duration::from_secs(10);
        while replica.status().endpoint.is_none() {
            if Instant::now() >= deadline {
                bail!("the replica of {prefix} never connected its watch");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let a = format!("{prefix}a");
        let b = format!("{prefix}b");
        client.put(&a, "1").await?;
        let last = client.put(&b, "2").await?.revision;
        replica
            .wait_for_revision(last, Duration::from_secs(10))
            .await?;
        assert_eq!(
            replica.get(&b).map(|kv| kv.value.clone()),
            Some(b"2".to_vec())
        );
        let got_a = replica.get(&a).map(|kv| kv.value.clone());
        if planted {
            assert_eq!(
                got_a, None,
                "at revision {last} the planted replica lacks the first change of its stream"
            );
        } else {
            assert_eq!(got_a, Some(b"1".to_vec()));
        }
        replica.shutdown().await;
    }
    tc.shutdown().await;
    Ok(())
}

/// A watch without a start revision starts after what its node has applied
/// (after the read-index barrier when `linearizable=true`), even while the
/// node's watch hub has not loaded that revision yet: it never replays a
/// change made before it was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_from_now_starts_after_the_applied_revision_while_the_hub_lags() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let follower = tc.others(leader)[0];
    // A watcher on the follower makes its hub load revisions on a blocking
    // thread, where the failpoint holds it back.
    let other = format!("{}/v1/watch/elsewhere?prefix=true", tc.endpoint(follower));
    let _other = WatchStream::open(tc.stream_http(), &other, None).await?;
    fail::cfg("watch-feed", "sleep(1500)").map_err(anyhow::Error::msg)?;
    let result = async {
        for linearizable in [true, false] {
            let before = tc.put(leader, "now/before", "x").await?;
            if !linearizable {
                tc.wait_applied(before, Duration::from_secs(10)).await?;
            }
            let url = format!(
                "{}/v1/watch/now/?prefix=true&linearizable={linearizable}",
                tc.endpoint(follower)
            );
            let mut w = WatchStream::open(tc.stream_http(), &url, None).await?;
            if w.status != 200 {
                bail!("watch on node {follower} answered {}", w.status);
            }
            let after = tc.put(leader, "now/after", "y").await?;
            let got = w.read_until(after, Duration::from_secs(20)).await?;
            let first = got
                .iter()
                .find(|e| e.event == "change")
                .map(|e| e.revision());
            assert_eq!(
                first,
                Some(after),
                "linearizable={linearizable}: the first change is the one made after the watch opened \
                 (revision {before} came before it): {got:?}"
            );
        }
        Ok(())
    }
    .await;
    fail::remove("watch-feed");
    result?;
    tc.shutdown().await;
    Ok(())
}
