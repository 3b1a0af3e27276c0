//! Timestamp parsing for the two syslog header dialects, down to Unix milliseconds (UTC).
//!
//! Syslog timestamps come in two shapes: RFC 3339 (`2026-11-25T16:20:39.123+01:00`, used by
//! RFC 5424 and by rsyslog's high-precision templates) and the BSD form of RFC 3164
//! (`Nov 25 16:20:39`, no year, no zone). Both are turned into milliseconds since the epoch.
//!
//! The calendar is `logferry-time`'s; the header grammar (a cursor that leaves the bytes alone
//! when they are not a timestamp, a zone that may be missing or written `±hhmm`, the BSD form)
//! is the codec's own.

use logferry_time::{civil_from_days, civil_to_unix_ms, TimeOfDay, MS_PER_DAY};

/// Cursor over ASCII header bytes. Every accessor is bounds-checked so that no input can
/// make the parser panic.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cursor<'a> {
    pub bytes: &'a [u8],
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8], pos: usize) -> Self {
        Cursor { bytes, pos }
    }

    pub fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Steps over `b`, or `None` if something else is next: for the separators a
    /// timestamp must have (`?` then gives up on the whole timestamp).
    pub fn require(&mut self, b: u8) -> Option<()> {
        self.eat(b).then_some(())
    }

    /// Exactly `n` ASCII digits as a number.
    pub fn digits(&mut self, n: usize) -> Option<u32> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        let mut value = 0u32;
        for &b in slice {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(b - b'0');
        }
        self.pos = end;
        Some(value)
    }

    /// `hh:mm:ss` followed by an optional `.fraction` of any length (kept to milliseconds).
    /// Only the shape is checked here; ranges are checked with the date, so that a
    /// well-formed but impossible time is recognised as a timestamp and reported as absent.
    pub fn time_of_day(&mut self) -> Option<TimeOfDay> {
        let hour = self.digits(2)?;
        self.require(b':')?;
        let minute = self.digits(2)?;
        self.require(b':')?;
        let second = self.digits(2)?;
        let mut millis = 0u32;
        if self.eat(b'.') {
            let start = self.pos;
            let mut scale = 100u32;
            while let Some(b) = self.peek().filter(u8::is_ascii_digit) {
                millis += u32::from(b - b'0') * scale;
                scale /= 10;
                self.pos += 1;
            }
            if self.pos == start {
                return None;
            }
        }
        Some(TimeOfDay {
            hour,
            minute,
            second,
            millis,
        })
    }

    /// A zone designator: `Z`, `±hh:mm` or (leniently, as journald's `short-iso` writes it)
    /// `±hhmm`. `None` if there is no zone at the cursor (which is then left alone);
    /// `Some(None)` for a well-formed but out-of-range offset; otherwise the offset east of
    /// UTC in seconds.
    pub fn zone(&mut self) -> Option<Option<i64>> {
        match self.peek()? {
            b'Z' | b'z' => {
                self.pos += 1;
                Some(Some(0))
            }
            sign @ (b'+' | b'-') => {
                let save = self.pos;
                self.pos += 1;
                let Some(h) = self.digits(2) else {
                    self.pos = save;
                    return None;
                };
                self.eat(b':');
                let Some(m) = self.digits(2) else {
                    self.pos = save;
                    return None;
                };
                if h > 23 || m > 59 {
                    return Some(None);
                }
                let secs = i64::from(h * 3600 + m * 60);
                Some(Some(if sign == b'-' { -secs } else { secs }))
            }
            _ => None,
        }
    }
}

/// Parses an RFC 3339 timestamp at the cursor; a missing zone (tolerated because rsyslog
/// templates and hand-written senders omit it) falls back to `local_offset_secs`.
///
/// `None` if the bytes do not have the shape of a timestamp (cursor unchanged);
/// `Some(None)` if they do but name an impossible instant (cursor moved past it);
/// `Some(Some(ms))` otherwise.
pub(crate) fn parse_rfc3339(cur: &mut Cursor<'_>, local_offset_secs: i64) -> Option<Option<i64>> {
    let mut c = *cur;
    let year = c.digits(4)?;
    c.require(b'-')?;
    let month = c.digits(2)?;
    c.require(b'-')?;
    let day = c.digits(2)?;
    if !(c.eat(b'T') || c.eat(b't')) {
        return None;
    }
    let time = c.time_of_day()?;
    let offset = c.zone().unwrap_or(Some(local_offset_secs));
    *cur = c;
    Some(offset.and_then(|off| civil_to_unix_ms(i64::from(year), month, day, time, off)))
}

/// Month number (1..=12) of an English three-letter abbreviation, case-insensitively.
pub(crate) fn month_from_abbrev(m: &[u8]) -> Option<u32> {
    let [a, b, c] = m else { return None };
    let key = [
        a.to_ascii_lowercase(),
        b.to_ascii_lowercase(),
        c.to_ascii_lowercase(),
    ];
    let n = match &key {
        b"jan" => 1,
        b"feb" => 2,
        b"mar" => 3,
        b"apr" => 4,
        b"may" => 5,
        b"jun" => 6,
        b"jul" => 7,
        b"aug" => 8,
        b"sep" => 9,
        b"oct" => 10,
        b"nov" => 11,
        b"dec" => 12,
        _ => return None,
    };
    Some(n)
}

/// Resolves a year-less BSD timestamp to the most recent year that puts it no more than a week
/// after `now_unix_ms` (both read in the same local zone). A `Dec 31` line received on Jan 1
/// thus belongs to the previous year, a sender whose clock runs slightly ahead across New Year
/// still lands in the new one, and a line from months ago is never pushed into next year.
pub(crate) fn infer_year(
    month: u32,
    day: u32,
    time: TimeOfDay,
    now_unix_ms: i64,
    utc_offset_secs: i64,
) -> Option<i64> {
    let now_local_ms = now_unix_ms.checked_add(utc_offset_secs.checked_mul(1000)?)?;
    let (this_year, _, _) = civil_from_days(now_local_ms.div_euclid(MS_PER_DAY));
    // The most recent year that does not put the line more than a week in the future. Logs
    // describe the past: a line from eight months ago belongs to this year, not to next year
    // (which CloudWatch would refuse as too new); a December line read in January belongs to
    // last year. The week absorbs clock skew between sender and receiver.
    const AHEAD_TOLERANCE_MS: i64 = 7 * MS_PER_DAY;
    let mut fallback = None;
    for year in (this_year - 4..=this_year + 1).rev() {
        // Candidates that do not exist (Feb 29 outside leap years) are skipped; going back four
        // years lets a Feb 29 line find the previous leap year.
        if let Some(ms) = civil_to_unix_ms(year, month, day, time, utc_offset_secs) {
            if ms <= now_unix_ms.saturating_add(AHEAD_TOLERANCE_MS) {
                return Some(ms);
            }
            fallback = Some(ms);
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOD0: TimeOfDay = TimeOfDay::MIDNIGHT;

    #[test]
    fn rfc3339_variants() {
        let p = |s: &str| parse_rfc3339(&mut Cursor::new(s.as_bytes(), 0), 3600);
        assert_eq!(p("1970-01-01T00:00:00Z"), Some(Some(0)));
        assert_eq!(p("1970-01-01T00:00:00.5Z"), Some(Some(500)));
        assert_eq!(p("1970-01-01T00:00:00.123456789Z"), Some(Some(123)));
        assert_eq!(p("1970-01-01T01:00:00+01:00"), Some(Some(0)));
        assert_eq!(p("1970-01-01T01:00:00+0100"), Some(Some(0)));
        assert_eq!(p("1969-12-31T23:30:00-00:30"), Some(Some(0)));
        assert_eq!(p("1970-01-01T01:00:00"), Some(Some(0)));
        assert_eq!(p("1970-01-01T24:00:00Z"), Some(None));
        assert_eq!(p("1970-02-30T00:00:00Z"), Some(None));
        assert_eq!(p("1970-01-01T00:00:00+24:00"), Some(None));
        assert_eq!(p("1970-01-01T00:00:00.Z"), None);
        assert_eq!(p("1970-01-01"), None);
        assert_eq!(p("197O-01-01T00:00:00Z"), None);
    }

    #[test]
    fn year_inference_picks_the_latest_year_not_in_the_future() {
        let t = TimeOfDay {
            hour: 23,
            minute: 59,
            second: 0,
            millis: 0,
        };
        let jan1_2027 = civil_to_unix_ms(2027, 1, 1, TOD0, 0).unwrap_or_default();
        let dec31_2026 = civil_to_unix_ms(2026, 12, 31, t, 0);
        assert_eq!(infer_year(12, 31, t, jan1_2027, 0), dec31_2026);
        let dec31_2026_noon =
            civil_to_unix_ms(2026, 12, 31, TimeOfDay { hour: 12, ..TOD0 }, 0).unwrap_or_default();
        assert_eq!(infer_year(1, 1, TOD0, dec31_2026_noon, 0), Some(jan1_2027));
        // Feb 29 read in a non-leap year belongs to the last leap year.
        let mid_2026 = civil_to_unix_ms(2026, 7, 1, TOD0, 0).unwrap_or_default();
        assert_eq!(
            infer_year(2, 29, TOD0, mid_2026, 0),
            civil_to_unix_ms(2024, 2, 29, TOD0, 0)
        );
        // A line from eight months ago is from this year, not (closer) next year: CloudWatch
        // would refuse a timestamp in the future.
        let nov_2026 = civil_to_unix_ms(2026, 11, 25, TOD0, 0).unwrap_or_default();
        assert_eq!(
            infer_year(3, 1, TOD0, nov_2026, 0),
            civil_to_unix_ms(2026, 3, 1, TOD0, 0)
        );
        assert_eq!(
            infer_year(12, 1, TOD0, nov_2026, 0),
            civil_to_unix_ms(2026, 12, 1, TOD0, 0),
            "six days ahead is clock skew, not last year"
        );
        assert_eq!(
            infer_year(12, 5, TOD0, nov_2026, 0),
            civil_to_unix_ms(2025, 12, 5, TOD0, 0)
        );
    }
}
