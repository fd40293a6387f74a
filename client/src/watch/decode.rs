//! Decoding of one watch SSE message (`change`, `progress`, `compacted`,
//! `error`, keepalive) into the item to deliver, dropping anything at or below
//! the last delivered revision.

use serde::Deserialize;
use tracing::warn;

use super::sse::SseMessage;
use super::{Event, EventKind, WatchEvent};
use crate::error::Error;
use crate::transport::truncate;
use crate::types::{KeyValue, WireKeyValue};

pub(super) enum MessageError {
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
pub(super) fn handle_message(
    msg: SseMessage,
    last: &mut u64,
) -> Result<Option<WatchEvent>, MessageError> {
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
