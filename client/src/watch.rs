//! [`Client::watch`]: a change stream that survives node failures.
//!
//! One background task per watch (the *engine*) holds the SSE connection. It
//! remembers the last revision it delivered and, whenever the connection ends
//! (node killed, network error, idle timeout), reconnects to the next endpoint
//! with `Last-Event-ID: <last>` after a jittered backoff. Anything at or below
//! the last delivered revision is dropped, so a node that replays (or a
//! lagging node) can never cause a duplicate or a step backwards; a lagging
//! node's stream simply starts once it reaches `last + 1`.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use rand::Rng as _;
use reqwest::header::RETRY_AFTER;
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, instrument, warn};

use crate::client::{decode, Client, Query};
use crate::endpoints::kv_path;
use crate::error::{Error, Result};
use crate::sse::{SseMessage, SseParser};
use crate::transport::{chain, truncate, Call, Kind, Transport};
use crate::types::{Consistency, KeyValue, RangeOptions, WireKeyValue, WireRange};

/// Default idle limit of a watch connection: the server sends a keepalive at
/// least every 30 s, so a silent minute means the connection is dead.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(65);
/// Events buffered between the engine and the reader before the engine waits.
const CHANNEL_CAPACITY: usize = 256;

/// Options for [`Client::watch`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchOptions {
    /// Watch every key starting with the given key.
    pub prefix: bool,
    /// First revision to deliver (inclusive). `None` (or 0): changes after the
    /// cluster's current revision, as read (linearizably when possible) when
    /// the watch starts.
    pub start_revision: Option<u64>,
    /// Include each key's previous value in [`Event::prev_kv`].
    pub prev_kv: bool,
    /// Ask for [`WatchEvent::Progress`] bookmarks while the watched keys are idle.
    pub progress_notify: bool,
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or overwritten.
    Put,
    /// The key was deleted ([`Event::kv`] holds the key, an empty value and
    /// `mod_revision` = the deletion revision).
    Delete,
}

/// One key's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Put or delete.
    pub kind: EventKind,
    /// The key after the change.
    pub kv: KeyValue,
    /// The key before the change, when asked for with `prev_kv` and it existed.
    pub prev_kv: Option<KeyValue>,
}

/// One item of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Every watched change of one revision (a transaction is one revision,
    /// never split across items).
    Change {
        /// The revision.
        revision: u64,
        /// The changes, in the order they were applied.
        events: Vec<Event>,
    },
    /// A bookmark: every watched change up to `revision` has been delivered.
    Progress {
        /// The revision.
        revision: u64,
    },
}

impl WatchEvent {
    /// The revision of the item.
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Change { revision, .. } | WatchEvent::Progress { revision } => *revision,
        }
    }
}

/// The stream returned by [`Client::watch`]: `Ok` items in revision order, each
/// revision once. It ends after an `Err` item: [`Error::Compacted`] (re-read and
/// watch again), or a request the server refuses (`Error::Api` 4xx, such as an
/// invalid key). Connection failures are not items: the stream reconnects by
/// itself. Dropping the stream closes the connection.
#[derive(Debug)]
pub struct WatchStream {
    rx: mpsc::Receiver<EngineItem>,
    task: JoinHandle<()>,
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream for WatchStream {
    type Item = Result<WatchEvent>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(EngineItem::Event(e))) => return Poll::Ready(Some(Ok(e))),
                Poll::Ready(Some(EngineItem::Fatal(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Client {
    /// Watches a key (or, with `options.prefix`, every key under a prefix).
    ///
    /// The stream reconnects by itself after any disconnect, to the next
    /// endpoint after a jittered backoff, resuming right after the last
    /// revision it delivered: no gaps, no duplicates, never backwards. It ends
    /// with [`Error::Compacted`] when the history it needs is gone.
    ///
    /// Must be called inside a Tokio runtime (the connection runs on a task).
    ///
    /// ```no_run
    /// use futures::StreamExt as _;
    /// use ballast_client::{Client, Error, WatchEvent, WatchOptions};
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let client = Client::new(vec!["127.0.0.1:2379".to_owned()])?;
    /// let options = WatchOptions { prefix: true, ..WatchOptions::default() };
    /// let mut stream = client.watch("/services/api/", options);
    /// while let Some(item) = stream.next().await {
    ///     match item {
    ///         Ok(WatchEvent::Change { revision, events }) => {
    ///             for e in events {
    ///                 println!("{revision} {:?} {}", e.kind, e.kv.key);
    ///             }
    ///         }
    ///         Ok(WatchEvent::Progress { .. }) => {}
    ///         Err(Error::Compacted { .. }) => break, // re-read, then watch again
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    #[instrument(skip(self), level = "debug")]
    pub fn watch(&self, key: &str, options: WatchOptions) -> WatchStream {
        let spec = WatchSpec {
            key: key.to_owned(),
            prefix: options.prefix,
            prev_kv: options.prev_kv,
            progress: options.progress_notify.then_some(None),
            resume_after: options.start_revision.filter(|r| *r > 0).map(|r| r - 1),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let task = tokio::spawn(run_engine(self.inner.clone(), spec, tx));
        WatchStream { rx, task }
    }
}

// ---------------------------------------------------------------------------
// The engine, shared with the replica.

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
}

/// Runs until the receiver is dropped or a fatal error.
pub(crate) async fn run_engine(
    transport: Arc<Transport>,
    spec: WatchSpec,
    tx: mpsc::Sender<EngineItem>,
) {
    let n = transport.endpoints.len();
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
                    let endpoint = transport.endpoints.preferred().1.to_owned();
                    if tx
                        .send(EngineItem::Disconnected(endpoint, e))
                        .await
                        .is_err()
                    {
                        return;
                    }
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
    if let Some(every) = spec.progress {
        query.push("progress_notify", "true");
        if let Some(every) = every {
            query.push("progress_interval_ms", every.as_millis());
        }
    }
    let target = format!("{path}{}", query.finish());
    loop {
        let endpoint = transport.endpoints.urls()[index % n].clone();
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
        let error = api_error(status.as_u16(), &body);
        // 429 (too many watchers) and 5xx: another node may serve us.
        if status.as_u16() == 429 || status.is_server_error() {
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

enum MessageError {
    Fatal(Error),
    Retry(Error),
}

#[derive(Deserialize)]
struct WireChange {
    revision: u64,
    #[serde(default)]
    events: Vec<WireEvent>,
}

#[derive(Deserialize)]
struct WireEvent {
    #[serde(rename = "type")]
    kind: String,
    kv: WireKeyValue,
    #[serde(default)]
    prev_kv: Option<WireKeyValue>,
}

#[derive(Deserialize)]
struct WireRevision {
    revision: u64,
}

#[derive(Deserialize)]
struct WireCompacted {
    compact_revision: u64,
    #[serde(default)]
    revision: u64,
}

/// Turns one SSE message into an item to deliver (or nothing), advancing `last`.
fn handle_message(msg: SseMessage, last: &mut u64) -> Result<Option<WatchEvent>, MessageError> {
    let bad = |what: &str, e: serde_json::Error| {
        MessageError::Retry(Error::Decode(format!(
            "watch {what} message: {e} in {}",
            truncate(&msg.data)
        )))
    };
    match msg.event.as_str() {
        "change" => {
            let wire: WireChange = serde_json::from_str(&msg.data).map_err(|e| bad("change", e))?;
            if wire.revision <= *last {
                // Already delivered (a replaying or lagging node): drop.
                return Ok(None);
            }
            let mut events = Vec::with_capacity(wire.events.len());
            for e in wire.events {
                let kind = match e.kind.as_str() {
                    "put" => EventKind::Put,
                    "delete" => EventKind::Delete,
                    other => {
                        return Err(MessageError::Retry(Error::Decode(format!(
                            "unknown watch event type {other:?}"
                        ))))
                    }
                };
                let kv = KeyValue::try_from(e.kv).map_err(MessageError::Retry)?;
                let prev_kv = e
                    .prev_kv
                    .map(KeyValue::try_from)
                    .transpose()
                    .map_err(MessageError::Retry)?;
                events.push(Event { kind, kv, prev_kv });
            }
            *last = wire.revision;
            Ok(Some(WatchEvent::Change {
                revision: wire.revision,
                events,
            }))
        }
        "progress" => {
            let wire: WireRevision =
                serde_json::from_str(&msg.data).map_err(|e| bad("progress", e))?;
            if wire.revision < *last {
                // A lagging node's bookmark says nothing new.
                return Ok(None);
            }
            *last = wire.revision;
            Ok(Some(WatchEvent::Progress {
                revision: wire.revision,
            }))
        }
        "compacted" => {
            let wire: WireCompacted =
                serde_json::from_str(&msg.data).map_err(|e| bad("compacted", e))?;
            Err(MessageError::Fatal(Error::Compacted {
                compact_revision: wire.compact_revision,
                revision: wire.revision,
            }))
        }
        "error" => {
            let message = serde_json::from_str::<serde_json::Value>(&msg.data)
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| truncate(&msg.data));
            warn!(%message, "watch stream error, reconnecting");
            Err(MessageError::Retry(Error::Api {
                status: 200,
                code: "watch_error".to_owned(),
                message,
                revision: None,
            }))
        }
        // Keepalives and unknown events: ignored.
        _ => Ok(None),
    }
}

/// An error document (or anything else) from a non-2xx answer.
fn api_error(status: u16, body: &[u8]) -> Error {
    match serde_json::from_slice::<crate::types::WireErrorDoc>(body) {
        Ok(doc) => Error::Api {
            status,
            code: doc.error.code,
            message: doc.error.message,
            revision: doc.revision,
        },
        Err(_) => Error::Api {
            status,
            code: "unknown".to_owned(),
            message: truncate(&String::from_utf8_lossy(body)),
            revision: None,
        },
    }
}

/// A refusal no other node would answer differently (bad key, bad query).
fn is_refusal(e: &Error) -> bool {
    matches!(e, Error::Api { status, .. } if (400..500).contains(status) && *status != 429)
        || matches!(e, Error::InvalidArgument(_))
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
        match range_call(transport, &spec.key, options) {
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

/// A prefix read of `prefix` (used by the watch start and the replica bootstrap).
pub(crate) fn range_call(
    _transport: &Transport,
    prefix: &str,
    options: RangeOptions,
) -> Result<Call> {
    let mut query = Query::default();
    query.push("prefix", "true");
    if let Some(limit) = options.limit {
        query.push("limit", limit);
    }
    if let Some(rev) = options.revision {
        query.push("revision", rev);
    }
    query.push("consistency", options.consistency.as_query());
    Ok(Call {
        method: Method::GET,
        target: format!("{}{}", kv_path(prefix)?, query.finish()),
        body: None,
        kind: Kind::Read,
    })
}

/// Pause before the next attempt: none while the current pass over the
/// endpoints has endpoints left, then jittered exponential backoff from the
/// client's retry policy; a `Retry-After` is a floor (capped).
pub(crate) fn backoff(
    transport: &Transport,
    failures: u32,
    endpoints: usize,
    retry_after: Option<Duration>,
) -> Duration {
    let policy = transport.retry;
    let endpoints = u32::try_from(endpoints.max(1)).unwrap_or(u32::MAX);
    let floor = retry_after
        .unwrap_or(Duration::ZERO)
        .min(policy.max_backoff);
    if failures == 0 || !failures.is_multiple_of(endpoints) {
        return floor;
    }
    let pass = failures / endpoints;
    let base = policy
        .initial_backoff
        .saturating_mul(1u32 << (pass - 1).min(16))
        .min(policy.max_backoff);
    let half = base / 2;
    let jitter = if half.is_zero() {
        Duration::ZERO
    } else {
        rand::thread_rng().gen_range(Duration::ZERO..=half)
    };
    (half + jitter).max(floor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: &str, data: &str) -> SseMessage {
        SseMessage {
            id: None,
            event: event.to_owned(),
            data: data.to_owned(),
        }
    }

    #[test]
    fn drops_old_revisions_and_stale_bookmarks() {
        let mut last = 5;
        let change = |r: u64| {
            msg(
                "change",
                &format!(
                    r#"{{"revision":{r},"events":[{{"type":"put","kv":{{"key":"a","value":"v","create_revision":1,"mod_revision":{r},"version":2}}}}]}}"#
                ),
            )
        };
        assert!(matches!(handle_message(change(5), &mut last), Ok(None)));
        assert!(matches!(handle_message(change(4), &mut last), Ok(None)));
        let Ok(Some(WatchEvent::Change { revision, events })) =
            handle_message(change(6), &mut last)
        else {
            panic!("revision 6 not delivered");
        };
        assert_eq!((revision, last), (6, 6));
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(events[0].kv.value, b"v");
        assert!(matches!(
            handle_message(msg("progress", r#"{"revision":3}"#), &mut last),
            Ok(None)
        ));
        assert!(matches!(
            handle_message(msg("progress", r#"{"revision":9}"#), &mut last),
            Ok(Some(WatchEvent::Progress { revision: 9 }))
        ));
        assert_eq!(last, 9);
        assert!(matches!(
            handle_message(
                msg("compacted", r#"{"compact_revision":20,"revision":30}"#),
                &mut last
            ),
            Err(MessageError::Fatal(Error::Compacted {
                compact_revision: 20,
                revision: 30
            }))
        ));
        assert!(matches!(handle_message(msg("", ""), &mut last), Ok(None)));
    }

    #[test]
    fn delete_events_decode() {
        let mut last = 0;
        let m = msg(
            "change",
            r#"{"revision":7,"events":[{"type":"delete","kv":{"key":"k","value":"","create_revision":0,"mod_revision":7,"version":0},"prev_kv":{"key":"k","value":"old","create_revision":2,"mod_revision":3,"version":1}}]}"#,
        );
        let Ok(Some(WatchEvent::Change { events, .. })) = handle_message(m, &mut last) else {
            panic!("not delivered");
        };
        assert_eq!(events[0].kind, EventKind::Delete);
        assert_eq!(
            events[0].prev_kv.as_ref().map(|kv| kv.value.clone()),
            Some(b"old".to_vec())
        );
    }
}
