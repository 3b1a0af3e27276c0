//! End-to-end acknowledgements: how a source learns that the events it read are safe.
//!
//! A source groups the events it reads into *batches* (one TCP read, one journal chunk,
//! one spool read). It creates an [`AckBatch`] for each, and every event of that batch carries
//! an [`Ack`] clone. The sink *resolves* each event's `Ack` once CloudWatch has accepted the
//! event ([`AckStatus::Delivered`]) or the event has been written to the dead-letter file
//! ([`AckStatus::DeadLettered`]). When the last `Ack` of a batch is gone, the source receives one
//! [`BatchOutcome`] on its channel.
//!
//! The design is deliberately pessimistic: an `Ack` that is dropped without being resolved (a
//! sink that shut down with the event still buffered, a task that panicked) marks its whole batch
//! [`AckStatus::Failed`]. A source must never advance its position past a failed batch; it reads
//! those events again after a restart. This is what makes "position advances only after
//! delivery" hold even on paths nobody thought about.
//!
//! Outcomes arrive in completion order, not read order: sinks send requests in parallel. Sources
//! that keep a position (journal cursor, file offset, spool record id) use [`Watermark`] to move
//! it only over the longest prefix of finished batches.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// The fate of an event (or, aggregated, of a batch). Ordered from best to worst so that the
/// aggregate of a batch is the maximum of its events' statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum AckStatus {
    /// CloudWatch accepted it.
    Delivered = 0,
    /// It can never be accepted and was written to the dead-letter file with the reason, or
    /// dropped by an explicit, counted policy. Either way the source may move past it.
    DeadLettered = 1,
    /// Not delivered: the source must not move past it.
    Failed = 2,
}

impl AckStatus {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => AckStatus::Delivered,
            1 => AckStatus::DeadLettered,
            _ => AckStatus::Failed,
        }
    }

    /// Whether a source may advance its position past an event with this status.
    pub fn is_final(self) -> bool {
        self != AckStatus::Failed
    }
}

/// What a source receives once every event of one of its batches is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchOutcome {
    /// The id the source gave the batch in [`AckBatch::new`].
    pub batch_id: u64,
    /// The worst status of any event of the batch.
    pub status: AckStatus,
}

struct Shared {
    batch_id: u64,
    status: AtomicU8,
    outcomes: mpsc::UnboundedSender<BatchOutcome>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let status = AckStatus::from_u8(self.status.load(Ordering::Acquire));
        // A closed receiver means the source is gone; nobody is left to care.
        let _ = self.outcomes.send(BatchOutcome {
            batch_id: self.batch_id,
            status,
        });
    }
}

/// The source side of a batch: hands out one [`Ack`] per event.
///
/// Dropping the `AckBatch` itself is fine; the outcome is sent when the last [`Ack`] (or the
/// `AckBatch`, if no event was attached) is dropped.
pub struct AckBatch {
    shared: Arc<Shared>,
}

impl AckBatch {
    /// Starts a batch whose outcome will be sent to `outcomes` under `batch_id`.
    pub fn new(batch_id: u64, outcomes: &mpsc::UnboundedSender<BatchOutcome>) -> Self {
        AckBatch {
            shared: Arc::new(Shared {
                batch_id,
                status: AtomicU8::new(AckStatus::Delivered as u8),
                outcomes: outcomes.clone(),
            }),
        }
    }

    /// A token for one event of this batch.
    pub fn ack(&self) -> Ack {
        Ack {
            shared: Some(self.shared.clone()),
            resolved: false,
        }
    }
}

/// One event's acknowledgement token. Resolve it with [`Ack::resolve`]; dropping it unresolved
/// fails its batch.
pub struct Ack {
    shared: Option<Arc<Shared>>,
    resolved: bool,
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.shared {
            Some(s) => write!(f, "Ack(batch {})", s.batch_id),
            None => f.write_str("Ack(none)"),
        }
    }
}

impl Ack {
    /// A token nobody listens to, for events whose source keeps no position.
    pub fn none() -> Self {
        Ack {
            shared: None,
            resolved: true,
        }
    }

    /// Another token for the same batch, for an event that became several (an oversize message
    /// split into parts): the batch is done only when every token is resolved.
    pub fn fork(&self) -> Ack {
        Ack {
            shared: self.shared.clone(),
            resolved: self.shared.is_none(),
        }
    }

    /// Records the event's fate.
    pub fn resolve(mut self, status: AckStatus) {
        self.set(status);
    }

    fn set(&mut self, status: AckStatus) {
        if let Some(shared) = &self.shared {
            shared.status.fetch_max(status as u8, Ordering::AcqRel);
        }
        self.resolved = true;
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.resolved {
            self.set(AckStatus::Failed);
        }
    }
}

/// Tracks batches in read order and tells how far a source's position may advance.
///
/// Each batch is registered with the position just *after* its last event. Outcomes may arrive
/// in any order; the watermark only moves over a prefix of batches that all finished with a
/// final status. A failed batch stops the watermark for good (until restart), which is the
/// point: its events will be read again.
#[derive(Debug)]
pub struct Watermark<P> {
    pending: VecDeque<(u64, P, Option<AckStatus>)>,
    /// Outcomes that arrived before their batch was registered (the source registers a batch
    /// and sends its events from another thread than the one collecting outcomes).
    early: std::collections::HashMap<u64, AckStatus>,
    stuck: bool,
}

impl<P> Default for Watermark<P> {
    fn default() -> Self {
        Watermark {
            pending: VecDeque::new(),
            early: std::collections::HashMap::new(),
            stuck: false,
        }
    }
}

impl<P> Watermark<P> {
    /// Registers a batch (ids must increase) ending at `position_after`.
    pub fn push(&mut self, batch_id: u64, position_after: P) -> Option<P> {
        let status = self.early.remove(&batch_id);
        self.pending.push_back((batch_id, position_after, status));
        self.advance()
    }

    /// Records an outcome; returns the new position if the watermark moved.
    pub fn complete(&mut self, outcome: BatchOutcome) -> Option<P> {
        // Batches complete roughly in order, so a linear scan from the front is short.
        match self
            .pending
            .iter_mut()
            .find(|(id, _, _)| *id == outcome.batch_id)
        {
            Some(slot) => slot.2 = Some(outcome.status),
            None => {
                self.early.insert(outcome.batch_id, outcome.status);
            }
        }
        self.advance()
    }

    fn advance(&mut self) -> Option<P> {
        let mut advanced = None;
        while !self.stuck {
            match self.pending.front() {
                Some((_, _, Some(status))) if status.is_final() => {
                    advanced = self.pending.pop_front().map(|(_, p, _)| p);
                }
                Some((_, _, Some(_))) => self.stuck = true,
                _ => break,
            }
        }
        advanced
    }

    /// Batches not yet resolved (or stuck behind a failure).
    pub fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// Whether a failed batch blocks the watermark.
    pub fn is_stuck(&self) -> bool {
        self.stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of two events handed out (the source's handle dropped), the first delivered:
    /// the outcome now waits on the second event's `Ack` alone.
    fn second_event_pending(batch_id: u64) -> (Ack, mpsc::UnboundedReceiver<BatchOutcome>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let batch = AckBatch::new(batch_id, &tx);
        let (first, second) = (batch.ack(), batch.ack());
        drop(batch);
        first.resolve(AckStatus::Delivered);
        (second, rx)
    }

    #[test]
    fn outcome_is_worst_status_and_sent_once() {
        let (last, mut rx) = second_event_pending(7);
        assert!(rx.try_recv().is_err(), "outcome before all events resolved");
        last.resolve(AckStatus::DeadLettered);
        let out = rx.try_recv().expect("outcome");
        assert_eq!(out.batch_id, 7);
        assert_eq!(out.status, AckStatus::DeadLettered);
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn dropping_unresolved_fails_the_batch() {
        let (last, mut rx) = second_event_pending(1);
        drop(last);
        assert_eq!(rx.try_recv().expect("outcome").status, AckStatus::Failed);
    }

    #[test]
    fn watermark_moves_over_finished_prefix_only() {
        let mut w = Watermark::default();
        for id in 1..=4 {
            assert_eq!(w.push(id, id * 10), None);
        }
        let done = |batch_id, status| BatchOutcome { batch_id, status };
        assert_eq!(w.complete(done(2, AckStatus::Delivered)), None);
        assert_eq!(w.complete(done(1, AckStatus::Delivered)), Some(20));
        assert_eq!(w.complete(done(4, AckStatus::DeadLettered)), None);
        assert_eq!(w.complete(done(3, AckStatus::Delivered)), Some(40));
        assert_eq!(w.outstanding(), 0);
    }

    #[test]
    fn outcome_before_registration_counts() {
        let mut w = Watermark::default();
        let done = |batch_id| BatchOutcome {
            batch_id,
            status: AckStatus::Delivered,
        };
        assert_eq!(w.complete(done(1)), None);
        assert_eq!(w.push(1, "a"), Some("a"));
        assert_eq!(w.push(2, "b"), None);
        assert_eq!(w.complete(done(2)), Some("b"));
    }

    #[test]
    fn failed_batch_stops_the_watermark() {
        let mut w = Watermark::default();
        w.push(1, 1);
        w.push(2, 2);
        w.push(3, 3);
        assert_eq!(w.outstanding(), 3);
        let done = |batch_id, status| BatchOutcome { batch_id, status };
        assert_eq!(w.complete(done(2, AckStatus::Failed)), None);
        assert_eq!(w.complete(done(1, AckStatus::Delivered)), Some(1));
        assert_eq!(w.complete(done(3, AckStatus::Delivered)), None);
        assert!(w.is_stuck());
    }
}
