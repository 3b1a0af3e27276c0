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

    /// Milliseconds of an RFC 3339 instant.
    fn ms(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339)
            .expect("valid test instant")
            .timestamp_millis()
    }

    fn parser(format: &str, zone: Zone) -> TimestampParser {
        TimestampParser::new(format, zone).expect("valid test format")
    }

    const NOW: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z

    /// A parser with the time it reads at (which places year-less timestamps): the rows of
    /// the tables below name one.
    type Reader = (TimestampParser, i64);

    fn reader(format: &str, zone: Zone, now: i64) -> Reader {
        (parser(format, zone), now)
    }

    #[test]
    fn reads_the_timestamp_a_line_starts_with() {
        let iso_ms = &reader("%Y-%m-%d %H:%M:%S%.3f", Zone::Utc, NOW);
        let access_log = &reader("%d/%b/%Y:%H:%M:%S %z", Zone::Fixed(9 * 3600), NOW);
        let rfc3339 = &reader("%Y-%m-%dT%H:%M:%S%:z", Zone::Utc, NOW);
        let syslog = &reader("%b %d %H:%M:%S", Zone::Utc, NOW);
        let syslog_new_year = &reader("%b %d %H:%M:%S", Zone::Utc, ms("2025-01-01T00:00:30Z"));
        let syslog_ahead = &reader(
            "%b %d %H:%M:%S",
            Zone::Fixed(3 * 3600),
            ms("2024-12-31T21:30:00Z"),
        );
        let syslog_no_leap = &reader("%b %d %H:%M:%S", Zone::Utc, ms("2025-03-01T00:00:00Z"));
        let syslog_at_max = &reader("%b %d %H:%M:%S", Zone::Utc, i64::MAX);
        let plain = "%Y-%m-%d %H:%M:%S";
        let plain_utc = &reader(plain, Zone::Utc, NOW);
        let plain_plus_2 = &reader(plain, Zone::Fixed(2 * 3600), NOW);
        let plain_minus_5_30 = &reader(plain, Zone::Fixed(-(5 * 3600 + 1800)), NOW);
        let plain_at_epoch = &reader(plain, Zone::Utc, 0);
        let far_future = Utc::now().timestamp_millis() + 10 * 365 * DAY_MS;
        let plain_far_future = &reader(plain, Zone::Utc, far_future);
        let date_only = &reader("%Y-%m-%d", Zone::Utc, NOW);
        let unix_seconds = &reader("%s", Zone::Fixed(3600), NOW);
        let fraction = &reader("%Y-%m-%dT%H:%M:%S%.fZ", Zone::Utc, NOW);
        let weekday = &reader("%a %b %d %H:%M:%S %Y", Zone::Utc, NOW);
        // What each row shows, its reader, its line and the instant read from that.
        let timestamps: &[(&str, &Reader, &[u8], &str)] = &[
            (
                "milliseconds",
                iso_ms,
                b"2024-01-02 03:04:05.123 ERROR something broke",
                "2024-01-02T03:04:05.123Z",
            ),
            (
                "leading whitespace is skipped",
                iso_ms,
                b"  2024-01-02 03:04:05.123 x",
                "2024-01-02T03:04:05.123Z",
            ),
            (
                "a leading '[' is skipped",
                iso_ms,
                b"[2024-01-02 03:04:05.123] x",
                "2024-01-02T03:04:05.123Z",
            ),
            (
                "whitespace, then '['",
                iso_ms,
                b" [2024-01-02 03:04:05.123] x",
                "2024-01-02T03:04:05.123Z",
            ),
            (
                "the rest of the line may be anything, even not UTF-8",
                iso_ms,
                b"2024-01-02 03:04:05.123\xff\xfe",
                "2024-01-02T03:04:05.123Z",
            ),
            (
                "the line's offset wins over the configured zone",
                access_log,
                br#"[02/Jan/2024:05:04:05 +0200] "GET / HTTP/1.1" 200 612"#,
                "2024-01-02T03:04:05Z",
            ),
            (
                "-0000 is UTC",
                access_log,
                b"02/Jan/2024:03:04:05 -0000 x",
                "2024-01-02T03:04:05Z",
            ),
            (
                "offset with a colon",
                rfc3339,
                b"2024-01-02T08:34:05+05:30 started",
                "2024-01-02T03:04:05Z",
            ),
            (
                "negative offset, the day before",
                rfc3339,
                b"2024-01-01T23:04:05-04:00 x",
                "2024-01-02T03:04:05Z",
            ),
            (
                "read 30 s into 2025, December is 2024's",
                syslog_new_year,
                b"Dec 31 23:59:59 host app: x",
                "2024-12-31T23:59:59Z",
            ),
            (
                "read 30 s into 2025, January is 2025's",
                syslog_new_year,
                b"Jan  1 00:00:10 host app: x",
                "2025-01-01T00:00:10Z",
            ),
            (
                "up to a day ahead (clock skew) stays in this year",
                syslog_new_year,
                b"Jan  1 20:00:00 x",
                "2025-01-01T20:00:00Z",
            ),
            (
                "a host already in the new year (UTC+3), read late on Dec 31 UTC",
                syslog_ahead,
                b"Jan  1 00:20:00 x",
                "2024-12-31T21:20:00Z",
            ),
            (
                "mid-year: an earlier date is this year's",
                syslog,
                b"Mar  5 01:02:03 x",
                "2024-03-05T01:02:03Z",
            ),
            (
                "mid-year: a later date is last year's",
                syslog,
                b"Sep  5 01:02:03 x",
                "2023-09-05T01:02:03Z",
            ),
            (
                "February 29th in a year without one is the last leap year's",
                syslog_no_leap,
                b"Feb 29 12:00:00 x",
                "2024-02-29T12:00:00Z",
            ),
            (
                "UTC",
                plain_utc,
                b"2024-01-02 03:04:05 x",
                "2024-01-02T03:04:05Z",
            ),
            (
                "a fixed zone east of UTC",
                plain_plus_2,
                b"2024-01-02 03:04:05 x",
                "2024-01-02T01:04:05Z",
            ),
            (
                "a fixed zone west of UTC",
                plain_minus_5_30,
                b"2024-01-02 03:04:05 x",
                "2024-01-02T08:34:05Z",
            ),
            (
                "only a date is midnight",
                date_only,
                b"2024-01-02 x",
                "2024-01-02T00:00:00Z",
            ),
            (
                "Unix seconds are absolute",
                unix_seconds,
                b"1704164645 x",
                "2024-01-02T03:04:05Z",
            ),
            (
                "fractions are cut to milliseconds",
                fraction,
                b"2024-01-02T03:04:05.123456789Z",
                "2024-01-02T03:04:05.123Z",
            ),
            (
                "%.f without a fraction",
                fraction,
                b"2024-01-02T03:04:05Z",
                "2024-01-02T03:04:05Z",
            ),
            (
                "a weekday that agrees with the date",
                weekday,
                b"Tue Jan 02 03:04:05 2024 x",
                "2024-01-02T03:04:05Z",
            ),
            (
                "with a year, the read time does not matter",
                plain_at_epoch,
                b"2030-01-02 03:04:05",
                "2030-01-02T03:04:05Z",
            ),
            (
                "not even ten years later",
                plain_far_future,
                b"2030-01-02 03:04:05",
                "2030-01-02T03:04:05Z",
            ),
        ];
        for &(what, (p, now), line, want) in timestamps {
            assert_eq!(p.parse(line, *now), Some(ms(want)), "{what}");
        }
        let no_timestamp: &[(&Reader, &[u8])] = &[
            (plain_utc, b""),
            (plain_utc, b"   "),
            (plain_utc, b"["),
            (plain_utc, b"hello 2024-01-02 03:04:05"),
            (plain_utc, b"\tat com.example.App.main(App.java:10)"),
            (plain_utc, b"2024-13-02 03:04:05 x"),
            (plain_utc, b"2024-01-02 25:04:05 x"),
            (plain_utc, b"2024-01-02"),
            (plain_utc, b"\xff\xfe2024-01-02 03:04:05"),
            // An access-log line does not start with its timestamp: a host comes first.
            (access_log, b"10.0.0.1 - - [02/Jan/2024:03:04:05 +0000] x"),
            // No offset in the line: the format requires one.
            (rfc3339, b"2024-01-02T03:04:05 x"),
            // A weekday that contradicts the date.
            (weekday, b"Mon Jan 02 03:04:05 2024 x"),
            // A read time outside chrono's range does not panic.
            (syslog_at_max, b"Jan 02 03:04:05"),
        ];
        for &((p, now), line) in no_timestamp {
            let text = String::from_utf8_lossy(line);
            assert_eq!(p.parse(line, *now), None, "{text:?}");
        }
    }

    #[test]
    fn local_zone_is_the_one_chrono_reports_for_that_time() {
        let want = Local
            .from_local_datetime(
                &NaiveDate::from_ymd_opt(2024, 1, 2)
                    .and_then(|d| d.and_hms_opt(3, 4, 5))
                    .expect("date"),
            )
            .earliest()
            .map(|dt| dt.timestamp_millis());
        let p = parser("%Y-%m-%d %H:%M:%S", Zone::Local);
        assert_eq!(p.parse(b"2024-01-02 03:04:05 x", NOW), want);
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
}
