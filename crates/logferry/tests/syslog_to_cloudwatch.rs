//! End to end: real syslog clients -> logferry -> (cwl-proxy ->) moto_server, read back.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn config(sources: &str, endpoint: &str, sink_extra: &str) -> String {
    let sink = cw_sink(&["in"], "/test/{hostname}", "node", endpoint).line(sink_extra);
    pipeline(sources, &sink)
}

fn hostname() -> String {
    logferry::sink::client::hostname()
}

/// The sink's group, `/test/{hostname}` as logferry expands it.
fn group() -> String {
    format!("/test/{}", hostname())
}

fn tcp_source(port: u16) -> String {
    format!("[sources.in]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\n")
}

/// logferry with one TCP syslog source `in` on a free port, shipping to `endpoint` with
/// `sink_extra`; returns the port once it listens.
fn start_tcp(endpoint: &str, sink_extra: &str) -> (u16, Logferry) {
    start_tcp_with(endpoint, "", sink_extra)
}

/// [`start_tcp`], the source with `source_extra` lines.
fn start_tcp_with(endpoint: &str, source_extra: &str, sink_extra: &str) -> (u16, Logferry) {
    let tcp = free_port();
    let source = format!("{}{source_extra}\n", tcp_source(tcp));
    let lf = Logferry::start(&config(&source, endpoint, sink_extra));
    lf.wait_listening(1);
    (tcp, lf)
}

/// The events of the sink's stream (`group()`/`node`), waiting until `n` have arrived.
fn wait_shipped(moto: &Moto, n: usize, timeout: Duration) -> Vec<(i64, String)> {
    wait_events(&moto.endpoint(), &group(), "node", n, timeout)
}

#[test]
fn real_clients_over_tcp_udp_and_unix_sockets_reach_cloudwatch() {
    let (moto, proxy) = moto_behind_proxy();
    let (tcp, udp) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tmp");
    let ustream = dir.path().join("stream.sock");
    let udgram = dir.path().join("dgram.sock");
    let sources = format!(
        r#"
[sources.in]
type = "syslog"
address = "tcp://127.0.0.1:{tcp}"
[sources.udp]
type = "syslog"
address = "udp://127.0.0.1:{udp}"
[sources.ustream]
type = "syslog"
address = "unix://{}"
[sources.udgram]
type = "syslog"
address = "unixgram://{}"
"#,
        ustream.display(),
        udgram.display()
    );
    let cfg = config(&sources, &proxy.endpoint(), "format = \"short\"").replace(
        "inputs = [\"in\"]",
        "inputs = [\"in\", \"udp\", \"ustream\", \"udgram\"]",
    );
    let lf = Logferry::start(&cfg);
    lf.wait_listening(4);

    // Real `logger` clients; logger joins the words after its options into one message.
    let logger = |args: &str| run(Command::new("logger").args(args.split(' ')));
    logger(&format!(
        "--tcp -n 127.0.0.1 -P {tcp} --rfc5424 --octet-count -t app5424 msg one 5424"
    ));
    logger(&format!(
        "--tcp -n 127.0.0.1 -P {tcp} --rfc3164 -t app3164 msg two 3164"
    ));
    logger(&format!(
        "--udp -n 127.0.0.1 -P {udp} --rfc5424 -t appudp msg three udp"
    ));
    logger(&format!(
        "-u {} -t appdgram msg four unixgram",
        udgram.display()
    ));
    let port = |p: u16| p.to_string();
    // The old chain: `journalctl -o short -f | ncat 127.0.0.1 514`.
    ncat_send(
        &["127.0.0.1", &port(tcp)],
        b"Nov 25 16:20:39 node-1 kubelet[2174]: I1125 msg five journalctl\n",
    );
    ncat_send(
        &["-U", &ustream.display().to_string()],
        b"<13>Nov 25 16:20:40 node-2 cron[1]: msg six unix stream\n",
    );

    let got = wait_shipped(&moto, 6, WAIT);
    let texts: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(got.len(), 6, "{texts:#?}\n{}", lf.log());
    let find = |needle: &str| {
        texts
            .iter()
            .find(|t| t.ends_with(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {texts:#?}"))
            .to_string()
    };
    assert!(find("msg one 5424").contains(" app5424"), "{texts:?}");
    assert!(find("msg two 3164").contains(" app3164"), "{texts:?}");
    assert!(find("msg three udp").contains(" appudp"), "{texts:?}");
    assert!(find("msg four unixgram").contains(" appdgram"), "{texts:?}");
    // A journalctl line passes through unchanged.
    assert!(
        texts.contains(&"Nov 25 16:20:39 node-1 kubelet[2174]: I1125 msg five journalctl"),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"Nov 25 16:20:40 node-2 cron[1]: msg six unix stream"),
        "{texts:?}"
    );
    // Source timestamps are kept: the journalctl line's time, not the arrival time.
    let five = got
        .iter()
        .find(|(_, m)| m.ends_with("msg five journalctl"))
        .expect("five");
    let c = logferry::format::civil_from_ms(five.0);
    assert_eq!(
        (c.month, c.day, c.hour, c.minute, c.second),
        (11, 25, 16, 20, 39)
    );
    assert_no_violations(&proxy);
}

#[test]
fn thirty_thousand_lines_arrive_once_in_valid_requests() {
    let (moto, proxy) = moto_behind_proxy();
    // Small batches force many requests and several in flight per stream.
    let small_batches = "format = \"message\"\nmax_batch_events = 2000";
    let (tcp, lf) = start_tcp(&proxy.endpoint(), small_batches);
    let n = 30_000;
    let mut data = Vec::new();
    for i in 0..n {
        // Mix framings and sizes: octet counting and newlines, 5424 and plain text.
        let body = format!(
            "<14>1 2026-11-25T10:00:00.{:03}Z h app - - - line {i:06} {}",
            i % 1000,
            "x".repeat(i % 300)
        );
        if i % 3 == 0 {
            data.extend_from_slice(format!("{} {}", body.len(), body).as_bytes());
        } else {
            data.extend_from_slice(body.as_bytes());
            data.push(b'\n');
        }
    }
    // Over several connections at once.
    let chunks: Vec<Vec<u8>> = {
        let text = data;
        let mut parts = Vec::new();
        let mut start = 0;
        for k in 1..=4 {
            let mut end = text.len() * k / 4;
            // cut at a frame boundary: after a newline that precedes a frame
            while end < text.len() && text[end - 1] != b'\n' {
                end += 1;
            }
            parts.push(text[start..end].to_vec());
            start = end;
        }
        parts
    };
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|c| std::thread::spawn(move || tcp_send(tcp, &c)))
        .collect();
    for h in handles {
        h.join().expect("sender");
    }
    let got = wait_shipped(&moto, n, WAIT);
    let ids: BTreeSet<&str> = got.iter().filter_map(|(_, m)| m.get(5..11)).collect();
    assert_eq!(got.len(), n, "duplicates or loss\n{}", lf.log());
    assert_eq!(ids.len(), n, "every line once");
    assert_no_violations(&proxy);
    let stats = proxy.stats().expect("stats");
    assert!(
        stats["put_events_forwarded"].as_u64().unwrap_or(0) >= n as u64,
        "{stats:#}"
    );
}

/// 30,004 events whose timestamps spread over 30 hours, arriving in random order: the
/// batcher groups them by time window (a request may not span more than 24 h) instead of
/// cutting a request at every event that would widen the span.
#[test]
fn events_spread_over_thirty_hours_go_out_in_few_requests() {
    let (moto, proxy) = moto_behind_proxy();
    let (tcp, lf) = start_tcp(&proxy.endpoint(), "format = \"message\"\n");
    let n = 30_004u64;
    let hour = 3_600_000;
    let start = now_ms() - 31 * hour;
    // A fixed shuffle (an LCG): timestamps anywhere in the 30 hours, in no order.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut data = Vec::new();
    for i in 0..n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let ts = start + ((x >> 33) % (30 * hour as u64)) as i64;
        data.extend_from_slice(
            format!("<14>1 {} h app - - - spread {i:06}\n", rfc3339(ts)).as_bytes(),
        );
    }
    tcp_send(tcp, &data);
    let got = wait_shipped(&moto, n as usize, Duration::from_secs(180));
    let stats = proxy.stats().expect("stats");
    let requests = stats["put_requests"].as_u64().unwrap_or(0);
    eprintln!(
        "{} of {n} events over 30 hours arrived in {requests} PutLogEvents requests",
        got.len()
    );
    let ids: BTreeSet<&str> = got.iter().filter_map(|(_, m)| m.get(7..13)).collect();
    assert_eq!(ids.len(), n as usize, "lost events\n{}", lf.log());
    assert_eq!(got.len(), n as usize, "duplicates");
    assert_no_violations(&proxy);
    assert!(requests <= 20, "{requests} requests for {n} events");
}

/// Everything a new group needs goes in its one CreateLogGroup call (moto 5 stores `kmsKeyId`
/// and `tags`; it ignores `logGroupClass` and `deletionProtectionEnabled`, so those are only
/// checked not to break the call): no TagResource, no AssociateKmsKey, one PutRetentionPolicy.
#[test]
fn a_new_group_gets_key_tags_and_class_in_one_create_call() {
    let (moto, proxy) = moto_behind_proxy();
    let kms = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let (tcp, lf) = start_tcp(
        &proxy.endpoint(),
        &format!(
            "format = \"message\"\nretention_days = 30\nkms_key_id = \"{kms}\"\n\
             log_group_class = \"INFREQUENT_ACCESS\"\ndeletion_protection = true\n\
             [sinks.cw.tags]\nteam = \"logs\"\ncost-center = \"42\"\n"
        ),
    );
    tcp_send(tcp, b"into a new group\n");
    let group = group();
    let got = wait_shipped(&moto, 1, WAIT);
    assert_eq!(got.len(), 1, "{}", lf.log());
    let (_, groups) = cwl_testkit::call(
        &moto.endpoint(),
        "DescribeLogGroups",
        &serde_json::json!({"logGroupNamePrefix": group}),
    )
    .expect("describe");
    let g = &groups["logGroups"][0];
    assert_eq!(g["kmsKeyId"], kms, "{groups:#}");
    assert_eq!(g["retentionInDays"], 30, "{groups:#}");
    let (_, tags) = cwl_testkit::call(
        &moto.endpoint(),
        "ListTagsLogGroup",
        &serde_json::json!({"logGroupName": group}),
    )
    .expect("tags");
    assert_eq!(
        tags["tags"],
        serde_json::json!({"team": "logs", "cost-center": "42"}),
        "{tags:#}"
    );
    let stats = proxy.stats().expect("stats");
    let ops = &stats["requests_by_operation"];
    assert_eq!(ops["CreateLogGroup"], 1, "{stats:#}");
    assert_eq!(ops["PutRetentionPolicy"], 1, "{stats:#}");
    assert_eq!(ops.get("TagResource"), None, "{stats:#}");
    assert_eq!(ops.get("TagLogGroup"), None, "{stats:#}");
    assert_eq!(ops.get("AssociateKmsKey"), None, "{stats:#}");
    assert_eq!(ops.get("DescribeLogStreams"), None, "{stats:#}");
}

#[test]
fn oversize_garbage_and_invalid_utf8_lose_nothing_else() {
    let (moto, proxy) = moto_behind_proxy();
    let (tcp, _lf) = start_tcp_with(
        &proxy.endpoint(),
        "max_frame_bytes = 3000000",
        "format = \"message\"",
    );
    let mut data = Vec::new();
    data.extend_from_slice(b"before\n");
    // 2.5 MB line: kept whole (under max_frame_bytes), split into numbered parts for CloudWatch.
    let big: String = (0..2_500_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    data.extend_from_slice(big.as_bytes());
    data.push(b'\n');
    data.extend_from_slice(b"bad \xff\xfe utf8\n");
    data.extend_from_slice(b"99999999999 <13>not really octet counted\n");
    data.extend_from_slice(b"\x00\x01\x02 binary\n");
    data.extend_from_slice(b"after\n");
    tcp_send(tcp, &data);
    let got = wait_shipped(&moto, 8, WAIT);
    let texts: Vec<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert!(
        texts.contains(&"before"),
        "{:?}",
        texts
            .iter()
            .map(|t| &t[..t.len().min(40)])
            .collect::<Vec<_>>()
    );
    assert!(texts.contains(&"after"));
    assert!(texts.contains(&"bad \u{fffd}\u{fffd} utf8"));
    assert!(texts.iter().any(|t| t.contains("not really octet counted")));
    assert!(texts.iter().any(|t| t.contains("binary")));
    let mut parts: Vec<&str> = texts
        .iter()
        .copied()
        .filter(|t| t.starts_with("[part "))
        .collect();
    parts.sort();
    assert_eq!(parts.len(), 3, "2.5 MB in parts of at most 1 MiB");
    let joined: String = parts
        .iter()
        .map(|p| p.split_once("] ").map(|(_, rest)| rest).unwrap_or(""))
        .collect();
    assert_eq!(joined, big, "the parts rebuild the line");
    assert_no_violations(&proxy);
}

#[test]
fn frames_over_max_frame_bytes_are_truncated_and_flagged() {
    let moto = Moto::start().expect("moto");
    let (tcp, lf) = start_tcp_with(
        &moto.endpoint(),
        "max_frame_bytes = 1000",
        "format = \"json\"",
    );
    let mut data = format!("<13>Nov 25 16:20:39 h app: {}\n", "y".repeat(5000)).into_bytes();
    data.extend_from_slice(b"<13>Nov 25 16:20:40 h app: next intact\n");
    tcp_send(tcp, &data);
    let got = wait_shipped(&moto, 2, WAIT);
    assert_eq!(got.len(), 2, "{}", lf.log());
    let parsed: Vec<serde_json::Value> = got
        .iter()
        .map(|(_, m)| serde_json::from_str(m).expect("json"))
        .collect();
    let cut = parsed
        .iter()
        .find(|v| v["truncated_bytes"].is_number())
        .expect("flagged");
    assert!(
        cut["truncated_bytes"].as_u64().unwrap_or(0) >= 4000,
        "{cut}"
    );
    assert!(parsed
        .iter()
        .any(|v| v["message"] == "next intact" && v["identifier"] == "app"));
}

#[test]
fn events_cloudwatch_would_reject_go_to_the_dead_letter_file() {
    let moto = Moto::start().expect("moto");
    let (tcp, lf) = start_tcp(&moto.endpoint(), "format = \"message\"");
    let now = logferry::event::now_ms();
    let stamp = |ms: i64| {
        let mut s = String::new();
        logferry::format::rfc3339_ms(ms, &mut s);
        s
    };
    let day = 86_400_000;
    let lines = format!(
        "<14>1 {} h a - - - twenty days old\n<14>1 {} h a - - - three hours ahead\n<14>1 {} h a - - - fine\n",
        stamp(now - 20 * day),
        stamp(now + 3 * 3_600_000),
        stamp(now)
    );
    tcp_send(tcp, lines.as_bytes());
    let got = wait_shipped(&moto, 1, WAIT);
    assert!(wait_until(WAIT, || dead_letters(&lf.data_dir(), "cw")
        .len()
        >= 2));
    std::thread::sleep(Duration::from_millis(500));
    let got2 = events(&moto.endpoint(), &group(), "node");
    assert_eq!(got.len(), 1);
    assert_eq!(got2.len(), 1, "rejected events were sent: {got2:?}");
    assert_eq!(got[0].1, "fine");
    let dl = dead_letters(&lf.data_dir(), "cw");
    let reasons: BTreeSet<(String, String)> = dl
        .iter()
        .map(|v| {
            (
                v["reason"].as_str().unwrap_or("").to_string(),
                v["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("too_old".into(), "twenty days old".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("too_new".into(), "three hours ahead".into())),
        "{reasons:?}"
    );
}

#[test]
fn per_event_stream_names_from_templates() {
    let moto = Moto::start().expect("moto");
    let tcp = free_port();
    let cfg = config(&tcp_source(tcp), &moto.endpoint(), "format = \"message\"").replace(
        "log_stream = \"node\"",
        "log_stream = \"{hostname}/{identifier}\"",
    );
    let lf = Logferry::start(&cfg);
    lf.wait_listening(1);
    tcp_send(tcp, b"<13>Nov 25 16:20:39 h kubelet[1]: a\n<13>Nov 25 16:20:39 h containerd: b\n<13>1 - h bad:name*x 2 - - c\nno header at all\n");
    let (group, host) = (group(), hostname());
    // The identifier as CloudWatch allows it in a stream name, and `unknown` where there is none.
    for (identifier, message) in [
        ("kubelet", "a"),
        ("containerd", "b"),
        ("bad_name_x", "c"),
        ("unknown", "no header at all"),
    ] {
        let stream = format!("{host}/{identifier}");
        let got = wait_events(&moto.endpoint(), &group, &stream, 1, WAIT);
        assert_eq!(got[0].1, message, "{stream}");
    }
    let streams = cwl_testkit::client::list_streams(&moto.endpoint(), &group).expect("streams");
    assert!(
        streams.iter().all(|s| !s.contains(':') && !s.contains('*')),
        "{streams:?}\n{}",
        lf.log()
    );
    assert_eq!(streams.len(), 4, "{streams:?}");
}

#[test]
fn stdin_pipe_is_delivered_then_logferry_exits_zero() {
    let moto = Moto::start().expect("moto");
    let cfg = config(
        "[sources.in]\ntype = \"stdin\"\n",
        &moto.endpoint(),
        "format = \"message\"\nretention_days = 7\n",
    );
    let mut lf = Logferry::start_with(&cfg, |cmd| {
        cmd.stdin(Stdio::piped());
    });
    {
        let child = lf.child.as_mut().expect("child");
        let mut stdin = child.stdin.take().expect("stdin");
        for i in 0..5000 {
            writeln!(stdin, "Nov 25 16:20:39 node-1 app[{i}]: stdin line {i}").expect("write");
        }
    }
    let status = lf.wait_exit(WAIT);
    assert!(status.success(), "{}", lf.log());
    // Everything is there the moment logferry exits: it waited for delivery.
    let group = group();
    let got = events(&moto.endpoint(), &group, "node");
    assert_eq!(got.len(), 5000, "{}", lf.log());
    assert_eq!(
        cwl_testkit::client::group_retention(&moto.endpoint(), &group).expect("retention"),
        Some(7)
    );
}

#[test]
fn sigterm_flushes_what_is_buffered() {
    let moto = Moto::start().expect("moto");
    let tcp = free_port();
    let cfg = config(&tcp_source(tcp), &moto.endpoint(), "format = \"message\"")
        .replace("batch_timeout = \"200ms\"", "batch_timeout = \"1h\"");
    let mut lf = Logferry::start(&cfg);
    lf.wait_listening(1);
    let lines: String = (0..100).map(|i| format!("held {i}\n")).collect();
    tcp_send(tcp, lines.as_bytes());
    std::thread::sleep(Duration::from_millis(500));
    let group = group();
    assert!(
        events(&moto.endpoint(), &group, "node").is_empty(),
        "sent before the batch timeout"
    );
    let status = lf.terminate();
    assert!(status.success(), "{}", lf.log());
    assert_eq!(
        events(&moto.endpoint(), &group, "node").len(),
        100,
        "{}",
        lf.log()
    );
}

#[test]
fn throttling_and_server_errors_are_retried_until_delivered() {
    let (moto, proxy) = moto_behind_faulty_proxy(serde_json::json!({
        "throttle_pct": 30, "error_503_pct": 20, "error_500_pct": 10, "reset_pct": 5
    }));
    let (tcp, lf) = start_tcp(
        &proxy.endpoint(),
        "format = \"message\"\nmax_batch_events = 500\nmax_backoff = \"1s\"\n",
    );
    let n = 10_000;
    let lines: String = (0..n).map(|i| format!("faulty {i:05}\n")).collect();
    tcp_send(tcp, lines.as_bytes());
    // Distinct lines: a request sent twice must not end the wait while others are still on
    // their way (they would be reported lost, not the duplicate).
    let got = wait_distinct(
        &moto.endpoint(),
        &group(),
        "node",
        n,
        Duration::from_secs(120),
    );
    let unique: BTreeSet<&str> = got.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(unique.len(), n, "lost events\n{}", lf.log());
    // None of these faults forwards the request, so a resend can never duplicate: bounded at 0.
    assert_eq!(got.len(), n, "duplicates\n{}", lf.log());
    let stats = proxy.stats().expect("stats");
    let injected = &stats["faults_injected"];
    assert!(
        injected.to_string().contains("throttle"),
        "no fault was injected: {stats:#}"
    );
    assert_no_violations(&proxy);
    // Secrets never reach the logs.
    assert!(!lf.log().contains("planted-secret-do-not-log"));
}

#[test]
fn create_log_group_throttled_or_down_still_delivers() {
    let (moto, proxy) = moto_behind_faulty_proxy(serde_json::json!({
        "throttle_pct": 60, "error_503_pct": 30, "operations": ["CreateLogGroup", "CreateLogStream"]
    }));
    let (tcp, lf) = start_tcp(
        &proxy.endpoint(),
        "format = \"message\"\nmax_backoff = \"500ms\"\n",
    );
    tcp_send(tcp, b"survives create faults\n");
    // Each of the three create calls gets through only 10% of the time: give it room (it once
    // took over a minute), the assertion is unchanged.
    let got = wait_shipped(&moto, 1, Duration::from_secs(240));
    assert_eq!(got.len(), 1, "{}", lf.log());
}

#[test]
fn validate_reports_every_problem_with_file_line_and_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[sources.s]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:x\"\n\n[sinks.c]\ntype = \"cloudwatch_logs\"\ninputs = [\"s\"]\nlog_group = \"g\"\nretention_days = 10\n",
    )
    .expect("write");
    let validate = || {
        Command::new(env!("CARGO_BIN_EXE_logferry"))
            .args(["validate", "--config"])
            .arg(&path)
            .output()
            .expect("run")
    };
    let out = validate();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    assert!(
        err.contains(&format!("{p}:3: sources.s.address: ")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{p}:9: sinks.c.retention_days: 10 is not")),
        "{err}"
    );
    std::fs::write(&path, "[sources.s]\ntype = \"stdin\"\n[sinks.c]\ntype = \"cloudwatch_logs\"\ninputs = [\"s\"]\nlog_group = \"g\"\n").expect("write");
    let out = validate();
    assert!(out.status.success(), "{}", printed(&out));
}

#[test]
fn many_streams_with_requests_in_flight_each_get_exactly_their_lines() {
    // Slow answers keep requests in flight across streams. The streams exist already: creating
    // them is paced (0.5 calls/s at first) and would hand them to the sink one by one.
    let (moto, proxy) = moto_behind_faulty_proxy(
        serde_json::json!({"latency_ms": 400, "operations": ["PutLogEvents"]}),
    );
    let (streams, per) = (12, 800);
    cwl_testkit::create_group(&moto.endpoint(), "/test/streams").expect("group");
    for st in 0..streams {
        cwl_testkit::create_stream(&moto.endpoint(), "/test/streams", &format!("app{st:02}"))
            .expect("stream");
    }
    let tcp = free_port();
    let sink = cw_sink(&["in"], "/test/streams", "{identifier}", &proxy.endpoint())
        .format("message")
        .line("max_batch_events = 50");
    let lf = Logferry::start(&pipeline(&tcp_source(tcp), &sink));
    lf.wait_listening(1);
    let lines: String = (0..streams * per)
        .map(|i| format!("<14>1 - h app{:02} - - - line {i:05}\n", i % streams))
        .collect();
    tcp_send(tcp, lines.as_bytes());
    for st in 0..streams {
        let name = format!("app{st:02}");
        let got = wait_events(&moto.endpoint(), "/test/streams", &name, per, WAIT);
        let ids: BTreeSet<usize> = got
            .iter()
            .filter_map(|(_, m)| m.strip_prefix("line ")?.parse().ok())
            .collect();
        assert_eq!(got.len(), per, "{name}: duplicates or strays\n{}", lf.log());
        assert!(
            ids.len() == per && ids.iter().all(|i| i % streams == st),
            "{name}: {} distinct, some not its own",
            ids.len()
        );
    }
    // More than 4 streams had requests in flight at once (the proxy counts them as it
    // holds them): the test ran what its name says, not one stream after another.
    let stats = proxy.stats().expect("proxy stats");
    let parallel = stats["put_streams_in_flight_max"].as_u64().unwrap_or(0);
    eprintln!("{parallel} of {streams} streams had requests in flight at once");
    assert!(parallel > 4, "at most {parallel} streams in flight at once");
    assert_no_violations(&proxy);
}
