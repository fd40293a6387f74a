//! A data-plane service: embeds a `Replica` of its prefix, reads from memory on
//! every request, keeps serving when the cluster is down, and says how stale
//! it is.
//!
//! Run against `make cluster`: `cargo run -p ballast-client --example data_plane`.

use std::sync::Arc;
use std::time::Duration;

use ballast_client::{Replica, ReplicaUpdate};
use futures::StreamExt as _;

/// The hot path: no network call, no lock, no allocation for the lookup.
fn request_timeout(replica: &Replica) -> Duration {
    replica
        .get("/services/api/timeout")
        .and_then(|kv| {
            kv.value_str()
                .and_then(|s| s.strip_suffix("ms")?.parse().ok())
        })
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_millis(500))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoints = std::env::var("BALLAST_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579".to_owned());
    let cache_dir = std::env::temp_dir().join("ballast-example-replica");
    let replica = Arc::new(
        Replica::builder(endpoints.split(',').map(str::to_owned).collect())
            .prefix("/services/api/")
            .cache_dir(&cache_dir)
            .id(format!("api-{}", std::process::id()))
            .start()
            .await?,
    );

    // React to changes (re-build derived state, log, ...).
    let mut updates = replica.updates();
    let watcher = tokio::spawn(async move {
        while let Some(update) = updates.next().await {
            match update {
                ReplicaUpdate::Change { revision, events } => {
                    println!("applied revision {revision}: {} change(s)", events.len())
                }
                ReplicaUpdate::Reset { revision } | ReplicaUpdate::Lagged { missed: revision } => {
                    println!("state replaced or missed updates ({revision}); re-read everything")
                }
            }
        }
    });

    for _ in 0..5 {
        let status = replica.status();
        println!(
            "timeout {:?} at revision {} (connected: {}, from disk: {}, stale: {})",
            request_timeout(&replica),
            status.revision,
            status.connected,
            status.serving_from_disk,
            status.is_stale(Duration::from_secs(5)),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    watcher.abort();
    if let Ok(replica) = Arc::try_unwrap(replica) {
        replica.shutdown().await; // writes the cache one last time
    }
    Ok(())
}
