//! The watch stream's events (server-sent events, DESIGN.md §3 "Watch"): `event:`, `id:` and
//! `data:` lines, a blank line ending each event, its data parsed as JSON.
//!
//! Limits: a line is read up to `LINE_BYTES_MAX` and an event's data up to `EVENT_BYTES_MAX`
//! (past either the stream counts as broken, and a watcher reconnects); the data is parsed
//! with the answer's depth limit.

use std::io::{BufRead, BufReader, Read};

use serde_json::Value;

use super::{Error, ErrorKind, parse_answer};

/// Longest line of the stream read (a commit's data is one line).
pub const LINE_BYTES_MAX: usize = 64 << 20;
/// Largest event data read: the largest commit the server accepts, with room for its JSON.
pub const EVENT_BYTES_MAX: usize = 64 << 20;

/// One event of the stream.
#[derive(Debug, Clone)]
pub struct Event {
    /// `commit`, `progress`, `lagged` or `error`.
    pub event: String,
    /// The revision the event brings the watcher to, if it says.
    pub id: Option<u64>,
    pub data: Value,
}

/// How reading the next event failed.
#[derive(Debug)]
pub enum Broken {
    /// The connection broke, ended or sent more than the limits: reconnect.
    Stream(String),
    /// An event's data is not JSON: the server is not one to follow.
    Invalid(Error),
}

/// The events of a stream, in order; `None` when the server ended it.
pub struct Events<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
}

impl<R: Read> Events<R> {
    pub fn new(stream: R) -> Events<R> {
        Events {
            reader: BufReader::new(stream),
            line: Vec::new(),
        }
    }

    /// The next event, `Ok(None)` at the end of the stream.
    pub fn next_event(&mut self) -> Result<Option<Event>, Broken> {
        let (mut event, mut id, mut data) = (String::new(), None, String::new());
        loop {
            self.line.clear();
            let read = (&mut self.reader)
                .take(LINE_BYTES_MAX as u64 + 1)
                .read_until(b'\n', &mut self.line)
                .map_err(|e| Broken::Stream(format!("the stream broke ({e})")))?;
            if read == 0 {
                return Ok(None);
            }
            if self.line.len() > LINE_BYTES_MAX {
                return Err(Broken::Stream(format!(
                    "a line of the stream is over {LINE_BYTES_MAX} bytes"
                )));
            }
            let line = std::str::from_utf8(&self.line)
                .map_err(|_| Broken::Stream("the stream is not UTF-8".into()))?
                .trim_end_matches(['\n', '\r']);
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse::<u64>().ok();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
                if data.len() > EVENT_BYTES_MAX {
                    return Err(Broken::Stream(format!(
                        "an event of the stream is over {EVENT_BYTES_MAX} bytes"
                    )));
                }
            } else if line.is_empty() && !event.is_empty() {
                let data = parse_answer(&data).map_err(|e| {
                    Broken::Invalid(Error::new(
                        ErrorKind::Failure,
                        format!("an event is not JSON: {e}"),
                    ))
                })?;
                return Ok(Some(Event { event, id, data }));
            }
        }
    }
}

/// The error an `error` event states: a revoked token or scope (denied), a position compacted
/// away, or anything else.
pub fn stated_error(data: &Value) -> Error {
    let error = &data["error"];
    let kind = match error["code"].as_str() {
        Some("unauthorized" | "forbidden") => ErrorKind::Denied,
        Some("compacted") => ErrorKind::Compacted,
        _ => ErrorKind::Failure,
    };
    Error::new(
        kind,
        format!(
            "{}: {}",
            error["code"].as_str().unwrap_or("error"),
            error["message"].as_str().unwrap_or("the watch ended")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_and_parsed() {
        let stream = "event: commit\nid: 7\ndata: {\"revision\":7}\n\n: comment\nevent: progress\ndata: {\"revision\":9}\n\n";
        let mut events = Events::new(stream.as_bytes());
        let first = events.next_event().unwrap().unwrap();
        assert_eq!((first.event.as_str(), first.id), ("commit", Some(7)));
        assert_eq!(first.data["revision"], 7);
        let second = events.next_event().unwrap().unwrap();
        assert_eq!((second.event.as_str(), second.id), ("progress", None));
        assert!(events.next_event().unwrap().is_none());
    }

    #[test]
    fn data_that_is_not_json_is_refused() {
        let mut events = Events::new("event: commit\ndata: {\n\n".as_bytes());
        assert!(matches!(events.next_event(), Err(Broken::Invalid(_))));
    }
}
