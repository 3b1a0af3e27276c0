//! Leaving: files rotated away, deleted or truncated. Files inotify does not cover are
//! `fstat`ed; a file at its end that is deleted, or rotated away and quiet for `rotate_wait`,
//! is finished (its unterminated last line emitted) and closed; a truncated one restarts at 0.

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use super::read::emit_held;
use super::*;
use crate::identity::fingerprint;

impl Tailer {
    /// `fstat`s the files inotify does not cover: all of them when polling, otherwise those
    /// rotated away (their new directory may not be watched) and deleted.
    pub(super) fn poll_files(&mut self, now: Instant) {
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

    /// Emits the unterminated last line (if there is room) and closes the file. Returns
    /// whether the file must stay queued (no room yet).
    pub(super) fn finish(
        &mut self,
        id: FileId,
        reason: CloseReason,
        out: &mut Vec<Line>,
        limit: usize,
    ) -> bool {
        let Some(f) = self.open.get_mut(&id) else {
            return false;
        };
        if !emit_held(id, out, limit, f.splitter.has_partial(), || {
            f.splitter.finish()
        }) {
            return true;
        }
        self.close(id, reason);
        false
    }

    /// Restarts `id` at offset 0. The unterminated line read before the truncation is kept
    /// for the next turn (it was real content), ending at the old offset.
    pub(super) fn truncated(&mut self, id: FileId) {
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

    pub(super) fn close(&mut self, id: FileId, reason: CloseReason) {
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
