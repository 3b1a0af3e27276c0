//! Guards for listeners exposed to a network: who may send (`allowed_peers`) and how much
//! (`max_events_per_second`, `max_bytes_per_second`).
//!
//! A log agent listens on every node; input it does not control must not be able to fill its
//! memory, its disk spool or its CloudWatch quota. These are the small pieces the syslog source
//! combines with its connection limit and idle timeout:
//!
//! - [`Cidr`]: an address range from the config (IPv4 or IPv6). IPv4 peers that reach a
//!   dual-stack (`[::]`) listener appear as IPv4-mapped IPv6 addresses; they are matched as the
//!   IPv4 address they are, so `10.0.0.0/8` means the same on either kind of listener.
//! - [`RateLimit`]: token buckets shared by every connection of one source. Streams *pay after*
//!   reading ([`RateLimit::charge`] returns how long to stop reading: TCP pushes back on the
//!   sender, nothing is lost); datagrams *ask before* ([`RateLimit::admit`]: a datagram over the
//!   rate is dropped and counted, since a datagram socket cannot push back and the kernel would
//!   drop it anyway once its buffer is full).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// An IP address range, `ADDR/PREFIX` (a bare address means that one host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `fd00::/8`, `192.0.2.7` or `::1`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr_text, prefix_text) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_text
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| {
                format!("`{s}` is not an IP address or CIDR range (e.g. 10.0.0.0/8, fd00::/8)")
            })?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{s}`: prefix length must be 0 to {max}")),
            },
        };
        let cidr = Cidr {
            addr: canonical(addr),
            prefix: if addr.is_ipv6() && canonical(addr).is_ipv4() {
                // ::ffff:10.0.0.0/104 is 10.0.0.0/8.
                prefix.saturating_sub(96)
            } else {
                prefix
            },
        };
        if cidr.masked(cidr.addr) != cidr.addr {
            return Err(format!(
                "`{s}` has host bits set beyond /{prefix}; write the network address"
            ));
        }
        Ok(cidr)
    }

    fn masked(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) => {
                let bits = u32::from(v4);
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((bits & mask).into())
            }
            IpAddr::V6(v6) => {
                let bits = u128::from(v6);
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((bits & mask).into())
            }
        }
    }

    /// Whether `ip` lies in this range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        ip.is_ipv4() == self.addr.is_ipv4() && self.masked(ip) == self.addr
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

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

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn ranges_match_v4_v6_and_mapped_v4() {
        let lan = Cidr::parse("10.0.0.0/8").expect("cidr");
        assert!(lan.contains(ip("10.1.2.3")));
        assert!(lan.contains(ip("::ffff:10.1.2.3")), "dual-stack listener");
        assert!(!lan.contains(ip("11.0.0.1")));
        assert!(!lan.contains(ip("::1")));
        let ula = Cidr::parse("fd00::/8").expect("cidr");
        assert!(ula.contains(ip("fd12:3456::1")));
        assert!(!ula.contains(ip("fe80::1")));
        assert!(!ula.contains(ip("10.0.0.1")));
        let host = Cidr::parse("192.0.2.7").expect("host");
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all = Cidr::parse("0.0.0.0/0").expect("all v4");
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        assert!(Cidr::parse("::/0")
            .expect("all v6")
            .contains(ip("2001:db8::1")));
        let mapped = Cidr::parse("::ffff:10.0.0.0/104").expect("mapped");
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(Cidr::parse("[::1]").expect("bracketed").contains(ip("::1")));
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!(Cidr::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(Cidr::parse("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(Cidr::parse("example.com")
            .unwrap_err()
            .contains("not an IP"));
        assert!(Cidr::parse("fd00::/129").unwrap_err().contains("0 to 128"));
        assert!(peer_allowed(&[], ip("203.0.113.1")), "empty list: everyone");
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
