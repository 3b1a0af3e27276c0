//! Faults CloudWatch inflicts that no other test injects, for real, through `cwl-proxy` in front
//! of moto: a request CloudWatch stored whose answer never came back, a connection that
//! hangs, and a request refused for one event in it. The proxy counts what it forwarded, what moto ingested and what it let logferry hear
//! of, so the books can be checked exactly, not only "nothing lost".

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const WAIT: Duration = Duration::from_secs(120);
const GROUP: &str = "/faults/test";

/// The syslog source `s` on `port`, shipping to `endpoint` with `sink_lines`.
fn config(port: u16, endpoint: &str, sink_lines: &str) -> String {
    config_with(port, endpoint, "", sink_lines)
}

/// [`config`], the source with `source_lines`.
fn config_with(port: u16, endpoint: &str, source_lines: &str, sink_lines: &str) -> String {
    format!(
        "data_dir = \"@DATA@\"\n[sources.s]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\n{source_lines}\n{}",
        cw_sink(&["s"], GROUP, "s", endpoint)
            .format("message")
            .max_backoff("500ms")
            .line(sink_lines)
    )
}

/// logferry with the syslog source `s` (with `source_lines`) on a free port, shipping straight
/// to moto; returns the port once it listens.
fn start_to_moto(moto: &Moto, source_lines: &str) -> (u16, Logferry) {
    let port = free_port();
    let lf = Logferry::start(&config_with(port, &moto.endpoint(), source_lines, ""));
    lf.wait_listening(1);
    (port, lf)
}

/// Waits for `n` events in the stream and asserts they are `n` distinct lines; `lost` says what
/// a shortfall means.
fn assert_distinct_lines_arrive(moto: &Moto, n: usize, lf: &Logferry, lost: &str) {
    let got = wait_events(&moto.endpoint(), GROUP, "s", n, WAIT);
    assert_eq!(tally(&got).len(), n, "{lost}\n{}", lf.log());
}

fn faults_of(stats: &serde_json::Value, kind: &str) -> u64 {
    stats["faults_injected"][kind].as_u64().unwrap_or(0)
}

#[test]
fn a_stored_request_whose_answer_was_lost_is_resent_and_counted() {
    let (moto, proxy) = moto_behind_faulty_proxy(json!({
        "reset_after_forward_pct": 25,
        "operations": ["PutLogEvents"],
    }));
    let port = free_port();
    let (lf, metrics) =
        start_with_metrics(&config(port, &proxy.endpoint(), "max_batch_events = 100"));
    lf.wait_listening(1);
    let n = 3000;
    let lines: String = (0..n).map(|i| format!("stored {i:05}\n")).collect();
    tcp_send(port, lines.as_bytes());
    let got = wait_events(&moto.endpoint(), GROUP, "s", n, WAIT);
    let counts = tally(&got);
    assert_eq!(counts.len(), n, "lost events\n{}", lf.log());

    // Every answer logferry heard of is one delivery per event; everything moto stored beyond
    // that is a request whose answer was lost, resent whole: exactly the duplicates.
    let delivered_all = wait_until(WAIT, || {
        metric(&metrics, "logferry_sink_events_delivered_total", &[]) == Some(n as f64)
    });
    assert!(delivered_all, "{}", lf.log());
    let stats = proxy.stats().expect("stats");
    let lost_answers = faults_of(&stats, "reset_after_forward");
    assert!(lost_answers > 0, "no answer was lost: {stats:#}");
    let ingested = stats["put_events_ingested"].as_u64().expect("ingested");
    let acknowledged = stats["put_events_acknowledged"]
        .as_u64()
        .expect("acknowledged");
    assert_eq!(acknowledged, n as u64, "{stats:#}");
    let duplicates: usize = counts.values().map(|k| k - 1).sum();
    assert_eq!(
        duplicates as u64,
        ingested - acknowledged,
        "duplicates other than the requests whose answer was lost: {stats:#}"
    );
    assert!(
        duplicates as u64 <= lost_answers * 100,
        "more resent than the lost requests held"
    );
    // Each such resend is counted as ambiguous: the operator sees why duplicates happened.
    let ambiguous = metric(&metrics, "logferry_sink_ambiguous_resends_total", &[])
        .expect("ambiguous resends exported");
    assert!(
        ambiguous >= lost_answers as f64,
        "{ambiguous} ambiguous resends for {lost_answers} lost answers"
    );
    assert_eq!(stats["violations"], 0, "{stats:#}");
}

#[test]
fn a_hung_connection_times_out_and_is_retried_without_loss() {
    let (moto, proxy) = moto_behind_proxy();
    let port = free_port();
    let (lf, metrics) =
        start_with_metrics(&config(port, &proxy.endpoint(), "request_timeout = \"1s\""));
    lf.wait_listening(1);
    tcp_send(port, b"before the hang\n");
    wait_events(&moto.endpoint(), GROUP, "s", 1, WAIT);

    // A black hole: every request is read and never answered for 20 s.
    proxy
        .set_faults(&json!({"outage": true, "outage_mode": "hang", "hang_ms": 20_000}))
        .expect("faults");
    let lines: String = (0..50).map(|i| format!("hung {i:03}\n")).collect();
    tcp_send(port, lines.as_bytes());
    // Timed out (1 s) and retried, again and again, while the hang lasts: not stuck on the
    // first request for 20 s, and each retry counted as possibly ingested.
    let retried = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_sink_ambiguous_resends_total", &[]) >= Some(3.0)
    });
    assert!(retried, "no timeout-and-retry seen\n{}", lf.log());
    assert_eq!(
        events(&moto.endpoint(), GROUP, "s").len(),
        1,
        "sent through a hang?"
    );

    proxy.clear_faults().expect("clear");
    let got = wait_events(&moto.endpoint(), GROUP, "s", 51, WAIT);
    let counts = tally(&got);
    assert_eq!(counts.len(), 51, "lost events\n{}", lf.log());
    // A hung request was never forwarded: nothing can be duplicated.
    assert_eq!(got.len(), 51, "duplicates after a hang");
}

/// Sends `tag 000..n` and asserts exactly those arrive in the (possibly re-created) stream.
#[test]
fn a_request_refused_for_one_event_is_split_until_that_event_is_dead_lettered_alone() {
    // CloudWatch refuses the whole request for one bad event; the sink cannot tell which, so it
    // splits the request in halves (reading the events back out of the sent body) until the
    // event stands alone. Every other line must arrive once, the bad one be dead-lettered once,
    // with its text intact.
    let (moto, proxy) = moto_behind_faulty_proxy(json!({
        "operations": ["PutLogEvents"],
        "error_code": "InvalidParameterException",
        "error_message": "Log event is invalid (injected by cwl-proxy)",
        "error_body_contains": "POISON",
    }));
    let port = free_port();
    let (lf, metrics) = start_with_metrics(&config(port, &proxy.endpoint(), ""));
    lf.wait_listening(1);
    let n = 300;
    let poison = 137;
    let text = |i: usize| {
        if i == poison {
            format!("line {i:03} carries a POISON pill \"quoted\" \u{e9}t\u{e9}")
        } else {
            format!("line {i:03}")
        }
    };
    let lines: String = (0..n)
        .map(|i| format!("<14>1 - h a - - - {}\n", text(i)))
        .collect();
    tcp_send(port, lines.as_bytes());

    let got = wait_events(&moto.endpoint(), GROUP, "s", n - 1, WAIT);
    assert!(
        wait_until(WAIT, || !dead_letters(&lf.data_dir(), "cw").is_empty()),
        "nothing dead-lettered\n{}",
        lf.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let got_later = events(&moto.endpoint(), GROUP, "s");
    assert_eq!(got_later.len(), got.len(), "more arrived after the split");
    let counts = tally(&got_later);
    assert_none_twice(&counts, "lines");
    let expected: Vec<String> = (0..n).filter(|i| *i != poison).map(text).collect();
    let mut arrived: Vec<&str> = counts.keys().copied().collect();
    arrived.sort_unstable();
    assert_eq!(arrived, expected, "every other line arrives once");

    let dead = dead_letters(&lf.data_dir(), "cw");
    assert_eq!(
        dead.len(),
        1,
        "the bad line alone is dead-lettered: {dead:?}"
    );
    assert_eq!(dead[0]["message"].as_str(), Some(text(poison).as_str()));
    assert_eq!(
        metric(&metrics, "logferry_sink_events_dead_lettered_total", &[]),
        Some(1.0)
    );
    // The halving took a few refused requests, each counted by the proxy; none was forwarded.
    let refused = faults_of(&proxy.stats().expect("proxy stats"), "aws_error");
    assert!(
        (2..=20).contains(&refused),
        "{refused} requests refused: the split should take about log2(events) steps"
    );
    assert_no_violations(&proxy);
}

fn wave(port: u16, moto: &Moto, tag: &str, n: usize, lf: &Logferry) {
    let lines: String = (0..n).map(|i| format!("{tag} {i:03}\n")).collect();
    tcp_send(port, lines.as_bytes());
    let got = wait_events(&moto.endpoint(), GROUP, "s", n, WAIT);
    let counts = tally(&got);
    let mine = counts.keys().filter(|l| l.starts_with(tag)).count();
    assert_eq!(mine, n, "{tag}: lost events\n{}", lf.log());
    assert_eq!(got.len(), n, "{tag}: duplicates or leftovers: {counts:?}");
}

#[test]
fn a_stream_or_group_deleted_while_running_is_created_again_and_nothing_is_lost() {
    let moto = Moto::start().expect("moto");
    let (port, lf) = start_to_moto(&moto, "");
    wave(port, &moto, "first", 100, &lf);

    let deleted = |op: &str, body: serde_json::Value| {
        let (status, v) = cwl_testkit::client::call(&moto.endpoint(), op, &body).expect(op);
        assert_eq!(status, 200, "{op}: {v}");
    };
    deleted(
        "DeleteLogStream",
        json!({"logGroupName": GROUP, "logStreamName": "s"}),
    );
    wave(port, &moto, "second", 100, &lf);

    deleted("DeleteLogGroup", json!({"logGroupName": GROUP}));
    wave(port, &moto, "third", 100, &lf);
}

#[test]
fn sighup_under_load_changing_the_sink_loses_and_repeats_nothing() {
    // Slow answers: requests are in flight when each reload comes.
    let (moto, proxy) =
        moto_behind_faulty_proxy(json!({"latency_ms": 200, "operations": ["PutLogEvents"]}));
    let port = free_port();
    let lf = Logferry::start(&config(port, &proxy.endpoint(), "max_batch_events = 50"));
    lf.wait_listening(1);
    let (chunks, per) = (20, 200);
    let sender = std::thread::spawn(move || {
        for c in 0..chunks {
            let data: String = (0..per).map(|i| format!("hup {c:02}-{i:03}\n")).collect();
            // Each chunk on its own connection: a reload closes the listener and reopens it.
            let sent = wait_until(Duration::from_secs(30), || {
                std::net::TcpStream::connect(("127.0.0.1", port))
                    .and_then(|mut s| std::io::Write::write_all(&mut s, data.as_bytes()))
                    .is_ok()
            });
            assert!(sent, "chunk {c} could not be sent");
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // First reload moves the sink to another stream; the second reloads it unchanged.
    std::thread::sleep(Duration::from_millis(600));
    let text = std::fs::read_to_string(&lf.config_path).expect("read");
    std::fs::write(
        &lf.config_path,
        text.replace("log_stream = \"s\"", "log_stream = \"s2\""),
    )
    .expect("write");
    lf.sighup();
    lf.wait_listening(2);
    std::thread::sleep(Duration::from_millis(700));
    lf.sighup();
    lf.wait_listening(3);
    sender.join().expect("sender");

    let n = chunks * per;
    let mut all = Vec::new();
    let complete = wait_until(WAIT, || {
        all = events(&moto.endpoint(), GROUP, "s");
        all.extend(events(&moto.endpoint(), GROUP, "s2"));
        tally(&all).len() >= n
    });
    assert!(
        complete,
        "{} of {n} arrived\n{}",
        tally(&all).len(),
        lf.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let mut all = events(&moto.endpoint(), GROUP, "s");
    let before = all.len();
    all.extend(events(&moto.endpoint(), GROUP, "s2"));
    assert!(
        before > 0 && all.len() > before,
        "both sinks delivered: {before} then {}",
        all.len() - before
    );
    let counts = tally(&all);
    assert_eq!(counts.len(), n, "lost\n{}", lf.log());
    assert_none_twice(&counts, "across reloads");
}

#[test]
fn https_endpoint_trusted_through_ssl_cert_file_and_a_wrong_ca_refused_without_loss() {
    use cwl_testkit::FakeCloudWatch;
    let fake = FakeCloudWatch::start().expect("fake-cloudwatch over HTTPS");
    // Another server's CA: a certificate chain logferry must not accept for `fake`.
    let other = FakeCloudWatch::start().expect("second fake-cloudwatch");
    let (right_ca, wrong_ca) = (
        fake.ca_path().expect("ca").to_path_buf(),
        other.ca_path().expect("ca").to_path_buf(),
    );
    let port = free_port();
    // A short grace: the first run is stopped while it still retries the untrusted endpoint.
    let cfg = config(port, &fake.endpoint(), "").replacen(
        "data_dir",
        "shutdown_grace = \"2s\"\ndata_dir",
        1,
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let with = |ca: std::path::PathBuf, addr: String| {
        move |cmd: &mut std::process::Command| {
            cmd.env("SSL_CERT_FILE", ca)
                .env("LOGFERRY_METRICS_ADDRESS", addr);
        }
    };
    let mut lf = Logferry::start_with(&cfg, with(wrong_ca, addr.clone()));
    lf.wait_listening(1);
    let lines: String = (0..100).map(|i| format!("tls {i:03}\n")).collect();
    tcp_send(port, lines.as_bytes());
    let refused = wait_until(Duration::from_secs(30), || {
        lf.log().to_lowercase().contains("certificate")
    });
    assert!(refused, "no certificate error logged\n{}", lf.log());
    assert_eq!(
        metric(&addr, "logferry_sink_events_delivered_total", &[]),
        Some(0.0),
        "delivered to a server it should not trust"
    );
    assert!(lf.terminate().success());

    // The right CA: what was spooled while the endpoint could not be trusted is delivered.
    lf.spawn(with(right_ca, addr.clone()));
    let delivered = wait_until(WAIT, || {
        metric(&addr, "logferry_sink_events_delivered_total", &[]) == Some(100.0)
    });
    assert!(delivered, "{}", lf.log());
    assert!(lf.terminate().success());
    drop(other);
    let stats = fake.stop().expect("fake stats");
    assert_eq!(stats["events"], 100, "{stats:#}");
    assert_eq!(stats["violations"], 0, "{stats:#}");
}

/// Sends `n` lines of ~250 bytes to a spooled source bounded to 1 MiB while CloudWatch is
/// down, then brings it back; returns (lines delivered, distinct, dropped metric). `n` must be
/// well over what the pipeline holds in memory (the sink's channel and builders, some 10,000
/// events) plus 1 MiB, or the spool never fills.
fn fill_the_spool(policy: &str, n: usize) -> (usize, usize, f64) {
    let (moto, proxy) = moto_behind_faulty_proxy(json!({"outage": true}));
    let port = free_port();
    let spool = format!("spool_max_bytes = 1048576\nspool_full_policy = \"{policy}\"");
    let cfg = config_with(port, &proxy.endpoint(), &spool, "max_batch_events = 500");
    let (lf, metrics) = start_with_metrics(&cfg);
    lf.wait_listening(1);
    let pad = "p".repeat(230);
    let data: String = (0..n).map(|i| format!("full {i:05} {pad}\n")).collect();
    let sender = std::thread::spawn(move || tcp_send(port, data.as_bytes()));
    // The spool fills: the input pauses (loopback's socket buffers may still take the rest,
    // so the sender itself need not block), or the oldest unread records go.
    let full = wait_until(Duration::from_secs(30), || {
        let log = lf.log();
        log.contains("input paused") || log.contains("dropped the oldest")
    });
    assert!(full, "{policy}: the spool never filled\n{}", lf.log());
    std::thread::sleep(Duration::from_secs(1));
    proxy.clear_faults().expect("clear");
    sender.join().expect("sender");
    let dropped = || metric(&metrics, "logferry_source_dropped_total", &[]).unwrap_or(-1.0);
    let settled = wait_until(WAIT, || {
        let got = events(&moto.endpoint(), GROUP, "s");
        tally(&got).len() as f64 + dropped() >= n as f64
    });
    let got = events(&moto.endpoint(), GROUP, "s");
    assert!(
        settled,
        "{policy}: {} of {n} delivered, {} counted dropped\n{}",
        tally(&got).len(),
        dropped(),
        lf.log()
    );
    std::thread::sleep(Duration::from_secs(1));
    let got = events(&moto.endpoint(), GROUP, "s");
    (got.len(), tally(&got).len(), dropped())
}

#[test]
fn a_full_spool_that_blocks_pushes_back_and_loses_nothing() {
    let n = 20_000;
    let (delivered, distinct, dropped) = fill_the_spool("block", n);
    assert_eq!((distinct, dropped), (n, 0.0), "lost or dropped");
    assert_eq!(delivered, n, "duplicates");
}

#[test]
fn a_full_spool_that_drops_the_oldest_counts_every_line_it_drops() {
    let n = 20_000;
    let (delivered, distinct, dropped) = fill_the_spool("drop_oldest", n);
    assert!(dropped > 0.0, "a full 1 MiB spool dropped nothing");
    assert_eq!(delivered, distinct, "duplicates");
    // The books: every line sent was delivered or counted dropped, none both, none neither.
    assert_eq!(distinct as f64 + dropped, n as f64, "unaccounted lines");
}

#[test]
fn a_connection_waiting_in_the_backlog_survives_a_reload() {
    let moto = Moto::start().expect("moto");
    let (port, lf) = start_to_moto(&moto, "max_connections = 1");
    // The one connection slot is taken by an idle client, so the next connection is completed
    // by the kernel into the listen backlog and not accepted: exactly where a reload caught one.
    let mut idle = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut idle, b"holding the slot\n").expect("send");
    wait_events(&moto.endpoint(), GROUP, "s", 1, WAIT);
    let lines: String = (0..100).map(|i| format!("queued {i:03}\n")).collect();
    let mut queued = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    std::io::Write::write_all(&mut queued, lines.as_bytes()).expect("send");
    drop(queued);
    std::thread::sleep(Duration::from_millis(300));
    lf.sighup();
    lf.wait_listening(2);
    drop(idle);
    assert_distinct_lines_arrive(&moto, 101, &lf, "the queued connection was lost");
}

#[test]
fn lines_a_client_already_sent_are_read_before_a_reload_closes_its_connection() {
    let moto = Moto::start().expect("moto");
    // Paced to 10 lines/s: most of what the client sends is still in the socket when the
    // reload comes (the client has sent everything and closed; it cannot send it again).
    let (port, lf) = start_to_moto(&moto, "max_events_per_second = 10");
    // 300 lines of ~1 KB: one 64 KiB read takes some 60, the pacing then holds the rest in
    // the socket for seconds.
    let pad = "x".repeat(1000);
    let lines: String = (0..300).map(|i| format!("sent {i:03} {pad}\n")).collect();
    tcp_send(port, lines.as_bytes());
    wait_events(&moto.endpoint(), GROUP, "s", 1, WAIT);
    lf.sighup();
    lf.wait_listening(2);
    assert_distinct_lines_arrive(&moto, 300, &lf, "lines left in the socket were lost");
}
