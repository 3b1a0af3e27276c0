//! CloudWatch Logs request limits, checked the way the real service checks them.
//!
//! moto_server does not enforce most of these (batch size, event count, 24 h span, empty
//! messages, name patterns, retention values), so both `fake-cloudwatch` and `cwl-proxy`
//! run every request through the functions here. They are plain functions over
//! `(timestamp, message byte length)` pairs so that logferry's own tests can use them too.
//!
//! Sources: AWS PutLogEvents API reference (2025–2026): at most 10,000 events and
//! 1,048,576 bytes per request, counted as UTF-8 message bytes + 26 per event; one event at
//! most 1,048,576 bytes including the 26; chronological order; span at most 24 hours.

use std::fmt;

/// Most events in one PutLogEvents request.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Most bytes in one request: sum of UTF-8 message bytes + [`EVENT_OVERHEAD`] per event.
pub const MAX_BATCH_BYTES: u64 = 1_048_576;
/// Bytes the service adds to each event when it sizes a request.
pub const EVENT_OVERHEAD: u64 = 26;
/// Largest single event, including [`EVENT_OVERHEAD`].
pub const MAX_EVENT_BYTES: u64 = 1_048_576;
/// Widest timestamp span in one request (24 hours), in milliseconds.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;
/// Events older than this (14 days) are rejected inside a 200 response.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// Events further in the future than this (2 hours) are rejected inside a 200 response.
pub const MAX_FUTURE_MS: i64 = 2 * 3600 * 1000;
/// The retention values `PutRetentionPolicy` accepts.
pub const RETENTION_DAYS: &[i64] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

/// One rule of the CloudWatch Logs API that a request can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    /// `logEvents` missing or empty.
    EmptyBatch,
    /// More than [`MAX_BATCH_EVENTS`] events.
    TooManyEvents,
    /// Sum of message bytes + 26/event above [`MAX_BATCH_BYTES`].
    BatchTooLarge,
    /// One event (message bytes + 26) above [`MAX_EVENT_BYTES`].
    EventTooLarge,
    /// An event with an empty message.
    EmptyMessage,
    /// Timestamps not in non-decreasing order.
    NotChronological,
    /// Last minus first timestamp above [`MAX_SPAN_MS`].
    SpanTooLong,
    /// Log group name not matching `[\.\-_/#A-Za-z0-9]+`, 1–512 chars, not `aws/...`.
    BadGroupName,
    /// Log stream name empty, longer than 512 chars, or containing `:` or `*`.
    BadStreamName,
    /// `retentionInDays` not one of [`RETENTION_DAYS`].
    BadRetention,
    /// The request body is not valid JSON of the expected shape.
    Malformed,
}

impl Rule {
    /// Stable snake_case name, used in JSON stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::EmptyBatch => "empty_batch",
            Rule::TooManyEvents => "too_many_events",
            Rule::BatchTooLarge => "batch_too_large",
            Rule::EventTooLarge => "event_too_large",
            Rule::EmptyMessage => "empty_message",
            Rule::NotChronological => "not_chronological",
            Rule::SpanTooLong => "span_too_long",
            Rule::BadGroupName => "bad_group_name",
            Rule::BadStreamName => "bad_stream_name",
            Rule::BadRetention => "bad_retention",
            Rule::Malformed => "malformed",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A broken rule with a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which rule.
    pub rule: Rule,
    /// What exactly (index, sizes...).
    pub detail: String,
}

/// What a PutLogEvents batch contains, computed in the same pass as the checks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchSummary {
    /// Number of events.
    pub events: usize,
    /// Sum of UTF-8 message bytes.
    pub message_bytes: u64,
    /// `message_bytes + 26 * events`: the size the service counts.
    pub batch_bytes: u64,
    /// Timestamp of the first event.
    pub first_ts: Option<i64>,
    /// Timestamp of the last event.
    pub last_ts: Option<i64>,
    /// Smallest timestamp.
    pub min_ts: Option<i64>,
    /// Largest timestamp.
    pub max_ts: Option<i64>,
}

/// Checks one PutLogEvents batch given as `(timestamp_ms, message_utf8_len)` pairs.
///
/// Returns the summary and every broken rule (each rule at most once, with the first
/// offending index in the detail). An empty violation list means the real service would
/// accept the request shape (events may still be rejected as too old/new inside a 200).
pub fn check_batch<I>(events: I) -> (BatchSummary, Vec<Violation>)
where
    I: IntoIterator<Item = (i64, usize)>,
{
    let mut s = BatchSummary::default();
    let mut v = Vec::new();
    let mut prev: Option<i64> = None;
    let mut seen_empty = false;
    let mut seen_large = false;
    let mut seen_order = false;
    for (i, (ts, len)) in events.into_iter().enumerate() {
        let len = len as u64;
        s.events += 1;
        s.message_bytes += len;
        if len == 0 && !seen_empty {
            seen_empty = true;
            v.push(Violation {
                rule: Rule::EmptyMessage,
                detail: format!("event {i} has an empty message"),
            });
        }
        if len + EVENT_OVERHEAD > MAX_EVENT_BYTES && !seen_large {
            seen_large = true;
            v.push(Violation {
                rule: Rule::EventTooLarge,
                detail: format!(
                    "event {i} is {} bytes incl. {EVENT_OVERHEAD} overhead (max {MAX_EVENT_BYTES})",
                    len + EVENT_OVERHEAD
                ),
            });
        }
        if let Some(p) = prev {
            if ts < p && !seen_order {
                seen_order = true;
                v.push(Violation {
                    rule: Rule::NotChronological,
                    detail: format!("event {i} timestamp {ts} is before event {} ({p})", i - 1),
                });
            }
        }
        prev = Some(ts);
        if s.first_ts.is_none() {
            s.first_ts = Some(ts);
        }
        s.last_ts = Some(ts);
        s.min_ts = Some(s.min_ts.map_or(ts, |m| m.min(ts)));
        s.max_ts = Some(s.max_ts.map_or(ts, |m| m.max(ts)));
    }
    s.batch_bytes = s.message_bytes + EVENT_OVERHEAD * s.events as u64;
    if s.events == 0 {
        v.push(Violation {
            rule: Rule::EmptyBatch,
            detail: "logEvents is empty".into(),
        });
    }
    if s.events > MAX_BATCH_EVENTS {
        v.push(Violation {
            rule: Rule::TooManyEvents,
            detail: format!("{} events (max {MAX_BATCH_EVENTS})", s.events),
        });
    }
    if s.batch_bytes > MAX_BATCH_BYTES {
        v.push(Violation {
            rule: Rule::BatchTooLarge,
            detail: format!(
                "{} bytes incl. {EVENT_OVERHEAD}/event (max {MAX_BATCH_BYTES})",
                s.batch_bytes
            ),
        });
    }
    if let (Some(lo), Some(hi)) = (s.min_ts, s.max_ts) {
        let span = hi.saturating_sub(lo);
        if span > MAX_SPAN_MS {
            v.push(Violation {
                rule: Rule::SpanTooLong,
                detail: format!("events span {span} ms (max {MAX_SPAN_MS})"),
            });
        }
    }
    (s, v)
}

/// Checks a log group name: `[\.\-_/#A-Za-z0-9]+`, 1–512 chars, not starting with `aws/`.
pub fn check_group_name(name: &str) -> Option<Violation> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/' | b'#'));
    if name.is_empty() || name.len() > 512 || !ok_chars || name.starts_with("aws/") {
        Some(Violation {
            rule: Rule::BadGroupName,
            detail: format!("invalid log group name {name:?}"),
        })
    } else {
        None
    }
}

/// Checks a log stream name: 1–512 chars, no `:` or `*`.
pub fn check_stream_name(name: &str) -> Option<Violation> {
    let chars = name.chars().count();
    if chars == 0 || chars > 512 || name.contains([':', '*']) {
        Some(Violation {
            rule: Rule::BadStreamName,
            detail: format!("invalid log stream name {name:?}"),
        })
    } else {
        None
    }
}

/// Checks a `retentionInDays` value.
pub fn check_retention(days: i64) -> Option<Violation> {
    if RETENTION_DAYS.contains(&days) {
        None
    } else {
        Some(Violation {
            rule: Rule::BadRetention,
            detail: format!("retentionInDays {days} is not an allowed value"),
        })
    }
}

/// The `rejectedLogEventsInfo` the real service would return, with AWS's documented
/// semantics (end indexes exclusive, start index inclusive; moto gets these wrong).
///
/// `timestamps` must be chronological (the request is rejected otherwise). `retention_days`
/// is the group's retention, if any. Returns `None` when every event is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rejected {
    /// Events `[0, too_old_end)` are more than 14 days old.
    pub too_old_end: Option<usize>,
    /// Events `[too_new_start, len)` are more than 2 hours in the future.
    pub too_new_start: Option<usize>,
    /// Events `[0, expired_end)` are older than the group's retention.
    pub expired_end: Option<usize>,
}

impl Rejected {
    /// Computes which events the service would reject at time `now_ms`.
    pub fn compute(timestamps: &[i64], now_ms: i64, retention_days: Option<i64>) -> Option<Self> {
        let old_cut = now_ms - MAX_AGE_MS;
        let new_cut = now_ms + MAX_FUTURE_MS;
        let too_old = timestamps.iter().take_while(|&&t| t < old_cut).count();
        let too_new_from = timestamps
            .iter()
            .rposition(|&t| t <= new_cut)
            .map_or(0, |p| p + 1);
        let expired = retention_days
            .map(|d| {
                let cut = now_ms - d * 24 * 3600 * 1000;
                timestamps.iter().take_while(|&&t| t < cut).count()
            })
            .unwrap_or(0);
        let r = Rejected {
            too_old_end: (too_old > 0).then_some(too_old),
            too_new_start: (too_new_from < timestamps.len()).then_some(too_new_from),
            expired_end: (expired > 0).then_some(expired),
        };
        (r != Rejected::default()).then_some(r)
    }

    /// How many events of `len` this rejects (each event counted once).
    pub fn count(&self, len: usize) -> usize {
        len - self.kept(len).len()
    }

    /// The events of `len` CloudWatch keeps: those between the rejected ones at either end.
    pub fn kept(&self, len: usize) -> std::ops::Range<usize> {
        let front = self
            .too_old_end
            .unwrap_or(0)
            .max(self.expired_end.unwrap_or(0))
            .min(len);
        front..self.too_new_start.unwrap_or(len).clamp(front, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_batch_has_no_violation() {
        let (s, v) = check_batch([(1, 5), (2, 5), (2, 1)]);
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(s.events, 3);
        assert_eq!(s.message_bytes, 11);
        assert_eq!(s.batch_bytes, 11 + 78);
    }

    #[test]
    fn each_rule_fires() {
        let rules = |v: Vec<Violation>| v.into_iter().map(|v| v.rule).collect::<Vec<_>>();
        assert_eq!(rules(check_batch([]).1), vec![Rule::EmptyBatch]);
        assert_eq!(
            rules(check_batch([(2, 1), (1, 1)]).1),
            vec![Rule::NotChronological]
        );
        assert_eq!(rules(check_batch([(1, 0)]).1), vec![Rule::EmptyMessage]);
        assert_eq!(
            rules(check_batch([(0, 1), (MAX_SPAN_MS + 1, 1)]).1),
            vec![Rule::SpanTooLong]
        );
        assert!(check_batch([(0, 1), (MAX_SPAN_MS, 1)]).1.is_empty());
        assert_eq!(
            rules(check_batch((0..10_001).map(|i| (i, 1))).1),
            vec![Rule::TooManyEvents]
        );
        assert!(check_batch((0..10_000).map(|i| (i, 1))).1.is_empty());
        let exact = (MAX_BATCH_BYTES - EVENT_OVERHEAD) as usize;
        assert!(check_batch([(0, exact)]).1.is_empty());
        assert_eq!(
            rules(check_batch([(0, exact + 1)]).1),
            vec![Rule::EventTooLarge, Rule::BatchTooLarge]
        );
        assert_eq!(
            rules(check_batch([(0, exact / 2), (0, exact / 2)]).1),
            vec![Rule::BatchTooLarge]
        );
    }

    #[test]
    fn names_and_retention() {
        assert!(check_group_name("/var/log/app-1_x.y#z").is_none());
        assert!(check_group_name("aws/x").is_some());
        assert!(check_group_name("a b").is_some());
        assert!(check_group_name("").is_some());
        assert!(check_stream_name("host/unit.service").is_none());
        assert!(check_stream_name("a:b").is_some());
        assert!(check_retention(14).is_none());
        assert!(check_retention(15).is_some());
    }

    #[test]
    fn rejected_indexes_follow_aws_semantics() {
        let now = 100 * 24 * 3600 * 1000;
        let old = now - MAX_AGE_MS - 1;
        let new = now + MAX_FUTURE_MS + 1;
        assert_eq!(Rejected::compute(&[now, now], now, None), None);
        let r = Rejected::compute(&[old, old, now, new], now, None).unwrap();
        assert_eq!(r.too_old_end, Some(2));
        assert_eq!(r.too_new_start, Some(3));
        assert_eq!(r.count(4), 3);
        let r = Rejected::compute(&[now - 2 * 86_400_000, now], now, Some(1)).unwrap();
        assert_eq!(r.expired_end, Some(1));
        assert_eq!(r.count(2), 1);
    }
}
