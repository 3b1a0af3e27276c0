//! The exact on-disk format: record framing, segment file names and the
//! acknowledgement checkpoint file.
//!
//! Everything here is pure (no I/O) so that the recovery scanner and the
//! runtime reader share one parser and the format has a single definition.
//!
//! # Record (all integers little-endian)
//!
//! ```text
//! offset  size  field
//!      0     4  len          payload length in bytes (<= max_record_bytes)
//!      4     4  payload_crc  crc32c(payload)
//!      8     8  id           record id; ids are dense (+1) inside a segment
//!     16     8  appended_ms  wall-clock append time, ms since the Unix epoch
//!     24     4  header_crc   crc32c(bytes 0..24 of this header)
//!     28   len  payload
//! ```
//!
//! The header has its own checksum so that a flipped bit in `len` is detected
//! as corruption instead of being mistaken for a record that runs past the end
//! of the file (which is what a torn write looks like).

use bytes::BufMut;

use crate::crc;

/// Size of the fixed record header.
pub const HEADER_LEN: usize = 28;
/// Extension of segment files: `{first_id:020}.seg`.
pub const SEGMENT_EXT: &str = "seg";
/// Suffix given to quarantined segments.
pub const CORRUPT_EXT: &str = "corrupt";
/// Acknowledgement checkpoint file.
pub const CHECKPOINT_FILE: &str = "ack.ckpt";
/// Lock file guarding against two `Spool`s on one directory.
pub const LOCK_FILE: &str = "LOCK";
/// Suffix of temporary files written during quarantine.
pub const TMP_EXT: &str = "tmp";
/// Magic at the start of the checkpoint file (format version 1).
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"LFSPACK1";
/// Length of the checkpoint file: magic, u64 watermark, u32 crc32c.
pub const CHECKPOINT_LEN: usize = 20;

/// A decoded, header-checksum-verified record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub payload_crc: u32,
    pub id: u64,
    pub appended_ms: u64,
}

/// Why a record failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    HeaderCrc,
    IdMismatch { expected: u64, found: u64 },
    TooLong { len: u32, max: u32 },
    PayloadCrc,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::HeaderCrc => f.write_str("record header checksum mismatch"),
            Corruption::IdMismatch { expected, found } => {
                write!(f, "record id {found} where {expected} was expected")
            }
            Corruption::TooLong { len, max } => {
                write!(f, "record length {len} exceeds the limit {max}")
            }
            Corruption::PayloadCrc => f.write_str("record payload checksum mismatch"),
        }
    }
}

/// Result of trying to parse one record at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete, valid record occupying `HEADER_LEN + header.len` bytes.
    Record(Header),
    /// The buffer ends before the record does. `needed` is the total record
    /// size when the header was readable (and valid), else `HEADER_LEN`.
    NeedMore { needed: usize },
    /// The bytes at the start of the buffer are not a valid record.
    Bad(Corruption),
}

/// Encodes the 28-byte header for `payload`.
pub fn encode_header(id: u64, appended_ms: u64, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    // Callers guarantee payload.len() <= u32::MAX (max_record_bytes is a u32).
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    h[0..4].copy_from_slice(&len.to_le_bytes());
    h[4..8].copy_from_slice(&crc::crc32c(payload).to_le_bytes());
    h[8..16].copy_from_slice(&id.to_le_bytes());
    h[16..24].copy_from_slice(&appended_ms.to_le_bytes());
    let hcrc = crc::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// Appends a framed record to `out`.
pub fn put_record(out: &mut impl BufMut, id: u64, appended_ms: u64, payload: &[u8]) {
    out.put_slice(&encode_header(id, appended_ms, payload));
    out.put_slice(payload);
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Parses and fully validates the record at the start of `buf`.
///
/// `expected_id` is the id the record must carry; `max_len` the largest
/// acceptable payload.
pub fn parse_record(buf: &[u8], expected_id: u64, max_len: u32) -> Parsed {
    if buf.len() < HEADER_LEN {
        return Parsed::NeedMore { needed: HEADER_LEN };
    }
    let h = &buf[..HEADER_LEN];
    if crc::crc32c(&h[0..24]) != le_u32(h, 24) {
        return Parsed::Bad(Corruption::HeaderCrc);
    }
    let header = Header {
        len: le_u32(h, 0),
        payload_crc: le_u32(h, 4),
        id: le_u64(h, 8),
        appended_ms: le_u64(h, 16),
    };
    if header.id != expected_id {
        return Parsed::Bad(Corruption::IdMismatch {
            expected: expected_id,
            found: header.id,
        });
    }
    if header.len > max_len {
        return Parsed::Bad(Corruption::TooLong {
            len: header.len,
            max: max_len,
        });
    }
    let total = HEADER_LEN + header.len as usize;
    if buf.len() < total {
        return Parsed::NeedMore { needed: total };
    }
    if crc::crc32c(&buf[HEADER_LEN..total]) != header.payload_crc {
        return Parsed::Bad(Corruption::PayloadCrc);
    }
    Parsed::Record(header)
}

/// File name of the segment whose first record id is `first_id`.
pub fn segment_file_name(first_id: u64) -> String {
    format!("{first_id:020}.{SEGMENT_EXT}")
}

/// Parses a segment file name back into its first record id.
pub fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Ids are assigned from 1 upwards; anything this large is not ours (and
    // would risk overflow in id arithmetic), so the file is left alone.
    stem.parse().ok().filter(|&id: &u64| id < MAX_FIRST_ID)
}

/// Segment names at or above this id are ignored (2^62: ~146,000 years of
/// ids at a million records per second).
pub const MAX_FIRST_ID: u64 = 1 << 62;

/// Encodes the checkpoint file contents for watermark `w`.
pub fn encode_checkpoint(w: u64) -> [u8; CHECKPOINT_LEN] {
    let mut b = [0u8; CHECKPOINT_LEN];
    b[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
    b[8..16].copy_from_slice(&w.to_le_bytes());
    let crc = crc::crc32c(&b[0..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes checkpoint file contents; `Err` carries a human-readable reason.
pub fn decode_checkpoint(b: &[u8]) -> Result<u64, String> {
    if b.len() != CHECKPOINT_LEN {
        return Err(format!(
            "checkpoint is {} bytes, expected {CHECKPOINT_LEN}",
            b.len()
        ));
    }
    if b[0..8] != CHECKPOINT_MAGIC {
        return Err("bad checkpoint magic".into());
    }
    if crc::crc32c(&b[0..16]) != le_u32(b, 16) {
        return Err("checkpoint checksum mismatch".into());
    }
    Ok(le_u64(b, 8))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_record() {
        let mut v = Vec::new();
        put_record(&mut v, 7, 123, b"hello");
        assert_eq!(v.len(), HEADER_LEN + 5);
        match parse_record(&v, 7, 100) {
            Parsed::Record(h) => {
                assert_eq!(h.id, 7);
                assert_eq!(h.len, 5);
                assert_eq!(h.appended_ms, 123);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_record(&v[..10], 7, 100),
            Parsed::NeedMore { needed: HEADER_LEN }
        );
        assert_eq!(
            parse_record(&v[..30], 7, 100),
            Parsed::NeedMore {
                needed: HEADER_LEN + 5
            }
        );
        assert!(matches!(
            parse_record(&v, 8, 100),
            Parsed::Bad(Corruption::IdMismatch { .. })
        ));
        assert!(matches!(
            parse_record(&v, 7, 4),
            Parsed::Bad(Corruption::TooLong { .. })
        ));
        let mut bad = v.clone();
        bad[HEADER_LEN + 1] ^= 1;
        assert_eq!(
            parse_record(&bad, 7, 100),
            Parsed::Bad(Corruption::PayloadCrc)
        );
        let mut bad = v.clone();
        bad[0] ^= 0x80;
        assert_eq!(
            parse_record(&bad, 7, 100),
            Parsed::Bad(Corruption::HeaderCrc)
        );
    }

    #[test]
    fn names_and_checkpoint() {
        assert_eq!(segment_file_name(1), "00000000000000000001.seg");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.seg"), None);
        assert_eq!(
            parse_segment_file_name("00000000000000000042.seg.corrupt"),
            None
        );
        assert_eq!(decode_checkpoint(&encode_checkpoint(99)), Ok(99));
        let mut c = encode_checkpoint(99);
        c[9] ^= 1;
        assert!(decode_checkpoint(&c).is_err());
    }
}
