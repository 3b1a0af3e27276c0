//! The position keeper of the sources that can read again (journal, files): it collects
//! acknowledgement outcomes and saves the source's position, only ever on the acknowledgement
//! watermark.
//!
//! A source's reader thread registers each batch, before its events leave, with the position
//! to save once it is delivered; the sinks' outcomes arrive on another channel, in completion
//! order. The source's [`Books`] move a [`Watermark`](crate::ack::Watermark) (one, or one per
//! file) over them, so the position never passes a batch that is not finished, nor a failed
//! one: a failed batch holds it until restart and its events are read again.
//!
//! [`Keeper::run`] is the loop both sources share: it rewrites the state file with
//! write-temp + fsync + rename ([`crate::state::save_atomic`]) at most every `every` (what was
//! delivered since the last save is sent again after a crash, so this bounds duplicates by
//! time), once more when both channels close, and never in a dry run (`logferry tail` reads
//! from the saved positions but must not move them).
//!
//! A save that fails (data_dir full or read-only, an I/O error) leaves the old state file
//! whole (the new one is written aside and renamed over it only once fsynced): the position on
//! disk stays behind, never ahead, and what was delivered since is sent again after a restart,
//! never lost. The save is tried again every `every` until it succeeds, with or without new
//! input; the first failure of an episode is logged at error level, its end at info, and every
//! failure counted (`logferry_source_state_save_failures_total`).

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::ack::{BatchOutcome, Watermark};
use crate::source::stats::SourceStats;

/// A source's acknowledgement bookkeeping: what it registers, and what it saves.
pub trait Books {
    /// What the reader tells the keeper (at least: a batch and the position after it).
    type Registration;
    /// Applies a registration; `true` if the position to save changed.
    fn register(&mut self, registration: Self::Registration) -> bool;
    /// Applies a batch's outcome; `true` if the position to save changed.
    fn complete(&mut self, outcome: BatchOutcome) -> bool;
    /// The state file's new content; `None` while there is nothing to save.
    fn encode(&self) -> Option<Vec<u8>>;
    /// Whether a failed batch holds a position back (its events are read again on restart).
    fn is_stuck(&self) -> bool;
}

/// Books for a source with one position (the journal's cursor): the newest on one watermark.
pub struct Single<P> {
    watermark: Watermark<P>,
    latest: Option<P>,
    encode: fn(&P) -> Vec<u8>,
}

impl<P> Single<P> {
    /// Books whose state file holds `encode(position)`.
    pub fn new(encode: fn(&P) -> Vec<u8>) -> Self {
        Single {
            watermark: Watermark::default(),
            latest: None,
            encode,
        }
    }

    fn moved(&mut self, to: Option<P>) -> bool {
        let moved = to.is_some();
        if moved {
            self.latest = to;
        }
        moved
    }
}

impl<P> Books for Single<P> {
    type Registration = (u64, P);

    fn register(&mut self, (id, position): (u64, P)) -> bool {
        let to = self.watermark.push(id, position);
        self.moved(to)
    }

    fn complete(&mut self, outcome: BatchOutcome) -> bool {
        let to = self.watermark.complete(outcome);
        self.moved(to)
    }

    fn encode(&self) -> Option<Vec<u8>> {
        self.latest.as_ref().map(self.encode)
    }

    fn is_stuck(&self) -> bool {
        self.watermark.is_stuck()
    }
}

/// Where and how often a source saves its positions.
pub struct Keeper {
    /// The state file.
    pub path: PathBuf,
    /// Shortest time between two saves.
    pub every: Duration,
    /// Never write the state file (`logferry tail`).
    pub dry_run: bool,
    /// What the state file holds, for logs: "cursor", "file positions".
    pub what: &'static str,
    /// The source's counters (failed saves).
    pub stats: Arc<SourceStats>,
}

impl Keeper {
    /// Starts `reader` on a thread of its own named `thread`, handing it the sending ends of
    /// the outcome and registration channels; keeps `books` until both close; joins the thread.
    pub async fn run_reader<B, F>(&self, thread: String, mut books: B, reader: F)
    where
        B: Books,
        B::Registration: Send + 'static,
        F: FnOnce(UnboundedSender<BatchOutcome>, UnboundedSender<B::Registration>) + Send + 'static,
    {
        let (outcome_tx, outcomes) = mpsc::unbounded_channel();
        let (register_tx, registrations) = mpsc::unbounded_channel();
        // The thread logs in the source's span, as its tasks do.
        let span = tracing::Span::current();
        let spawned = std::thread::Builder::new().name(thread).spawn(move || {
            let _in_source = span.enter();
            reader(outcome_tx, register_tx)
        });
        let reader = match spawned {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the reader thread");
                return;
            }
        };
        self.run(&mut books, registrations, outcomes).await;
        let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    }

    /// Collects registrations and outcomes until both channels are closed (the reader is gone
    /// and the sinks have dropped every batch), saving on the watermark as it moves.
    pub async fn run<B: Books>(
        &self,
        books: &mut B,
        mut registrations: UnboundedReceiver<B::Registration>,
        mut outcomes: UnboundedReceiver<BatchOutcome>,
    ) {
        let mut saved_at = Instant::now();
        let mut dirty = false;
        let (mut reg_open, mut out_open) = (true, true);
        while reg_open || out_open {
            // Armed only while a newer position waits for the save interval to pass.
            let save_due = tokio::time::Instant::from_std(saved_at + self.every);
            tokio::select! {
                // Registrations first: an outcome then rarely overtakes its batch's
                // registration (the books cope when it does).
                biased;
                r = registrations.recv(), if reg_open => match r {
                    Some(r) => dirty |= books.register(r),
                    None => reg_open = false,
                },
                o = outcomes.recv(), if out_open => match o {
                    Some(o) => dirty |= books.complete(o),
                    None => out_open = false,
                },
                _ = tokio::time::sleep_until(save_due), if dirty => {}
            }
            if dirty && saved_at.elapsed() >= self.every {
                // A failed save stays due: tried again after `every`, new input or not.
                dirty = !self.save(books.encode()).await;
                saved_at = Instant::now();
            }
        }
        if dirty {
            self.save(books.encode()).await;
        }
        if books.is_stuck() {
            tracing::warn!("some input was not delivered; it will be read again on restart");
        }
    }

    /// Writes the state file now (atomically); nothing in a dry run or without content.
    /// Returns whether the file holds `content` now (true when there was nothing to write).
    pub async fn save(&self, content: Option<Vec<u8>>) -> bool {
        let Some(content) = content.filter(|_| !self.dry_run) else {
            return true;
        };
        let what = self.what;
        let path = self.path.clone();
        let r = tokio::task::spawn_blocking(move || crate::state::save_atomic(&path, &content));
        let error = match r.await {
            Ok(Ok(())) => {
                tracing::trace!("{what} saved");
                if self.stats.state_save_failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "the {what} can be saved again");
                }
                return true;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("the writer failed: {e}"),
        };
        self.stats
            .state_save_failures
            .fetch_add(1, Ordering::Relaxed);
        if !self.stats.state_save_failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %self.path.display(),
                error = %error,
                "cannot save the {what}; the saved one stays behind (what was delivered since \
                 is sent again after a restart) and the save is retried until it succeeds"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::AckStatus;

    type One = Single<u64>;

    fn one() -> One {
        Single::new(|p| p.to_string().into_bytes())
    }

    fn keeper(path: PathBuf, dry_run: bool) -> Keeper {
        Keeper {
            path,
            every: Duration::from_millis(5),
            dry_run,
            what: "position",
            stats: Arc::default(),
        }
    }

    fn done(batch_id: u64, status: AckStatus) -> BatchOutcome {
        BatchOutcome { batch_id, status }
    }

    /// Runs the keeper over registrations and outcomes that are all queued up front.
    async fn keep(k: &Keeper, regs: &[(u64, u64)], outs: &[BatchOutcome]) -> One {
        let (reg_tx, reg_rx) = mpsc::unbounded_channel();
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        for r in regs {
            reg_tx.send(*r).expect("send");
        }
        for o in outs {
            out_tx.send(*o).expect("send");
        }
        drop((reg_tx, out_tx));
        let mut books = one();
        k.run(&mut books, reg_rx, out_rx).await;
        books
    }

    #[tokio::test]
    async fn saves_the_watermark_never_past_an_unfinished_or_failed_batch() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pos");
        let k = keeper(path.clone(), false);
        let regs = [(1, 10), (2, 20), (3, 30), (4, 40)];
        // Batch 3 failed: 4's delivery must not move the position past it.
        let outs = [
            done(2, AckStatus::Delivered),
            done(1, AckStatus::Delivered),
            done(4, AckStatus::Delivered),
            done(3, AckStatus::Failed),
        ];
        let books = keep(&k, &regs, &outs).await;
        assert!(books.is_stuck());
        let saved = crate::state::load(&path).expect("load");
        assert_eq!(saved.as_deref(), Some("20"));
    }

    #[tokio::test]
    async fn an_undelivered_first_batch_saves_nothing() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pos");
        let k = keeper(path.clone(), false);
        keep(&k, &[(1, 10), (2, 20)], &[done(2, AckStatus::Delivered)]).await;
        assert_eq!(crate::state::load(&path).expect("load"), None);
    }

    #[tokio::test]
    async fn a_dry_run_never_writes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("pos");
        let k = keeper(path.clone(), true);
        let books = keep(&k, &[(1, 10)], &[done(1, AckStatus::Delivered)]).await;
        assert_eq!(books.latest, Some(10), "the books still move");
        k.save(Some(b"5".to_vec())).await;
        assert_eq!(crate::state::load(&path).expect("load"), None);
    }
}
