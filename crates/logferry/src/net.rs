//! Address facts the config checks and the listeners enforce: [`Cidr`] ranges for
//! `allowed_peers`, and whether a `HOST:PORT` stays on this host.
//!
//! A leaf module: `config` parses `allowed_peers` into [`Cidr`]s and refuses plain remote
//! listeners with [`is_loopback_host`]; `source::guard` matches peers against the ranges. Neither
//! needs the other for it.

use std::net::IpAddr;

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

    /// `ip` with only its top `prefix` bits kept (the network address of the range).
    fn masked(&self, ip: IpAddr) -> IpAddr {
        let keep = |bits: u128, width: u32| {
            bits & u128::MAX
                .checked_shl(width - u32::from(self.prefix))
                .unwrap_or(0)
        };
        match ip {
            // A u32 in, so below 2^32 out: the cast keeps every bit.
            IpAddr::V4(v4) => IpAddr::V4((keep(u32::from(v4).into(), 32) as u32).into()),
            IpAddr::V6(v6) => IpAddr::V6(keep(u128::from(v6), 128).into()),
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

/// Whether `HOST:PORT` names this host only (a loopback address or `localhost`). Any other name
/// may resolve to an address others can reach, so it counts as remote.
pub fn is_loopback_host(host_port: &str) -> bool {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| match ip {
            IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            v4 => v4.is_loopback(),
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The address `s` (the unit tests of address checks share it).
    pub(crate) fn ip(s: &str) -> IpAddr {
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
    }

    #[test]
    fn loopback_hosts_are_local_and_names_are_remote() {
        assert!(is_loopback_host("127.0.0.1:514"));
        assert!(is_loopback_host("[::1]:514"));
        assert!(is_loopback_host("[::ffff:127.0.0.1]:514"));
        assert!(is_loopback_host("LOCALHOST:514"));
        assert!(!is_loopback_host("0.0.0.0:514"));
        assert!(!is_loopback_host("[::]:514"));
        assert!(!is_loopback_host("logs.example.com:514"));
    }
}
