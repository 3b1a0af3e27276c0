//! The syslog listeners under abuse, end to end with the real binary and real sockets:
//! who may send (`allowed_peers`), how much (`max_events_per_second`), how many
//! (`max_connections` against a flood of 2,000 connections), how long (`idle_timeout` against
//! slowloris clients), and how big (a 300 MB line without a newline, a million datagrams).
//!
//! Each abuse test checks that another connection or source keeps flowing meanwhile and that
//! the process's peak resident memory (`VmHWM`) stays within a bound computed from the
//! documented formula (README, "Resource bounds"); the figures are printed (run with
//! `--nocapture` to see them).

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(90);
const MIB: u64 = 1024;

/// Slack on top of the formula: allocator fragmentation, the sink's request bodies, the
/// spool's in-memory tail (4 MiB), the channel (8 chunks of 1024 events).
const SLACK_KIB: u64 = 48 * MIB;

fn config(sources: &str, inputs: &[&str], endpoint: &str) -> String {
    let sink = cw_sink(inputs, "/guards/test", "{source}", endpoint).format("message");
    pipeline(sources, &sink)
}

fn texts(endpoint: &str, stream: &str) -> Vec<String> {
    events(endpoint, "/guards/test", stream)
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

/// logferry with a TCP syslog source `tcp` and a UDP one `udp` on free ports, with `tcp_extra`
/// and `udp_extra` lines, shipping to `moto` (a stream each) and serving `/metrics`; returns
/// (tcp port, udp port, logferry, metrics address) once both listen.
fn start_tcp_and_udp(
    moto: &Moto,
    tcp_extra: &str,
    udp_extra: &str,
) -> (u16, u16, Logferry, String) {
    let (tcp, udp) = (free_port(), free_port());
    let sources =
        syslog_source("tcp", "tcp", tcp, tcp_extra) + &syslog_source("udp", "udp", udp, udp_extra);
    let (lf, metrics) = start_with_metrics(&config(&sources, &["tcp", "udp"], &moto.endpoint()));
    lf.wait_listening(2);
    (tcp, udp, lf, metrics)
}

/// Asserts `stream` comes to hold every line of `want`.
fn assert_all_arrive(moto: &Moto, stream: &str, want: &[String], lf: &Logferry) {
    let arrived = wait_until(WAIT, || {
        let got = texts(&moto.endpoint(), stream);
        want.iter().all(|w| got.contains(w))
    });
    assert!(arrived, "{stream}: not every line arrived\n{}", lf.log());
}

fn m(addr: &str, name: &str, labels: &[&str]) -> f64 {
    metric(addr, name, labels).unwrap_or(-1.0)
}

/// A connection that keeps sending a numbered line `steady NNNNN` every 100 ms, from before
/// the abuse starts until [`Steady::stop`] after it ends.
struct Steady {
    stop: Arc<AtomicBool>,
    sender: std::thread::JoinHandle<Vec<String>>,
}

impl Steady {
    fn start(port: u16) -> Steady {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("steady connect");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let sender = std::thread::spawn(move || {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stopped.load(Ordering::Relaxed) || i < 10 {
                let line = format!("steady {i:05}");
                s.write_all(format!("{line}\n").as_bytes())
                    .expect("the steady connection was not dropped");
                sent.push(line);
                i += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            sent
        });
        Steady { stop, sender }
    }

    /// Stops sending; returns the lines sent.
    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.sender.join().expect("steady sender")
    }
}

/// Asserts the peak resident memory (`VmHWM`) of `lf` stays within `bound` KiB; prints it with
/// the `baseline` (VmRSS at start) for `test`.
fn assert_peak_within(test: &str, lf: &Logferry, baseline: u64, bound: u64) {
    let hwm = proc_status_kib(lf.pid(), "VmHWM");
    eprintln!(
        "{test}: VmRSS at start {} MiB, VmHWM {} MiB, bound {} MiB",
        baseline / MIB,
        hwm / MIB,
        bound / MIB
    );
    assert!(hwm <= bound, "VmHWM {hwm} KiB over {bound} KiB");
}

#[test]
fn allowed_peers_refuse_tcp_and_udp_from_elsewhere() {
    let moto = Moto::start().expect("moto");
    // The whole of 127/8 is this host: 127.0.0.2 stands in for an allowed node.
    let (tcp_peers, udp_peers) = (
        r#"allowed_peers = ["127.0.0.2/32", "fd00::/8"]"#,
        r#"allowed_peers = ["127.0.0.2"]"#,
    );
    let (tcp, udp, lf, metrics) = start_tcp_and_udp(&moto, tcp_peers, udp_peers);

    // Refused: the connection is closed before anything is read.
    let mut refused = TcpStream::connect(("127.0.0.1", tcp)).expect("connect");
    let _ = refused.write_all(b"from a stranger over tcp\n");
    refused.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut buf = [0u8; 16];
    match refused.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the refused connection stayed open: {other:?}"),
    }
    run(Command::new("logger").args([
        "--udp",
        "-n",
        "127.0.0.1",
        "-P",
        &udp.to_string(),
        "from a stranger over udp",
    ]));

    // Allowed: a real client bound to 127.0.0.2, and a datagram from there.
    ncat_send(
        &["-s", "127.0.0.2", "127.0.0.1", &tcp.to_string()],
        b"from an allowed peer over tcp\n",
    );
    let sock = UdpSocket::bind("127.0.0.2:0").expect("bind 127.0.0.2");
    sock.send_to(b"from an allowed peer over udp", ("127.0.0.1", udp))
        .expect("send");

    for (stream, line) in [
        ("tcp", "from an allowed peer over tcp"),
        ("udp", "from an allowed peer over udp"),
    ] {
        assert_all_arrive(&moto, stream, &[line.into()], &lf);
    }
    let rejected = |src: &str| {
        m(
            &metrics,
            "logferry_source_rejected_total",
            &[&format!("source=\"{src}\""), "reason=\"peer_not_allowed\""],
        )
    };
    assert!(wait_until(WAIT, || rejected("tcp") == 1.0 && rejected("udp") == 1.0));
    assert_eq!(
        texts(&moto.endpoint(), "tcp"),
        ["from an allowed peer over tcp"]
    );
    assert_eq!(
        texts(&moto.endpoint(), "udp"),
        ["from an allowed peer over udp"]
    );
}

#[test]
fn rate_limit_pushes_tcp_back_without_loss_and_drops_udp_counted() {
    let moto = Moto::start().expect("moto");
    let (tcp_rate, udp_rate) = ("max_events_per_second = 500", "max_events_per_second = 100");
    let (tcp, udp, lf, metrics) = start_tcp_and_udp(&moto, tcp_rate, udp_rate);
    let n = 3000;
    let lines: Vec<String> = (0..n).map(|i| format!("paced {i:05}")).collect();
    tcp_send(tcp, (lines.join("\n") + "\n").as_bytes());
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let datagrams = 2000u64;
    for i in 0..datagrams {
        sock.send_to(format!("burst {i}").as_bytes(), ("127.0.0.1", udp))
            .expect("send");
    }
    // Streams: everything arrives, the excess only waited.
    let got = wait_events(&moto.endpoint(), "/guards/test", "tcp", n, WAIT);
    assert_eq!(got.len(), n, "{}", lf.log());
    assert!(
        m(
            &metrics,
            "logferry_source_throttled_seconds_total",
            &["source=\"tcp\""]
        ) > 0.0,
        "the TCP reader was never paused"
    );
    // Datagrams: what passed and what was dropped add up (nothing is lost silently).
    let dropped = || {
        m(
            &metrics,
            "logferry_source_dropped_total",
            &["source=\"udp\"", "reason=\"rate_limited\""],
        )
    };
    let read = || {
        m(
            &metrics,
            "logferry_source_events_total",
            &["source=\"udp\""],
        )
    };
    // The kernel may drop datagrams itself when the socket buffer is full (counted in
    // /proc/net/udp, not by logferry): those are accounted for, not assumed away.
    let kernel = || udp_kernel_drops(udp) as f64;
    assert!(
        wait_until(WAIT, || read() + dropped() + kernel() == datagrams as f64),
        "read {} + dropped {} + dropped by the kernel {} != {datagrams}",
        read(),
        dropped(),
        kernel()
    );
    assert!(
        dropped() > 0.0 && read() >= 100.0,
        "read {} dropped {}",
        read(),
        dropped()
    );
}

/// The kernel's own drops are read, not assumed to be 0: a socket nobody reads overflows, and
/// `udp_kernel_drops` sees it (the rate-limit test's sum would otherwise hide a real loss or
/// fail on a kernel drop).
#[test]
fn kernel_drops_are_read_from_proc_net_udp() {
    let unread = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = unread.local_addr().expect("addr").port();
    assert_eq!(udp_kernel_drops(port), 0);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for _ in 0..2000 {
        sock.send_to(&[b'x'; 1024], ("127.0.0.1", port))
            .expect("send");
    }
    assert!(
        udp_kernel_drops(port) > 0,
        "2,000 unread datagrams, no drop read"
    );
}

/// Datagrams the kernel dropped on the UDP socket bound to 127.0.0.1:`port` (the `drops`
/// column of /proc/net/udp). Panics if there is no such socket.
fn udp_kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").expect("/proc/net/udp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.get(1) == Some(&local.as_str())).then(|| cols.last()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no UDP socket on 127.0.0.1:{port} in /proc/net/udp"))
}

/// Opens `n` TCP connections without waiting for the server to accept them (non-blocking
/// connect): the kernel completes what its backlog holds, the rest retry their SYNs.
fn flood(port: u16, n: usize) -> Vec<socket2::Socket> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    (0..n)
        .map(|_| {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            s.set_nonblocking(true).expect("nonblocking");
            let _ = s.connect(&addr.into());
            s
        })
        .collect()
}

#[test]
fn connection_flood_is_held_at_max_connections_while_others_flow() {
    let moto = Moto::start().expect("moto");
    let (port, other) = (free_port(), free_port());
    let max_connections = 100u64;
    let max_frame = 64 * 1024u64;
    let flooded = format!(
        "max_connections = {max_connections}\nidle_timeout = \"2s\"\nmax_frame_bytes = {max_frame}"
    );
    let sources =
        syslog_source("flooded", "tcp", port, &flooded) + &syslog_source("other", "tcp", other, "");
    let (lf, metrics) =
        start_with_metrics(&config(&sources, &["flooded", "other"], &moto.endpoint()));
    lf.wait_listening(2);
    let baseline = proc_status_kib(lf.pid(), "VmRSS");
    let steady = Steady::start(port);

    let conns = flood(port, 2000);
    let mut other_lines = Vec::new();
    let mut max_open = 0.0f64;
    let end = Instant::now() + Duration::from_secs(8);
    let mut i = 0;
    while Instant::now() < end {
        let line = format!("other source {i:04}");
        tcp_send(other, format!("{line}\n").as_bytes());
        other_lines.push(line);
        i += 1;
        max_open = max_open.max(m(
            &metrics,
            "logferry_source_connections",
            &["source=\"flooded\""],
        ));
        std::thread::sleep(Duration::from_millis(200));
    }
    let steady_lines = steady.stop();

    assert_all_arrive(&moto, "other", &other_lines, &lf);
    assert_all_arrive(&moto, "flooded", &steady_lines, &lf);
    assert!(
        max_open <= max_connections as f64,
        "{max_open} connections open"
    );
    assert!(
        max_open >= (max_connections - 5) as f64,
        "the flood never filled the slots: {max_open}"
    );
    assert!(
        m(
            &metrics,
            "logferry_source_connection_limit_reached_total",
            &["source=\"flooded\""]
        ) >= 1.0
    );
    assert!(
        m(
            &metrics,
            "logferry_source_idle_closed_total",
            &["source=\"flooded\""]
        ) >= 99.0
    );
    // Per connection: the 64 KiB read buffer and at most one partial frame.
    let bound = baseline + max_connections * (64 + max_frame / 1024) + SLACK_KIB;
    assert_peak_within("connection flood (2000 against 100)", &lf, baseline, bound);
    drop(conns);
}

#[test]
fn slowloris_clients_are_closed_by_idle_timeout_while_others_flow() {
    let moto = Moto::start().expect("moto");
    let port = free_port();
    let source = syslog_source("in", "tcp", port, "idle_timeout = \"2s\"");
    let (lf, metrics) = start_with_metrics(&config(&source, &["in"], &moto.endpoint()));
    lf.wait_listening(1);
    let baseline = proc_status_kib(lf.pid(), "VmRSS");
    let steady = Steady::start(port);
    // 50 clients trickling one byte every 300 ms, never finishing a line: never idle in bytes,
    // always idle in frames.
    let clients: Vec<_> = (0..50)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .expect("timeout");
                let give_up = Instant::now() + WAIT;
                let mut buf = [0u8; 1];
                while Instant::now() < give_up {
                    if s.write_all(b"x").is_err() {
                        return true;
                    }
                    match s.read(&mut buf) {
                        Ok(0) => return true,
                        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                        _ => {}
                    }
                }
                false
            })
        })
        .collect();
    let closed = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .filter(|&c| c)
        .count();
    let steady_lines = steady.stop();
    assert_eq!(closed, 50, "slowloris clients still connected");
    assert_eq!(m(&metrics, "logferry_source_idle_closed_total", &[]), 50.0);
    assert_all_arrive(&moto, "in", &steady_lines, &lf);
    let bound = baseline + 51 * (64 + 1024) + SLACK_KIB;
    assert_peak_within("slowloris (50 clients)", &lf, baseline, bound);
}

#[test]
fn a_300_mb_line_without_newline_costs_max_frame_bytes_not_its_size() {
    let moto = Moto::start().expect("moto");
    let port = free_port();
    let max_frame = 64 * 1024u64;
    let source = syslog_source("in", "tcp", port, &format!("max_frame_bytes = {max_frame}"));
    let (lf, metrics) = start_with_metrics(&config(&source, &["in"], &moto.endpoint()));
    lf.wait_listening(1);
    let baseline = proc_status_kib(lf.pid(), "VmRSS");
    let steady = Steady::start(port);
    let total: u64 = 300 << 20;
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..(total >> 20) {
        s.write_all(&chunk).expect("stream the huge line");
    }
    s.write_all(b"\nafter the huge line\n").expect("write");
    drop(s);
    let steady_lines = steady.stop();
    assert_all_arrive(&moto, "in", &steady_lines, &lf);
    assert_all_arrive(&moto, "in", &["after the huge line".into()], &lf);
    let got = texts(&moto.endpoint(), "in");
    let huge: Vec<&String> = got.iter().filter(|t| t.starts_with("xxxx")).collect();
    assert_eq!(huge.len(), 1, "one truncated event");
    assert!(huge[0].len() < 2 * max_frame as usize && huge[0].contains("truncated"));
    assert_eq!(m(&metrics, "logferry_source_truncated_total", &[]), 1.0);
    // One connection's buffer and one frame, whatever the line's length.
    let bound = baseline + 2 * (64 + max_frame / 1024) + SLACK_KIB;
    assert_peak_within("300 MB line", &lf, baseline, bound);
}

#[test]
fn a_million_datagrams_are_dropped_counted_and_memory_stays_bounded() {
    let moto = Moto::start().expect("moto");
    let (tcp, udp, lf, metrics) = start_tcp_and_udp(&moto, "", "max_events_per_second = 5000");
    let baseline = proc_status_kib(lf.pid(), "VmRSS");
    let steady = Steady::start(tcp);
    let n = 1_000_000u64;
    let started = Instant::now();
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for i in 0..n {
        // ENOBUFS and the like would only mean fewer datagrams arrive.
        let _ = sock.send_to(format!("<13>tiny {i}").as_bytes(), ("127.0.0.1", udp));
    }
    let send_secs = started.elapsed().as_secs_f64();
    let steady_lines = steady.stop();
    assert_all_arrive(&moto, "tcp", &steady_lines, &lf);
    let read = m(
        &metrics,
        "logferry_source_events_total",
        &["source=\"udp\""],
    );
    let dropped = m(
        &metrics,
        "logferry_source_dropped_total",
        &["source=\"udp\"", "reason=\"rate_limited\""],
    );
    eprintln!(
        "1M datagrams sent in {send_secs:.1} s: {read} read, {dropped} dropped by the rate limit, {} by the kernel",
        n as f64 - read - dropped
    );
    assert!(dropped > 0.0 && read > 0.0 && read + dropped <= n as f64);
    // No per-datagram state is kept: the channel, the spool's tail and the socket buffer.
    let bound = baseline + SLACK_KIB;
    assert_peak_within("1M datagrams", &lf, baseline, bound);
}
