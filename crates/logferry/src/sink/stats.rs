//! Counters for a sink: the books that must balance.
//!
//! Every event a sink takes in ends in exactly one of delivered, dead-lettered (by reason) or
//! dropped (by reason), or is still held: `received == delivered + dead_lettered + dropped +
//! held`. Plain atomics, updated per request rather than per event where possible, so keeping
//! the books costs nothing measurable. The metrics endpoint and the shutdown summary read them.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::dead_letter::Reason;
use super::retry::AuthEpisode;

/// One sink's counters.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events taken from sources (before splitting oversize ones).
    pub events_received: AtomicU64,
    /// Events CloudWatch accepted (parts of split events count once each).
    pub events_delivered: AtomicU64,
    /// Bytes CloudWatch bills for the delivered events (message bytes + 26 each).
    pub bytes_delivered: AtomicU64,
    /// Dead-lettered because too old.
    pub dead_too_old: AtomicU64,
    /// Dead-lettered because too new.
    pub dead_too_new: AtomicU64,
    /// Dead-lettered because older than retention.
    pub dead_expired: AtomicU64,
    /// Dead-lettered after an InvalidParameterException isolated them.
    pub dead_invalid: AtomicU64,
    /// Dropped because the message was empty (CloudWatch refuses empty messages).
    pub dropped_empty: AtomicU64,
    /// Extra events created by splitting oversize messages into parts.
    pub split_parts: AtomicU64,
    /// Requests sent before they were full because the sink's held bytes reached
    /// `max_held_bytes` with most of them in requests being built.
    pub budget_flushes: AtomicU64,
    /// PutLogEvents requests sent (attempts).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// ThrottlingException answers, every API together.
    pub throttled: AtomicU64,
    /// PutLogEvents calls throttled.
    pub throttled_put_log_events: AtomicU64,
    /// CreateLogStream calls throttled.
    pub throttled_create_log_stream: AtomicU64,
    /// CreateLogGroup calls throttled.
    pub throttled_create_log_group: AtomicU64,
    /// The governors' current pace, in thousandths of a call per second.
    pub rate_put_log_events_milli: AtomicU64,
    /// CreateLogStream's pace, in thousandths of a call per second.
    pub rate_create_log_stream_milli: AtomicU64,
    /// CreateLogGroup's pace, in thousandths of a call per second.
    pub rate_create_log_group_milli: AtomicU64,
    /// Time requests ready to go waited for the governor's budget, µs.
    pub budget_wait_us: AtomicU64,
    /// Whether a ready request is waiting for budget right now (normal under a quota).
    pub waiting_for_budget: AtomicBool,
    /// When a ready request last had to wait for budget (Unix ms; 0 = never).
    pub last_budget_wait_ms: AtomicI64,
    /// Events per accepted PutLogEvents request (cumulative buckets of
    /// [`EVENTS_PER_REQUEST_BUCKETS`]).
    pub events_per_request_buckets: [AtomicU64; EVENTS_PER_REQUEST_BUCKETS.len()],
    /// Sum of events over accepted requests.
    pub events_per_request_sum: AtomicU64,
    /// Accepted requests.
    pub events_per_request_count: AtomicU64,
    /// Retries after a failure that may have been ingested anyway (timeouts, lost responses):
    /// the only source of duplicates.
    pub ambiguous_resends: AtomicU64,
    /// Events read again after a crash and acknowledged without sending: their request was
    /// known to be in CloudWatch (also counted in `events_delivered`).
    pub events_skipped_delivered: AtomicU64,
    /// Requests in flight at the last stop that GetLogEvents proved delivered (not resent).
    pub settle_settled: AtomicU64,
    /// Requests in flight at the last stop that were not found whole (resent).
    pub settle_resent: AtomicU64,
    /// Requests in flight at the last stop whose lookup was denied, failed or timed out
    /// (resent).
    pub settle_unknown: AtomicU64,
    /// GetLogEvents calls made to settle them.
    pub settle_calls: AtomicU64,
    /// Log groups created.
    pub groups_created: AtomicU64,
    /// Log streams created.
    pub streams_created: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
    /// Bytes the sink holds now (messages + 26 each): being built, ready and in flight.
    pub held_bytes: AtomicU64,
    /// The most `held_bytes` has been since start.
    pub held_bytes_peak: AtomicU64,
    /// Age of the oldest event the sink holds, in ms (0 when none), refreshed every tick.
    pub oldest_held_age_ms: AtomicU64,
    /// When CloudWatch last accepted a request (Unix ms; 0 = never).
    pub last_success_ms: AtomicI64,
    /// When CloudWatch last answered anything, success or error (Unix ms; 0 = never).
    pub last_answer_ms: AtomicI64,
    /// PutLogEvents latency histogram (cumulative buckets of [`LATENCY_BUCKETS`]).
    pub latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    /// Sum of PutLogEvents latencies, µs.
    pub latency_sum_us: AtomicU64,
    /// PutLogEvents calls timed.
    pub latency_count: AtomicU64,
    /// Failed attempts at writing the dead-letter file (each retried).
    pub dead_letter_write_failures: AtomicU64,
    /// Whether the dead-letter file cannot be written now.
    pub dead_letter_failing: AtomicBool,
    /// Calls CloudWatch refused for their credentials or permissions (every API).
    pub auth_refused: AtomicU64,
    /// Whether CloudWatch refuses the credentials now (see [`AuthEpisode`]).
    pub auth: AuthEpisode,
    /// The last failure, for health reports (never contains credentials).
    pub last_error: Mutex<String>,
    /// Requests whose entity CloudWatch refused (`rejectedEntityInfo`; their events were
    /// accepted), by CloudWatch's error type.
    pub entity_rejected: Mutex<std::collections::BTreeMap<String, u64>>,
}

/// Upper bounds of the events-per-request histogram's buckets.
pub const EVENTS_PER_REQUEST_BUCKETS: [f64; 8] =
    [1.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0];

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl SinkStats {
    /// Adds to a dead-letter counter.
    pub fn dead_lettered(&self, reason: Reason, n: u64) {
        let c = match reason {
            Reason::TooOld => &self.dead_too_old,
            Reason::TooNew => &self.dead_too_new,
            Reason::Expired => &self.dead_expired,
            Reason::InvalidParameter => &self.dead_invalid,
        };
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// Records one PutLogEvents call's latency.
    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }

    /// Records how many events an accepted PutLogEvents request carried.
    pub fn observe_events_per_request(&self, n: usize) {
        for (i, bound) in EVENTS_PER_REQUEST_BUCKETS.iter().enumerate() {
            if n as f64 <= *bound {
                self.events_per_request_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.events_per_request_sum
            .fetch_add(n as u64, Ordering::Relaxed);
        self.events_per_request_count
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request whose entity CloudWatch refused, for `error_type`.
    pub fn entity_rejected(&self, error_type: &str) {
        if let Ok(mut by_type) = self.entity_rejected.lock() {
            *by_type.entry(error_type.to_string()).or_default() += 1;
        }
    }

    /// Remembers the last failure.
    pub fn set_error(&self, e: &str) {
        if let Ok(mut g) = self.last_error.lock() {
            g.clear();
            g.push_str(e);
        }
    }

    /// All dead-lettered events.
    pub fn dead_total(&self) -> u64 {
        self.dead_too_old.load(Ordering::Relaxed)
            + self.dead_too_new.load(Ordering::Relaxed)
            + self.dead_expired.load(Ordering::Relaxed)
            + self.dead_invalid.load(Ordering::Relaxed)
    }
}
