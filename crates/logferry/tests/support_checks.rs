//! The test helpers' own contract: a helper that cannot read what a test asks for fails the
//! test instead of answering "nothing" (no events, no metric, 0 KiB, 0 descriptors), which
//! would let every "nothing was sent" or "stays under" assertion pass on a broken run.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use support::*;

/// An address nobody listens on (bound, then closed).
fn dead_address() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// A process that has exited and been reaped: its pid names nothing in /proc.
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true")
        .spawn()
        .expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

/// Serves `body` as `/metrics` to every connection until the test ends; returns the address.
fn serve_metrics(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            // The whole request is read first: closing with part of it unread would reset the
            // connection, and the client would see no answer.
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

const EXPOSITION: &str = "# HELP logferry_present_total A counter that is there.\n\
                          # TYPE logferry_present_total counter\n\
                          logferry_present_total{source=\"tcp\"} 0\n";

#[test]
#[should_panic(expected = "failed")]
fn events_from_an_endpoint_that_does_not_answer_panic() {
    events(&format!("http://{}", dead_address()), "/g", "s");
}

#[test]
fn events_of_a_group_that_does_not_exist_are_none() {
    let moto = Moto::start().expect("moto");
    assert!(events(&moto.endpoint(), "/never/made", "s").is_empty());
}

#[test]
#[should_panic(expected = "0 of 1 events arrived within")]
fn wait_events_panics_when_the_count_never_arrives() {
    let moto = Moto::start().expect("moto");
    wait_events(
        &moto.endpoint(),
        "/never/made",
        "s",
        1,
        Duration::from_secs(1),
    );
}

#[test]
fn a_metric_that_is_not_exported_is_none_not_zero() {
    let addr = serve_metrics(EXPOSITION);
    assert_eq!(metric(&addr, "logferry_present_total", &[]), Some(0.0));
    assert_eq!(metric(&addr, "logferry_absent_total", &[]), None);
    assert_eq!(
        metric(&addr, "logferry_present_total", &["source=\"udp\""]),
        None,
        "no series with that label"
    );
    // `== Some(0.0)` and `>= Some(1.0)`, as the tests write them, are both false for None.
    let absent = metric(&addr, "logferry_absent_total", &[]);
    assert!(absent != Some(0.0) && absent < Some(1.0));
}

#[test]
fn a_metrics_endpoint_that_does_not_answer_is_none() {
    assert_eq!(metric(&dead_address(), "logferry_present_total", &[]), None);
}

#[test]
#[should_panic(expected = "not valid Prometheus text")]
fn a_malformed_exposition_panics() {
    let addr = serve_metrics("logferry_untyped_total 3\n");
    metric(&addr, "logferry_untyped_total", &[]);
}

#[test]
#[should_panic(expected = "is gone")]
fn memory_of_a_process_that_is_gone_panics() {
    proc_status_kib(dead_pid(), "VmHWM");
}

#[test]
#[should_panic(expected = "no VmNothing")]
fn a_memory_field_that_is_missing_panics() {
    proc_status_kib(std::process::id(), "VmNothing");
}

#[test]
fn memory_of_a_live_process_is_read() {
    assert!(proc_status_kib(std::process::id(), "VmHWM") > 0);
    assert!(proc_status_kib(std::process::id(), "VmRSS") > 0);
}

#[test]
#[should_panic(expected = "is gone")]
fn descriptors_of_a_process_that_is_gone_panic() {
    fd_count_under(dead_pid(), std::path::Path::new("/"));
}

#[test]
fn descriptors_of_a_live_process_are_counted() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("held");
    let before = fd_count_under(std::process::id(), dir.path());
    let held = std::fs::File::create(&path).expect("create");
    assert_eq!(fd_count_under(std::process::id(), dir.path()), before + 1);
    drop(held);
}
