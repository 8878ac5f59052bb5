//! A small server-sent-events parser (the WHATWG `text/event-stream` rules) fed with the chunks
//! of an HTTP body as they arrive, whatever their boundaries.
//!
//! Lines end with `\n`, `\r\n` or `\r`; a blank line dispatches the event; lines starting with
//! `:` are comments (keep-alives); `data` lines are joined with `\n`; a single space after the
//! colon is dropped; an event with no `data` is not dispatched. Bytes are buffered until a line
//! is complete, so a UTF-8 character split across chunks is decoded whole.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event` field, `message` when absent.
    pub event: String,
    /// The `data` lines, joined with `\n`.
    pub data: String,
    /// The last `id` seen, if any.
    pub id: Option<String>,
}

/// Incremental parser state.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of an incomplete line.
    pending: Vec<u8>,
    /// `event` of the event being built.
    event: Option<String>,
    /// `data` lines of the event being built.
    data: Vec<String>,
    /// Whether any `data` line was seen for the event being built.
    has_data: bool,
    /// Last event id.
    last_id: Option<String>,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds a chunk; returns the events it completed, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.pending.extend_from_slice(chunk);
        let mut out = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < self.pending.len() {
            match self.pending[i] {
                b'\n' => {
                    let line = String::from_utf8_lossy(&self.pending[start..i]).into_owned();
                    self.line(&line, &mut out);
                    i += 1;
                    start = i;
                }
                b'\r' => {
                    if i + 1 == self.pending.len() {
                        // Might be the first half of `\r\n`: wait for the next chunk.
                        break;
                    }
                    let line = String::from_utf8_lossy(&self.pending[start..i]).into_owned();
                    self.line(&line, &mut out);
                    i += if self.pending[i + 1] == b'\n' { 2 } else { 1 };
                    start = i;
                }
                _ => i += 1,
            }
        }
        self.pending.drain(..start);
        out
    }

    fn line(&mut self, line: &str, out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            if self.has_data {
                out.push(SseEvent {
                    event: self.event.take().unwrap_or_else(|| "message".into()),
                    data: self.data.join("\n"),
                    id: self.last_id.clone(),
                });
            }
            self.event = None;
            self.data.clear();
            self.has_data = false;
            return;
        }
        if line.starts_with(':') {
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                self.data.push(value.to_string());
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields are ignored.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        chunks.iter().flat_map(|c| p.push(c)).collect()
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
            id: None,
        }
    }

    #[test]
    fn whole_events() {
        let got = feed(&[b"event: execution\ndata: {\"a\":1}\n\nevent: execution\ndata: {}\n\n"]);
        assert_eq!(
            got,
            vec![ev("execution", "{\"a\":1}"), ev("execution", "{}")]
        );
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let text = "event: execution\r\ndata: {\"name\":\"d\u{e9}ploy\"}\r\n\r\n: keep-alive\n\ndata: x\n\n";
        let want = feed(&[text.as_bytes()]);
        assert_eq!(
            want,
            vec![
                ev("execution", "{\"name\":\"d\u{e9}ploy\"}"),
                ev("message", "x")
            ]
        );
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(feed(&[&bytes[..cut], &bytes[cut..]]), want, "cut at {cut}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(feed(&singles), want);
    }

    #[test]
    fn multi_line_data_and_odd_line_endings() {
        let got = feed(&[b"data: one\rdata: two\r\rdata:three\ndata\n\n"]);
        assert_eq!(
            got,
            vec![ev("message", "one\ntwo"), ev("message", "three\n")]
        );
    }

    #[test]
    fn comments_and_empty_events_dispatch_nothing() {
        let got = feed(&[b": ping\n\n:\n\nevent: execution\n\nid: 7\nretry: 100\n\n"]);
        assert!(got.is_empty(), "{got:?}");
        // An incomplete event at the end of the stream is not dispatched.
        assert!(feed(&[b"event: execution\ndata: {}\n"]).is_empty());
    }

    #[test]
    fn ids_are_kept() {
        let got = feed(&[b"id: 3\ndata: a\n\ndata: b\n\n"]);
        assert_eq!(got[0].id.as_deref(), Some("3"));
        assert_eq!(got[1].id.as_deref(), Some("3"));
    }
}
