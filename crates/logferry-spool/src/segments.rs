//! The segment files: naming, starting a new one (the previous fsynced first, so only the last
//! can have a torn tail), making room under `max_bytes` (acknowledged segments first, then the
//! [`FullPolicy`]), deleting acknowledged ones, and reading records back from disk for a reader
//! that fell behind the in-memory tail.

use super::*;

impl Inner {
    pub(crate) fn seg_path(&self, first: u64) -> PathBuf {
        self.dir.join(segment_file_name(first))
    }

    /// Deletes non-last segments whose records are all below `limit`.
    pub(crate) fn delete_acked_segments(&self, limit: u64) -> Result<(), SpoolError> {
        let _deleting = lock(&self.deleting);
        let victims: Vec<u64> = {
            let mut st = lock(&self.state);
            let mut v = Vec::new();
            while st.segments.len() > 1 {
                match st.segments.front().copied() {
                    Some(s) if s.end <= limit => {
                        st.segments.pop_front();
                        st.bytes_on_disk = st.bytes_on_disk.saturating_sub(s.len);
                        v.push(s.first);
                    }
                    _ => break,
                }
            }
            v
        };
        if victims.is_empty() {
            return Ok(());
        }
        let mut result = Ok(());
        for first in &victims {
            let path = self.seg_path(*first);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    lock(&self.state).io_errors += 1;
                    result = Err(SpoolError::io("deleting acknowledged segment", path, e));
                }
            }
        }
        self.space_notify.notify_one();
        result
    }

    /// Starts a new segment named after the next id. The previous one is
    /// fsynced first so that only the last segment can ever have a torn tail.
    pub(crate) fn rotate(&self, w: &mut Writer) -> Result<(), SpoolError> {
        if let Some(a) = &w.active {
            if a.len > 0 {
                a.file
                    .sync_data()
                    .map_err(|e| SpoolError::io("fsyncing segment", self.seg_path(a.first), e))?;
            }
        }
        let first = w.next_id;
        let path = self.seg_path(first);
        let file = private_files::create_new(&path)
            .map_err(|e| SpoolError::io("creating segment", &path, e))?;
        if let Err(e) = fsync_dir(&self.dir) {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        let file = Arc::new(file);
        {
            let mut st = lock(&self.state);
            st.segments.push_back(SegMeta {
                first,
                end: first,
                len: 0,
            });
            st.active_file = Some(Arc::clone(&file));
        }
        w.active = Some(Active {
            first,
            file,
            len: 0,
        });
        Ok(())
    }

    /// Ensures `need` more bytes fit under `max_bytes`; returns the records
    /// and bytes dropped (`DropOldest`).
    pub(crate) fn make_room(&self, w: &mut Writer, need: u64) -> Result<(u64, u64), SpoolError> {
        let max = self.cfg.max_bytes;
        let fits = |st: &State| st.bytes_on_disk + need <= max;
        if fits(&lock(&self.state)) {
            return Ok((0, 0));
        }
        // Reclaim acknowledged segments first. Deleting below the in-memory
        // watermark is safe even if the checkpoint write fails (e.g. ENOSPC):
        // recovery skips the resulting gap.
        let _ = self.checkpoint();
        let wm = lock(&self.state).acks.watermark();
        self.delete_acked_segments(wm)?;
        let (mut dropped_records, mut dropped_bytes) = (0u64, 0u64);
        loop {
            let (victim, only_one, back_len, used) = {
                let st = lock(&self.state);
                if fits(&st) {
                    return Ok((dropped_records, dropped_bytes));
                }
                (
                    st.segments.front().copied(),
                    st.segments.len() <= 1,
                    st.segments.back().map_or(0, |s| s.len),
                    st.bytes_on_disk,
                )
            };
            let full = SpoolError::Full {
                used,
                max,
                needed: need,
            };
            if self.cfg.full_policy == FullPolicy::Block {
                return Err(full);
            }
            if only_one {
                if back_len > 0 {
                    self.rotate(w)?;
                    continue;
                }
                return Err(full);
            }
            let Some(seg) = victim else { return Err(full) };
            {
                let mut st = lock(&self.state);
                st.segments.pop_front();
                st.bytes_on_disk = st.bytes_on_disk.saturating_sub(seg.len);
                // Records already handed to the reader are in flight, and the sink delivers them
                // (it retries for as long as logferry runs): only those never read are lost.
                // Counting the others too made "delivered + dropped" exceed what was sent.
                let from = seg.first.max(st.acks.watermark()).max(st.read_cursor);
                let lost = if seg.end > from {
                    (seg.end - from) - st.acks.count_acked_in(from, seg.end)
                } else {
                    0
                };
                st.acks.advance_to(seg.end);
                st.normalize();
                st.dropped_records += lost;
                st.dropped_bytes += seg.len;
                st.dropped_segments += 1;
                dropped_records += lost;
                dropped_bytes += seg.len;
            }
            let path = self.seg_path(seg.first);
            if let Err(e) = fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    lock(&self.state).io_errors += 1;
                    return Err(SpoolError::io("dropping oldest segment", path, e));
                }
            }
        }
    }

    /// Reads records of segment `seg` from disk into `out`, starting at id
    /// `cursor` and stopping before `stop_at`. Returns the new cursor, or
    /// `None` if the segment disappeared (dropped/deleted concurrently).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_disk(
        &self,
        rd: &mut Reader,
        seg: SegMeta,
        cursor: u64,
        stop_at: u64,
        max_records: usize,
        max_bytes: usize,
        out: &mut Vec<Record>,
        bytes: &mut usize,
    ) -> Result<Option<u64>, SpoolError> {
        let path = self.seg_path(seg.first);
        if rd.file.is_none() || rd.seg_first != seg.first || rd.id > cursor {
            let file = match private_files::open_read(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(SpoolError::io("opening segment for reading", path, e)),
            };
            *rd = Reader {
                seg_first: seg.first,
                file: Some(file),
                offset: 0,
                id: seg.first,
                chunk: Bytes::new(),
            };
        }
        let max_rec = self.cfg.max_record_bytes;
        let mut c = cursor;
        while rd.id < stop_at && out.len() < max_records && rd.offset < seg.len {
            match parse_record(&rd.chunk, rd.id, max_rec) {
                Parsed::Record(h) => {
                    let len = h.len as usize;
                    let total = HEADER_LEN + len;
                    if rd.id >= c {
                        if !out.is_empty() && *bytes + len > max_bytes {
                            break;
                        }
                        out.push(Record {
                            id: rd.id,
                            appended_ms: h.appended_ms,
                            payload: rd.chunk.slice(HEADER_LEN..total),
                        });
                        *bytes += len;
                        c = rd.id + 1;
                    }
                    rd.chunk.advance(total);
                    rd.offset += total as u64;
                    rd.id += 1;
                }
                Parsed::NeedMore { needed } => {
                    let avail = seg.len - rd.offset;
                    if needed as u64 > avail {
                        return Err(SpoolError::Corrupt {
                            path,
                            offset: rd.offset,
                            detail: "record extends past the committed length".into(),
                        });
                    }
                    let want = (READ_CHUNK.max(needed) as u64).min(avail) as usize;
                    let Some(file) = rd.file.as_ref() else {
                        return Ok(None);
                    };
                    rd.chunk = read_at(file, rd.offset, want)
                        .map_err(|e| SpoolError::io("reading segment", &path, e))?;
                }
                Parsed::Bad(bad) => {
                    let offset = rd.offset;
                    rd.file = None;
                    return Err(SpoolError::Corrupt {
                        path,
                        offset,
                        detail: bad.to_string(),
                    });
                }
            }
        }
        Ok(Some(c))
    }
}

/// `len` bytes of `file` from `offset`, read into a buffer that is not zeroed first (a reader
/// behind the memory tail reads 256 KiB at a time; zeroing each buffer only to overwrite it
/// was 1% of a syslog run).
fn read_at(file: &File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    file.take(len as u64).read_to_end(&mut buf)?;
    if buf.len() < len {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Bytes::from(buf))
}
