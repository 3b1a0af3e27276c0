//! `[sources.NAME] type = "syslog"`: the listener address, TLS, and the network guards.
//!
//! A plain TCP/UDP listener beyond loopback is an error without `allow_insecure_remote`; a `tls`
//! table's files are loaded here, so `logferry validate` and a SIGHUP reload catch a missing or
//! mismatched certificate before the running listener is replaced.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::diag::Ctx;
use super::pushed::{frame_limit, spool_settings, SpoolFsync, SpoolFullPolicy, SpoolSettings};
use super::{de_duration_opt, SourceConfig};
use crate::net::{is_loopback_host, Cidr};
pub use crate::tls::{ClientAuth, TlsSettings};

/// Where a syslog source listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `tcp://HOST:PORT`
    Tcp(String),
    /// `udp://HOST:PORT`
    Udp(String),
    /// `unix:///path` (stream socket)
    UnixStream(PathBuf),
    /// `unixgram:///path` (datagram socket, like /dev/log)
    UnixDatagram(PathBuf),
}

impl ListenAddress {
    /// Parses `tcp://`, `udp://`, `unix://` or `unixgram://` addresses.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}` has no scheme: use tcp://HOST:PORT, udp://HOST:PORT, unix:///PATH or unixgram:///PATH"))?;
        let host_port = |rest: &str| -> Result<String, String> {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("`{s}` needs HOST:PORT"))?;
            port.parse::<u16>()
                .map_err(|_| format!("`{s}`: port `{port}` is not a number from 0 to 65535"))?;
            if host.is_empty() {
                return Err(format!("`{s}` has an empty host"));
            }
            Ok(rest.to_string())
        };
        match scheme {
            "tcp" => Ok(ListenAddress::Tcp(host_port(rest)?)),
            "udp" => Ok(ListenAddress::Udp(host_port(rest)?)),
            "unix" | "unixgram" => {
                if !rest.starts_with('/') {
                    return Err(format!("`{s}`: the socket path must be absolute"));
                }
                let p = PathBuf::from(rest);
                Ok(if scheme == "unix" {
                    ListenAddress::UnixStream(p)
                } else {
                    ListenAddress::UnixDatagram(p)
                })
            }
            other => Err(format!(
                "unknown scheme `{other}`: use tcp, udp, unix or unixgram"
            )),
        }
    }
}

impl std::fmt::Display for ListenAddress {
    /// As it is written in the config: `tcp://HOST:PORT`, `unix:///path`, ...
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddress::Tcp(a) => write!(f, "tcp://{a}"),
            ListenAddress::Udp(a) => write!(f, "udp://{a}"),
            ListenAddress::UnixStream(p) => write!(f, "unix://{}", p.display()),
            ListenAddress::UnixDatagram(p) => write!(f, "unixgram://{}", p.display()),
        }
    }
}

/// `[sources.NAME] type = "syslog"`
#[derive(Debug, Clone)]
pub struct SyslogSourceConfig {
    /// Where to listen.
    pub address: ListenAddress,
    /// Frames above this are truncated and flagged.
    pub max_frame_bytes: usize,
    /// The disk spool in front of the pipeline (None: events go straight to the sinks).
    pub spool: Option<SpoolSettings>,
    /// TLS on a TCP listener (RFC 5425); None: plain.
    pub tls: Option<TlsSettings>,
    /// Peers (TCP, UDP) allowed to send; empty: any.
    pub allowed_peers: Vec<Cidr>,
    /// Open connections at most (TCP, unix stream); beyond it the listener stops accepting.
    pub max_connections: usize,
    /// A stream connection that completes no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Events per second for the whole source (streams paused, datagrams dropped beyond it).
    pub max_events_per_second: Option<u64>,
    /// Bytes per second for the whole source (same policy).
    pub max_bytes_per_second: Option<u64>,
}

/// Default `max_connections` of a stream listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default `idle_timeout` of a stream connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSyslog {
    address: String,
    max_frame_bytes: Option<usize>,
    spool: Option<bool>,
    spool_max_bytes: Option<u64>,
    spool_fsync: Option<SpoolFsync>,
    spool_full_policy: Option<SpoolFullPolicy>,
    allow_insecure_remote: Option<bool>,
    tls: Option<RawTls>,
    allowed_peers: Option<Vec<String>>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    idle_timeout: Option<Duration>,
    max_events_per_second: Option<u64>,
    max_bytes_per_second: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    reload_interval: Option<Duration>,
}

pub(super) fn syslog_config(ctx: &mut Ctx<'_>, name: &str, raw: RawSyslog) -> Option<SourceConfig> {
    let before = ctx.errors.len();
    let key = |k: &'static str| ["sources", name, k];
    let address = match ListenAddress::parse(&raw.address) {
        Ok(a) => a,
        Err(msg) => {
            ctx.error(&key("address"), msg);
            return None;
        }
    };
    let max_frame_bytes = frame_limit(ctx, &key("max_frame_bytes"), raw.max_frame_bytes);
    let spool = spool_settings(
        ctx,
        name,
        raw.spool,
        raw.spool_max_bytes,
        raw.spool_fsync,
        raw.spool_full_policy,
    );
    let (is_tcp, is_udp) = (
        matches!(address, ListenAddress::Tcp(_)),
        matches!(address, ListenAddress::Udp(_)),
    );
    let is_stream = is_tcp || matches!(address, ListenAddress::UnixStream(_));

    let has_tls = raw.tls.is_some();
    let tls = ctx
        .only_where(
            is_tcp,
            &key("tls"),
            raw.tls,
            "TLS is for tcp:// listeners only (RFC 5425); unix sockets are protected by file permissions",
        )
        .map(|t| {
            let client_auth = match (&t.client_ca, t.client_auth) {
                (None, Some(_)) => {
                    ctx.error(
                        &["sources", name, "tls", "client_auth"],
                        "needs `client_ca`: the CA client certificates must be signed by",
                    );
                    ClientAuth::Required
                }
                (_, a) => a.unwrap_or(ClientAuth::Required),
            };
            let settings = TlsSettings {
                cert: t.cert,
                key: t.key,
                client_ca: t.client_ca,
                client_auth,
                handshake_timeout: t.handshake_timeout.unwrap_or(Duration::from_secs(10)),
                reload_interval: t.reload_interval.unwrap_or(Duration::from_secs(5)),
            };
            for (k, d) in [
                ("handshake_timeout", settings.handshake_timeout),
                ("reload_interval", settings.reload_interval),
            ] {
                if d.is_zero() {
                    ctx.error(&["sources", name, "tls", k], "must be more than zero");
                }
            }
            // Load the files now, so that `logferry validate` and a SIGHUP reload catch a
            // missing or mismatched certificate before the running listener is replaced.
            if let Err(e) = crate::tls::load(&settings) {
                ctx.error(&["sources", name, "tls", "cert"], format!("{e:#}"));
            }
            settings
        });

    if let ListenAddress::Tcp(hp) | ListenAddress::Udp(hp) = &address {
        if !has_tls && !is_loopback_host(hp) && raw.allow_insecure_remote != Some(true) {
            ctx.error(
                &key("address"),
                format!(
                    "`{}` accepts plain {} syslog from other hosts: anyone who can reach the port can write into your logs, unauthenticated and unencrypted. Listen on 127.0.0.1 (or [::1]), add a `tls` table (tcp), or, if the network is trusted, set `allow_insecure_remote = true` (preferably with `allowed_peers`)",
                    raw.address,
                    if is_udp { "UDP" } else { "TCP" }
                ),
            );
        }
    }

    let mut allowed_peers = Vec::new();
    if let Some(peers) = raw.allowed_peers {
        if !(is_tcp || is_udp) {
            ctx.error(
                &key("allowed_peers"),
                "unix sockets have no IP peers; restrict them with file permissions",
            );
        } else if peers.is_empty() {
            ctx.error(
                &key("allowed_peers"),
                "is empty, which would refuse everyone; remove it to allow any peer",
            );
        }
        for p in &peers {
            match Cidr::parse(p) {
                Ok(c) => allowed_peers.push(c),
                Err(msg) => ctx.error(&key("allowed_peers"), msg),
            }
        }
    }
    if raw.max_connections.is_some() && !is_stream {
        ctx.error(
            &key("max_connections"),
            "applies to tcp:// and unix:// (stream) listeners only",
        );
    }
    let max_connections = ctx.in_range(
        &key("max_connections"),
        raw.max_connections,
        DEFAULT_MAX_CONNECTIONS,
        1..=1_000_000,
    );
    if raw.idle_timeout.is_some() && !is_stream {
        ctx.error(
            &key("idle_timeout"),
            "applies to tcp:// and unix:// (stream) listeners only",
        );
    }
    let idle_timeout = raw.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
    if idle_timeout.is_zero() {
        ctx.error(&key("idle_timeout"), "must be more than zero");
    }
    for (k, v) in [
        ("max_events_per_second", raw.max_events_per_second),
        ("max_bytes_per_second", raw.max_bytes_per_second),
    ] {
        if v == Some(0) {
            ctx.error(&key(k), "must be more than zero (remove it for no limit)");
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    Some(SourceConfig::Syslog(SyslogSourceConfig {
        address,
        max_frame_bytes,
        spool,
        tls,
        allowed_peers,
        max_connections,
        idle_timeout,
        max_events_per_second: raw.max_events_per_second,
        max_bytes_per_second: raw.max_bytes_per_second,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            ListenAddress::parse("udp://[::1]:514"),
            Ok(ListenAddress::Udp("[::1]:514".into()))
        );
        assert_eq!(
            ListenAddress::parse("unixgram:///dev/log"),
            Ok(ListenAddress::UnixDatagram("/dev/log".into()))
        );
        assert!(ListenAddress::parse("tcp://host").is_err());
        assert!(ListenAddress::parse("unix://relative").is_err());
    }
}
