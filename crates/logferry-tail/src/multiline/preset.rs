//! Built-in rules for the stack traces of three languages (`multiline.preset`), for logs
//! whose records do not start with anything a `start_pattern` could match: a container's
//! stderr is often plain lines with a trace in between.
//!
//! A preset reads each line in the light of the lines before it (a small state machine per
//! stream) and says whether it starts an event, continues the held one, or is a blank line
//! that belongs to the trace only if more of the trace follows ([`Verdict::ContinueIfMore`]).
//! Lines outside a trace are events of their own; nothing but trace lines is ever joined.
//!
//! - `java`: a line continues the one before it when it is a frame (`\tat ...`), `Caused by:
//!   ...`, `Suppressed: ...` or `... N more` / `... N common frames omitted`; so an exception
//!   line and its frames are one event, and the log line before the exception stays its own.
//! - `python`: `Traceback (most recent call last):` starts an event; the indented `File ...`
//!   and code lines continue it, and so does the first line that is not indented (the
//!   `SomeError: msg` line), which ends it. A chained traceback (`During handling of the above
//!   exception, another exception occurred:` / `The above exception was the direct cause of
//!   the following exception:`, blank lines, then `Traceback ...` again) stays in the event.
//! - `go`: `panic: ...` or `fatal error: ...` starts an event; `[signal ...`, indented lines,
//!   `goroutine N [state]:` headers, frame lines (`pkg.(*T).method(...)`, `created by ...`) and
//!   the blank lines between goroutines continue it, up to the first other line.

/// Which language's stack traces are joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Java,
    Python,
    Go,
}

impl Preset {
    /// The preset's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Java => "java",
            Preset::Python => "python",
            Preset::Go => "go",
        }
    }

    /// The preset called `name` in the configuration.
    pub fn from_name(name: &str) -> Option<Self> {
        [Preset::Java, Preset::Python, Preset::Go]
            .into_iter()
            .find(|p| p.as_str() == name)
    }
}

/// What a line is to the event held before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The line starts a new event (the held one is finished).
    Start,
    /// The line is appended to the held event.
    Continue,
    /// A blank line inside a trace: it is part of the event if a [`Verdict::Continue`] line
    /// follows; if the event ends first, it is counted in the event but not put in the message
    /// (a message does not end in blank lines).
    ContinueIfMore,
}

/// Where a trace reader is; one per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TraceState {
    /// Not in a trace: every line starts an event.
    #[default]
    Outside,
    /// Python: inside the frames of a traceback.
    PythonFrames,
    /// Python: after the exception line; a chain message may follow.
    PythonException,
    /// Python: after a chain message; the next traceback belongs to this event.
    PythonChained,
    /// Go: after `panic:` / `fatal error:`, before the first goroutine.
    GoHeader,
    /// Go: inside the goroutine dumps.
    GoFrames,
}

impl Preset {
    /// The verdict for `line` (no line terminator), moving `state` on.
    pub(crate) fn classify(self, state: &mut TraceState, line: &[u8]) -> Verdict {
        let line = trim_end(line);
        match self {
            Preset::Java => java(line),
            Preset::Python => python(state, line),
            Preset::Go => go(state, line),
        }
    }
}

fn java(line: &[u8]) -> Verdict {
    let body = trim_start(line);
    let indented = body.len() < line.len();
    let frame = indented && body.starts_with(b"at ");
    let more = body
        .strip_prefix(b"... ")
        .map(skip_digits)
        .is_some_and(|(n, rest)| n > 0 && (rest == b" more" || rest == b" common frames omitted"));
    if frame || more || body.starts_with(b"Caused by: ") || body.starts_with(b"Suppressed: ") {
        Verdict::Continue
    } else {
        Verdict::Start
    }
}

const PY_TRACEBACK: &[u8] = b"Traceback (most recent call last):";
const PY_CHAINS: [&[u8]; 2] = [
    b"During handling of the above exception, another exception occurred:",
    b"The above exception was the direct cause of the following exception:",
];

fn python(state: &mut TraceState, line: &[u8]) -> Verdict {
    use TraceState::*;
    if line == PY_TRACEBACK {
        let chained = *state == PythonChained;
        *state = PythonFrames;
        return if chained {
            Verdict::Continue
        } else {
            Verdict::Start
        };
    }
    let blank = trim_start(line).is_empty();
    match *state {
        PythonFrames | PythonException | PythonChained if blank => Verdict::ContinueIfMore,
        PythonFrames => {
            if !is_indented(line) {
                *state = PythonException;
            }
            Verdict::Continue
        }
        PythonException if PY_CHAINS.contains(&line) => {
            *state = PythonChained;
            Verdict::Continue
        }
        _ => {
            *state = Outside;
            Verdict::Start
        }
    }
}

fn go(state: &mut TraceState, line: &[u8]) -> Verdict {
    use TraceState::*;
    if line.starts_with(b"panic: ") || line.starts_with(b"fatal error: ") {
        *state = GoHeader;
        return Verdict::Start;
    }
    if !matches!(*state, GoHeader | GoFrames) {
        return Verdict::Start;
    }
    if trim_start(line).is_empty() {
        return Verdict::ContinueIfMore;
    }
    if is_goroutine_header(line) {
        *state = GoFrames;
        return Verdict::Continue;
    }
    let continues = is_indented(line)
        || match *state {
            GoHeader => line.starts_with(b"[signal ") || line == b"runtime stack:",
            _ => {
                is_go_function_line(line)
                    || line.starts_with(b"created by ")
                    || line == b"...additional frames elided..."
                    || line == b"runtime stack:"
            }
        };
    if continues {
        Verdict::Continue
    } else {
        *state = Outside;
        Verdict::Start
    }
}

/// `goroutine 1 [running]:`, `goroutine 18 [chan receive, 2 minutes]:`
fn is_goroutine_header(line: &[u8]) -> bool {
    line.strip_prefix(b"goroutine ")
        .map(skip_digits)
        .is_some_and(|(n, rest)| n > 0 && rest.starts_with(b" [") && rest.ends_with(b"]:"))
}

/// A frame's function line: `main.main()`, `main.(*Server).handle(0xc000010000, {0x0, 0x0})`,
/// `panic({0x4a2f60?, 0x4e1d30?})`: a call with no space before its first parenthesis.
fn is_go_function_line(line: &[u8]) -> bool {
    match line.iter().position(|&b| b == b'(') {
        Some(p) => p > 0 && !line[..p].contains(&b' ') && line.ends_with(b")"),
        None => false,
    }
}

fn is_indented(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

fn trim_start(line: &[u8]) -> &[u8] {
    let n = line
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t'))
        .count();
    &line[n..]
}

/// Without trailing spaces, tabs and `\r` (a CRLF file's lines end in `\r`).
fn trim_end(line: &[u8]) -> &[u8] {
    let n = line
        .iter()
        .rev()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\r'))
        .count();
    &line[..line.len() - n]
}

/// The number of leading ASCII digits, and the rest.
fn skip_digits(s: &[u8]) -> (usize, &[u8]) {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    (n, &s[n..])
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::super::{JoinRule, Multiline, MultilineOptions};
    use super::*;

    /// Real traces, as the runtimes print them (tabs and blank lines included).
    pub(crate) const JAVA_TRACE: &str = include_str!("../../testdata/traces/java.txt");
    pub(crate) const PYTHON_TRACE: &str = include_str!("../../testdata/traces/python.txt");
    pub(crate) const GO_TRACE: &str = include_str!("../../testdata/traces/go.txt");

    /// `text`'s lines through a `preset` joiner, then a flush: the events' messages and line
    /// counts.
    fn events(preset: Preset, text: &str) -> Vec<(String, usize)> {
        let mut ml = Multiline::new(MultilineOptions {
            rule: JoinRule::Preset(preset),
            timeout: Duration::from_secs(5),
            max_lines: 500,
            max_bytes: 1 << 20,
        });
        let now = Instant::now();
        let mut offset = 0;
        let mut out = Vec::new();
        for line in text.lines() {
            let end = offset + line.len() as u64 + 1;
            out.extend(ml.push(line.as_bytes(), offset, end, now));
            offset = end;
        }
        out.extend(ml.flush());
        out.into_iter()
            .map(|a| {
                (
                    String::from_utf8(a.message.to_vec()).expect("utf8"),
                    a.lines,
                )
            })
            .collect()
    }

    /// `trace` between ordinary log lines (`before`, then one after) is exactly three events:
    /// each log line alone and the whole trace.
    fn assert_trace_between_log_lines(preset: Preset, before: &str, trace: &str, after: &str) {
        let text = format!("{before}\n{trace}{after}\n");
        let got = events(preset, &text);
        let trace = trace.trim_end_matches('\n');
        let want = [
            (before.to_string(), 1),
            (trace.to_string(), trace.lines().count()),
            (after.to_string(), 1),
        ];
        assert_eq!(got, want, "{preset:?}");
    }

    fn verdicts(preset: Preset, lines: &[&str]) -> Vec<Verdict> {
        let mut state = TraceState::default();
        lines
            .iter()
            .map(|l| preset.classify(&mut state, l.as_bytes()))
            .collect()
    }

    use Verdict::{Continue as C, ContinueIfMore as B, Start as S};

    #[test]
    fn java_trace_with_suppressed_and_caused_by_is_one_event_between_log_lines() {
        assert_trace_between_log_lines(
            Preset::Java,
            "2026-11-25 10:00:01.250 ERROR [http-nio-8080-exec-3] c.e.shop.OrderController : order failed",
            JAVA_TRACE,
            "2026-11-25 10:00:01.300 INFO  [http-nio-8080-exec-4] c.e.shop.OrderController : order 4712 accepted",
        );
    }

    #[test]
    fn java_joins_frames_causes_and_omitted_counts_to_the_line_before() {
        let lines = [
            "Exception in thread \"main\" java.lang.RuntimeException: x",
            "\tat a.B.c(B.java:1)",
            "    at a.B.d(B.java:2)",
            "Caused by: java.io.IOException: y",
            "\t... 3 more",
            "\t... 12 common frames omitted",
            "\tSuppressed: java.lang.Exception: z",
            // Look-alikes that are ordinary lines:
            "at noon the job ran",
            "\t... 3 apples",
            "... more to come",
            "INFO Caused by: nothing",
        ];
        assert_eq!(
            verdicts(Preset::Java, &lines),
            [S, C, C, C, C, C, C, S, S, S, S]
        );
    }

    #[test]
    fn python_chained_tracebacks_are_one_event_ending_at_the_last_exception_line() {
        assert_trace_between_log_lines(
            Preset::Python,
            "2026-11-25 10:00:02,100 INFO worker: charging order 4711",
            PYTHON_TRACE,
            "2026-11-25 10:00:02,300 INFO worker: next order 4712",
        );
    }

    #[test]
    fn python_rules() {
        let lines = [
            "starting",
            "Traceback (most recent call last):",
            "  File \"/app/x.py\", line 1, in <module>",
            "    main()",
            "",
            "\t  ^^^^",
            "ValueError: bad",
            "",
            // Not a chain message: the traceback ended at the exception line.
            "INFO next",
            "Traceback (most recent call last):",
            "  File \"/app/x.py\", line 2, in <module>",
            "KeyError: 'k'",
            // A new traceback right after one is a new event.
            "Traceback (most recent call last):",
        ];
        assert_eq!(
            verdicts(Preset::Python, &lines),
            [S, S, C, C, B, C, C, B, S, S, C, C, S]
        );
    }

    #[test]
    fn blank_lines_after_a_trace_are_counted_in_it_but_not_in_its_message() {
        let got = events(
            Preset::Python,
            "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: v\n\n\nnext\n",
        );
        assert_eq!(
            got,
            [
                (
                    "Traceback (most recent call last):\n  File \"x.py\", line 1\nValueError: v"
                        .to_string(),
                    5
                ),
                ("next".to_string(), 1)
            ]
        );
    }

    #[test]
    fn go_panic_with_every_goroutine_is_one_event_between_log_lines() {
        assert_trace_between_log_lines(
            Preset::Go,
            "2026/11/25 10:00:03 handling POST /orders (id 4711)",
            GO_TRACE,
            "2026/11/25 10:00:04 listening on :8080",
        );
    }

    #[test]
    fn go_rules() {
        let lines = [
            "main.main()",
            "fatal error: all goroutines are asleep - deadlock!",
            "",
            "goroutine 1 [chan receive]:",
            "main.(*T).m(...)",
            "\t/src/main.go:9",
            "panic({0x4a2f60?, 0x4e1d30?})",
            "...additional frames elided...",
            "created by main.main in goroutine 1",
            "",
            "goroutine 18 [select, 2 minutes]:",
            "level=info msg=\"retry (2)\"",
            "goroutine 3 [running]:",
            "panic: boom [recovered]",
            "\tpanic: boom",
            "[signal SIGSEGV: segmentation violation]",
            "main.main()",
        ];
        assert_eq!(
            verdicts(Preset::Go, &lines),
            [S, S, B, C, C, C, C, C, C, B, C, S, S, S, C, C, S]
        );
    }

    #[test]
    fn presets_are_named_as_in_the_configuration() {
        for p in [Preset::Java, Preset::Python, Preset::Go] {
            assert_eq!(Preset::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Preset::from_name("Java"), None);
    }
}
