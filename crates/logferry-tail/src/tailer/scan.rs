//! Finding files: the include patterns walked (at start, on inotify events, every
//! `rescan_interval`), the result reconciled with the open files (new ones opened and matched
//! to saved positions, ones no matched path leads to any more sent on their way out), the
//! directories to watch, and saved files rotated away while logferry was stopped.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::*;
use crate::identity::{compression_magic, fingerprint, fingerprint_matches, read_head, MAGIC_LEN};

impl Tailer {
    pub(super) fn handle_events(&mut self, now: Instant) {
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

    /// Walks the include patterns and reconciles the result with the open files.
    pub(super) fn rescan(&mut self, now: Instant) {
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
    pub(super) fn watch_dirs(&mut self, dirs: Vec<PathBuf>, now: Instant) {
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
    pub(super) fn found_known(
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
    pub(super) fn open_path(&mut self, path: &Path, ino: u64, now: Instant) -> Option<FileId> {
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
    pub(super) fn insert_file(
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
                budget: self
                    .opts
                    .max_file_bytes_per_second
                    .map(|rate| budget::Budget::new(rate, now)),
                paused_until: None,
            },
        );
        self.mark_ready(id);
        id
    }

    /// Saved positions whose file is at no matched path: look for it, by key and fingerprint,
    /// in the directory it was saved in (logrotate renames within the directory). Found: finish
    /// it and close it. Not found: report it missing.
    pub(super) fn find_rotated_while_stopped(&mut self, now: Instant) {
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
}
