//! The parsed form of a syslog frame and the entry point that picks a dialect.
//!
//! [`parse`] never fails: whatever arrives on a syslog port is somebody's log line, and
//! dropping it because its header is odd would lose exactly the lines an operator is
//! looking for. A frame is tried as RFC 5424 first (cheap to rule out: it needs `<PRI>1 `),
//! then as the lenient RFC 3164 dialect real senders use, and otherwise kept whole as
//! [`Format::Raw`]. All fields borrow from the frame, so parsing allocates nothing.

use crate::sd::SdElements;
use crate::{rfc3164, rfc5424};

/// Context that the bytes of a frame do not carry but parsing needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseOptions {
    /// The current time, to place year-less RFC 3164 timestamps in the right year.
    pub now_unix_ms: i64,
    /// Offset of the senders' local time east of UTC, for timestamps without a zone.
    pub local_utc_offset_secs: i32,
}

impl ParseOptions {
    /// Options for "now" according to the system clock, with zone-less timestamps read as
    /// UTC. Callers that know the senders' zone set `local_utc_offset_secs` themselves.
    pub fn utc_now() -> Self {
        ParseOptions {
            now_unix_ms: logferry_time::now_ms(),
            local_utc_offset_secs: 0,
        }
    }
}

/// Which header dialect a frame was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD [MSG]`.
    Rfc5424,
    /// The BSD dialect: `[<PRI>]TIMESTAMP [HOSTNAME] TAG: MSG` and its many variants.
    Rfc3164,
    /// No recognisable header: the message is the whole frame (after a `<PRI>`, if any).
    Raw,
}

/// One parsed syslog message, borrowing from its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The header dialect the frame was recognised as.
    pub format: Format,
    /// `facility * 8 + severity`, 0..=191.
    pub priority: Option<u8>,
    /// The message time in milliseconds since the Unix epoch (UTC); `None` when the frame
    /// has none or it names an impossible date or time.
    pub timestamp_unix_ms: Option<i64>,
    /// The sending host (name or IP literal).
    pub hostname: Option<&'a str>,
    /// RFC 5424 APP-NAME, or the RFC 3164 TAG (`kubelet` in `kubelet[2174]:`).
    pub app_name: Option<&'a str>,
    /// RFC 5424 PROCID, or the pid in an RFC 3164 `tag[pid]`.
    pub procid: Option<&'a str>,
    /// RFC 5424 MSGID.
    pub msgid: Option<&'a str>,
    /// Raw RFC 5424 structured data, e.g. `[exampleSDID@32473 iut="3"]`; `None` for `-`.
    pub structured_data: Option<&'a str>,
    /// The free-form message with any UTF-8 BOM removed. Not necessarily UTF-8: the caller
    /// decides how to convert it.
    pub message: &'a [u8],
}

impl<'a> Message<'a> {
    /// A frame without a recognisable header.
    pub(crate) fn raw(message: &'a [u8], priority: Option<u8>) -> Self {
        Message {
            format: Format::Raw,
            priority,
            timestamp_unix_ms: None,
            hostname: None,
            app_name: None,
            procid: None,
            msgid: None,
            structured_data: None,
            message,
        }
    }

    /// The facility (0..=23) encoded in the priority.
    pub fn facility(&self) -> Option<u8> {
        self.priority.map(|p| p >> 3)
    }

    /// The severity (0 = emergency ..= 7 = debug) encoded in the priority.
    pub fn severity(&self) -> Option<u8> {
        self.priority.map(|p| p & 7)
    }

    /// The elements of the structured data, in order; empty if there is none.
    pub fn sd_elements(&self) -> SdElements<'a> {
        SdElements::new(self.structured_data.unwrap_or(""))
    }
}

/// Parses one frame. Never fails and never panics: input without a recognisable header
/// comes back as [`Format::Raw`]. Every borrowed field is a sub-slice of `frame`.
pub fn parse<'a>(frame: &'a [u8], opts: &ParseOptions) -> Message<'a> {
    let (priority, body_start) = match parse_pri(frame) {
        Some((pri, len)) => (Some(pri), len),
        None => (None, 0),
    };
    if priority.is_some() {
        if let Some(msg) = rfc5424::parse(frame, body_start, priority, opts) {
            return msg;
        }
    }
    if let Some(msg) = rfc3164::parse(frame, body_start, priority, opts) {
        return msg;
    }
    Message::raw(frame.get(body_start..).unwrap_or_default(), priority)
}

/// `<PRI>` with 1 to 3 digits and a value of at most 191; returns it and its length.
/// Anything else (`<999>`, `<abc>`, `<>`) is not a priority and stays part of the text.
fn parse_pri(frame: &[u8]) -> Option<(u8, usize)> {
    if frame.first() != Some(&b'<') {
        return None;
    }
    let mut value: u32 = 0;
    for (i, &b) in frame.iter().enumerate().skip(1).take(4) {
        match b {
            b'0'..=b'9' if i <= 3 => value = value * 10 + u32::from(b - b'0'),
            b'>' if i > 1 => {
                return u8::try_from(value)
                    .ok()
                    .filter(|&p| p <= 191)
                    .map(|p| (p, i + 1))
            }
            _ => return None,
        }
    }
    None
}

/// Strips a leading UTF-8 byte order mark, which RFC 5424 senders put before UTF-8 text.
pub(crate) fn strip_bom(msg: &[u8]) -> &[u8] {
    msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg)
}

/// A header field: `None` for the NILVALUE `-`, for an empty token and for invalid UTF-8.
pub(crate) fn field(bytes: &[u8]) -> Option<&str> {
    if bytes.is_empty() || bytes == b"-" {
        return None;
    }
    std::str::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pri_accepts_only_valid_priorities() {
        assert_eq!(parse_pri(b"<0>"), Some((0, 3)));
        assert_eq!(parse_pri(b"<13>x"), Some((13, 4)));
        assert_eq!(parse_pri(b"<191>"), Some((191, 5)));
        assert_eq!(parse_pri(b"<192>"), None);
        assert_eq!(parse_pri(b"<999>"), None);
        assert_eq!(parse_pri(b"<1000>"), None);
        assert_eq!(parse_pri(b"<abc>"), None);
        assert_eq!(parse_pri(b"<>"), None);
        assert_eq!(parse_pri(b"<13"), None);
        assert_eq!(parse_pri(b"13>"), None);
    }

    #[test]
    fn facility_and_severity() {
        let m = Message::raw(b"", Some(165));
        assert_eq!((m.facility(), m.severity()), (Some(20), Some(5)));
        let m = Message::raw(b"", None);
        assert_eq!((m.facility(), m.severity()), (None, None));
    }

    #[test]
    fn fields_map_nil_and_bad_utf8_to_none() {
        assert_eq!(field(b"-"), None);
        assert_eq!(field(b""), None);
        assert_eq!(field(b"\xff"), None);
        assert_eq!(field(b"host"), Some("host"));
    }
}
