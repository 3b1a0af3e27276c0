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
//! Parsing validates the object and reads its top-level keys only: values are skipped (serde's
//! `IgnoredAny`-style walk, no allocation, no tree built), and the rendering copies the line.

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
