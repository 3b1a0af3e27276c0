//! The merged view over many journal files, as sd-journal presents it.
//!
//! Each file keeps its own read position (an index into its entry array) and at most one
//! loaded candidate; `next_entry` emits the smallest candidate under sd-journal's order
//! (same seqnum_id: seqnum; same boot: monotonic; else realtime; else xor_hash). A
//! candidate equal to the entry just emitted is the same entry stored in another file and
//! is dropped once, as sd-journal does.
//!
//! One deliberate difference: sd-journal also silently drops a candidate that sorts
//! *before* the entry just emitted (possible only when files disagree on order, e.g. clock
//! jumps across boots in files with different seqnum_ids). A shipper must not lose lines,
//! so such an entry is emitted late instead. On consistent files, which is every file
//! journald writes in normal operation, the output is identical to journalctl's (checked
//! by the differential tests).
//!
//! Files are identified by (device, inode), not by path: journald archives by renaming
//! `system.journal` to `system@...journal` and, after a crash, to `...journal~`, and the
//! read position must survive both. A file that disappears (vacuuming) stays mapped and is
//! read to its end before it is dropped, so entries not yet read are not lost to a vacuum.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::compress::Decompressor;
use crate::entry::{Cursor, Entry};
use crate::file::{EntryMeta, JournalFile, Slot};
use crate::follow::Watcher;
use crate::format::{STATE_ARCHIVED, STATE_OFFLINE, STATE_ONLINE};
use crate::Error;

/// Default directories of the system journal (persistent, then volatile).
pub const DEFAULT_DIRS: [&str; 2] = ["/var/log/journal", "/run/log/journal"];

/// How many recent per-file problems are kept for [`Journal::file_errors`].
const MAX_KEPT_ERRORS: usize = 256;

/// Fields larger than this (after decompression) are dropped with an error, so that a
/// corrupt size cannot exhaust memory. CloudWatch accepts at most 1 MiB per event anyway.
pub const DEFAULT_MAX_FIELD_SIZE: usize = 64 << 20;

/// How often [`Journal::wait`] rescans without inotify.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often [`Journal::wait`] rescans with inotify but no event (a safety net: journald's
/// writes, rotations and vacuums all raise events on the watched directories). Rescanning on
/// every wait cost an idle follower a readdir and a stat per file each second.
const QUIET_RESCAN: Duration = Duration::from_secs(10);

/// A problem with one file (unreadable, refused, corrupt entry or field). Reading goes on
/// with the other files and entries; the caller logs and counts these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileError {
    pub path: PathBuf,
    pub message: String,
}

impl std::fmt::Display for FileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

/// The header `state` of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Closed cleanly; journald may reopen it.
    Offline,
    /// Being written (or left so by a crashed journald: see `.journal~`).
    Online,
    /// Complete: journald will never write to it again.
    Archived,
    Unknown(u8),
}

/// What [`Journal::files`] tells about one file, for health reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub path: PathBuf,
    pub file_id: [u8; 16],
    pub seqnum_id: [u8; 16],
    pub state: FileState,
    /// Entries the header says the file has.
    pub n_entries: u64,
    /// Entries of this file consumed (emitted, skipped as duplicates or corrupt).
    pub position: u64,
    /// Deleted from its directory (vacuumed), still being read to its end.
    pub removed: bool,
    /// Its entry array chain is corrupt: the rest of it cannot be read.
    pub broken: bool,
}

#[derive(Clone, Copy)]
struct Cand {
    off: u64,
    meta: EntryMeta,
}

struct Tracked {
    jf: JournalFile,
    /// Next index of the entry array not yet looked at.
    next: u64,
    cand: Option<Cand>,
    /// No longer in its directory (vacuumed); dropped once read to the end.
    removed: bool,
    /// The entry array chain is corrupt from this index on: nothing at or after it can be
    /// read. A property of the file, not of the read position: the entries before it stay
    /// readable after any seek, and the break is reported once.
    broken_at: Option<u64>,
}

enum Source {
    Dirs(Vec<PathBuf>),
    Files(Vec<PathBuf>),
}

/// A merged, ordered reader over a set of journal files. Not thread-safe by design: the
/// async caller owns it on one blocking thread.
pub struct Journal {
    source: Source,
    files: Vec<Tracked>,
    /// Files that failed to open, with (size, mtime) so that the error is reported once
    /// and the open retried only when the file changes (a file journald is creating).
    failed: HashMap<(u64, u64), (u64, i64)>,
    /// The last emitted entry (or the cursor sought to): candidates equal to it are
    /// duplicates.
    location: Option<Cursor>,
    errors: Vec<FileError>,
    errors_total: u64,
    dec: Decompressor,
    max_field_size: usize,
    scratch_errs: Vec<String>,
    watcher: Option<Watcher>,
    watcher_failed: bool,
    /// When [`Journal::wait`] last rescanned the directories, if it has.
    rescanned: Option<Instant>,
}

impl Journal {
    /// Opens every journal file in `dirs` and their machine-id subdirectories. Directories
    /// that do not exist yet are fine (they are rescanned by [`Journal::refresh`]).
    /// Positioned at the head.
    pub fn open_dirs(dirs: &[PathBuf]) -> Result<Journal, Error> {
        for d in dirs {
            match std::fs::metadata(d) {
                Ok(m) if !m.is_dir() => {
                    return Err(Error::NotADirectory(d.clone()));
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(Error::Io {
                        path: d.clone(),
                        source: e,
                    })
                }
            }
        }
        let mut j = Journal::new(Source::Dirs(dirs.to_vec()));
        j.refresh()?;
        Ok(j)
    }

    /// [`Journal::open_dirs`] on `/var/log/journal` and `/run/log/journal`.
    pub fn open_default() -> Result<Journal, Error> {
        let dirs: Vec<PathBuf> = DEFAULT_DIRS.iter().map(PathBuf::from).collect();
        Journal::open_dirs(&dirs)
    }

    /// Opens exactly these files. A file that cannot be read is reported in
    /// [`Journal::file_errors`] and the others are still read.
    pub fn open_files(paths: &[PathBuf]) -> Result<Journal, Error> {
        let mut j = Journal::new(Source::Files(paths.to_vec()));
        j.refresh()?;
        Ok(j)
    }

    fn new(source: Source) -> Journal {
        Journal {
            source,
            files: Vec::new(),
            failed: HashMap::new(),
            location: None,
            errors: Vec::new(),
            errors_total: 0,
            dec: Decompressor::new(),
            max_field_size: DEFAULT_MAX_FIELD_SIZE,
            scratch_errs: Vec::new(),
            watcher: None,
            watcher_failed: false,
            rescanned: None,
        }
    }

    /// Largest field (after decompression) that is returned; larger ones are dropped and
    /// reported in [`Journal::file_errors`]. An entry's fields together may total four
    /// times this.
    pub fn set_max_field_size(&mut self, bytes: usize) {
        self.max_field_size = bytes;
    }

    /// Paths of the files currently read, in merge order of ties.
    pub fn file_paths(&self) -> Vec<&Path> {
        self.files.iter().map(|f| f.jf.path()).collect()
    }

    /// The files currently read and how far.
    pub fn files(&self) -> Vec<FileInfo> {
        self.files
            .iter()
            .map(|f| FileInfo {
                path: f.jf.path().to_path_buf(),
                file_id: f.jf.file_id,
                seqnum_id: f.jf.seqnum_id,
                state: match f.jf.state() {
                    STATE_OFFLINE => FileState::Offline,
                    STATE_ONLINE => FileState::Online,
                    STATE_ARCHIVED => FileState::Archived,
                    other => FileState::Unknown(other),
                },
                n_entries: f.jf.n_entries(),
                position: f.next - u64::from(f.cand.is_some()),
                removed: f.removed,
                broken: f.broken_at.is_some(),
            })
            .collect()
    }

    /// Lets the kernel drop the mapped pages of every file from this process's resident set
    /// (they stay in the page cache). Reading touches each page of a journal once, so without
    /// this a reader that went through a few hundred MB of journal shows them all in its RSS.
    /// Cheap (one `madvise` per file): call it every few thousand entries or when idle.
    pub fn release_memory(&mut self) {
        for f in &self.files {
            f.jf.release_pages();
        }
    }

    /// The most recent per-file problems (at most 256 are kept; see
    /// [`Journal::file_error_count`] for the total).
    pub fn file_errors(&self) -> &[FileError] {
        &self.errors
    }

    /// Returns and forgets the kept per-file problems.
    pub fn take_file_errors(&mut self) -> Vec<FileError> {
        std::mem::take(&mut self.errors)
    }

    /// Number of per-file problems seen since opening, including those no longer kept.
    pub fn file_error_count(&self) -> u64 {
        self.errors_total
    }

    fn report(errors: &mut Vec<FileError>, total: &mut u64, path: &Path, message: String) {
        *total += 1;
        if errors.len() >= MAX_KEPT_ERRORS {
            errors.remove(0);
        }
        errors.push(FileError {
            path: path.to_path_buf(),
            message,
        });
    }

    /// Positions before the first entry of every file.
    pub fn seek_head(&mut self) {
        self.location = None;
        for f in &mut self.files {
            f.next = 0;
            f.cand = None;
        }
    }

    /// Positions after the last entry of every file: `next_entry` returns only entries
    /// written from now on.
    pub fn seek_tail(&mut self) {
        self.location = None;
        for f in &mut self.files {
            f.next = f.jf.n_entries();
            f.cand = None;
        }
    }

    /// Positions before the first entry whose realtime is `usec` or later, in every file.
    /// Like sd-journal this bisects each file, which assumes the clock did not go back
    /// inside a file.
    pub fn seek_realtime(&mut self, usec: u64) {
        self.location = None;
        for i in 0..self.files.len() {
            self.position(i, |m| m.realtime < usec, |_| false);
        }
    }

    /// Positions so that the next entry is the first one after the cursor's position:
    /// the cursor's own entry (in any file) is not returned again, and if it no longer
    /// exists (vacuumed) nothing after its position is skipped.
    pub fn seek_after_cursor(&mut self, cursor: &Cursor) {
        let loc = *cursor;
        for i in 0..self.files.len() {
            let sid = self.files[i].jf.seqnum_id;
            let same_seq = loc.seqnum_id == Some(sid) && loc.seqnum.is_some();
            let target = loc.seqnum.unwrap_or(0);
            // Within one seqnum space seqnums only grow, so bisect on them; otherwise
            // (another journald instance's files) scan, reading entry headers only.
            self.position(
                i,
                |m| same_seq && m.seqnum < target,
                |m| at_or_before(m, &sid, &loc),
            );
        }
        self.location = Some(loc);
    }

    /// Sets file `i`'s position to the first entry for which `before` is false (bisection,
    /// `before` must be monotonic), then moves on while `skip` holds.
    fn position(
        &mut self,
        i: usize,
        before: impl Fn(&EntryMeta) -> bool,
        skip: impl Fn(&EntryMeta) -> bool,
    ) {
        let Some(f) = self.files.get_mut(i) else {
            return;
        };
        f.cand = None;
        let end = f.jf.n_entries().min(f.broken_at.unwrap_or(u64::MAX));
        let (mut lo, mut hi) = (0u64, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match f.jf.slot(mid) {
                Slot::Entry(_, m) if before(&m) => lo = mid + 1,
                Slot::Entry(..) | Slot::NotYet => hi = mid,
                // A bad entry breaks the bisection's premise: fall back to scanning.
                Slot::Bad(_) | Slot::Broken(_) => {
                    lo = 0;
                    break;
                }
            }
        }
        f.next = lo;
        let (errors, total) = (&mut self.errors, &mut self.errors_total);
        loop {
            fill(f, errors, total);
            match f.cand {
                Some(c) if before(&c.meta) || skip(&c.meta) => f.cand = None,
                _ => break,
            }
        }
    }

    /// The next entry in merged order, or `None` when no file has more for now.
    pub fn next_entry(&mut self) -> Result<Option<Entry>, Error> {
        let mut e = Entry::new();
        Ok(self.next_entry_into(&mut e)?.then_some(e))
    }

    /// Like [`Journal::next_entry`] but refills `entry`, reusing its buffers: no
    /// allocation per entry once they have grown. Returns false when there is no entry
    /// for now (`entry` is then left as it was).
    pub fn next_entry_into(&mut self, entry: &mut Entry) -> Result<bool, Error> {
        let mut best: Option<(usize, Cand)> = None;
        for i in 0..self.files.len() {
            let Some(f) = self.files.get_mut(i) else {
                continue;
            };
            let c = loop {
                fill(f, &mut self.errors, &mut self.errors_total);
                match (f.cand, &self.location) {
                    (Some(c), Some(loc)) if is_same(&c.meta, &f.jf.seqnum_id, loc) => {
                        f.cand = None;
                    }
                    (c, _) => break c,
                }
            };
            let Some(c) = c else { continue };
            let better = match &best {
                None => true,
                Some((b, bc)) => {
                    let bsid = self
                        .files
                        .get(*b)
                        .map(|f| f.jf.seqnum_id)
                        .unwrap_or_default();
                    let fsid = self
                        .files
                        .get(i)
                        .map(|f| f.jf.seqnum_id)
                        .unwrap_or_default();
                    compare(&c.meta, &fsid, &location_of(&bc.meta, &bsid)) == Ordering::Less
                }
            };
            if better {
                best = Some((i, c));
            }
        }
        let Some((i, c)) = best else {
            return Ok(false);
        };
        let Some(f) = self.files.get_mut(i) else {
            return Ok(false);
        };
        f.cand = None;
        let sid = f.jf.seqnum_id;
        self.scratch_errs.clear();
        f.jf.read_fields(
            c.off,
            entry,
            &mut self.dec,
            self.max_field_size,
            &mut self.scratch_errs,
        );
        for e in self.scratch_errs.drain(..) {
            Self::report(&mut self.errors, &mut self.errors_total, f.jf.path(), e);
        }
        entry.realtime_usec = c.meta.realtime;
        entry.monotonic_usec = c.meta.monotonic;
        entry.boot_id = c.meta.boot_id;
        entry.seqnum = c.meta.seqnum;
        entry.seqnum_id = sid;
        entry.xor_hash = c.meta.xor_hash;
        self.location = Some(location_of(&c.meta, &sid));
        Ok(true)
    }

    /// Rescans the directories for new, renamed and removed files and re-reads every
    /// file's size and header. New files are read from their first entry: they were
    /// created after we looked, so all of their entries are new to us.
    pub fn refresh(&mut self) -> Result<(), Error> {
        let found: Vec<PathBuf> = match &self.source {
            Source::Dirs(dirs) => {
                let mut found = Vec::new();
                for d in dirs.clone() {
                    self.scan_dir(&d, true, &mut found);
                }
                found
            }
            Source::Files(paths) => paths.clone(),
        };
        let mut seen = vec![false; self.files.len()];
        let mut new_files = Vec::new();
        for path in found {
            let meta = match std::fs::metadata(&path) {
                Ok(m) => m,
                Err(e) => {
                    // Deleted between readdir and stat is normal while journald rotates.
                    if e.kind() != std::io::ErrorKind::NotFound
                        || matches!(self.source, Source::Files(_))
                    {
                        Self::report(
                            &mut self.errors,
                            &mut self.errors_total,
                            &path,
                            format!("stat: {e}"),
                        );
                    }
                    continue;
                }
            };
            use std::os::unix::fs::MetadataExt;
            let key = (meta.dev(), meta.ino());
            if let Some(pos) = self.files.iter().position(|f| (f.jf.dev, f.jf.ino) == key) {
                if let Some(s) = seen.get_mut(pos) {
                    *s = true;
                }
                if let Some(f) = self.files.get_mut(pos) {
                    if f.jf.path() != path {
                        f.jf.set_path(path);
                    }
                }
                continue;
            }
            if new_files
                .iter()
                .any(|f: &Tracked| (f.jf.dev, f.jf.ino) == key)
            {
                continue;
            }
            let stamp = (meta.len(), meta.mtime());
            if self.failed.get(&key) == Some(&stamp) {
                continue;
            }
            // journald creates a file empty and sizes it a moment later: not corrupt, not yet
            // readable. It is looked at again on the next change.
            if meta.len() == 0 {
                continue;
            }
            match JournalFile::open(&path) {
                Ok(jf) => {
                    self.failed.remove(&key);
                    new_files.push(Tracked {
                        jf,
                        next: 0,
                        cand: None,
                        removed: false,
                        broken_at: None,
                    });
                }
                Err(e) => {
                    self.failed.insert(key, stamp);
                    Self::report(&mut self.errors, &mut self.errors_total, &path, e);
                }
            }
        }
        for (f, seen) in self.files.iter_mut().zip(seen) {
            f.removed = !seen;
        }
        new_files.sort_by(|a, b| a.jf.path().cmp(b.jf.path()));
        self.files.extend(new_files);

        let (errors, total) = (&mut self.errors, &mut self.errors_total);
        for f in &mut self.files {
            if let Err(e) = f.jf.refresh() {
                Self::report(errors, total, f.jf.path(), e);
            }
        }
        // Drop files that are gone and fully read.
        self.files.retain_mut(|f| {
            if !f.removed {
                return true;
            }
            fill(f, errors, total);
            f.cand.is_some()
        });
        Ok(())
    }

    /// Collects journal files in `dir`; descends one level into machine-id directories.
    fn scan_dir(&mut self, dir: &Path, top: bool, out: &mut Vec<PathBuf>) {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                Self::report(
                    &mut self.errors,
                    &mut self.errors_total,
                    dir,
                    format!("read_dir: {e}"),
                );
                return;
            }
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_dir() {
                if top && is_machine_dir(name) {
                    self.scan_dir(&ent.path(), false, out);
                }
            } else if is_journal_name(name) {
                out.push(ent.path());
            }
        }
    }

    /// Directories whose changes matter for follow mode.
    fn watch_dirs(&self) -> Vec<PathBuf> {
        match &self.source {
            Source::Dirs(dirs) => {
                let mut v = Vec::new();
                for d in dirs {
                    v.push(d.clone());
                    if let Ok(rd) = std::fs::read_dir(d) {
                        for ent in rd.flatten() {
                            let is_dir = ent.file_type().map(|t| t.is_dir()).unwrap_or(false);
                            if is_dir && ent.file_name().to_str().is_some_and(is_machine_dir) {
                                v.push(ent.path());
                            }
                        }
                    }
                }
                v
            }
            Source::Files(paths) => paths
                .iter()
                .filter_map(|p| p.parent().map(Path::to_path_buf))
                .collect(),
        }
    }

    /// Whether some file has an entry ready for `next_entry`.
    fn has_pending(&mut self) -> bool {
        let (errors, total) = (&mut self.errors, &mut self.errors_total);
        let mut any = false;
        for f in &mut self.files {
            fill(f, errors, total);
            any |= f.cand.is_some();
        }
        any
    }

    /// Follow mode: waits up to `timeout` for new entries (inotify on the directories,
    /// plus a rescan every second as a fallback), refreshing the file set as journald
    /// rotates, archives and vacuums. Returns true when `next_entry` has something.
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, Error> {
        let deadline = Instant::now() + timeout;
        if self.watcher.is_none() && !self.watcher_failed {
            match Watcher::new() {
                Ok(w) => self.watcher = Some(w),
                Err(e) => {
                    self.watcher_failed = true;
                    let path = self.watch_dirs().into_iter().next().unwrap_or_default();
                    Self::report(
                        &mut self.errors,
                        &mut self.errors_total,
                        &path,
                        format!("inotify unavailable, polling every second: {e}"),
                    );
                }
            }
        }
        // Rescan when something changed, when polling, and now and then as a safety net.
        let mut changed =
            self.watcher.is_none() || self.rescanned.is_none_or(|at| at.elapsed() >= QUIET_RESCAN);
        loop {
            if changed {
                self.refresh()?;
                self.rescanned = Some(Instant::now());
            }
            if changed && self.watcher.is_some() {
                // Re-added on every pass: machine-id directories can appear later.
                let dirs = self.watch_dirs();
                if let Some(w) = &mut self.watcher {
                    for d in dirs {
                        w.watch_dir(&d);
                    }
                }
            }
            if self.has_pending() {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let slice = (deadline - now).min(POLL_INTERVAL);
            changed = match &mut self.watcher {
                Some(w) => w.wait(slice).map_err(Error::Watch)?,
                None => {
                    std::thread::sleep(slice);
                    true
                }
            };
        }
    }
}

/// Loads file `f`'s next valid entry as its candidate, skipping (and reporting) corrupt
/// ones. Stops at the first index not committed yet.
fn fill(f: &mut Tracked, errors: &mut Vec<FileError>, total: &mut u64) {
    if f.cand.is_some() {
        return;
    }
    let n = f.jf.n_entries().min(f.broken_at.unwrap_or(u64::MAX));
    while f.next < n {
        match f.jf.slot(f.next) {
            Slot::Entry(off, meta) => {
                f.cand = Some(Cand { off, meta });
                f.next += 1;
                return;
            }
            Slot::NotYet => return,
            Slot::Bad(e) => {
                Journal::report(errors, total, f.jf.path(), format!("skipped: {e}"));
                f.next += 1;
            }
            Slot::Broken(e) => {
                Journal::report(
                    errors,
                    total,
                    f.jf.path(),
                    format!("entry array chain unusable, rest of file skipped: {e}"),
                );
                f.broken_at = Some(f.next);
                return;
            }
        }
    }
}

fn location_of(m: &EntryMeta, seqnum_id: &[u8; 16]) -> Cursor {
    Cursor {
        seqnum_id: Some(*seqnum_id),
        seqnum: Some(m.seqnum),
        boot_id: Some(m.boot_id),
        monotonic: Some(m.monotonic),
        realtime: Some(m.realtime),
        xor_hash: Some(m.xor_hash),
    }
}

/// sd-journal's `compare_with_location`: the entry against a (possibly partial) position.
fn compare(m: &EntryMeta, seqnum_id: &[u8; 16], l: &Cursor) -> Ordering {
    if let (Some(sid), Some(seq)) = (l.seqnum_id, l.seqnum) {
        if sid == *seqnum_id {
            let o = m.seqnum.cmp(&seq);
            if o != Ordering::Equal {
                return o;
            }
        }
    }
    if let (Some(boot), Some(mono)) = (l.boot_id, l.monotonic) {
        if boot == m.boot_id {
            let o = m.monotonic.cmp(&mono);
            if o != Ordering::Equal {
                return o;
            }
        }
    }
    if let Some(t) = l.realtime {
        let o = m.realtime.cmp(&t);
        if o != Ordering::Equal {
            return o;
        }
    }
    if let Some(x) = l.xor_hash {
        return m.xor_hash.cmp(&x);
    }
    Ordering::Equal
}

/// Whether the entry is the one at `l` (possibly a copy in another file). For a partial
/// cursor, "compares equal" can just mean "nothing to compare", so every part the cursor
/// has must then match.
fn is_same(m: &EntryMeta, seqnum_id: &[u8; 16], l: &Cursor) -> bool {
    if compare(m, seqnum_id, l) != Ordering::Equal {
        return false;
    }
    let complete = l.seqnum_id.is_some()
        && l.seqnum.is_some()
        && l.boot_id.is_some()
        && l.monotonic.is_some()
        && l.realtime.is_some()
        && l.xor_hash.is_some();
    complete
        || (l.seqnum_id.is_none_or(|s| s == *seqnum_id)
            && l.seqnum.is_none_or(|s| s == m.seqnum)
            && l.boot_id.is_none_or(|b| b == m.boot_id)
            && l.monotonic.is_none_or(|v| v == m.monotonic)
            && l.realtime.is_none_or(|v| v == m.realtime)
            && l.xor_hash.is_none_or(|v| v == m.xor_hash))
}

/// Entries to skip when resuming after cursor `l`.
fn at_or_before(m: &EntryMeta, seqnum_id: &[u8; 16], l: &Cursor) -> bool {
    compare(m, seqnum_id, l) == Ordering::Less || is_same(m, seqnum_id, l)
}

fn is_journal_name(name: &str) -> bool {
    name.ends_with(".journal") || name.ends_with(".journal~")
}

/// `<32 hex>` or `<32 hex>.<namespace>` as journald names its per-machine directories.
fn is_machine_dir(name: &str) -> bool {
    let id = name.split_once('.').map_or(name, |(id, _)| id);
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(seqnum: u64, boot: u8, mono: u64, rt: u64, x: u64) -> EntryMeta {
        EntryMeta {
            seqnum,
            realtime: rt,
            monotonic: mono,
            boot_id: [boot; 16],
            xor_hash: x,
        }
    }

    #[test]
    fn order_follows_sd_journal() {
        let (s1, s2) = ([1u8; 16], [2u8; 16]);
        // Same seqnum space: seqnum wins over time.
        let a = meta(1, 9, 500, 500, 0);
        let b = meta(2, 9, 100, 100, 0);
        assert_eq!(compare(&a, &s1, &location_of(&b, &s1)), Ordering::Less);
        // Different seqnum space, same boot: monotonic.
        assert_eq!(compare(&a, &s1, &location_of(&b, &s2)), Ordering::Greater);
        // Different boot: realtime.
        let c = meta(1, 8, 1, 400, 0);
        assert_eq!(compare(&a, &s1, &location_of(&c, &s2)), Ordering::Greater);
        // Everything equal but xor_hash.
        let d = meta(7, 8, 1, 400, 5);
        assert_eq!(compare(&c, &s1, &location_of(&d, &s2)), Ordering::Less);
        assert!(is_same(&c, &s2, &location_of(&c, &s2)));
        assert!(!is_same(&c, &s2, &location_of(&d, &s2)));
    }

    #[test]
    fn partial_cursor_only_matches_what_it_says() {
        let s1 = [1u8; 16];
        let c: Cursor = format!("s={};i=5", crate::format::id_to_hex(&s1))
            .parse()
            .unwrap();
        let other_space = meta(5, 1, 1, 1, 1);
        assert!(!at_or_before(&other_space, &[2u8; 16], &c));
        assert!(at_or_before(&other_space, &s1, &c));
        assert!(at_or_before(&meta(4, 1, 1, 1, 1), &s1, &c));
        assert!(!at_or_before(&meta(6, 1, 1, 1, 1), &s1, &c));
    }

    /// A tiny regular-layout journal file: one DATA object, `n_linked` entries in a first
    /// entry array whose `next` link points past the end of the file, and a header that
    /// claims `n_linked + 1` entries, so the chain breaks at index `n_linked`.
    fn file_with_broken_chain(n_linked: u64) -> Vec<u8> {
        use crate::format::*;
        fn put(d: &mut Vec<u8>, off: u64, bytes: &[u8]) {
            let off = off as usize;
            if d.len() < off + bytes.len() {
                d.resize(off + bytes.len(), 0);
            }
            d[off..off + bytes.len()].copy_from_slice(bytes);
        }
        fn align(n: u64) -> u64 {
            n.next_multiple_of(8)
        }
        let mut d = Vec::new();
        put(&mut d, 0, SIGNATURE);
        put(&mut d, H_SEQNUM_ID as u64, &[7; 16]);
        put(&mut d, H_HEADER_SIZE as u64, &HEADER_SIZE_MIN.to_le_bytes());
        let payload = b"MESSAGE=hi";
        let data = HEADER_SIZE_MIN;
        let data_size = DATA_PAYLOAD_OFFSET + payload.len() as u64;
        put(&mut d, data, &[OBJECT_DATA]);
        put(&mut d, data + 8, &data_size.to_le_bytes());
        put(&mut d, data + DATA_PAYLOAD_OFFSET, payload);
        let mut off = align(data + data_size);
        let mut entries = Vec::new();
        for i in 1..=n_linked {
            let size = ENTRY_ITEMS_OFFSET + 16;
            put(&mut d, off, &[OBJECT_ENTRY]);
            put(&mut d, off + 8, &size.to_le_bytes());
            put(&mut d, off + 16, &i.to_le_bytes()); // seqnum
            put(&mut d, off + 24, &(1_700_000_000_000_000 + i).to_le_bytes());
            put(&mut d, off + 32, &(1000 + i).to_le_bytes());
            put(&mut d, off + 40, &[9; 16]);
            put(&mut d, off + 56, &i.to_le_bytes()); // xor_hash
            put(&mut d, off + ENTRY_ITEMS_OFFSET, &data.to_le_bytes());
            entries.push(off);
            off = align(off + size);
        }
        let array = off;
        let array_size = ENTRY_ARRAY_ITEMS_OFFSET + 8 * n_linked;
        put(&mut d, array, &[OBJECT_ENTRY_ARRAY]);
        put(&mut d, array + 8, &array_size.to_le_bytes());
        put(&mut d, array + 16, &(1u64 << 40).to_le_bytes()); // next: past the end
        for (k, e) in entries.iter().enumerate() {
            put(
                &mut d,
                array + ENTRY_ARRAY_ITEMS_OFFSET + 8 * k as u64,
                &e.to_le_bytes(),
            );
        }
        let end = align(array + array_size);
        d.resize(end as usize, 0);
        put(
            &mut d,
            H_ARENA_SIZE as u64,
            &(end - HEADER_SIZE_MIN).to_le_bytes(),
        );
        put(&mut d, H_N_ENTRIES as u64, &(n_linked + 1).to_le_bytes());
        put(&mut d, H_ENTRY_ARRAY_OFFSET as u64, &array.to_le_bytes());
        d
    }

    fn read_seqnums(j: &mut Journal) -> Vec<u64> {
        let mut e = Entry::new();
        let mut out = Vec::new();
        while j.next_entry_into(&mut e).unwrap() {
            out.push(e.seqnum);
            assert_eq!(e.field("MESSAGE"), Some(&b"hi"[..]));
        }
        out
    }

    #[test]
    fn a_broken_entry_array_chain_loses_only_what_is_past_the_break_on_every_read() {
        // Fuzz regression journal_file/entry-array-chain-broken-reread: the file was marked
        // broken for good when the chain broke, so reading it again after seek_head (or
        // resuming after a cursor) returned nothing instead of the entries before the break.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("system.journal");
        std::fs::write(&path, file_with_broken_chain(3)).unwrap();
        let mut j = Journal::open_files(std::slice::from_ref(&path)).unwrap();

        assert_eq!(read_seqnums(&mut j), [1, 2, 3]);
        let chain_errors = |j: &Journal| {
            j.file_errors()
                .iter()
                .filter(|e| e.message.contains("entry array chain unusable"))
                .count()
        };
        assert_eq!(chain_errors(&j), 1, "{:?}", j.file_errors());
        assert!(j.files()[0].broken);

        j.seek_head();
        assert_eq!(read_seqnums(&mut j), [1, 2, 3], "second read from the head");
        let first = {
            j.seek_head();
            j.next_entry().unwrap().unwrap().cursor()
        };
        j.seek_after_cursor(&first);
        assert_eq!(read_seqnums(&mut j), [2, 3], "resume after the first entry");
        j.seek_realtime(1_700_000_000_000_003);
        assert_eq!(read_seqnums(&mut j), [3]);
        j.seek_tail();
        assert_eq!(read_seqnums(&mut j), Vec::<u64>::new());
        // The break is reported once, clearly, and stays visible in files().
        assert_eq!(chain_errors(&j), 1, "{:?}", j.file_errors());
        assert!(j.files()[0].broken);
    }

    #[test]
    fn names() {
        assert!(is_journal_name("system.journal"));
        assert!(is_journal_name("system@0001-02.journal~"));
        assert!(is_journal_name("user-1000@abc.journal"));
        assert!(!is_journal_name("system.journal.tmp"));
        assert!(is_machine_dir("3d1219c7c4c5404aaa1f6d2a48adfda4"));
        assert!(is_machine_dir("3d1219c7c4c5404aaa1f6d2a48adfda4.ns"));
        assert!(!is_machine_dir("lost+found"));
    }
}
