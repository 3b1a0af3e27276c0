//! Turning an event into the message text CloudWatch stores.
//!
//! This runs once per event on the hot path, so it writes straight into one `String` sized up
//! front, decodes UTF-8 once (invalid sequences become U+FFFD, nothing is dropped), and formats
//! dates with a few lines of calendar arithmetic instead of a date library.
//!
//! - `short` reproduces `journalctl -o short` / classic syslog file lines
//!   (`Nov 25 16:20:39 node-1 kubelet[2174]: text`), so dashboards and metric filters written for
//!   the old rsyslog + awslogs chain keep working. Times are UTC. An event with neither a host
//!   nor an identifier (a plain text line) is sent as its text alone rather than with a header
//!   logferry would have to invent.
//! - `json` is one object per event with its fields, for CloudWatch Logs Insights; a
//!   `merge_json` event is the app's own object with logferry's fields nested in one key
//!   ([`crate::json_merge`]).
//! - `message` is the message text alone.
//!
//! Truncated events say so in the text (`short`, `message`) or in a `truncated_bytes` field
//! (`json`), so a reader can tell.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use crate::config::MessageFormat;
use crate::event::{names, Event, FieldName, FACILITY_NAMES, SEVERITY_NAMES};
pub use crate::json_escape::push_json_str;
use crate::json_escape::{push_contents_bytes, push_json_contents, push_json_str_bytes};
use crate::json_merge::Merged;

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC calendar time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    /// 0..=23
    pub hour: u32,
    /// 0..=59
    pub minute: u32,
    /// 0..=59
    pub second: u32,
    /// 0..=999
    pub millis: u32,
}

/// Splits Unix milliseconds into a UTC calendar time (`logferry-time`'s calendar).
pub fn civil_from_ms(ms: i64) -> Civil {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (year, month, day) = logferry_time::civil_from_days(days);
    let secs = (rem / 1000) as u32;
    Civil {
        year,
        month,
        day,
        hour: secs / 3600,
        minute: secs / 60 % 60,
        second: secs % 60,
        millis: (rem % 1000) as u32,
    }
}

/// `2026-11-25T16:20:39.123Z`
pub fn rfc3339_ms(ms: i64, out: &mut String) {
    let c = civil_from_ms(ms);
    if (0..=9999).contains(&c.year) {
        // Digit by digit: `write!` with widths was 3% of a `json` run's CPU.
        let year = c.year as u32;
        push_two(out, year / 100);
        push_two(out, year % 100);
        out.push('-');
        push_two(out, c.month);
        out.push('-');
        push_two(out, c.day);
        out.push('T');
        push_clock(out, &c);
        out.push('.');
        out.push(char::from(b'0' + (c.millis / 100) as u8));
        push_two(out, c.millis % 100);
        out.push('Z');
        return;
    }
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    );
}

fn push_lossy(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// `HH:MM:SS`
fn push_clock(out: &mut String, c: &Civil) {
    push_two(out, c.hour);
    out.push(':');
    push_two(out, c.minute);
    out.push(':');
    push_two(out, c.second);
}

fn push_two(out: &mut String, v: u32) {
    out.push(char::from(b'0' + (v / 10 % 10) as u8));
    out.push(char::from(b'0' + (v % 10) as u8));
}

/// Formats `event` for CloudWatch into `out` (cleared first); returns where in it text lies
/// whose JSON string form is known (for the request body, [`push_json_str_known`]).
pub fn format_event(event: &Event, format: MessageFormat, out: &mut String) -> Option<KnownSpan> {
    out.clear();
    match format {
        MessageFormat::Message => {
            out.reserve(event.message.len() + 32);
            push_lossy(out, &event.message);
            truncation_note(event, out);
        }
        MessageFormat::Short => {
            out.reserve(event.message.len() + 64);
            let host = event.field(names::HOSTNAME);
            let ident = event.field(names::IDENTIFIER);
            if host.is_some() || ident.is_some() {
                let c = civil_from_ms(event.timestamp_ms);
                out.push_str(MONTHS[(c.month as usize).saturating_sub(1) % 12]);
                out.push(' ');
                push_two(out, c.day);
                out.push(' ');
                push_clock(out, &c);
                out.push(' ');
                match host {
                    Some(h) => push_lossy(out, h),
                    None => out.push_str("localhost"),
                }
                out.push(' ');
                match ident {
                    Some(i) => push_lossy(out, i),
                    None => out.push_str("unknown"),
                }
                if let Some(pid) = event.field(names::PID) {
                    out.push('[');
                    push_lossy(out, pid);
                    out.push(']');
                }
                out.push_str(": ");
            }
            push_lossy(out, &event.message);
            truncation_note(event, out);
        }
        MessageFormat::Json => return format_json(event, out),
    }
    None
}

fn truncation_note(event: &Event, out: &mut String) {
    if event.truncated_bytes > 0 {
        let _ = write!(
            out,
            " [logferry: truncated, {} bytes cut]",
            event.truncated_bytes
        );
    }
}

/// Appends `message` to the request body `out` as a JSON string, as [`push_json_str`] writes
/// it, but copies the escaped form of the text `known` says it holds instead of escaping that
/// part again. Escaping maps each character on its own, so the parts escaped apart make the
/// whole escaped; a span that does not hold its text (it cannot, by construction) is ignored,
/// so the output never depends on it being right.
pub fn push_json_str_known(out: &mut Vec<u8>, message: &str, known: Option<&KnownSpan>) {
    let Some(k) = known else {
        return push_json_str_bytes(out, message);
    };
    let end = k.at + k.text.raw.len();
    match (
        message.get(..k.at),
        message.get(k.at..end),
        message.get(end..),
    ) {
        (Some(before), Some(held), Some(after)) if held == k.text.raw => {
            out.push(b'"');
            push_contents_bytes(out, before.as_bytes());
            out.extend_from_slice(k.text.escaped.as_bytes());
            push_contents_bytes(out, after.as_bytes());
            out.push(b'"');
        }
        _ => push_json_str_bytes(out, message),
    }
}

/// Text many events' messages contain (their common fields' members), with its JSON string
/// form worked out once: a `json` event's text is mostly quotes to escape, and the request
/// body escaping every event's copy of the same members again was the largest part of that.
#[derive(Debug)]
pub struct Escaped {
    raw: String,
    escaped: String,
}

impl Escaped {
    fn new(raw: String) -> Self {
        let mut escaped = String::with_capacity(raw.len() + raw.len() / 4);
        push_json_contents(&mut escaped, &raw);
        Escaped { raw, escaped }
    }
}

/// Where [`Escaped`] text lies in a formatted message: from byte `at`.
#[derive(Debug, Clone)]
pub struct KnownSpan {
    at: usize,
    text: Arc<Escaped>,
}

fn push_json_bytes(out: &mut String, v: &[u8]) {
    match std::str::from_utf8(v) {
        Ok(s) => push_json_str(out, s),
        Err(_) => push_json_str(out, &String::from_utf8_lossy(v)),
    }
}

fn format_json(event: &Event, out: &mut String) -> Option<KnownSpan> {
    if let Some(merged) = event.merged {
        return format_merged_json(event, merged, out);
    }
    let mut known = None;
    out.reserve(event.message.len() + 128 + members_len(event));
    out.push_str("{\"timestamp\":\"");
    rfc3339_ms(event.timestamp_ms, out);
    out.push_str("\",\"message\":");
    push_json_bytes(out, &event.message);
    if let Some(p) = event.priority {
        out.push_str(",\"severity\":\"");
        out.push_str(SEVERITY_NAMES[usize::from(p & 7)]);
        out.push('"');
        if let Some(f) = FACILITY_NAMES.get(usize::from(p >> 3)) {
            out.push_str(",\"facility\":\"");
            out.push_str(f);
            out.push('"');
        }
    }
    match event.common.as_ref().filter(|_| event.fields.is_empty()) {
        // All its fields are the common ones: their members as rendered once, and known.
        Some(common) if !common.rendered().all.raw.is_empty() => {
            out.push(',');
            known = Some(KnownSpan {
                at: out.len(),
                text: common.rendered().all.clone(),
            });
            out.push_str(&common.rendered().all.raw);
        }
        _ => {
            if let Some(header) = &event.header {
                // A syslog event's header fields, ahead of its own (`Event::header`).
                push_members(out, &header.to_fields(), Members::All, false);
            }
            push_event_members(out, event, Members::All, false);
        }
    }
    out.push_str(",\"source\":");
    push_json_str(out, &event.source);
    if event.truncated_bytes > 0 {
        let _ = write!(out, ",\"truncated_bytes\":{}", event.truncated_bytes);
    }
    out.push('}');
    known
}

/// Which fields become members, and under what name.
#[derive(Debug, Clone, Copy)]
enum Members {
    /// Every field under its own name (the plain `json` object).
    All,
    /// Fields other than pod labels (a merged event's meta object).
    Unlabelled,
    /// Pod labels, without their `label.` prefix (the meta object's `labels`).
    Labels,
}

impl Members {
    /// The member name of field `name`, or `None` when it is not one of these.
    fn key(self, name: &str) -> Option<&str> {
        match self {
            Members::All => Some(name),
            Members::Unlabelled => (!name.starts_with(names::LABEL_PREFIX)).then_some(name),
            Members::Labels => name.strip_prefix(names::LABEL_PREFIX),
        }
    }
}

/// Fields' members rendered once for every event that shares them
/// ([`crate::event::CommonFields`]), as [`push_members`] writes them after an opening brace:
/// no leading comma, empty when there are none.
#[derive(Debug)]
pub struct RenderedMembers {
    all: Arc<Escaped>,
    unlabelled: String,
    labels: String,
    /// A merged event's member holding them, for the first meta key asked for (a source's
    /// events all have one).
    meta: OnceLock<(&'static str, Arc<Escaped>)>,
}

impl RenderedMembers {
    /// The members of `fields`.
    pub fn of(fields: &[(FieldName, Bytes)]) -> Self {
        let render = |kind| {
            let mut out = String::new();
            push_members(&mut out, fields, kind, true);
            out
        };
        RenderedMembers {
            all: Arc::new(Escaped::new(render(Members::All))),
            unlabelled: render(Members::Unlabelled),
            labels: render(Members::Labels),
            meta: OnceLock::new(),
        }
    }

    /// The merged member of these fields under `meta_key` (`None`: another key was asked for
    /// first).
    fn meta_member(&self, meta_key: &'static str) -> Option<&Arc<Escaped>> {
        let (key, member) = self.meta.get_or_init(|| {
            let mut out = String::new();
            push_meta_member(&mut out, meta_key, !self.labels.is_empty(), |out, kind| {
                let rendered = self.get(kind);
                out.push_str(rendered);
                rendered.is_empty()
            });
            (meta_key, Arc::new(Escaped::new(out)))
        });
        (*key == meta_key).then_some(member)
    }

    fn get(&self, kind: Members) -> &str {
        match kind {
            Members::All => &self.all.raw,
            Members::Unlabelled => &self.unlabelled,
            Members::Labels => &self.labels,
        }
    }
}

/// Roughly the bytes an event's field members take, to reserve.
fn members_len(event: &Event) -> usize {
    event
        .common
        .as_ref()
        .map_or(0, |c| c.rendered().all.raw.len())
        + event.fields.len() * 32
}

/// Appends the members of `kind` of all of `event`'s fields, as [`push_members`] over its
/// common and own fields laid end to end would: the common ones as rendered once, then its
/// own. (Rendered separately only while no name is in both: a repeated name's values become
/// one array member.)
fn push_event_members(out: &mut String, event: &Event, kind: Members, first: bool) -> bool {
    let Some(common) = &event.common else {
        return push_members(out, &event.fields, kind, first);
    };
    let shared_name = event.fields.iter().any(|(own, _)| {
        common
            .fields()
            .iter()
            .any(|(other, _)| other.as_str() == own.as_str())
    });
    if shared_name {
        let all: Vec<(FieldName, Bytes)> = event.all_fields().cloned().collect();
        return push_members(out, &all, kind, first);
    }
    let rendered = common.rendered().get(kind);
    let mut first = first;
    if !rendered.is_empty() {
        if !first {
            out.push(',');
        }
        out.push_str(rendered);
        first = false;
    }
    push_members(out, &event.fields, kind, first)
}

/// Appends `fields` as object members, each named `kind.key(name)` and skipped where that is
/// `None`; a comma before each unless `first`. Returns whether nothing was written (and
/// `first` held). Repeated names become arrays, so no value is lost and the object stays valid
/// JSON.
fn push_members(
    out: &mut String,
    fields: &[(FieldName, Bytes)],
    kind: Members,
    mut first: bool,
) -> bool {
    let key = |name| kind.key(name);
    for (i, (name, _)) in fields.iter().enumerate() {
        let Some(n) = key(name.as_str()) else {
            continue;
        };
        // Written already with the first of its name. A scan of the few fields before it
        // rather than a set: this runs per event, and the set's allocation cost more.
        if fields[..i]
            .iter()
            .any(|(other, _)| key(other.as_str()) == Some(n))
        {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        push_json_str(out, n);
        out.push(':');
        let mut values = fields[i..]
            .iter()
            .filter(|(other, _)| key(other.as_str()) == Some(n))
            .map(|(_, v)| v);
        let one = values.next().map(|v| &v[..]).unwrap_or_default();
        match values.next() {
            None => push_json_bytes(out, one),
            Some(second) => {
                out.push('[');
                push_json_bytes(out, one);
                for v in std::iter::once(second).chain(values) {
                    out.push(',');
                    push_json_bytes(out, v);
                }
                out.push(']');
            }
        }
    }
    first
}

/// A `merge_json` event: the app's object as it was written, then what logferry adds where the
/// app has no key of that name (the rule and its reasons: [`crate::json_merge`]).
fn format_merged_json(event: &Event, merged: Merged, out: &mut String) -> Option<KnownSpan> {
    let mut known = None;
    let object = event.message.trim_ascii();
    out.reserve(object.len() + 96 + members_len(event));
    // Inspected as one valid object: it ends with its closing brace.
    push_lossy(out, object.strip_suffix(b"}").unwrap_or(object));
    let mut first = merged.empty;
    let mut comma = |out: &mut String| {
        if !first {
            out.push(',');
        }
        first = false;
    };
    if !merged.has_meta() {
        comma(out);
        let common = event.common.as_ref().filter(|_| event.fields.is_empty());
        match common.and_then(|c| c.rendered().meta_member(merged.meta_key)) {
            // All its fields are the common ones: the member as rendered once, and known.
            Some(member) => {
                known = Some(KnownSpan {
                    at: out.len(),
                    text: member.clone(),
                });
                out.push_str(&member.raw);
            }
            None => {
                let labels = event
                    .all_fields()
                    .any(|(n, _)| Members::Labels.key(n.as_str()).is_some());
                push_meta_member(out, merged.meta_key, labels, |out, kind| {
                    push_event_members(out, event, kind, true)
                });
            }
        }
    }
    if !merged.has_timestamp() {
        comma(out);
        out.push_str("\"timestamp\":\"");
        rfc3339_ms(event.timestamp_ms, out);
        out.push('"');
    }
    if !merged.has_source() {
        comma(out);
        out.push_str("\"source\":");
        push_json_str(out, &event.source);
    }
    out.push('}');
    known
}

/// Appends a merged event's member holding logferry's fields: `"META_KEY":{...}`, the
/// fields' `members` but pod labels, then (`labels`: there are some) those under `labels`.
fn push_meta_member(
    out: &mut String,
    meta_key: &str,
    labels: bool,
    mut members: impl FnMut(&mut String, Members) -> bool,
) {
    push_json_str(out, meta_key);
    out.push_str(":{");
    let none = members(out, Members::Unlabelled);
    if labels {
        if !none {
            out.push(',');
        }
        out.push_str("\"labels\":{");
        members(out, Members::Labels);
        out.push('}');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Ack;

    fn ev(fields: &[(&'static str, &str)], msg: &[u8]) -> Event {
        Event {
            timestamp_ms: 1_764_087_639_123, // 2025-11-25T16:20:39.123Z
            message: Bytes::copy_from_slice(msg),
            priority: Some(3 * 8 + 6),
            common: None,
            fields: fields
                .iter()
                .map(|(n, v)| (FieldName::Static(n), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            source: "syslog".into(),
            truncated_bytes: 0,
            ack: Ack::none(),
            origin: 0,
            header: None,
            merged: None,
        }
    }

    proptest::proptest! {
        /// Timestamps written digit by digit read as `write!` with widths writes them, from
        /// year 0 to 9999 and past (where `write!` still does it).
        #[test]
        fn rfc3339_by_digits_is_the_formatted_one(ms in -70_000_000_000_000i64..260_000_000_000_000) {
            let mut out = String::new();
            rfc3339_ms(ms, &mut out);
            let c = civil_from_ms(ms);
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
            );
            proptest::prop_assert_eq!(out, expected);
        }
    }

    #[test]
    fn civil_dates() {
        let c = civil_from_ms(1_764_087_639_123);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis),
            (2025, 11, 25, 16, 20, 39, 123)
        );
        let c = civil_from_ms(0);
        assert_eq!((c.year, c.month, c.day), (1970, 1, 1));
        let c = civil_from_ms(951_782_400_000); // 2000-02-29
        assert_eq!((c.year, c.month, c.day), (2000, 2, 29));
        let c = civil_from_ms(-1);
        assert_eq!(
            (c.year, c.month, c.day, c.hour, c.second, c.millis),
            (1969, 12, 31, 23, 59, 999)
        );
    }

    #[test]
    fn short_like_journalctl() {
        let mut out = String::new();
        let e = ev(
            &[
                ("hostname", "node-1"),
                ("identifier", "kubelet"),
                ("pid", "2174"),
            ],
            b"I1125 text",
        );
        format_event(&e, MessageFormat::Short, &mut out);
        assert_eq!(out, "Nov 25 16:20:39 node-1 kubelet[2174]: I1125 text");
        let e = ev(&[], b"plain \xffline");
        format_event(&e, MessageFormat::Short, &mut out);
        assert_eq!(out, "plain \u{fffd}line");
    }

    #[test]
    fn json_is_valid_and_keeps_repeats() {
        let mut out = String::new();
        let mut e = ev(
            &[("hostname", "h\"1"), ("TAG", "a"), ("TAG", "b")],
            b"line\n2\x01",
        );
        e.truncated_bytes = 5;
        format_event(&e, MessageFormat::Json, &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid json");
        assert_eq!(v["message"], "line\n2\u{1}");
        assert_eq!(v["hostname"], "h\"1");
        assert_eq!(v["TAG"], serde_json::json!(["a", "b"]));
        assert_eq!(v["severity"], "info");
        assert_eq!(v["facility"], "daemon");
        assert_eq!(v["timestamp"], "2025-11-25T16:20:39.123Z");
        assert_eq!(v["truncated_bytes"], 5);
    }

    #[test]
    fn truncation_is_visible() {
        let mut out = String::new();
        let mut e = ev(&[], b"abc");
        e.truncated_bytes = 10;
        format_event(&e, MessageFormat::Message, &mut out);
        assert_eq!(out, "abc [logferry: truncated, 10 bytes cut]");
    }

    proptest::proptest! {
        /// An event whose fields are partly shared ([`crate::event::CommonFields`], their
        /// members rendered once) formats byte for byte as one carrying them all itself, in
        /// every format and merged or not: repeated names, labels, and names in both parts.
        #[test]
        fn shared_fields_format_as_own_fields(
            fields in proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "file", "pod", "stream", "node", "label.app", "label.team", "label.",
                        "hostname", "identifier",
                    ]),
                    "[a-z\"\\\n]{0,6}",
                ),
                0..10,
            ),
            split in 0usize..10,
            message in proptest::sample::select(vec![
                "plain \"text\"",
                "{}",
                r#"{"a":1,"b":"x\"y"}"#,
                r#"{"kubernetes":{},"timestamp":1}"#,
                r#"{"source":"app"}"#,
            ]),
        ) {
            let split = split.min(fields.len());
            let own = |range: &[(&'static str, String)]| -> Vec<(FieldName, Bytes)> {
                range
                    .iter()
                    .map(|(n, v)| (FieldName::Static(n), Bytes::from(v.clone())))
                    .collect()
            };
            let merged = match crate::json_merge::inspect(message.as_bytes(), false, "kubernetes") {
                crate::json_merge::Inspection::Merged(m) => Some(m),
                _ => None,
            };
            let mut flat = ev(&[], message.as_bytes());
            flat.fields = own(&fields);
            flat.merged = merged;
            let mut shared = ev(&[], message.as_bytes());
            shared.common = Some(std::sync::Arc::new(crate::event::CommonFields::new(own(
                &fields[..split],
            ))));
            shared.fields = own(&fields[split..]);
            shared.merged = merged;
            for format in [MessageFormat::Json, MessageFormat::Short, MessageFormat::Message] {
                let (mut a, mut b) = (String::new(), String::new());
                format_event(&flat, format, &mut a);
                let known = format_event(&shared, format, &mut b);
                proptest::prop_assert_eq!(&a, &b);
                // The request body's form of it, with the common members escaped once.
                let (mut plain, mut spanned) = (String::new(), Vec::new());
                push_json_str(&mut plain, &a);
                push_json_str_known(&mut spanned, &b, known.as_ref());
                proptest::prop_assert_eq!(plain.into_bytes(), spanned);
                let members = match merged {
                    None => !fields.is_empty(),
                    Some(m) => !m.has_meta(),
                };
                let expected = format == MessageFormat::Json && split == fields.len() && members;
                proptest::prop_assert_eq!(known.is_some(), expected, "a span where the members are all common");
            }
        }
    }

    /// A span that does not hold the text it names is ignored: the body is right whatever it
    /// says.
    #[test]
    fn a_wrong_known_span_changes_nothing() {
        let text = Arc::new(Escaped::new("\"a\":\"b\"".to_string()));
        for (message, at) in [
            ("x\"a\":\"b\"y", 1),
            ("x\"a\":\"c\"y", 1),
            ("\"a\"", 0),
            ("é\"a\":\"b\"", 1),
        ] {
            let known = KnownSpan {
                at,
                text: text.clone(),
            };
            let (mut plain, mut spanned) = (String::new(), Vec::new());
            push_json_str(&mut plain, message);
            push_json_str_known(&mut spanned, message, Some(&known));
            assert_eq!(plain.as_bytes(), spanned, "{message}");
        }
    }
}
