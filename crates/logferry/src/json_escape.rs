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
    const ONES: u64 = 0x0101_0101_0101_0101;
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

#[cfg(test)]
mod tests {
    use super::push_json_str;

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
}
