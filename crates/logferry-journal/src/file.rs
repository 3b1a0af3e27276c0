//! One journal file: its mapping, its header, and validated access to entries.
//!
//! Entries are reached through the global entry array chain that starts at
//! `header.entry_array_offset`, never by scanning objects: the chain is what journald
//! commits an entry to last, so it only names complete entries, and it is in write order.
//! Each array in the chain is read once and cached (offset, first index, capacity);
//! journald doubles the capacity of each new array, so a file of n entries has about
//! log2(n) arrays and resolving an index is a short binary search. That is why this reader
//! does not need `tail_entry_array_offset` to stay fast: the chain is never walked twice.
//!
//! # Why mmap, and why it is sound enough
//! Entries reference DATA objects scattered over the file; with `pread` every field costs a
//! system call. Measured here: one 128-byte `pread` takes about 1.07 µs and a journald entry
//! has 17 fields on average, so `pread` caps reading near 50k entries/s, below journalctl
//! itself, while the mapping reads about 1M entries/s on the same journal. The usual mmap
//! hazards and how they are handled:
//! * The file changes under us: journald only appends objects and then links them, and it
//!   signals readers by truncating the file *to its current size*. Every value read from the
//!   mapping is treated as untrusted and validated (offset alignment and bounds, object type
//!   and size, timestamps); a half-written tail makes the file look "no more for now".
//! * SIGBUS: touching a page of the mapping beyond the current end of file kills the
//!   process. We never read past `min(mapped length, header_size + arena_size)`, and journald
//!   never shrinks a file below its arena, so journald itself cannot trigger it. The residual
//!   risk is another process truncating a journal file below its arena while we have it
//!   mapped (an administrator running `truncate` on a live journal); journalctl and
//!   libsystemd carry the same risk.
//! * Rust's `&[u8]` is assumed immutable: values are read once into locals and every access
//!   is a checked `get`, so a concurrent change can yield wrong values (rejected by
//!   validation) but never an out-of-bounds access.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::compress::Decompressor;
use crate::entry::Entry;
use crate::format::*;

/// Why an entry or file could not be read. Kept as text: callers only log and count it.
pub(crate) type Corrupt = String;

/// The part of an entry that orders it against entries of other files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub seqnum: u64,
    pub realtime: u64,
    pub monotonic: u64,
    pub boot_id: [u8; 16],
    pub xor_hash: u64,
}

#[derive(Clone, Copy, Debug)]
struct ArraySeg {
    offset: u64,
    /// Global index of this array's first item.
    start: u64,
    cap: u64,
}

/// What is found at an index of the entry array.
pub(crate) enum Slot {
    /// A validated entry object at this offset.
    Entry(u64, EntryMeta),
    /// The index is not (yet) committed: end of the file for now.
    NotYet,
    /// The index holds something that is not a valid entry: skip it.
    Bad(Corrupt),
    /// The entry array chain itself is corrupt: no later index is reachable.
    Broken(Corrupt),
}

pub(crate) struct JournalFile {
    path: PathBuf,
    file: File,
    map: Mmap,
    pub dev: u64,
    pub ino: u64,
    compact: bool,
    header_size: u64,
    pub seqnum_id: [u8; 16],
    pub file_id: [u8; 16],
    /// Readable bytes: min(mapped length, header_size + arena_size).
    limit: u64,
    arrays: Vec<ArraySeg>,
    /// Index into `arrays` of the last hit, for O(1) sequential reads.
    hint: usize,
}

impl JournalFile {
    pub(crate) fn open(path: &Path) -> Result<JournalFile, Corrupt> {
        let file = File::open(path).map_err(|e| format!("open: {e}"))?;
        let meta = file.metadata().map_err(|e| format!("stat: {e}"))?;
        if !meta.is_file() {
            return Err("not a regular file".into());
        }
        if meta.len() < HEADER_SIZE_MIN {
            return Err(format!(
                "file too short for a header ({} bytes)",
                meta.len()
            ));
        }
        let map = map_file(&file)?;
        let buf = &map[..];
        if buf.get(..8) != Some(&SIGNATURE[..]) {
            return Err("bad signature, not a journal file".into());
        }
        let incompat = u32_at(buf, H_INCOMPAT as u64).ok_or("short header")?;
        if incompat & !INCOMPAT_SUPPORTED != 0 {
            return Err(format!(
                "unsupported incompatible flags {:#x} (file written by a newer systemd?); \
                 refusing to guess its layout",
                incompat & !INCOMPAT_SUPPORTED
            ));
        }
        let header_size = u64_at(buf, H_HEADER_SIZE as u64).ok_or("short header")?;
        if header_size < HEADER_SIZE_MIN || header_size % 8 != 0 || header_size > meta.len() {
            return Err(format!("invalid header_size {header_size}"));
        }
        let mut jf = JournalFile {
            path: path.to_path_buf(),
            dev: meta.dev(),
            ino: meta.ino(),
            compact: incompat & INCOMPAT_COMPACT != 0,
            header_size,
            seqnum_id: id_at(buf, H_SEQNUM_ID as u64).ok_or("short header")?,
            file_id: id_at(buf, H_FILE_ID as u64).ok_or("short header")?,
            limit: 0,
            arrays: Vec::new(),
            hint: 0,
            file,
            map,
        };
        jf.update_limit();
        Ok(jf)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn set_path(&mut self, path: PathBuf) {
        self.path = path;
    }

    /// Re-reads the file size and remaps when the file grew, so that newly allocated
    /// arena space becomes readable. Cheap when nothing changed (one fstat).
    pub(crate) fn refresh(&mut self) -> Result<(), Corrupt> {
        let len = self
            .file
            .metadata()
            .map_err(|e| format!("stat: {e}"))?
            .len();
        if len > self.map.len() as u64 {
            self.map = map_file(&self.file)?;
        }
        self.update_limit();
        Ok(())
    }

    /// Drops this process's page-table references to the mapping (`MADV_DONTNEED`), so pages
    /// already read stop counting toward its resident set. They stay in the page cache and are
    /// faulted back in, cheaply, when read again.
    pub(crate) fn release_pages(&self) {
        // SAFETY: the mapping is shared and read-only: after MADV_DONTNEED the next access
        // reads the file's current contents, which every access already assumes (values are
        // read once and validated; `&mut Journal` guarantees no slice of the map is borrowed).
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    fn update_limit(&mut self) {
        let arena = u64_at(&self.map, H_ARENA_SIZE as u64).unwrap_or(0);
        let end = self.header_size.saturating_add(arena);
        self.limit = end.min(self.map.len() as u64);
    }

    /// Live header values: journald updates them in place while we read.
    pub(crate) fn n_entries(&self) -> u64 {
        u64_at(&self.map, H_N_ENTRIES as u64).unwrap_or(0)
    }

    pub(crate) fn state(&self) -> u8 {
        u8_at(&self.map, H_STATE as u64).unwrap_or(STATE_ONLINE)
    }

    /// Validates an object header at `off`: alignment, bounds, type, minimum size.
    /// Returns the object's size.
    fn object(&self, off: u64, ty: u8, min_size: u64) -> Result<u64, Corrupt> {
        if !off.is_multiple_of(8) || off < self.header_size {
            return Err(format!(
                "object offset {off:#x} misaligned or inside header"
            ));
        }
        let end_hdr = off
            .checked_add(OBJECT_HEADER_SIZE)
            .ok_or("offset overflow")?;
        if end_hdr > self.limit {
            return Err(format!("object offset {off:#x} beyond end of file"));
        }
        let found = u8_at(&self.map, off).ok_or("object header unreadable")?;
        let size = u64_at(&self.map, off + 8).ok_or("object header unreadable")?;
        if found != ty {
            return Err(format!(
                "object at {off:#x} has type {found}, expected {ty}"
            ));
        }
        if size < min_size || off.checked_add(size).is_none_or(|end| end > self.limit) {
            return Err(format!("object at {off:#x} has invalid size {size}"));
        }
        Ok(size)
    }

    fn item_size(&self) -> u64 {
        if self.compact {
            4
        } else {
            8
        }
    }

    /// Makes sure the cached chain covers `idx`. Returns false when the chain ends before
    /// it (not yet linked, or the file is inconsistent: either way "no more for now").
    fn ensure_index(&mut self, idx: u64) -> Result<bool, Corrupt> {
        loop {
            let next = match self.arrays.last() {
                Some(seg) if idx < seg.start.saturating_add(seg.cap) => return Ok(true),
                Some(seg) => {
                    let next = u64_at(&self.map, seg.offset + 16).unwrap_or(0);
                    // Arrays are appended, so a link always points forward. Requiring it
                    // is what makes a cyclic chain in a corrupt file impossible to loop on.
                    if next != 0 && next <= seg.offset {
                        return Err(format!(
                            "entry array chain goes backwards ({:#x} -> {next:#x})",
                            seg.offset
                        ));
                    }
                    next
                }
                None => u64_at(&self.map, H_ENTRY_ARRAY_OFFSET as u64).unwrap_or(0),
            };
            if next == 0 {
                return Ok(false);
            }
            let size = self.object(next, OBJECT_ENTRY_ARRAY, ENTRY_ARRAY_ITEMS_OFFSET)?;
            let cap = (size - ENTRY_ARRAY_ITEMS_OFFSET) / self.item_size();
            if cap == 0 {
                return Err(format!("empty entry array at {next:#x}"));
            }
            let start = self
                .arrays
                .last()
                .map_or(0, |s| s.start.saturating_add(s.cap));
            self.arrays.push(ArraySeg {
                offset: next,
                start,
                cap,
            });
        }
    }

    /// Offset of the entry at global index `idx`, `Ok(None)` if not committed yet.
    fn entry_offset(&mut self, idx: u64) -> Result<Option<u64>, Corrupt> {
        if !self.ensure_index(idx)? {
            return Ok(None);
        }
        let seg = match self.arrays.get(self.hint) {
            Some(s) if s.start <= idx && idx < s.start + s.cap => *s,
            _ => {
                let pos = self.arrays.partition_point(|s| s.start + s.cap <= idx);
                self.hint = pos;
                *self.arrays.get(pos).ok_or("entry array index")?
            }
        };
        let item = seg.offset + ENTRY_ARRAY_ITEMS_OFFSET + (idx - seg.start) * self.item_size();
        let off = if self.compact {
            u32_at(&self.map, item).map(u64::from)
        } else {
            u64_at(&self.map, item)
        };
        Ok(off.filter(|&o| o != 0))
    }

    /// Validates and decodes the entry at index `idx` of the global entry array.
    pub(crate) fn slot(&mut self, idx: u64) -> Slot {
        match self.slot_in_map(idx) {
            // journald grows a file while writing it: something past our mapping may
            // just be new. Remap once and look again before calling it corrupt.
            Slot::Bad(_) | Slot::Broken(_) if self.remap_if_grown() => self.slot_in_map(idx),
            s => s,
        }
    }

    /// Remaps when the file is now larger than the mapping; true if it did.
    fn remap_if_grown(&mut self) -> bool {
        let before = (self.map.len(), self.limit);
        self.refresh().is_ok() && (self.map.len(), self.limit) != before
    }

    fn slot_in_map(&mut self, idx: u64) -> Slot {
        let off = match self.entry_offset(idx) {
            Ok(Some(off)) => off,
            Ok(None) => return Slot::NotYet,
            Err(e) => return Slot::Broken(e),
        };
        match self.entry_meta(off) {
            Ok(meta) => Slot::Entry(off, meta),
            Err(e) => Slot::Bad(format!("entry #{idx} at {off:#x}: {e}")),
        }
    }

    fn entry_meta(&self, off: u64) -> Result<EntryMeta, Corrupt> {
        let size = self.object(off, OBJECT_ENTRY, ENTRY_ITEMS_OFFSET)?;
        if size == ENTRY_ITEMS_OFFSET {
            return Err("entry without fields".into());
        }
        let m = &self.map[..];
        let meta = EntryMeta {
            seqnum: u64_at(m, off + 16).ok_or("short entry")?,
            realtime: u64_at(m, off + 24).ok_or("short entry")?,
            monotonic: u64_at(m, off + 32).ok_or("short entry")?,
            boot_id: id_at(m, off + 40).ok_or("short entry")?,
            xor_hash: u64_at(m, off + 56).ok_or("short entry")?,
        };
        if meta.seqnum == 0
            || meta.realtime == 0
            || meta.realtime >= TIMESTAMP_LIMIT
            || meta.monotonic >= TIMESTAMP_LIMIT
        {
            return Err("invalid seqnum or timestamps".into());
        }
        Ok(meta)
    }

    /// Fills `entry`'s fields from the entry object at `off` (already validated by `slot`).
    /// A bad DATA object loses only that field: the error is pushed to `errs` and the
    /// rest of the entry is kept, because a shipper would rather send most of a line
    /// than none of it.
    pub(crate) fn read_fields(
        &self,
        off: u64,
        entry: &mut Entry,
        dec: &mut Decompressor,
        max_field: usize,
        errs: &mut Vec<Corrupt>,
    ) {
        entry.clear_fields();
        let size = match self.object(off, OBJECT_ENTRY, ENTRY_ITEMS_OFFSET) {
            Ok(s) => s,
            Err(e) => {
                errs.push(e);
                return;
            }
        };
        // Regular items are {offset, hash}; only the offset matters for reading.
        let stride = if self.compact { 4 } else { 16 };
        let n = (size - ENTRY_ITEMS_OFFSET) / stride;
        let data_hdr = if self.compact {
            DATA_PAYLOAD_OFFSET_COMPACT
        } else {
            DATA_PAYLOAD_OFFSET
        };
        for i in 0..n {
            let item = off + ENTRY_ITEMS_OFFSET + i * stride;
            let data_off = if self.compact {
                u32_at(&self.map, item).map(u64::from)
            } else {
                u64_at(&self.map, item)
            };
            let Some(data_off) = data_off else {
                errs.push(format!("entry at {off:#x}: item {i} unreadable"));
                continue;
            };
            // The whole entry is capped too: a corrupt entry could name the same large
            // DATA object many times.
            let room = max_field
                .saturating_mul(ENTRY_SIZE_FACTOR)
                .saturating_sub(entry.payload_len());
            let cap = max_field.min(room);
            if let Err(e) = self.read_data(data_off, data_hdr, entry, dec, cap) {
                errs.push(format!("entry at {off:#x}: field {i}: {e}"));
            }
        }
    }

    fn read_data(
        &self,
        off: u64,
        data_hdr: u64,
        entry: &mut Entry,
        dec: &mut Decompressor,
        max_field: usize,
    ) -> Result<(), Corrupt> {
        let size = self.object(off, OBJECT_DATA, data_hdr)?;
        let flags = u8_at(&self.map, off + 1).ok_or("data header")? & OBJ_COMPRESSED_MASK;
        let payload = slice_at(&self.map, off + data_hdr, size - data_hdr).ok_or("data bounds")?;
        let buf = entry.buf_mut();
        let start = buf.len();
        if flags == 0 {
            if payload.len() > max_field {
                return Err(format!("field of {} bytes over the limit", payload.len()));
            }
            buf.extend_from_slice(payload);
        } else {
            dec.decompress(flags, payload, buf, max_field)?;
        }
        entry.push_field(start)
    }
}

/// An entry may total this many times the field size limit.
pub(crate) const ENTRY_SIZE_FACTOR: usize = 4;

fn map_file(file: &File) -> Result<Mmap, Corrupt> {
    // SAFETY: the mapping is read-only and shared; see the module docs for why concurrent
    // appends by journald are harmless and how SIGBUS from truncation is avoided.
    unsafe { Mmap::map(file) }.map_err(|e| format!("mmap: {e}"))
}
