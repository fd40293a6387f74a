//! The watch workload: writers put unique values under a prefix through
//! every node while one watcher per node follows the prefix over SSE,
//! reconnecting (to the next node, resuming after the last revision it saw)
//! whenever its stream breaks or stalls. Every message is recorded per
//! session for the watch checker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::checker::watch::{Message, Session, WatchEvent, Watcher, Write};
use crate::client::{Padding, REMOVED};
use crate::history::{Event, EventType, Func, Recorder};
use crate::members::Endpoints;

/// Watched prefix.
pub const PREFIX: &str = "jl/w/";

/// A stream with no bytes for this long (bookmarks come every 500 ms) is
/// considered stalled and is reopened elsewhere.
const STALL: Duration = Duration::from_secs(3);

/// One writer's settings.
#[derive(Clone, Copy, Debug)]
pub struct WriterOptions {
    /// Writer index (its node is `index % nodes`).
    pub index: usize,
    /// Number of writers (process ids of retired processes step by it).
    pub clients: usize,
    /// Keys under the prefix.
    pub keys: usize,
    /// Pause between writes.
    pub think: Duration,
    /// Seed.
    pub seed: u64,
}

/// Runs one writer until `stop`, through the `index`-th member (modulo).
pub async fn writer(
    o: WriterOptions,
    nodes: Endpoints,
    rec: Recorder,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let WriterOptions {
        index,
        clients,
        keys,
        think,
        seed,
    } = o;
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x2545_F491));
    let mut process = index as u64 + 1;
    let mut counter = 0u64;
    while !*stop.borrow() {
        let Some((node, epoch)) = nodes.pick(index) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        counter += 1;
        let key = format!("{PREFIX}k{}", rng.gen_range(0..keys));
        let value = format!("{process}-{counter}");
        let mut inv = Event::new(process, EventType::Invoke, Func::Write, &key, 0);
        inv.value = Some(value.clone());
        inv.node = Some(node.node);
        rec.record(inv.clone());
        let mut done = inv;
        done.kind = match node.write(&key, &value).await.or_record(&mut done) {
            Ok(rev) => {
                done.revision = rev;
                EventType::Ok
            }
            Err(kind) => kind,
        };
        let kind = done.kind;
        if done.error.as_deref() == Some(REMOVED) {
            nodes.gone(node.node, epoch);
        }
        rec.record(done);
        if kind == EventType::Info {
            process += clients as u64;
        }
        let pause = if kind == EventType::Ok {
            think
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Parses one SSE frame (`event:`, `id:`, `data:` lines) into a message;
/// values are reduced to the unique values the writers wrote (`padding`).
pub fn parse_frame(frame: &str, padding: &Padding) -> Option<Message> {
    let mut event = "message";
    let mut data = String::new();
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        }
    }
    let v: Value = serde_json::from_str(&data).ok()?;
    match event {
        "change" => {
            let revision = v.get("revision")?.as_u64()?;
            let events = v
                .get("events")?
                .as_array()?
                .iter()
                .filter_map(|e| {
                    let kv = e.get("kv")?;
                    Some(WatchEvent {
                        kind: e.get("type")?.as_str()?.to_string(),
                        key: kv.get("key")?.as_str()?.to_string(),
                        value: kv
                            .get("value")
                            .and_then(Value::as_str)
                            .map(|v| padding.unpad(v)),
                        mod_revision: kv
                            .get("mod_revision")
                            .and_then(Value::as_u64)
                            .unwrap_or(revision),
                    })
                })
                .collect();
            Some(Message::Change { revision, events })
        }
        "progress" => Some(Message::Progress {
            revision: v.get("revision")?.as_u64()?,
        }),
        "compacted" => Some(Message::Compacted {
            compact_revision: v.get("compact_revision")?.as_u64()?,
        }),
        _ => None,
    }
}

/// What a watcher covered: every revision up to here was delivered or
/// bookmarked.
fn covered(w: &Watcher) -> u64 {
    let mut c = 0;
    for s in &w.sessions {
        for m in &s.messages {
            match m {
                Message::Change { revision, .. } | Message::Progress { revision } => {
                    c = c.max(*revision)
                }
                Message::Compacted { .. } => {}
            }
        }
    }
    c
}

/// Runs one watcher until `stop` is set and it has covered `target` (or
/// `deadline` passes). Starts on the `index`-th member, moves to the next
/// member on every reconnect (a removed node refuses the watch with `410`
/// and its stream ends or stalls, so the watcher moves on).
pub async fn watcher(
    index: usize,
    nodes: Endpoints,
    log: Arc<Mutex<Watcher>>,
    mut target: tokio::sync::watch::Receiver<Option<(u64, Instant)>>,
) {
    let Ok(http) = crate::tls::apply(reqwest::Client::builder())
        .default_headers(crate::auth::headers())
        .connect_timeout(Duration::from_millis(500))
        .build()
    else {
        return;
    };
    let padding = nodes.padding();
    let mut n = index;
    let mut start = 1u64;
    let done = |log: &Arc<Mutex<Watcher>>, t: &Option<(u64, Instant)>| match t {
        Some((rev, deadline)) => {
            Instant::now() >= *deadline
                || covered(&log.lock().unwrap_or_else(|p| p.into_inner())) >= *rev
        }
        None => false,
    };
    loop {
        if done(&log, &target.borrow()) {
            return;
        }
        let Some((node, _)) = nodes.pick(n) else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        n += 1;
        let url = format!(
            "{}/v1/watch/{PREFIX}?prefix=true&start_revision={start}&progress_notify=true&progress_interval_ms=500",
            node.base()
        );
        log.lock()
            .unwrap_or_else(|p| p.into_inner())
            .sessions
            .push(Session {
                start_revision: start,
                messages: Vec::new(),
            });
        let resp = match tokio::time::timeout(STALL, http.get(&url).send()).await {
            Ok(Ok(r)) if r.status().is_success() => r,
            _ => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut resp = resp;
        let mut buf = String::new();
        // Where to look for the next frame end: a large value arrives in
        // many chunks, and the buffer is not searched again from the start.
        let mut scanned = 0usize;
        loop {
            let chunk = tokio::select! {
                c = tokio::time::timeout(STALL, resp.chunk()) => c,
                r = target.changed() => {
                    if r.is_err() || done(&log, &target.borrow()) {
                        return;
                    }
                    continue;
                }
            };
            let Ok(Ok(Some(bytes))) = chunk else { break };
            buf.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = buf.as_bytes()[scanned.min(buf.len())..]
                .windows(2)
                .position(|w| w == b"\n\n")
                .map(|at| scanned + at)
            {
                let frame: String = buf.drain(..end + 2).collect();
                scanned = 0;
                let Some(m) = parse_frame(&frame, &padding) else {
                    continue;
                };
                let mut l = log.lock().unwrap_or_else(|p| p.into_inner());
                match &m {
                    Message::Change { revision, .. } | Message::Progress { revision } => {
                        start = start.max(revision + 1);
                    }
                    Message::Compacted { compact_revision } => {
                        start = start.max(compact_revision + 1)
                    }
                }
                if let Some(s) = l.sessions.last_mut() {
                    s.messages.push(m);
                }
            }
            // The last byte may be the first half of a frame end.
            scanned = buf.len().saturating_sub(1);
            if done(&log, &target.borrow()) {
                return;
            }
        }
    }
}

/// The writes of a history under the prefix: acknowledged ones with their
/// revision, indeterminate ones without; failed ones are left out (a watcher
/// that delivers one is wrong).
pub fn writes(history: &[Event]) -> Vec<Write> {
    crate::checker::register::complete(history)
        .into_iter()
        .filter(|o| o.f == Func::Write && o.key.starts_with(PREFIX) && o.kind != EventType::Fail)
        .filter_map(|o| {
            Some(Write {
                key: o.key,
                value: o.value?,
                revision: if o.kind == EventType::Ok {
                    o.revision
                } else {
                    None
                },
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_frames() {
        let c = parse_frame("id: 7\nevent: change\ndata: {\"revision\":7,\"events\":[{\"type\":\"put\",\"kv\":{\"key\":\"jl/w/k1\",\"value\":\"3-4\",\"create_revision\":2,\"mod_revision\":7,\"version\":2}}]}\n\n", &Padding::none());
        assert!(
            matches!(c, Some(Message::Change { revision: 7, ref events }) if events.len() == 1 && events[0].value.as_deref() == Some("3-4"))
        );
        assert!(matches!(
            parse_frame(
                "id: 9\nevent: progress\ndata: {\"revision\":9}\n\n",
                &Padding::none()
            ),
            Some(Message::Progress { revision: 9 })
        ));
        assert!(matches!(
            parse_frame(
                "event: compacted\ndata: {\"compact_revision\":5,\"revision\":9}\n\n",
                &Padding::none()
            ),
            Some(Message::Compacted {
                compact_revision: 5
            })
        ));
        assert!(parse_frame(": keepalive\n\n", &Padding::none()).is_none());
    }

    #[test]
    fn padded_values_come_back_short() {
        let p = Padding::to_size(80, crate::client::padding::DEFAULT_MAX_VALUE_BYTES)
            .expect("valid size");
        let frame = format!(
            "event: change\ndata: {{\"revision\":7,\"events\":[{{\"type\":\"put\",\"kv\":{{\"key\":\"jl/w/k1\",\"value\":\"{}\",\"mod_revision\":7}}}}]}}\n\n",
            p.pad("3-4")
        );
        assert!(
            matches!(parse_frame(&frame, &p), Some(Message::Change { ref events, .. }) if events[0].value.as_deref() == Some("3-4"))
        );
    }
}
