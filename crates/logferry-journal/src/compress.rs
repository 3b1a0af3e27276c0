//! Decompression of DATA payloads (XZ, LZ4, ZSTD), all in pure Rust.
//!
//! Pure-Rust decoders (`ruzstd`, `lz4_flex`, `lzma-rs`) keep logferry a static musl binary
//! with no C toolchain in the build. journald only compresses payloads of 512 bytes or more,
//! so decoder speed matters little next to the plain-copy path.
//!
//! Every decoder writes through a size limit: a corrupt or hostile file must not make us
//! allocate without bound (an RLE zstd block can expand a few bytes into gigabytes).

use std::io::{self, Read, Write};

use crate::format::{OBJ_COMPRESSED_LZ4, OBJ_COMPRESSED_XZ, OBJ_COMPRESSED_ZSTD};

/// Reusable decoder state, so that a zstd frame decoder's buffers are not reallocated for
/// every compressed field.
pub(crate) struct Decompressor {
    zstd: ruzstd::decoding::FrameDecoder,
}

impl Decompressor {
    pub(crate) fn new() -> Self {
        Decompressor {
            zstd: ruzstd::decoding::FrameDecoder::new(),
        }
    }

    /// Appends the decompressed form of `src` to `out`. On error `out` is restored to its
    /// original length.
    pub(crate) fn decompress(
        &mut self,
        flag: u8,
        src: &[u8],
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<(), String> {
        let start = out.len();
        let res = match flag {
            OBJ_COMPRESSED_LZ4 => lz4(src, out, max),
            OBJ_COMPRESSED_ZSTD => self.zstd(src, out, max),
            OBJ_COMPRESSED_XZ => xz(src, out, max),
            other => Err(format!("unknown compression flag {other:#x}")),
        };
        if res.is_err() {
            out.truncate(start);
        }
        res
    }

    fn zstd(&mut self, src: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), String> {
        let start = out.len();
        let mut source = src;
        let decoder =
            ruzstd::decoding::StreamingDecoder::new_with_decoder(&mut source, &mut self.zstd)
                .map_err(|e| format!("zstd: {e}"))?;
        // One byte more than allowed tells "too large" apart from "exactly max".
        let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
        decoder
            .take(limit)
            .read_to_end(out)
            .map_err(|e| format!("zstd: {e}"))?;
        if out.len() - start > max {
            return Err(format!("zstd: decompressed field larger than {max} bytes"));
        }
        Ok(())
    }
}

/// journald's LZ4 framing: u64 LE uncompressed size, then one raw LZ4 block.
fn lz4(src: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), String> {
    let (size, block) = match src.split_first_chunk::<8>() {
        Some((size, block)) => (u64::from_le_bytes(*size), block),
        None => return Err("lz4: payload shorter than its size prefix".into()),
    };
    // An LZ4 block expands at most ~255x; a larger claim is corruption, and checking it
    // first keeps a bad size prefix from allocating.
    let bound = (block.len() as u64).saturating_mul(255).saturating_add(16);
    let size = usize::try_from(size).map_err(|_| "lz4: size does not fit memory")?;
    if size > max || size as u64 > bound {
        return Err(format!("lz4: implausible uncompressed size {size}"));
    }
    let start = out.len();
    out.resize(start + size, 0);
    let dst = out.get_mut(start..).ok_or("lz4: buffer")?;
    match lz4_flex::block::decompress_into(block, dst) {
        Ok(n) if n == size => Ok(()),
        Ok(n) => Err(format!("lz4: decompressed {n} bytes, header said {size}")),
        Err(e) => Err(format!("lz4: {e}")),
    }
}

fn xz(src: &[u8], out: &mut Vec<u8>, max: usize) -> Result<(), String> {
    let mut input = src;
    let mut w = LimitedWriter {
        out,
        left: max,
        overflow: false,
    };
    let res = lzma_rs::xz_decompress(&mut input, &mut w);
    if w.overflow {
        return Err(format!("xz: decompressed field larger than {max} bytes"));
    }
    res.map_err(|e| format!("xz: {e}"))
}

struct LimitedWriter<'a> {
    out: &'a mut Vec<u8>,
    left: usize,
    overflow: bool,
}

impl Write for LimitedWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.left {
            self.overflow = true;
            return Err(io::Error::other("size limit"));
        }
        self.left -= buf.len();
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lz4_round_trip_and_limits() {
        let data = b"MESSAGE="
            .iter()
            .chain([b'x'; 4000].iter())
            .copied()
            .collect::<Vec<u8>>();
        let block = lz4_flex::block::compress(&data);
        let mut src = (data.len() as u64).to_le_bytes().to_vec();
        src.extend_from_slice(&block);
        let mut d = Decompressor::new();
        let mut out = b"prefix".to_vec();
        d.decompress(OBJ_COMPRESSED_LZ4, &src, &mut out, 1 << 20)
            .unwrap();
        assert_eq!(&out[6..], &data[..]);
        // Limit smaller than the content: refused, buffer untouched.
        let mut out = Vec::new();
        assert!(d
            .decompress(OBJ_COMPRESSED_LZ4, &src, &mut out, 100)
            .is_err());
        assert!(out.is_empty());
        // Absurd size prefix: refused before allocating.
        let mut bad = u64::MAX.to_le_bytes().to_vec();
        bad.extend_from_slice(&block);
        assert!(d
            .decompress(OBJ_COMPRESSED_LZ4, &bad, &mut out, usize::MAX)
            .is_err());
        // Truncated block.
        assert!(d
            .decompress(OBJ_COMPRESSED_LZ4, &src[..src.len() / 2], &mut out, 1 << 20)
            .is_err());
        assert!(d
            .decompress(OBJ_COMPRESSED_LZ4, &src[..3], &mut out, 1 << 20)
            .is_err());
    }

    #[test]
    fn garbage_is_an_error_for_every_codec() {
        let mut d = Decompressor::new();
        let mut out = Vec::new();
        for flag in [
            OBJ_COMPRESSED_XZ,
            OBJ_COMPRESSED_ZSTD,
            OBJ_COMPRESSED_LZ4,
            0x80,
        ] {
            for junk in [
                &b""[..],
                b"\x28\xb5\x2f\xfd",
                b"\xfd7zXZ\x00",
                &[0xffu8; 64],
            ] {
                assert!(d.decompress(flag, junk, &mut out, 1 << 20).is_err());
                assert!(out.is_empty());
            }
        }
    }
}
