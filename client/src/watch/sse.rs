//! An incremental Server-Sent Events parser: bytes in (as they arrive, split
//! anywhere), complete messages out.

/// One SSE message. Comment-only blocks (`: keepalive`) are reported too, as a
/// message with no `event` and no `data`, so the reader knows the link is alive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SseMessage {
    /// The `id:` field, if present.
    pub(crate) id: Option<String>,
    /// The `event:` field (empty when absent).
    pub(crate) event: String,
    /// Every `data:` line, joined with `\n`.
    pub(crate) data: String,
}

/// Buffers bytes until a blank line ends a message.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
}

/// Refuses to buffer a single message larger than this: a server that never
/// ends a message must not grow the client's memory without bound.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

impl SseParser {
    /// Adds a chunk of the stream. Returns false when the pending message
    /// grew beyond [`MAX_MESSAGE_BYTES`].
    pub(crate) fn push(&mut self, chunk: &[u8]) -> bool {
        self.buf.extend_from_slice(chunk);
        self.buf.len() <= MAX_MESSAGE_BYTES
    }

    /// The next complete message, if one is buffered.
    pub(crate) fn next_message(&mut self) -> Option<SseMessage> {
        let (end, sep) = find_blank_line(&self.buf)?;
        let raw: Vec<u8> = self.buf.drain(..end + sep).collect();
        let text = String::from_utf8_lossy(&raw[..end]);
        let mut msg = SseMessage::default();
        let mut data_lines = 0;
        for line in text.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() || line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => msg.id = Some(value.to_owned()),
                "event" => msg.event = value.to_owned(),
                "data" => {
                    if data_lines > 0 {
                        msg.data.push('\n');
                    }
                    msg.data.push_str(value);
                    data_lines += 1;
                }
                _ => {}
            }
        }
        Some(msg)
    }
}

/// Position of the first blank line (`\n\n` or `\r\n\r\n`) and its length.
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_split_anywhere() {
        let stream = b"id: 7\nevent: change\ndata: {\"revision\":7}\n\n: keepalive\n\nevent: compacted\r\ndata: {}\r\n\r\n";
        for split in 0..stream.len() {
            let mut p = SseParser::default();
            let mut out = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                assert!(p.push(chunk));
                while let Some(m) = p.next_message() {
                    out.push(m);
                }
            }
            assert_eq!(out.len(), 3, "split at {split}");
            assert_eq!(out[0].id.as_deref(), Some("7"));
            assert_eq!(out[0].event, "change");
            assert_eq!(out[0].data, "{\"revision\":7}");
            assert_eq!(out[1], SseMessage::default());
            assert_eq!(out[2].event, "compacted");
        }
    }
}
