//! Durable delivery of pushed input: syslog over TCP goes through the disk spool, so killing
//! logferry with -9 while events are read but not yet delivered, or while CloudWatch is down,
//! loses nothing. Faults are real: SIGKILL, and a proxy in front of moto that delays, drops
//! and refuses.

mod support;

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use support::*;

const GROUP: &str = "/spool/test";

fn config(port: u16, endpoint: &str) -> String {
    format!(
        r#"
data_dir = "@DATA@"
shutdown_grace = "5s"

[sources.in]
type = "syslog"
address = "tcp://127.0.0.1:{port}"
spool = true

{sink}"#,
        sink = cw_sink(&["in"], GROUP, "s", endpoint)
            .format("message")
            .line("max_batch_events = 200")
            .max_backoff("1s"),
    )
}

/// The stream's events, once `n` have arrived (within `timeout`).
fn wait_delivered(moto: &Moto, n: usize, timeout: Duration) -> Vec<(i64, String)> {
    wait_events(&moto.endpoint(), GROUP, "s", n, timeout)
}

/// Sends `lines` over TCP, retrying the connection while logferry is restarting.
fn send_lines(port: u16, lines: &[String]) {
    let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let ok = wait_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .and_then(|mut s| std::io::Write::write_all(&mut s, data.as_bytes()))
            .is_ok()
    });
    assert!(ok, "could not send to logferry");
}

#[test]
fn kill9_during_delivery_loses_nothing_that_was_read() {
    // Slow CloudWatch: events sit in the spool and in flight when the kill comes.
    let (moto, proxy) = moto_behind_faulty_proxy(json!({"latency_ms": 150}));
    let port = free_port();
    let (mut lf, metrics) = start_with_metrics(&config(port, &proxy.endpoint()));
    lf.wait_listening(1);
    let mut rng = StdRng::seed_from_u64(test_seed("kill9_during_delivery"));
    let rounds = 10;
    let per_round = 1500;
    let mut all = Vec::new();
    for round in 0..rounds {
        let lines: Vec<String> = (0..per_round)
            .map(|i| format!("r{round:02}-{i:05}"))
            .collect();
        send_lines(port, &lines);
        all.extend(lines);
        // The burst was read whole (and so spooled: a connection appends before it reads
        // more) once this process's one connection has closed; then kill it at a random
        // moment of the delivery.
        let read_whole = wait_until(Duration::from_secs(30), || {
            metric(&metrics, "logferry_source_connections_total", &[]) >= Some(1.0)
                && metric(&metrics, "logferry_source_connections", &[]) == Some(0.0)
        });
        assert!(
            read_whole,
            "round {round}: the burst was never read\n{}",
            lf.log()
        );
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..500)));
        lf.kill9();
        let addr = metrics.clone();
        lf.spawn(move |cmd| {
            cmd.env("LOGFERRY_METRICS_ADDRESS", addr);
        });
        lf.wait_listening(round + 2);
    }
    let got = wait_delivered(&moto, all.len(), Duration::from_secs(180));
    let counts = tally(&got);
    let lost: Vec<&String> = all
        .iter()
        .filter(|l| !counts.contains_key(l.as_str()))
        .collect();
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "kill -9 x{rounds}: sent {}, delivered {} ({} unique), lost {}, duplicates {} ({:.2}%)",
        all.len(),
        got.len(),
        counts.len(),
        lost.len(),
        duplicates,
        100.0 * duplicates as f64 / all.len() as f64
    );
    assert!(
        lost.is_empty(),
        "lost {} lines, e.g. {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(5)],
        lf.log()
    );
    // Duplicates are bounded by what was in flight at each kill: the requests the proxy had
    // already taken (it forwards them even after the client died: 4 per stream of 200 events)
    // plus one spool read batch (256) acknowledged less than a checkpoint interval ago.
    let bound = rounds * (4 * 200 + 256);
    assert!(
        duplicates <= bound,
        "{duplicates} duplicates exceed the in-flight bound {bound}"
    );
    assert_no_violations(&proxy);
}

#[test]
fn cloudwatch_down_and_a_restart_during_the_outage_lose_nothing() {
    let (moto, proxy) = moto_behind_proxy();
    let port = free_port();
    let mut lf = Logferry::start(&config(port, &proxy.endpoint()));
    lf.wait_listening(1);
    let first: Vec<String> = (0..2000).map(|i| format!("before-{i:05}")).collect();
    send_lines(port, &first);
    // CloudWatch goes away entirely (connections closed unanswered).
    proxy.set_faults(&json!({"outage": true})).expect("faults");
    let during: Vec<String> = (0..3000).map(|i| format!("during-{i:05}")).collect();
    send_lines(port, &during);
    std::thread::sleep(Duration::from_secs(2));
    lf.kill9();
    lf.spawn(|_| {});
    lf.wait_listening(2);
    let after_restart: Vec<String> = (0..1000).map(|i| format!("restarted-{i:05}")).collect();
    send_lines(port, &after_restart);
    std::thread::sleep(Duration::from_secs(3));
    // Then 30% throttling as it comes back.
    proxy
        .set_faults(&json!({"throttle_pct": 30}))
        .expect("faults");
    let total = first.len() + during.len() + after_restart.len();
    let got = wait_delivered(&moto, total, Duration::from_secs(120));
    let counts = tally(&got);
    for line in first.iter().chain(&during).chain(&after_restart) {
        assert!(
            counts.contains_key(line.as_str()),
            "lost {line}\n{}",
            lf.log()
        );
    }
    let stats = proxy.stats().expect("stats");
    assert!(
        stats["faults_injected"].to_string().contains("outage"),
        "{stats:#}"
    );
    let status = lf.terminate();
    assert!(status.success());
}

#[test]
fn sigterm_with_cloudwatch_down_keeps_the_spool_for_the_next_run() {
    let (moto, proxy) = moto_behind_faulty_proxy(json!({"outage": true}));
    let port = free_port();
    let mut lf = Logferry::start(&config(port, &proxy.endpoint()));
    lf.wait_listening(1);
    let lines: Vec<String> = (0..500).map(|i| format!("kept-{i:04}")).collect();
    send_lines(port, &lines);
    std::thread::sleep(Duration::from_secs(1));
    // Grace period is 5 s: logferry gives up on the outage and exits, keeping the spool.
    let status = lf.terminate();
    assert!(status.success(), "{}", lf.log());
    assert!(events(&moto.endpoint(), GROUP, "s").is_empty());
    proxy.clear_faults().expect("clear");
    lf.spawn(|_| {});
    let got = wait_delivered(&moto, lines.len(), Duration::from_secs(60));
    let counts = tally(&got);
    assert!(
        lines.iter().all(|l| counts.contains_key(l.as_str())),
        "{}",
        lf.log()
    );
}
