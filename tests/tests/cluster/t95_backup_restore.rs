//! Backup and disaster recovery: a backup taken through the client restores
//! a new cluster with the same key space, history and revisions, under a
//! new cluster id; so does a stopped node's data directory.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};
use ballast_client::{verify_snapshot_file, Client, KeyValue, RangeOptions};
use ballast_store::internals::wire::{self, FrameCaps, PeerIdentity, PeerRequest};
use ballast_store::{RestoreReport, RestoreSource};
use ballast_tests::restore::restore_cluster;
use ballast_tests::sse::{SseEvent, WatchStream};
use ballast_tests::TestCluster;
use tracing::info;

/// A revision inside the retained history, where the watch replays start.
const WATCH_FROM: u64 = 250;
const WAIT: Duration = Duration::from_secs(20);

/// What the old cluster looked like when it was backed up.
struct Before {
    revision: u64,
    compact_revision: u64,
    state_hash: String,
    cluster_id: String,
    kvs: Vec<KeyValue>,
    events: Vec<SseEvent>,
}

fn client_for(tc: &TestCluster) -> Result<Client> {
    Ok(Client::new(
        tc.ids().into_iter().map(|id| tc.endpoint(id)).collect(),
    )?)
}

async fn every_key(client: &Client) -> Result<Vec<KeyValue>> {
    let range = client.range("", RangeOptions::default()).await?;
    ensure!(!range.more, "the range read was cut short");
    Ok(range.kvs)
}

/// Every change message from `WATCH_FROM` to `to`, from node `id`.
async fn replay(tc: &TestCluster, id: u64, to: u64) -> Result<Vec<SseEvent>> {
    let url = format!(
        "{}/v1/watch/app/?prefix=true&start_revision={WATCH_FROM}",
        tc.endpoint(id)
    );
    let mut stream = WatchStream::open(tc.stream_http(), &url, None).await?;
    ensure!(stream.status == 200, "watch answered {}", stream.status);
    let events = stream.read_until(to, WAIT).await?;
    Ok(events.into_iter().filter(|e| e.event == "change").collect())
}

async fn write_workload(client: &Client) -> Result<u64> {
    for i in 0..300 {
        client.put(&format!("app/k{i:03}"), format!("v{i}")).await?;
    }
    for i in (0..300).step_by(3) {
        client
            .put(&format!("app/k{i:03}"), format!("v{i}-again"))
            .await?;
    }
    for i in (0..300).step_by(7) {
        client.delete(&format!("app/k{i:03}")).await?;
    }
    client.put("app/binary", vec![0u8, 255, 1, 2]).await?;
    Ok(client.put("app/last", "x").await?.revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_or_a_stopped_node_restores_a_new_cluster() -> Result<()> {
    let mut tc = TestCluster::start(3).await?;
    let client = client_for(&tc)?;

    info!("--- write 300 keys, overwrite a third, delete a seventh");
    let last = write_workload(&client).await?;
    tc.wait_applied(last, WAIT).await?;

    info!("--- take a backup through the client");
    let backups = tempfile::tempdir()?;
    let file = backups.path().join("backup.snap");
    let mut out = tokio::fs::File::create(&file).await?;
    let mut chunks = 0;
    let info = client.snapshot(&mut out, |_, _| chunks += 1).await?;
    out.sync_all().await?;
    drop(out);
    assert!(chunks > 0);
    assert_eq!(verify_snapshot_file(&file)?, info);
    assert_eq!(info.revision, last);

    let status = tc.status(1).await?;
    let before = Before {
        revision: last,
        compact_revision: status["compact_revision"]
            .as_u64()
            .context("compact_revision")?,
        state_hash: status["state_hash"].as_str().context("hash")?.to_string(),
        cluster_id: status["cluster_id"].as_str().context("id")?.to_string(),
        kvs: every_key(&client).await?,
        events: replay(&tc, 2, last).await?,
    };
    assert_eq!(info.state_hash, before.state_hash);
    assert_eq!(info.cluster_id, before.cluster_id);
    assert_eq!(info.key_count, before.kvs.len() as u64);
    assert!(before.kvs.len() > 250, "{} keys", before.kvs.len());
    assert_eq!(
        before.events.last().map(SseEvent::revision),
        Some(last),
        "the replay reaches the backup's revision"
    );
    assert_eq!(
        tc.snapshot_backup_files(),
        Vec::<String>::new(),
        "no backup file left on any node"
    );

    info!("--- stop the whole old cluster, keeping node 1's data directory");
    let old_peer = tc.config(1).clone();
    for id in tc.ids() {
        tc.kill(id).await?;
    }
    let surviving = tc.config(1).data_dir.clone();

    info!("--- restore three new members from the backup file");
    let (restored, reports) = restore_cluster(3, RestoreSource::Snapshot(file)).await?;
    check_restored(&restored, &before, &reports).await?;

    info!("--- the restored cluster refuses peer traffic of the old one");
    let old_id = u128::from_str_radix(&before.cluster_id, 16)?;
    let addr = restored.config(1).listen_peer.clone();
    let mut conn = wire::connect(
        &addr,
        Duration::from_secs(2),
        FrameCaps::for_limits(&old_peer.limits()),
    )
    .await?;
    let refused = wire::call(
        &mut conn,
        &addr,
        PeerIdentity {
            cluster_id: old_id,
            node_id: 2,
        },
        1,
        &PeerRequest::Replicas,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        matches!(&refused, Err(wire::CallError::Remote(m)) if m.contains("belongs to cluster")),
        "{refused:?}"
    );
    let from_file = reports[0].cluster_id;
    restored.shutdown().await;

    info!("--- restore three new members from the stopped node's data directory");
    let (restored, reports) = restore_cluster(3, RestoreSource::DataDir(surviving)).await?;
    check_restored(&restored, &before, &reports).await?;
    assert_ne!(
        reports[0].cluster_id, from_file,
        "other members (new ports) make another cluster id"
    );
    restored.shutdown().await;
    tc.shutdown().await;
    Ok(())
}

async fn check_restored(
    tc: &TestCluster,
    before: &Before,
    reports: &[RestoreReport],
) -> Result<()> {
    let id = reports[0].cluster_id;
    assert!(reports.iter().all(|r| r.cluster_id == id), "{reports:?}");
    let id_hex = format!("{id:032x}");
    assert_ne!(id_hex, before.cluster_id, "a restored cluster has a new id");
    for node in tc.ids() {
        let status = tc.status(node).await?;
        assert_eq!(status["revision"], before.revision, "node {node}: {status}");
        assert_eq!(status["compact_revision"], before.compact_revision);
        assert_eq!(status["state_hash"], before.state_hash.as_str());
        assert_eq!(status["cluster_id"], id_hex.as_str());
    }

    let client = client_for(tc)?;
    let kvs = every_key(&client).await?;
    assert_eq!(kvs.len(), before.kvs.len());
    for (got, want) in kvs.iter().zip(&before.kvs) {
        assert_eq!(got, want, "value, create and mod revision, version");
    }
    for node in tc.ids() {
        assert_eq!(
            replay(tc, node, before.revision).await?,
            before.events,
            "node {node} replays the old history"
        );
    }

    info!("--- a new write continues at the next revision");
    let put = client.put("app/after-restore", "new").await?;
    assert_eq!(put.revision, before.revision + 1);
    tc.wait_applied(put.revision, WAIT).await?;
    let (status, body) = tc.get(3, "app/after-restore", "linearizable").await?;
    assert_eq!(status, 200, "{body}");
    let watched = replay(tc, 1, put.revision).await?;
    let newest = watched.last().ok_or_else(|| anyhow!("no events"))?;
    assert_eq!(newest.revision(), before.revision + 1);
    assert_eq!(newest.keys(), ["app/after-restore"]);
    Ok(())
}
