//! Reading log files the way a shipper must: find them by glob, follow them through rotation,
//! and report every line with the byte offset just past it, so a caller can save a position
//! only once the lines before it are delivered.
//!
//! - [`identity`]: which file is which (device + inode + a fingerprint of the first bytes).
//! - [`discovery`]: include/exclude globs, re-scanned.
//! - [`tailer`]: the reader over all matched files: finding and opening them (`scan.rs`),
//!   reading them round-robin (`read.rs`), and letting them go through rotation, deletion and
//!   truncation (`rotation.rs`); resuming from saved positions.
//! - [`lines`]: splitting bytes into lines, `max_line_bytes`, encodings.
//! - [`multiline`]: joining continuation lines (stack traces) into one event.
//! - [`timestamp`]: a timestamp read from the line with a strftime format.
//! - [`container`]: Kubernetes container logs (CRI and Docker json-file) and pod metadata
//!   from the log path.
//!
//! Synchronous and runtime-free, like the other library crates: the shipper drives it from a
//! thread of its own.

pub mod container;
pub mod discovery;
pub mod identity;
pub mod lines;
pub mod multiline;
pub mod tailer;
pub mod timestamp;
