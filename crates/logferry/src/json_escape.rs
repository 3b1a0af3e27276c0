//! JSON string escaping: the `json` format's members and the PutLogEvents request body.
//!
//! Both write strings the same way (`"`, `\\`, `\n`, `\r`, `\t` as two-character escapes, the
//! other controls below 0x20 as `\u00XX`, everything else as it is), so a message escaped into
//! the body reads back as the text the event was formatted to.
//!
//! Written here rather than taken from `serde_json`: the body is built from parts (a known span
//! escaped once, [`crate::format::KnownSpan`]) and appended to buffers that are reused, which
//! its `Serializer` does not offer, and this is the hottest loop of the `json` path.

use std::fmt::Write as _;

/// Bytes JSON requires escaping: `"`, `\\` and the controls below 0x20.
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Whether any of the 8 bytes of `w` needs escaping. Word-at-a-time ("SWAR") tests from Bit
/// Twiddling Hacks: exact when no byte matches, which is the common case; a match is then
/// located byte by byte. This is the hot loop of `json` output (every message is scanned twice:
/// once into the event, once into the request body), where byte-at-a-time checks took a fifth
/// of the CPU.
#[inline]
fn word_needs_escape(w: u64) -> bool {
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGHS != 0;
    control || has_zero(w ^ (ONES * u64::from(b'"'))) || has_zero(w ^ (ONES * u64::from(b'\\')))
}

/// The index of the first byte at or after `from` that needs escaping.
fn next_escape(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i + 8 <= bytes.len() {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[i..i + 8]);
        if word_needs_escape(u64::from_le_bytes(word)) {
            break;
        }
        i += 8;
    }
    bytes[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .map(|p| i + p)
}

/// Appends `s` as a JSON string. Shared by the `json` format and the PutLogEvents body, so
/// both escape the same way; clean runs between escapes are copied in one go.
pub fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    push_json_contents(out, s);
    out.push('"');
}

/// Appends `s`'s characters as a JSON string holds them (escaped, without the quotes).
pub(crate) fn push_json_contents(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        // Escapable bytes are ASCII, so `i` is a char boundary.
        out.push_str(&s[start..i]);
        match bytes[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b => {
                let _ = write!(out, "\\u{:04x}", b);
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
}

/// Appends `s` as a JSON string to a byte buffer: what [`push_json_str`] writes, for the
/// request body, where every message is escaped and a `json` message is a quote every few
/// bytes ([`push_contents_bytes`]).
pub fn push_json_str_bytes(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    push_contents_bytes(out, s.as_bytes());
    out.push(b'"');
}

/// Appends the characters of `s` (UTF-8) as a JSON string holds them, to a byte buffer.
///
/// A word (8 bytes) at a time, with no branch per escape: a `json` message in the body has a
/// quote every few bytes, and [`push_json_contents`]'s way (find the next escape, copy the run
/// before it, write the escape) mispredicts a branch and calls `memcpy` for a few bytes at
/// each: 14% of a `merge_json` run's CPU. A clean word is stored whole. A word with quotes or
/// backslashes (escaped as a backslash and the byte itself) stores each byte after a
/// backslash it overwrites unless the byte is one of those, at places worked out for the whole
/// word at once. A word with a control character
/// (rare in a one-line message) goes a byte at a time. The buffer grows once up front by twice
/// the input and 16 bytes (room for every byte doubling, and for a word's stores to land in a
/// fixed window, which spares a bounds check per store); a control written as `\u00XX` (six bytes where
/// the room counted two) grows it by four.
pub fn push_contents_bytes(out: &mut Vec<u8>, s: &[u8]) {
    let start = out.len();
    out.resize(start + 2 * s.len() + 16, 0);
    let mut w = start;
    let mut words = s.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let (doubled, controls) = escape_masks(u64::from_le_bytes(word));
        if doubled | controls == 0 {
            out[w..w + 8].copy_from_slice(&word);
            w += 8;
        } else if controls == 0 {
            // Where each byte goes: after the bytes before it and the backslashes of the
            // doubled ones among them (a prefix sum of the doubled marks, one per byte, by
            // one multiplication), so the stores do not wait on each other.
            let marks = doubled >> 7;
            let through = marks.wrapping_mul(ONES);
            let before = through - marks;
            let window = out.get_mut(w..w + 24);
            match window.and_then(|d| <&mut [u8; 24]>::try_from(d).ok()) {
                Some(dst) => {
                    for (k, b) in word.into_iter().enumerate() {
                        let shift = 8 * k;
                        dst[k + ((before >> shift) & 0xf) as usize] = b'\\';
                        dst[k + ((through >> shift) & 0xf) as usize] = b;
                    }
                    w += 8 + (through >> 56) as usize;
                }
                // Never (the room above), but if so, slowly and still right.
                None => {
                    for b in word {
                        w = put_byte(out, w, b);
                    }
                }
            }
        } else {
            for b in word {
                w = put_byte(out, w, b);
            }
        }
    }
    for &b in words.remainder() {
        w = put_byte(out, w, b);
    }
    out.truncate(w);
}

/// Writes `b` at `out[w..]`, escaped if it must be; returns where it ends.
fn put_byte(out: &mut Vec<u8>, w: usize, b: u8) -> usize {
    if needs_escape(b) {
        put_escape(out, w, b)
    } else {
        out[w] = b;
        w + 1
    }
}

/// A byte of ones: multiplying by it sums a word's bytes into each byte from the lowest up.
const ONES: u64 = 0x0101_0101_0101_0101;

/// Writes the escape of `b` (a byte [`needs_escape`]) at `out[w..]`; returns where it ends.
fn put_escape(out: &mut Vec<u8>, w: usize, b: u8) -> usize {
    let short = match b {
        b'"' => b'"',
        b'\\' => b'\\',
        b'\n' => b'n',
        b'\r' => b'r',
        b'\t' => b't',
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.resize(out.len() + 4, 0);
            out[w..w + 6].copy_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            return w + 6;
        }
    };
    out[w] = b'\\';
    out[w + 1] = short;
    w + 2
}

/// The bytes of `w` to escape as a backslash and themselves (`"`, `\\`), and the control
/// characters: the high bit of each such byte set, every other bit clear. A byte is zero
/// exactly when adding 0x7f to its low seven bits leaves the high bit clear and its own high bit
/// is clear too; no sum carries into the next byte.
#[inline]
fn escape_masks(w: u64) -> (u64, u64) {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let zero = |x: u64| !(((x & LOW7) + LOW7) | x | LOW7);
    let doubled = zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\')));
    (doubled, zero(w & (ONES * 0xe0)))
}

#[cfg(test)]
mod tests {
    use super::{push_json_str, push_json_str_bytes};

    proptest::proptest! {
        /// Whatever the text (controls, quotes, backslashes, multi-byte characters, at any
        /// position relative to the 8-byte words), the output parses back to it.
        #[test]
        fn json_strings_round_trip(s in "(\\PC|[\\x00-\\x1f\"\\\\]|\\u{e9}|\\u{1F600}){0,64}") {
            let mut out = String::new();
            push_json_str(&mut out, &s);
            let back: String = serde_json::from_str(&out).expect("valid JSON string");
            proptest::prop_assert_eq!(back, s);
        }
    }

    #[test]
    fn json_escapes_every_position_of_a_word() {
        for len in 0..20 {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', 0x01, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    let s = String::from_utf8(bytes).expect("ascii");
                    let mut out = String::new();
                    push_json_str(&mut out, &s);
                    let back: String = serde_json::from_str(&out).expect("valid");
                    assert_eq!(back, s);
                    assert_eq!(
                        out.len(),
                        s.len()
                            + 2
                            + if special < 0x20 && special != b'\n' {
                                5
                            } else {
                                1
                            }
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// The byte buffer's escaper writes exactly what the `String` one writes, after
        /// whatever the buffer already holds.
        #[test]
        fn byte_escaper_writes_what_the_string_one_writes(
            s in "(\\PC|[\\x00-\\x1f\"\\\\]|\\u{e9}|\\u{1F600}){0,80}",
            before in "[a-z]{0,3}",
        ) {
            let mut text = before.clone();
            push_json_str(&mut text, &s);
            let mut bytes = before.into_bytes();
            push_json_str_bytes(&mut bytes, &s);
            proptest::prop_assert_eq!(bytes, text.into_bytes());
        }
    }

    #[test]
    fn byte_escaper_handles_every_escape_at_every_position() {
        for len in 0..24 {
            for at in 0..len {
                for special in [b'"', b'\\', b'\n', b'\r', b'\t', 0x00, 0x01, 0x1f] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    // And a run of them, which grows the buffer past its first room.
                    let mut many = vec![special; len];
                    many[at] = b'a';
                    for input in [bytes, many] {
                        let s = String::from_utf8(input).expect("ascii");
                        let (mut text, mut out) = (String::new(), Vec::new());
                        push_json_str(&mut text, &s);
                        push_json_str_bytes(&mut out, &s);
                        assert_eq!(out, text.as_bytes(), "{s:?}");
                    }
                }
            }
        }
    }
}
