//! Reading: one turn of a file (its buffered lines, then at most one `pread`), round-robin
//! across the files with data; compression noticed in a file that started empty; the
//! fingerprint grown with the file.

use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use super::*;
use crate::identity::{compression_magic, fingerprint, read_head, MAGIC_LEN};
use crate::lines::{LineSplitter, SplitLine};

impl Tailer {
    /// One turn of file `id`: its buffered lines, then at most one read. Returns whether the
    /// file should stay in the ready queue.
    pub(super) fn turn(
        &mut self,
        id: FileId,
        out: &mut Vec<Line>,
        limit: usize,
        now: Instant,
    ) -> bool {
        let Some(f) = self.open.get_mut(&id) else {
            return false;
        };
        if !emit_held(id, out, limit, f.carry.is_some(), || f.carry.take()) {
            return true;
        }
        if !drain_lines(id, &mut f.splitter, out, limit) {
            return true;
        }
        let mut want = self.opts.read_buffer_bytes.max(1);
        if let Some(budget) = f.budget.as_mut() {
            match budget.allow(want, now) {
                Ok(allowed) => want = allowed,
                Err(until) => {
                    f.paused_until = Some(until);
                    self.paused.push(id);
                    self.pauses += 1;
                    return false;
                }
            }
        }
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
        if let Some(budget) = f.budget.as_mut() {
            budget.spend(n);
        }
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
            f.splitter.release_if_empty();
            if f.phase == Phase::Deleted {
                return self.finish(id, CloseReason::Deleted, out, limit);
            }
            return false;
        }
        // At the end: truncated, deleted, or rotated away and done?
        f.splitter.release_if_empty();
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
}

/// Emits a held line (`held`: there is one; `take` hands it over) if `out` has room below
/// `limit`. `false`: no room, the line stays held for the next turn.
pub(super) fn emit_held(
    id: FileId,
    out: &mut Vec<Line>,
    limit: usize,
    held: bool,
    take: impl FnOnce() -> Option<SplitLine>,
) -> bool {
    if !held {
        return true;
    }
    if out.len() >= limit {
        return false;
    }
    if let Some(l) = take() {
        out.push(to_line(id, l));
    }
    true
}

pub(super) fn to_line(id: FileId, l: SplitLine) -> Line {
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
