//! `ballastctl watch KEY`: prints one line per change (or one JSON document
//! per line with `-o json`) as they happen, until Ctrl-C (exit 0). The stream
//! reconnects by itself; it ends with exit 3 when the history it needs was
//! compacted, and with the usual codes when the request is refused.

use std::io::Write as _;

use ballast_client::{Error, Event, EventKind, WatchEvent, WatchOptions};
use futures::StreamExt as _;
use serde_json::json;

use super::{Ctx, Outcome};
use crate::cli::{OutputFormat, WatchArgs};
use crate::exit::CliError;
use crate::output::{display_text, display_value, json_bytes, kv_json};

/// Runs `watch`.
pub async fn run(ctx: &Ctx, args: WatchArgs) -> Result<Outcome, CliError> {
    let client = ctx.client()?;
    let options = WatchOptions {
        prefix: args.prefix,
        start_revision: args.start_revision,
        prev_kv: args.prev_kv,
        progress_notify: false,
    };
    let mut stream = client.watch(&args.key, options);
    let format = ctx.format();
    loop {
        let item = tokio::select! {
            item = stream.next() => item,
            _ = tokio::signal::ctrl_c() => return Ok(Outcome::default()),
        };
        match item {
            None => return Ok(Outcome::default()),
            Some(Ok(WatchEvent::Change { revision, events })) => {
                let lines = render(format, revision, &events, args.prev_kv);
                let mut out = std::io::stdout().lock();
                if out.write_all(&lines).and_then(|()| out.flush()).is_err() {
                    // stdout closed (`| head`): nothing more to do.
                    return Ok(Outcome::default());
                }
            }
            Some(Ok(WatchEvent::Progress { .. })) => {}
            Some(Err(e @ Error::Compacted { .. })) => {
                return Err(CliError::Api {
                    status: 0,
                    code: "compacted".to_owned(),
                    message: e.to_string(),
                })
            }
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

/// One line per event: `REVISION PUT KEY VALUE` (`DELETE KEY`), or a JSON
/// document per event with `-o json`.
pub fn render(format: OutputFormat, revision: u64, events: &[Event], prev_kv: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        let kind = match e.kind {
            EventKind::Put => "put",
            EventKind::Delete => "delete",
        };
        match format {
            OutputFormat::Json => {
                let mut doc = json!({ "revision": revision, "type": kind, "kv": kv_json(&e.kv) });
                if prev_kv {
                    doc["prev_kv"] = e.prev_kv.as_ref().map(kv_json).unwrap_or_default();
                }
                out.extend(json_bytes(&doc));
            }
            OutputFormat::Table => {
                let mut line = format!(
                    "{revision} {} {}",
                    kind.to_uppercase(),
                    display_text(&e.kv.key)
                );
                if e.kind == EventKind::Put {
                    line.push(' ');
                    line.push_str(&display_value(&e.kv.value));
                }
                if let (true, Some(prev)) = (prev_kv, &e.prev_kv) {
                    line.push_str(" (was ");
                    line.push_str(&display_value(&prev.value));
                    line.push(')');
                }
                line.push('\n');
                out.extend(line.into_bytes());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::test_kv;

    #[test]
    fn renders_lines() {
        let events = vec![
            Event {
                kind: EventKind::Put,
                kv: test_kv("app/mode", b"blue"),
                prev_kv: Some(test_kv("app/mode", b"green")),
            },
            Event {
                kind: EventKind::Delete,
                kv: test_kv("app/old", b""),
                prev_kv: None,
            },
        ];
        assert_eq!(
            String::from_utf8_lossy(&render(OutputFormat::Table, 7, &events, true)),
            "7 PUT app/mode blue (was green)\n7 DELETE app/old\n"
        );
        let json = render(OutputFormat::Json, 7, &events, false);
        let lines: Vec<serde_json::Value> = json
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .filter_map(|l| serde_json::from_slice(l).ok())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["type"], "put");
        assert_eq!(lines[1]["kv"]["key"], "app/old");
    }
}
