//! Many writes at once, through every node: the leader proposes the writes
//! that wait together and followers forward them together, yet every write
//! is applied once and answered with its own result.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use ballast_tests::sse::WatchStream;
use ballast_tests::TestCluster;
use tracing::info;

const KEYS: usize = 30;
const WRITES_PER_KEY: usize = 10;

/// One put's request and what it was answered.
struct Answer {
    key: String,
    value: String,
    revision: u64,
    asked_prev_kv: bool,
    prev_kv: serde_json::Value,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_through_every_node_each_apply_once_with_their_own_answer() -> Result<()>
{
    let tc = TestCluster::start(3).await?;
    let leader = tc.wait_leader(Duration::from_secs(10)).await?;
    let start = tc.put(leader, "other/start", "x").await?;
    tc.wait_applied(start, Duration::from_secs(5)).await?;

    info!("--- watch the prefix from a follower");
    let watcher = tc.others(leader)[0];
    let url = format!(
        "{}/v1/watch/burst/?prefix=true&prev_kv=true&start_revision={}",
        tc.endpoint(watcher),
        start + 1
    );
    let mut watch = WatchStream::open(tc.stream_http(), &url, None).await?;
    assert_eq!(watch.status, 200);

    info!(
        "--- {} puts at once, spread over the three nodes",
        KEYS * WRITES_PER_KEY
    );
    let ids = tc.ids();
    let writes = (0..KEYS * WRITES_PER_KEY).map(|i| {
        let node = ids[i % ids.len()];
        let key = format!("burst/k{:02}", i % KEYS);
        let value = format!("v{i}");
        // Half the keys ask for the previous value (forwarded alone), half
        // do not (forwarded in batches).
        let prev_kv = i % KEYS < KEYS / 2;
        let url = format!("{}/v1/kv/{key}?prev_kv={prev_kv}", tc.endpoint(node));
        let http = tc.http().clone();
        async move {
            let resp = http.put(url).body(value.clone()).send().await?;
            let status = resp.status();
            let body: serde_json::Value = resp.json().await?;
            if !status.is_success() {
                bail!("put {key}={value} via node {node}: {status} {body}");
            }
            let revision = body["revision"]
                .as_u64()
                .ok_or_else(|| anyhow!("no revision in {body}"))?;
            Ok(Answer {
                key,
                value,
                revision,
                asked_prev_kv: prev_kv,
                prev_kv: body["prev_kv"].clone(),
            })
        }
    });
    let answers: Vec<Answer> = futures::future::try_join_all(writes).await?;

    info!("--- every write got its own revision, and together they fill the range");
    let n = (KEYS * WRITES_PER_KEY) as u64;
    let revisions: BTreeSet<u64> = answers.iter().map(|a| a.revision).collect();
    assert_eq!(revisions.len() as u64, n, "two writes share a revision");
    assert_eq!(revisions.first().copied(), Some(start + 1));
    assert_eq!(revisions.last().copied(), Some(start + n));

    info!("--- each answer's prev_kv is the write before it on the same key");
    let mut by_key: BTreeMap<&str, Vec<&Answer>> = BTreeMap::new();
    for a in answers.iter().filter(|a| a.asked_prev_kv) {
        by_key.entry(&a.key).or_default().push(a);
    }
    assert_eq!(by_key.len(), KEYS / 2);
    for (key, mut writes) in by_key {
        writes.sort_by_key(|a| a.revision);
        assert!(
            writes[0].prev_kv.is_null(),
            "{key}: first write has a prev_kv"
        );
        for pair in writes.windows(2) {
            let (before, after) = (pair[0], pair[1]);
            assert_eq!(after.prev_kv["key"], key);
            assert_eq!(after.prev_kv["value"], before.value.as_str(), "{key}");
            assert_eq!(after.prev_kv["mod_revision"], before.revision, "{key}");
        }
    }

    info!("--- the watch saw each write once, as it was answered");
    let events = watch.read_until(start + n, Duration::from_secs(20)).await?;
    let by_revision: BTreeMap<u64, &Answer> = answers.iter().map(|a| (a.revision, a)).collect();
    let mut seen = BTreeSet::new();
    for message in events.iter().filter(|e| e.event == "change") {
        let revision = message.revision();
        assert!(seen.insert(revision), "revision {revision} delivered twice");
        let event = &message.data["events"][0];
        let answer = by_revision
            .get(&revision)
            .ok_or_else(|| anyhow!("an event at revision {revision} no write was answered with"))?;
        assert_eq!(event["kv"]["key"], answer.key.as_str());
        assert_eq!(event["kv"]["value"], answer.value.as_str());
    }
    assert_eq!(seen, revisions);

    info!("--- every node ends at the same state");
    tc.wait_applied(start + n, Duration::from_secs(10)).await?;
    for id in tc.ids() {
        let (_, body) = tc.get(id, "burst/k00", "serializable").await?;
        assert_eq!(body["kv"]["version"], WRITES_PER_KEY as u64, "node {id}");
    }
    tc.shutdown().await;
    Ok(())
}
