//! Entries and cursors as the caller sees them.
//!
//! An [`Entry`] keeps all its fields in one byte buffer with small index triples, so that
//! [`crate::Journal::next_entry_into`] can refill the same `Entry` without allocating once
//! its buffers have grown to the working size. Fields keep the file's order; repeated
//! fields and binary values (newlines, NUL, non-UTF-8) are kept as they are.
//!
//! A [`Cursor`] uses systemd's textual format so that positions are interchangeable with
//! `journalctl --show-cursor` / `--after-cursor`, which lets an operator inspect or move a
//! shipper's saved position with standard tools.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use crate::format::{id_from_hex, id_to_hex};

/// One journal entry: its header values and its `FIELD=value` items.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// Wall-clock time journald received the entry (`__REALTIME_TIMESTAMP`), µs since epoch.
    pub realtime_usec: u64,
    /// `CLOCK_MONOTONIC` of the writing boot (`__MONOTONIC_TIMESTAMP`), µs.
    pub monotonic_usec: u64,
    /// Boot the entry was written in (`_BOOT_ID`).
    pub boot_id: [u8; 16],
    /// Sequence number, comparable only between entries of the same `seqnum_id`.
    pub seqnum: u64,
    /// Identifies the sequence-number space (shared by the files one journald writes).
    pub seqnum_id: [u8; 16],
    /// XOR of the hashes of the entry's fields, part of the cursor.
    pub xor_hash: u64,
    buf: Vec<u8>,
    fields: Vec<Span>,
}

/// A field inside `Entry::buf`: `buf[start..eq]` is the name, `buf[eq + 1..end]` the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Span {
    start: u32,
    eq: u32,
    end: u32,
}

impl Entry {
    /// An empty entry, to be filled by [`crate::Journal::next_entry_into`].
    pub fn new() -> Entry {
        Entry::default()
    }

    /// The cursor pointing at this entry.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            seqnum_id: Some(self.seqnum_id),
            seqnum: Some(self.seqnum),
            boot_id: Some(self.boot_id),
            monotonic: Some(self.monotonic_usec),
            realtime: Some(self.realtime_usec),
            xor_hash: Some(self.xor_hash),
        }
    }

    /// All fields in file order, repeated names included.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        self.fields.iter().map(move |s| self.split(s))
    }

    /// Like [`Entry::fields`] with names as bytes (no UTF-8 check: for callers matching
    /// names against byte strings on a hot path).
    pub fn fields_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> + '_ {
        self.fields.iter().map(move |s| {
            let (start, eq, end) = (s.start as usize, s.eq as usize, s.end as usize);
            (
                self.buf.get(start..eq).unwrap_or_default(),
                self.buf.get(eq + 1..end).unwrap_or_default(),
            )
        })
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when the entry has no readable field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Every value of field `name`, in file order (a field may be repeated).
    pub fn field_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// Total bytes of field names and values, a cheap size estimate for batching.
    pub fn payload_len(&self) -> usize {
        self.buf.len()
    }

    /// Writes the entry in journald's export format, byte for byte what
    /// `journalctl -o export` prints for it: the address fields first, then every field
    /// except `_BOOT_ID` (already given from the entry header), binary-safe.
    pub fn write_export<W: Write>(&self, w: &mut W) -> io::Result<()> {
        write!(
            w,
            "__CURSOR={}\n__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={}\n",
            self.cursor(),
            self.realtime_usec,
            self.monotonic_usec,
            id_to_hex(&self.boot_id)
        )?;
        for s in &self.fields {
            let (name, value) = self.split(s);
            if name == "_BOOT_ID" {
                continue;
            }
            let raw = self
                .buf
                .get(s.start as usize..s.end as usize)
                .unwrap_or_default();
            if export_as_text(raw) {
                w.write_all(raw)?;
            } else {
                w.write_all(name.as_bytes())?;
                w.write_all(b"\n")?;
                w.write_all(&(value.len() as u64).to_le_bytes())?;
                w.write_all(value)?;
            }
            w.write_all(b"\n")?;
        }
        w.write_all(b"\n")
    }

    fn split(&self, s: &Span) -> (&str, &[u8]) {
        let (start, eq, end) = (s.start as usize, s.eq as usize, s.end as usize);
        // Names were checked to be ASCII when the field was added.
        let name = self
            .buf
            .get(start..eq)
            .and_then(|n| std::str::from_utf8(n).ok())
            .unwrap_or_default();
        let value = self.buf.get(eq + 1..end).unwrap_or_default();
        (name, value)
    }

    pub(crate) fn clear_fields(&mut self) {
        self.buf.clear();
        self.fields.clear();
    }

    pub(crate) fn buf_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Registers the payload appended to the buffer since `start` as a field, or removes it
    /// again when it is not a well-formed `NAME=value`.
    pub(crate) fn push_field(&mut self, start: usize) -> Result<(), String> {
        let payload = self.buf.get(start..).unwrap_or_default();
        let eq = match payload.iter().position(|&b| b == b'=') {
            Some(0) => Err("field with an empty name"),
            Some(eq) if payload[..eq].is_ascii() => Ok(eq),
            Some(_) => Err("field name is not ASCII"),
            None => Err("field without '='"),
        };
        let span = eq.and_then(|eq| {
            let to_u32 = |v: usize| u32::try_from(v).map_err(|_| "entry larger than 4 GiB");
            Ok(Span {
                start: to_u32(start)?,
                eq: to_u32(start + eq)?,
                end: to_u32(self.buf.len())?,
            })
        });
        match span {
            Ok(span) => {
                self.fields.push(span);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e.to_string())
            }
        }
    }

    /// Builds an entry from parts (tests and callers that synthesise entries).
    pub fn from_fields<'a>(fields: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Entry {
        let mut e = Entry::new();
        for (name, value) in fields {
            let start = e.buf.len();
            e.buf.extend_from_slice(name.as_bytes());
            e.buf.push(b'=');
            e.buf.extend_from_slice(value);
            // A bad name is dropped, as it would be when read from a file.
            let _ = e.push_field(start);
        }
        e
    }
}

/// systemd's `utf8_is_printable_newline(.., false)`: valid UTF-8 without control
/// characters (tab allowed, newline not) and without Unicode non-characters.
fn export_as_text(field: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(field) else {
        return false;
    };
    s.chars().all(|c| {
        let u = c as u32;
        let control = (u < 0x20 && c != '\t') || (0x7f..=0x9f).contains(&u);
        let nonchar = (0xfdd0..=0xfdef).contains(&u) || (u & 0xfffe) == 0xfffe;
        !control && !nonchar
    })
}

/// A position in the journal, in systemd's cursor format:
/// `s=<seqnum_id>;i=<seqnum hex>;b=<boot_id>;m=<monotonic hex>;t=<realtime hex>;x=<xor_hash hex>`.
///
/// Parts are optional as in systemd (a hand-written `s=..;i=..` is a valid cursor); missing
/// parts are simply not used when seeking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Cursor {
    pub seqnum_id: Option<[u8; 16]>,
    pub seqnum: Option<u64>,
    pub boot_id: Option<[u8; 16]>,
    pub monotonic: Option<u64>,
    pub realtime: Option<u64>,
    pub xor_hash: Option<u64>,
}

/// Why a cursor string was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid journal cursor: {0}")]
pub struct CursorParseError(String);

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sep = "";
        let mut part = |f: &mut fmt::Formatter<'_>, key: &str, v: String| {
            let r = write!(f, "{sep}{key}={v}");
            sep = ";";
            r
        };
        if let Some(v) = &self.seqnum_id {
            part(f, "s", id_to_hex(v))?;
        }
        if let Some(v) = self.seqnum {
            part(f, "i", format!("{v:x}"))?;
        }
        if let Some(v) = &self.boot_id {
            part(f, "b", id_to_hex(v))?;
        }
        if let Some(v) = self.monotonic {
            part(f, "m", format!("{v:x}"))?;
        }
        if let Some(v) = self.realtime {
            part(f, "t", format!("{v:x}"))?;
        }
        if let Some(v) = self.xor_hash {
            part(f, "x", format!("{v:x}"))?;
        }
        Ok(())
    }
}

impl FromStr for Cursor {
    type Err = CursorParseError;

    fn from_str(s: &str) -> Result<Cursor, CursorParseError> {
        let bad = |what: &str| CursorParseError(format!("{what} in {s:?}"));
        let mut c = Cursor::default();
        let mut any = false;
        for part in s.trim().split(';').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad("part without '='"))?;
            let hex = || u64::from_str_radix(value, 16).map_err(|_| bad("bad hex number"));
            let id = || id_from_hex(value).ok_or_else(|| bad("bad 128-bit id"));
            match key {
                "s" => c.seqnum_id = Some(id()?),
                "i" => c.seqnum = Some(hex()?),
                "b" => c.boot_id = Some(id()?),
                "m" => c.monotonic = Some(hex()?),
                "t" => c.realtime = Some(hex()?),
                "x" => c.xor_hash = Some(hex()?),
                // Like sd_journal_seek_cursor: unknown parts are ignored, which leaves
                // room for systemd to add some.
                _ => continue,
            }
            any = true;
        }
        if !any {
            return Err(bad("no known part"));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_systemd_text() {
        let text = "s=3ddb63e96cae43f3aeb25741c069edeb;i=1;b=f8674995be1b48e4a15ae1cb62e16d7f;\
                    m=1f63cba9;t=6611eccb5263b;x=e3d02268f6563eb6";
        let c: Cursor = text.parse().unwrap();
        assert_eq!(c.seqnum, Some(1));
        assert_eq!(c.monotonic, Some(0x1f63cba9));
        assert_eq!(c.to_string(), text);
        let partial: Cursor = "i=10;s=3ddb63e96cae43f3aeb25741c069edeb;z=1"
            .parse()
            .unwrap();
        assert_eq!(partial.seqnum, Some(16));
        assert_eq!(partial.boot_id, None);
        assert_eq!(
            partial.to_string(),
            "s=3ddb63e96cae43f3aeb25741c069edeb;i=10"
        );
        for bad in ["", "garbage", "i=xyz", "s=12", "z=1", "i"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn export_format_matches_journalctl_rules() {
        let mut e = Entry::from_fields([
            ("MESSAGE", &b"tab\tok"[..]),
            ("_BOOT_ID", b"skipped"),
            ("BIN", b"a\nb"),
            ("NONCHAR", "\u{fffe}".as_bytes()),
        ]);
        e.seqnum = 1;
        let mut out = Vec::new();
        e.write_export(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("\nMESSAGE=tab\tok\n"));
        assert!(!text.contains("skipped"));
        assert!(out
            .windows(16)
            .any(|w| w == b"BIN\n\x03\0\0\0\0\0\0\0a\nb\n"));
        assert!(text.contains("NONCHAR\n"));
        assert!(out.ends_with(b"\n\n"));
    }

    #[test]
    fn fields_keep_order_repeats_and_binary() {
        let e = Entry::from_fields([
            ("MESSAGE", &b"hi"[..]),
            ("FOO", b"a"),
            ("FOO", b"b\n\0\xff"),
            ("", b"dropped"),
        ]);
        let all: Vec<_> = e.fields().collect();
        assert_eq!(
            all,
            vec![
                ("MESSAGE", &b"hi"[..]),
                ("FOO", b"a"),
                ("FOO", b"b\n\0\xff")
            ]
        );
        assert_eq!(e.field("FOO"), Some(&b"a"[..]));
        assert_eq!(e.field_values("FOO").count(), 2);
        assert_eq!(e.field("NOPE"), None);
    }
}
