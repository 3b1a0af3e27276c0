//! Error type and recovery events.
//!
//! Errors are split so that the caller can tell *backpressure* (the spool or
//! the disk is full: slow down, wait on [`crate::Spool::space_notify`], retry)
//! from *faults* (I/O errors, corruption) that should be logged and counted.
//! [`SpoolError::is_full`] covers both the configured bound and a physically
//! full disk (`ENOSPC`, `EFBIG`, `EDQUOT`).

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Errors returned by [`crate::Spool`].
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// Appending would exceed `max_bytes` (with [`crate::FullPolicy::Block`],
    /// or when nothing more can be dropped). Nothing was written.
    #[error("spool is full: {used} of {max} bytes used, {needed} more needed")]
    Full { used: u64, max: u64, needed: u64 },
    /// The file system reported no space / file too large / quota exceeded.
    /// The partially written batch was truncated away; nothing was appended.
    #[error("disk full while {op} {}: {source}", path.display())]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A single payload is larger than `max_record_bytes`.
    #[error("record of {len} bytes exceeds max_record_bytes ({max})")]
    RecordTooLarge { len: usize, max: u32 },
    /// A batch larger than `max_bytes` can never be appended.
    #[error("batch of {len} bytes can never fit in a spool bounded to {max} bytes")]
    BatchTooLarge { len: u64, max: u64 },
    /// A [`crate::Payloads`] wrote other lengths than it announced: a bug in
    /// the caller. Nothing was appended.
    #[error("a payload announced {announced} bytes and wrote {written}")]
    PayloadLengths { announced: usize, written: usize },
    /// The configuration cannot work, whatever the caller waits for: fix it. (`segment_bytes`
    /// above half of `max_bytes`: the active segment is never deleted, so a spool whose
    /// active segment fills most of the bound could stay full for good with every record
    /// delivered.)
    #[error("invalid spool configuration: {0}")]
    InvalidConfig(String),
    /// Any other I/O error.
    #[error("I/O error while {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another `Spool` (in this or another process) holds the directory lock.
    #[error("spool directory {} is locked by another instance", path.display())]
    Locked { path: PathBuf },
    /// The reader found a damaged record in a live segment (damage after the
    /// record was written, e.g. a failing disk). Reopening the spool
    /// quarantines the segment.
    #[error("corrupt record in {} at offset {offset}: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    /// A failed write could not be rolled back, so the active segment's tail
    /// is in an unknown state; no more appends until the spool is reopened
    /// (recovery will repair the tail).
    #[error("spool writer disabled after a failed rollback ({0}); reopen the spool")]
    Poisoned(String),
    /// A background fsync failed since the last `flush`: records appended
    /// before it may not be on stable storage (they are still in the files
    /// and will be delivered unless the machine loses power).
    #[error("background fsync failed: {0}")]
    SyncFailed(String),
}

impl SpoolError {
    /// True for conditions that call for backpressure rather than alarm:
    /// [`SpoolError::Full`] and [`SpoolError::DiskFull`].
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. } | SpoolError::DiskFull { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            SpoolError::DiskFull { op, path, source }
        } else {
            SpoolError::Io { op, path, source }
        }
    }
}

/// ENOSPC, EFBIG or EDQUOT (by kind or raw Linux errno).
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded
    ) || matches!(e.raw_os_error(), Some(27 | 28 | 122))
}

/// Something recovery found and repaired while opening the spool. Every
/// event should be logged; [`RecoveryEvent::is_data_loss`] ones should also
/// be counted in a metric and alerted on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryEvent {
    /// The last segment ended in a partially written record (crash during an
    /// append that had not returned yet, or a zero-filled tail after power
    /// loss). The tail was truncated; nothing acknowledged upstream is lost.
    TornTail {
        segment: PathBuf,
        records_kept: u64,
        valid_len: u64,
        removed_bytes: u64,
    },
    /// A segment had a damaged record. The file was kept as `moved_to` (never
    /// deleted), the intact records before the damage were copied back into a
    /// fresh segment and will be delivered; records from `first_lost_id` on
    /// (up to `last_lost_id` when known) are lost.
    Quarantined {
        segment: PathBuf,
        moved_to: PathBuf,
        offset: u64,
        reason: String,
        records_kept: u64,
        first_lost_id: u64,
        last_lost_id: Option<u64>,
    },
    /// A segment file without a single record was removed.
    EmptySegmentRemoved { segment: PathBuf },
    /// The acknowledgement checkpoint was unreadable; every record still on
    /// disk will be delivered again (duplicates, no loss).
    CheckpointInvalid { path: PathBuf, reason: String },
    /// A leftover temporary file from an interrupted operation was removed.
    StaleTempRemoved { path: PathBuf },
}

impl RecoveryEvent {
    /// True when records may have been lost (a quarantined segment).
    pub fn is_data_loss(&self) -> bool {
        matches!(self, RecoveryEvent::Quarantined { .. })
    }
}

impl fmt::Display for RecoveryEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecoveryEvent::TornTail {
                segment,
                records_kept,
                valid_len,
                removed_bytes,
            } => write!(
                f,
                "torn tail in {}: kept {records_kept} records ({valid_len} bytes), truncated {removed_bytes} bytes",
                segment.display()
            ),
            RecoveryEvent::Quarantined {
                segment,
                moved_to,
                offset,
                reason,
                records_kept,
                first_lost_id,
                last_lost_id,
            } => {
                write!(
                    f,
                    "corrupt segment {} ({reason} at offset {offset}) quarantined as {}; recovered {records_kept} records, lost ids {first_lost_id}..",
                    segment.display(),
                    moved_to.display()
                )?;
                match last_lost_id {
                    Some(l) => write!(f, "={l}"),
                    None => f.write_str(" (end unknown)"),
                }
            }
            RecoveryEvent::EmptySegmentRemoved { segment } => {
                write!(f, "removed empty segment {}", segment.display())
            }
            RecoveryEvent::CheckpointInvalid { path, reason } => write!(
                f,
                "ack checkpoint {} unusable ({reason}); redelivering everything on disk",
                path.display()
            ),
            RecoveryEvent::StaleTempRemoved { path } => {
                write!(f, "removed stale temporary file {}", path.display())
            }
        }
    }
}
