//! Splitting a file's bytes into lines, each with the file offset just past its terminator.
//!
//! [`LineSplitter`] owns one file's read buffer. Reads append to a `BytesMut`; complete lines
//! are cut off its front with `split_to` and handed out as frozen `Bytes`, so for UTF-8 (the
//! common case, passed through untouched) a line costs no allocation and no copy: every line of
//! a read shares the buffer that read filled. Newlines are found with `memchr`, and a search
//! that finds none remembers where it stopped, so a long partial line is scanned once, not once
//! per read.
//!
//! A line longer than `max_line_bytes` keeps only its first `max_line_bytes` bytes in memory;
//! the rest is counted (in [`SplitLine::truncated_bytes`]) and dropped as it is read, until the
//! newline arrives and the line is emitted with its exact end offset. A gigabyte without a
//! newline therefore costs `max_line_bytes` plus one read buffer, and never stalls the file.
//!
//! Other encodings are decoded to UTF-8 per line with `encoding_rs`. ASCII-compatible ones
//! (latin1/windows-1252, Shift_JIS, GBK, ...) never use byte 0x0A inside a character, so they
//! split like UTF-8; UTF-16 splits on the two-byte newline unit at an even file offset. Offsets
//! are always byte offsets in the file, whatever the encoding, because that is what a saved
//! position must resume from. A byte-order mark at offset 0 is skipped (for UTF-8 too: U+FEFF
//! is an encoding artifact, not log content).

use bytes::{Buf, Bytes, BytesMut};
use encoding_rs::Encoding;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// One complete line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitLine {
    /// The line without its terminator (`\n`, and a `\r` before it), at most `max_line_bytes`
    /// of the original, decoded to UTF-8 unless the encoding is UTF-8 (then untouched).
    pub bytes: Bytes,
    /// The file offset just past the line's terminator (or past its last byte, for a final
    /// line emitted by [`LineSplitter::finish`]).
    pub end_offset: u64,
    /// How many bytes of the line (before decoding, terminator excluded) were dropped.
    pub truncated_bytes: u64,
}

/// How the bytes of a file are cut into lines and turned into UTF-8.
#[derive(Debug, Clone, Copy)]
enum Codec {
    /// Passthrough; the caller deals with invalid UTF-8.
    Utf8,
    /// Split on 0x0A, decode each line.
    AsciiCompatible(&'static Encoding),
    /// Split on the 2-byte newline unit at an even offset.
    Utf16 {
        big_endian: bool,
        encoding: &'static Encoding,
    },
}

impl Codec {
    fn of(encoding: &'static Encoding) -> Codec {
        if encoding == encoding_rs::UTF_8 {
            Codec::Utf8
        } else if encoding == encoding_rs::UTF_16LE || encoding == encoding_rs::UTF_16BE {
            Codec::Utf16 {
                big_endian: encoding == encoding_rs::UTF_16BE,
                encoding,
            }
        } else {
            Codec::AsciiCompatible(encoding)
        }
    }

    /// Bytes per code unit: newline and carriage return take this many.
    fn width(self) -> usize {
        match self {
            Codec::Utf16 { .. } => 2,
            _ => 1,
        }
    }

    fn bom(self) -> &'static [u8] {
        match self {
            Codec::Utf8 => b"\xef\xbb\xbf",
            Codec::AsciiCompatible(_) => b"",
            Codec::Utf16 {
                big_endian: false, ..
            } => b"\xff\xfe",
            Codec::Utf16 {
                big_endian: true, ..
            } => b"\xfe\xff",
        }
    }

    fn is_cr(self, unit: &[u8]) -> bool {
        match self {
            Codec::Utf16 {
                big_endian: false, ..
            } => unit == b"\r\0",
            Codec::Utf16 {
                big_endian: true, ..
            } => unit == b"\0\r",
            _ => unit == b"\r",
        }
    }

    /// Finds the start of the first newline unit in `buf[from..]`, where `buf[0]` sits at file
    /// offset `base`. `Err(resume)` when there is none yet: the next search (after more bytes
    /// are appended) can start at `resume`, everything before it having been ruled out.
    fn find_newline(self, buf: &[u8], base: u64, from: usize) -> Result<usize, usize> {
        match self {
            Codec::Utf8 | Codec::AsciiCompatible(_) => match memchr::memchr(b'\n', &buf[from..]) {
                Some(i) => Ok(from + i),
                None => Err(buf.len()),
            },
            Codec::Utf16 { big_endian, .. } => {
                let mut at = from;
                while let Some(i) = memchr::memchr(b'\n', &buf[at..]) {
                    let p = at + i;
                    let even = (base + p as u64).is_multiple_of(2);
                    if !big_endian && even {
                        // Little endian: 0A 00 starting at an even offset.
                        match buf.get(p + 1) {
                            Some(0) => return Ok(p),
                            Some(_) => {}
                            None => return Err(p),
                        }
                    } else if big_endian && !even && p >= 1 && buf[p - 1] == 0 {
                        // Big endian: 00 0A starting at an even offset.
                        return Ok(p - 1);
                    }
                    at = p + 1;
                }
                // A trailing lone byte may be the first half of a newline unit.
                Err(buf.len().saturating_sub(1).max(from))
            }
        }
    }

    /// Turns a line's raw bytes into what the caller gets.
    fn decode(self, raw: Bytes) -> Bytes {
        let encoding = match self {
            Codec::Utf8 => return raw,
            Codec::AsciiCompatible(e) | Codec::Utf16 { encoding: e, .. } => e,
        };
        match encoding.decode_without_bom_handling(&raw).0 {
            // Borrowed means the input already was the UTF-8 output (plain ASCII, say): keep
            // the zero-copy slice.
            std::borrow::Cow::Borrowed(_) => raw,
            std::borrow::Cow::Owned(s) => Bytes::from(s.into_bytes()),
        }
    }
}

/// The start of a line longer than the limit, whose newline has not been read yet.
#[derive(Debug)]
struct LongLine {
    held: Bytes,
    /// Bytes of the line dropped so far (not counting the `tail` still in the buffer).
    truncated: u64,
}

/// Splits one file into lines. See the module docs.
#[derive(Debug)]
pub struct LineSplitter {
    /// Bytes read but not yet returned as lines; `buf[0]` is at file offset `buf_offset`.
    buf: BytesMut,
    buf_offset: u64,
    /// `buf[..scan_from]` holds no newline (of the current line).
    scan_from: usize,
    long: Option<LongLine>,
    /// `max_line_bytes`, rounded down to whole code units (at least one).
    max: usize,
    codec: Codec,
    /// Whether a byte-order mark may still sit at the start of `buf` (reading from offset 0).
    bom_pending: bool,
}

impl LineSplitter {
    /// A splitter whose next byte is at file offset `offset`.
    pub fn new(encoding: &'static Encoding, max_line_bytes: usize, offset: u64) -> LineSplitter {
        let codec = Codec::of(encoding);
        let w = codec.width();
        LineSplitter {
            buf: BytesMut::new(),
            buf_offset: offset,
            scan_from: 0,
            long: None,
            max: (max_line_bytes / w * w).max(w),
            codec,
            bom_pending: offset == 0,
        }
    }

    /// The file offset of the next byte to read.
    pub fn read_offset(&self) -> u64 {
        self.buf_offset + self.buf.len() as u64
    }

    /// Whether bytes of an unfinished line are held.
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty() || self.long.is_some()
    }

    /// Appends bytes that follow what was read so far (for callers that do their own reading).
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// One `pread(2)` of up to `len` bytes at [`read_offset`](Self::read_offset), appended to
    /// the buffer. Returns the number of bytes read (0 at end of file).
    pub fn read_from(&mut self, file: &File, len: usize) -> io::Result<usize> {
        let start = self.buf.len();
        // When the buffer is still shared with lines handed out, `reserve` moves only the
        // partial line to a fresh allocation; when it is not, it reuses the old one.
        self.buf.reserve(len);
        // Zeroing costs a memset per read (a few percent of splitting it into lines); it keeps
        // this crate free of `unsafe`.
        self.buf.resize(start + len, 0);
        let offset = self.buf_offset + start as u64;
        let result = loop {
            match file.read_at(&mut self.buf[start..], offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        result
    }

    /// Frees the read buffer if it holds nothing (every line read was handed out). A file at
    /// its end for now calls this, so the memory of a node with hundreds of open files is one
    /// read buffer per file being read, not per file open: the next read allocates it again
    /// (`read_buffer_bytes`, 64 KiB by default, was 6.4 MiB at 100 files).
    pub fn release_if_empty(&mut self) {
        if self.buf.is_empty() && self.long.is_none() {
            self.buf = BytesMut::new();
            self.scan_from = 0;
        }
    }

    /// The next complete line, if the buffer holds one.
    pub fn next_line(&mut self) -> Option<SplitLine> {
        let w = self.codec.width();
        if self.bom_pending {
            let bom = self.codec.bom();
            if self.buf.len() < bom.len() && bom.starts_with(&self.buf) {
                // Too few bytes to tell yet.
                return None;
            }
            self.bom_pending = false;
            if !bom.is_empty() && self.buf.starts_with(bom) {
                self.buf.advance(bom.len());
                self.buf_offset += bom.len() as u64;
            }
        }
        match self
            .codec
            .find_newline(&self.buf, self.buf_offset, self.scan_from)
        {
            Ok(nl) => {
                let mut content_end = nl;
                if nl >= w && self.codec.is_cr(&self.buf[nl - w..nl]) {
                    content_end -= w;
                }
                Some(self.take_line(nl + w, content_end))
            }
            Err(resume) => {
                self.scan_from = resume;
                self.limit_partial();
                None
            }
        }
    }

    /// Keeps an unfinished line within `max` bytes (plus a small tail) of memory.
    fn limit_partial(&mut self) {
        let w = self.codec.width();
        // The tail kept in the buffer: enough for a CR unit and a split newline unit, so the
        // terminator is recognised (and not counted as content) when it arrives.
        let tail = 2 * w;
        if self.long.is_none() {
            if self.buf.len() <= self.max + tail {
                return;
            }
            let held = self.buf.split_to(self.max).freeze();
            self.buf_offset += self.max as u64;
            self.scan_from = self.scan_from.saturating_sub(self.max);
            self.long = Some(LongLine { held, truncated: 0 });
        }
        if let Some(long) = self.long.as_mut() {
            let drop = self.buf.len().saturating_sub(tail);
            if drop > 0 {
                self.buf.advance(drop);
                self.buf_offset += drop as u64;
                self.scan_from = self.scan_from.saturating_sub(drop);
                long.truncated += drop as u64;
            }
        }
    }

    /// The unfinished final line, if any, for a file that will not be read again (rotated away
    /// and done, deleted, truncated). A trailing CR is treated as a terminator.
    pub fn finish(&mut self) -> Option<SplitLine> {
        let w = self.codec.width();
        self.bom_pending = false;
        if !self.has_partial() {
            return None;
        }
        let mut content_end = self.buf.len();
        if content_end >= w && self.codec.is_cr(&self.buf[content_end - w..]) {
            content_end -= w;
        }
        Some(self.take_line(self.buf.len(), content_end))
    }

    /// Splits the first `len` bytes off the buffer as one line whose content (without its
    /// terminator) is their first `content_end` bytes, joined to the held start of a long line.
    fn take_line(&mut self, len: usize, content_end: usize) -> SplitLine {
        let mut raw = self.buf.split_to(len);
        self.buf_offset += len as u64;
        self.scan_from = 0;
        let (bytes, truncated_bytes) = match self.long.take() {
            Some(long) => (long.held, long.truncated + content_end as u64),
            None => {
                let kept = content_end.min(self.max);
                raw.truncate(kept);
                (raw.freeze(), (content_end - kept) as u64)
            }
        };
        SplitLine {
            bytes: self.codec.decode(bytes),
            end_offset: self.buf_offset,
            truncated_bytes,
        }
    }

    /// Drops everything buffered and continues at `offset` (after a truncation).
    pub fn reset(&mut self, offset: u64) {
        self.buf = BytesMut::new();
        self.buf_offset = offset;
        self.scan_from = 0;
        self.long = None;
        self.bom_pending = offset == 0;
    }

    /// Releases the read buffer of an idle file: after lines were split off, the buffer's spare
    /// capacity (up to a read's worth) would otherwise stay allocated for every idle file.
    pub fn shrink(&mut self) {
        if self.buf.capacity() > 4 * 1024 && self.buf.len() < 1024 {
            self.buf = BytesMut::from(&self.buf[..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(s: &mut LineSplitter) -> Vec<SplitLine> {
        std::iter::from_fn(|| s.next_line()).collect()
    }

    fn texts(lines: &[SplitLine]) -> Vec<String> {
        lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }

    /// Releasing the buffer between reads loses nothing: a partial line keeps it, and offsets
    /// go on where they were.
    #[test]
    fn released_buffer_keeps_partials_and_offsets() {
        let mut s = LineSplitter::new(encoding_rs::UTF_8, 1024, 0);
        s.push(b"one\ntw");
        assert_eq!(texts(&split_all(&mut s)), ["one"]);
        s.release_if_empty();
        s.push(b"o\n");
        let l = split_all(&mut s);
        assert_eq!(texts(&l), ["two"]);
        s.release_if_empty();
        assert!(!s.has_partial());
        s.push(b"three\n");
        let l = split_all(&mut s);
        assert_eq!(
            (texts(&l), l[0].end_offset),
            (vec!["three".to_string()], 14)
        );
    }

    /// Pushing `first` gives no line; pushing `second` then gives exactly `(line, end_offset)`,
    /// nothing truncated.
    fn assert_one_line_after_two_pushes(
        max_line_bytes: usize,
        first: &[u8],
        second: &[u8],
        line: &[u8],
        end_offset: u64,
    ) {
        let mut s = LineSplitter::new(encoding_rs::UTF_8, max_line_bytes, 0);
        s.push(first);
        assert!(s.next_line().is_none(), "a line before {second:?}");
        s.push(second);
        let l = s.next_line().expect("line");
        assert_eq!(
            (&l.bytes[..], l.end_offset, l.truncated_bytes),
            (line, end_offset, 0)
        );
    }

    #[test]
    fn splits_lines_with_end_offsets_and_strips_crlf() {
        let mut s = LineSplitter::new(encoding_rs::UTF_8, 1024, 100);
        s.push(b"one\ntwo\r\n\nthree");
        let lines = split_all(&mut s);
        assert_eq!(texts(&lines), ["one", "two", ""]);
        let ends: Vec<u64> = lines.iter().map(|l| l.end_offset).collect();
        assert_eq!(ends, [104, 109, 110]);
        assert!(s.has_partial());
        s.push(b" and more\n");
        let l = s.next_line().expect("line");
        assert_eq!(&l.bytes[..], b"three and more");
        assert_eq!(l.end_offset, 125);
        assert_eq!(s.read_offset(), 125);
        assert!(!s.has_partial());
    }

    #[test]
    fn utf8_passes_invalid_bytes_through() {
        let mut s = LineSplitter::new(encoding_rs::UTF_8, 1024, 0);
        s.push(b"\xff\xfe bad\n");
        assert_eq!(&s.next_line().expect("line").bytes[..], b"\xff\xfe bad");
    }

    #[test]
    fn utf8_bom_at_offset_zero_is_skipped_but_counted_in_offsets() {
        assert_one_line_after_two_pushes(1024, b"\xef\xbb", b"\xbfhi\n", b"hi", 6);
    }

    #[test]
    fn long_line_keeps_prefix_counts_rest_and_has_exact_offset() {
        let mut s = LineSplitter::new(encoding_rs::UTF_8, 10, 0);
        let long = vec![b'x'; 100_000];
        for chunk in long.chunks(777) {
            s.push(chunk);
            assert!(s.next_line().is_none());
            // Memory stays bounded while the newline is missing.
            assert!(s.buf.len() <= 10 + 2 + 777, "{}", s.buf.len());
        }
        s.push(b"\r\nshort\n");
        let l = s.next_line().expect("long line");
        assert_eq!(&l.bytes[..], &[b'x'; 10]);
        assert_eq!(l.truncated_bytes, 100_000 - 10);
        assert_eq!(l.end_offset, 100_002);
        let l = s.next_line().expect("short line");
        assert_eq!(&l.bytes[..], b"short");
        assert_eq!(l.truncated_bytes, 0);
        assert_eq!(l.end_offset, 100_008);
    }

    #[test]
    fn line_exactly_at_the_limit_is_not_truncated() {
        assert_one_line_after_two_pushes(4, b"abcd\r", b"\n", b"abcd", 6);
    }

    #[test]
    fn cr_read_separately_from_its_newline_is_not_truncated_content() {
        for split in 0..14 {
            let mut s = LineSplitter::new(encoding_rs::UTF_8, 4, 0);
            let data = b"abcdefghij\r\nk\n";
            s.push(&data[..split]);
            let mut lines = split_all(&mut s);
            s.push(&data[split..]);
            lines.extend(split_all(&mut s));
            assert_eq!(texts(&lines), ["abcd", "k"], "split at {split}");
            assert_eq!(lines[0].truncated_bytes, 6, "split at {split}");
            assert_eq!(lines[0].end_offset, 12);
        }
    }

    #[test]
    fn finish_emits_the_unterminated_final_line() {
        let mut s = LineSplitter::new(encoding_rs::UTF_8, 1024, 0);
        s.push(b"a\nlast");
        assert_eq!(&s.next_line().expect("a").bytes[..], b"a");
        assert!(s.next_line().is_none());
        let l = s.finish().expect("last");
        assert_eq!(&l.bytes[..], b"last");
        assert_eq!(l.end_offset, 6);
        assert!(s.finish().is_none());
    }

    #[test]
    fn latin1_is_decoded_per_line() {
        let mut s = LineSplitter::new(encoding_rs::WINDOWS_1252, 1024, 0);
        s.push(b"caf\xe9\nplain\n");
        let lines = split_all(&mut s);
        assert_eq!(texts(&lines), ["café", "plain"]);
        assert_eq!(lines[0].end_offset, 5);
        assert_eq!(lines[1].end_offset, 11);
    }

    fn utf16(text: &str, big_endian: bool) -> Vec<u8> {
        text.encode_utf16()
            .flat_map(|u| {
                if big_endian {
                    u.to_be_bytes()
                } else {
                    u.to_le_bytes()
                }
            })
            .collect()
    }

    #[test]
    fn utf16_splits_on_aligned_newline_units_byte_by_byte() {
        for big_endian in [false, true] {
            let enc = if big_endian {
                encoding_rs::UTF_16BE
            } else {
                encoding_rs::UTF_16LE
            };
            let mut data = if big_endian {
                vec![0xfe, 0xff]
            } else {
                vec![0xff, 0xfe]
            };
            // U+0A0A would look like a newline byte at the wrong alignment.
            data.extend(utf16("h\u{0a0a}é\r\n€ two\nlast", big_endian));
            let mut s = LineSplitter::new(enc, 1024, 0);
            let mut lines = Vec::new();
            for b in &data {
                s.push(std::slice::from_ref(b));
                lines.extend(split_all(&mut s));
            }
            lines.extend(s.finish());
            assert_eq!(
                texts(&lines),
                ["h\u{0a0a}é", "€ two", "last"],
                "big endian {big_endian}"
            );
            assert_eq!(lines[0].end_offset, 2 + 10);
            assert_eq!(lines[1].end_offset, 2 + 10 + 12);
            assert_eq!(lines[2].end_offset, data.len() as u64);
        }
    }

    #[test]
    fn utf16_long_line_is_truncated_on_a_unit_boundary() {
        let mut s = LineSplitter::new(encoding_rs::UTF_16LE, 5, 0);
        let mut data = vec![0xff, 0xfe];
        data.extend(utf16(&"a".repeat(50), false));
        data.extend(utf16("\r\nb\n", false));
        for chunk in data.chunks(3) {
            s.push(chunk);
        }
        let lines = split_all(&mut s);
        assert_eq!(texts(&lines), ["aa", "b"]);
        assert_eq!(lines[0].truncated_bytes, 96);
        assert_eq!(lines[0].end_offset, 2 + 104);
    }

    #[test]
    fn read_from_a_real_file_and_reset() {
        let mut tmp = tempfile::NamedTempFile::new().expect("tmp");
        std::io::Write::write_all(&mut tmp, b"x\ny\n").expect("write");
        let f = File::open(tmp.path()).expect("open");
        let mut s = LineSplitter::new(encoding_rs::UTF_8, 1024, 2);
        assert_eq!(s.read_from(&f, 3).expect("read"), 2);
        assert_eq!(texts(&split_all(&mut s)), ["y"]);
        assert_eq!(s.read_from(&f, 3).expect("read"), 0);
        s.reset(0);
        assert_eq!(s.read_from(&f, 64).expect("read"), 4);
        assert_eq!(texts(&split_all(&mut s)), ["x", "y"]);
    }
}
