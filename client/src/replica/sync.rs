//! The replica's single writer: bootstrap from a consistent prefix read, then
//! follow a watch from the next revision, reconnecting and re-bootstrapping
//! as needed. The revision it publishes never decreases:
//!
//! - a watch resumes after the current revision, and the engine drops
//!   anything at or below it, so failing over to a lagging node just waits
//!   until that node reaches us;
//! - a bootstrap read older than the current revision is refused (the next
//!   endpoint is tried, then again after a backoff).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::{ReplicaSnapshot, ReplicaUpdate, Shared};
use crate::client::{decode, range_call};
use crate::error::{Error, Result};
use crate::transport::{Call, Outcome, Transport};
use crate::types::{Consistency, RangeOptions, WireRange};
use crate::watch::{backoff, run_engine, EngineItem, WatchEvent, WatchSpec};

/// Items taken from the engine before one swap of the state.
const MAX_BATCH: usize = 512;

/// Settings of the sync loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncConfig {
    pub(crate) progress_interval: Duration,
    pub(crate) idle_timeout: Duration,
    /// The planted bug of `ReplicaBuilder::unsafe_skip_first_change` (test
    /// only): drop the first change after every `Connected`.
    pub(crate) planted_skip_first_change: bool,
}

/// Aborts the engine task when the loop leaves it behind.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why no endpoint gave a bootstrap read.
#[derive(Debug)]
pub(crate) struct BootstrapFailure {
    /// The last error seen.
    pub(crate) error: Error,
    /// A refusal no other node or later attempt would answer differently
    /// (a bad prefix): give up.
    pub(crate) fatal: bool,
    /// The longest `Retry-After` of the nodes that refused for load: the
    /// next pass waits at least this long.
    pub(crate) retry_after: Option<Duration>,
}

impl BootstrapFailure {
    /// The pause before the next pass, after `failures` failed ones: the
    /// nodes' `Retry-After` when they refused for load, with jittered
    /// exponential backoff on top; else the reconnect backoff.
    pub(crate) fn pause(&self, transport: &Transport, failures: u32) -> Duration {
        backoff(
            transport,
            failures,
            transport.endpoints.len(),
            self.retry_after,
        )
        .max(Duration::from_millis(10))
    }
}

/// The bootstrap read of `prefix` (counted by the node's admission control).
fn bootstrap_call(prefix: &str, consistency: Consistency) -> Result<Call> {
    let options = RangeOptions {
        consistency,
        ..RangeOptions::default()
    };
    let mut call = range_call(prefix, options)?;
    call.target.push_str("&bootstrap=true");
    Ok(call)
}

/// A consistent read of `prefix` no older than `at_least`, from the first
/// endpoint (starting at `start`) that can give one: linearizable first, then
/// serializable on the same node. A node at its bootstrap bound (`429`) is
/// passed over; its `Retry-After` comes back in the failure.
pub(crate) async fn bootstrap(
    transport: &Transport,
    prefix: &str,
    at_least: u64,
    start: usize,
) -> std::result::Result<ReplicaSnapshot, BootstrapFailure> {
    let urls = transport.endpoints.urls();
    let n = urls.len();
    let mut last_error = None;
    let mut retry_after: Option<Duration> = None;
    let failure = |error| BootstrapFailure {
        error,
        fatal: true,
        retry_after: None,
    };
    for i in 0..n {
        let endpoint = &urls[(start + i) % n];
        for consistency in [Consistency::Linearizable, Consistency::Serializable] {
            let call = bootstrap_call(prefix, consistency).map_err(failure)?;
            let (outcome, after) = transport.attempt_encoded(endpoint, &call, true).await;
            let answer = match outcome {
                Outcome::Done(a) => a,
                Outcome::Final(e @ Error::Api { status: 429, .. }) => {
                    debug!(endpoint, error = %e, ?after, "bootstrap refused for load");
                    let after = after.unwrap_or(Duration::from_secs(1));
                    retry_after = Some(retry_after.map_or(after, |r| r.max(after)));
                    last_error = Some(e);
                    break;
                }
                Outcome::Final(e @ Error::Api { status, .. }) if (400..500).contains(&status) => {
                    return Err(failure(e))
                }
                // A node removed from the cluster serves no read at all:
                // the next node, not a serializable read here.
                Outcome::NotApplied { error: e, .. } if e.is_node_removed() => {
                    debug!(endpoint, error = %e, "bootstrap passes over a removed node");
                    last_error = Some(e);
                    break;
                }
                Outcome::Final(e) | Outcome::NotApplied { error: e, .. } => {
                    debug!(endpoint, ?consistency, error = %e, "bootstrap read failed");
                    last_error = Some(e);
                    continue;
                }
                Outcome::Unknown { error: e, .. } => {
                    debug!(endpoint, ?consistency, error = %e, "bootstrap read failed");
                    last_error = Some(e);
                    continue;
                }
            };
            let range = decode::<WireRange>(&answer)
                .and_then(|w| w.into_response(answer.revision_header))
                .map_err(failure)?;
            if range.revision < at_least {
                // Never install an older state than the one we serve.
                debug!(
                    endpoint,
                    got = range.revision,
                    at_least,
                    "bootstrap read is behind, refused"
                );
                last_error = Some(Error::Api {
                    status: 200,
                    code: "behind".to_owned(),
                    message: format!(
                        "{endpoint} answered at revision {}, older than the replica's {at_least}",
                        range.revision
                    ),
                    revision: Some(range.revision),
                });
                break;
            }
            return Ok(ReplicaSnapshot::from_kvs(range.revision, range.kvs));
        }
    }
    Err(BootstrapFailure {
        error: last_error.unwrap_or_else(|| Error::Transport {
            endpoint: String::new(),
            message: "no endpoint".to_owned(),
        }),
        fatal: false,
        retry_after,
    })
}

/// Runs for the life of the replica.
pub(crate) async fn run(shared: Arc<Shared>, transport: Arc<Transport>, config: SyncConfig) {
    let mut needs_bootstrap = false;
    let mut failures: u32 = 0;
    loop {
        if needs_bootstrap {
            let current = shared.revision();
            // From the node it last followed, then the next ones.
            let start = transport.endpoints.preferred().0 + failures as usize;
            match bootstrap(&transport, &shared.prefix, current, start).await {
                Ok(snapshot) => {
                    let revision = snapshot.revision;
                    info!(revision, keys = snapshot.len(), "replica re-bootstrapped");
                    shared.install(snapshot);
                    shared.with_health(|h| {
                        h.last_contact = Some(Instant::now());
                        h.serving_from_disk = false;
                        h.last_error = None;
                    });
                    let _ = shared.updates.send(ReplicaUpdate::Reset { revision });
                    needs_bootstrap = false;
                    failures = 0;
                }
                Err(failure) => {
                    shared.with_health(|h| h.last_error = Some(failure.error.to_string()));
                    failures += 1;
                    tokio::time::sleep(failure.pause(&transport, failures)).await;
                    continue;
                }
            }
        }
        let spec = WatchSpec {
            key: shared.prefix.clone(),
            prefix: true,
            prev_kv: false,
            progress: Some(Some(config.progress_interval)),
            resume_after: Some(shared.revision()),
            idle_timeout: config.idle_timeout,
            data_plane: true,
        };
        let (tx, mut rx) = mpsc::channel(MAX_BATCH * 2);
        let _engine = AbortOnDrop(tokio::spawn(run_engine(transport.clone(), spec, tx)));
        let fatal = follow(&shared, &mut rx, config.planted_skip_first_change).await;
        shared.with_health(|h| h.endpoint = None);
        match fatal {
            Some(Error::Compacted {
                compact_revision, ..
            }) => {
                warn!(
                    compact_revision,
                    revision = shared.revision(),
                    "watch history compacted, re-bootstrapping"
                );
                needs_bootstrap = true;
            }
            Some(e) => {
                // A refusal (bad prefix?) no retry will fix quickly; keep
                // serving what we have and try again slowly.
                warn!(error = %e, "replica watch refused");
                shared.with_health(|h| h.last_error = Some(e.to_string()));
                failures += 1;
                let n = transport.endpoints.len();
                tokio::time::sleep(backoff(&transport, failures.max(n as u32), n, None)).await;
            }
            None => {}
        }
    }
}

/// Applies the engine's items until it stops; returns its fatal error.
/// `planted_skip_first_change` plants a bug (test only): the first change of
/// every stream is dropped.
async fn follow(
    shared: &Shared,
    rx: &mut mpsc::Receiver<EngineItem>,
    planted_skip_first_change: bool,
) -> Option<Error> {
    let mut items = Vec::with_capacity(MAX_BATCH);
    // Set by each `Connected` while the bug is planted.
    let mut skip_next_change = false;
    loop {
        items.clear();
        if rx.recv_many(&mut items, MAX_BATCH).await == 0 {
            return None;
        }
        let mut next: Option<ReplicaSnapshot> = None;
        let mut applied = Vec::new();
        let mut contact = false;
        let mut fatal = None;
        for item in items.drain(..) {
            match item {
                EngineItem::Event(WatchEvent::Change { revision, events }) => {
                    contact = true;
                    if std::mem::take(&mut skip_next_change) {
                        warn!(
                            revision,
                            "planted bug: dropping the first change of the stream"
                        );
                        continue;
                    }
                    let snap = next.get_or_insert_with(|| (**shared.state.load()).clone());
                    if snap.apply(revision, &events, &shared.prefix) {
                        applied.push(ReplicaUpdate::Change { revision, events });
                    }
                }
                EngineItem::Event(WatchEvent::Progress { revision }) => {
                    contact = true;
                    // Nothing under the prefix changed up to `revision`: the
                    // state is current at it (rollouts of other keys converge).
                    if revision > shared.revision() {
                        next.get_or_insert_with(|| (**shared.state.load()).clone())
                            .advance(revision);
                    }
                }
                EngineItem::Connected(endpoint) => {
                    debug!(endpoint, "replica watch connected");
                    skip_next_change = planted_skip_first_change;
                    shared.with_health(|h| h.endpoint = Some(endpoint));
                }
                EngineItem::Disconnected(endpoint, e) => {
                    debug!(endpoint, error = %e, "replica watch disconnected");
                    shared.with_health(|h| {
                        h.endpoint = None;
                        h.last_error = Some(e.to_string());
                    });
                }
                EngineItem::Fatal(e) => {
                    fatal = Some(e);
                    break;
                }
            }
        }
        if let Some(snap) = next {
            shared.install(snap);
            for u in applied {
                let _ = shared.updates.send(u);
            }
        }
        if contact {
            shared.with_health(|h| {
                h.last_contact = Some(Instant::now());
                h.serving_from_disk = false;
                h.last_error = None;
            });
        }
        if fatal.is_some() {
            return fatal;
        }
    }
}
