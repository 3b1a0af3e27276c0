//! CRC-32C of record headers and payloads, which are short (a syslog line's record is ~150
//! bytes, a header 24).
//!
//! The `crc32c` crate is built for long buffers: it steps byte by byte up to an 8-byte
//! aligned address, then 8 bytes at a time, then byte by byte again. On a short buffer the two
//! byte loops are a third of the work, each step waiting for the one before (the instruction's
//! latency), and the spool checksums every record twice when it is appended and twice when it
//! is read back: 4-6% of a syslog run's CPU. Here unaligned 8-byte loads cover the buffer and
//! the remainder takes at most three steps (4, 2, 1 bytes). Long buffers go to the crate,
//! whose three interleaved streams are faster there. The value is the same (tested against
//! the crate for every length and alignment), so the on-disk format does not change.

/// From this length on the crate's interleaved loop wins.
const SHORT_MAX: usize = 512;

/// The CRC-32C (Castagnoli) of `data`, as `crc32c::crc32c` computes it.
pub fn crc32c(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if data.len() < SHORT_MAX && std::arch::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU supports SSE4.2, checked just above.
        return unsafe { short_sse42(data) };
    }
    crc32c::crc32c(data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn short_sse42(data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};
    let mut words = data.chunks_exact(8);
    let mut crc = u64::from(u32::MAX);
    for w in &mut words {
        let mut a = [0u8; 8];
        a.copy_from_slice(w);
        crc = _mm_crc32_u64(crc, u64::from_le_bytes(a));
    }
    // The instruction leaves the upper half zero.
    let mut crc = crc as u32;
    let mut rest = words.remainder();
    if rest.len() >= 4 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&rest[..4]);
        crc = _mm_crc32_u32(crc, u32::from_le_bytes(a));
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        crc = _mm_crc32_u16(crc, u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        crc = _mm_crc32_u8(crc, b);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_value_as_the_crate_for_every_length_and_alignment() {
        let data: Vec<u8> = (0..2 * SHORT_MAX + 16)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_right(13) as u8)
            .collect();
        for start in 0..8 {
            for len in 0..data.len() - start {
                let b = &data[start..start + len];
                assert_eq!(crc32c(b), crc32c::crc32c(b), "start {start}, len {len}");
            }
        }
    }

    #[test]
    fn known_check_value() {
        // The CRC-32C check value (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }
}
