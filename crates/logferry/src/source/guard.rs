//! Guards for listeners exposed to a network: who may send (`allowed_peers`) and how much
//! (`max_events_per_second`, `max_bytes_per_second`).
//!
//! A log agent listens on every node; input it does not control must not be able to fill its
//! memory, its disk spool or its CloudWatch quota. These are the small pieces the syslog source
//! combines with its connection limit and idle timeout:
//!
//! - [`peer_allowed`]: a peer against the source's [`Cidr`] ranges (`crate::net`). IPv4 peers
//!   that reach a dual-stack (`[::]`) listener appear as IPv4-mapped IPv6 addresses; they are
//!   matched as the IPv4 address they are, so `10.0.0.0/8` means the same on either listener.
//! - [`RateLimit`]: token buckets shared by every connection of one source. Streams *pay after*
//!   reading ([`RateLimit::charge`] returns how long to stop reading: TCP pushes back on the
//!   sender, nothing is lost); datagrams *ask before* ([`RateLimit::admit`]: a datagram over the
//!   rate is dropped and counted, since a datagram socket cannot push back and the kernel would
//!   drop it anyway once its buffer is full).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::net::Cidr;

/// Whether `ip` may send, given `allowed` (empty: everyone).
pub fn peer_allowed(allowed: &[Cidr], ip: IpAddr) -> bool {
    allowed.is_empty() || allowed.iter().any(|c| c.contains(ip))
}

/// A token bucket: `rate` tokens per second, holding at most `burst`.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u64, burst: f64) -> Bucket {
        let rate = rate.max(1) as f64;
        let burst = burst.max(rate);
        Bucket {
            rate,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes `n` even if that leaves a debt; returns how long until the debt is paid.
    fn charge(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// One source's rate limit: events and/or bytes per second, shared by its connections.
#[derive(Debug)]
pub struct RateLimit {
    buckets: Mutex<(Option<Bucket>, Option<Bucket>)>,
}

/// Smallest byte burst: one datagram of the largest size must be able to pass.
const MIN_BYTE_BURST: f64 = 65_536.0;

impl RateLimit {
    /// A limit of `events` and/or `bytes` per second (bursts of one second's worth); `None`
    /// when neither is set.
    pub fn new(events: Option<u64>, bytes: Option<u64>) -> Option<RateLimit> {
        if events.is_none() && bytes.is_none() {
            return None;
        }
        Some(RateLimit {
            buckets: Mutex::new((
                events.map(|r| Bucket::new(r, 0.0)),
                bytes.map(|r| Bucket::new(r, MIN_BYTE_BURST)),
            )),
        })
    }

    /// Streams: records `events` and `bytes` as read and returns how long the reader must pause
    /// so that the source stays within its rate on average.
    pub fn charge(&self, events: u64, bytes: u64) -> Duration {
        let now = Instant::now();
        let Ok(mut b) = self.buckets.lock() else {
            return Duration::ZERO;
        };
        let (ev, by) = &mut *b;
        let a = ev
            .as_mut()
            .map(|b| b.charge(events as f64, now))
            .unwrap_or_default();
        let c = by
            .as_mut()
            .map(|b| b.charge(bytes as f64, now))
            .unwrap_or_default();
        a.max(c)
    }

    /// Datagrams: whether one datagram of `bytes` fits now; it is taken from the buckets if so.
    pub fn admit(&self, bytes: u64) -> bool {
        let now = Instant::now();
        let Ok(mut b) = self.buckets.lock() else {
            return true;
        };
        let (ev, by) = &mut *b;
        for bucket in [ev.as_mut(), by.as_mut()].into_iter().flatten() {
            bucket.refill(now);
        }
        let fits = ev.as_ref().is_none_or(|b| b.tokens >= 1.0)
            && by.as_ref().is_none_or(|b| b.tokens >= bytes as f64);
        if fits {
            if let Some(b) = ev.as_mut() {
                b.tokens -= 1.0;
            }
            if let Some(b) = by.as_mut() {
                b.tokens -= bytes as f64;
            }
        }
        fits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tests::ip;

    #[test]
    fn an_empty_allow_list_admits_everyone_and_a_list_only_its_ranges() {
        assert!(peer_allowed(&[], ip("203.0.113.1")), "empty list: everyone");
        let lan = [Cidr::parse("10.0.0.0/8").expect("cidr")];
        assert!(
            peer_allowed(&lan, ip("::ffff:10.1.2.3")),
            "dual-stack listener"
        );
        assert!(!peer_allowed(&lan, ip("203.0.113.1")));
    }

    #[test]
    fn stream_charge_pays_debt_datagram_admit_refuses() {
        let rl = RateLimit::new(Some(100), None).expect("limit");
        // The first second's burst is free; then each event costs 10 ms.
        assert_eq!(rl.charge(100, 0), Duration::ZERO);
        let wait = rl.charge(50, 0);
        assert!(wait >= Duration::from_millis(400), "{wait:?}");
        let rl = RateLimit::new(None, Some(100_000)).expect("limit");
        assert!(rl.admit(60_000));
        assert!(!rl.admit(60_000), "over the byte burst");
        assert!(rl.admit(30_000), "what fits still passes");
        assert!(RateLimit::new(None, None).is_none());
    }
}
