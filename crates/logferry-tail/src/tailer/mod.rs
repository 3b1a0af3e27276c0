//! The reader over every matched file: discovery, rotation, resuming, and fair reading.
//!
//! A [`Tailer`] keeps each matched file open and reads it with `pread(2)` at its own offset,
//! handing out [`Line`]s that carry the offset just past them. The caller saves
//! [`Tailer::position`] for a line only once that line and every line before it were delivered,
//! so a crash re-reads (duplicates) but never skips.
//!
//! How files are followed:
//!
//! - **Finding them.** The include globs are walked at start, on inotify create/rename/delete
//!   events (debounced by 50 ms, so a burst of rotations costs one walk), and every
//!   `rescan_interval` as a safety net. Directories are watched, never files: a directory watch
//!   reports writes to the files inside, so ten thousand idle files cost nothing until one is
//!   written to. Only if inotify is unavailable (or out of watches) are open files checked with
//!   `fstat` every 250 ms.
//! - **Identity.** A file is its (device, inode) plus a fingerprint of its first bytes (see
//!   [`crate::identity`]). A saved position applies only to the file with the same key and a
//!   matching fingerprint; otherwise the file is new to us and is read from 0.
//! - **Rename rotation.** When a matched path holds a new inode, the new file is read from 0
//!   and the old descriptor is read on: the writer may still append to it until it reopens.
//!   It is closed `rotate_wait` after it last grew. A file renamed to another matched path is
//!   simply tailed under its new name.
//! - **Deletion.** A file with no links left is read to its end and closed at once, so the
//!   descriptor does not pin the disk space of, say, `app.log.1` removed by logrotate.
//! - **Truncation and copytruncate.** A file shorter than what was read, or (checked at each
//!   rescan for files that changed) whose first bytes no longer match the fingerprint, is read
//!   again from 0 after a [`Notice::Truncated`]. copytruncate inherently loses whatever the
//!   writer appends between logrotate's copy and its truncate, and, if the writer appends more
//!   than was read before the truncation is seen, the start of the new content; with
//!   copytruncate the include patterns must not match the rotated copies, or their content is
//!   read a second time (they are new files to us).
//! - **Unterminated last lines** are held until their newline arrives, and emitted when the
//!   file is closed because it was rotated away, deleted, or truncated. At shutdown they are
//!   not emitted: the saved position stays before them and they are read whole next time.
//!
//! Reading is round-robin: each file with data gets a turn of up to [`READS_PER_TURN`]
//! `read_buffer_bytes` reads in a row (fewer when it runs out of data), so a file written in a
//! tight loop cannot starve the others. A turn cut short by the caller's line limit goes on at
//! the next [`read`](Tailer::read). Turns of several reads rather than one: a shipper's requests
//! are per file (its stream), and a sink holding a hundred busy files' lines under one memory
//! budget cuts a request from each run of one file's lines; a 64 KiB run made ~90 KiB
//! requests, and each request costs CPU of its own (signing, HTTP, TLS, the ledger). With `max_file_bytes_per_second`, a
//! file that has read its rate leaves the round-robin until its budget allows a whole read
//! again (see [`budget`]); nothing is dropped, the lines wait on disk.

mod budget;
mod read;
mod rotation;
mod scan;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::container::NamespaceFilter;
use crate::discovery::{DirEvent, DirWatcher, Discovery};
use crate::identity::{FileKey, Fingerprint};
use crate::lines::{LineSplitter, SplitLine};

/// Names one opened file for the life of a [`Tailer`]; never reused.
pub type FileId = u64;

/// What to save so a restart resumes a file where delivery stopped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedPosition {
    pub path: PathBuf,
    pub key: FileKey,
    pub fingerprint: Fingerprint,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct TailerOptions {
    /// Glob patterns of absolute paths; `**` matches any number of directories.
    pub include: Vec<String>,
    /// Glob patterns matched against the full path (`*` also matches `/`).
    pub exclude: Vec<String>,
    /// Kubernetes namespaces whose pods' files are excluded like `exclude` excludes: never
    /// opened.
    pub namespaces: NamespaceFilter,
    /// Files present at the first scan with no saved position start at their end; files
    /// appearing later always start at 0.
    pub start_at_end: bool,
    /// Longer lines keep their first `max_line_bytes`; the rest is counted in
    /// [`Line::truncated_bytes`].
    pub max_line_bytes: usize,
    /// UTF-8 passes bytes through untouched; any other encoding is decoded to UTF-8 per line.
    pub encoding: &'static encoding_rs::Encoding,
    /// How many leading bytes the identity fingerprint covers.
    pub fingerprint_bytes: usize,
    /// Walk the include patterns this often even without inotify events.
    pub rescan_interval: Duration,
    /// Bytes per `read(2)` per file per turn.
    pub read_buffer_bytes: usize,
    /// How long a file no longer at a matched path stays open after it last grew.
    pub rotate_wait: Duration,
    /// Each file is read at most this fast (a token bucket holding one second's worth); a
    /// file over it is paused, never cut.
    pub max_file_bytes_per_second: Option<u64>,
}

impl Default for TailerOptions {
    fn default() -> Self {
        TailerOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            namespaces: NamespaceFilter::default(),
            start_at_end: false,
            max_line_bytes: 256 * 1024,
            encoding: encoding_rs::UTF_8,
            fingerprint_bytes: 256,
            rescan_interval: Duration::from_secs(5),
            read_buffer_bytes: 64 * 1024,
            rotate_wait: Duration::from_secs(5),
            max_file_bytes_per_second: None,
        }
    }
}

/// One line of one file.
#[derive(Debug, Clone)]
pub struct Line {
    pub file: FileId,
    /// Without the terminator (`\n`, and a `\r` before it). For UTF-8, a zero-copy slice of
    /// the read buffer.
    pub bytes: Bytes,
    /// The byte offset in the file just past this line's terminator.
    pub end_offset: u64,
    /// Bytes beyond `max_line_bytes` that were dropped.
    pub truncated_bytes: u64,
}

/// Something the caller should know, log, or count.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// A file was opened; reading starts at `offset` (resumed, 0, or its end).
    Opened {
        file: FileId,
        path: Arc<Path>,
        key: FileKey,
        offset: u64,
    },
    /// The file was truncated (copytruncate): reading restarts at 0.
    Truncated {
        file: FileId,
        path: Arc<Path>,
        at: u64,
    },
    Closed {
        file: FileId,
        reason: CloseReason,
    },
    /// A saved file that can no longer be found (deleted while we were stopped): its unread
    /// lines are lost.
    Missing {
        saved: SavedPosition,
    },
    /// A matched file that is not read: compressed, or not a regular file.
    Skipped {
        path: Arc<Path>,
        reason: String,
    },
    /// A file or directory that cannot be read (retried at each rescan, reported once per path
    /// until the error changes), or inotify unavailable (then files are polled).
    Error {
        path: Arc<Path>,
        error: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No links left; read to its end.
    Deleted,
    /// No longer at a matched path, and did not grow for `rotate_wait`.
    RotatedAway,
    /// Renamed to a path an exclude pattern matches, and did not grow for `rotate_wait`.
    Excluded,
    /// [`Tailer::close_all`].
    Shutdown,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("bad glob pattern `{pattern}`: {reason}")]
    Pattern { pattern: String, reason: String },
}

/// How often open files are `fstat`ed when inotify cannot tell us about them (no inotify at
/// all, or files rotated out of the watched directories).
/// Reads of `read_buffer_bytes` a file with data gets in a row per turn (see the module docs).
pub const READS_PER_TURN: u64 = 4;

const POLL_INTERVAL: Duration = Duration::from_millis(250);
/// Delay between a create/rename/delete event and the rescan it triggers.
const RESCAN_DEBOUNCE: Duration = Duration::from_millis(50);

/// What a file's metadata needs to outlive the open file (for `position` after close).
#[derive(Debug)]
struct Meta {
    path: Arc<Path>,
    key: FileKey,
    fp: Fingerprint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At a matched path.
    Tailing,
    /// Not at a matched path any more: closed with this reason `rotate_wait` after the last
    /// growth.
    Leaving(CloseReason),
    /// No links left: closed at its end.
    Deleted,
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    splitter: LineSplitter,
    phase: Phase,
    last_growth: Instant,
    /// In `Tailer::ready`.
    queued: bool,
    /// Written to (or reported modified) since the last rescan: its fingerprint is re-checked.
    touched: bool,
    /// The target of a matched symlink: inotify names the file by this path.
    real_path: Option<PathBuf>,
    /// Opened empty: look for compression magic once its first bytes arrive.
    check_magic: bool,
    /// Scan generation that last saw it at a matched path.
    seen: u64,
    /// The unterminated line flushed at a truncation, returned before anything else.
    carry: Option<SplitLine>,
    /// `max_file_bytes_per_second`.
    budget: Option<budget::Budget>,
    /// Out of budget: not read before this (it is in `Tailer::paused`).
    paused_until: Option<Instant>,
}

/// Follows the files the include patterns match. See the module docs.
#[derive(Debug)]
pub struct Tailer {
    opts: TailerOptions,
    discovery: Discovery,
    watcher: Option<DirWatcher>,
    /// inotify cannot be relied on: check every open file every `POLL_INTERVAL`.
    polling: bool,
    next_id: FileId,
    meta: HashMap<FileId, Meta>,
    open: HashMap<FileId, OpenFile>,
    by_key: HashMap<FileKey, FileId>,
    /// Matched paths (and symlink targets) of open files, for routing inotify events.
    /// Keyed by the raw bytes: `Path`'s own `Hash` parses components, and a rescan of ten
    /// thousand files spends most of its time hashing.
    by_path: HashMap<OsString, FileId>,
    ready: VecDeque<FileId>,
    /// The file whose turn is on (first in `ready`) and the bytes it has read in it.
    current_turn: Option<(FileId, u64)>,
    /// Files out of budget, back in `ready` at their `paused_until`.
    paused: Vec<FileId>,
    /// How many times a file was paused for its rate.
    pauses: u64,
    notices: Vec<Notice>,
    errors: HashMap<PathBuf, String>,
    /// Matched paths not read (compressed, not regular), with the inode they had.
    skipped: HashMap<PathBuf, u64>,
    /// Saved positions not yet matched to a file (only during the first scan).
    saved: HashMap<FileKey, SavedPosition>,
    first_scan: bool,
    generation: u64,
    next_rescan: Instant,
    rescan_soon: Option<Instant>,
    next_poll: Instant,
    events: Vec<DirEvent>,
}

impl Tailer {
    /// Compiles the patterns, sets up inotify, matches `saved` positions to files, and opens
    /// every matched file. Nothing is read yet.
    pub fn new(opts: TailerOptions, saved: Vec<SavedPosition>) -> Result<Tailer, TailError> {
        Tailer::with_inotify(opts, saved, true)
    }

    /// `new`, optionally without inotify (to test the polling fallback).
    fn with_inotify(
        opts: TailerOptions,
        saved: Vec<SavedPosition>,
        inotify: bool,
    ) -> Result<Tailer, TailError> {
        let discovery = Discovery::new(&opts.include, &opts.exclude)
            .map_err(|e| TailError::Pattern {
                pattern: e.pattern,
                reason: e.reason,
            })?
            .with_namespaces(opts.namespaces.clone());
        let now = Instant::now();
        let mut notices = Vec::new();
        let watcher = match DirWatcher::new().and_then(|w| {
            if inotify {
                Ok(w)
            } else {
                Err(std::io::Error::other("inotify disabled"))
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                notices.push(Notice::Error {
                    path: Arc::from(Path::new("inotify")),
                    error: format!("{e}; checking files every 250 ms instead"),
                });
                None
            }
        };
        let mut saved_by_key = HashMap::new();
        for s in saved {
            saved_by_key.entry(s.key).or_insert(s);
        }
        let mut t = Tailer {
            polling: watcher.is_none(),
            watcher,
            discovery,
            next_id: 0,
            meta: HashMap::new(),
            open: HashMap::new(),
            by_key: HashMap::new(),
            by_path: HashMap::new(),
            ready: VecDeque::new(),
            current_turn: None,
            paused: Vec::new(),
            pauses: 0,
            notices,
            errors: HashMap::new(),
            skipped: HashMap::new(),
            saved: saved_by_key,
            first_scan: true,
            generation: 0,
            next_rescan: now,
            rescan_soon: None,
            next_poll: now + POLL_INTERVAL,
            events: Vec::new(),
            opts,
        };
        t.rescan(now);
        t.first_scan = false;
        t.find_rotated_while_stopped(now);
        Ok(t)
    }

    /// Non-blocking: rescans if due, handles pending change notifications, then reads
    /// round-robin across files with new data, appending at most `max_lines` lines to `out`.
    /// Returns how many were appended.
    pub fn read(&mut self, out: &mut Vec<Line>, max_lines: usize) -> usize {
        let now = Instant::now();
        self.housekeeping(now);
        let limit = out.len().saturating_add(max_lines);
        let start = out.len();
        while out.len() < limit {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let offset = |t: &Tailer| t.open.get(&id).map_or(0, |f| f.splitter.read_offset());
            let before = offset(self);
            let more = self.turn(id, out, limit, now);
            let read_in_turn = match self.current_turn.take() {
                Some((on, bytes)) if on == id => bytes,
                _ => 0,
            } + offset(self).saturating_sub(before);
            let whole_turn = READS_PER_TURN * self.opts.read_buffer_bytes.max(1) as u64;
            if more && read_in_turn < whole_turn {
                // Its turn goes on (also at the next call, if `out` is full).
                self.current_turn = Some((id, read_in_turn));
                self.ready.push_front(id);
            } else if more {
                self.ready.push_back(id);
            } else if let Some(f) = self.open.get_mut(&id) {
                f.queued = false;
                f.splitter.shrink();
            }
        }
        out.len() - start
    }

    /// Notices since the last call (a file's `Opened` comes before any of its lines is
    /// returned by [`read`](Self::read)).
    pub fn drain_notices(&mut self, out: &mut Vec<Notice>) {
        out.append(&mut self.notices);
    }

    /// Blocks until a watched file or directory changes or `timeout` passes (poll(2) on the
    /// inotify descriptor). Returns at once if data is known to be pending or a rescan is due.
    pub fn wait(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.ready.is_empty() {
                return;
            }
            let now = Instant::now();
            let mut wake = deadline.min(self.next_rescan);
            if let Some(soon) = self.rescan_soon {
                wake = wake.min(soon);
            }
            if self.needs_polling() {
                wake = wake.min(self.next_poll);
            }
            if let Some(resume) = self.next_resume() {
                wake = wake.min(resume);
            }
            if now >= wake {
                return;
            }
            let Some(watcher) = self.watcher.as_mut() else {
                std::thread::sleep(wake - now);
                return;
            };
            if !watcher.poll(wake - now) {
                return;
            }
            // Handle the events here so that changes to files nobody tails (a busy
            // /var/log) do not wake the caller for nothing.
            self.handle_events(Instant::now());
        }
    }

    /// What to save for `file` once everything before `offset` is delivered. Works for closed
    /// files too, until [`forget`](Self::forget).
    pub fn position(&self, file: FileId, offset: u64) -> Option<SavedPosition> {
        let m = self.meta.get(&file)?;
        Some(SavedPosition {
            path: m.path.to_path_buf(),
            key: m.key,
            fingerprint: m.fp,
            offset,
        })
    }

    /// Drops the metadata of a closed file (after the caller has saved its final position).
    /// Does nothing to an open file.
    pub fn forget(&mut self, file: FileId) {
        if !self.open.contains_key(&file) {
            self.meta.remove(&file);
        }
    }

    /// How many times a file was paused because it had read `max_file_bytes_per_second`.
    pub fn rate_pauses(&self) -> u64 {
        self.pauses
    }

    pub fn open_files(&self) -> usize {
        self.open.len()
    }

    /// The path of a file (open or closed-not-forgotten).
    pub fn path(&self, file: FileId) -> Option<Arc<Path>> {
        self.meta.get(&file).map(|m| m.path.clone())
    }

    /// Closes every file (`CloseReason::Shutdown`). Unterminated last lines are not emitted:
    /// positions stay before them, so they are read whole after a restart.
    pub fn close_all(&mut self) {
        let mut ids: Vec<FileId> = self.open.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id, CloseReason::Shutdown);
        }
        self.ready.clear();
        self.current_turn = None;
    }

    /// Whether some open files are only noticed by `fstat` polling.
    fn needs_polling(&self) -> bool {
        self.polling || self.open.values().any(|f| f.phase != Phase::Tailing)
    }

    fn housekeeping(&mut self, now: Instant) {
        self.handle_events(now);
        if now >= self.next_rescan || self.rescan_soon.is_some_and(|t| now >= t) {
            self.rescan(now);
        }
        if now >= self.next_poll {
            self.next_poll = now + POLL_INTERVAL;
            self.poll_files(now);
        }
        self.resume_paused(now);
    }

    /// The earliest time a paused file may be read again.
    fn next_resume(&self) -> Option<Instant> {
        self.paused
            .iter()
            .filter_map(|id| self.open.get(id)?.paused_until)
            .min()
    }

    /// Puts the paused files whose budget allows a read back in the round-robin.
    fn resume_paused(&mut self, now: Instant) {
        if self.paused.is_empty() {
            return;
        }
        let mut due = Vec::new();
        let open = &mut self.open;
        self.paused.retain(|id| {
            let Some(f) = open.get_mut(id) else {
                return false;
            };
            if f.paused_until.is_some_and(|t| t > now) {
                return true;
            }
            f.paused_until = None;
            due.push(*id);
            false
        });
        for id in due {
            self.mark_ready(id);
        }
    }

    fn mark_ready(&mut self, id: FileId) {
        if let Some(f) = self.open.get_mut(&id) {
            // Written to while paused: read when the pause ends.
            if !f.queued && f.paused_until.is_none() {
                f.queued = true;
                self.ready.push_back(id);
            }
        }
    }

    fn report_error(&mut self, path: &Path, error: String) {
        if self.errors.get(path) != Some(&error) {
            self.errors.insert(path.to_path_buf(), error.clone());
            self.notices.push(Notice::Error {
                path: Arc::from(path),
                error,
            });
        }
    }

    fn skip(&mut self, path: &Path, ino: u64, reason: String) {
        if self.skipped.insert(path.to_path_buf(), ino) != Some(ino) {
            self.notices.push(Notice::Skipped {
                path: Arc::from(path),
                reason,
            });
        }
    }
}

#[cfg(test)]
mod tests;
