//! A file's lines to events: Kubernetes CRI/Docker lines decoded and their partial (`P`)
//! records joined, `multiline.start_pattern` joining stack traces, a timestamp read from the
//! line.
//!
//! What a [`Decoder`] holds (a partial line, an unfinished multiline event) has been read but
//! not sent: [`Decoder::safe_offset`] is never past its first byte, so a saved position never
//! skips it and a crash re-reads it rather than losing it.

use std::time::Instant;

use bytes::Bytes;
use logferry_tail::container::{self, FormatError, PartialJoiner};
use logferry_tail::multiline::{Aggregated, Multiline, MultilineOptions};
use logferry_tail::tailer::Line;
use logferry_tail::timestamp::TimestampParser;

use crate::event::{names, FieldName};

/// One decoded event before it gets its acknowledgement.
#[derive(Debug)]
pub(super) struct Pending {
    pub timestamp_ms: i64,
    pub message: Bytes,
    pub extra: Option<(FieldName, Bytes)>,
    pub truncated_bytes: u64,
    /// [`crate::event::Event::origin`], set by the reader for events a line finished (0 for
    /// events a timeout or a close finished: those are sent again after a crash).
    pub origin: u64,
}

impl Pending {
    /// A container line (joined from its parts), with its stream as a field.
    fn from_joined(j: container::Joined) -> Self {
        Pending {
            timestamp_ms: j.timestamp_ms,
            message: j.message,
            extra: Some((
                FieldName::Static(names::STREAM),
                Bytes::from_static(j.stream.as_str().as_bytes()),
            )),
            truncated_bytes: j.truncated_bytes,
            origin: 0,
        }
    }

    /// A finished multiline event, with its time read from its first line.
    fn timestamped(parser: Option<&TimestampParser>, a: Aggregated, now_ms: i64) -> Self {
        let ts = parser.and_then(|p| p.parse(&a.message, now_ms));
        Pending {
            timestamp_ms: ts.unwrap_or(now_ms),
            message: a.message,
            extra: None,
            truncated_bytes: a.truncated_bytes,
            origin: 0,
        }
    }
}

/// One file's decoding state.
pub(super) struct Decoder {
    /// Offset just past the last line taken from the tailer.
    consumed: u64,
    multiline: Option<Multiline>,
    /// Container logs only.
    joiner: Option<PartialJoiner>,
}

impl Decoder {
    /// A decoder for a file read from `offset`; `container`: Kubernetes container logs, whose
    /// joined lines keep at most `max_line_bytes`.
    pub fn new(
        offset: u64,
        container: bool,
        max_line_bytes: usize,
        multiline: Option<MultilineOptions>,
    ) -> Self {
        Decoder {
            consumed: offset,
            multiline: multiline.map(Multiline::new),
            joiner: container.then(|| PartialJoiner::new(max_line_bytes)),
        }
    }

    /// One line through the decoders; finished events land in `out`. A container line that
    /// is neither CRI nor Docker json-file is sent as it is (rather than lost) and its error
    /// returned.
    pub fn line(
        &mut self,
        line: &Line,
        timestamps: Option<&TimestampParser>,
        now_ms: i64,
        now: Instant,
        out: &mut Vec<Pending>,
    ) -> Result<(), FormatError> {
        let start_offset = self.consumed;
        self.consumed = line.end_offset;
        let Some(joiner) = self.joiner.as_mut() else {
            let ts = timestamps.and_then(|p| p.parse(&line.bytes, now_ms));
            match self.multiline.as_mut() {
                None => out.push(Pending {
                    timestamp_ms: ts.unwrap_or(now_ms),
                    message: line.bytes.clone(),
                    extra: None,
                    truncated_bytes: line.truncated_bytes,
                    origin: 0,
                }),
                Some(m) => {
                    if let Some(a) = m.push(&line.bytes, start_offset, line.end_offset, now) {
                        out.push(Pending::timestamped(timestamps, a, now_ms));
                    }
                }
            }
            return Ok(());
        };
        let parsed = match container::parse_auto(&line.bytes) {
            Ok(p) => p,
            Err(e) => {
                out.push(Pending {
                    timestamp_ms: now_ms,
                    message: line.bytes.clone(),
                    extra: None,
                    truncated_bytes: line.truncated_bytes,
                    origin: 0,
                });
                return Err(e);
            }
        };
        // A joined event starts at its first part, which may be lines back.
        let first_part = joiner
            .held_from()
            .map_or(start_offset, |h| h.min(start_offset));
        if let Some(j) = joiner.push(parsed, start_offset, line.end_offset) {
            let mut pending = Pending::from_joined(j);
            pending.truncated_bytes += line.truncated_bytes;
            match self.multiline.as_mut() {
                None => out.push(pending),
                Some(m) => {
                    if let Some(a) = m.push(&pending.message, first_part, line.end_offset, now) {
                        out.push(Pending {
                            timestamp_ms: pending.timestamp_ms,
                            message: a.message,
                            extra: pending.extra,
                            truncated_bytes: a.truncated_bytes,
                            origin: 0,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Everything still held, for a file that is closed: partial container lines, then the
    /// unfinished multiline event.
    pub fn flush(&mut self, timestamps: Option<&TimestampParser>, now_ms: i64) -> Vec<Pending> {
        let mut out = Vec::new();
        if let Some(j) = self.joiner.as_mut() {
            out.extend(j.flush().into_iter().map(Pending::from_joined));
        }
        if let Some(a) = self.multiline.as_mut().and_then(Multiline::flush) {
            out.push(Pending::timestamped(timestamps, a, now_ms));
        }
        out
    }

    /// The multiline event whose timeout passed, if any.
    pub fn flush_due(
        &mut self,
        now: Instant,
        timestamps: Option<&TimestampParser>,
        now_ms: i64,
    ) -> Option<Pending> {
        let a = self.multiline.as_mut()?.flush_due(now)?;
        Some(Pending::timestamped(timestamps, a, now_ms))
    }

    /// When the held multiline event times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.multiline.as_ref().and_then(Multiline::deadline)
    }

    /// The file was truncated: it is read again from 0, and what was held belongs to content
    /// that is gone.
    pub fn truncated(&mut self) {
        self.consumed = 0;
        if let Some(m) = self.multiline.as_mut() {
            let _ = m.flush();
        }
        if let Some(j) = self.joiner.as_mut() {
            let _ = j.flush();
        }
    }

    /// The furthest position that may be saved: past every consumed line, but never past the
    /// start of something still held.
    pub fn safe_offset(&self) -> u64 {
        let mut at = self.consumed;
        if let Some(h) = self.multiline.as_ref().and_then(Multiline::held_from) {
            at = at.min(h);
        }
        if let Some(h) = self.joiner.as_ref().and_then(PartialJoiner::held_from) {
            at = at.min(h);
        }
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Feeds `lines` (each followed by `\n`) from `offset`; the events' messages.
    fn feed(d: &mut Decoder, offset: &mut u64, lines: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for l in lines {
            *offset += l.len() as u64 + 1;
            let line = Line {
                file: 1,
                bytes: Bytes::copy_from_slice(l.as_bytes()),
                end_offset: *offset,
                truncated_bytes: 0,
            };
            let _ = d.line(&line, None, 7, Instant::now(), &mut out);
        }
        out.iter()
            .map(|p| String::from_utf8_lossy(&p.message).into_owned())
            .collect()
    }

    fn multiline() -> MultilineOptions {
        MultilineOptions {
            start_pattern: regex::bytes::Regex::new("^[^ ]").expect("regex"),
            timeout: Duration::from_secs(60),
            max_lines: 100,
            max_bytes: 1 << 20,
        }
    }

    #[test]
    fn plain_lines_move_the_safe_offset_past_each_line() {
        let mut d = Decoder::new(100, false, 1024, None);
        let mut at = 100;
        assert_eq!(feed(&mut d, &mut at, &["one", "two"]), ["one", "two"]);
        assert_eq!(d.safe_offset(), 108);
    }

    #[test]
    fn a_partial_container_line_holds_the_safe_offset_at_its_first_part() {
        let mut d = Decoder::new(0, true, 1024, None);
        let mut at = 0;
        let full = "2024-01-02T03:04:05Z stdout F done";
        assert_eq!(feed(&mut d, &mut at, &[full]), ["done"]);
        let first_part_at = at;
        assert_eq!(d.safe_offset(), first_part_at);
        let p1 = "2024-01-02T03:04:05Z stdout P hel";
        assert!(feed(&mut d, &mut at, &[p1]).is_empty());
        assert_eq!(d.safe_offset(), first_part_at, "held: not past its start");
        let f = "2024-01-02T03:04:05Z stdout F lo";
        assert_eq!(feed(&mut d, &mut at, &[f]), ["hello"]);
        assert_eq!(d.safe_offset(), at);
    }

    #[test]
    fn an_unfinished_multiline_event_holds_the_safe_offset_at_its_first_line() {
        let mut d = Decoder::new(0, false, 1024, Some(multiline()));
        let mut at = 0;
        assert!(feed(&mut d, &mut at, &["Error: boom", " at a()"]).is_empty());
        assert_eq!(d.safe_offset(), 0);
        let next_start = at;
        assert_eq!(feed(&mut d, &mut at, &["next"]), ["Error: boom\n at a()"]);
        assert_eq!(d.safe_offset(), next_start);
        let flushed = d.flush(None, 7);
        assert_eq!(flushed.len(), 1);
        assert_eq!(&flushed[0].message[..], b"next");
        assert_eq!(d.safe_offset(), at);
    }

    #[test]
    fn an_unparseable_container_line_is_sent_as_it_is() {
        let mut d = Decoder::new(0, true, 1024, None);
        let line = Line {
            file: 1,
            bytes: Bytes::from_static(b"not a container line"),
            end_offset: 21,
            truncated_bytes: 0,
        };
        let mut out = Vec::new();
        assert!(d.line(&line, None, 7, Instant::now(), &mut out).is_err());
        assert_eq!(&out[0].message[..], b"not a container line");
        assert_eq!(d.safe_offset(), 21);
    }

    #[test]
    fn truncation_drops_what_was_held_and_starts_over() {
        let mut d = Decoder::new(0, true, 1024, None);
        let mut at = 0;
        feed(&mut d, &mut at, &["2024-01-02T03:04:05Z stdout P part"]);
        d.truncated();
        assert_eq!(d.safe_offset(), 0);
        assert!(d.flush(None, 7).is_empty());
    }
}
