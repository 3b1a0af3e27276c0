//! Stream framing end to end: mixed framings, arbitrary split points, oversize frames and
//! bounded memory on a line without end.

use bytes::BytesMut;
use logferry_syslog::{Frame, Framer, Framing};

fn feed(framer: &mut Framer, buf: &mut BytesMut, chunk: &[u8], out: &mut Vec<Frame>) {
    buf.extend_from_slice(chunk);
    while let Some(f) = framer.decode(buf) {
        out.push(f);
    }
}

fn summary(frames: &[Frame]) -> Vec<(Vec<u8>, Framing, u64)> {
    frames
        .iter()
        .map(|f| (f.data.to_vec(), f.framing, f.truncated_bytes))
        .collect()
}

const MIXED: &[u8] = b"40 <13>1 2026-11-25T16:20:39Z h a - - - one\
Nov 25 16:20:39 node-1 kubelet[2174]: two\r\n\
\n\0\0\r\n\
17 <14>three\nwith lf\
<13>Nov 25 16:20:39 host app: four\n\
8 <1>five\n\
12345 not a count\n\
5 <6>x\0\
last line without newline";

fn mixed_expected() -> Vec<(Vec<u8>, Framing, u64)> {
    use Framing::*;
    [
        (
            &b"<13>1 2026-11-25T16:20:39Z h a - - - one"[..],
            OctetCounted,
        ),
        (
            b"Nov 25 16:20:39 node-1 kubelet[2174]: two",
            NewlineDelimited,
        ),
        (b"<14>three\nwith lf", OctetCounted),
        (b"<13>Nov 25 16:20:39 host app: four", NewlineDelimited),
        (b"<1>five", OctetCounted),
        (b"12345 not a count", NewlineDelimited),
        (b"<6>x", OctetCounted),
        (b"last line without newline", NewlineDelimited),
    ]
    .into_iter()
    .map(|(d, f)| (d.to_vec(), f, 0))
    .collect()
}

#[test]
fn mixed_stream_split_at_every_byte_boundary() {
    for split in 0..=MIXED.len() {
        let mut framer = Framer::new(1024);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        feed(&mut framer, &mut buf, &MIXED[..split], &mut out);
        feed(&mut framer, &mut buf, &MIXED[split..], &mut out);
        out.extend(framer.decode_eof(&mut buf));
        assert_eq!(summary(&out), mixed_expected(), "split at {split}");
    }
}

#[test]
fn mixed_stream_split_at_every_pair_of_boundaries() {
    for a in 0..=MIXED.len() {
        for b in a..=MIXED.len() {
            let mut framer = Framer::new(1024);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            feed(&mut framer, &mut buf, &MIXED[..a], &mut out);
            feed(&mut framer, &mut buf, &MIXED[a..b], &mut out);
            feed(&mut framer, &mut buf, &MIXED[b..], &mut out);
            out.extend(framer.decode_eof(&mut buf));
            assert_eq!(summary(&out), mixed_expected(), "splits at {a}, {b}");
        }
    }
}

#[test]
fn oversize_frames_in_both_framings_do_not_hurt_the_next_frame() {
    const MAX: usize = 64;
    let mut stream = Vec::new();
    // Octet-counted, 200 bytes declared: 136 to drop, known exactly.
    let counted: Vec<u8> = b"<13>"
        .iter()
        .copied()
        .chain((0..196).map(|i| b'a' + (i % 26) as u8))
        .collect();
    stream.extend_from_slice(format!("{} ", counted.len()).as_bytes());
    stream.extend_from_slice(&counted);
    stream.extend_from_slice(b"5 <1>ok");
    // A 300-byte line.
    let line: Vec<u8> = (0..300).map(|i| b'A' + (i % 26) as u8).collect();
    stream.extend_from_slice(&line);
    stream.extend_from_slice(b"\r\n<13>Nov 25 16:20:39 host app: intact\n");

    for chunk in [1, 2, 7, 63, 64, 65, 130, stream.len()] {
        let mut framer = Framer::new(MAX);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in stream.chunks(chunk) {
            feed(&mut framer, &mut buf, piece, &mut out);
            assert!(
                buf.len() <= MAX + 2 + chunk,
                "buffered {} with chunk {chunk}",
                buf.len()
            );
        }
        out.extend(framer.decode_eof(&mut buf));
        let got = summary(&out);
        assert_eq!(got.len(), 4, "chunk {chunk}: {got:?}");
        assert_eq!(
            got[0],
            (counted[..MAX].to_vec(), Framing::OctetCounted, 136)
        );
        assert_eq!(got[1], (b"<1>ok".to_vec(), Framing::OctetCounted, 0));
        assert_eq!(
            (&got[2].0[..], got[2].1),
            (&line[..MAX], Framing::NewlineDelimited)
        );
        // Emitted as soon as the limit was crossed: at least one byte, at most the whole
        // excess (plus the `\r` if it was already buffered) is reported on the frame.
        assert!((1..=237).contains(&got[2].2), "chunk {chunk}: {}", got[2].2);
        assert_eq!(
            got[3],
            (
                b"<13>Nov 25 16:20:39 host app: intact".to_vec(),
                Framing::NewlineDelimited,
                0
            )
        );
        let line_dropped = framer.discarded_bytes() - 136;
        assert!(
            (236..=237).contains(&line_dropped),
            "chunk {chunk}: {line_dropped}"
        );
    }
}

/// Feeds `total` bytes of `filler` in 64 KiB chunks the way a socket reader would, and
/// checks that neither the buffered bytes nor the buffer's capacity outgrow the limit.
fn stream_huge(prefix: &[u8], total: usize, max: usize) -> (Vec<(usize, u64)>, Framer, BytesMut) {
    const CHUNK: usize = 64 * 1024;
    let mut framer = Framer::new(max);
    let mut buf = BytesMut::with_capacity(CHUNK);
    let mut heads = Vec::new();
    let filler = vec![b'x'; CHUNK];
    buf.extend_from_slice(prefix);
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        buf.reserve(n);
        buf.extend_from_slice(&filler[..n]);
        sent += n;
        while let Some(f) = framer.decode(&mut buf) {
            heads.push((f.data.len(), f.truncated_bytes));
        }
        assert!(buf.len() <= max + 2 + CHUNK, "buffered {}", buf.len());
        assert!(
            buf.capacity() <= 2 * (max + 2 * CHUNK),
            "capacity {}",
            buf.capacity()
        );
    }
    (heads, framer, buf)
}

#[test]
fn fifty_megabyte_line_streams_in_bounded_memory() {
    const MAX: usize = 1 << 20;
    const TOTAL: usize = 50 << 20;
    let (heads, mut framer, mut buf) = stream_huge(b"", TOTAL, MAX);
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].0, MAX);
    assert!(heads[0].1 >= 1);
    buf.extend_from_slice(b"\n<13>Nov 25 16:20:39 host app: after\n");
    let next = framer.decode(&mut buf).map(|f| f.data);
    assert_eq!(
        next.as_deref(),
        Some(&b"<13>Nov 25 16:20:39 host app: after"[..])
    );
    assert_eq!(framer.discarded_bytes(), (TOTAL - MAX) as u64);
    assert_eq!(framer.decode_eof(&mut buf), None);
}

#[test]
fn ten_megabyte_counted_frame_streams_in_bounded_memory() {
    const MAX: usize = 1 << 20;
    const TOTAL: usize = 10 << 20;
    let prefix = format!("{} <", TOTAL + 1);
    let (heads, mut framer, mut buf) = stream_huge(prefix.as_bytes(), TOTAL, MAX);
    assert_eq!(heads, [(MAX, (TOTAL + 1 - MAX) as u64)]);
    buf.extend_from_slice(b"5 <1>ok");
    let next = framer.decode(&mut buf).map(|f| f.data);
    assert_eq!(next.as_deref(), Some(&b"<1>ok"[..]));
}

#[test]
fn absurd_octet_count_is_framed_as_text() {
    // 16x the limit is the most an octet count may claim before it is distrusted.
    let mut framer = Framer::new(100);
    let mut buf = BytesMut::from(&b"9999999999 <13>not really counted\nnext\n"[..]);
    let mut out = Vec::new();
    feed(&mut framer, &mut buf, b"", &mut out);
    let got: Vec<_> = out.iter().map(|f| (&f.data[..], f.framing)).collect();
    assert_eq!(
        got,
        [
            (
                &b"9999999999 <13>not really counted"[..],
                Framing::NewlineDelimited
            ),
            (b"next", Framing::NewlineDelimited)
        ]
    );
}
