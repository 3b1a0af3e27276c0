//! The event time read from the start of a line with a strftime format, so that CloudWatch
//! shows when something happened, not when the shipper read it (after an outage or a backfill
//! these are hours apart).
//!
//! # Rules
//!
//! - The format uses chrono's strftime syntax
//!   (<https://docs.rs/chrono/latest/chrono/format/strftime/index.html>). It is checked when the
//!   parser is built: an unknown specifier is an error that names it, and so is a format whose
//!   own output could not be read back (no day and month: `%H:%M:%S` alone, `%I` without `%p`).
//! - The timestamp is looked for at the start of the line, then after leading whitespace, then
//!   after a `[` (as in `[02/Jan/2024:03:04:05 +0000]`). Only the first 256 bytes are looked at,
//!   and only their UTF-8 prefix (timestamps are ASCII). What follows the timestamp does not
//!   matter (chrono's `parse_and_remainder`).
//! - A zone offset in the line (`%z`, `%:z`, `%#z`, and the offsets of `%+`) wins. Otherwise the
//!   configured [`Zone`] applies. `%Z` names are skipped by chrono, not interpreted: the
//!   configured zone applies then too. A local time that does not exist (a DST gap) takes the
//!   offset in force just before; an ambiguous one (DST end) the earlier instant.
//! - Without a year (syslog's `%b %d %H:%M:%S`) the year is the latest of next year, this year,
//!   and last year (UTC years of `now_ms`) that does not put the time more than a day in the
//!   future. So `Dec 31 23:59:59` read on January 1st is last year's, and next year is there
//!   for a local zone already past midnight while UTC is not. February 29th takes the last
//!   leap year among them; a weekday (`%a`) in the format must agree with the year chosen.
//! - Only a date (`%Y-%m-%d`): midnight. Fractions (`%.3f`, `%.f`) are truncated to
//!   milliseconds. `%s` (Unix seconds) is absolute.

use std::fmt::Write as _;
use std::str::FromStr;

use chrono::format::{parse_and_remainder, Item, Parsed, StrftimeItems};
use chrono::{
    DateTime, Datelike, Local, MappedLocalTime, NaiveDateTime, NaiveTime, Offset, TimeZone,
};

/// The zone of timestamps that do not carry an offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Zone {
    Utc,
    /// The host's zone (`TZ`, `/etc/localtime`), with its DST rules.
    Local,
    /// Seconds east of UTC.
    Fixed(i32),
}

impl FromStr for Zone {
    type Err = TimestampError;

    /// `UTC`/`utc`/`Z`/`GMT`, `local`, or an offset `+02:00`, `-0530`, `+02`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TimestampError::Zone(s.to_owned());
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc")
            || t.eq_ignore_ascii_case("z")
            || t.eq_ignore_ascii_case("gmt")
        {
            return Ok(Zone::Utc);
        }
        if t.eq_ignore_ascii_case("local") {
            return Ok(Zone::Local);
        }
        let (sign, rest) = match t.as_bytes().first() {
            Some(b'+') => (1, &t[1..]),
            Some(b'-') => (-1, &t[1..]),
            _ => return Err(bad()),
        };
        if !rest.is_ascii() {
            return Err(bad());
        }
        let (hh, mm) = match (rest.len(), rest.as_bytes().get(2)) {
            (2, _) => (rest, "00"),
            (4, _) => (&rest[..2], &rest[2..]),
            (5, Some(b':')) => (&rest[..2], &rest[3..]),
            _ => return Err(bad()),
        };
        let all_digits = |x: &str| x.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(hh) || !all_digits(mm) {
            return Err(bad());
        }
        let (h, m): (i32, i32) = (
            hh.parse().map_err(|_| bad())?,
            mm.parse().map_err(|_| bad())?,
        );
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(Zone::Fixed(sign * (h * 3600 + m * 60)))
    }
}

/// A timestamp format or zone that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TimestampError {
    #[error("timestamp format {format:?}: invalid specifier {specifier:?} (chrono's strftime syntax: %Y, %m, %d, %H, %M, %S, %.3f, %z, ...)")]
    BadSpecifier { format: String, specifier: String },
    #[error("timestamp format {0:?} is not valid strftime syntax")]
    BadFormat(String),
    #[error("timestamp format {0:?} does not give a full date and time (it needs a day and a month, or %s; a year is optional): lines written in it could not be read back")]
    Incomplete(String),
    #[error("invalid zone {0:?}: expected UTC, local, or an offset like +02:00 or -0530")]
    Zone(String),
}

/// How much of a line is looked at.
const SCAN_BYTES: usize = 256;
const DAY_MS: i64 = 86_400_000;

/// Reads timestamps in one format; build once per source.
#[derive(Debug, Clone)]
pub struct TimestampParser {
    items: Vec<Item<'static>>,
    zone: Zone,
}

impl TimestampParser {
    /// Checks the format now, so that a typo is a configuration error, not every line
    /// silently stamped with the read time.
    pub fn new(format: &str, zone: Zone) -> Result<Self, TimestampError> {
        let items = match StrftimeItems::new(format).parse_to_owned() {
            Ok(items) => items,
            Err(_) => {
                return Err(match bad_specifier(format) {
                    Some(specifier) => TimestampError::BadSpecifier {
                        format: format.to_owned(),
                        specifier,
                    },
                    None => TimestampError::BadFormat(format.to_owned()),
                })
            }
        };
        let parser = Self { items, zone };
        // Round trip: a format whose own output does not parse is missing a field.
        let probe_ms = 1_704_164_645_123; // 2024-01-02T03:04:05.123Z
        let probe = DateTime::from_timestamp_millis(probe_ms)
            .ok_or_else(|| TimestampError::BadFormat(format.to_owned()))?;
        let mut rendered = String::new();
        let readable = write!(rendered, "{}", probe.format_with_items(parser.items.iter())).is_ok()
            && parser
                .parse(rendered.as_bytes(), probe_ms + 3_600_000)
                .is_some();
        if !readable {
            return Err(TimestampError::Incomplete(format.to_owned()));
        }
        Ok(parser)
    }

    /// Milliseconds since the Unix epoch of the timestamp the line starts with, or `None` if
    /// it does not start with one in this format. `now_ms` places year-less timestamps.
    pub fn parse(&self, line: &[u8], now_ms: i64) -> Option<i64> {
        let head = &line[..line.len().min(SCAN_BYTES)];
        let text = match std::str::from_utf8(head) {
            Ok(text) => text,
            // The cut at SCAN_BYTES or the line itself may end in the middle of a character.
            Err(e) => std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default(),
        };
        let after_space = text.len() - text.trim_start().len();
        let after_bracket = text[after_space..]
            .starts_with('[')
            .then_some(after_space + 1);
        let mut tried = None;
        for start in [Some(0), Some(after_space), after_bracket]
            .into_iter()
            .flatten()
        {
            if tried.is_some_and(|t| t >= start) {
                continue;
            }
            tried = Some(start);
            if let Some(ms) = self.parse_at(&text[start..], now_ms) {
                return Some(ms);
            }
        }
        None
    }

    fn parse_at(&self, text: &str, now_ms: i64) -> Option<i64> {
        let mut parsed = Parsed::new();
        parse_and_remainder(&mut parsed, text, self.items.iter()).ok()?;
        if parsed.timestamp().is_some() {
            let utc = parsed
                .to_naive_datetime_with_offset(parsed.offset().unwrap_or(0))
                .ok()?;
            return Some(
                utc.and_utc().timestamp_millis() - i64::from(parsed.offset().unwrap_or(0)) * 1000,
            );
        }
        let has_year = parsed.year().is_some()
            || parsed.year_div_100().is_some()
            || parsed.year_mod_100().is_some()
            || parsed.isoyear().is_some();
        if has_year {
            return self.resolve(&parsed);
        }
        let this_year = DateTime::from_timestamp_millis(now_ms)?.year();
        for year in [this_year + 1, this_year, this_year - 1] {
            let mut with_year = parsed.clone();
            if with_year.set_year(i64::from(year)).is_err() {
                continue;
            }
            match self.resolve(&with_year) {
                Some(ms) if ms <= now_ms.saturating_add(DAY_MS) => return Some(ms),
                _ => {}
            }
        }
        None
    }

    /// The instant of a parse result that has a year.
    fn resolve(&self, parsed: &Parsed) -> Option<i64> {
        let date = parsed.to_naive_date().ok()?;
        let date_only = parsed.hour_div_12().is_none()
            && parsed.hour_mod_12().is_none()
            && parsed.minute().is_none();
        let time = if date_only {
            NaiveTime::MIN
        } else {
            parsed.to_naive_time().ok()?
        };
        let naive = date.and_time(time);
        let offset_secs = match (parsed.offset(), self.zone) {
            (Some(offset), _) => offset,
            (None, Zone::Utc) => 0,
            (None, Zone::Fixed(offset)) => offset,
            (None, Zone::Local) => local_offset(&naive),
        };
        Some(naive.and_utc().timestamp_millis() - i64::from(offset_secs) * 1000)
    }
}

/// The host zone's offset for a local wall-clock time.
fn local_offset(naive: &NaiveDateTime) -> i32 {
    match Local.from_local_datetime(naive) {
        MappedLocalTime::Single(dt) => dt.offset().fix().local_minus_utc(),
        // DST end: the wall clock shows this time twice. The earlier instant is the one with
        // the larger offset (chrono does not order the pair by instant).
        MappedLocalTime::Ambiguous(a, b) => {
            let (a, b) = (
                a.offset().fix().local_minus_utc(),
                b.offset().fix().local_minus_utc(),
            );
            a.max(b)
        }
        // A DST gap: the wall clock skipped this time. The offset in force a few hours before
        // is the one the writer's clock was still using when it produced the line.
        MappedLocalTime::None => {
            let before = naive
                .checked_sub_signed(chrono::Duration::hours(3))
                .unwrap_or(*naive);
            Local
                .offset_from_utc_datetime(&before)
                .fix()
                .local_minus_utc()
        }
    }
}

/// The first specifier of `format` that chrono rejects, for the error message: from a `%`
/// through the first letter (or the end), e.g. `%Q`, `%.4f`, a trailing `%`; `%%` and `%+` are
/// whole specifiers.
fn bad_specifier(format: &str) -> Option<String> {
    let mut rest = format;
    while let Some(pos) = rest.find('%') {
        let spec_start = &rest[pos..];
        let len = spec_start
            .char_indices()
            .skip(1)
            .find(|&(i, c)| c.is_alphabetic() || (i == 1 && matches!(c, '%' | '+')))
            .map_or(spec_start.len(), |(i, c)| i + c.len_utf8());
        let spec = &spec_start[..len];
        if StrftimeItems::new(spec).any(|item| matches!(item, Item::Error)) {
            return Some(spec.to_owned());
        }
        rest = &spec_start[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Utc};

    use super::*;

    /// Milliseconds of a UTC date-time.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> i64 {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_milli_opt(h, mi, s, ms))
            .expect("valid test date")
            .and_utc()
            .timestamp_millis()
    }

    fn parser(format: &str, zone: Zone) -> TimestampParser {
        TimestampParser::new(format, zone).expect("valid test format")
    }

    const NOW: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z

    #[test]
    fn iso_like_with_milliseconds() {
        let p = parser("%Y-%m-%d %H:%M:%S%.3f", Zone::Utc);
        let line = b"2024-01-02 03:04:05.123 ERROR something broke";
        assert_eq!(p.parse(line, NOW), Some(utc(2024, 1, 2, 3, 4, 5, 123)));
        // Leading whitespace and a leading '[' are skipped.
        assert_eq!(
            p.parse(b"  2024-01-02 03:04:05.123 x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 123))
        );
        assert_eq!(
            p.parse(b"[2024-01-02 03:04:05.123] x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 123))
        );
        assert_eq!(
            p.parse(b" [2024-01-02 03:04:05.123] x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 123))
        );
        // The rest of the line does not matter, not even bytes that are not UTF-8.
        assert_eq!(
            p.parse(b"2024-01-02 03:04:05.123\xff\xfe", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 123))
        );
    }

    #[test]
    fn nginx_apache_with_the_lines_own_offset() {
        let p = parser("%d/%b/%Y:%H:%M:%S %z", Zone::Utc);
        let line = br#"[02/Jan/2024:05:04:05 +0200] "GET / HTTP/1.1" 200 612"#;
        assert_eq!(p.parse(line, NOW), Some(utc(2024, 1, 2, 3, 4, 5, 0)));
        // The configured zone does not override the line's offset.
        let p = parser("%d/%b/%Y:%H:%M:%S %z", Zone::Fixed(9 * 3600));
        assert_eq!(
            p.parse(b"02/Jan/2024:03:04:05 -0000 x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
        // An access-log line does not start with its timestamp: a host comes first.
        assert_eq!(
            p.parse(b"10.0.0.1 - - [02/Jan/2024:03:04:05 +0000] x", NOW),
            None
        );
    }

    #[test]
    fn rfc3339_with_colon_offset() {
        let p = parser("%Y-%m-%dT%H:%M:%S%:z", Zone::Utc);
        assert_eq!(
            p.parse(b"2024-01-02T08:34:05+05:30 started", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
        assert_eq!(
            p.parse(b"2024-01-01T23:04:05-04:00 x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
        // No offset in the line: the format requires one.
        assert_eq!(p.parse(b"2024-01-02T03:04:05 x", NOW), None);
    }

    #[test]
    fn syslog_without_year_across_new_year() {
        let p = parser("%b %d %H:%M:%S", Zone::Utc);
        let new_year = utc(2025, 1, 1, 0, 0, 30, 0);
        // Read 30 s into 2025: December's lines are 2024's, January's are 2025's.
        assert_eq!(
            p.parse(b"Dec 31 23:59:59 host app: x", new_year),
            Some(utc(2024, 12, 31, 23, 59, 59, 0))
        );
        assert_eq!(
            p.parse(b"Jan  1 00:00:10 host app: x", new_year),
            Some(utc(2025, 1, 1, 0, 0, 10, 0))
        );
        // Up to a day ahead (clock skew) stays in this year.
        assert_eq!(
            p.parse(b"Jan  1 20:00:00 x", new_year),
            Some(utc(2025, 1, 1, 20, 0, 0, 0))
        );
        // Read late on Dec 31 UTC, a host already in the new year (UTC+3) wrote January 1st.
        let p3 = parser("%b %d %H:%M:%S", Zone::Fixed(3 * 3600));
        let eve = utc(2024, 12, 31, 21, 30, 0, 0);
        assert_eq!(
            p3.parse(b"Jan  1 00:20:00 x", eve),
            Some(utc(2024, 12, 31, 21, 20, 0, 0))
        );
        // Mid-year: this year, and a date later in the year is last year's.
        assert_eq!(
            p.parse(b"Mar  5 01:02:03 x", NOW),
            Some(utc(2024, 3, 5, 1, 2, 3, 0))
        );
        assert_eq!(
            p.parse(b"Sep  5 01:02:03 x", NOW),
            Some(utc(2023, 9, 5, 1, 2, 3, 0))
        );
        // February 29th read in a year that has none is the last leap year's.
        assert_eq!(
            p.parse(b"Feb 29 12:00:00 x", utc(2025, 3, 1, 0, 0, 0, 0)),
            Some(utc(2024, 2, 29, 12, 0, 0, 0))
        );
    }

    #[test]
    fn fixed_zone_and_utc() {
        let line = b"2024-01-02 03:04:05 x";
        let f = "%Y-%m-%d %H:%M:%S";
        assert_eq!(
            parser(f, Zone::Utc).parse(line, NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
        assert_eq!(
            parser(f, Zone::Fixed(2 * 3600)).parse(line, NOW),
            Some(utc(2024, 1, 2, 1, 4, 5, 0))
        );
        assert_eq!(
            parser(f, Zone::Fixed(-(5 * 3600 + 1800))).parse(line, NOW),
            Some(utc(2024, 1, 2, 8, 34, 5, 0))
        );
        // Local: whatever the host's zone is, it is the one chrono reports for that time.
        let want = Local
            .from_local_datetime(
                &NaiveDate::from_ymd_opt(2024, 1, 2)
                    .and_then(|d| d.and_hms_opt(3, 4, 5))
                    .expect("date"),
            )
            .earliest()
            .map(|dt| dt.timestamp_millis());
        assert_eq!(parser(f, Zone::Local).parse(line, NOW), want);
    }

    #[test]
    fn date_only_unix_seconds_and_fractions() {
        assert_eq!(
            parser("%Y-%m-%d", Zone::Utc).parse(b"2024-01-02 x", NOW),
            Some(utc(2024, 1, 2, 0, 0, 0, 0))
        );
        assert_eq!(
            parser("%s", Zone::Fixed(3600)).parse(b"1704164645 x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
        let p = parser("%Y-%m-%dT%H:%M:%S%.fZ", Zone::Utc);
        assert_eq!(
            p.parse(b"2024-01-02T03:04:05.123456789Z", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 123))
        );
        assert_eq!(
            p.parse(b"2024-01-02T03:04:05Z", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
    }

    #[test]
    fn lines_without_a_timestamp() {
        let p = parser("%Y-%m-%d %H:%M:%S", Zone::Utc);
        for line in [
            &b""[..],
            b"   ",
            b"[",
            b"hello 2024-01-02 03:04:05",
            b"\tat com.example.App.main(App.java:10)",
            b"2024-13-02 03:04:05 x",
            b"2024-01-02 25:04:05 x",
            b"2024-01-02",
            b"\xff\xfe2024-01-02 03:04:05",
        ] {
            assert_eq!(
                p.parse(line, NOW),
                None,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        // A weekday that contradicts the date is not a timestamp.
        let p = parser("%a %b %d %H:%M:%S %Y", Zone::Utc);
        assert_eq!(
            p.parse(b"Tue Jan 02 03:04:05 2024 x", NOW),
            Some(utc(2024, 1, 2, 3, 4, 5, 0))
        );
        assert_eq!(p.parse(b"Mon Jan 02 03:04:05 2024 x", NOW), None);
    }

    #[test]
    fn bad_format_names_the_specifier() {
        for (format, spec) in [
            ("%Y-%m-%d %Q", "%Q"),
            ("%Y-%m-%d %H:%M:%S%.4f", "%.4f"),
            ("%Y-%m-%d %H:%M:%", "%"),
            ("%Y-%m-%d %H:%M:%S %::::z", "%::::z"),
        ] {
            match TimestampParser::new(format, Zone::Utc) {
                Err(TimestampError::BadSpecifier { specifier, .. }) => {
                    assert_eq!(specifier, spec, "{format}")
                }
                other => panic!("{format}: {other:?}"),
            }
        }
        let err = TimestampParser::new("%Y-%m-%d %Q", Zone::Utc).expect_err("bad");
        assert!(
            err.to_string().contains("invalid specifier \"%Q\""),
            "{err}"
        );
        // "%%" is a literal percent sign, "%+" a whole specifier.
        assert!(TimestampParser::new("%Y-%m-%d 100%% %H:%M", Zone::Utc).is_ok());
        assert!(TimestampParser::new("%+", Zone::Utc).is_ok());
    }

    #[test]
    fn incomplete_formats_are_rejected() {
        for format in ["", "hello", "%H:%M:%S", "%d %H:%M", "%Y-%m-%d %I:%M"] {
            assert!(
                matches!(
                    TimestampParser::new(format, Zone::Utc),
                    Err(TimestampError::Incomplete(_))
                ),
                "{format:?}"
            );
        }
    }

    #[test]
    fn zones_from_strings() {
        for (s, want) in [
            ("UTC", Zone::Utc),
            ("utc", Zone::Utc),
            ("Z", Zone::Utc),
            ("local", Zone::Local),
            ("Local", Zone::Local),
            ("+02:00", Zone::Fixed(7200)),
            ("-0530", Zone::Fixed(-19_800)),
            ("+02", Zone::Fixed(7200)),
            ("-00:00", Zone::Fixed(0)),
        ] {
            assert_eq!(s.parse::<Zone>().ok(), Some(want), "{s}");
        }
        for s in [
            "",
            "CET",
            "Europe/Paris",
            "+2",
            "+24:00",
            "+02:60",
            "02:00",
            "+02-00",
            "+1é1",
            "+0a00",
            "+020",
        ] {
            let err = s.parse::<Zone>().expect_err(s);
            assert!(err.to_string().starts_with("invalid zone"), "{err}");
        }
    }

    #[test]
    fn now_is_only_used_for_the_year() {
        let p = parser("%Y-%m-%d %H:%M:%S", Zone::Utc);
        let far_future = Utc::now().timestamp_millis() + 10 * 365 * DAY_MS;
        assert_eq!(
            p.parse(b"2030-01-02 03:04:05", 0),
            Some(utc(2030, 1, 2, 3, 4, 5, 0))
        );
        assert_eq!(
            p.parse(b"2030-01-02 03:04:05", far_future),
            Some(utc(2030, 1, 2, 3, 4, 5, 0))
        );
        // A now outside chrono's range does not panic.
        assert_eq!(
            parser("%b %d %H:%M:%S", Zone::Utc).parse(b"Jan 02 03:04:05", i64::MAX),
            None
        );
    }
}
