//! The RFC 5424 header: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`.
//!
//! The grammar is strict but senders are not, so this parser is strict only where it must
//! be to tell RFC 5424 from other text (`<PRI>1 `, a timestamp-shaped or `-` first field,
//! the five header fields) and forgiving elsewhere: repeated spaces between fields, an
//! impossible timestamp (kept as `None`), a missing zone, missing or malformed structured
//! data (the rest is kept as message) and field lengths beyond the RFC limits are accepted.
//! A frame that fails the strict part is handed back to [`crate::parse`] to try RFC 3164.

use crate::message::{field, strip_bom, Format, Message, ParseOptions};
use crate::sd;
use crate::timestamp::{parse_rfc3339, Cursor};

/// Parses `frame[start..]`, the bytes after the PRI. `None` if it is not RFC 5424.
pub(crate) fn parse<'a>(
    frame: &'a [u8],
    start: usize,
    priority: Option<u8>,
    opts: &ParseOptions,
) -> Option<Message<'a>> {
    let body = frame.get(start..)?;
    if !body.starts_with(b"1 ") {
        return None;
    }
    let mut pos = start + 2;

    let ts_token = next_token(frame, &mut pos)?;
    let timestamp_unix_ms = if ts_token == b"-" {
        None
    } else {
        let mut c = Cursor::new(ts_token, 0);
        let ts = parse_rfc3339(&mut c, i64::from(opts.local_utc_offset_secs))?;
        if c.pos != ts_token.len() {
            return None;
        }
        ts
    };
    let hostname = field(next_token(frame, &mut pos)?);
    let app_name = field(next_token(frame, &mut pos)?);
    let procid = field(next_token(frame, &mut pos)?);
    let msgid = field(next_token(frame, &mut pos)?);

    let mut structured_data = None;
    match frame.get(pos) {
        Some(b'-') if matches!(frame.get(pos + 1), None | Some(b' ')) => pos += 1,
        Some(b'[') => {
            // Malformed SD is left in the message rather than dropped.
            if let Some(end) = sd::scan(frame, pos) {
                structured_data = frame
                    .get(pos..end)
                    .and_then(|s| std::str::from_utf8(s).ok());
                pos = end;
            }
        }
        _ => {}
    }
    if frame.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let message = strip_bom(frame.get(pos..).unwrap_or_default());

    Some(Message {
        format: Format::Rfc5424,
        priority,
        timestamp_unix_ms,
        hostname,
        app_name,
        procid,
        msgid,
        structured_data,
        message,
    })
}

/// The next space-delimited header token, consuming it and the spaces after it. `None` at
/// the end of the frame: a header cut short is not RFC 5424.
fn next_token<'a>(frame: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let rest = frame.get(*pos..)?;
    let len = memchr::memchr(b' ', rest)?;
    let token = rest.get(..len)?;
    let spaces = rest.get(len..)?.iter().take_while(|&&b| b == b' ').count();
    *pos += len + spaces;
    Some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTS: ParseOptions = ParseOptions {
        now_unix_ms: 1_795_623_639_000,
        local_utc_offset_secs: 0,
    };

    fn p(s: &[u8]) -> Option<Message<'_>> {
        parse(s, 0, Some(13), &OPTS)
    }

    #[test]
    fn full_header() {
        let m = p(b"1 2026-11-25T16:20:39.123Z host app 42 ID7 [a x=\"]\"] hi there");
        let m = m.as_ref();
        assert_eq!(
            m.map(|m| m.timestamp_unix_ms),
            Some(Some(1_795_623_639_123))
        );
        assert_eq!(m.and_then(|m| m.hostname), Some("host"));
        assert_eq!(m.and_then(|m| m.app_name), Some("app"));
        assert_eq!(m.and_then(|m| m.procid), Some("42"));
        assert_eq!(m.and_then(|m| m.msgid), Some("ID7"));
        assert_eq!(m.and_then(|m| m.structured_data), Some("[a x=\"]\"]"));
        assert_eq!(m.map(|m| m.message), Some(&b"hi there"[..]));
    }

    #[test]
    fn nil_everything_and_no_msg() {
        let m = p(b"1 - - - - - -");
        assert!(m.is_some_and(|m| m.timestamp_unix_ms.is_none()
            && m.hostname.is_none()
            && m.structured_data.is_none()
            && m.message.is_empty()));
    }

    #[test]
    fn not_5424() {
        assert!(p(b"1 hello world").is_none());
        assert!(p(b"1 - host app").is_none());
        assert!(p(b"2 - - - - - -").is_none());
        assert!(p(b"1 2026-11-25T16:20:39Zjunk h a p m -").is_none());
    }

    #[test]
    fn impossible_timestamp_is_absent() {
        let m = p(b"1 2026-02-30T16:20:39Z h a p m - x");
        assert!(m.is_some_and(|m| m.timestamp_unix_ms.is_none() && m.hostname == Some("h")));
    }

    #[test]
    fn unterminated_sd_stays_in_message() {
        let m = p(b"1 - h a p m [oops x=\"1 msg");
        assert!(m.is_some_and(|m| m.structured_data.is_none() && m.message == b"[oops x=\"1 msg"));
    }
}
