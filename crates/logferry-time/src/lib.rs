//! Time for logferry's crates: the proleptic Gregorian calendar, strict RFC 3339 timestamps,
//! and the clock in Unix milliseconds.
//!
//! Its own crate because the syslog codec (`logferry-syslog`) and the file tailer
//! (`logferry-tail`) both parse timestamps and neither depends on the other: the codec must
//! stay free of the tailer's dependencies (inotify, regex, serde, chrono), and the tailer has no
//! business with syslog. The calendar was written twice before, once in each; the spool, the
//! binary and the test kit each had their own `now_ms` too. This crate depends on nothing.
//!
//! The calendar arithmetic is written here instead of pulling in `chrono` or `time` on
//! purpose: it runs once per message on the hot path, must not allocate, and only ever has to
//! handle proleptic Gregorian dates in a narrow window around "now". Howard Hinnant's
//! `days_from_civil` is a handful of integer operations, exact for every year an `i32` can
//! hold, and lets us validate each field ourselves so that an impossible timestamp
//! (`Feb 30`, `25:00:00`, a zone of `+99:00`) is reported as absent rather than silently
//! normalised into a wrong instant. (`logferry-tail`'s strftime-format timestamps do use
//! `chrono`: arbitrary formats are its job, and they are parsed once per event at most.)

/// Milliseconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Milliseconds in a day; the unit that civil dates are converted through.
pub const MS_PER_DAY: i64 = 86_400_000;

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's `days_from_civil`,
/// <https://howardhinnant.github.io/date_algorithms.html>). Callers validate the ranges first.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Shift the year so that it starts in March: the leap day then falls at the very end,
    // which makes the day-of-year formula branch-free.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: the (year, month, day) of a day number (days since
/// 1970-01-01).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in a month of a year; 0 for a month that does not exist.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// A wall-clock time of day with millisecond precision, already range-checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeOfDay {
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl TimeOfDay {
    /// 00:00:00.000
    pub const MIDNIGHT: TimeOfDay = TimeOfDay {
        hour: 0,
        minute: 0,
        second: 0,
        millis: 0,
    };

    /// Milliseconds since midnight.
    pub fn millis_of_day(self) -> i64 {
        // A leap second (`:60`) lands on the first millisecond of the next minute, which is
        // the closest representable instant; syslog senders rarely emit it anyway.
        i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1_000
            + i64::from(self.millis)
    }
}

/// Local civil time to UTC milliseconds; `None` if the date does not exist.
pub fn civil_to_unix_ms(
    year: i64,
    month: u32,
    day: u32,
    time: TimeOfDay,
    utc_offset_secs: i64,
) -> Option<i64> {
    let time_ok = time.hour <= 23 && time.minute <= 59 && time.second <= 60;
    if !time_ok || !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let local = days_from_civil(year, month, day)
        .checked_mul(MS_PER_DAY)?
        .checked_add(time.millis_of_day())?;
    local.checked_sub(utc_offset_secs.checked_mul(1000)?)
}

/// `n` ASCII digits at `s[at..]` as a number.
fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let d = s.get(at..at.checked_add(n)?)?;
    let mut v = 0u32;
    for &b in d {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// Parses an RFC 3339 date-time (`YYYY-MM-DDThh:mm:ss[.frac](Z|±hh:mm)`, the whole slice) to
/// milliseconds since the Unix epoch. Per RFC 3339 §5.6 `t`/`z` and a space for `T` are
/// accepted; the fraction has any number of digits and is truncated to milliseconds; a leap
/// second (`:60`) counts as the first second of the next minute. `None` for anything else,
/// including impossible dates like February 30.
pub fn parse_rfc3339_ms(s: &[u8]) -> Option<i64> {
    let year = digits(s, 0, 4)?;
    let month = digits(s, 5, 2)?;
    let day = digits(s, 8, 2)?;
    let hour = digits(s, 11, 2)?;
    let minute = digits(s, 14, 2)?;
    let second = digits(s, 17, 2)?;
    // The digit reads above succeeded, so s has at least 19 bytes: indexing below 19 is safe.
    if s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let mut i = 19;
    let mut millis = 0u32;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while let Some(b) = s.get(i).filter(|b| b.is_ascii_digit()) {
            if i - start < 3 {
                millis = millis * 10 + u32::from(b - b'0');
            }
            i += 1;
        }
        match i - start {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }
    let offset_secs = match s.get(i)? {
        b'Z' | b'z' => {
            i += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let h = digits(s, i + 1, 2)?;
            let m = digits(s, i + 4, 2)?;
            if s[i + 3] != b':' || h > 23 || m > 59 {
                return None;
            }
            i += 6;
            let secs = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    if i != s.len() {
        return None;
    }
    let time = TimeOfDay {
        hour,
        minute,
        second,
        millis,
    };
    // Ranges (February 30, 24:00, ...) are checked with the date.
    civil_to_unix_ms(i64::from(year), month, day, time, offset_secs)
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, NaiveDate};

    use super::*;

    const TOD0: TimeOfDay = TimeOfDay::MIDNIGHT;

    #[test]
    fn civil_round_trips_over_a_wide_range() {
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn known_epochs() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // 2026-11-25T16:20:39Z, cross-checked with `date -u -d ... +%s`.
        let t = TimeOfDay {
            hour: 16,
            minute: 20,
            second: 39,
            millis: 0,
        };
        assert_eq!(
            civil_to_unix_ms(2026, 11, 25, t, 0),
            Some(1_795_623_639_000)
        );
    }

    #[test]
    fn invalid_dates_are_rejected() {
        assert_eq!(civil_to_unix_ms(2025, 2, 29, TOD0, 0), None);
        assert!(civil_to_unix_ms(2024, 2, 29, TOD0, 0).is_some());
        assert_eq!(civil_to_unix_ms(2100, 2, 29, TOD0, 0), None);
        assert!(civil_to_unix_ms(2000, 2, 29, TOD0, 0).is_some());
        assert_eq!(civil_to_unix_ms(2026, 4, 31, TOD0, 0), None);
        assert_eq!(civil_to_unix_ms(2026, 13, 1, TOD0, 0), None);
        assert_eq!(civil_to_unix_ms(2026, 0, 1, TOD0, 0), None);
        assert_eq!(civil_to_unix_ms(2026, 1, 0, TOD0, 0), None);
    }

    #[test]
    fn rfc3339_matches_chrono_over_many_dates() {
        let mut day = NaiveDate::from_ymd_opt(1900, 1, 1).expect("date");
        let end = NaiveDate::from_ymd_opt(2200, 12, 31).expect("date");
        let mut n = 0u32;
        while day <= end {
            let dt = day
                .and_hms_nano_opt(
                    n % 24,
                    (n * 7) % 60,
                    (n * 13) % 60,
                    n.wrapping_mul(7_654_321) % 1_000_000_000,
                )
                .expect("time");
            let s = dt.format("%Y-%m-%dT%H:%M:%S%.9fZ").to_string();
            let want = dt.and_utc().timestamp_millis();
            assert_eq!(parse_rfc3339_ms(s.as_bytes()), Some(want), "{s}");
            day = day + chrono::Days::new(13);
            n += 1;
        }
        // Leap days, including the century rules.
        for (s, ok) in [
            ("2000-02-29", true),
            ("2024-02-29", true),
            ("1900-02-29", false),
            ("2023-02-29", false),
        ] {
            let line = format!("{s}T00:00:00Z");
            let want = DateTime::parse_from_rfc3339(&line)
                .ok()
                .map(|d| d.timestamp_millis());
            assert_eq!(parse_rfc3339_ms(line.as_bytes()).is_some(), ok, "{line}");
            assert_eq!(parse_rfc3339_ms(line.as_bytes()), want, "{line}");
        }
    }

    #[test]
    fn rfc3339_fractions_offsets_and_variants() {
        let base = 1_704_164_645_000; // 2024-01-02T03:04:05Z
        for (s, want) in [
            ("2024-01-02T03:04:05Z", base),
            ("2024-01-02T03:04:05.1Z", base + 100),
            ("2024-01-02T03:04:05.12Z", base + 120),
            ("2024-01-02T03:04:05.123Z", base + 123),
            ("2024-01-02T03:04:05.1239Z", base + 123), // truncated, not rounded
            ("2024-01-02T03:04:05.999999999999Z", base + 999),
            ("2024-01-02t03:04:05z", base),
            ("2024-01-02 03:04:05Z", base),
            ("2024-01-02T05:04:05+02:00", base),
            ("2024-01-01T21:34:05-05:30", base),
            ("2024-01-02T03:04:05.5+00:00", base + 500),
            ("1969-12-31T23:59:59.999Z", -1),
            ("2016-12-31T23:59:60Z", 1_483_228_800_000),
        ] {
            assert_eq!(parse_rfc3339_ms(s.as_bytes()), Some(want), "{s}");
        }
        for s in [
            "",
            "2024-01-02",
            "2024-01-02T03:04:05",
            "2024-01-02T03:04:05.Z",
            "2024-01-02T03:04:05+0200",
            "2024-01-02T03:04:05+02",
            "2024-01-02T03:04:05Zjunk",
            "2024-01-02T03:04:05 Z",
            "2024-01-02T24:00:00Z",
            "2024-01-02T03:60:00Z",
            "2024-01-02T03:04:61Z",
            "2024-00-02T03:04:05Z",
            "2024-04-31T03:04:05Z",
            "2024-01-00T03:04:05Z",
            "2024/01/02T03:04:05Z",
            "2024-01-02X03:04:05Z",
            "2024-01-02T03:04:05+24:00",
            "+024-01-02T03:04:05Z",
            "２０２４-01-02T03:04:05Z",
        ] {
            assert_eq!(parse_rfc3339_ms(s.as_bytes()), None, "{s:?}");
        }
    }
}
