//! Recovery on open: scan every segment, repair what a crash can leave
//! behind, quarantine what only corruption can explain.
//!
//! Classification of the first invalid bytes found in a segment:
//!
//! * the data simply stops (partial header, or a header whose checksum is
//!   valid but whose payload runs past end-of-file), or everything from there
//!   to end-of-file is zero bytes (file size extended but data blocks never
//!   written, as some file systems leave it after power loss) — in the **last**
//!   segment that is a *torn tail*: an append that never returned. It is
//!   truncated away and reported as [`RecoveryEvent::TornTail`];
//! * anything else (checksum mismatch with data after it, id out of sequence,
//!   absurd length, or any damage in a segment that is not the last one, which
//!   was fsynced before the writer moved on) is *corruption*: the file is
//!   renamed to `*.corrupt` (never deleted), the intact prefix is copied back
//!   under the original name, and [`RecoveryEvent::Quarantined`] is reported.
//!
//! Quarantine is crash-safe at every step: the prefix is written to
//! `NAME.tmp` and fsynced, the original is hard-linked (or copied) to
//! `NAME.corrupt`, then `NAME.tmp` is renamed over `NAME` and the directory
//! fsynced. A crash in between leaves either the original (re-scanned next
//! time) or the repaired file, plus a `.tmp` leftover that the next open
//! removes.

use std::collections::VecDeque;
use std::fs;

use logferry_private_files as private_files;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{RecoveryEvent, SpoolError};
use crate::format::MAX_FIRST_ID;
use crate::format::{
    decode_checkpoint, parse_record, parse_segment_file_name, Corruption, Parsed, CHECKPOINT_FILE,
    CORRUPT_EXT, HEADER_LEN, TMP_EXT,
};

const SCAN_CHUNK: u64 = 1 << 20;

/// Metadata of one live segment: ids `[first, end)` in `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegMeta {
    pub first: u64,
    pub end: u64,
    pub len: u64,
}

pub(crate) struct Recovered {
    pub segments: VecDeque<SegMeta>,
    pub watermark: u64,
    pub next_id: u64,
    pub events: Vec<RecoveryEvent>,
    /// `(id, appended_ms)` of the first record of each second, ids >= watermark.
    pub time_marks: VecDeque<(u64, u64)>,
}

enum Outcome {
    Clean,
    /// Data ends inside a record (or a zero-filled tail) at `valid_len`.
    Short,
    Bad(Corruption),
}

struct Scan {
    records: u64,
    valid_len: u64,
    file_len: u64,
    outcome: Outcome,
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<(), SpoolError> {
    private_files::fsync_dir(dir).map_err(|e| SpoolError::io("fsyncing directory", dir, e))
}

/// Pushes a time mark if `ms` starts a new wall-clock second.
pub(crate) fn push_time_mark(marks: &mut VecDeque<(u64, u64)>, id: u64, ms: u64) {
    if marks.back().is_none_or(|&(_, t)| t / 1000 != ms / 1000) {
        marks.push_back((id, ms));
    }
}

fn scan_segment(
    path: &Path,
    first: u64,
    max_len: u32,
    watermark: u64,
    marks: &mut VecDeque<(u64, u64)>,
) -> Result<Scan, SpoolError> {
    let mut file =
        private_files::open_read(path).map_err(|e| SpoolError::io("opening segment", path, e))?;
    let file_len = file
        .metadata()
        .map_err(|e| SpoolError::io("reading metadata of", path, e))?
        .len();
    let mut buf: Vec<u8> = Vec::with_capacity(SCAN_CHUNK as usize);
    let mut buf_start = 0u64; // file offset of buf[0]
    let mut pos = 0usize;
    let mut eof = false;
    let mut records = 0u64;
    let mut expected = first;
    let outcome = loop {
        match parse_record(&buf[pos..], expected, max_len) {
            Parsed::Record(h) => {
                if h.id >= watermark {
                    push_time_mark(marks, h.id, h.appended_ms);
                }
                pos += HEADER_LEN + h.len as usize;
                records += 1;
                expected += 1;
            }
            Parsed::NeedMore { needed } => {
                if eof {
                    break if pos == buf.len() {
                        Outcome::Clean
                    } else {
                        Outcome::Short
                    };
                }
                buf.drain(..pos);
                buf_start += pos as u64;
                pos = 0;
                let want = SCAN_CHUNK.max((needed - buf.len()) as u64);
                let n = (&mut file)
                    .take(want)
                    .read_to_end(&mut buf)
                    .map_err(|e| SpoolError::io("reading segment", path, e))?;
                if n == 0 {
                    eof = true;
                }
            }
            Parsed::Bad(c) => break Outcome::Bad(c),
        }
    };
    Ok(Scan {
        records,
        valid_len: buf_start + pos as u64,
        file_len,
        outcome,
    })
}

fn rest_is_zero(path: &Path, from: u64) -> Result<bool, SpoolError> {
    use std::io::{Seek, SeekFrom};
    let mut f =
        private_files::open_read(path).map_err(|e| SpoolError::io("opening segment", path, e))?;
    f.seek(SeekFrom::Start(from))
        .map_err(|e| SpoolError::io("seeking in segment", path, e))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| SpoolError::io("reading segment", path, e))?;
        if n == 0 {
            return Ok(true);
        }
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
    }
}

fn unique_corrupt_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plain = path.with_file_name(format!("{name}.{CORRUPT_EXT}"));
    if !plain.exists() {
        return plain;
    }
    let ms = crate::now_ms();
    for n in 0u32.. {
        let p = path.with_file_name(format!("{name}.{ms}-{n}.{CORRUPT_EXT}"));
        if !p.exists() {
            return p;
        }
    }
    plain
}

/// Moves `path` aside as `*.corrupt` and, if `valid_len > 0`, puts the intact
/// prefix back under `path`. Returns the quarantine path.
fn quarantine(dir: &Path, path: &Path, valid_len: u64) -> Result<PathBuf, SpoolError> {
    let corrupt = unique_corrupt_path(path);
    if valid_len == 0 {
        fs::rename(path, &corrupt).map_err(|e| SpoolError::io("quarantining", path, e))?;
        fsync_dir(dir)?;
        return Ok(corrupt);
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!("{name}.{TMP_EXT}"));
    {
        let mut src = private_files::open_read(path)
            .map_err(|e| SpoolError::io("opening segment", path, e))?;
        // A stale temp file from an earlier crash is removed first (unlink never follows a link).
        let _ = fs::remove_file(&tmp);
        let mut dst =
            private_files::create_new(&tmp).map_err(|e| SpoolError::io("creating", &tmp, e))?;
        std::io::copy(&mut (&mut src).take(valid_len), &mut dst)
            .map_err(|e| SpoolError::io("copying intact prefix to", &tmp, e))?;
        dst.flush()
            .and_then(|_| dst.sync_all())
            .map_err(|e| SpoolError::io("fsyncing", &tmp, e))?;
    }
    if fs::hard_link(path, &corrupt).is_err() {
        let copied = private_files::open_read(path).and_then(|mut src| {
            let mut dst = private_files::create_new(&corrupt)?;
            std::io::copy(&mut src, &mut dst)?;
            dst.sync_all()
        });
        copied.map_err(|e| SpoolError::io("copying to", &corrupt, e))?;
    }
    fs::rename(&tmp, path).map_err(|e| SpoolError::io("replacing", path, e))?;
    fsync_dir(dir)?;
    Ok(corrupt)
}

fn read_checkpoint(dir: &Path, events: &mut Vec<RecoveryEvent>) -> Result<u64, SpoolError> {
    let path = dir.join(CHECKPOINT_FILE);
    match private_files::read(&path) {
        Ok(bytes) => match decode_checkpoint(&bytes) {
            // Ids at or above MAX_FIRST_ID cannot name a segment: believing such a watermark
            // would put new appends in files recovery cannot see (found by the fuzzer).
            Ok(w) if w >= MAX_FIRST_ID => {
                events.push(RecoveryEvent::CheckpointInvalid {
                    path,
                    reason: format!("watermark {w} is beyond the largest record id"),
                });
                Ok(0)
            }
            Ok(w) => Ok(w),
            Err(reason) => {
                events.push(RecoveryEvent::CheckpointInvalid { path, reason });
                Ok(0)
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(SpoolError::io("reading", path, e)),
    }
}

/// Scans and repairs `dir`. The caller holds the directory lock.
pub(crate) fn recover(dir: &Path, max_record_bytes: u32) -> Result<Recovered, SpoolError> {
    let mut events = Vec::new();
    let mut seg_files: Vec<(u64, PathBuf)> = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| SpoolError::io("listing", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| SpoolError::io("listing", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(first) = parse_segment_file_name(name) {
            seg_files.push((first, path));
        } else if name.ends_with(&format!(".{TMP_EXT}")) {
            fs::remove_file(&path).map_err(|e| SpoolError::io("removing", &path, e))?;
            events.push(RecoveryEvent::StaleTempRemoved { path });
        }
    }
    seg_files.sort();

    let watermark = read_checkpoint(dir, &mut events)?;
    let mut segments = VecDeque::new();
    let mut marks = VecDeque::new();
    let mut prev_end = 0u64;
    let n = seg_files.len();
    for i in 0..n {
        let (first, ref path) = seg_files[i];
        let next_first = seg_files.get(i + 1).map(|s| s.0);
        let is_last = next_first.is_none();
        // Wholly below the checkpoint: acknowledged, delete without reading.
        if next_first.is_some_and(|nf| nf <= watermark) {
            fs::remove_file(path).map_err(|e| SpoolError::io("removing", path, e))?;
            continue;
        }
        let scan = if first < prev_end {
            // Overlaps the previous segment: cannot be trusted at all.
            Scan {
                records: 0,
                valid_len: 0,
                file_len: 0,
                outcome: Outcome::Bad(Corruption::IdMismatch {
                    expected: prev_end,
                    found: first,
                }),
            }
        } else {
            scan_segment(path, first, max_record_bytes, watermark, &mut marks)?
        };
        let torn = match &scan.outcome {
            Outcome::Clean => false,
            Outcome::Short => is_last,
            Outcome::Bad(_) => is_last && rest_is_zero(path, scan.valid_len)?,
        };
        match scan.outcome {
            Outcome::Clean => {}
            _ if torn => {
                let f = private_files::open_write(path)
                    .map_err(|e| SpoolError::io("opening segment", path, e))?;
                f.set_len(scan.valid_len)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| SpoolError::io("truncating torn tail of", path, e))?;
                events.push(RecoveryEvent::TornTail {
                    segment: path.clone(),
                    records_kept: scan.records,
                    valid_len: scan.valid_len,
                    removed_bytes: scan.file_len.saturating_sub(scan.valid_len),
                });
            }
            Outcome::Short | Outcome::Bad(_) => {
                let reason = match &scan.outcome {
                    Outcome::Bad(c) => c.to_string(),
                    _ => "segment ends inside a record".to_string(),
                };
                let moved_to = quarantine(dir, path, scan.valid_len)?;
                events.push(RecoveryEvent::Quarantined {
                    segment: path.clone(),
                    moved_to,
                    offset: scan.valid_len,
                    reason,
                    records_kept: scan.records,
                    first_lost_id: first.max(prev_end) + scan.records,
                    last_lost_id: next_first.map(|nf| nf.saturating_sub(1)),
                });
            }
        }
        if scan.records == 0 {
            if path.exists() {
                fs::remove_file(path).map_err(|e| SpoolError::io("removing", path, e))?;
                events.push(RecoveryEvent::EmptySegmentRemoved {
                    segment: path.clone(),
                });
            }
            continue;
        }
        let meta = SegMeta {
            first,
            end: first + scan.records,
            len: scan.valid_len,
        };
        prev_end = meta.end;
        segments.push_back(meta);
    }
    let last_end = segments.back().map_or(1, |s| s.end);
    let next_id = last_end.max(watermark).max(1);
    Ok(Recovered {
        segments,
        watermark,
        next_id,
        events,
        time_marks: marks,
    })
}
