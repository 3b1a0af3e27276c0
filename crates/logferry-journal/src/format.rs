//! On-disk constants of the journal file format and bounds-checked little-endian readers.
//!
//! Layout follows systemd's `docs/JOURNAL_FILE_FORMAT.md` and was checked byte by byte against
//! files written by journald 252 and `systemd-journal-remote` on this machine (see the
//! differential tests). Every reader here returns `None` instead of panicking, because every
//! byte comes from a file that another process may be writing, or that may be corrupt.

/// Magic at offset 0 of every journal file.
pub(crate) const SIGNATURE: &[u8; 8] = b"LPKSHHRH";

/// Header incompatible flags. A reader must refuse a file with a flag it does not know,
/// because the object layout may differ in ways it cannot detect.
pub(crate) const INCOMPAT_COMPRESSED_XZ: u32 = 1;
pub(crate) const INCOMPAT_COMPRESSED_LZ4: u32 = 2;
pub(crate) const INCOMPAT_KEYED_HASH: u32 = 4;
pub(crate) const INCOMPAT_COMPRESSED_ZSTD: u32 = 8;
pub(crate) const INCOMPAT_COMPACT: u32 = 16;
pub(crate) const INCOMPAT_SUPPORTED: u32 = INCOMPAT_COMPRESSED_XZ
    | INCOMPAT_COMPRESSED_LZ4
    | INCOMPAT_KEYED_HASH
    | INCOMPAT_COMPRESSED_ZSTD
    | INCOMPAT_COMPACT;

/// Header `state` values.
pub(crate) const STATE_OFFLINE: u8 = 0;
pub(crate) const STATE_ONLINE: u8 = 1;
pub(crate) const STATE_ARCHIVED: u8 = 2;

// Header field offsets (all little endian).
pub(crate) const H_INCOMPAT: usize = 12;
pub(crate) const H_STATE: usize = 16;
pub(crate) const H_FILE_ID: usize = 24;
pub(crate) const H_SEQNUM_ID: usize = 72;
pub(crate) const H_HEADER_SIZE: usize = 88;
pub(crate) const H_ARENA_SIZE: usize = 96;
pub(crate) const H_N_ENTRIES: usize = 152;
pub(crate) const H_ENTRY_ARRAY_OFFSET: usize = 176;
/// Size of the oldest header that carries every field a reader needs (up to
/// `tail_entry_monotonic`). Newer fields are only read when `header_size` covers them.
pub(crate) const HEADER_SIZE_MIN: u64 = 208;

/// Object types.
pub(crate) const OBJECT_DATA: u8 = 1;
pub(crate) const OBJECT_ENTRY: u8 = 3;
pub(crate) const OBJECT_ENTRY_ARRAY: u8 = 6;

/// Object header flags telling how a DATA payload is compressed.
pub(crate) const OBJ_COMPRESSED_XZ: u8 = 1;
pub(crate) const OBJ_COMPRESSED_LZ4: u8 = 2;
pub(crate) const OBJ_COMPRESSED_ZSTD: u8 = 4;
pub(crate) const OBJ_COMPRESSED_MASK: u8 =
    OBJ_COMPRESSED_XZ | OBJ_COMPRESSED_LZ4 | OBJ_COMPRESSED_ZSTD;

/// ObjectHeader: type u8, flags u8, reserved[6], size u64.
pub(crate) const OBJECT_HEADER_SIZE: u64 = 16;
/// DATA: header, hash, next_hash_offset, next_field_offset, entry_offset,
/// entry_array_offset, n_entries, then the payload; COMPACT inserts two u32 before it.
pub(crate) const DATA_PAYLOAD_OFFSET: u64 = 64;
pub(crate) const DATA_PAYLOAD_OFFSET_COMPACT: u64 = 72;
/// ENTRY: header, seqnum, realtime, monotonic, boot_id[16], xor_hash, then items
/// (regular: {u64 offset, u64 hash}; compact: u32 offset).
pub(crate) const ENTRY_ITEMS_OFFSET: u64 = 64;
/// ENTRY_ARRAY: header, next_entry_array_offset, then items (u64, or u32 when compact).
pub(crate) const ENTRY_ARRAY_ITEMS_OFFSET: u64 = 24;

/// Same bounds sd-journal applies to an entry's timestamps (`VALID_REALTIME`,
/// `VALID_MONOTONIC`); anything else is a corrupt or half-written entry.
pub(crate) const TIMESTAMP_LIMIT: u64 = 1 << 55;

#[inline]
pub(crate) fn u8_at(buf: &[u8], off: u64) -> Option<u8> {
    buf.get(usize::try_from(off).ok()?).copied()
}

#[inline]
pub(crate) fn u32_at(buf: &[u8], off: u64) -> Option<u32> {
    let off = usize::try_from(off).ok()?;
    let bytes = buf.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

#[inline]
pub(crate) fn u64_at(buf: &[u8], off: u64) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    let bytes = buf.get(off..off.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

#[inline]
pub(crate) fn id_at(buf: &[u8], off: u64) -> Option<[u8; 16]> {
    let off = usize::try_from(off).ok()?;
    buf.get(off..off.checked_add(16)?)?.try_into().ok()
}

#[inline]
pub(crate) fn slice_at(buf: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    buf.get(off..off.checked_add(len)?)
}

/// Lower-case hex of a 128-bit id, as systemd prints ids in cursors and export output.
pub(crate) fn id_to_hex(id: &[u8; 16]) -> String {
    let mut s = String::with_capacity(32);
    for b in id {
        s.push(hex_digit(b >> 4));
        s.push(hex_digit(b & 0xf));
    }
    s
}

fn hex_digit(n: u8) -> char {
    char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
}

/// Parses 32 hex digits (either case) into an id.
pub(crate) fn id_from_hex(s: &str) -> Option<[u8; 16]> {
    let bytes = s.as_bytes();
    if bytes.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *id.get_mut(i)? = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_never_panic_out_of_range() {
        let buf = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        assert_eq!(u64_at(&buf, 0), Some(0x0807060504030201));
        assert_eq!(u64_at(&buf, 2), None);
        assert_eq!(u64_at(&buf, u64::MAX), None);
        assert_eq!(u32_at(&buf, 6), None);
        assert_eq!(slice_at(&buf, 8, u64::MAX), None);
        assert_eq!(id_at(&buf, 0), None);
    }

    #[test]
    fn hex_ids_round_trip() {
        let id = *b"\x00\x01\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\xcc\xdd\xee\xff";
        let s = id_to_hex(&id);
        assert_eq!(s, "00012233445566778899aabbccddeeff");
        assert_eq!(id_from_hex(&s), Some(id));
        assert_eq!(id_from_hex(&s.to_uppercase()), Some(id));
        assert_eq!(id_from_hex("0001"), None);
        assert_eq!(id_from_hex(&"g".repeat(32)), None);
        assert_eq!(id_from_hex(&"é".repeat(16)), None);
    }
}
