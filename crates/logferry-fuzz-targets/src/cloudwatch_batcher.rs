//! PutLogEvents request building: `split_oversize` then `RequestBuilder`, as the sink does.
//!
//! Input layout: `[events sel][bytes sel][split sel]` then 4-byte ops `[op, d_lo, d_hi, n]`:
//! the timestamp moves by the signed 16-bit `d` in a unit chosen by `op` (ms, s, min, h, or a
//! jump to an extreme), the message length comes from `n` (small, or `n` * 8 KiB, which with
//! the 1 MiB limit makes oversize messages), its filler character (1 to 4 UTF-8 bytes) from
//! `op`, and `op` can repeat the event up to 10,838 times (to reach the 10,000-event cut; at most 12,000
//! parts are pushed per input).
//!
//! Invariants, for every request returned by `push` or the final `take`:
//! * 1..=10,000 events and at most the builder's `max_events`;
//! * at most 1,048,576 bytes counting 26 per event, and at most the builder's `max_bytes`
//!   when it holds more than one event;
//! * sorted by timestamp, spanning at most 24 h;
//! * no empty message, none longer than the split limit;
//! * and what comes out is what went in: for each timestamp, the sequence of messages out
//!   (oversize parts `[part i/n] ` joined back) equals the sequence of messages pushed.

use std::collections::BTreeMap;

use logferry::ack::Ack;
use logferry::sink::batch::{
    split_oversize, Pending, RequestBuilder, EVENT_OVERHEAD, MAX_MESSAGE_BYTES, MAX_REQUEST_BYTES,
    MAX_REQUEST_EVENTS, MAX_SPAN_MS,
};

/// Bytes of message text one input may generate (keeps an execution in milliseconds).
const TEXT_BUDGET: usize = 3 << 20;
/// Parts (events after splitting) one input may push: enough to pass the 10,000 cut once.
const PART_BUDGET: usize = 12_000;

struct Check {
    max_events: usize,
    max_bytes: usize,
    split_max: usize,
    /// Messages out, per timestamp, in order.
    out: BTreeMap<i64, Vec<String>>,
    requests: usize,
}

impl Check {
    fn request(&mut self, req: Vec<Pending>) {
        self.requests += 1;
        assert!(!req.is_empty(), "empty request");
        assert!(req.len() <= MAX_REQUEST_EVENTS, "{} events", req.len());
        assert!(
            req.len() <= self.max_events,
            "{} events > {}",
            req.len(),
            self.max_events
        );
        let bytes: usize = req.iter().map(|p| p.message.len() + EVENT_OVERHEAD).sum();
        assert!(bytes <= MAX_REQUEST_BYTES, "{bytes} bytes in a request");
        if req.len() > 1 {
            assert!(
                bytes <= self.max_bytes,
                "{bytes} bytes > builder max {}",
                self.max_bytes
            );
        }
        assert!(
            req.windows(2)
                .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms),
            "request not sorted"
        );
        let span = i128::from(req[req.len() - 1].timestamp_ms) - i128::from(req[0].timestamp_ms);
        assert!(span <= i128::from(MAX_SPAN_MS), "request spans {span} ms");
        for p in req {
            assert!(!p.message.is_empty(), "empty message");
            assert!(
                p.message.len() <= self.split_max,
                "message of {} bytes > split limit {}",
                p.message.len(),
                self.split_max
            );
            self.out.entry(p.timestamp_ms).or_default().push(p.message);
        }
    }
}

/// `[part i/n] rest` -> (i, n, rest).
fn part_prefix(m: &str) -> Option<(usize, usize, &str)> {
    let rest = m.strip_prefix("[part ")?;
    let (i, rest) = rest.split_once('/')?;
    let (n, rest) = rest.split_once("] ")?;
    Some((i.parse().ok()?, n.parse().ok()?, rest))
}

/// One input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let max_events = match data[0] {
        0..=127 => MAX_REQUEST_EVENTS,
        b => 1 + usize::from(b - 128) * 80,
    };
    let max_bytes = match data[1] {
        // The config's range is 1024..=1_048_576.
        0..=127 => MAX_REQUEST_BYTES,
        b => 1024 + usize::from(b - 128) * 8192,
    };
    let split_max = match data[2] {
        0..=127 => MAX_MESSAGE_BYTES,
        // Small limits exercise splitting cheaply (the prefix takes up to 32 bytes).
        b => 36 + usize::from(b - 128) * 4,
    };
    let mut builder = RequestBuilder::new(max_events, max_bytes);
    let mut check = Check {
        max_events,
        max_bytes,
        split_max,
        out: BTreeMap::new(),
        requests: 0,
    };
    let mut inp: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    let mut ts: i64 = 1_700_000_000_000;
    let mut budget = TEXT_BUDGET;
    let mut idx = 0usize;
    let mut pushed = 0usize;

    for op in data[3..].chunks_exact(4) {
        let (kind, d, n) = (op[0], i64::from(i16::from_le_bytes([op[1], op[2]])), op[3]);
        ts = match kind & 7 {
            0 | 1 => ts.saturating_add(d),
            2 => ts.saturating_add(d * 1000),
            3 => ts.saturating_add(d * 60_000),
            4 => ts.saturating_add(d * 3_600_000),
            5 => [i64::MIN, i64::MAX, 0, -1][usize::from(op[1] & 3)],
            _ => ts,
        };
        let filler = ['a', 'é', '€', '𝄞'][usize::from(kind >> 3 & 3)];
        let len = if kind & 0x20 != 0 {
            // Oversize for the real limit; with a small split limit, a few dozen parts at most
            // (a 2 MB message in 36-byte parts would be all this input does).
            usize::from(n)
                * if split_max == MAX_MESSAGE_BYTES {
                    8192
                } else {
                    4
                }
        } else {
            usize::from(n % 64)
        };
        // Quadratic, so that most repeats are short and a few pass 10,000 (n >= 245).
        let repeat = if kind & 0xc0 == 0xc0 {
            1 + usize::from(n).pow(2) / 6
        } else {
            1
        };
        for _ in 0..repeat {
            let mut message = format!("e{idx}:");
            idx += 1;
            let chars = len / filler.len_utf8();
            if message.len() + chars * filler.len_utf8() > budget || pushed > PART_BUDGET {
                break;
            }
            // `repeat` copies in bulk; pushing char by char is slow under coverage tracing.
            message.push_str(&filler.to_string().repeat(chars));
            budget -= message.len();
            inp.entry(ts).or_default().push(message.clone());
            for part in split_oversize(ts, message, Ack::none(), split_max) {
                pushed += 1;
                if let Some(req) = builder.push(part) {
                    check.request(req);
                }
            }
        }
        if budget < 64 || pushed > PART_BUDGET {
            break;
        }
    }
    if let Some(req) = builder.take() {
        check.request(req);
    }
    assert!(builder.is_empty() && builder.take().is_none());

    // Join the parts back, per timestamp (parts of one event are pushed consecutively and
    // sorting is stable, so per timestamp the order out is the order pushed).
    let mut joined: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (ts, msgs) in std::mem::take(&mut check.out) {
        let dst = joined.entry(ts).or_default();
        let mut it = msgs.into_iter();
        while let Some(m) = it.next() {
            match part_prefix(&m) {
                Some((1, n, first)) => {
                    assert!(n >= 2, "a split into {n} part: {m:?}");
                    let mut whole = first.to_string();
                    for k in 2..=n {
                        let p = it.next().unwrap_or_else(|| panic!("part {k}/{n} missing"));
                        let (i, n2, rest) = part_prefix(&p)
                            .unwrap_or_else(|| panic!("expected part {k}/{n}: {p:?}"));
                        assert_eq!((i, n2), (k, n), "parts out of order");
                        whole.push_str(rest);
                    }
                    dst.push(whole);
                }
                Some(_) => panic!("part without its first part: {m:?}"),
                None => dst.push(m),
            }
        }
    }
    assert_eq!(joined, inp, "messages out differ from messages in");
}
