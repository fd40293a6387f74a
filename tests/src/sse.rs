//! A small Server-Sent Events client for watch tests.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use futures::StreamExt;

/// One SSE message.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// `id:` field (a revision).
    pub id: Option<u64>,
    /// `event:` field.
    pub event: String,
    /// `data:` field, parsed as JSON.
    pub data: serde_json::Value,
}

impl SseEvent {
    /// The revision of a change or progress message.
    pub fn revision(&self) -> u64 {
        self.data["revision"].as_u64().unwrap_or(0)
    }

    /// The keys of a change message's events, in order.
    pub fn keys(&self) -> Vec<String> {
        self.data["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter_map(|e| e["kv"]["key"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// An open watch stream.
pub struct WatchStream {
    body: futures::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: Vec<u8>,
    /// HTTP status of the response.
    pub status: u16,
}

impl WatchStream {
    /// Opens `url` (a full watch URL), resuming after `last_event_id` if given.
    pub async fn open(
        http: &reqwest::Client,
        url: &str,
        last_event_id: Option<u64>,
    ) -> Result<WatchStream> {
        let mut req = http.get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        Ok(WatchStream {
            body: resp.bytes_stream().boxed(),
            buf: Vec::new(),
            status,
        })
    }

    fn take_message(&mut self) -> Option<String> {
        let end = self.buf.windows(2).position(|w| w == b"\n\n")?;
        let message: Vec<u8> = self.buf.drain(..end + 2).collect();
        Some(String::from_utf8_lossy(&message[..end]).to_string())
    }

    /// The next message (comments skipped), waiting at most `timeout`;
    /// `Ok(None)` when the stream ended.
    pub async fn next(&mut self, timeout: Duration) -> Result<Option<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(message) = self.take_message() {
                let mut id = None;
                let mut event = String::from("message");
                let mut data = String::new();
                for line in message.lines() {
                    if line.starts_with(':') {
                        continue;
                    }
                    let (field, value) = line.split_once(':').unwrap_or((line, ""));
                    let value = value.strip_prefix(' ').unwrap_or(value);
                    match field {
                        "id" => {
                            id = Some(
                                value
                                    .parse::<u64>()
                                    .map_err(|e| anyhow!("bad id {value:?}: {e}"))?,
                            )
                        }
                        "event" => event = value.to_string(),
                        "data" => data.push_str(value),
                        _ => {}
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let data = serde_json::from_str(&data)?;
                return Ok(Some(SseEvent { id, event, data }));
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => bail!("no watch message within {timeout:?}"),
                Ok(None) => return Ok(None),
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk?),
            }
        }
    }

    /// Reads change messages until one at `revision` or later arrived; returns
    /// every message read (progress included).
    pub async fn read_until(&mut self, revision: u64, timeout: Duration) -> Result<Vec<SseEvent>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let Some(ev) = self.next(left).await? else {
                bail!("stream ended before revision {revision}: {out:?}");
            };
            let done = ev.event == "change" && ev.revision() >= revision;
            out.push(ev);
            if done {
                return Ok(out);
            }
        }
    }
}
