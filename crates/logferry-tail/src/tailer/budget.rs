//! The per-file read rate (`max_file_bytes_per_second`): a token bucket per open file.
//!
//! A file out of budget is not read and not dropped: it leaves the round-robin until the
//! bucket holds a whole read again, and [`Tailer::wait`](super::Tailer::wait) wakes then. It
//! waits for a whole read (not one byte) so that a limited file is read in a few large reads a
//! second, not in many tiny ones.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub(super) struct Budget {
    bytes_per_second: u64,
    /// At most one second's worth: an idle file may burst one second of its rate, no more.
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    /// Starts full.
    pub(super) fn new(bytes_per_second: u64, now: Instant) -> Budget {
        Budget {
            bytes_per_second: bytes_per_second.max(1),
            tokens: bytes_per_second.max(1) as f64,
            refilled: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let rate = self.bytes_per_second as f64;
        let gained = now.saturating_duration_since(self.refilled).as_secs_f64() * rate;
        self.tokens = (self.tokens + gained).min(rate);
        self.refilled = now;
    }

    /// The smaller of a full read (`want`) and a second of the rate: what one read waits for.
    fn whole_read(&self, want: usize) -> f64 {
        (want as f64).min(self.bytes_per_second as f64)
    }

    /// How many bytes one read may take now (at most `want`), or `Err(when)`: none before
    /// `when`.
    pub(super) fn allow(&mut self, want: usize, now: Instant) -> Result<usize, Instant> {
        self.refill(now);
        let whole = self.whole_read(want);
        if self.tokens >= whole {
            return Ok((self.tokens as usize).min(want).max(1));
        }
        let missing = whole - self.tokens;
        Err(now + Duration::from_secs_f64(missing / self.bytes_per_second as f64))
    }

    /// `n` bytes were read.
    pub(super) fn spend(&mut self, n: usize) {
        self.tokens -= n as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bucket_allows_one_second_of_rate_then_waits_for_a_whole_read() {
        let t0 = Instant::now();
        let mut b = Budget::new(1000, t0);
        assert_eq!(b.allow(4096, t0), Ok(1000));
        b.spend(1000);
        let when = b.allow(4096, t0).expect_err("empty");
        // A whole read is 1000 bytes here (the rate is below the read size): one second.
        assert_eq!(when, t0 + Duration::from_secs(1));
        // Half refilled is still not a whole read.
        assert!(b.allow(4096, t0 + Duration::from_millis(500)).is_err());
        assert_eq!(b.allow(4096, t0 + Duration::from_secs(1)), Ok(1000));
    }

    #[test]
    fn reads_smaller_than_the_rate_wait_only_for_their_own_size() {
        let t0 = Instant::now();
        let mut b = Budget::new(100_000, t0);
        assert_eq!(b.allow(4096, t0), Ok(4096));
        b.spend(100_000 - 1000);
        let when = b.allow(4096, t0).expect_err("below a read");
        // 3096 bytes missing at 100,000 B/s.
        assert_eq!(when, t0 + Duration::from_secs_f64(3096.0 / 100_000.0));
    }

    #[test]
    fn an_idle_file_never_saves_more_than_one_second() {
        let t0 = Instant::now();
        let mut b = Budget::new(1000, t0);
        b.spend(1000);
        assert_eq!(b.allow(1 << 20, t0 + Duration::from_secs(60)), Ok(1000));
    }

    /// Over any stretch, what is read is at most the burst plus the rate times the time.
    #[test]
    fn the_rate_holds_over_time() {
        let t0 = Instant::now();
        let mut b = Budget::new(10_000, t0);
        let mut read = 0usize;
        let mut now = t0;
        while now < t0 + Duration::from_secs(10) {
            match b.allow(4096, now) {
                Ok(n) => {
                    b.spend(n);
                    read += n;
                }
                Err(when) => now = when,
            }
        }
        assert!(read <= 10_000 + 10 * 10_000 + 4096, "{read}");
        assert!(read >= 10 * 10_000 - 4096, "{read}");
    }
}
