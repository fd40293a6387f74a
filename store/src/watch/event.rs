//! Encoding of watch messages: every revision's events are serialized once,
//! as JSON fragments and as complete Server-Sent Events frames, and shared by
//! every watcher.

use std::fmt::Write as _;

use bytes::Bytes;
use serde::Serialize;

use crate::kv::json::KvJson;
use crate::kv::mvcc::{Change, Record};
use crate::kv::KeyValue;

/// What a watcher asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    /// Key, or prefix when `prefix`.
    pub key: String,
    /// Match every key starting with `key`.
    pub prefix: bool,
}

impl Filter {
    /// Whether `key` is watched.
    pub fn matches(&self, key: &str) -> bool {
        if self.prefix {
            key.starts_with(&self.key)
        } else {
            key == self.key
        }
    }
}

/// One event, encoded both ways.
#[derive(Debug)]
pub struct EncodedEvent {
    /// The key it is about.
    pub key: String,
    /// JSON without `prev_kv`.
    pub plain: Bytes,
    /// JSON with `prev_kv` (when the key existed before).
    pub with_prev: Bytes,
}

/// All events of one revision, encoded once.
#[derive(Debug)]
pub struct EncodedRevision {
    /// The revision.
    pub revision: u64,
    /// Its events in the order they were applied.
    pub events: Vec<EncodedEvent>,
    /// The complete SSE frame with every event, without `prev_kv`.
    pub frame_plain: Bytes,
    /// The complete SSE frame with every event, with `prev_kv`.
    pub frame_with_prev: Bytes,
}

#[derive(Serialize)]
struct EventJson<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    kv: &'a KvJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    prev_kv: Option<&'a KvJson>,
}

fn kv_json(key: &str, record: &Record) -> KvJson {
    KvJson::from(KeyValue {
        key: key.to_string(),
        value: record.value.clone(),
        create_revision: record.create_revision,
        mod_revision: record.mod_revision,
        version: record.version,
    })
}

fn encode_event(revision: u64, change: &Change) -> EncodedEvent {
    let (kind, kv) = match &change.kv {
        Some(record) => ("put", kv_json(&change.key, record)),
        // A delete names the key and its deletion revision, as etcd does.
        None => (
            "delete",
            KvJson::from(KeyValue {
                key: change.key.clone(),
                value: Vec::new(),
                create_revision: 0,
                mod_revision: revision,
                version: 0,
            }),
        ),
    };
    let prev = change.prev.as_ref().map(|p| kv_json(&change.key, p));
    let to_bytes = |e: &EventJson<'_>| Bytes::from(serde_json::to_vec(e).unwrap_or_default());
    EncodedEvent {
        key: change.key.clone(),
        plain: to_bytes(&EventJson {
            kind,
            kv: &kv,
            prev_kv: None,
        }),
        with_prev: to_bytes(&EventJson {
            kind,
            kv: &kv,
            prev_kv: prev.as_ref(),
        }),
    }
}

/// Builds one SSE change frame from encoded event fragments.
pub fn change_frame<'a>(revision: u64, events: impl Iterator<Item = &'a Bytes>) -> Bytes {
    let mut out = Vec::with_capacity(256);
    let _ = write!(
        Adapter(&mut out),
        "id: {revision}\nevent: change\ndata: {{\"revision\":{revision},\"events\":["
    );
    for (i, e) in events.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e);
    }
    out.extend_from_slice(b"]}\n\n");
    Bytes::from(out)
}

/// A progress bookmark: every event up to `revision` has been sent.
pub fn progress_frame(revision: u64) -> Bytes {
    Bytes::from(format!(
        "id: {revision}\nevent: progress\ndata: {{\"revision\":{revision}}}\n\n"
    ))
}

/// The stream's start is gone: the client must re-read and watch again.
pub fn compacted_frame(compact_revision: u64, revision: u64) -> Bytes {
    Bytes::from(format!(
        "event: compacted\ndata: {{\"compact_revision\":{compact_revision},\"revision\":{revision}}}\n\n"
    ))
}

/// A fatal stream error; the stream ends after it.
pub fn error_frame(message: &str) -> Bytes {
    let data = serde_json::json!({ "message": message });
    Bytes::from(format!("event: error\ndata: {data}\n\n"))
}

/// An SSE comment that keeps idle connections open through proxies.
pub fn keepalive_frame() -> Bytes {
    Bytes::from_static(b": keepalive\n\n")
}

/// Encodes a revision's changes once.
pub fn encode_revision(revision: u64, changes: &[Change]) -> EncodedRevision {
    let events: Vec<EncodedEvent> = changes.iter().map(|c| encode_event(revision, c)).collect();
    let frame_plain = change_frame(revision, events.iter().map(|e| &e.plain));
    let frame_with_prev = change_frame(revision, events.iter().map(|e| &e.with_prev));
    EncodedRevision {
        revision,
        events,
        frame_plain,
        frame_with_prev,
    }
}

impl EncodedRevision {
    /// The frame a watcher with `filter` gets for this revision, if any event
    /// matches, and how many events it carries. Watchers that match every
    /// event share the pre-built frame.
    pub fn frame_for(&self, filter: &Filter, prev_kv: bool) -> Option<(Bytes, usize)> {
        let matching = self
            .events
            .iter()
            .filter(|e| filter.matches(&e.key))
            .count();
        if matching == 0 {
            return None;
        }
        if matching == self.events.len() {
            let frame = if prev_kv {
                &self.frame_with_prev
            } else {
                &self.frame_plain
            };
            return Some((frame.clone(), matching));
        }
        let parts = self
            .events
            .iter()
            .filter(|e| filter.matches(&e.key))
            .map(|e| if prev_kv { &e.with_prev } else { &e.plain });
        Some((change_frame(self.revision, parts), matching))
    }
}

/// `fmt::Write` into a byte vector.
struct Adapter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Adapter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(v: &str, rev: u64) -> Record {
        Record {
            value: v.as_bytes().to_vec(),
            create_revision: 1,
            mod_revision: rev,
            version: rev,
        }
    }

    #[test]
    fn frames_share_or_filter_events() {
        let changes = vec![
            Change {
                key: "app/a".into(),
                kv: Some(rec("1", 7)),
                prev: Some(rec("0", 6)),
            },
            Change {
                key: "other".into(),
                kv: None,
                prev: Some(rec("x", 3)),
            },
        ];
        let r = encode_revision(7, &changes);
        let all = Filter {
            key: String::new(),
            prefix: true,
        };
        let (frame, n) = r.frame_for(&all, false).expect("matches");
        assert_eq!(n, 2);
        assert_eq!(frame, r.frame_plain);
        let text = std::str::from_utf8(&frame).expect("utf8");
        assert!(text.starts_with(
            "id: 7\nevent: change\ndata: {\"revision\":7,\"events\":[{\"type\":\"put\""
        ));
        assert!(text.contains("{\"type\":\"delete\",\"kv\":{\"key\":\"other\",\"value\":\"\",\"create_revision\":0,\"mod_revision\":7,\"version\":0}}"));
        assert!(text.ends_with("]}\n\n"));
        let app = Filter {
            key: "app/".into(),
            prefix: true,
        };
        let (frame, n) = r.frame_for(&app, true).expect("matches");
        assert_eq!(n, 1);
        let text = std::str::from_utf8(&frame).expect("utf8");
        let data: serde_json::Value = serde_json::from_str(
            text.lines()
                .nth(2)
                .and_then(|l| l.strip_prefix("data: "))
                .expect("data"),
        )
        .expect("json");
        assert_eq!(data["events"][0]["prev_kv"]["value"], "0");
        let none = Filter {
            key: "zzz".into(),
            prefix: false,
        };
        assert!(r.frame_for(&none, false).is_none());
    }
}
