//! The watch engine: one background task per watch (and per replica) that
//! holds the SSE connection, resumes after the last delivered revision with
//! `Last-Event-ID`, and moves to the next endpoint after a jittered backoff.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::RETRY_AFTER;
use tokio::sync::mpsc;
use tracing::debug;

use super::decode::{handle_message, MessageError};
use super::sse::SseParser;
use super::WatchEvent;
use crate::client::{decode, range_call, Query};
use crate::endpoints::kv_path;
use crate::error::{Error, Result};
use crate::transport::{api_error, chain, Transport};
use crate::types::{Consistency, RangeOptions, WireRange};

/// What the engine reports. The replica also uses the connection states.
#[derive(Debug)]
pub(crate) enum EngineItem {
    Event(WatchEvent),
    /// A stream was opened on this endpoint.
    Connected(String),
    /// The stream on this endpoint ended or could not be opened.
    Disconnected(String, Error),
    /// The engine stops after this.
    Fatal(Error),
}

/// What to watch and how.
#[derive(Debug, Clone)]
pub(crate) struct WatchSpec {
    pub(crate) key: String,
    pub(crate) prefix: bool,
    pub(crate) prev_kv: bool,
    /// `None`: no bookmarks; `Some(None)`: the server's default interval;
    /// `Some(Some(d))`: every `d`.
    pub(crate) progress: Option<Option<Duration>>,
    /// Deliver revisions after this one; `None`: after the current revision.
    pub(crate) resume_after: Option<u64>,
    /// A connection silent for this long is treated as dead.
    pub(crate) idle_timeout: Duration,
    /// A replica's watch: marked `data_plane=true`, so the node serves it on
    /// its lower-priority data-plane threads.
    pub(crate) data_plane: bool,
}

/// Runs until the receiver is dropped or a fatal error.
pub(crate) async fn run_engine(
    transport: Arc<Transport>,
    spec: WatchSpec,
    tx: mpsc::Sender<EngineItem>,
) {
    let mut index = transport.endpoints.preferred().0;
    // Consecutive failed attempts since the last delivered item.
    let mut failures: u32 = 0;
    let mut last = match spec.resume_after {
        Some(r) => r,
        None => loop {
            match current_revision(&transport, &spec).await {
                Ok(r) => break r,
                Err(e) if is_refusal(&e) => {
                    let _ = tx.send(EngineItem::Fatal(e)).await;
                    return;
                }
                Err(e) => {
                    failures += 1;
                    let endpoint = transport.endpoints.preferred().1.to_string();
                    if tx
                        .send(EngineItem::Disconnected(endpoint, e))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let n = transport.endpoints.len();
                    tokio::time::sleep(backoff(&transport, failures, n, None)).await;
                }
            }
        },
    };
    let path = match kv_path(&spec.key) {
        Ok(p) => p.replacen("/v1/kv/", "/v1/watch/", 1),
        Err(e) => {
            let _ = tx.send(EngineItem::Fatal(e)).await;
            return;
        }
    };
    let mut query = Query::default();
    if spec.prefix {
        query.push("prefix", "true");
    }
    if spec.prev_kv {
        query.push("prev_kv", "true");
    }
    if spec.data_plane {
        query.push("data_plane", "true");
    }
    if let Some(every) = spec.progress {
        query.push("progress_notify", "true");
        if let Some(every) = every {
            query.push("progress_interval_ms", every.as_millis());
        }
    }
    let target = format!("{path}{}", query.finish());
    loop {
        // The list may change between attempts (`Client::sync_endpoints`).
        let urls = transport.endpoints.urls();
        let n = urls.len();
        let endpoint = urls[index % n].clone();
        let ended = stream_once(
            &transport,
            &endpoint,
            &target,
            &spec,
            &mut last,
            &mut failures,
            &tx,
        )
        .await;
        let retry_after = match ended {
            StreamEnd::ReceiverGone => return,
            StreamEnd::Fatal(e) => {
                let _ = tx.send(EngineItem::Fatal(e)).await;
                return;
            }
            StreamEnd::Retry(e, retry_after) => {
                debug!(endpoint, last, error = %e, "watch stream ended, reconnecting");
                if tx
                    .send(EngineItem::Disconnected(endpoint, e))
                    .await
                    .is_err()
                {
                    return;
                }
                retry_after
            }
        };
        failures += 1;
        index = (index + 1) % n;
        let delay = backoff(&transport, failures, n, retry_after);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if tx.is_closed() {
            return;
        }
    }
}

enum StreamEnd {
    ReceiverGone,
    Fatal(Error),
    Retry(Error, Option<Duration>),
}

/// Opens one stream on `endpoint` and forwards its items until it ends.
async fn stream_once(
    transport: &Transport,
    endpoint: &str,
    target: &str,
    spec: &WatchSpec,
    last: &mut u64,
    failures: &mut u32,
    tx: &mpsc::Sender<EngineItem>,
) -> StreamEnd {
    let transport_error = |message: String| Error::Transport {
        endpoint: endpoint.to_owned(),
        message,
    };
    let request = transport
        .stream_http
        .get(format!("{endpoint}{target}"))
        .header("last-event-id", last.to_string());
    let mut response = match tokio::time::timeout(transport_request_timeout(spec), request.send())
        .await
    {
        Err(_) => return StreamEnd::Retry(transport_error("watch request timed out".into()), None),
        Ok(Err(e)) => return StreamEnd::Retry(transport_error(chain(&e)), None),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    if !status.is_success() {
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.bytes().await.unwrap_or_default();
        let doc = serde_json::from_slice(&body).ok();
        let error = api_error(status.as_u16(), doc, &body, None);
        // 429 (too many watchers), 5xx, and a node removed from the cluster
        // (`410 removed`): another node may serve us.
        if status.as_u16() == 429 || status.is_server_error() || error.is_node_removed() {
            return StreamEnd::Retry(error, retry_after);
        }
        return StreamEnd::Fatal(error);
    }
    if tx
        .send(EngineItem::Connected(endpoint.to_owned()))
        .await
        .is_err()
    {
        return StreamEnd::ReceiverGone;
    }
    let mut parser = SseParser::default();
    loop {
        let chunk = match tokio::time::timeout(spec.idle_timeout, response.chunk()).await {
            Err(_) => {
                return StreamEnd::Retry(
                    transport_error(format!("watch idle for {:?}", spec.idle_timeout)),
                    None,
                )
            }
            Ok(Err(e)) => return StreamEnd::Retry(transport_error(chain(&e)), None),
            Ok(Ok(None)) => {
                return StreamEnd::Retry(transport_error("watch stream closed".into()), None)
            }
            Ok(Ok(Some(chunk))) => chunk,
        };
        if !parser.push(&chunk) {
            return StreamEnd::Retry(transport_error("watch message too large".into()), None);
        }
        while let Some(msg) = parser.next_message() {
            match handle_message(msg, last) {
                Ok(None) => {}
                Ok(Some(event)) => {
                    *failures = 0;
                    if tx.send(EngineItem::Event(event)).await.is_err() {
                        return StreamEnd::ReceiverGone;
                    }
                }
                Err(MessageError::Fatal(e)) => return StreamEnd::Fatal(e),
                Err(MessageError::Retry(e)) => return StreamEnd::Retry(e, None),
            }
        }
    }
}

/// The watch request must get its headers within this (the server answers at
/// once, unless a `linearizable` barrier waits for a leader).
fn transport_request_timeout(spec: &WatchSpec) -> Duration {
    spec.idle_timeout.min(Duration::from_secs(10))
}

/// A refusal no other node would answer differently (bad key, bad query).
fn is_refusal(e: &Error) -> bool {
    match e {
        Error::Api { status, .. } => {
            (400..500).contains(status) && *status != 429 && !e.is_node_removed()
        }
        Error::InvalidArgument(_) => true,
        _ => false,
    }
}

/// The revision a "from now" watch starts after: a linearizable read of the
/// watched key or prefix (serializable when no quorum answers).
async fn current_revision(transport: &Transport, spec: &WatchSpec) -> Result<u64> {
    let mut last_error = None;
    for consistency in [Consistency::Linearizable, Consistency::Serializable] {
        let options = RangeOptions {
            limit: Some(1),
            revision: None,
            consistency,
        };
        match range_call(&spec.key, options) {
            Err(e) => return Err(e),
            Ok(call) => match transport.execute(call).await {
                Ok(answer) => {
                    return decode::<WireRange>(&answer)?
                        .into_response(answer.revision_header)
                        .map(|r| r.revision)
                }
                Err(e) if is_refusal(&e) => return Err(e),
                Err(e) => last_error = Some(e),
            },
        }
    }
    Err(last_error.unwrap_or_else(|| Error::Transport {
        endpoint: String::new(),
        message: "no endpoint answered".to_owned(),
    }))
}

/// Pause before the next attempt after `failures` consecutive failed ones: the
/// retry policy's backoff (none while the current pass over the endpoints has
/// endpoints left, then jittered exponential). Unlike a single call's retries,
/// a `Retry-After` (a node refusing for load, 429 or 503) is obeyed even
/// mid-pass, with jittered exponential backoff on top of it
/// ([`RetryPolicy::busy_delay`](crate::retry::RetryPolicy)).
pub(crate) fn backoff(
    transport: &Transport,
    failures: u32,
    endpoints: usize,
    retry_after: Option<Duration>,
) -> Duration {
    let policy = transport.retry;
    match retry_after {
        Some(after) => policy.busy_delay(failures, after),
        None => policy.delay_before(failures.saturating_add(1), endpoints, None),
    }
}
