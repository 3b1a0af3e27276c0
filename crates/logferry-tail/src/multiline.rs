//! Joining continuation lines into one event: a Java or Python stack trace arrives as many
//! lines but is one thing that happened, and CloudWatch should show it as one event.
//!
//! # Rules
//!
//! The file's lines are cut into events by a [`JoinRule`]: one regular expression,
//! `start_pattern` (for instance `^\d{4}-\d{2}-\d{2}` when every record starts with a date), or
//! a language's [`Preset`] (see [`preset`] for its rules):
//!
//! - A line that matches `start_pattern` starts a new event; the event held so far is finished.
//! - Any other line is a continuation: it is appended to the held event with a `\n` between.
//! - A preset may call a blank line a continuation only if more of the trace follows: it is
//!   counted in the held event (its lines and end offset) but written to the message only
//!   when a continuation comes after it.
//!   A continuation with no event held (the first line of a file, or after a flush) starts
//!   one: a line is never dropped because its start was not seen.
//! - `max_lines`: when an event reaches that many lines it is finished at once, and the next
//!   continuation line starts a new event (`0` is taken as `1`).
//! - `max_bytes`: the message keeps its first `max_bytes` bytes (cut on a UTF-8 character
//!   boundary when the text is UTF-8). The rest of that event's lines, up to the next start
//!   line, are counted in [`Aggregated::truncated_bytes`] (separators included, so kept +
//!   truncated = the full length) instead of becoming events of their own: a runaway trace is
//!   one event with an honest count, not thousands of fragments. `max_lines` stops applying to
//!   an event once it is cut (the cut lines cost no memory).
//! - `timeout`: an event whose last line is older than this is finished by
//!   [`Multiline::flush_due`]: the last trace of a quiet service must not wait for the next
//!   record. [`Multiline::deadline`] says when to call it.
//!
//! # Positions
//!
//! Every line comes with its start and end offset in the file. An event reports the end offset
//! of its last line ([`Aggregated::end_offset`]); while an event is held,
//! [`Multiline::held_from`] is the start offset of its first line, and a caller must not save
//! a position beyond it: after a restart the held lines are read again instead of lost.

use std::time::{Duration, Instant};

use bytes::Bytes;

pub mod preset;

pub use preset::Preset;
use preset::{TraceState, Verdict};

/// Where events start.
#[derive(Debug, Clone)]
pub enum JoinRule {
    /// A line that matches starts a new event; any other line continues the held one.
    StartPattern(regex::bytes::Regex),
    /// A language's stack traces are joined; every other line is an event of its own.
    Preset(Preset),
}

/// How lines are joined; see the module doc for the rules.
#[derive(Debug, Clone)]
pub struct MultilineOptions {
    pub rule: JoinRule,
    /// A held event is finished when its last line is this old.
    pub timeout: Duration,
    /// An event is finished when it has this many lines (`0` is taken as `1`).
    pub max_lines: usize,
    /// The message keeps at most this many bytes; the rest is counted, not kept.
    pub max_bytes: usize,
}

/// One finished event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregated {
    /// The lines joined with `\n`, at most `max_bytes` long.
    pub message: Bytes,
    /// The file offset just past the event's last line.
    pub end_offset: u64,
    /// The number of input lines the event covers, cut ones included.
    pub lines: usize,
    /// Bytes of the joined message that were not kept because of `max_bytes`.
    pub truncated_bytes: u64,
}

/// The joiner of one file.
pub struct Multiline {
    opts: MultilineOptions,
    held: Option<Held>,
    /// Where a preset is in a trace (unused by `start_pattern`).
    trace: TraceState,
}

struct Held {
    message: Vec<u8>,
    start_offset: u64,
    end_offset: u64,
    lines: usize,
    truncated_bytes: u64,
    /// `max_bytes` was reached: everything until the next start line is only counted.
    capped: bool,
    /// Blank lines counted in the event but not yet in the message, each with its `\n`; never
    /// more than the message has room for (plus one byte, so that writing them caps it).
    pending_blank: Vec<u8>,
    /// Bytes of those blank lines beyond that room: truncated if a continuation follows.
    pending_overflow: u64,
    last_line_at: Instant,
}

impl Held {
    /// A blank line that belongs to the event only if more of it follows.
    fn hold_blank(&mut self, line: &[u8], max_bytes: usize) {
        let len = 1 + line.len() as u64;
        if self.capped {
            self.truncated_bytes += len;
            return;
        }
        let room = (max_bytes + 1).saturating_sub(self.message.len() + self.pending_blank.len());
        let keep = (len as usize).min(room);
        let blank = std::iter::once(&b'\n').chain(line).take(keep);
        self.pending_blank.extend(blank);
        self.pending_overflow += len - keep as u64;
    }

    fn finish(self) -> Aggregated {
        Aggregated {
            message: Bytes::from(self.message),
            end_offset: self.end_offset,
            lines: self.lines,
            truncated_bytes: self.truncated_bytes,
        }
    }
}

impl Multiline {
    pub fn new(opts: MultilineOptions) -> Self {
        Self {
            opts,
            held: None,
            trace: TraceState::default(),
        }
    }

    fn classify(&mut self, line: &[u8]) -> Verdict {
        match &self.opts.rule {
            JoinRule::StartPattern(p) if p.is_match(line) => Verdict::Start,
            JoinRule::StartPattern(_) => Verdict::Continue,
            JoinRule::Preset(preset) => preset.classify(&mut self.trace, line),
        }
    }

    fn max_lines(&self) -> usize {
        self.opts.max_lines.max(1)
    }

    /// Feeds one line (without its terminator) that occupies `start_offset..end_offset` of the
    /// file. Returns the event this line finished, if any: the previous event when the line
    /// starts a new one, or the current one when it reached `max_lines`.
    pub fn push(
        &mut self,
        line: &[u8],
        start_offset: u64,
        end_offset: u64,
        now: Instant,
    ) -> Option<Aggregated> {
        let max_lines = self.max_lines();
        let verdict = self.classify(line);
        if verdict != Verdict::Start {
            if let Some(held) = self.held.as_mut() {
                // A held event already at max_lines (only possible with max_lines == 1, when a
                // start line could not be returned together with the event it finished) is
                // finished here instead; the line then starts the next event.
                if held.capped || held.lines < max_lines {
                    if verdict == Verdict::ContinueIfMore {
                        held.hold_blank(line, self.opts.max_bytes);
                    } else {
                        // The blank lines before this one are its separator: written only
                        // if some of the line follows them.
                        let mut sep = std::mem::take(&mut held.pending_blank);
                        sep.push(b'\n');
                        held.truncated_bytes += append_capped(
                            &mut held.message,
                            &mut held.capped,
                            self.opts.max_bytes,
                            &sep,
                            line,
                        ) + std::mem::take(&mut held.pending_overflow);
                    }
                    held.lines += 1;
                    held.end_offset = end_offset;
                    held.last_line_at = now;
                    if !held.capped && held.lines >= max_lines {
                        return self.held.take().map(Held::finish);
                    }
                    return None;
                }
            }
        }

        let previous = self.held.take();
        let mut held = Held {
            message: Vec::new(),
            start_offset,
            end_offset,
            lines: 1,
            truncated_bytes: 0,
            capped: false,
            pending_blank: Vec::new(),
            pending_overflow: 0,
            last_line_at: now,
        };
        held.truncated_bytes = append_capped(
            &mut held.message,
            &mut held.capped,
            self.opts.max_bytes,
            b"",
            line,
        );
        match previous {
            Some(previous) => {
                // Only one event can be returned: a new event that is already complete
                // (max_lines == 1) stays held until the next line or flush.
                self.held = Some(held);
                Some(previous.finish())
            }
            None if !held.capped && held.lines >= max_lines => Some(held.finish()),
            None => {
                self.held = Some(held);
                None
            }
        }
    }

    /// The held event if `timeout` has passed since its last line.
    pub fn flush_due(&mut self, now: Instant) -> Option<Aggregated> {
        match self.deadline() {
            Some(deadline) if now >= deadline => self.flush(),
            _ => None,
        }
    }

    /// The held event, whatever its age (the file is closed or the source stops).
    pub fn flush(&mut self) -> Option<Aggregated> {
        self.held.take().map(Held::finish)
    }

    /// When the held event times out; `None` when nothing is held (or the timeout is so large
    /// that the instant cannot be represented, which means never).
    pub fn deadline(&self) -> Option<Instant> {
        let held = self.held.as_ref()?;
        held.last_line_at.checked_add(self.opts.timeout)
    }

    /// The start offset of the held event's first line: positions must not be saved beyond
    /// it. `None` when nothing is held.
    pub fn held_from(&self) -> Option<u64> {
        self.held.as_ref().map(|held| held.start_offset)
    }
}

/// Appends `sep` + `piece` to `buf` without letting `buf` grow past `max` bytes; returns the
/// number of bytes that were not kept. Once something was cut, `*capped` is set and every later
/// piece is only counted: a message with a hole in the middle would be worse than a cut one.
/// The separator is only written if some of `piece` follows it. The cut does not split a UTF-8
/// character (shared with the container log joiner).
pub(crate) fn append_capped(
    buf: &mut Vec<u8>,
    capped: &mut bool,
    max: usize,
    sep: &[u8],
    piece: &[u8],
) -> u64 {
    let total = (sep.len() + piece.len()) as u64;
    if *capped {
        return total;
    }
    let room = max.saturating_sub(buf.len());
    if sep.len() + piece.len() <= room {
        buf.extend_from_slice(sep);
        buf.extend_from_slice(piece);
        return 0;
    }
    *capped = true;
    let keep = utf8_floor(piece, room.saturating_sub(sep.len()));
    if keep == 0 {
        return total;
    }
    buf.extend_from_slice(sep);
    buf.extend_from_slice(&piece[..keep]);
    total - (sep.len() + keep) as u64
}

/// The largest cut `<= at` that does not fall inside a UTF-8 character (`at < bytes.len()`).
/// A continuation byte (`10xxxxxx`) at `at` means a character may have started up to 3 bytes
/// earlier; the cut moves back to its lead byte only if that character really reaches past
/// `at`. Bytes that are not UTF-8 are cut at `at`.
fn utf8_floor(bytes: &[u8], at: usize) -> usize {
    for back in 0..=at.min(3) {
        let i = at - back;
        let Some(&b) = bytes.get(i) else { return at };
        if b & 0xC0 == 0x80 {
            continue;
        }
        let len = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => 1,
        };
        return if i + len > at { i } else { at };
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pattern: &str, max_lines: usize, max_bytes: usize) -> MultilineOptions {
        MultilineOptions {
            rule: JoinRule::StartPattern(regex::bytes::Regex::new(pattern).expect("test pattern")),
            timeout: Duration::from_secs(5),
            max_lines,
            max_bytes,
        }
    }

    /// Feeds `text` line by line with real offsets (each line + '\n'), then flushes; returns
    /// the events as strings with their end offsets and line counts.
    fn run(ml: &mut Multiline, text: &str) -> Vec<(String, u64, usize, u64)> {
        let now = Instant::now();
        let mut out = Vec::new();
        let mut offset = 0u64;
        for line in text.lines() {
            let end = offset + line.len() as u64 + 1;
            if let Some(ev) = ml.push(line.as_bytes(), offset, end, now) {
                out.push(ev);
            }
            offset = end;
        }
        out.extend(ml.flush());
        out.into_iter()
            .map(|ev| {
                (
                    String::from_utf8(ev.message.to_vec()).expect("utf8"),
                    ev.end_offset,
                    ev.lines,
                    ev.truncated_bytes,
                )
            })
            .collect()
    }

    const DATE: &str = r"^\d{4}-\d{2}-\d{2}";

    /// `text` read with [`DATE`] as the start pattern is two events: its first `record_lines`
    /// lines joined, then its last line alone. Returns them.
    fn assert_one_record_then_a_line(
        text: &str,
        record_lines: usize,
    ) -> Vec<(String, u64, usize, u64)> {
        let events = run(&mut Multiline::new(opts(DATE, 500, 65536)), text);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, lines[..record_lines].join("\n"));
        assert_eq!(events[0].2, record_lines);
        assert_eq!(events[1].0, lines[record_lines]);
        events
    }

    const JAVA: &str = "\
2024-01-02 03:04:05,123 ERROR [main] com.example.App - request failed
java.lang.IllegalStateException: boom
\tat com.example.App.handle(App.java:42)
\tat com.example.App.main(App.java:10)
Caused by: java.io.IOException: No space left on device
\tat java.base/java.io.FileOutputStream.writeBytes(Native Method)
\tat com.example.Store.write(Store.java:7)
\t... 2 more
2024-01-02 03:04:06,000 INFO [main] com.example.App - next request
";

    #[test]
    fn java_stack_trace_is_one_event() {
        let events = assert_one_record_then_a_line(JAVA, 8);
        let lines: Vec<&str> = JAVA.lines().collect();
        // The trace's end offset is just past its last line, i.e. where the next record starts.
        assert_eq!(
            events[0].1,
            lines[..8].iter().map(|l| l.len() as u64 + 1).sum::<u64>()
        );
        assert_eq!(events[1].1, JAVA.len() as u64);
        assert_eq!(events[1].3, 0);
    }

    const PYTHON: &str = "\
2024-01-02 03:04:05,123 ERROR app: unhandled exception
Traceback (most recent call last):
  File \"/app/main.py\", line 10, in <module>
    main()
  File \"/app/main.py\", line 6, in main
    raise ValueError(\"bad value\")
ValueError: bad value
2024-01-02 03:04:05,200 INFO app: shutting down
";

    #[test]
    fn python_traceback_is_one_event() {
        assert_one_record_then_a_line(PYTHON, 7);
    }

    #[test]
    fn continuation_without_a_start_starts_an_event() {
        // The file was opened in the middle of a trace: those lines are an event of their own.
        let mut ml = Multiline::new(opts(DATE, 500, 65536));
        let events = run(
            &mut ml,
            "\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)\n2024-01-02 x\n",
        );
        assert_eq!(events[0].0, "\tat a.B.c(B.java:1)\n\tat a.B.d(B.java:2)");
        assert_eq!(events[1].0, "2024-01-02 x");
    }

    #[test]
    fn max_lines_emits_and_the_next_continuation_starts_a_new_event() {
        let mut ml = Multiline::new(opts(DATE, 3, 65536));
        let now = Instant::now();
        assert_eq!(ml.push(b"2024-01-02 a", 0, 13, now), None);
        assert_eq!(ml.push(b"b", 13, 15, now), None);
        let ev = ml.push(b"c", 15, 17, now).expect("emitted at max_lines");
        assert_eq!(
            (&ev.message[..], ev.end_offset, ev.lines),
            (&b"2024-01-02 a\nb\nc"[..], 17, 3)
        );
        assert_eq!(ml.held_from(), None);
        assert_eq!(ml.push(b"d", 17, 19, now), None);
        assert_eq!(ml.held_from(), Some(17));
        let ev = ml.flush().expect("held");
        assert_eq!((&ev.message[..], ev.lines), (&b"d"[..], 1));
    }

    #[test]
    fn max_lines_one_makes_every_line_an_event() {
        let mut ml = Multiline::new(opts(DATE, 1, 65536));
        let events = run(&mut ml, "2024-01-02 a\nb\n2024-01-02 c\nd\ne\n");
        let messages: Vec<&str> = events.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(messages, ["2024-01-02 a", "b", "2024-01-02 c", "d", "e"]);
        assert!(events.iter().all(|e| e.2 == 1));
        // max_lines 0 behaves like 1 instead of looping or panicking.
        let mut ml = Multiline::new(opts(DATE, 0, 65536));
        assert_eq!(run(&mut ml, "a\nb\n").len(), 2);
    }

    #[test]
    fn max_bytes_cuts_and_counts_the_rest_until_the_next_start() {
        let mut ml = Multiline::new(opts(DATE, 500, 20));
        let text = "2024-01-02 0123456\nabcdef\nghi\n2024-01-02 x\n";
        let events = run(&mut ml, text);
        assert_eq!(events.len(), 2);
        // 18 + "\nab" = 21 > 20: kept "…\na", cut "bcdef" (5), then "\nghi" (4).
        assert_eq!(events[0].0, "2024-01-02 0123456\na");
        assert_eq!(events[0].2, 3);
        assert_eq!(events[0].3, 5 + 4);
        assert_eq!(events[0].0.len() as u64 + events[0].3, 18 + 7 + 4);
        assert_eq!(events[0].1, 18 + 1 + 7 + 4);
        assert_eq!((events[1].0.as_str(), events[1].3), ("2024-01-02 x", 0));
    }

    #[test]
    fn max_bytes_does_not_leave_a_dangling_separator_or_split_a_character() {
        let mut ml = Multiline::new(opts(DATE, 500, 5));
        let events = run(&mut ml, "2024-\nab\n");
        assert_eq!((events[0].0.as_str(), events[0].3), ("2024-", 3));
        // "é" is 2 bytes: a cut after 4 bytes would split it.
        let mut ml = Multiline::new(opts(DATE, 500, 4));
        let events = run(&mut ml, "abcé\n");
        assert_eq!((events[0].0.as_str(), events[0].3), ("abc", 2));
    }

    #[test]
    fn capped_event_ignores_max_lines() {
        let mut ml = Multiline::new(opts(DATE, 2, 4));
        let events = run(&mut ml, "2024-01-02\nx\ny\nz\n2024-01-03\n");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].0, "2024");
        assert_eq!(events[0].2, 4);
        assert_eq!(events[0].3, 6 + 2 + 2 + 2);
    }

    #[test]
    fn timeout_flushes_the_held_event() {
        let mut ml = Multiline::new(opts(DATE, 500, 65536));
        let t0 = Instant::now();
        assert_eq!(ml.deadline(), None);
        assert_eq!(ml.push(b"2024-01-02 a", 100, 113, t0), None);
        assert_eq!(ml.push(b"b", 113, 115, t0 + Duration::from_secs(3)), None);
        // The deadline counts from the last line, not the first.
        assert_eq!(ml.deadline(), Some(t0 + Duration::from_secs(8)));
        assert_eq!(ml.held_from(), Some(100));
        assert_eq!(ml.flush_due(t0 + Duration::from_secs(7)), None);
        let ev = ml.flush_due(t0 + Duration::from_secs(8)).expect("due");
        assert_eq!(
            (&ev.message[..], ev.end_offset, ev.lines),
            (&b"2024-01-02 a\nb"[..], 115, 2)
        );
        assert_eq!(
            (ml.deadline(), ml.held_from(), ml.flush()),
            (None, None, None)
        );
    }

    #[test]
    fn huge_timeout_means_no_deadline_instead_of_a_panic() {
        let mut o = opts(DATE, 500, 100);
        o.timeout = Duration::MAX;
        let mut ml = Multiline::new(o);
        let now = Instant::now();
        ml.push(b"a", 0, 2, now);
        assert_eq!(ml.deadline(), None);
        assert_eq!(ml.flush_due(now), None);
        assert!(ml.flush().is_some());
    }

    #[test]
    fn blank_lines_held_for_a_trace_are_bounded_by_max_bytes_and_counted() {
        let mut ml = Multiline::new(MultilineOptions {
            rule: JoinRule::Preset(Preset::Go),
            timeout: Duration::from_secs(5),
            max_lines: 100_000,
            max_bytes: 64,
        });
        let now = Instant::now();
        let blank = " ".repeat(100);
        ml.push(b"panic: x", 0, 9, now);
        for _ in 0..10_000 {
            ml.push(blank.as_bytes(), 0, 0, now);
        }
        let held = ml.held.as_ref().expect("held");
        assert!(
            held.pending_blank.len() <= 65,
            "{}",
            held.pending_blank.len()
        );
        ml.push(b"goroutine 1 [running]:", 0, 0, now);
        let ev = ml.flush().expect("held");
        // The blank lines do not fit with the line after them: neither is kept, both counted.
        assert_eq!(&ev.message[..], b"panic: x");
        assert_eq!(
            ev.message.len() as u64 + ev.truncated_bytes,
            (8 + 10_000 * 101 + 1 + 22) as u64
        );
        assert_eq!(ev.lines, 10_002);
    }

    #[test]
    fn non_utf8_lines_are_kept_as_bytes() {
        let mut ml = Multiline::new(opts(DATE, 500, 3));
        let now = Instant::now();
        ml.push(b"\xff\x80\x80\x80\x80", 0, 6, now);
        let ev = ml.flush().expect("held");
        assert_eq!(
            (&ev.message[..], ev.truncated_bytes),
            (&b"\xff\x80\x80"[..], 2)
        );
    }
}
