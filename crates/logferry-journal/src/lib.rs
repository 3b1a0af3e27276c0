//! `logferry-journal`: a pure-Rust reader of systemd-journald's on-disk journal files.
//!
//! logferry ships journald's entries to CloudWatch Logs and must never lose a line, so it
//! reads the journal files itself:
//! * spawning `journalctl` breaks when the container's journalctl is older than the host's
//!   file format, and its JSON/export output costs more CPU than reading the files;
//! * the `systemd` crate is LGPL FFI to libsystemd, which rules out a static binary;
//! * the existing pure-Rust readers did not fit: `sdjournal` is young, single-author and
//!   misses `.journal~` files by default (entries a crashed journald left behind), and
//!   `systemd-journal-sdk` is GPL-3.0.
//!
//! What it does, like sd-journal: discovers the files of a journal directory (active,
//! archived, dirty `.journal~`, user journals, one level of machine-id directories), merges
//! them into one ordered stream without duplicates, seeks by cursor or time, and follows
//! new entries across rotation, archiving and vacuuming. It reads every file version
//! journald 252 writes (compact, keyed hash, XZ/LZ4/ZSTD) and older layouts, and refuses a
//! file with an unknown incompatible flag while still reading the others.
//!
//! Input is untrusted: a live file can be momentarily inconsistent and an old one corrupt
//! or truncated. Every offset, size and type is validated; a bad entry is skipped and a bad
//! file reported through [`Journal::file_errors`], never a panic, a hang or an unbounded
//! allocation.
//!
//! ```no_run
//! use logferry_journal::{Entry, Journal};
//! use std::time::Duration;
//! let mut j = Journal::open_default()?;
//! let mut e = Entry::new();
//! loop {
//!     while j.next_entry_into(&mut e)? {
//!         println!("{} {:?}", e.cursor(), e.field("MESSAGE"));
//!     }
//!     j.wait(Duration::from_secs(5))?;
//! }
//! # Ok::<(), logferry_journal::Error>(())
//! ```

mod compress;
mod entry;
mod file;
mod follow;
mod format;
mod journal;

use std::path::PathBuf;

pub use entry::{Cursor, CursorParseError, Entry};
pub use journal::{FileError, FileInfo, FileState, Journal, DEFAULT_DIRS, DEFAULT_MAX_FIELD_SIZE};

/// Errors that stop an operation on the whole journal. Problems with single files or
/// entries are not errors: they are collected in [`Journal::file_errors`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("waiting for journal changes: {0}")]
    Watch(std::io::Error),
}
