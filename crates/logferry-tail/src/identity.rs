//! Which file is which: a device and inode number, confirmed by a fingerprint of the first bytes.
//!
//! A path says nothing about identity: logrotate renames `app.log` to `app.log.1` and creates a
//! new `app.log`, and a saved position must follow the file it was taken from, not the name. The
//! (device, inode) pair names a file while it exists, but a filesystem reuses the inode number of
//! a deleted file at once (ext4, xfs and tmpfs all do), so a position saved before a restart could
//! be applied to an unrelated file that happens to get the same number. The [`Fingerprint`], a
//! CRC32C of the first bytes, tells them apart: log files start with a timestamp, so two files
//! with the same first line are rare, and a copytruncate that rewrites the start changes it too.
//!
//! The fingerprint covers at most `max_len` bytes (256 by default) and fewer while the file is
//! shorter; the tailer recomputes it as the file grows, and a comparison only looks at as many
//! bytes as the saved fingerprint covers.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

/// A file's identity while it exists: device and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

impl FileKey {
    /// The key of the file `meta` describes.
    pub fn of(meta: &std::fs::Metadata) -> FileKey {
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// CRC32C of the first `len` bytes of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Fingerprint {
    pub len: u32,
    pub crc: u32,
}

/// Fingerprints the first `min(file size, max_len)` bytes of `file`, with positioned reads so
/// the file's cursor (if anyone uses it) is left alone. An empty file has `len == 0`.
pub fn fingerprint(file: &File, max_len: usize) -> io::Result<Fingerprint> {
    let size = file.metadata()?.len();
    let want = usize::try_from(size).unwrap_or(usize::MAX).min(max_len);
    let head = read_head(file, want)?;
    Ok(Fingerprint {
        // `want` is bounded by `max_len`, which no caller sets near 4 GiB; saturate anyway.
        len: u32::try_from(head.len()).unwrap_or(u32::MAX),
        crc: crc32c::crc32c(&head),
    })
}

/// Whether `file` starts with the bytes `fp` was computed from. A file shorter than `fp.len`
/// cannot be the same file (log files only grow, unless truncated, which also makes them a
/// different stream of lines for our purposes).
pub fn fingerprint_matches(file: &File, fp: &Fingerprint) -> io::Result<bool> {
    let want = fp.len as usize;
    let head = read_head(file, want)?;
    Ok(head.len() == want && crc32c::crc32c(&head) == fp.crc)
}

/// Reads up to `len` bytes from offset 0; fewer only if the file is shorter.
pub(crate) fn read_head(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// The compression format whose magic bytes `head` starts with, if any. Used to refuse
/// logrotate's compressed copies (`app.log.1.gz`) when a broad include pattern matches them:
/// read as text they would be garbage, and their content was already read from the
/// uncompressed file.
pub fn compression_magic(head: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 4] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], "xz"),
        (b"BZh", "bzip2"),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| head.starts_with(magic))
        .map(|(_, name)| *name)
}

/// The longest magic [`compression_magic`] looks at.
pub(crate) const MAGIC_LEN: usize = 6;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(content: &[u8]) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().expect("temp file");
        tmp.write_all(content).expect("write");
        tmp.flush().expect("flush");
        let f = File::open(tmp.path()).expect("open");
        (tmp, f)
    }

    #[test]
    fn fingerprint_covers_at_most_max_len() {
        let (_t, f) = file_with(b"2024-01-01 first line\nsecond\n");
        let fp = fingerprint(&f, 10).expect("fp");
        assert_eq!(fp.len, 10);
        assert_eq!(fp.crc, crc32c::crc32c(b"2024-01-01"));
        let whole = fingerprint(&f, 256).expect("fp");
        assert_eq!(whole.len, 29);
    }

    #[test]
    fn empty_file_has_zero_length_fingerprint_that_matches_anything() {
        let (_t, f) = file_with(b"");
        let fp = fingerprint(&f, 256).expect("fp");
        assert_eq!(fp.len, 0);
        let (_t2, other) = file_with(b"anything");
        assert!(fingerprint_matches(&other, &fp).expect("match"));
    }

    #[test]
    fn fingerprint_matches_prefix_and_rejects_shorter_or_different_files() {
        let (_t, f) = file_with(b"hello world\n");
        let fp = fingerprint(&f, 5).expect("fp");
        let (_t2, grown) = file_with(b"hello world\nmore\n");
        assert!(fingerprint_matches(&grown, &fp).expect("match"));
        let (_t3, short) = file_with(b"hell");
        assert!(!fingerprint_matches(&short, &fp).expect("match"));
        let (_t4, other) = file_with(b"jello world\n");
        assert!(!fingerprint_matches(&other, &fp).expect("match"));
    }

    #[test]
    fn compression_magic_recognizes_the_four_formats_only() {
        assert_eq!(compression_magic(&[0x1f, 0x8b, 8, 0]), Some("gzip"));
        assert_eq!(
            compression_magic(&[0x28, 0xb5, 0x2f, 0xfd, 1]),
            Some("zstd")
        );
        assert_eq!(
            compression_magic(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]),
            Some("xz")
        );
        assert_eq!(compression_magic(b"BZh91AY"), Some("bzip2"));
        assert_eq!(compression_magic(b"Jan  1 host app: hi"), None);
        assert_eq!(compression_magic(&[0x1f]), None);
        assert_eq!(compression_magic(b""), None);
    }
}
