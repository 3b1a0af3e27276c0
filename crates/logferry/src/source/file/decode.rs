//! A file's lines to events: Kubernetes CRI/Docker lines decoded and their partial (`P`)
//! records joined, `multiline` (`start_pattern` or a language `preset`) joining stack traces
//! (per stream in container logs), a timestamp read from the line.
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
            extra: Some(stream_field(j.stream)),
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
    /// Plain files: one joiner. Container logs: one per stream (stdout, then stderr): the two
    /// streams' records interleave in one file, and a trace on stderr must not take in the
    /// stdout lines written between its lines.
    multiline: Vec<StreamJoiner>,
    /// Container logs only.
    joiner: Option<PartialJoiner>,
}

/// The multiline joiner of one stream.
struct StreamJoiner {
    multiline: Multiline,
    /// Container logs: the time of the held event's first record (the event's time).
    first_ms: i64,
}

impl StreamJoiner {
    /// A container record (joined from its parts) that starts at `first_part` into the joiner;
    /// the event it finished, if any, with the time of that event's first record.
    fn push(
        &mut self,
        j: &container::Joined,
        first_part: u64,
        end: u64,
        now: Instant,
    ) -> Option<Pending> {
        let held_before = self.multiline.held_from().is_some();
        let finished = self.multiline.push(&j.message, first_part, end, now);
        let finished_ms = if held_before {
            self.first_ms
        } else {
            j.timestamp_ms
        };
        // This record started the held event: something is held now, and it is not what was
        // held before (that one finished). Not told by offsets: records joined again by
        // `rejoin` all share one.
        if self.multiline.held_from().is_some() && (!held_before || finished.is_some()) {
            self.first_ms = j.timestamp_ms;
        }
        finished.map(|a| self.container_event(a, finished_ms, j.stream))
    }

    fn container_event(
        &self,
        a: Aggregated,
        timestamp_ms: i64,
        stream: container::Stream,
    ) -> Pending {
        Pending {
            timestamp_ms,
            message: a.message,
            extra: Some(stream_field(stream)),
            truncated_bytes: a.truncated_bytes,
            origin: 0,
        }
    }

    /// The held event, as a container event of `stream` or (`None`) a plain file's.
    fn finish(
        &self,
        a: Aggregated,
        stream: Option<container::Stream>,
        timestamps: Option<&TimestampParser>,
        now_ms: i64,
    ) -> Pending {
        match stream {
            Some(s) => self.container_event(a, self.first_ms, s),
            None => Pending::timestamped(timestamps, a, now_ms),
        }
    }
}

fn stream_field(stream: container::Stream) -> (FieldName, Bytes) {
    (
        FieldName::Static(names::STREAM),
        Bytes::from_static(stream.as_str().as_bytes()),
    )
}

/// The container streams in the order of [`Decoder::multiline`].
const STREAMS: [container::Stream; 2] = [container::Stream::Stdout, container::Stream::Stderr];

fn stream_index(stream: container::Stream) -> usize {
    match stream {
        container::Stream::Stdout => 0,
        container::Stream::Stderr => 1,
    }
}

/// One joiner per stream (`streams` of them) under `multiline`, or none without it.
fn joiners(multiline: Option<MultilineOptions>, streams: usize) -> Vec<StreamJoiner> {
    multiline
        .map(|opts| {
            (0..streams)
                .map(|_| StreamJoiner {
                    multiline: Multiline::new(opts.clone()),
                    first_ms: 0,
                })
                .collect()
        })
        .unwrap_or_default()
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
        let streams = if container { STREAMS.len() } else { 1 };
        let multiline = joiners(multiline, streams);
        Decoder {
            consumed: offset,
            multiline,
            joiner: container.then(|| PartialJoiner::new(max_line_bytes)),
        }
    }

    /// The stream a joiner belongs to: `None` for a plain file's.
    fn stream_of(&self, index: usize) -> Option<container::Stream> {
        self.joiner.is_some().then(|| STREAMS[index])
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
            match self.multiline.first_mut() {
                None => out.push(Pending {
                    timestamp_ms: timestamps
                        .and_then(|p| p.parse(&line.bytes, now_ms))
                        .unwrap_or(now_ms),
                    message: line.bytes.clone(),
                    extra: None,
                    truncated_bytes: line.truncated_bytes,
                    origin: 0,
                }),
                Some(sj) => {
                    let m = &mut sj.multiline;
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
        if let Some(mut j) = joiner.push_from(&line.bytes, parsed, start_offset, line.end_offset) {
            j.truncated_bytes += line.truncated_bytes;
            match self.multiline.get_mut(stream_index(j.stream)) {
                None => out.push(Pending::from_joined(j)),
                Some(sj) => out.extend(sj.push(&j, first_part, line.end_offset, now)),
            }
        }
        Ok(())
    }

    /// Everything still held, for a file that is closed: partial container lines (through
    /// their stream's multiline joiner), then the unfinished multiline events.
    pub fn flush(&mut self, timestamps: Option<&TimestampParser>, now_ms: i64) -> Vec<Pending> {
        let mut out = Vec::new();
        let partials = self
            .joiner
            .as_mut()
            .map(PartialJoiner::flush)
            .unwrap_or_default();
        let now = Instant::now();
        for j in partials {
            match self.multiline.get_mut(stream_index(j.stream)) {
                None => out.push(Pending::from_joined(j)),
                // Offsets no longer matter: nothing is saved past a closed file's end.
                Some(sj) => out.extend(sj.push(&j, self.consumed, self.consumed, now)),
            }
        }
        for i in 0..self.multiline.len() {
            let stream = self.stream_of(i);
            let sj = &mut self.multiline[i];
            if let Some(a) = sj.multiline.flush() {
                out.push(sj.finish(a, stream, timestamps, now_ms));
            }
        }
        out
    }

    /// Joins with `multiline` from now on (a pod's `logferry.io/multiline` annotation, learned
    /// after the file opened; `None`: no joining). What the old rule holds is finished, and
    /// `earlier` (this file's events decoded before the annotation was known and not sent yet,
    /// then that held event) go through the new rule as records read at the safe offset, so a
    /// crash re-reads them. The events finished on the way.
    pub fn rejoin(
        &mut self,
        multiline: Option<MultilineOptions>,
        mut earlier: Vec<Pending>,
        timestamps: Option<&TimestampParser>,
        now_ms: i64,
    ) -> Vec<Pending> {
        let at = self.safe_offset();
        for i in 0..self.multiline.len() {
            let stream = self.stream_of(i);
            let sj = &mut self.multiline[i];
            if let Some(a) = sj.multiline.flush() {
                earlier.push(sj.finish(a, stream, timestamps, now_ms));
            }
        }
        let streams = if self.joiner.is_some() {
            STREAMS.len()
        } else {
            1
        };
        self.multiline = joiners(multiline, streams);
        if self.multiline.is_empty() || self.joiner.is_none() {
            // Plain files take no annotations; nothing to join again.
            return earlier;
        }
        let now = Instant::now();
        let mut out = Vec::new();
        for p in earlier {
            let stream = match &p.extra {
                Some((_, s)) if s.as_ref() == b"stderr" => container::Stream::Stderr,
                Some((_, s)) if s.as_ref() == b"stdout" => container::Stream::Stdout,
                // Not a container record (an unparsed line): sent as it was.
                _ => {
                    out.push(p);
                    continue;
                }
            };
            let j = container::Joined {
                timestamp_ms: p.timestamp_ms,
                stream,
                message: p.message,
                end_offset: at,
                truncated_bytes: p.truncated_bytes,
                parts: 1,
            };
            let sj = &mut self.multiline[stream_index(stream)];
            out.extend(sj.push(&j, at, at, now));
        }
        out
    }

    /// The multiline events whose timeout passed.
    pub fn flush_due(
        &mut self,
        now: Instant,
        timestamps: Option<&TimestampParser>,
        now_ms: i64,
    ) -> Vec<Pending> {
        let mut out = Vec::new();
        for i in 0..self.multiline.len() {
            let stream = self.stream_of(i);
            let sj = &mut self.multiline[i];
            if let Some(a) = sj.multiline.flush_due(now) {
                out.push(sj.finish(a, stream, timestamps, now_ms));
            }
        }
        out
    }

    /// When the first held multiline event times out.
    pub fn deadline(&self) -> Option<Instant> {
        self.multiline
            .iter()
            .filter_map(|sj| sj.multiline.deadline())
            .min()
    }

    /// The file was truncated: it is read again from 0, and what was held belongs to content
    /// that is gone.
    pub fn truncated(&mut self) {
        self.consumed = 0;
        for sj in &mut self.multiline {
            let _ = sj.multiline.flush();
        }
        if let Some(j) = self.joiner.as_mut() {
            let _ = j.flush();
        }
    }

    /// The furthest position that may be saved: past every consumed line, but never past the
    /// start of something still held.
    pub fn safe_offset(&self) -> u64 {
        let held = self
            .multiline
            .iter()
            .filter_map(|sj| sj.multiline.held_from())
            .chain(self.joiner.as_ref().and_then(PartialJoiner::held_from));
        held.fold(self.consumed, u64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use logferry_tail::multiline::JoinRule;
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
            rule: JoinRule::StartPattern(regex::bytes::Regex::new("^[^ ]").expect("regex")),
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

    /// A pod's `logferry.io/multiline` learned after its lines were decoded one by one: they
    /// are joined again, and the joined event holds the safe offset where they were held from.
    #[test]
    fn rejoin_joins_events_decoded_before_a_preset_was_known() {
        let mut d = Decoder::new(10, true, 1024, None);
        let mut at = 10;
        let mut out = Vec::new();
        for l in [
            "2026-11-25T10:00:00.100Z stdout F ERROR failed",
            "2026-11-25T10:00:00.200Z stdout F java.lang.IllegalStateException: boom",
            "2026-11-25T10:00:00.300Z stdout F \tat a.B.c(B.java:1)",
        ] {
            at += l.len() as u64 + 1;
            let line = Line {
                file: 1,
                bytes: Bytes::copy_from_slice(l.as_bytes()),
                end_offset: at,
                truncated_bytes: 0,
            };
            d.line(&line, None, 7, Instant::now(), &mut out)
                .expect("cri");
        }
        assert_eq!(out.len(), 3, "no rule yet: one event per line");
        let java = MultilineOptions {
            rule: JoinRule::Preset(logferry_tail::multiline::Preset::Java),
            ..multiline()
        };
        let finished = d.rejoin(Some(java), out, None, 7);
        let messages: Vec<_> = finished
            .iter()
            .map(|p| String::from_utf8_lossy(&p.message).into_owned())
            .collect();
        assert_eq!(messages, ["ERROR failed"]);
        assert_eq!(d.safe_offset(), at, "held at the offset it was held from");
        let held = d.flush(None, 7);
        assert_eq!(
            &held[0].message[..],
            b"java.lang.IllegalStateException: boom\n\tat a.B.c(B.java:1)"
        );
        assert_eq!(
            held[0].timestamp_ms, 1_795_600_800_200,
            "the first record's time"
        );
    }

    #[test]
    fn a_preset_joins_each_container_stream_apart_across_partial_lines() {
        let java = MultilineOptions {
            rule: JoinRule::Preset(logferry_tail::multiline::Preset::Java),
            ..multiline()
        };
        let mut d = Decoder::new(0, true, 1024, Some(java));
        let mut at = 0;
        let mut out = Vec::new();
        let lines = [
            "2026-11-25T10:00:00.100Z stdout F INFO start",
            "2026-11-25T10:00:00.200Z stderr F java.lang.IllegalStateException: boom",
            "2026-11-25T10:00:00.300Z stdout F INFO between",
            "2026-11-25T10:00:00.400Z stderr P \tat com.example.A",
            "2026-11-25T10:00:00.500Z stdout F INFO while split",
            "2026-11-25T10:00:00.600Z stderr F .b(A.java:1)",
            "2026-11-25T10:00:00.700Z stderr F \t... 3 more",
            "2026-11-25T10:00:00.800Z stdout F INFO after",
        ];
        let mut trace_start = 0;
        for (i, l) in lines.iter().enumerate() {
            if i == 1 {
                trace_start = at;
            }
            at += l.len() as u64 + 1;
            let line = Line {
                file: 1,
                bytes: Bytes::copy_from_slice(l.as_bytes()),
                end_offset: at,
                truncated_bytes: 0,
            };
            d.line(&line, None, 7, Instant::now(), &mut out)
                .expect("cri");
        }
        assert_eq!(
            d.safe_offset(),
            trace_start,
            "the held trace is not skipped"
        );
        out.extend(d.flush(None, 7));
        let got: Vec<(String, &[u8], i64)> = out
            .iter()
            .map(|p| {
                let stream = &p.extra.as_ref().expect("stream").1[..];
                (
                    String::from_utf8_lossy(&p.message).into_owned(),
                    stream,
                    p.timestamp_ms,
                )
            })
            .collect();
        let ms = |m: i64| 1_795_600_800_000 + m;
        assert_eq!(
            got,
            [
                ("INFO start".to_string(), &b"stdout"[..], ms(100)),
                ("INFO between".to_string(), b"stdout", ms(300)),
                ("INFO while split".to_string(), b"stdout", ms(500)),
                // Flushed at close: stdout's held event, then stderr's.
                ("INFO after".to_string(), b"stdout", ms(800)),
                (
                    "java.lang.IllegalStateException: boom\n\tat com.example.A.b(A.java:1)\n\t... 3 more"
                        .to_string(),
                    b"stderr",
                    ms(200)
                ),
            ]
        );
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
