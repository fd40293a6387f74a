//! The replica's background chores: writing the cache and reporting the
//! applied revision. Neither touches the read path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use tracing::{debug, warn};

use super::{cache, Shared};
use crate::transport::{Call, Kind, Transport};

/// Writes the current state to `dir` now (blocking).
pub(crate) fn persist_now(shared: &Shared, dir: &Path) -> u64 {
    let snap = shared.state.load_full();
    let _guard = shared
        .persist_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match cache::encode(&shared.prefix, &snap) {
        Ok(bytes) => {
            if let Err(e) = cache::store(dir, &bytes) {
                warn!(dir = %dir.display(), error = %e, "could not write the replica cache");
            }
        }
        Err(e) => warn!(error = %e, "could not encode the replica cache"),
    }
    snap.revision
}

/// Writes the cache after each change, at most once per `every`; the latest
/// state is always written eventually.
pub(crate) async fn persist_loop(
    shared: Arc<Shared>,
    dir: PathBuf,
    every: Duration,
    mut written: u64,
) {
    let mut rx = shared.revision_tx.subscribe();
    loop {
        if shared.revision() > written {
            let (s, d) = (shared.clone(), dir.clone());
            match tokio::task::spawn_blocking(move || persist_now(&s, &d)).await {
                Ok(r) => written = r,
                Err(e) => warn!(error = %e, "replica cache writer failed"),
            }
            tokio::time::sleep(every).await;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Reports `{id, prefix, revision, serving_from_disk}` every `every` and
/// after a change, never more often than `min_gap`. Failures are ignored
/// (the next endpoint is tried next time).
pub(crate) async fn report_loop(
    shared: Arc<Shared>,
    transport: Arc<Transport>,
    every: Duration,
    min_gap: Duration,
) {
    let mut rx = shared.revision_tx.subscribe();
    let mut index = 0usize;
    loop {
        let serving_from_disk = shared
            .health
            .lock()
            .map(|h| h.serving_from_disk)
            .unwrap_or(false);
        let body = serde_json::json!({
            "id": shared.id,
            "prefix": shared.prefix,
            "revision": shared.revision(),
            "serving_from_disk": serving_from_disk,
        });
        let call = Call {
            method: Method::POST,
            target: "/v1/replicas/report".to_owned(),
            body: Some(("application/json", body.to_string().into_bytes())),
            kind: Kind::Read,
        };
        let urls = transport.endpoints.urls();
        let endpoint = &urls[index % urls.len()];
        if let Err(e) = transport.execute_once(endpoint, &call).await {
            debug!(endpoint, error = %e, "replica report failed");
            index = index.wrapping_add(1);
        }
        tokio::time::sleep(min_gap).await;
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(every.saturating_sub(min_gap)) => {}
        }
    }
}
