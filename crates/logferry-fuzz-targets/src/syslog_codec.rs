//! Syslog framing and parsing.
//!
//! Input layout: `[max][seed_lo][seed_hi][clock][stream...]`. The stream is fed to a
//! `Framer` with a small `max_frame_bytes` in pseudo-random chunk sizes, and again in one
//! piece; every frame is parsed.
//!
//! Invariants:
//! * no frame is empty or longer than `max_frame_bytes`;
//! * framing does not depend on how the stream was chunked (same frames, same framing, and
//!   the same truncated/not-truncated verdict); an octet-counted frame's `truncated_bytes`
//!   is exact, a newline frame's is a lower bound by design (an oversize line is emitted
//!   promptly, counting only what was buffered then), so chunked it may only be smaller;
//! * what is dropped in total (`Framer::discarded_bytes`, the metric) is exact: the same
//!   however the stream was chunked;
//! * frames never hold more bytes than were fed;
//! * every borrowed field of the parsed `Message` (and of its structured data) lies within
//!   the frame; the priority is at most 191.

use bytes::BytesMut;
use logferry_syslog::{parse, Frame, Framer, Framing, Message, ParseOptions};

fn within(frame: &[u8], part: &[u8], what: &str) {
    let f = frame.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    assert!(
        part.is_empty() || (p >= f && p + part.len() <= f + frame.len()),
        "{what} ({part:?}) is not a slice of the frame {frame:?}"
    );
}

fn check_message(frame: &[u8], m: &Message<'_>) {
    if let Some(p) = m.priority {
        assert!(p <= 191, "priority {p}");
    }
    for (what, s) in [
        ("hostname", m.hostname),
        ("app_name", m.app_name),
        ("procid", m.procid),
        ("msgid", m.msgid),
        ("structured_data", m.structured_data),
    ] {
        if let Some(s) = s {
            within(frame, s.as_bytes(), what);
        }
    }
    within(frame, m.message, "message");
    for el in m.sd_elements().take(1000) {
        within(frame, el.id.as_bytes(), "sd id");
        for p in el.params().take(1000) {
            within(frame, p.name.as_bytes(), "sd param name");
            within(frame, p.raw_value.as_bytes(), "sd param value");
            let _ = p.value();
        }
    }
}

/// Frames of `stream` fed in chunks whose sizes come from `next_chunk` (None: all at once).
fn frames(max: usize, stream: &[u8], mut next_chunk: impl FnMut() -> usize) -> (Vec<Frame>, u64) {
    let mut framer = Framer::new(max);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        let n = next_chunk().clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        while let Some(f) = framer.decode(&mut buf) {
            out.push(f);
        }
    }
    let mut guard = 0;
    while let Some(f) = framer.decode_eof(&mut buf) {
        out.push(f);
        guard += 1;
        assert!(guard <= stream.len() + 1, "decode_eof does not terminate");
    }
    assert!(buf.is_empty(), "decode_eof left {} bytes", buf.len());
    (out, framer.discarded_bytes())
}

/// One input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let max = 1 + usize::from(data[0] % 64);
    let mut rng = u32::from(u16::from_le_bytes([data[1], data[2]])) | 1;
    let clock = data[3];
    let stream = &data[4..];
    let opts = ParseOptions {
        // Somewhere between 1970 and 2100, and a zone offset within +-18 h.
        now_unix_ms: i64::from(clock) * 16_000_000_000,
        local_utc_offset_secs: (i32::from(clock) - 128) * 506,
    };

    let (chunked, chunked_discarded) = frames(max, stream, || {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        match rng % 8 {
            0 => usize::MAX,
            1..=3 => 1,
            _ => (rng >> 8) as usize % (2 * max + 4),
        }
    });
    let (whole, whole_discarded) = frames(max, stream, || usize::MAX);

    // An oversize octet-counted frame's declared excess is counted as discarded when its head
    // is emitted, even if the stream ends first: only frame bytes are bounded by what was fed.
    // But the count itself must not depend on chunking.
    assert_eq!(
        chunked_discarded, whole_discarded,
        "chunking changed discarded_bytes (max {max}):\nchunked {chunked:?}\nwhole   {whole:?}"
    );
    for frames in [&chunked, &whole] {
        let mut total = 0u64;
        for f in frames.iter() {
            assert!(!f.data.is_empty(), "empty frame: {f:?}");
            assert!(f.data.len() <= max, "frame of {} > max {max}", f.data.len());
            assert_ne!(f.framing, Framing::Datagram);
            total += f.data.len() as u64;
            let m = parse(&f.data, &opts);
            check_message(&f.data, &m);
        }
        assert!(
            total <= stream.len() as u64,
            "frames hold {total} bytes > {} bytes fed",
            stream.len()
        );
    }

    assert_eq!(
        chunked.len(),
        whole.len(),
        "chunking changed the number of frames (max {max}):\nchunked {chunked:?}\nwhole   {whole:?}"
    );
    for (c, w) in chunked.iter().zip(&whole) {
        assert_eq!(
            (&c.data, c.framing),
            (&w.data, w.framing),
            "chunking changed a frame (max {max})"
        );
        assert_eq!(
            c.truncated_bytes == 0,
            w.truncated_bytes == 0,
            "{c:?} vs {w:?}"
        );
        if c.framing == Framing::OctetCounted {
            assert_eq!(c.truncated_bytes, w.truncated_bytes, "{c:?} vs {w:?}");
        } else {
            // Documented lower bound (framing.rs, "Bounded memory"): a line cut promptly
            // counts only the bytes past the limit already buffered; the rest of it is
            // counted in discarded_bytes as it arrives (checked exactly above).
            // regressions/syslog_codec/newline-truncated-bytes-lower-bound-when-chunked.
            assert!(c.truncated_bytes <= w.truncated_bytes, "{c:?} vs {w:?}");
        }
    }
}
