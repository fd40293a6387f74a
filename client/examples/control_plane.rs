//! A control-plane service: writes configuration with the `Client`, uses a
//! compare-and-swap to avoid lost updates, handles `Indeterminate`, and
//! follows changes with a watch.
//!
//! Run against `make cluster`: `cargo run -p ballast-client --example control_plane`.

use std::time::Duration;

use ballast_client::{Client, Error, WatchEvent, WatchOptions};
use futures::StreamExt as _;

/// Sets `key` from `old` to `new` unless someone else changed it first.
/// Returns whether our value is in place.
async fn flip(client: &Client, key: &str, old: Option<&str>, new: &str) -> Result<bool, Error> {
    match client
        .compare_and_swap(key, old.map(str::as_bytes), new)
        .await
    {
        Ok(cas) => Ok(cas.succeeded),
        Err(Error::Indeterminate { message }) => {
            // The client's own retries could not settle it (budget spent, or
            // the cluster forgot the result): the write may or may not have
            // been applied. Read the key (linearizably) and decide.
            eprintln!("outcome unknown ({message}); reading back");
            let now = client.get(key).await?;
            Ok(now.kv.is_some_and(|kv| kv.value == new.as_bytes()))
        }
        Err(e) => Err(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let endpoints = std::env::var("BALLAST_ENDPOINTS")
        .unwrap_or_else(|_| "127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579".to_owned());
    let client = Client::builder(endpoints.split(',').map(str::to_owned).collect())
        .request_timeout(Duration::from_secs(3))
        .build()?;

    // Plain writes: each returns the revision it was committed at.
    let put = client.put("/services/api/timeout", "250ms").await?;
    println!("timeout set at revision {}", put.revision);

    // Create-if-absent, then a guarded flip.
    let created = flip(&client, "/services/api/mode", None, "green").await?;
    println!("mode created: {created}");
    let flipped = flip(&client, "/services/api/mode", Some("green"), "blue").await?;
    println!("mode flipped to blue: {flipped}");

    // Follow the prefix from the revision after our first write: every change
    // exactly once, in order, across node failures.
    let options = WatchOptions {
        prefix: true,
        start_revision: Some(put.revision + 1),
        ..WatchOptions::default()
    };
    let mut changes = client.watch("/services/api/", options);
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(2), changes.next()).await {
        match item {
            Ok(WatchEvent::Change { revision, events }) => {
                for e in events {
                    println!("{revision}: {:?} {}", e.kind, e.kv.key);
                }
            }
            Ok(WatchEvent::Progress { .. }) => {}
            // History gone: re-read the prefix and watch again from its revision.
            Err(Error::Compacted { .. }) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
