//! `merge_json`: a file or container line that is a JSON object becomes the event's fields.
//!
//! The rule: **the app's keys win**. In `json` format a merged event is the app's object as
//! the app wrote it (its keys top-level, nested values, order and number formatting kept byte
//! for byte), followed by what logferry adds, each only where the app's object has no key of
//! that name:
//!
//! - one object with all of logferry's own fields for the line ([`Merged::meta_key`]):
//!   `kubernetes` for `kubernetes_logs` (`namespace`, `pod`, `pod_uid`, `container`, `node`,
//!   `stream`, `file`, and the pod's labels as `labels: {..}`), `logferry` for `file` sources
//!   (`file`). Nesting them in one object is what keeps an app's own `file`, `pod` or `stream`
//!   key from being overwritten, and keeps logferry's out of the way of its queries;
//! - `timestamp` (the event's time, RFC 3339) and `source` (the source's name).
//!
//! There is no `message` key: the app's keys are the message, and the original line would
//! double every event's size. `short` and `message` formats send the line as it is (the
//! event's message stays the original line; merging only changes how `json` renders it).
//!
//! A line is only inspected if its first non-blank byte is `{`; anything else (plain text, a
//! JSON array or string) is sent unchanged and costs one byte comparison. An inspected line that
//! is not merged is also sent unchanged, and counted as a failure
//! (`logferry_file_json_merge_failures_total`): invalid JSON (a line starting with `{` that is
//! not one object), nested deeper than [`MAX_DEPTH`], or longer than [`MAX_BYTES`] (or
//! truncated by `max_line_bytes`, which leaves no valid object).
//!
//! Parsing validates the object and reads its top-level keys only, and the rendering copies the
//! line. A line is first scanned by [`quick_scan`], a hand-written validator of the common
//! shape (UTF-8, no `\u` escape, no exponent, a few levels deep): it accepts only what serde
//! accepts, with the same keys found, and hands anything else to serde's walk (values skipped,
//! `IgnoredAny`-style, no allocation, no tree built), which gives the verdict and the reason.
//! The scan takes about half the walk's time (which was ~6% of a `merge_json` run's CPU).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};

/// Deepest nesting merged, the outer object being level 1. Real log lines nest a few levels;
/// the bound keeps the recursive parse of one hostile line to a few KiB of the reader thread's
/// stack (serde_json's own limit, 128, is a guard, not a policy), and a Logs Insights query
/// cannot usefully address fields 64 levels down anyway.
pub const MAX_DEPTH: usize = 64;

/// Longest line merged: CloudWatch's event limit that `max_line_bytes` follows by default
/// (256 KiB). A larger object would be split by the sink into numbered parts, none of them
/// valid JSON, so merging it gains nothing; the bound also caps the time one line spends in
/// the parser on the reader thread that all of a source's files share.
pub const MAX_BYTES: usize = 256 * 1024;

/// Top-level keys logferry adds to a merged object, unless the app's object has them.
const TIMESTAMP: u8 = 1;
const SOURCE: u8 = 2;
const META: u8 = 4;

/// A message that is a JSON object whose keys are the event's (how `json` renders it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Merged {
    /// The key of the object that holds logferry's own fields (`kubernetes`, `logferry`).
    pub meta_key: &'static str,
    /// Which of logferry's top-level keys the app's object already has.
    taken: u8,
    /// The app's object has no members (`{}`).
    pub empty: bool,
}

impl Merged {
    /// The app's object has a `timestamp` key (logferry's is left out).
    pub fn has_timestamp(&self) -> bool {
        self.taken & TIMESTAMP != 0
    }

    /// The app's object has a `source` key (logferry's is left out).
    pub fn has_source(&self) -> bool {
        self.taken & SOURCE != 0
    }

    /// The app's object has a key named [`Merged::meta_key`] (logferry's fields are left out).
    pub fn has_meta(&self) -> bool {
        self.taken & META != 0
    }
}

/// Why a line starting with `{` was not merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not one valid JSON object (serde_json's reason).
    Invalid(String),
    /// Nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// Longer than [`MAX_BYTES`], or truncated.
    TooLarge,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invalid(e) => write!(f, "not a valid JSON object: {e}"),
            Failure::TooDeep => write!(f, "nested deeper than {MAX_DEPTH} levels"),
            Failure::TooLarge => write!(f, "longer than {MAX_BYTES} bytes"),
        }
    }
}

/// What [`inspect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// A JSON object: merged.
    Merged(Merged),
    /// Does not start with `{`: sent unchanged, not counted.
    NotAnObject,
    /// Starts with `{` but is not merged: sent unchanged and counted.
    Failed(Failure),
}

/// Whether `line` (`truncated`: cut by a size limit) is a JSON object to merge, its
/// logferry fields going under `meta_key`.
pub fn inspect(line: &[u8], truncated: bool, meta_key: &'static str) -> Inspection {
    let text = line.trim_ascii();
    if text.first() != Some(&b'{') {
        return Inspection::NotAnObject;
    }
    if truncated || text.len() > MAX_BYTES {
        return Inspection::Failed(Failure::TooLarge);
    }
    if let Some(merged) = quick_scan(text, meta_key) {
        return Inspection::Merged(merged);
    }
    serde_inspect(text, meta_key)
}

/// The verdict of serde's walk over `text` (trimmed, starting with `{`, within [`MAX_BYTES`]).
fn serde_inspect(text: &[u8], meta_key: &'static str) -> Inspection {
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(text);
    let parsed = de
        .deserialize_map(TopLevel {
            meta_key,
            too_deep: &too_deep,
        })
        .and_then(|m| de.end().map(|()| m));
    match parsed {
        Ok(m) => Inspection::Merged(m),
        Err(_) if too_deep.get() => Inspection::Failed(Failure::TooDeep),
        Err(e) => Inspection::Failed(Failure::Invalid(e.to_string())),
    }
}

/// Deepest nesting [`quick_scan`] follows (the outer object being level 1); deeper lines go to
/// serde's walk, which applies [`MAX_DEPTH`].
const QUICK_DEPTH: usize = 32;

/// Whether `text` (trimmed, starting with `{`) is one JSON object of the common shape, and
/// which of logferry's keys it has. `Some` only where serde's walk would merge it with the same
/// [`Merged`] (the property test `quick_scan_agrees_with_serde` states it); `None` for anything
/// invalid and for what it leaves to serde: invalid UTF-8 anywhere, a `\u` escape, a number
/// with an exponent or more than 18 digits, an escaped top-level key, more than
/// [`QUICK_DEPTH`] levels. Iterative: a bit per open container says object or array.
fn quick_scan(text: &[u8], meta_key: &'static str) -> Option<Merged> {
    #[derive(Clone, Copy)]
    enum Next {
        /// After `{`: a key or `}`.
        FirstKey,
        /// After `,` in an object: a key.
        Key,
        /// After `[`: a value or `]`.
        FirstElement,
        /// After `:` or `,` in an array: a value.
        Value,
        /// After a value: `,` or the container's end.
        Separator,
    }
    let mut merged = Merged {
        meta_key,
        taken: 0,
        empty: true,
    };
    // Bit `level - 1` is set when that level is an object; the outer object is level 1.
    let mut objects: u64 = 1;
    let mut depth = 1usize;
    let mut i = 1;
    let mut next = Next::FirstKey;
    loop {
        while matches!(text.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            i += 1;
        }
        let b = *text.get(i)?;
        match next {
            Next::FirstKey | Next::Key => {
                if b == b'}' && matches!(next, Next::FirstKey) {
                    i += 1;
                    (depth, next) = (depth - 1, Next::Separator);
                } else {
                    if b != b'"' {
                        return None;
                    }
                    // A top-level key is compared as written: one with an escape is left to
                    // serde, which reads what it stands for.
                    let end = string_end(text, i + 1, depth > 1)?;
                    if depth == 1 {
                        let key = &text[i + 1..end];
                        merged.empty = false;
                        merged.taken |= match key {
                            b"timestamp" => TIMESTAMP,
                            b"source" => SOURCE,
                            k if k == meta_key.as_bytes() => META,
                            _ => 0,
                        };
                    }
                    i = end + 1;
                    while matches!(text.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                        i += 1;
                    }
                    if text.get(i) != Some(&b':') {
                        return None;
                    }
                    i += 1;
                    next = Next::Value;
                }
            }
            Next::FirstElement | Next::Value => {
                if b == b']' && matches!(next, Next::FirstElement) {
                    i += 1;
                    (depth, next) = (depth - 1, Next::Separator);
                } else {
                    match b {
                        b'{' | b'[' => {
                            if depth >= QUICK_DEPTH {
                                return None;
                            }
                            let object = b == b'{';
                            objects = (objects & !(1 << depth)) | (u64::from(object) << depth);
                            depth += 1;
                            i += 1;
                            next = if object {
                                Next::FirstKey
                            } else {
                                Next::FirstElement
                            };
                            continue;
                        }
                        b'"' => i = string_end(text, i + 1, true)? + 1,
                        b'-' | b'0'..=b'9' => i = number_end(text, i)?,
                        b't' if text[i..].starts_with(b"true") => i += 4,
                        b'f' if text[i..].starts_with(b"false") => i += 5,
                        b'n' if text[i..].starts_with(b"null") => i += 4,
                        _ => return None,
                    }
                    next = Next::Separator;
                }
            }
            Next::Separator => {
                i += 1;
                let in_object = (objects >> (depth - 1)) & 1 == 1;
                match (b, in_object) {
                    (b',', true) => next = Next::Key,
                    (b',', false) => next = Next::Value,
                    (b'}', true) | (b']', false) => depth -= 1,
                    _ => return None,
                }
            }
        }
        if depth == 0 {
            // The outer object's end must be the line's.
            return (i == text.len()).then_some(merged);
        }
    }
}

/// The index of the closing quote of the string whose contents start at `from`; `None` at a
/// control character, a `\u` or invalid escape (any escape unless `escapes`), invalid UTF-8,
/// or the end of the text.
///
/// The UTF-8 check is here rather than over the whole line: outside strings the scan accepts
/// ASCII only, so a line is UTF-8 when its strings' contents are, and a string that is all
/// ASCII (most of a log line's) needs no check at all. The contents are checked raw, escapes
/// included: escapes are ASCII, so that is the same verdict as checking the text they stand
/// for.
fn string_end(text: &[u8], from: usize, escapes: bool) -> Option<usize> {
    let mut i = from;
    let mut non_ascii = false;
    loop {
        i = next_stop(text, i, !non_ascii);
        match *text.get(i)? {
            b'"' => {
                if non_ascii {
                    std::str::from_utf8(&text[from..i]).ok()?;
                }
                return Some(i);
            }
            b'\\' if escapes => match text.get(i + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                _ => return None,
            },
            0x80.. => {
                // Checked once the string's end is found; the rest of it scanned for the
                // other stops only.
                non_ascii = true;
                i += 1;
            }
            _ => return None,
        }
    }
}

/// The index of the first byte from `from` on that ends a string's plain run: `"`, `\\`, a
/// control character, and (`stop_non_ascii`) a byte of 0x80 or more; `text.len()` if none.
///
/// Eight bytes at a time, the stop's place read off the lowest marked byte (each mark below
/// is exact for the lowest stop of a word, a borrow only marking bytes above a true one): a
/// log line's strings are short, so a word-wide test followed by a byte loop to find the place
/// cost more than the plain byte loop, but the lowest mark costs nothing more.
fn next_stop(text: &[u8], from: usize, stop_non_ascii: bool) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let non_ascii = if stop_non_ascii { HIGH } else { 0 };
    let mut i = from;
    while let Some(word) = text.get(i..i + 8) {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let quote = x ^ (ONES * u64::from(b'"'));
        let backslash = x ^ (ONES * u64::from(b'\\'));
        // A zero byte of `quote` or `backslash`, a byte of `x` below 0x20.
        let marks = (quote.wrapping_sub(ONES) & !quote
            | backslash.wrapping_sub(ONES) & !backslash
            | x.wrapping_sub(ONES * 0x20) & !x)
            & HIGH
            | x & non_ascii;
        if marks != 0 {
            return i + (marks.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while i < text.len() {
        let b = text[i];
        if b == b'"' || b == b'\\' || b < 0x20 || (stop_non_ascii && b >= 0x80) {
            return i;
        }
        i += 1;
    }
    i
}

/// The index just past the number starting at `from` (`-`? then `0` or `[1-9][0-9]*`, then
/// `.[0-9]+`?); `None` for an exponent, more than 18 digits, or no valid number.
fn number_end(text: &[u8], from: usize) -> Option<usize> {
    let digits = |at: usize| text[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let mut i = from + usize::from(text[from] == b'-');
    let int = digits(i);
    if int == 0 || (int > 1 && text[i] == b'0') {
        return None;
    }
    i += int;
    let mut frac = 0;
    if text.get(i) == Some(&b'.') {
        frac = digits(i + 1);
        if frac == 0 {
            return None;
        }
        i += 1 + frac;
    }
    if int + frac > 18 || matches!(text.get(i), Some(b'e' | b'E')) {
        return None;
    }
    Some(i)
}

/// The outer object: notes which of logferry's keys it has, skips the values.
struct TopLevel<'a> {
    meta_key: &'static str,
    too_deep: &'a Cell<bool>,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Merged;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Merged, A::Error> {
        let mut merged = Merged {
            meta_key: self.meta_key,
            taken: 0,
            empty: true,
        };
        while let Some(key) = map.next_key_seed(KeyBit(self.meta_key))? {
            merged.empty = false;
            merged.taken |= key;
            map.next_value_seed(Skip {
                depth: 1,
                too_deep: self.too_deep,
            })?;
        }
        Ok(merged)
    }
}

/// A top-level key: the bit of the logferry key it names, 0 for any other.
struct KeyBit(&'static str);

impl<'de> DeserializeSeed<'de> for KeyBit {
    type Value = u8;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<u8, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyBit {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<u8, E> {
        Ok(match key {
            "timestamp" => TIMESTAMP,
            "source" => SOURCE,
            k if k == self.0 => META,
            _ => 0,
        })
    }
}

/// A value checked and thrown away; `depth` is the nesting level of the container it is in.
#[derive(Clone, Copy)]
struct Skip<'a> {
    depth: usize,
    too_deep: &'a Cell<bool>,
}

impl Skip<'_> {
    fn deeper<E: de::Error>(self) -> Result<Self, E> {
        if self.depth >= MAX_DEPTH {
            self.too_deep.set(true);
            return Err(E::custom(Failure::TooDeep));
        }
        Ok(Skip {
            depth: self.depth + 1,
            ..self
        })
    }
}

impl<'de> DeserializeSeed<'de> for Skip<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Skip<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.deeper()?;
        while map.next_key::<de::IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Ack;
    use crate::config::MessageFormat;
    use crate::event::{Event, FieldName};
    use crate::format::format_event;
    use bytes::Bytes;
    use serde_json::{json, Value};

    /// A `kubernetes_logs` event of `line` with logferry's fields, merged when it inspects so.
    fn event(line: &str) -> Event {
        let merged = match inspect(line.as_bytes(), false, "kubernetes") {
            Inspection::Merged(m) => Some(m),
            _ => None,
        };
        let fields = [
            ("namespace", "shop"),
            ("pod", "web-0"),
            ("container", "nginx"),
            ("file", "/var/log/pods/shop_web-0_u/nginx/0.log"),
            ("label.app", "web"),
            ("label.team", "a"),
            ("stream", "stdout"),
        ];
        Event {
            timestamp_ms: 1_764_087_639_123, // 2025-11-25T16:20:39.123Z
            message: Bytes::copy_from_slice(line.as_bytes()),
            priority: None,
            common: None,
            fields: fields
                .iter()
                .map(|(n, v)| (FieldName::Static(n), Bytes::copy_from_slice(v.as_bytes())))
                .collect(),
            source: "k".into(),
            truncated_bytes: 0,
            ack: Ack::none(),
            origin: 0,
            header: None,
            merged,
        }
    }

    fn json_of(line: &str) -> Value {
        let mut out = String::new();
        format_event(&event(line), MessageFormat::Json, &mut out);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    #[test]
    fn an_objects_keys_are_top_level_and_logferrys_fields_under_kubernetes() {
        let v = json_of(r#"{"level":"info","msg":"ready","port":8080}"#);
        assert_eq!(
            v,
            json!({
                "level": "info",
                "msg": "ready",
                "port": 8080,
                "kubernetes": {
                    "namespace": "shop",
                    "pod": "web-0",
                    "container": "nginx",
                    "file": "/var/log/pods/shop_web-0_u/nginx/0.log",
                    "stream": "stdout",
                    "labels": {"app": "web", "team": "a"},
                },
                "timestamp": "2025-11-25T16:20:39.123Z",
                "source": "k",
            })
        );
    }

    #[test]
    fn nested_values_are_kept_as_the_app_wrote_them() {
        // Blanks around the object are not part of it.
        let line = r#"  {"req":{"path":"/a","headers":{"x":[1,2.50,{"y":null}]}},"ok":true}  "#;
        let mut out = String::new();
        format_event(&event(line), MessageFormat::Json, &mut out);
        assert!(
            out.starts_with(r#"{"req":{"path":"/a","headers":{"x":[1,2.50,{"y":null}]}},"ok":true,"kubernetes":{"#),
            "{out}"
        );
        let v: Value = serde_json::from_str(&out).expect("valid");
        assert_eq!(v["req"]["headers"]["x"][2], json!({"y": null}));
    }

    #[test]
    fn the_apps_keys_win_over_logferrys() {
        let v = json_of(
            r#"{"kubernetes":"mine","timestamp":"app time","source":"app","namespace":"n","stream":1}"#,
        );
        assert_eq!(
            v,
            json!({
                "kubernetes": "mine",
                "timestamp": "app time",
                "source": "app",
                "namespace": "n",
                "stream": 1,
            })
        );
        // Only the one that collides is left out.
        let v = json_of(r#"{"timestamp":"app time"}"#);
        assert_eq!(v["timestamp"], "app time");
        assert_eq!(v["source"], "k");
        assert_eq!(v["kubernetes"]["pod"], "web-0");
    }

    #[test]
    fn an_empty_object_gets_logferrys_keys_alone() {
        let v = json_of("{}");
        assert_eq!(v["source"], "k");
        assert_eq!(v["kubernetes"]["namespace"], "shop");
        assert_eq!(v.as_object().map(|o| o.len()), Some(3));
    }

    #[test]
    fn lines_that_are_not_objects_are_sent_unchanged_and_not_counted() {
        for line in ["plain text", "[1,2]", "\"a string\"", "42", "", "   "] {
            assert_eq!(
                inspect(line.as_bytes(), false, "kubernetes"),
                Inspection::NotAnObject,
                "{line:?}"
            );
            let v = json_of(line);
            assert_eq!(v["message"], line);
            assert_eq!(v["namespace"], "shop", "unmerged events keep today's shape");
        }
    }

    #[test]
    fn invalid_objects_fail_and_are_sent_unchanged() {
        for line in [
            "{not json}",
            r#"{"a":1"#,
            r#"{"a":1} trailing"#,
            r#"{"a":1}{"b":2}"#,
            r#"{"a":"\u00"}"#,
            "{\"a\":\"raw\ncontrol\"}",
        ] {
            let got = inspect(line.as_bytes(), false, "kubernetes");
            assert!(
                matches!(got, Inspection::Failed(Failure::Invalid(_))),
                "{line:?}: {got:?}"
            );
            assert_eq!(json_of(line)["message"], line);
        }
        assert!(matches!(
            inspect(b"{\"a\":\"\xff\"}", false, "kubernetes"),
            Inspection::Failed(Failure::Invalid(_))
        ));
    }

    #[test]
    fn depth_is_bounded_at_max_depth() {
        let nested = |levels: usize| {
            format!(
                "{}{}{}",
                "{\"a\":".repeat(levels - 1),
                "{}",
                "}".repeat(levels - 1)
            )
        };
        assert!(matches!(
            inspect(nested(MAX_DEPTH).as_bytes(), false, "k"),
            Inspection::Merged(_)
        ));
        assert_eq!(
            inspect(nested(MAX_DEPTH + 1).as_bytes(), false, "k"),
            Inspection::Failed(Failure::TooDeep)
        );
        // Arrays count as levels too; far deeper than serde_json's own limit still fails as
        // too deep, never as a stack overflow.
        let arrays = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            inspect(arrays.as_bytes(), false, "k"),
            Inspection::Failed(Failure::TooDeep)
        );
    }

    #[test]
    fn size_is_bounded_and_truncated_lines_are_not_merged() {
        let fits = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_BYTES - 8));
        assert_eq!(fits.len(), MAX_BYTES);
        assert!(matches!(
            inspect(fits.as_bytes(), false, "k"),
            Inspection::Merged(_)
        ));
        let over = format!("{{\"a\":\"{}\"}}", "x".repeat(MAX_BYTES - 7));
        assert_eq!(
            inspect(over.as_bytes(), false, "k"),
            Inspection::Failed(Failure::TooLarge)
        );
        assert_eq!(
            inspect(br#"{"a":"cut"#, true, "k"),
            Inspection::Failed(Failure::TooLarge)
        );
    }

    /// A JSON value of every kind, nested a few levels, with keys that may be logferry's.
    fn any_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "(\\PC|[\\x00-\\x1f\"\\\\/]|\\u{e9}|\\u{1F600}){0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just("timestamp".to_string()),
                            Just("source".to_string()),
                            Just("kubernetes".to_string()),
                            "[a-z\"\\\\]{0,6}",
                        ],
                        inner
                    ),
                    0..6
                )
                .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]
        /// The quick scan merges only what serde's walk merges, with the same keys found:
        /// objects written compact or spaced, then damaged at one byte (cut, doubled or
        /// replaced by a byte JSON gives meaning to).
        #[test]
        fn quick_scan_agrees_with_serde(
            members in proptest::collection::vec(
                (proptest::sample::select(vec!["timestamp", "source", "kubernetes", "k", "a\"b"]), any_value()),
                0..5,
            ),
            pretty in proptest::prelude::any::<bool>(),
            damage in proptest::option::of((0usize..4096, 0u8..3, proptest::sample::select(
                b"{}[]\",:\\ .-0123456789eE+tfnulrsa\x00\x1f\x7f\xc3\xa9\xff".to_vec(),
            ))),
        ) {
            let object = Value::Object(members.into_iter().map(|(k, v)| (k.to_string(), v)).collect());
            let mut text = if pretty {
                serde_json::to_vec_pretty(&object)
            } else {
                serde_json::to_vec(&object)
            }
            .expect("serializes");
            if let Some((at, how, byte)) = damage {
                let at = at % text.len();
                match how {
                    0 => {
                        text.remove(at);
                    }
                    1 => text.insert(at, byte),
                    _ => text[at] = byte,
                }
            }
            let text = text.trim_ascii();
            if text.first() == Some(&b'{') {
                if let Some(quick) = quick_scan(text, "kubernetes") {
                    proptest::prop_assert_eq!(
                        serde_inspect(text, "kubernetes"),
                        Inspection::Merged(quick),
                        "{}",
                        String::from_utf8_lossy(text)
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// The word-at-a-time search stops where a byte-at-a-time one does.
        #[test]
        fn next_stop_finds_the_first_stop(
            text in proptest::collection::vec(proptest::sample::select(
                b"a \"\\\x00\x1f\x20\x7f\x80\xc3\xa9\xff".to_vec(),
            ), 0..40),
            from in 0usize..40,
            stop_non_ascii in proptest::prelude::any::<bool>(),
        ) {
            let from = from.min(text.len());
            let expected = text[from..]
                .iter()
                .position(|&b| b == b'"' || b == b'\\' || b < 0x20 || (stop_non_ascii && b >= 0x80))
                .map_or(text.len(), |at| from + at);
            proptest::prop_assert_eq!(next_stop(&text, from, stop_non_ascii), expected);
        }
    }

    #[test]
    fn invalid_utf8_is_left_to_serde_wherever_it_is() {
        let long =
            "caf\u{e9} au lait, an \u{e9}clair and a \u{1F600} in a string longer than a word";
        let line = format!("{{\"msg\":\"{long}\",\"k\":\"\u{e9}\"}}");
        assert!(quick_scan(line.as_bytes(), "kubernetes").is_some());
        for bad in [
            b"{\"msg\":\"caf\xc3 au lait, longer than a word\"}".as_slice(),
            b"{\"msg\":\"\xff\"}",
            b"{\"m\xc3\xa9sg\":1,\"a\":\"\xe9t\xc3\xa9\"}",
            b"{\"msg\":1 \xc3\xa9}",
            b"{\"msg\":\"\xc3\xa9\xc3\"}",
        ] {
            assert_eq!(
                quick_scan(bad, "kubernetes"),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn common_lines_take_the_quick_scan() {
        for line in [
            r#"{"time":"2026-11-25T16:20:39.123Z","level":"info","logger":"worker-07","msg":"request done","request":{"id":"00001234","path":"/api/v1/items/12"},"status":200,"took_ms":-0.25}"#,
            r#"{ "a" : [ 1 , true , false , null , [ ] , { } , "x\"\\\/\b\f\n\r\t" ] , "timestamp" : 0 }"#,
            "{}",
            r#"{"kubernetes":{"pod":"mine","k\"":0},"source":"é"}"#,
        ] {
            let quick = quick_scan(line.as_bytes(), "kubernetes");
            assert!(quick.is_some(), "{line}");
            assert_eq!(
                quick.map(Inspection::Merged),
                Some(serde_inspect(line.as_bytes(), "kubernetes"))
            );
        }
        // Left to serde: what the scan does not follow, valid or not.
        for line in [
            r#"{"a":"\u00e9"}"#,
            r#"{"a":1e5}"#,
            r#"{"a":1234567890123456789}"#,
            r#"{"time\u0073tamp":1}"#,
            r#"{"a":01}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            "{\"a\":\"\x0c\"}",
        ] {
            assert_eq!(quick_scan(line.as_bytes(), "kubernetes"), None, "{line}");
        }
        let nested = |levels: usize| format!("{}1{}", "{\"a\":".repeat(levels), "}".repeat(levels));
        assert!(quick_scan(nested(QUICK_DEPTH).as_bytes(), "k").is_some());
        let deep = nested(QUICK_DEPTH + 1);
        assert_eq!(quick_scan(deep.as_bytes(), "k"), None);
        assert!(matches!(
            inspect(deep.as_bytes(), false, "k"),
            Inspection::Merged(_)
        ));
    }

    #[test]
    fn message_format_keeps_the_original_line() {
        let line = r#"{"level":"info","msg":"ready"}"#;
        let e = event(line);
        assert!(e.merged.is_some());
        let mut out = String::new();
        format_event(&e, MessageFormat::Message, &mut out);
        assert_eq!(out, line);
        format_event(&e, MessageFormat::Short, &mut out);
        assert_eq!(out, line);
    }

    #[test]
    fn a_file_sources_fields_go_under_logferry() {
        let line = r#"{"file":"app.py","msg":"x"}"#;
        let Inspection::Merged(m) = inspect(line.as_bytes(), false, "logferry") else {
            panic!("merged");
        };
        let mut e = event(line);
        e.fields = vec![(
            FieldName::Static("file"),
            Bytes::from_static(b"/var/log/app.log"),
        )];
        e.merged = Some(m);
        let mut out = String::new();
        format_event(&e, MessageFormat::Json, &mut out);
        let v: Value = serde_json::from_str(&out).expect("valid");
        assert_eq!(v["file"], "app.py");
        assert_eq!(v["logferry"], json!({"file": "/var/log/app.log"}));
    }
}
