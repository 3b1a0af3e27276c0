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
//! Reading is round-robin: each file with data gets one `read_buffer_bytes` read per turn, so a
//! file written in a tight loop cannot starve the others.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::discovery::{DirEvent, DirWatcher, Discovery};
use crate::identity::{
    compression_magic, fingerprint, fingerprint_matches, read_head, FileKey, Fingerprint, MAGIC_LEN,
};
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
}

impl Default for TailerOptions {
    fn default() -> Self {
        TailerOptions {
            include: Vec::new(),
            exclude: Vec::new(),
            start_at_end: false,
            max_line_bytes: 256 * 1024,
            encoding: encoding_rs::UTF_8,
            fingerprint_bytes: 256,
            rescan_interval: Duration::from_secs(5),
            read_buffer_bytes: 64 * 1024,
            rotate_wait: Duration::from_secs(5),
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
        let discovery =
            Discovery::new(&opts.include, &opts.exclude).map_err(|e| TailError::Pattern {
                pattern: e.pattern,
                reason: e.reason,
            })?;
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
            if self.turn(id, out, limit, now) {
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
    }

    fn handle_events(&mut self, now: Instant) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        watcher.drain(&mut self.events);
        let mut events = std::mem::take(&mut self.events);
        for ev in events.drain(..) {
            match ev {
                DirEvent::Modified(path) => {
                    if let Some(&id) = self.by_path.get(path.as_os_str()) {
                        if let Some(f) = self.open.get_mut(&id) {
                            f.touched = true;
                        }
                        self.mark_ready(id);
                    }
                }
                DirEvent::Changed(path) => {
                    if let Some(&id) = self.by_path.get(path.as_os_str()) {
                        self.mark_ready(id);
                    }
                    self.rescan_soon.get_or_insert(now + RESCAN_DEBOUNCE);
                }
                DirEvent::Overflow => {
                    self.rescan_soon = Some(now);
                    let ids: Vec<FileId> = self.open.keys().copied().collect();
                    for id in ids {
                        if let Some(f) = self.open.get_mut(&id) {
                            f.touched = true;
                        }
                        self.mark_ready(id);
                    }
                }
            }
        }
        self.events = events;
    }

    fn mark_ready(&mut self, id: FileId) {
        if let Some(f) = self.open.get_mut(&id) {
            if !f.queued {
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

    /// Walks the include patterns and reconciles the result with the open files.
    fn rescan(&mut self, now: Instant) {
        self.next_rescan = now + self.opts.rescan_interval;
        self.rescan_soon = None;
        self.generation += 1;
        let generation = self.generation;
        let scan = self.discovery.scan();

        let mut by_path = HashMap::with_capacity(scan.files.len());
        let mut excluded_inos = HashSet::new();
        // Only needed to forget errors and skips of paths that went away.
        let track_paths = !self.errors.is_empty() || !self.skipped.is_empty();
        let mut scanned_paths = HashSet::new();
        for found in scan.files {
            if found.excluded {
                excluded_inos.insert(found.ino);
                continue;
            }
            if track_paths {
                scanned_paths.insert(found.path.clone());
            }
            // Fast path: a known file still at its path; `readdir` gave its inode number.
            if !found.symlink {
                if let Some(&id) = self.by_path.get(found.path.as_os_str()) {
                    if let Some(f) = self.open.get_mut(&id) {
                        let same = self.meta.get(&id).is_some_and(|m| m.key.ino == found.ino);
                        if same && f.seen != generation {
                            f.seen = generation;
                            by_path.insert(found.path.into_os_string(), id);
                            continue;
                        }
                    }
                }
            }
            if self.skipped.get(&found.path) == Some(&found.ino) {
                continue;
            }
            // `stat` follows a symlink to the file it names.
            let meta = match std::fs::metadata(&found.path) {
                Ok(m) => m,
                // Gone since the readdir: the next event or rescan handles it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    self.report_error(&found.path, e.to_string());
                    continue;
                }
            };
            if !meta.is_file() {
                self.skip(&found.path, found.ino, "not a regular file".into());
                continue;
            }
            let key = FileKey::of(&meta);
            if let Some(&id) = self.by_key.get(&key) {
                self.found_known(id, &found.path, generation, &mut by_path);
                continue;
            }
            if let Some(id) = self.open_path(&found.path, found.ino, now) {
                if let Some(f) = self.open.get_mut(&id) {
                    f.seen = generation;
                }
                by_path.insert(found.path.into_os_string(), id);
            }
        }

        // Open files no matched path leads to any more: renamed away, excluded, or deleted.
        let gone: Vec<FileId> = self
            .open
            .iter()
            .filter(|(_, f)| f.seen != generation && f.phase == Phase::Tailing)
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            let Some(f) = self.open.get_mut(&id) else {
                continue;
            };
            let deleted = f.file.metadata().map(|m| m.nlink() == 0).unwrap_or(true);
            let ino = self.meta.get(&id).map(|m| m.key.ino);
            f.phase = if deleted {
                Phase::Deleted
            } else if ino.is_some_and(|i| excluded_inos.contains(&i)) {
                Phase::Leaving(CloseReason::Excluded)
            } else {
                Phase::Leaving(CloseReason::RotatedAway)
            };
            // The writer may not have noticed the rotation yet: give it `rotate_wait` from now.
            f.last_growth = now;
            self.mark_ready(id);
        }

        // copytruncate that rewrote past our offset before we looked: the first bytes changed.
        let touched: Vec<FileId> = self
            .open
            .iter()
            .filter(|(_, f)| f.touched)
            .map(|(&id, _)| id)
            .collect();
        for id in touched {
            let (Some(f), Some(m)) = (self.open.get_mut(&id), self.meta.get(&id)) else {
                continue;
            };
            f.touched = false;
            if let Ok(false) = fingerprint_matches(&f.file, &m.fp) {
                self.truncated(id);
            }
        }

        // Symlinked files are written (and reported by inotify) under their target's path.
        let mut dirs = scan.dirs;
        for f in self.open.values() {
            if let Some(real) = &f.real_path {
                if let Some(parent) = real.parent() {
                    dirs.push(parent.to_path_buf());
                }
            }
        }
        for (&id, f) in &self.open {
            if let (Some(real), Phase::Tailing) = (&f.real_path, f.phase) {
                by_path.insert(real.clone().into_os_string(), id);
            }
        }
        self.by_path = by_path;
        if track_paths {
            self.errors.retain(|p, _| scanned_paths.contains(p));
            self.skipped.retain(|p, _| scanned_paths.contains(p));
        }
        self.watch_dirs(dirs, now);
    }

    /// Watches `dirs` (and only them). Newly watched directories get a second scan soon: a
    /// file created between the walk's `readdir` and the watch would otherwise wait for the
    /// periodic rescan.
    fn watch_dirs(&mut self, dirs: Vec<PathBuf>, now: Instant) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let before = watcher.len();
        let mut failed = None;
        let mut added = false;
        for dir in &dirs {
            let had = watcher.len();
            if let Err(e) = watcher.watch(dir) {
                failed.get_or_insert((dir.clone(), e));
            } else if watcher.len() > had {
                added = true;
            }
        }
        let wanted: HashSet<&PathBuf> = dirs.iter().collect();
        watcher.retain(|d| wanted.contains(&d.to_path_buf()));
        if added && before > 0 {
            self.rescan_soon.get_or_insert(now + RESCAN_DEBOUNCE);
        }
        if let Some((dir, e)) = failed {
            if !self.polling {
                self.polling = true;
                self.report_error(
                    &dir,
                    format!("inotify watch failed ({e}); checking files every 250 ms instead"),
                );
            }
        }
    }

    /// A file already open was found at `path` during a rescan.
    fn found_known(
        &mut self,
        id: FileId,
        path: &Path,
        generation: u64,
        by_path: &mut HashMap<OsString, FileId>,
    ) {
        let Some(f) = self.open.get_mut(&id) else {
            return;
        };
        if f.seen == generation {
            // A second matched path to the same file (a symlink and its target): keep the first.
            return;
        }
        f.seen = generation;
        f.phase = Phase::Tailing;
        if let Some(m) = self.meta.get_mut(&id) {
            if *m.path != *path {
                m.path = Arc::from(path);
            }
        }
        by_path.insert(path.as_os_str().to_os_string(), id);
    }

    /// Opens a newly matched file, resuming a saved position if one matches. `ino` is what the
    /// scan saw at `path` (for remembering skipped files).
    fn open_path(&mut self, path: &Path, ino: u64, now: Instant) -> Option<FileId> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.report_error(path, e.to_string());
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => {
                self.report_error(path, e.to_string());
                return None;
            }
        };
        self.errors.remove(path);
        let key = FileKey::of(&meta);
        if self.by_key.contains_key(&key) {
            // Replaced between our stat and open by a file we already have.
            return None;
        }
        let size = meta.len();
        let head = match read_head(&file, self.opts.fingerprint_bytes.max(MAGIC_LEN)) {
            Ok(h) => h,
            Err(e) => {
                self.report_error(path, e.to_string());
                return None;
            }
        };
        if let Some(format) = compression_magic(&head) {
            self.skip(path, ino, format!("{format}-compressed"));
            return None;
        }
        let fp_len = head.len().min(self.opts.fingerprint_bytes);
        let fp = Fingerprint {
            len: u32::try_from(fp_len).unwrap_or(u32::MAX),
            crc: crc32c::crc32c(&head[..fp_len]),
        };
        let mut truncated_at = None;
        let offset = match self.saved.remove(&key) {
            Some(s) if matches!(fingerprint_matches(&file, &s.fingerprint), Ok(true)) => {
                if s.offset > size {
                    truncated_at = Some(s.offset);
                    0
                } else {
                    s.offset
                }
            }
            Some(s) => {
                // Same inode number, different content: the saved file was deleted and its
                // number reused. This one is new to us.
                self.notices.push(Notice::Missing { saved: s });
                0
            }
            None if self.first_scan && self.opts.start_at_end => {
                if self.opts.encoding == encoding_rs::UTF_16LE
                    || self.opts.encoding == encoding_rs::UTF_16BE
                {
                    size & !1
                } else {
                    size
                }
            }
            None => 0,
        };
        let real_path = match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(path).ok(),
            _ => None,
        };
        let id = self.insert_file(file, path, key, fp, offset, real_path, now);
        if let Some(at) = truncated_at {
            let path = self.path(id).unwrap_or_else(|| Arc::from(path));
            self.notices.push(Notice::Truncated { file: id, path, at });
        }
        if let Some(f) = self.open.get_mut(&id) {
            f.check_magic = size == 0;
        }
        Some(id)
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_file(
        &mut self,
        file: File,
        path: &Path,
        key: FileKey,
        fp: Fingerprint,
        offset: u64,
        real_path: Option<PathBuf>,
        now: Instant,
    ) -> FileId {
        let id = self.next_id;
        self.next_id += 1;
        let path: Arc<Path> = Arc::from(path);
        self.notices.push(Notice::Opened {
            file: id,
            path: path.clone(),
            key,
            offset,
        });
        self.meta.insert(id, Meta { path, key, fp });
        self.by_key.insert(key, id);
        self.open.insert(
            id,
            OpenFile {
                file,
                splitter: LineSplitter::new(self.opts.encoding, self.opts.max_line_bytes, offset),
                phase: Phase::Tailing,
                last_growth: now,
                queued: false,
                touched: false,
                real_path,
                check_magic: false,
                seen: self.generation,
                carry: None,
            },
        );
        self.mark_ready(id);
        id
    }

    /// Saved positions whose file is at no matched path: look for it, by key and fingerprint,
    /// in the directory it was saved in (logrotate renames within the directory). Found: finish
    /// it and close it. Not found: report it missing.
    fn find_rotated_while_stopped(&mut self, now: Instant) {
        let mut saved: Vec<SavedPosition> = self.saved.drain().map(|(_, s)| s).collect();
        saved.sort_by(|a, b| a.path.cmp(&b.path));
        let mut listings: HashMap<PathBuf, Vec<(u64, PathBuf)>> = HashMap::new();
        for s in saved {
            let dir = s.path.parent().unwrap_or(Path::new("/")).to_path_buf();
            let entries = listings.entry(dir.clone()).or_insert_with(|| {
                use std::os::unix::fs::DirEntryExt;
                std::fs::read_dir(&dir)
                    .map(|rd| rd.flatten().map(|e| (e.ino(), e.path())).collect())
                    .unwrap_or_default()
            });
            let found = entries
                .iter()
                .filter(|(ino, _)| *ino == s.key.ino)
                .find_map(|(_, path)| {
                    let file = File::open(path).ok()?;
                    let meta = file.metadata().ok()?;
                    let same = meta.is_file()
                        && FileKey::of(&meta) == s.key
                        && matches!(fingerprint_matches(&file, &s.fingerprint), Ok(true))
                        && s.offset <= meta.len();
                    same.then(|| (file, path.clone()))
                });
            let Some((file, path)) = found else {
                self.notices.push(Notice::Missing { saved: s });
                continue;
            };
            if self.by_key.contains_key(&s.key) {
                continue;
            }
            let fp = fingerprint(&file, self.opts.fingerprint_bytes).unwrap_or(s.fingerprint);
            let id = self.insert_file(file, &path, s.key, fp, s.offset, None, now);
            if let Some(f) = self.open.get_mut(&id) {
                let reason = if self.discovery.is_included(&path) {
                    CloseReason::Excluded
                } else {
                    CloseReason::RotatedAway
                };
                f.phase = Phase::Leaving(reason);
            }
        }
    }

    /// `fstat`s the files inotify does not cover: all of them when polling, otherwise those
    /// rotated away (their new directory may not be watched) and deleted.
    fn poll_files(&mut self, now: Instant) {
        let polling = self.polling;
        let mut wake = Vec::new();
        for (&id, f) in self.open.iter_mut() {
            if !polling && f.phase == Phase::Tailing {
                continue;
            }
            let Ok(meta) = f.file.metadata() else {
                continue;
            };
            if meta.nlink() == 0 && f.phase != Phase::Deleted {
                f.phase = Phase::Deleted;
                wake.push(id);
            }
            if meta.len() != f.splitter.read_offset() {
                f.touched = true;
                wake.push(id);
            } else if let Phase::Leaving(_) = f.phase {
                if now.duration_since(f.last_growth) >= self.opts.rotate_wait {
                    wake.push(id);
                }
            }
        }
        for id in wake {
            self.mark_ready(id);
        }
    }

    /// One turn of file `id`: its buffered lines, then at most one read. Returns whether the
    /// file should stay in the ready queue.
    fn turn(&mut self, id: FileId, out: &mut Vec<Line>, limit: usize, now: Instant) -> bool {
        let Some(f) = self.open.get_mut(&id) else {
            return false;
        };
        if f.carry.is_some() {
            if out.len() >= limit {
                return true;
            }
            if let Some(l) = f.carry.take() {
                out.push(to_line(id, l));
            }
        }
        if !drain_lines(id, &mut f.splitter, out, limit) {
            return true;
        }
        let want = self.opts.read_buffer_bytes.max(1);
        let n = match f.splitter.read_from(&f.file, want) {
            Ok(n) => n,
            Err(e) => {
                let path = self.meta.get(&id).map(|m| m.path.clone());
                if let Some(path) = path {
                    self.report_error(&path, e.to_string());
                }
                return false;
            }
        };
        if n > 0 {
            f.last_growth = now;
            f.touched = true;
            if f.check_magic {
                match read_head(&f.file, MAGIC_LEN) {
                    Ok(head) if compression_magic(&head).is_some() => {
                        let format = compression_magic(&head).unwrap_or("compressed");
                        let path = self.meta.get(&id).map(|m| m.path.clone());
                        f.splitter.reset(0);
                        if let Some(path) = path {
                            // Remembered under the inode number `stat` reports: for a
                            // symlink that is not what `readdir` gave, so a symlinked
                            // compressed file is re-checked (and reported) once more.
                            let ino = self.meta.get(&id).map_or(0, |m| m.key.ino);
                            self.skip(&path, ino, format!("{format}-compressed"));
                        }
                        self.close(id, CloseReason::Excluded);
                        return false;
                    }
                    Ok(head) if head.len() < MAGIC_LEN && !head.contains(&b'\n') => {}
                    _ => f.check_magic = false,
                }
            }
            let read_to = f.splitter.read_offset();
            if let Some(m) = self.meta.get_mut(&id) {
                if (m.fp.len as usize) < self.opts.fingerprint_bytes
                    && read_to > u64::from(m.fp.len)
                {
                    if let Ok(fp) = fingerprint(&f.file, self.opts.fingerprint_bytes) {
                        m.fp = fp;
                    }
                }
            }
            if !drain_lines(id, &mut f.splitter, out, limit) {
                return true;
            }
            if n == want {
                // Probably more to read.
                return true;
            }
            // A short read: at the end for now; inotify (or polling) reports new writes.
            if f.phase == Phase::Deleted {
                return self.finish(id, CloseReason::Deleted, out, limit);
            }
            return false;
        }
        // At the end: truncated, deleted, or rotated away and done?
        let meta = f.file.metadata();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let nlink = meta.as_ref().map_or(0, |m| m.nlink());
        if size < f.splitter.read_offset() {
            self.truncated(id);
            // Emitting the flushed line may have used the last slot; continue next turn.
            return true;
        }
        if nlink == 0 || f.phase == Phase::Deleted {
            return self.finish(id, CloseReason::Deleted, out, limit);
        }
        if let Phase::Leaving(reason) = f.phase {
            if now.duration_since(f.last_growth) >= self.opts.rotate_wait {
                return self.finish(id, reason, out, limit);
            }
        }
        false
    }

    /// Emits the unterminated last line (if there is room) and closes the file. Returns
    /// whether the file must stay queued (no room yet).
    fn finish(
        &mut self,
        id: FileId,
        reason: CloseReason,
        out: &mut Vec<Line>,
        limit: usize,
    ) -> bool {
        let Some(f) = self.open.get_mut(&id) else {
            return false;
        };
        if f.splitter.has_partial() {
            if out.len() >= limit {
                return true;
            }
            if let Some(l) = f.splitter.finish() {
                out.push(to_line(id, l));
            }
        }
        self.close(id, reason);
        false
    }

    /// Restarts `id` at offset 0. The unterminated line read before the truncation is kept
    /// for the next turn (it was real content), ending at the old offset.
    fn truncated(&mut self, id: FileId) {
        let Some(f) = self.open.get_mut(&id) else {
            return;
        };
        let at = f.splitter.read_offset();
        f.carry = f.splitter.finish();
        f.splitter.reset(0);
        f.check_magic = true;
        if let (Some(m), Ok(fp)) = (
            self.meta.get_mut(&id),
            fingerprint(&f.file, self.opts.fingerprint_bytes),
        ) {
            m.fp = fp;
        }
        let path = self.meta.get(&id).map(|m| m.path.clone());
        if let Some(path) = path {
            self.notices.push(Notice::Truncated { file: id, path, at });
        }
        self.mark_ready(id);
    }

    fn close(&mut self, id: FileId, reason: CloseReason) {
        let Some(f) = self.open.remove(&id) else {
            return;
        };
        if let Some(m) = self.meta.get(&id) {
            if self.by_key.get(&m.key) == Some(&id) {
                self.by_key.remove(&m.key);
            }
        }
        self.by_path.retain(|_, v| *v != id);
        drop(f);
        self.notices.push(Notice::Closed { file: id, reason });
    }
}

fn to_line(id: FileId, l: SplitLine) -> Line {
    Line {
        file: id,
        bytes: l.bytes,
        end_offset: l.end_offset,
        truncated_bytes: l.truncated_bytes,
    }
}

/// Moves complete lines from `splitter` to `out` until it has none or `out` reaches `limit`.
/// Returns whether the splitter ran out of lines (rather than `out` out of room).
fn drain_lines(id: FileId, splitter: &mut LineSplitter, out: &mut Vec<Line>, limit: usize) -> bool {
    while out.len() < limit {
        match splitter.next_line() {
            Some(l) => out.push(to_line(id, l)),
            None => return true,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{self, OpenOptions};
    use std::io::Write;

    const PATIENCE: Duration = Duration::from_secs(5);

    fn opts(dir: &Path, pattern: &str) -> TailerOptions {
        TailerOptions {
            include: vec![format!("{}/{pattern}", dir.display())],
            rotate_wait: Duration::from_millis(200),
            // Long: these tests must pass on inotify alone unless they say otherwise.
            rescan_interval: Duration::from_secs(3600),
            ..TailerOptions::default()
        }
    }

    fn append(path: &Path, data: &[u8]) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open for append");
        f.write_all(data).expect("append");
    }

    /// Everything read and noticed so far.
    #[derive(Default)]
    struct Seen {
        lines: Vec<Line>,
        notices: Vec<Notice>,
    }

    impl Seen {
        fn texts(&self) -> Vec<String> {
            self.lines
                .iter()
                .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
                .collect()
        }
        fn texts_of(&self, file: FileId) -> Vec<String> {
            self.lines
                .iter()
                .filter(|l| l.file == file)
                .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
                .collect()
        }
        fn closed(&self, file: FileId) -> Option<CloseReason> {
            self.notices.iter().find_map(|n| match n {
                Notice::Closed { file: f, reason } if *f == file => Some(*reason),
                _ => None,
            })
        }
        fn opened(&self) -> Vec<(FileId, PathBuf, u64)> {
            self.notices
                .iter()
                .filter_map(|n| match n {
                    Notice::Opened {
                        file, path, offset, ..
                    } => Some((*file, path.to_path_buf(), *offset)),
                    _ => None,
                })
                .collect()
        }
        fn id_of(&self, path: &Path) -> FileId {
            self.opened()
                .into_iter()
                .rev()
                .find(|(_, p, _)| p == path)
                .map(|(id, _, _)| id)
                .unwrap_or_else(|| panic!("{} not opened: {:?}", path.display(), self.notices))
        }
    }

    /// Reads (and waits) until `done` holds or PATIENCE runs out; checks that `Opened` always
    /// precedes a file's lines.
    fn pump(t: &mut Tailer, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let mut lines = Vec::new();
            t.read(&mut lines, 1000);
            t.drain_notices(&mut seen.notices);
            for l in &lines {
                assert!(
                    seen.opened().iter().any(|(id, _, _)| *id == l.file),
                    "line of file {} before its Opened notice",
                    l.file
                );
            }
            seen.lines.extend(lines);
            if done(seen) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "gave up; lines {:?}, notices {:?}",
                seen.texts(),
                seen.notices
            );
            t.wait(Duration::from_millis(20));
        }
    }

    fn n_lines(n: usize) -> impl Fn(&Seen) -> bool {
        move |s| s.lines.len() >= n
    }

    /// Reads for a while and checks nothing more arrives.
    fn settle(t: &mut Tailer, seen: &mut Seen, for_: Duration) {
        let deadline = Instant::now() + for_;
        while Instant::now() < deadline {
            t.read(&mut seen.lines, 1000);
            t.drain_notices(&mut seen.notices);
            t.wait(Duration::from_millis(20));
        }
    }

    #[test]
    fn reads_existing_and_appended_lines_with_exact_end_offsets() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"one\ntwo\r\n");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        append(&p, b"three\n");
        pump(&mut t, &mut seen, n_lines(3));
        assert_eq!(seen.texts(), ["one", "two", "three"]);
        let ends: Vec<u64> = seen.lines.iter().map(|l| l.end_offset).collect();
        assert_eq!(ends, [4, 9, 15]);
        assert_eq!(seen.opened(), [(0, p.clone(), 0)]);
        assert_eq!(t.open_files(), 1);
        assert_eq!(t.path(0).as_deref(), Some(p.as_path()));
    }

    #[test]
    fn bad_include_pattern_is_an_error_naming_it() {
        let err = Tailer::new(
            TailerOptions {
                include: vec!["/var/log/[oops".into()],
                ..TailerOptions::default()
            },
            vec![],
        )
        .expect_err("bad pattern");
        assert!(err.to_string().contains("/var/log/[oops"), "{err}");
    }

    #[test]
    fn start_at_end_applies_only_to_files_present_at_the_first_scan() {
        let d = tempfile::tempdir().expect("tempdir");
        let old = d.path().join("old.log");
        append(&old, b"history\n");
        let mut o = opts(d.path(), "*.log");
        o.start_at_end = true;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let new = d.path().join("new.log");
        append(&new, b"fresh\n");
        append(&old, b"appended\n");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        let mut texts = seen.texts();
        texts.sort();
        assert_eq!(texts, ["appended", "fresh"]);
        let old_id = seen.id_of(&old);
        assert!(seen.opened().contains(&(old_id, old, 8)));
    }

    #[test]
    fn resumes_from_a_saved_position_without_duplicates() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"a\nb\nc\n");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(3));
        // Only "a" and "b" were delivered.
        let pos = t
            .position(seen.lines[1].file, seen.lines[1].end_offset)
            .expect("pos");
        assert_eq!(pos.offset, 4);
        drop(t);
        append(&p, b"d\n");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![pos]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        settle(&mut t, &mut seen, Duration::from_millis(100));
        assert_eq!(seen.texts(), ["c", "d"]);
        assert_eq!(seen.opened()[0].2, 4);
    }

    #[test]
    fn saved_key_with_other_content_is_a_different_file_read_from_zero() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"new content\nsecond\n");
        let meta = fs::metadata(&p).expect("stat");
        // As if the saved file was deleted and its inode number reused by this one.
        let saved = SavedPosition {
            path: p.clone(),
            key: FileKey::of(&meta),
            fingerprint: Fingerprint {
                len: 11,
                crc: crc32c::crc32c(b"old content"),
            },
            offset: 12,
        };
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved.clone()]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        assert_eq!(seen.texts(), ["new content", "second"]);
        assert!(seen.notices.contains(&Notice::Missing { saved }));
    }

    #[test]
    fn saved_file_shorter_than_its_fingerprint_is_a_different_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"ab\n");
        let meta = fs::metadata(&p).expect("stat");
        let saved = SavedPosition {
            path: p.clone(),
            key: FileKey::of(&meta),
            fingerprint: Fingerprint { len: 100, crc: 1 },
            offset: 1,
        };
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        assert_eq!(seen.texts(), ["ab"]);
    }

    #[test]
    fn saved_offset_past_the_end_means_truncated_while_stopped() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"first line\n");
        let f = File::open(&p).expect("open");
        let saved = SavedPosition {
            path: p.clone(),
            key: FileKey::of(&f.metadata().expect("stat")),
            fingerprint: fingerprint(&f, 256).expect("fp"),
            offset: 500,
        };
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        assert_eq!(seen.texts(), ["first line"]);
        assert_eq!(seen.opened()[0].2, 0);
        assert!(seen
            .notices
            .iter()
            .any(|n| matches!(n, Notice::Truncated { at: 500, .. })));
    }

    #[test]
    fn file_rotated_away_while_stopped_is_finished_then_closed() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"read before stop\nunread 1\n");
        let mut t = Tailer::new(opts(d.path(), "app.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        let pos = t
            .position(seen.lines[0].file, seen.lines[0].end_offset)
            .expect("pos");
        drop(t);
        // While stopped: the writer appends, logrotate renames, the writer reopens.
        append(&p, b"unread 2\npartial");
        fs::rename(&p, d.path().join("app.log.1")).expect("rename");
        append(&p, b"new file\n");
        let mut t = Tailer::new(opts(d.path(), "app.log"), vec![pos]).expect("tailer");
        let mut seen = Seen::default();
        let rotated = d.path().join("app.log.1");
        pump(&mut t, &mut seen, |s| {
            s.opened().iter().any(|(_, p, _)| *p == rotated)
                && s.closed(s.id_of(&rotated)).is_some()
        });
        let old = seen.id_of(&rotated);
        let new = seen.id_of(&p);
        assert_eq!(seen.texts_of(old), ["unread 1", "unread 2", "partial"]);
        assert_eq!(seen.texts_of(new), ["new file"]);
        assert_eq!(seen.closed(old), Some(CloseReason::RotatedAway));
        assert!(seen.opened().contains(&(old, rotated, 17)));
        assert!(!seen
            .notices
            .iter()
            .any(|n| matches!(n, Notice::Missing { .. })));
        assert_eq!(t.open_files(), 1);
    }

    #[test]
    fn file_deleted_while_stopped_is_reported_missing() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"x\n");
        let f = File::open(&p).expect("open");
        let saved = SavedPosition {
            path: p.clone(),
            key: FileKey::of(&f.metadata().expect("stat")),
            fingerprint: fingerprint(&f, 256).expect("fp"),
            offset: 0,
        };
        drop(f);
        fs::remove_file(&p).expect("rm");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved.clone()]).expect("tailer");
        let mut notices = Vec::new();
        t.drain_notices(&mut notices);
        assert_eq!(notices, [Notice::Missing { saved }]);
    }

    #[test]
    fn rename_rotation_while_running_loses_and_repeats_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        let mut writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .expect("create");
        writeln!(writer, "before 1").expect("write");
        let mut t = Tailer::new(opts(d.path(), "app.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        let old = seen.lines[0].file;
        let rotated = d.path().join("app.log.1");
        fs::rename(&p, &rotated).expect("rename");
        // The writer has not reopened yet: it still appends to the renamed file.
        writeln!(writer, "late 1").expect("write");
        let mut new_writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .expect("create new");
        writeln!(new_writer, "new 1").expect("write");
        pump(&mut t, &mut seen, n_lines(3));
        writeln!(writer, "late 2").expect("write");
        writeln!(new_writer, "new 2").expect("write");
        drop(writer);
        pump(&mut t, &mut seen, |s| s.closed(old).is_some());
        let new = seen.id_of(&p);
        assert_eq!(seen.texts_of(old), ["before 1", "late 1", "late 2"]);
        assert_eq!(seen.texts_of(new), ["new 1", "new 2"]);
        assert_eq!(seen.closed(old), Some(CloseReason::RotatedAway));
        assert_eq!(seen.opened().last().map(|o| o.2), Some(0));
        // Closed files still answer for their position until forgotten.
        assert!(t.position(old, 9).is_some());
        t.forget(old);
        assert!(t.position(old, 9).is_none());
        assert_eq!(t.open_files(), 1);
    }

    #[test]
    fn rename_to_another_matched_name_keeps_tailing_under_the_new_path() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"one\n");
        let mut t = Tailer::new(opts(d.path(), "app.log*"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        let id = seen.lines[0].file;
        let rotated = d.path().join("app.log.1");
        fs::rename(&p, &rotated).expect("rename");
        settle(&mut t, &mut seen, Duration::from_millis(400));
        assert_eq!(t.path(id).as_deref(), Some(rotated.as_path()));
        append(&rotated, b"two\n");
        pump(&mut t, &mut seen, n_lines(2));
        settle(&mut t, &mut seen, Duration::from_millis(400));
        assert_eq!(seen.texts(), ["one", "two"]);
        assert_eq!(seen.closed(id), None, "{:?}", seen.notices);
    }

    #[test]
    fn copytruncate_is_detected_and_the_file_read_again_from_zero() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"first\nsecond\n");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        // logrotate copytruncate: the copy is not matched; the original is truncated in place.
        fs::copy(&p, d.path().join("app.log.1")).expect("copy");
        OpenOptions::new()
            .write(true)
            .open(&p)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&p, b"after\n");
        pump(&mut t, &mut seen, n_lines(3));
        assert_eq!(seen.texts(), ["first", "second", "after"]);
        assert_eq!(seen.lines[2].end_offset, 6);
        assert!(seen
            .notices
            .iter()
            .any(|n| matches!(n, Notice::Truncated { at: 13, .. })));
        assert_eq!(t.position(0, 6).map(|s| s.fingerprint.len), Some(6));
    }

    #[test]
    fn truncation_rewritten_past_the_offset_is_caught_by_the_fingerprint_at_rescan() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"aaaa\n");
        let mut o = opts(d.path(), "*.log");
        o.rescan_interval = Duration::ZERO;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        // Truncated and rewritten longer than what was read before the tailer looks again.
        fs::write(&p, b"bbbbbbbbbb\ncc\n").expect("rewrite");
        pump(&mut t, &mut seen, n_lines(3));
        assert_eq!(seen.texts(), ["aaaa", "bbbbbbbbbb", "cc"]);
    }

    #[test]
    fn deleted_file_is_read_to_its_end_and_its_descriptor_closed() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"one\n");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        let id = seen.lines[0].file;
        // Counted by target, so tests running in parallel threads do not disturb the count.
        let fds_into = |dir: &Path| {
            fs::read_dir("/proc/self/fd")
                .expect("/proc/self/fd")
                .flatten()
                .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
                .count()
        };
        assert_eq!(fds_into(d.path()), 1);
        append(&p, b"two\nlast words");
        fs::remove_file(&p).expect("rm");
        pump(&mut t, &mut seen, |s| s.closed(id).is_some());
        assert_eq!(seen.texts(), ["one", "two", "last words"]);
        assert_eq!(seen.lines[2].end_offset, 18);
        assert_eq!(seen.closed(id), Some(CloseReason::Deleted));
        assert_eq!(fds_into(d.path()), 0);
        assert_eq!(t.open_files(), 0);
    }

    #[test]
    fn rotated_file_deleted_by_compression_is_closed_at_once_not_after_rotate_wait() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"one\n");
        let mut o = opts(d.path(), "app.log");
        o.rotate_wait = Duration::from_secs(3600);
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        let old = seen.lines[0].file;
        let rotated = d.path().join("app.log.1");
        fs::rename(&p, &rotated).expect("rename");
        append(&p, b"new\n");
        append(&rotated, b"two\n");
        pump(&mut t, &mut seen, n_lines(3));
        // logrotate's delaycompress/compress: gzip writes app.log.1.gz and unlinks app.log.1.
        fs::remove_file(&rotated).expect("rm");
        pump(&mut t, &mut seen, |s| s.closed(old).is_some());
        assert_eq!(seen.closed(old), Some(CloseReason::Deleted));
        assert_eq!(seen.texts_of(old), ["one", "two"]);
        assert_eq!(t.open_files(), 1);
    }

    #[test]
    fn unterminated_line_waits_for_its_newline() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"done\nhalf");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        settle(&mut t, &mut seen, Duration::from_millis(100));
        assert_eq!(seen.texts(), ["done"]);
        append(&p, b" and half\n");
        pump(&mut t, &mut seen, n_lines(2));
        assert_eq!(seen.texts(), ["done", "half and half"]);
        assert_eq!(seen.lines[1].end_offset, 19);
    }

    #[test]
    fn long_line_is_truncated_with_exact_offset_and_reading_goes_on() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        let mut content = vec![b'x'; 300_000];
        content.extend_from_slice(b"\nnext\n");
        append(&p, &content);
        let mut o = opts(d.path(), "*.log");
        o.max_line_bytes = 1000;
        o.read_buffer_bytes = 4096;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        assert_eq!(seen.lines[0].bytes.len(), 1000);
        assert_eq!(seen.lines[0].truncated_bytes, 299_000);
        assert_eq!(seen.lines[0].end_offset, 300_001);
        assert_eq!(seen.texts()[1], "next");
        assert_eq!(seen.lines[1].end_offset, 300_006);
    }

    #[test]
    fn fingerprint_grows_with_the_file_up_to_fingerprint_bytes() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        fs::write(&p, b"").expect("create");
        let mut o = opts(d.path(), "*.log");
        o.fingerprint_bytes = 16;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        settle(&mut t, &mut seen, Duration::from_millis(50));
        assert_eq!(t.position(0, 0).map(|s| s.fingerprint.len), Some(0));
        append(&p, b"0123456789\n");
        pump(&mut t, &mut seen, n_lines(1));
        assert_eq!(t.position(0, 11).map(|s| s.fingerprint.len), Some(11));
        append(&p, b"abcdefghij\n");
        pump(&mut t, &mut seen, n_lines(2));
        let fp = t.position(0, 22).expect("pos").fingerprint;
        assert_eq!(fp.len, 16);
        assert_eq!(fp.crc, crc32c::crc32c(b"0123456789\nabcde"));
    }

    #[test]
    fn latin1_and_utf16_files_are_decoded_with_byte_offsets() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("latin.log");
        append(&p, b"caf\xe9\n");
        let mut o = opts(d.path(), "latin.log");
        o.encoding = encoding_rs::WINDOWS_1252;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        assert_eq!(seen.texts(), ["café"]);
        assert_eq!(seen.lines[0].end_offset, 5);

        let p = d.path().join("wide.log");
        let mut bytes = vec![0xff, 0xfe];
        for u in "héllo\r\nwörld\n".encode_utf16() {
            bytes.extend(u.to_le_bytes());
        }
        append(&p, &bytes);
        let mut o = opts(d.path(), "wide.log");
        o.encoding = encoding_rs::UTF_16LE;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(2));
        assert_eq!(seen.texts(), ["héllo", "wörld"]);
        assert_eq!(seen.lines[0].end_offset, 2 + 14);
        assert_eq!(seen.lines[1].end_offset, bytes.len() as u64);
    }

    #[test]
    fn compressed_and_special_files_are_skipped_with_a_notice() {
        let d = tempfile::tempdir().expect("tempdir");
        append(
            &d.path().join("a.log.1.gz"),
            &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
        );
        append(
            &d.path().join("a.log.2.zst"),
            &[0x28, 0xb5, 0x2f, 0xfd, 0, 0],
        );
        append(&d.path().join("a.log"), b"text\n");
        let mut t = Tailer::new(opts(d.path(), "a.log*"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        // logrotate's gzip creates the file empty, then writes it.
        let gz = d.path().join("a.log.3.gz");
        fs::write(&gz, b"").expect("create");
        pump(&mut t, &mut seen, |s| s.opened().iter().any(|o| o.1 == gz));
        append(&gz, &[0x1f, 0x8b, 8, 0, b'\n', 0, 0]);
        pump(&mut t, &mut seen, |s| {
            s.notices
                .iter()
                .filter(|n| matches!(n, Notice::Skipped { .. }))
                .count()
                == 3
        });
        settle(&mut t, &mut seen, Duration::from_millis(200));
        assert_eq!(seen.texts(), ["text"]);
        let skipped: Vec<(String, String)> = seen
            .notices
            .iter()
            .filter_map(|n| match n {
                Notice::Skipped { path, reason } => Some((
                    path.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    reason.clone(),
                )),
                _ => None,
            })
            .collect();
        assert!(skipped.contains(&("a.log.1.gz".into(), "gzip-compressed".into())));
        assert!(skipped.contains(&("a.log.2.zst".into(), "zstd-compressed".into())));
        assert!(skipped.contains(&("a.log.3.gz".into(), "gzip-compressed".into())));
        assert_eq!(t.open_files(), 1);
    }

    #[test]
    fn excluded_files_are_not_read() {
        let d = tempfile::tempdir().expect("tempdir");
        append(&d.path().join("keep.log"), b"kept\n");
        append(&d.path().join("debug.log"), b"dropped\n");
        let mut o = opts(d.path(), "*.log");
        o.exclude = vec!["*/debug.*".into()];
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        settle(&mut t, &mut seen, Duration::from_millis(100));
        assert_eq!(seen.texts(), ["kept"]);
    }

    #[test]
    fn new_directory_and_file_are_found_through_inotify_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut t = Tailer::new(opts(d.path(), "pods/*/*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        settle(&mut t, &mut seen, Duration::from_millis(50));
        // `pods` does not exist yet; the tailer watches its parent. rescan_interval is an hour.
        let dir = d.path().join("pods/one");
        fs::create_dir_all(&dir).expect("mkdir");
        append(&dir.join("c.log"), b"hello\n");
        pump(&mut t, &mut seen, n_lines(1));
        append(&dir.join("c.log"), b"again\n");
        pump(&mut t, &mut seen, n_lines(2));
        assert_eq!(seen.texts(), ["hello", "again"]);
    }

    #[test]
    fn symlinked_files_are_followed_and_their_writes_noticed() {
        let d = tempfile::tempdir().expect("tempdir");
        let target_dir = d.path().join("pods/p1");
        fs::create_dir_all(&target_dir).expect("mkdir");
        fs::create_dir_all(d.path().join("containers")).expect("mkdir");
        let target = target_dir.join("0.log");
        append(&target, b"one\n");
        let link = d.path().join("containers/p1.log");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        let mut t = Tailer::new(opts(d.path(), "containers/*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        append(&target, b"two\n");
        pump(&mut t, &mut seen, n_lines(2));
        assert_eq!(seen.texts(), ["one", "two"]);
        assert_eq!(seen.opened()[0].1, link);
    }

    #[test]
    fn reading_is_fair_across_files() {
        let d = tempfile::tempdir().expect("tempdir");
        append(
            &d.path().join("big.log"),
            "line\n".repeat(100_000).as_bytes(),
        );
        append(&d.path().join("small.log"), b"small\n");
        let mut o = opts(d.path(), "*.log");
        o.read_buffer_bytes = 4096;
        let mut t = Tailer::new(o, vec![]).expect("tailer");
        let mut out = Vec::new();
        // The small file's line comes within the first two turns, not after 100,000 lines.
        t.read(&mut out, 2000);
        assert!(out.iter().any(|l| &l.bytes[..] == b"small"));
        assert!(out.len() <= 2000);
        let mut seen = Seen {
            lines: out,
            notices: Vec::new(),
        };
        pump(&mut t, &mut seen, n_lines(100_001));
        settle(&mut t, &mut seen, Duration::from_millis(50));
        assert_eq!(seen.lines.len(), 100_001);
    }

    #[test]
    fn without_inotify_files_are_polled() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("app.log");
        append(&p, b"one\n");
        let mut o = opts(d.path(), "*.log");
        o.rescan_interval = Duration::from_millis(100);
        let mut t = Tailer::with_inotify(o, vec![], false).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        assert!(
            matches!(seen.notices[0], Notice::Error { .. }),
            "{:?}",
            seen.notices
        );
        append(&p, b"two\n");
        append(&d.path().join("other.log"), b"three\n");
        pump(&mut t, &mut seen, n_lines(3));
        let mut texts = seen.texts();
        texts.sort();
        assert_eq!(texts, ["one", "three", "two"]);
    }

    #[test]
    fn non_regular_files_are_skipped() {
        let d = tempfile::tempdir().expect("tempdir");
        let fifo = d.path().join("pipe.log");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(status.success());
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut notices = Vec::new();
        t.drain_notices(&mut notices);
        assert_eq!(
            notices,
            [Notice::Skipped {
                path: Arc::from(fifo.as_path()),
                reason: "not a regular file".into()
            }]
        );
        assert_eq!(t.open_files(), 0);
    }

    #[test]
    fn close_all_closes_everything_without_flushing_partial_lines() {
        let d = tempfile::tempdir().expect("tempdir");
        append(&d.path().join("a.log"), b"a\npartial");
        let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
        let mut seen = Seen::default();
        pump(&mut t, &mut seen, n_lines(1));
        t.close_all();
        t.drain_notices(&mut seen.notices);
        assert_eq!(seen.closed(0), Some(CloseReason::Shutdown));
        assert_eq!(t.read(&mut seen.lines, 10), 0);
        assert_eq!(t.position(0, 2).map(|p| p.offset), Some(2));
    }
}
