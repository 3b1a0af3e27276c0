//! Property tests: no input panics, framing round-trips under any chunking, oversize
//! frames are cut as documented, and parsed fields always point into the frame.

use bytes::{Bytes, BytesMut};
use logferry_syslog::{datagram_frame, parse, Frame, Framer, Framing, Message, ParseOptions};
use proptest::prelude::*;

const OPTS: ParseOptions = ParseOptions {
    now_unix_ms: 1_795_623_639_000,
    local_utc_offset_secs: 3600,
};

/// Feeds `stream` in pieces of the given sizes (cycled), then signals end of stream.
fn decode_chunked(framer: &mut Framer, stream: &[u8], sizes: &[usize]) -> Vec<Frame> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes
            .get(i % sizes.len().max(1))
            .copied()
            .unwrap_or(1)
            .clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        i += 1;
        while let Some(f) = framer.decode(&mut buf) {
            out.push(f);
        }
    }
    while let Some(f) = framer.decode_eof(&mut buf) {
        out.push(f);
    }
    out
}

/// A frame as a sender would produce it, valid for its framing.
#[derive(Debug, Clone)]
enum Sent {
    /// Starts with `<` (octet counting needs it) and does not end in LF/CR/NUL.
    Counted(Vec<u8>),
    /// No LF, does not start with a digit or NUL, does not end in CR; sent with LF or CRLF.
    Line(Vec<u8>, bool),
}

fn counted(max_len: usize) -> impl Strategy<Value = Sent> {
    (
        prop::collection::vec(any::<u8>(), 0..max_len),
        any::<u8>().prop_filter("no trailer", |b| !matches!(b, b'\n' | b'\r' | 0)),
    )
        .prop_map(|(mut body, last)| {
            body.insert(0, b'<');
            body.push(last);
            Sent::Counted(body)
        })
}

fn line(max_len: usize) -> impl Strategy<Value = Sent> {
    (
        any::<u8>().prop_filter("not a count or separator", |b| {
            !b.is_ascii_digit() && !matches!(b, b'\n' | b'\r' | 0)
        }),
        prop::collection::vec(
            any::<u8>().prop_filter("no LF", |&b| b != b'\n'),
            0..max_len,
        ),
        any::<u8>().prop_filter("no LF or CR", |b| !matches!(b, b'\n' | b'\r')),
        any::<bool>(),
    )
        .prop_map(|(first, mut body, last, crlf)| {
            body.insert(0, first);
            body.push(last);
            Sent::Line(body, crlf)
        })
}

fn encode(frames: &[Sent], separators: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        match f {
            Sent::Counted(d) => {
                out.extend_from_slice(format!("{} ", d.len()).as_bytes());
                out.extend_from_slice(d);
            }
            Sent::Line(d, crlf) => {
                out.extend_from_slice(d);
                out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
            }
        }
        // Stray separators between frames must be skipped.
        match separators.get(i).copied().unwrap_or(0) % 4 {
            1 => out.push(b'\n'),
            2 => out.push(0),
            3 => out.extend_from_slice(b"\r\n"),
            _ => {}
        }
    }
    out
}

fn sent_data(f: &Sent) -> (&[u8], Framing) {
    match f {
        Sent::Counted(d) => (d, Framing::OctetCounted),
        Sent::Line(d, _) => (d, Framing::NewlineDelimited),
    }
}

/// Asserts that every borrowed field of `m` lies within `input`.
fn assert_within(input: &[u8], m: &Message<'_>) {
    let range = input.as_ptr_range();
    let inside = |s: &[u8]| {
        let r = s.as_ptr_range();
        s.is_empty() || (range.start <= r.start && r.end <= range.end)
    };
    for field in [m.hostname, m.app_name, m.procid, m.msgid, m.structured_data]
        .into_iter()
        .flatten()
    {
        assert!(inside(field.as_bytes()), "field {field:?} outside input");
    }
    assert!(inside(m.message), "message outside input");
    if m.format == logferry_syslog::Format::Raw && m.priority.is_none() {
        assert_eq!(m.message, input);
    }
    assert!(m.priority.is_none_or(|p| p <= 191));
}

/// Bytes assembled from syslog-ish tokens, to reach deep into the header parsers.
fn syslogish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        Just(&b"<13>"[..]),
        Just(&b"<191>"[..]),
        Just(&b"1 "[..]),
        Just(&b"Nov 25 "[..]),
        Just(&b"Feb 29 "[..]),
        Just(&b"16:20:39"[..]),
        Just(&b".123"[..]),
        Just(&b"2026-11-25T16:20:39"[..]),
        Just(&b"Z"[..]),
        Just(&b"+01:00"[..]),
        Just(&b"-"[..]),
        Just(&b" "[..]),
        Just(&b"host"[..]),
        Just(&b"fe80::1"[..]),
        Just(&b"app"[..]),
        Just(&b"["[..]),
        Just(&b"]"[..]),
        Just(&b"\""[..]),
        Just(&b"\\"[..]),
        Just(&b"="[..]),
        Just(&b":"[..]),
        Just(&b"*"[..]),
        Just(&b"52: "[..]),
        Just(&b"\xEF\xBB\xBF"[..]),
        Just(&b"\xff"[..]),
    ];
    prop::collection::vec(token, 0..24).prop_map(|ts| ts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(
        data in prop::collection::vec(any::<u8>(), 0..600),
        sizes in prop::collection::vec(1usize..40, 1..8),
        max in 1usize..64,
    ) {
        let m = parse(&data, &OPTS);
        assert_within(&data, &m);
        let _ = m.sd_elements().flat_map(|e| e.params()).map(|p| p.value().len()).sum::<usize>();
        let frames = decode_chunked(&mut Framer::new(max), &data, &sizes);
        for f in &frames {
            prop_assert!(!f.data.is_empty());
            prop_assert!(f.data.len() <= max);
            let m = parse(&f.data, &OPTS);
            assert_within(&f.data, &m);
        }
        let f = datagram_frame(Bytes::from(data.clone()), max);
        prop_assert!(f.data.len() <= max);
    }

    #[test]
    fn syslogish_input_parses_within_bounds(data in syslogish()) {
        let m = parse(&data, &OPTS);
        assert_within(&data, &m);
        let _ = m.sd_elements().flat_map(|e| e.params()).map(|p| p.value().len()).sum::<usize>();
    }

    #[test]
    fn frames_round_trip_under_any_chunking(
        frames in prop::collection::vec(prop_oneof![counted(200), line(200)], 0..12),
        separators in prop::collection::vec(any::<u8>(), 12),
        sizes in prop::collection::vec(1usize..300, 1..6),
    ) {
        let stream = encode(&frames, &separators);
        let got = decode_chunked(&mut Framer::new(256), &stream, &sizes);
        let got: Vec<_> = got.iter().map(|f| (&f.data[..], f.framing, f.truncated_bytes)).collect();
        let want: Vec<_> = frames.iter().map(|f| { let (d, k) = sent_data(f); (d, k, 0) }).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn oversize_frames_are_cut_and_the_rest_survives(
        frames in prop::collection::vec(prop_oneof![counted(100), line(100)], 1..10),
        separators in prop::collection::vec(any::<u8>(), 10),
        sizes in prop::collection::vec(1usize..120, 1..6),
        max in 8usize..64,
    ) {
        let stream = encode(&frames, &separators);
        let mut framer = Framer::new(max);
        let got = decode_chunked(&mut framer, &stream, &sizes);
        prop_assert_eq!(got.len(), frames.len());
        for (g, s) in got.iter().zip(&frames) {
            let (data, framing) = sent_data(s);
            prop_assert_eq!(g.framing, framing);
            if data.len() <= max {
                prop_assert_eq!(&g.data[..], data);
                prop_assert_eq!(g.truncated_bytes, 0);
            } else {
                prop_assert_eq!(&g.data[..], &data[..max]);
                let excess = (data.len() - max) as u64;
                match framing {
                    Framing::OctetCounted => prop_assert_eq!(g.truncated_bytes, excess),
                    // Prompt emission: a lower bound, which may include a buffered CR.
                    _ => prop_assert!((1..=excess + 1).contains(&g.truncated_bytes)),
                }
            }
        }
    }
}
