//! Membership changes and leader transfer, under write load: grow and shrink,
//! remove the leader, replace a dead node, the catch-up and one-at-a-time
//! rules, joins refused, and peers that address each other by DNS name.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ballast_store::ServerError;
use ballast_tests::TestCluster;
use reqwest::Method;
use serde_json::{json, Value};
use tracing::info;

/// Writes `load/N` keys through the given endpoints, one at a time, until
/// stopped (at most `MAX_WRITES` or `MAX_TIME`), and remembers every
/// acknowledged write.
struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<BTreeMap<String, String>>,
}

const MAX_WRITES: usize = 20_000;
const MAX_TIME: Duration = Duration::from_secs(120);
/// The fewest acknowledged writes a load makes before it stops.
const MIN_WRITES: usize = 30;

impl Load {
    fn start(endpoints: Vec<String>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let acked_count = Arc::new(AtomicUsize::new(0));
        let count = acked_count.clone();
        let task = tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("http client");
            let mut acked = BTreeMap::new();
            let started = Instant::now();
            let mut i = 0usize;
            while !flag.load(Ordering::Relaxed) && i < MAX_WRITES && started.elapsed() < MAX_TIME {
                let key = format!("load/{i}");
                let value = format!("v{i}");
                let endpoint = &endpoints[i % endpoints.len()];
                if let Ok(resp) = http
                    .put(format!("{endpoint}/v1/kv/{key}"))
                    .body(value.clone())
                    .send()
                    .await
                {
                    if resp.status().is_success() {
                        acked.insert(key, value);
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            acked
        });
        Load {
            stop,
            acked: acked_count,
            task,
        }
    }

    /// Stops the load once it has made at least `MIN_WRITES` acknowledged
    /// writes (or after 30 s), and returns them.
    async fn finish(self) -> Result<BTreeMap<String, String>> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked.load(Ordering::Relaxed) < MIN_WRITES && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.context("load task")
    }
}

/// Every acknowledged write reads back (linearizably) through `via`.
async fn check_acked(tc: &TestCluster, via: u64, acked: &BTreeMap<String, String>) -> Result<()> {
    assert!(
        acked.len() >= MIN_WRITES,
        "the load made too few writes: {}",
        acked.len()
    );
    let resp: Value = tc
        .http()
        .get(format!("{}/v1/kv/load/?prefix=true", tc.endpoint(via)))
        .send()
        .await?
        .json()
        .await?;
    let found: BTreeMap<String, String> = resp["kvs"]
        .as_array()
        .context("kvs")?
        .iter()
        .map(|kv| {
            (
                kv["key"].as_str().unwrap_or_default().to_string(),
                kv["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for (key, value) in acked {
        assert_eq!(
            found.get(key),
            Some(value),
            "acknowledged write {key} lost (read through node {via})"
        );
    }
    Ok(())
}

/// Every running, connected node has applied the same revision and state.
async fn converged(tc: &TestCluster, ids: &[u64]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Vec::new();
        for id in ids {
            let s = tc.node(*id)?.status()?;
            seen.push((s.revision, s.state_hash));
        }
        if seen.windows(2).all(|w| w[0] == w[1]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nodes {ids:?} did not converge: {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_voters(tc: &TestCluster, via: u64, want: &[u64]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (voters, _) = tc.voters_and_learners(via)?;
        if voters == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {via} sees voters {voters:?}, expected {want:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn remove(tc: &TestCluster, via: u64, id: u64) -> Result<Value> {
    let (status, doc) = tc
        .admin(via, Method::DELETE, &format!("/v1/members/{id}"), None)
        .await?;
    if status != 200 {
        bail!("removing {id} through {via}: {status} {doc}");
    }
    Ok(doc)
}

/// A removed node answers `410 removed` with the reason, and its status
/// says so.
async fn says_removed(tc: &TestCluster, id: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = tc
            .http()
            .get(format!("{}/v1/kv/load/0", tc.endpoint(id)))
            .send()
            .await?;
        let status = resp.status().as_u16();
        let doc: Value = resp.json().await.unwrap_or(Value::Null);
        if status == 410 {
            assert_eq!(doc["error"]["code"], "removed", "{doc}");
            let message = doc["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("removed"), "{message}");
            let s = tc.status(id).await?;
            assert_eq!(s["raft"]["state"], "Removed", "{s}");
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {id} still serves after its removal: {status} {doc}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_voters_and_shrink_back_under_write_load() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let load = Load::start(vec![tc.endpoint(1), tc.endpoint(2)]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    info!("--- join 4 and 5 as learners, then promote them");
    for _ in 0..2 {
        let id = tc.join_node().await?;
        let (_, learners) = tc.voters_and_learners(1)?;
        assert!(learners.contains(&id), "{id} joined as a learner");
        tc.promote_when_ready(1, id, Duration::from_secs(20))
            .await?;
    }
    wait_voters(&tc, 1, &[1, 2, 3, 4, 5]).await?;
    let (status, doc) = tc.admin(3, Method::GET, "/v1/members", None).await?;
    assert_eq!(status, 200, "{doc}");
    let members = doc["members"].as_array().context("members")?;
    assert_eq!(members.len(), 5, "{doc}");
    assert!(
        members.iter().all(|m| m["role"] != "learner"),
        "every member votes: {doc}"
    );

    info!("--- shrink back to 3: remove 5, then 4");
    remove(&tc, 2, 5).await?;
    remove(&tc, 1, 4).await?;
    wait_voters(&tc, 1, &[1, 2, 3]).await?;
    says_removed(&tc, 4).await?;
    says_removed(&tc, 5).await?;

    let acked = load.finish().await?;
    info!(writes = acked.len(), "load done");
    check_acked(&tc, 1, &acked).await?;
    converged(&tc, &[1, 2, 3]).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_leadership_over_first() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let others: Vec<u64> = tc.others(leader);
    let load = Load::start(others.iter().map(|i| tc.endpoint(*i)).collect());
    tokio::time::sleep(Duration::from_millis(300)).await;

    info!(
        leader,
        "--- remove the leader, asked through the leader itself"
    );
    let doc = remove(&tc, leader, leader).await?;
    let new_leader = doc["leader"].as_u64().context("leader")?;
    assert_ne!(new_leader, leader, "{doc}");
    wait_voters(&tc, others[0], &others).await?;
    says_removed(&tc, leader).await?;
    assert_eq!(tc.wait_leader(Duration::from_secs(10)).await?, new_leader);

    let acked = load.finish().await?;
    check_acked(&tc, others[0], &acked).await?;
    converged(&tc, &others).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_while_cut_off_learns_it_when_it_is_back() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let cut = tc.others(leader)[0];
    let rev = tc.put(leader, "before", "x").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    // It must have seen itself in a membership before it can be removed.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    info!(cut, "--- cut a follower off, remove it, then let it back");
    tc.isolate(cut)?;
    remove(&tc, leader, cut).await?;
    assert!(
        tc.node(cut)?.removed().is_none(),
        "it cannot know yet: it was cut off"
    );
    tc.heal(cut)?;
    says_removed(&tc, cut).await?;
    let reason = tc.node(cut)?.removed().context("a reason")?;
    assert!(reason.contains("while it was down or cut off"), "{reason}");
    let others: Vec<u64> = tc.others(cut);
    tc.put(others[0], "after", "y").await?;
    converged(&tc, &others).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_replaced_while_writes_flow() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let dead = tc.others(leader)[0];
    let alive: Vec<u64> = tc.others(dead);
    let load = Load::start(alive.iter().map(|i| tc.endpoint(*i)).collect());
    tokio::time::sleep(Duration::from_millis(300)).await;

    info!(
        dead,
        "--- kill a follower, remove it, wipe it, join it again, promote it"
    );
    tc.kill(dead).await?;
    remove(&tc, alive[0], dead).await?;
    wait_voters(&tc, alive[0], &alive).await?;
    tc.rejoin_wiped(dead).await?;
    let (_, learners) = tc.voters_and_learners(alive[0])?;
    assert_eq!(learners, vec![dead], "it comes back as a learner");
    tc.promote_when_ready(alive[1], dead, Duration::from_secs(20))
        .await?;
    wait_voters(&tc, alive[0], &[1, 2, 3]).await?;

    let acked = load.finish().await?;
    check_acked(&tc, dead, &acked).await?;
    converged(&tc, &[1, 2, 3]).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_learner_joins_again_and_catches_up() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    for i in 0..50 {
        tc.put(leader, &format!("before/{i}"), "x").await?;
    }
    let learner = tc.join_node().await?;
    let rev = tc.put(leader, "joined", "yes").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;

    info!(
        learner,
        "--- wipe the learner and let it join again, still a learner"
    );
    tc.kill(learner).await?;
    for i in 0..50 {
        tc.put(leader, &format!("while-down/{i}"), "y").await?;
    }
    tc.rejoin_wiped(learner).await?;
    let rev = tc.put(leader, "after", "z").await?;
    tc.wait_applied(rev, Duration::from_secs(20)).await?;
    converged(&tc, &tc.ids()).await?;
    let leader_now = tc.wait_leader(Duration::from_secs(10)).await?;
    assert!(
        tc.node(leader_now)?.raft().is_leader(),
        "the leader survived the learner's reverted log"
    );
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_waits_for_catch_up_and_changes_go_one_at_a_time() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    for i in 0..30 {
        tc.put(leader, &format!("pre/{i}"), "x").await?;
    }
    // A learner whose address nothing listens on never catches up.
    let nowhere = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let add = json!({ "id": 9, "client_addr": nowhere, "peer_addr": nowhere });
    let (status, doc) = tc
        .admin(2, Method::POST, "/v1/members", Some(add.clone()))
        .await?;
    assert_eq!(status, 200, "{doc}");
    // Adding the same learner again is accepted (a join retry); another id
    // at the same address is not.
    let (status, _) = tc
        .admin(3, Method::POST, "/v1/members", Some(add.clone()))
        .await?;
    assert_eq!(status, 200);
    let (status, doc) = tc
        .admin(
            1,
            Method::POST,
            "/v1/members",
            Some(json!({ "id": 10, "client_addr": nowhere, "peer_addr": nowhere })),
        )
        .await?;
    assert_eq!(
        (status, &doc["error"]["code"]),
        (409, &json!("member_exists"))
    );

    let (status, doc) = tc
        .admin(1, Method::POST, "/v1/members/9/promote", None)
        .await?;
    assert_eq!(status, 409, "{doc}");
    assert_eq!(doc["error"]["code"], "learner_not_ready", "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("90%"),
        "{doc}"
    );
    // Bad input is refused and changes nothing.
    for (method, path, body) in [
        (Method::POST, "/v1/members/0/promote", None),
        (Method::POST, "/v1/members/abc/promote", None),
        (Method::DELETE, "/v1/members/77", None),
        (Method::POST, "/v1/members", Some(json!({ "id": 5 }))),
        (
            Method::POST,
            "/v1/members",
            Some(json!({ "id": 5, "client_addr": "no port", "peer_addr": "a:1" })),
        ),
        (
            Method::POST,
            "/v1/leader/transfer",
            Some(json!({ "to": 9 })),
        ),
        (
            Method::POST,
            "/v1/leader/transfer",
            Some(json!({ "to": 77 })),
        ),
    ] {
        let (status, doc) = tc.admin(2, method.clone(), path, body).await?;
        assert!(
            (400..500).contains(&status) && doc["error"]["message"].is_string(),
            "{method} {path}: {status} {doc}"
        );
    }
    let (voters, learners) = tc.voters_and_learners(1)?;
    assert_eq!((voters, learners), (vec![1, 2, 3], vec![9]));

    info!("--- a change that cannot commit holds the next one off with 409");
    let followers: Vec<u64> = tc.others(leader);
    for f in &followers {
        tc.isolate(*f)?;
    }
    let endpoint = tc.endpoint(leader);
    let http = tc.http().clone();
    let first = tokio::spawn(async move {
        http.delete(format!("{endpoint}/v1/members/9"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, doc) = tc
        .admin(leader, Method::POST, "/v1/members/9/promote", None)
        .await?;
    assert_eq!(status, 409, "{doc}");
    assert_eq!(doc["error"]["code"], "change_in_progress", "{doc}");
    let first = first.await??;
    info!(first, "the first change, without a quorum");
    for f in &followers {
        tc.heal(*f)?;
    }
    tc.wait_leader(Duration::from_secs(20)).await?;

    info!("--- once it settles, the learner can be removed");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, learners) = tc.voters_and_learners(leader)?;
        if learners.is_empty() {
            break;
        }
        let (status, doc) = tc.admin(1, Method::DELETE, "/v1/members/9", None).await?;
        if status == 200 || Instant::now() > deadline {
            assert_eq!(status, 200, "{doc}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rev = tc.put(1, "after", "ok").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_transfer_to_a_named_node_under_write_load() -> Result<()> {
    let tc = TestCluster::start(3).await?;
    let load = Load::start(tc.ids().iter().map(|i| tc.endpoint(*i)).collect());
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..3 {
        let leader = tc.wait_leader(Duration::from_secs(10)).await?;
        let to = tc.others(leader)[0];
        // Asked through a node that is neither the leader nor the target
        // when there is one.
        let via = tc
            .ids()
            .into_iter()
            .find(|i| *i != leader && *i != to)
            .unwrap_or(leader);
        info!(round, leader, to, via, "--- transfer");
        let (status, doc) = tc
            .admin(
                via,
                Method::POST,
                "/v1/leader/transfer",
                Some(json!({ "to": to })),
            )
            .await?;
        assert_eq!(status, 200, "{doc}");
        assert_eq!(doc["leader"], to, "{doc}");
        assert_eq!(tc.wait_leader(Duration::from_secs(10)).await?, to);
    }
    let acked = load.finish().await?;
    check_acked(&tc, 1, &acked).await?;
    converged(&tc, &[1, 2, 3]).await?;
    tc.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_to_the_wrong_cluster_or_as_a_wiped_voter_are_refused() -> Result<()> {
    let mut a = TestCluster::start(3).await?;
    let b = TestCluster::start(1).await?;
    let joined = a.join_node().await?;
    let leader = a.wait_leader(Duration::from_secs(10)).await?;
    let rev = a.put(leader, "a", "1").await?;
    a.wait_applied(rev, Duration::from_secs(10)).await?;
    a.kill(joined).await?;

    info!("--- the joined node, restarted with --join pointing at cluster B");
    let mut config = a.config(joined).clone();
    config.join = Some(b.endpoint(1));
    let err = match ballast_store::start(config, None).await {
        Ok(node) => {
            node.shutdown().await;
            bail!("a node of cluster A joined cluster B");
        }
        Err(e) => e,
    };
    assert!(
        matches!(err, ServerError::Identity(_)) && err.to_string().contains("belongs to cluster"),
        "{err}"
    );

    info!("--- a voter with a wiped data dir may not join as if new");
    let victim = a
        .ids()
        .into_iter()
        .find(|i| *i != leader && *i != joined)
        .context("a voter")?;
    a.kill(victim).await?;
    let err = a
        .rejoin_wiped(victim)
        .await
        .expect_err("a wiped voter must be refused");
    let message = format!("{err:#}");
    assert!(
        message.contains("is a voter of cluster") && message.contains("Remove it first"),
        "{message}"
    );
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_address_each_other_by_dns_name() -> Result<()> {
    let tc = TestCluster::start_with(3, |c| {
        if let Some(cluster) = &c.initial_cluster {
            c.initial_cluster = Some(cluster.replace("127.0.0.1", "localhost"));
        }
    })
    .await?;
    let (status, doc) = tc.admin(1, Method::GET, "/v1/members", None).await?;
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["members"]
            .as_array()
            .context("members")?
            .iter()
            .all(|m| m["peer_addr"]
                .as_str()
                .unwrap_or_default()
                .starts_with("localhost:")),
        "{doc}"
    );
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let rev = tc.put(leader, "dns", "yes").await?;
    tc.wait_applied(rev, Duration::from_secs(10)).await?;
    tc.shutdown().await;
    Ok(())
}
