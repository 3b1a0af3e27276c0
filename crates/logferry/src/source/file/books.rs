//! The file source's acknowledgement books: every open file's delivered position, moved on a
//! [`Watermark`] of its own over the batches read from it.
//!
//! One watermark per file, not one for the source: a file whose batch is slow or failed holds
//! back its own position only, never another file's.
//!
//! A batch's outcome names the batch, not its file; the file is known from the batch's
//! registration. The reader registers a batch before its events leave, but on another channel
//! than the outcomes, so an outcome may still overtake its registration: it waits in `early`
//! until the registration says which file's watermark it belongs to. (Each [`Watermark`] has a
//! map of early outcomes too; it serves a source with one watermark, and is never used here,
//! since an outcome reaches a file's watermark only after its batch is registered there.)
//!
//! A file's entry exists from the moment it is opened (so `start = "end"` is not re-evaluated
//! for it after a restart) until it is closed and everything read from it is delivered.

use std::collections::HashMap;

use logferry_tail::tailer::{FileId, SavedPosition};

use super::checkpoint;
use crate::ack::{AckStatus, BatchOutcome, Watermark};
use crate::source::positions;

/// What the reader tells the books.
#[derive(Debug)]
pub(super) enum Registration {
    /// A file was opened at this position: its entry exists from now on.
    Opened(FileId, SavedPosition),
    /// Batch `id` holds lines of this file; once delivered, the position may move here.
    Batch(u64, FileId, SavedPosition),
    /// The file is closed: drop its entry once everything read from it is delivered.
    Closed(FileId),
}

/// Every file's delivered position.
#[derive(Default)]
pub(super) struct Books {
    files: HashMap<FileId, Tracked>,
    batch_file: HashMap<u64, FileId>,
    /// Outcomes that overtook their registration.
    early: HashMap<u64, AckStatus>,
}

struct Tracked {
    watermark: Watermark<SavedPosition>,
    delivered: SavedPosition,
    closed: bool,
}

impl positions::Books for Books {
    type Registration = Registration;

    fn register(&mut self, r: Registration) -> bool {
        match r {
            Registration::Opened(file, pos) => {
                self.files.insert(
                    file,
                    Tracked {
                        watermark: Watermark::default(),
                        delivered: pos,
                        closed: false,
                    },
                );
                true
            }
            Registration::Batch(id, file, pos) => {
                let Some(t) = self.files.get_mut(&file) else {
                    return false;
                };
                self.batch_file.insert(id, file);
                let mut moved = false;
                if let Some(p) = t.watermark.push(id, pos) {
                    t.delivered = p;
                    moved = true;
                }
                if let Some(status) = self.early.remove(&id) {
                    moved |= self.complete(BatchOutcome {
                        batch_id: id,
                        status,
                    });
                }
                moved
            }
            Registration::Closed(file) => {
                if let Some(t) = self.files.get_mut(&file) {
                    t.closed = true;
                }
                self.retire(file)
            }
        }
    }

    fn complete(&mut self, o: BatchOutcome) -> bool {
        let Some(file) = self.batch_file.remove(&o.batch_id) else {
            self.early.insert(o.batch_id, o.status);
            return false;
        };
        let mut moved = false;
        if let Some(t) = self.files.get_mut(&file) {
            if let Some(p) = t.watermark.complete(o) {
                t.delivered = p;
                moved = true;
            }
        }
        self.retire(file) || moved
    }

    fn encode(&self) -> Option<Vec<u8>> {
        checkpoint::encode(self.snapshot())
    }

    fn is_stuck(&self) -> bool {
        self.files.values().any(|t| t.watermark.is_stuck())
    }
}

impl Books {
    /// A closed file whose lines are all delivered leaves the checkpoint; `true` if it did.
    fn retire(&mut self, file: FileId) -> bool {
        let done = self
            .files
            .get(&file)
            .is_some_and(|t| t.closed && t.watermark.outstanding() == 0);
        if done {
            self.files.remove(&file);
        }
        done
    }

    /// Every tracked file's delivered position.
    fn snapshot(&self) -> Vec<SavedPosition> {
        self.files.values().map(|t| t.delivered.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::positions::Books as _;
    use logferry_tail::identity::{FileKey, Fingerprint};

    fn at(file: FileId, offset: u64) -> SavedPosition {
        SavedPosition {
            path: format!("/var/log/{file}.log").into(),
            key: FileKey { dev: 1, ino: file },
            fingerprint: Fingerprint { len: 8, crc: 7 },
            offset,
        }
    }

    fn done(batch_id: u64, status: AckStatus) -> BatchOutcome {
        BatchOutcome { batch_id, status }
    }

    /// Books with `files` opened at 0, each with its batches `(id, offset after)` registered.
    fn books(files: &[(FileId, &[(u64, u64)])]) -> Books {
        let mut b = Books::default();
        for (file, batches) in files {
            b.register(Registration::Opened(*file, at(*file, 0)));
            for (id, offset) in *batches {
                b.register(Registration::Batch(*id, *file, at(*file, *offset)));
            }
        }
        b
    }

    /// Each tracked file's saved offset, by file.
    fn offsets(b: &Books) -> Vec<(u64, u64)> {
        let mut v: Vec<_> = b.snapshot().iter().map(|p| (p.key.ino, p.offset)).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn an_opened_file_is_saved_at_its_opening_position() {
        let mut b = Books::default();
        assert!(b.register(Registration::Opened(1, at(1, 100))));
        assert_eq!(offsets(&b), [(1, 100)]);
    }

    #[test]
    fn a_position_moves_only_over_delivered_batches_in_read_order() {
        let mut b = books(&[(1, &[(1, 10), (2, 20), (3, 30)])]);
        assert!(!b.complete(done(2, AckStatus::Delivered)), "1 is not done");
        assert_eq!(offsets(&b), [(1, 0)]);
        assert!(b.complete(done(1, AckStatus::Delivered)));
        assert_eq!(offsets(&b), [(1, 20)]);
        assert!(b.complete(done(3, AckStatus::DeadLettered)));
        assert_eq!(offsets(&b), [(1, 30)]);
        assert!(!b.is_stuck());
    }

    #[test]
    fn a_failed_batch_holds_its_file_for_good_and_no_other() {
        let mut b = books(&[(1, &[(1, 10), (3, 20)]), (2, &[(2, 10)])]);
        b.complete(done(1, AckStatus::Failed));
        b.complete(done(3, AckStatus::Delivered));
        b.complete(done(2, AckStatus::Delivered));
        assert_eq!(offsets(&b), [(1, 0), (2, 10)]);
        assert!(b.is_stuck());
    }

    #[test]
    fn an_outcome_that_overtakes_its_registration_counts_once_registered() {
        let mut b = books(&[(1, &[])]);
        assert!(!b.complete(done(1, AckStatus::Delivered)));
        assert_eq!(offsets(&b), [(1, 0)]);
        assert!(b.register(Registration::Batch(1, 1, at(1, 10))));
        assert_eq!(offsets(&b), [(1, 10)]);
    }

    #[test]
    fn a_closed_file_leaves_only_once_everything_read_from_it_is_delivered() {
        let mut b = books(&[(1, &[(1, 10)])]);
        assert!(!b.register(Registration::Closed(1)), "batch 1 is out");
        assert_eq!(offsets(&b), [(1, 0)]);
        assert!(b.complete(done(1, AckStatus::Delivered)));
        assert_eq!(offsets(&b), [], "retired");
        // A closed file whose batch failed stays, so the restart reads it again.
        b.register(Registration::Opened(2, at(2, 0)));
        b.register(Registration::Batch(2, 2, at(2, 10)));
        b.register(Registration::Closed(2));
        b.complete(done(2, AckStatus::Failed));
        assert_eq!(offsets(&b), [(2, 0)]);
    }

    #[test]
    fn a_batch_of_an_unknown_file_is_ignored() {
        let mut b = Books::default();
        assert!(!b.register(Registration::Batch(1, 9, at(9, 10))));
        assert_eq!(offsets(&b), []);
        assert!(b.encode().is_some(), "an empty checkpoint is still written");
    }
}
