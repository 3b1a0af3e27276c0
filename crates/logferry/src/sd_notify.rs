//! systemd readiness and watchdog notifications (`Type=notify`, `WatchdogSec=`).
//!
//! The protocol is one datagram of `KEY=VALUE` lines to the unix socket named by
//! `NOTIFY_SOCKET` (an abstract socket when it starts with `@`). A dozen lines do it, so no
//! libsystemd (which would rule out a static binary) and no extra crate. Without
//! `NOTIFY_SOCKET` every call is a no-op, so the same binary runs anywhere.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends `state` (e.g. `READY=1`) to systemd, if it is listening. Errors are ignored: a missing
/// notification must never stop the shipper.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(std::path::Path::new(&path)),
    };
    if let Ok(addr) = addr {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// The watchdog interval systemd expects pings at (half of `WATCHDOG_USEC`), if enabled for
/// this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2)).filter(|d| !d.is_zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_the_notify_socket() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).expect("bind");
        // Tests in this binary do not otherwise use NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify("READY=1\nSTATUS=shipping");
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=shipping");
        notify("READY=1"); // no socket: a no-op, no panic
    }
}
