//! The BSD syslog dialect (RFC 3164) as real senders write it.
//!
//! RFC 3164 documents practice rather than prescribing it, and practice varies: glibc's
//! `syslog()` omits the hostname, `journalctl -o short` omits the PRI, rsyslog may put an
//! RFC 3339 timestamp where the BSD one belongs, Cisco prefixes a sequence number and marks
//! unsynchronised clocks with `*`. The shape accepted here is
//!
//! ```text
//! [<PRI>][SEQ: ][*|.]TIMESTAMP[:] [HOSTNAME] [TAG[\[PID\]][:]] MSG
//! ```
//!
//! where TIMESTAMP is `Mmm dd hh:mm:ss[.frac]`, `Mmm dd yyyy hh:mm:ss[.frac]` or RFC 3339
//! with an optional zone. Without a PRI the timestamp is required, since otherwise any line
//! of text would "parse"; with a PRI a bare `tag:` or `tag[pid]` header (no timestamp) is
//! accepted too, as sent to `/dev/log` by some libraries.
//!
//! Hostname and tag are told apart by shape: the word after the timestamp is the tag when it
//! reads `word:` (one colon, so IPv6 literals like `fe80::1` stay hostnames) or
//! `word[pid]`; otherwise it is the hostname and the tag, if any, follows it. A message that
//! starts with `[` (the kernel's `[ 12.345678]` uptime stamps) is never taken for a tag or
//! structured data.

use crate::message::{field, strip_bom, Format, Message, ParseOptions};
use crate::timestamp::{infer_year, month_from_abbrev, parse_rfc3339, Cursor};
use logferry_time::civil_to_unix_ms;

/// Parses `frame[start..]`, the bytes after the PRI (if any). `None` if it is not RFC 3164.
pub(crate) fn parse<'a>(
    frame: &'a [u8],
    start: usize,
    priority: Option<u8>,
    opts: &ParseOptions,
) -> Option<Message<'a>> {
    let mut c = Cursor::new(frame, start);
    let mut msg = Message {
        format: Format::Rfc3164,
        priority,
        ..Message::raw(b"", priority)
    };

    let Some(timestamp) = timestamp(&mut c, opts) else {
        // No timestamp: with a PRI, a recognisable tag is still enough of a header.
        priority?;
        let tag = tag_at(frame, c.pos, true)?;
        return Some(tag.apply(frame, msg));
    };
    msg.timestamp_unix_ms = timestamp;
    // Cisco ends the timestamp with a colon.
    c.eat(b':');
    if c.peek().is_some_and(|b| b != b' ') {
        return None;
    }
    let mut pos = skip_spaces(frame, c.pos);

    if let Some(tag) = tag_at(frame, pos, true) {
        return Some(tag.apply(frame, msg));
    }
    let host = token(frame, pos);
    let host_like = !host.is_empty() && (!host.starts_with(b"[") || host.contains(&b':'));
    if host_like {
        msg.hostname = field(host);
        pos = skip_spaces(frame, pos + host.len());
        if let Some(tag) = tag_at(frame, pos, false) {
            return Some(tag.apply(frame, msg));
        }
    }
    msg.message = strip_bom(frame.get(pos..).unwrap_or_default());
    Some(msg)
}

/// The timestamp at the cursor, after an optional Cisco sequence number and `*`/`.` marker.
/// `None` if there is none (cursor unchanged); `Some(None)` if it is impossible.
fn timestamp(c: &mut Cursor<'_>, opts: &ParseOptions) -> Option<Option<i64>> {
    let start = c.pos;
    if let Some(ts) = bare_timestamp(c, opts) {
        return Some(ts);
    }
    // Cisco: `<189>52: *Mar  1 18:46:11.123: %SYS-5-CONFIG_I: ...`
    let digits = c
        .bytes
        .get(start..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits > 0 && c.bytes.get(start + digits..start + digits + 2) == Some(b": ") {
        c.pos = start + digits + 2;
        if let Some(ts) = bare_timestamp(c, opts) {
            return Some(ts);
        }
    }
    c.pos = start;
    None
}

fn bare_timestamp(c: &mut Cursor<'_>, opts: &ParseOptions) -> Option<Option<i64>> {
    let start = c.pos;
    if matches!(c.peek(), Some(b'*' | b'.')) {
        c.pos += 1;
    }
    let offset = i64::from(opts.local_utc_offset_secs);
    if let Some(ts) = parse_rfc3339(c, offset) {
        return Some(ts);
    }
    let ts = bsd_timestamp(c, opts.now_unix_ms, offset);
    if ts.is_none() {
        c.pos = start;
    }
    ts
}

/// `Mmm dd hh:mm:ss[.frac]` or `Mmm dd yyyy hh:mm:ss[.frac]`; the day may be padded with a
/// space (`Nov  5`), a zero or nothing.
fn bsd_timestamp(c: &mut Cursor<'_>, now_unix_ms: i64, offset: i64) -> Option<Option<i64>> {
    let month = month_from_abbrev(c.bytes.get(c.pos..c.pos + 3)?)?;
    c.pos += 3;
    c.require(b' ')?;
    c.eat(b' ');
    let mut day = c.digits(1)?;
    if let Some(d) = c.digits(1) {
        day = day * 10 + d;
    }
    c.require(b' ')?;
    let mut year = None;
    let mut probe = *c;
    if let Some(y) = probe.digits(4) {
        if probe.eat(b' ') {
            year = Some(i64::from(y));
            *c = probe;
        }
    }
    let time = c.time_of_day()?;
    Some(match year {
        Some(y) => civil_to_unix_ms(y, month, day, time, offset),
        None => infer_year(month, day, time, now_unix_ms, offset),
    })
}

/// A recognised TAG: where its name and pid are and where the message starts.
struct Tag {
    name: (usize, usize),
    pid: Option<(usize, usize)>,
    msg_start: usize,
}

impl Tag {
    fn apply<'a>(&self, frame: &'a [u8], mut msg: Message<'a>) -> Message<'a> {
        msg.app_name = frame.get(self.name.0..self.name.1).and_then(field);
        msg.procid = self.pid.and_then(|(s, e)| frame.get(s..e)).and_then(field);
        msg.message = strip_bom(frame.get(self.msg_start..).unwrap_or_default());
        msg
    }
}

/// Recognises `tag:`, `tag[pid]:` and `tag[pid]` at `pos`. In host position (`first`), a
/// colon-terminated word must hold no other colon, so that IPv6 hostnames are not tags.
fn tag_at(frame: &[u8], pos: usize, first: bool) -> Option<Tag> {
    let word = token(frame, pos);
    let name_len = word.iter().position(|&b| b == b'[' || b == b':')?;
    if name_len == 0 {
        return None;
    }
    let after_name = pos + name_len;
    let (pid, end) = if word.get(name_len) == Some(&b'[') {
        let close = name_len + word.get(name_len..)?.iter().position(|&b| b == b']')?;
        let pid = (after_name + 1, pos + close);
        let mut end = close + 1;
        match word.get(end) {
            Some(b':') => end += 1,
            None => {}
            Some(_) => return None,
        }
        (Some(pid), end)
    } else {
        // A colon-terminated word; in host position it must be the only colon.
        if name_len + 1 != word.len() {
            return None;
        }
        if first && word.iter().filter(|&&b| b == b':').count() != 1 {
            return None;
        }
        (None, name_len + 1)
    };
    let mut msg_start = pos + end;
    if frame.get(msg_start) == Some(&b' ') {
        msg_start += 1;
    }
    Some(Tag {
        name: (pos, after_name),
        pid,
        msg_start,
    })
}

/// The bytes from `pos` up to the next space or the end of the frame.
fn token(frame: &[u8], pos: usize) -> &[u8] {
    let rest = frame.get(pos..).unwrap_or_default();
    let len = memchr::memchr(b' ', rest).unwrap_or(rest.len());
    rest.get(..len).unwrap_or_default()
}

fn skip_spaces(frame: &[u8], pos: usize) -> usize {
    pos + frame
        .get(pos..)
        .map_or(0, |r| r.iter().take_while(|&&b| b == b' ').count())
}
