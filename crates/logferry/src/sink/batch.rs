//! Building PutLogEvents requests that CloudWatch will accept, by construction.
//!
//! The rules (AWS API reference, 2025): at most 10,000 events and 1,048,576 bytes per request,
//! counting each event's UTF-8 message bytes plus 26; one event at most 1,048,576 bytes with
//! those 26 (so a message of at most 1,048,550 bytes); events in chronological order; no request
//! spanning more than 24 hours; no empty message. The emulator used in tests enforces almost
//! none of these, so this module is where they are kept, and its property tests are where they
//! are proven.
//!
//! A [`RequestBuilder`] accumulates one stream's events and cuts a request *before* an event
//! would break a count, size or span limit, so every request it returns is valid once sorted
//! (sorting cannot change its count, size or span). A [`StreamBatcher`] holds one builder per
//! UTC day of a stream's events, so events spread over more than 24 hours, in any order, are
//! grouped by day instead of cutting a request at every event that would widen the span; a
//! request is cut only when it is full, or taken when the sink sends it. A full request keeps its
//! last millisecond's events back for the next one when that millisecond is busy, so a stream of
//! many events per millisecond gets requests that share no timestamp and may be in flight
//! together (the sink sends requests sharing a timestamp one after the other). Oversize messages are split into numbered
//! parts by [`split_oversize`] before they get here; each part keeps a share of the event's
//! acknowledgement, so the event counts as delivered only when every part is.

use std::time::Instant;

use crate::ack::Ack;
use crate::format::KnownSpan;

/// Bytes CloudWatch counts per event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// Most bytes in one request (messages + overhead).
pub const MAX_REQUEST_BYTES: usize = 1_048_576;
/// Most events in one request.
pub const MAX_REQUEST_EVENTS: usize = 10_000;
/// Largest message of a single event.
pub const MAX_MESSAGE_BYTES: usize = MAX_REQUEST_BYTES - EVENT_OVERHEAD;
/// Widest timestamp span in one request.
pub const MAX_SPAN_MS: i64 = 24 * 3600 * 1000;

/// An event ready to send: its final text and its acknowledgement.
#[derive(Debug)]
pub struct Pending {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The text CloudWatch will store.
    pub message: String,
    /// Resolved when the request carrying it succeeds or it is dead-lettered.
    pub ack: Ack,
    /// Where its source read it ([`crate::event::Event::origin`]; a part of a split event has
    /// its own), for the in-flight ledger; 0 for none.
    pub origin: u64,
    /// Where its message holds text whose JSON string form is known, so the request body
    /// copies that instead of escaping it ([`crate::format::push_json_str_known`]).
    pub known: Option<KnownSpan>,
    /// The in-flight ledger's hash of its timestamp and message
    /// ([`super::ledger::content_hash`]), when it was taken while the text was just formatted;
    /// `None`: the ledger hashes it when it records the request.
    pub content: Option<u64>,
}

impl Pending {
    /// Bytes this event counts for in a request.
    pub fn cost(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

/// Accumulates one stream's events into valid requests.
#[derive(Debug)]
pub struct RequestBuilder {
    events: Vec<Pending>,
    bytes: usize,
    min_ts: i64,
    max_ts: i64,
    opened: Option<Instant>,
    max_events: usize,
    max_bytes: usize,
}

impl RequestBuilder {
    /// A builder cutting at `max_events` / `max_bytes` (clamped to CloudWatch's limits).
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        RequestBuilder {
            events: Vec::new(),
            bytes: 0,
            min_ts: i64::MAX,
            max_ts: i64::MIN,
            opened: None,
            max_events: max_events.clamp(1, MAX_REQUEST_EVENTS),
            max_bytes: max_bytes.clamp(EVENT_OVERHEAD + 1, MAX_REQUEST_BYTES),
        }
    }

    /// Adds an event (its message must be non-empty and at most [`MAX_MESSAGE_BYTES`]); returns
    /// the request that had to be cut first to make room, if any.
    pub fn push(&mut self, event: Pending) -> Option<Vec<Pending>> {
        let cost = event.cost();
        let ts = event.timestamp_ms;
        let cut = if self.events.is_empty() || self.fits(self.events.len(), self.bytes, cost, ts) {
            None
        } else {
            self.take_full(Some((cost, ts)))
        };
        if self.events.is_empty() {
            self.opened = Some(Instant::now());
        }
        self.bytes += cost;
        self.min_ts = self.min_ts.min(ts);
        self.max_ts = self.max_ts.max(ts);
        self.events.push(event);
        // A full request goes out now rather than waiting for the next event.
        if cut.is_none() && (self.events.len() >= self.max_events || self.bytes >= self.max_bytes) {
            return self.take_full(None);
        }
        cut
    }

    /// Whether a request of `len` events and `bytes` can take an event of `cost` at `ts`.
    fn fits(&self, len: usize, bytes: usize, cost: usize, ts: i64) -> bool {
        len < self.max_events
            && bytes + cost <= self.max_bytes
            && self.max_ts.max(ts).saturating_sub(self.min_ts.min(ts)) <= MAX_SPAN_MS
    }

    /// Takes the full request, keeping back the events of its last millisecond to start the
    /// next one when that millisecond is busy (it holds two events or more, or `next`, the
    /// event that did not fit, falls in it too), so the two requests share no timestamp: the
    /// sink may then send them at once (requests sharing a timestamp go one after the other,
    /// to keep equal timestamps in order), and a stream of many events per millisecond is not
    /// held to one request per round trip. Nothing is kept back when those events are more
    /// than half the request, or when the next request could not take them and `next`.
    fn take_full(&mut self, next: Option<(usize, i64)>) -> Option<Vec<Pending>> {
        let mut out = self.take()?;
        let last = out.last().map_or(i64::MIN, |p| p.timestamp_ms);
        let start = out.partition_point(|p| p.timestamp_ms < last);
        let tail = out.len() - start;
        let busy = tail >= 2 || next.is_some_and(|(_, ts)| ts == last);
        if start == 0 || !busy || tail > out.len() / 2 {
            return Some(out);
        }
        let tail_bytes: usize = out[start..].iter().map(Pending::cost).sum();
        self.min_ts = last;
        self.max_ts = last;
        if let Some((cost, ts)) = next {
            if !self.fits(tail, tail_bytes, cost, ts) {
                self.min_ts = i64::MAX;
                self.max_ts = i64::MIN;
                return Some(out);
            }
        }
        self.events.extend(out.drain(start..));
        self.bytes = tail_bytes;
        // Taken in last (the input is in order where this matters): they open the next
        // request now.
        self.opened = Some(Instant::now());
        Some(out)
    }

    /// The accumulated request, sorted by timestamp (stable, so equal timestamps keep arrival
    /// order); `None` when empty.
    pub fn take(&mut self) -> Option<Vec<Pending>> {
        if self.events.is_empty() {
            return None;
        }
        // The builder starts again from nothing: capacity kept for the next request was held
        // by every quiet stream (a hundred container streams kept 1,024 events' worth each).
        let mut out = std::mem::take(&mut self.events);
        if !out
            .windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
        {
            out.sort_by_key(|p| p.timestamp_ms);
        }
        // Held until the request's answer, so without the growth's headroom (up to half).
        out.shrink_to_fit();
        self.bytes = 0;
        self.min_ts = i64::MAX;
        self.max_ts = i64::MIN;
        self.opened = None;
        Some(out)
    }

    /// Bytes the events held now count against a request (messages + 26 each).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// When the oldest event still held was added.
    pub fn opened(&self) -> Option<Instant> {
        self.opened
    }

    /// The earliest and latest timestamp held; `None` when empty.
    pub fn span(&self) -> Option<(i64, i64)> {
        (!self.events.is_empty()).then_some((self.min_ts, self.max_ts))
    }

    /// How full the request is, 0..=1: by events or by bytes, whichever is fuller.
    pub fn fill(&self) -> f64 {
        (self.events.len() as f64 / self.max_events as f64)
            .max(self.bytes as f64 / self.max_bytes as f64)
    }

    /// Events held.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// A request cut from a [`StreamBatcher`]: sorted events and when the oldest was taken in.
#[derive(Debug)]
pub struct Cut {
    /// The events, sorted, valid.
    pub events: Vec<Pending>,
    /// When the builder took its first event.
    pub opened: Instant,
    /// How full it was, 0..=1.
    pub fill: f64,
}

/// One stream's requests being built, one per UTC day of their events' timestamps.
///
/// A request may not span more than 24 hours. Cutting one whenever an event would widen the
/// span past that sends out-of-order input (a backfill, journal files merged, a clock set
/// right) a handful of events at a time: 30,004 events spread over 30 hours took 4,407
/// requests. A request per UTC day keeps every span under 24 hours by construction; a stream
/// holds as many as the days it has events of (at most 15: older events are dead-lettered
/// before they get here), and each is cut only when full.
#[derive(Debug)]
pub struct StreamBatcher {
    days: Vec<(i64, RequestBuilder)>,
    max_events: usize,
    max_bytes: usize,
}

impl StreamBatcher {
    /// Requests of at most `max_events` / `max_bytes` (clamped to CloudWatch's limits).
    pub fn new(max_events: usize, max_bytes: usize) -> Self {
        StreamBatcher {
            days: Vec::new(),
            max_events,
            max_bytes,
        }
    }

    /// Adds an event; returns its day's request if that had to be cut (full).
    pub fn push(&mut self, event: Pending) -> Option<Cut> {
        let day = event.timestamp_ms.div_euclid(MAX_SPAN_MS);
        let i = match self.days.iter().position(|(d, _)| *d == day) {
            Some(i) => i,
            None => {
                let builder = RequestBuilder::new(self.max_events, self.max_bytes);
                self.days.push((day, builder));
                self.days.len() - 1
            }
        };
        let builder = &mut self.days[i].1;
        let opened = builder.opened();
        let events = builder.push(event)?;
        Some(Cut {
            events,
            opened: opened.unwrap_or_else(Instant::now),
            fill: 1.0,
        })
    }

    /// Bytes held by every day's request.
    pub fn bytes(&self) -> usize {
        self.days.iter().map(|(_, b)| b.bytes()).sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.days.iter().all(|(_, b)| b.is_empty())
    }

    /// The requests being built: (index for [`StreamBatcher::take`], opened, fill).
    pub fn open(&self) -> impl Iterator<Item = (usize, Instant, f64)> + '_ {
        self.days
            .iter()
            .enumerate()
            .filter_map(|(i, (_, b))| Some((i, b.opened()?, b.fill())))
    }

    /// The earliest and latest timestamp of the request at `index` (from
    /// [`StreamBatcher::open`]).
    pub fn span(&self, index: usize) -> Option<(i64, i64)> {
        self.days.get(index)?.1.span()
    }

    /// Takes the request at `index` (from [`StreamBatcher::open`]).
    pub fn take(&mut self, index: usize) -> Option<Cut> {
        let (_, builder) = self.days.get_mut(index)?;
        let (opened, fill) = (builder.opened()?, builder.fill());
        let events = builder.take()?;
        // Days without events are dropped; the index of the others may change.
        self.days.retain(|(_, b)| !b.is_empty());
        Some(Cut {
            events,
            opened,
            fill,
        })
    }

    /// Takes every request being built.
    pub fn take_all(&mut self) -> Vec<Cut> {
        std::mem::take(&mut self.days)
            .into_iter()
            .filter_map(|(_, mut builder)| {
                let (opened, fill) = (builder.opened()?, builder.fill());
                Some(Cut {
                    events: builder.take()?,
                    opened,
                    fill,
                })
            })
            .collect()
    }
}

/// Splits a message longer than `max` bytes into parts of at most `max` bytes each, cut at
/// character boundaries and prefixed `[part i/n] `; each part gets its own share of `ack`.
/// A message that fits is returned as is.
pub fn split_oversize(timestamp_ms: i64, message: String, ack: Ack, max: usize) -> Vec<Pending> {
    if message.len() <= max {
        return vec![Pending {
            timestamp_ms,
            message,
            ack,
            origin: 0,
            known: None,
            content: None,
        }];
    }
    // The prefix takes room from each part; 32 bytes covers `[part 99999/99999] `.
    let room = max.saturating_sub(32).max(4);
    let mut chunks = Vec::new();
    let mut rest = message.as_str();
    while !rest.is_empty() {
        let mut cut = rest.len().min(room);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        chunks.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    let n = chunks.len();
    let mut parts = Vec::with_capacity(n);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let part_ack = if i + 1 == n { None } else { Some(ack.fork()) };
        parts.push((format!("[part {}/{}] {}", i + 1, n, chunk), part_ack));
    }
    let mut last_ack = Some(ack);
    parts
        .into_iter()
        .map(|(message, a)| Pending {
            timestamp_ms,
            message,
            ack: a.or_else(|| last_ack.take()).unwrap_or_else(Ack::none),
            origin: 0,
            known: None,
            content: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::{AckBatch, AckStatus};
    use proptest::prelude::*;
    use tokio::sync::mpsc;

    fn p(ts: i64, len: usize) -> Pending {
        Pending {
            timestamp_ms: ts,
            message: "x".repeat(len.max(1)),
            ack: Ack::none(),
            origin: 0,
            known: None,
            content: None,
        }
    }

    fn check_request(req: &[Pending], max_events: usize, max_bytes: usize) {
        assert!(!req.is_empty());
        assert!(req.len() <= max_events.min(MAX_REQUEST_EVENTS));
        let bytes: usize = req.iter().map(Pending::cost).sum();
        assert!(bytes <= max_bytes.min(MAX_REQUEST_BYTES), "{bytes} bytes");
        assert!(req
            .windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        let span = req[req.len() - 1].timestamp_ms - req[0].timestamp_ms;
        assert!(span <= MAX_SPAN_MS);
        assert!(req
            .iter()
            .all(|e| !e.message.is_empty() && e.message.len() <= MAX_MESSAGE_BYTES));
    }

    /// Event `i` at `ts`: its message starts with `i` (8 digits) and fits in `room` bytes.
    fn numbered(i: usize, ts: i64, len: usize, room: usize) -> Pending {
        let mut e = p(ts, 1);
        e.message = format!("{i:08}{}", "x".repeat(len.saturating_sub(8)));
        e.message.truncate(room);
        e
    }

    /// Checks every request and returns the numbers of the events they carry, sorted.
    fn numbers_in(reqs: &[Vec<Pending>], max_events: usize, max_bytes: usize) -> Vec<usize> {
        let mut seen = Vec::new();
        for r in reqs {
            check_request(r, max_events, max_bytes);
            seen.extend(
                r.iter()
                    .map(|e| e.message[..8].parse::<usize>().unwrap_or(usize::MAX)),
            );
        }
        seen.sort_unstable();
        seen
    }

    #[test]
    fn cuts_at_event_count() {
        let mut b = RequestBuilder::new(10_000, MAX_REQUEST_BYTES);
        let mut out = Vec::new();
        for i in 0..25_000 {
            out.extend(b.push(p(i, 10)));
        }
        out.extend(b.take());
        assert_eq!(
            out.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10_000, 10_000, 5_000]
        );
    }

    #[test]
    fn cuts_at_bytes_and_span() {
        let mut b = RequestBuilder::new(10_000, MAX_REQUEST_BYTES);
        let big = MAX_REQUEST_BYTES / 2 - EVENT_OVERHEAD - 10;
        assert!(b.push(p(0, big)).is_none());
        assert!(b.push(p(0, big)).is_none());
        let first = b.push(p(0, 10)).expect("third does not fit");
        assert_eq!(first.len(), 2);
        let mut b = RequestBuilder::new(10_000, MAX_REQUEST_BYTES);
        assert!(b.push(p(0, 1)).is_none());
        assert!(b.push(p(MAX_SPAN_MS, 1)).is_none());
        assert_eq!(b.push(p(MAX_SPAN_MS + 1, 1)).map(|r| r.len()), Some(2));
    }

    #[test]
    fn out_of_order_input_is_sorted_and_span_checked_both_ways() {
        let mut b = RequestBuilder::new(10_000, MAX_REQUEST_BYTES);
        assert!(b.push(p(MAX_SPAN_MS, 1)).is_none());
        assert!(b.push(p(5, 1)).is_none());
        let cut = b.push(p(-1, 1)).expect("older event breaks the span");
        let ts: Vec<i64> = cut.iter().map(|e| e.timestamp_ms).collect();
        assert_eq!(ts, vec![5, MAX_SPAN_MS]);
    }

    #[test]
    fn oversize_split_keeps_every_byte_and_the_ack() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let batch = AckBatch::new(1, &tx);
        let msg: String = "é".repeat(1_500_000); // 3,000,000 bytes, multi-byte chars
        let parts = split_oversize(7, msg.clone(), batch.ack(), MAX_MESSAGE_BYTES);
        drop(batch);
        assert_eq!(parts.len(), 3);
        let mut joined = String::new();
        for (i, part) in parts.iter().enumerate() {
            assert!(part.message.len() <= MAX_MESSAGE_BYTES);
            let prefix = format!("[part {}/3] ", i + 1);
            joined.push_str(part.message.strip_prefix(&prefix).expect("numbered"));
        }
        assert_eq!(joined, msg);
        let mut parts = parts.into_iter();
        parts.next().expect("p1").ack.resolve(AckStatus::Delivered);
        parts.next().expect("p2").ack.resolve(AckStatus::Delivered);
        assert!(rx.try_recv().is_err(), "acked before the last part");
        parts.next().expect("p3").ack.resolve(AckStatus::Delivered);
        assert_eq!(rx.try_recv().expect("outcome").status, AckStatus::Delivered);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_request_is_valid_and_nothing_is_lost(
            events in prop::collection::vec((-(3 * MAX_SPAN_MS)..(3 * MAX_SPAN_MS), 1usize..200_000), 1..400),
            max_events in 1usize..12_000,
            max_bytes in 60usize..1_200_000,
        ) {
            let mut b = RequestBuilder::new(max_events, max_bytes);
            let mut reqs = Vec::new();
            let room = max_bytes.clamp(EVENT_OVERHEAD + 1, MAX_REQUEST_BYTES) - EVENT_OVERHEAD;
            for (i, (ts, len)) in events.iter().enumerate() {
                reqs.extend(b.push(numbered(i, *ts, *len, room)));
            }
            reqs.extend(b.take());
            prop_assert_eq!(numbers_in(&reqs, max_events, max_bytes), (0..events.len()).collect::<Vec<_>>());
        }

        /// The same contract through a stream's batcher, with input in any order over days:
        /// every request valid, nothing lost, and a request cut only when full: at most one
        /// partial request per day the events fall on.
        #[test]
        fn stream_batcher_groups_by_day_and_cuts_only_full_requests(
            // Some in a few busy milliseconds, where the last one's events are kept back.
            events in prop::collection::vec(
                (prop_oneof![-(3 * MAX_SPAN_MS)..(3 * MAX_SPAN_MS), 0i64..8], 1usize..50_000),
                1..600,
            ),
            max_events in 1usize..300,
            max_bytes in 60usize..400_000,
        ) {
            let mut b = StreamBatcher::new(max_events, max_bytes);
            let (max_events_c, max_bytes_c) = (
                max_events.clamp(1, MAX_REQUEST_EVENTS),
                max_bytes.clamp(EVENT_OVERHEAD + 1, MAX_REQUEST_BYTES),
            );
            let room = max_bytes_c - EVENT_OVERHEAD;
            let mut reqs = Vec::new();
            // Events pushed and not yet in a request: (number, timestamp, cost).
            let mut held: Vec<(usize, i64, usize)> = Vec::new();
            for (i, (ts, len)) in events.iter().enumerate() {
                let e = numbered(i, *ts, *len, room);
                let cost = e.cost();
                held.push((i, *ts, cost));
                if let Some(cut) = b.push(e) {
                    let numbers: std::collections::HashSet<usize> =
                        cut.events.iter().map(|e| e.message[..8].parse().unwrap_or(usize::MAX)).collect();
                    held.retain(|(n, _, _)| !numbers.contains(n));
                    // Full, counting the events of its last millisecond kept back for the next
                    // request (the day's events after the request's last timestamp).
                    let last = cut.events.last().map_or(0, |e| e.timestamp_ms);
                    let day = last.div_euclid(MAX_SPAN_MS);
                    let kept = |with_this: bool| {
                        held.iter()
                            .filter(|(n, t, _)| (with_this || *n != i) && *t > last && t.div_euclid(MAX_SPAN_MS) == day)
                            .fold((0, 0), |(k, b), (_, _, c)| (k + 1, b + c))
                    };
                    let sent = (cut.events.len(), cut.events.iter().map(Pending::cost).sum::<usize>());
                    // Cut before this event (it did not fit), or once full with it.
                    let (before, after) = (kept(false), kept(true));
                    let full_before = sent.0 + before.0 >= max_events_c || sent.1 + before.1 + cost > max_bytes_c;
                    let full_after = sent.0 + after.0 >= max_events_c || sent.1 + after.1 >= max_bytes_c;
                    prop_assert!(before.0 <= sent.0, "kept back more than it sent");
                    prop_assert!(
                        full_before || full_after,
                        "cut before full: {} events (+{} kept back), {} bytes", sent.0, before.0, sent.1
                    );
                    reqs.push(cut.events);
                }
            }
            let days: std::collections::BTreeSet<i64> =
                events.iter().map(|(ts, _)| ts.div_euclid(MAX_SPAN_MS)).collect();
            let partial = b.take_all();
            prop_assert!(partial.len() <= days.len());
            prop_assert!(b.is_empty() && b.bytes() == 0);
            reqs.extend(partial.into_iter().map(|c| c.events));
            prop_assert_eq!(numbers_in(&reqs, max_events, max_bytes), (0..events.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_busy_streams_requests_share_no_millisecond_so_they_can_go_at_once() {
        // 1,000 events per millisecond, as a journal backfill or a fast syslog peer sends.
        let mut b = StreamBatcher::new(10_000, MAX_REQUEST_BYTES);
        let mut reqs: Vec<Vec<Pending>> = Vec::new();
        for i in 0..95_500 {
            reqs.extend(b.push(p(i / 1000, 100)).map(|c| c.events));
        }
        reqs.extend(b.take_all().into_iter().map(|c| c.events));
        assert_eq!(reqs.iter().map(Vec::len).sum::<usize>(), 95_500);
        for pair in reqs.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            assert!(a[a.len() - 1].timestamp_ms < b[0].timestamp_ms);
        }
        // Each full but for the millisecond it keeps back (8,322 events fill 1 MiB).
        assert!(
            reqs[..reqs.len() - 1].iter().all(|r| r.len() >= 7_322),
            "{:?}",
            reqs.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn thirty_hours_out_of_order_fill_requests_by_day() {
        let hour = 3_600_000;
        let mut b = StreamBatcher::new(10_000, MAX_REQUEST_BYTES);
        let mut x = 7u64;
        let mut reqs = 0;
        for _ in 0..30_004 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            reqs += usize::from(b.push(p(((x >> 33) % (30 * hour)) as i64, 40)).is_some());
        }
        reqs += b.take_all().len();
        // 30,004 events over two UTC days: 2 + 1 full requests and 2 partial ones at most.
        assert!(reqs <= 5, "{reqs} requests");
    }
}
