//! Counters for a sink: the books that must balance.
//!
//! Every event a sink takes in ends in exactly one of delivered, dead-lettered (by reason) or
//! dropped (by reason), or is still held: `received == delivered + dead_lettered + dropped +
//! held`. Plain atomics, updated per request rather than per event where possible, so keeping
//! the books costs nothing measurable. The metrics endpoint and the shutdown summary read them.

use std::sync::atomic::{AtomicU64, Ordering};

use super::dead_letter::Reason;

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
    /// PutLogEvents requests sent (attempts).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// ThrottlingException answers.
    pub throttled: AtomicU64,
    /// Retries after a failure that may have been ingested anyway (timeouts, lost responses):
    /// the only source of duplicates.
    pub ambiguous_resends: AtomicU64,
    /// Log groups created.
    pub groups_created: AtomicU64,
    /// Log streams created.
    pub streams_created: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicU64,
}

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

    /// All dead-lettered events.
    pub fn dead_total(&self) -> u64 {
        self.dead_too_old.load(Ordering::Relaxed)
            + self.dead_too_new.load(Ordering::Relaxed)
            + self.dead_expired.load(Ordering::Relaxed)
            + self.dead_invalid.load(Ordering::Relaxed)
    }
}
