//! Operator experience, end to end: metrics scraped over HTTP, health that notices a stuck
//! pipeline (CloudWatch held down or refusing by the fault proxy), `check`, `tail`, and SIGHUP
//! reload.

mod support;

use std::process::Command;
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn config(port: u16, endpoint: &str, group: &str) -> String {
    let sink = cw_sink(&["in"], group, "s", endpoint)
        .format("message")
        .batch_timeout("100ms")
        .max_backoff("500ms");
    let settings = "shutdown_grace = \"5s\"\nhealth_stuck_after = \"2s\"";
    pipeline_with(settings, &syslog_source("in", "tcp", port, ""), &sink)
}

/// The value of the series `name{labels}` in `text`, which must be valid Prometheus text.
fn metric(text: &str, series: &str) -> Option<f64> {
    prometheus::Exposition::parse(text)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{text}"))
        .get(series)
}

#[test]
fn metrics_count_what_was_shipped_and_billed() {
    let moto = Moto::start().expect("moto");
    let port = free_port();
    let (lf, maddr) = start_with_metrics(&config(port, &moto.endpoint(), "/ops/metrics"));
    lf.wait_listening(1);
    let lines: Vec<String> = (0..100).map(|i| format!("metric line {i}")).collect();
    let billed: usize = lines.iter().map(|l| l.len() + 26).sum();
    tcp_send(
        port,
        lines
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
            .as_bytes(),
    );
    wait_events(&moto.endpoint(), "/ops/metrics", "s", 100, WAIT);
    let mut text = String::new();
    let ok = wait_until(WAIT, || {
        text = http_get(&maddr, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        metric(&text, "logferry_sink_events_delivered_total{sink=\"cw\"}") == Some(100.0)
    });
    assert!(ok, "{text}");
    assert_eq!(
        metric(&text, "logferry_sink_billed_bytes_total{sink=\"cw\"}"),
        Some(billed as f64)
    );
    assert_eq!(
        metric(
            &text,
            "logferry_source_events_total{source=\"in\",type=\"syslog\"}"
        ),
        Some(100.0)
    );
    assert!(
        metric(
            &text,
            "logferry_sink_put_latency_seconds_count{sink=\"cw\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        metric(
            &text,
            "logferry_sink_events_dead_lettered_total{sink=\"cw\",reason=\"too_old\"}"
        ),
        Some(0.0)
    );
    assert!(metric(
        &text,
        "logferry_spool_records_pending{source=\"in\",type=\"syslog\"}"
    )
    .is_some());
    assert!(
        !text.contains("planted-secret"),
        "a secret reached the metrics"
    );
    assert_eq!(http_get(&maddr, "/health").map(|r| r.0), Some(200));
    assert_eq!(http_get(&maddr, "/ready").map(|r| r.0), Some(200));
}

/// Two spooled TCP sources, a plain UDP one and a file source, feeding three sinks: every
/// per-source and per-sink family has several samples, which is what used to split families
/// (one header, samples interleaved with other families'). The exposition must pass the strict
/// parser of `support::prometheus`, and `promtool check metrics`' lint (names, help, types).
/// promtool alone would not do: its parser merges a family's scattered samples by name, and it
/// accepted the split families of the old output.
/// Two spooled TCP sources (`tcp_a`, `tcp_b`), a plain UDP one and a file source (`files`,
/// reading `logs`/app.log), feeding three sinks `cw_a`, `cw_b`, `cw_c`; started with metrics,
/// lines sent to each TCP source and everything delivered.
struct Many {
    lf: Logferry,
    maddr: String,
    _moto: Moto,
    _logs: tempfile::TempDir,
}

fn start_many_sources_and_sinks() -> Many {
    let moto = Moto::start().expect("moto");
    let (tcp_a, tcp_b, udp) = (free_port(), free_port(), free_port());
    let logs = tempfile::tempdir().expect("tempdir");
    let endpoint = moto.endpoint();
    let sink = |name: &str, inputs: &[&str]| {
        cw_sink(inputs, &format!("/ops/many/{name}"), "s", &endpoint)
            .named(name)
            .format("message")
            .batch_timeout("100ms")
    };
    let config = format!(
        r#"
data_dir = "@DATA@"
shutdown_grace = "5s"

[sources.tcp_a]
type = "syslog"
address = "tcp://127.0.0.1:{tcp_a}"

[sources.tcp_b]
type = "syslog"
address = "tcp://127.0.0.1:{tcp_b}"

[sources.udp]
type = "syslog"
address = "udp://127.0.0.1:{udp}"
spool = false

[sources.files]
type = "file"
include = ["{logs}/*.log"]
start = "beginning"
rescan_interval = "200ms"

{a}
{b}
{c}"#,
        logs = logs.path().display(),
        a = sink("cw_a", &["tcp_a", "udp", "files"]),
        b = sink("cw_b", &["tcp_b", "files"]),
        c = sink("cw_c", &["tcp_a", "tcp_b"]),
    );
    std::fs::write(logs.path().join("app.log"), "file line 1\nfile line 2\n").expect("log");
    let (lf, maddr) = start_with_metrics(&config);
    lf.wait_listening(3);
    tcp_send(tcp_a, b"a 1\na 2\n");
    tcp_send(tcp_b, b"b 1\n");
    // cw_a: tcp_a's 2 + the file's 2; cw_b: tcp_b's 1 + the file's 2; cw_c: 2 + 1.
    let delivered = wait_until(WAIT, || {
        [("cw_a", 4.0), ("cw_b", 3.0), ("cw_c", 3.0)]
            .iter()
            .all(|(sink, n)| {
                let sink = format!("sink=\"{sink}\"");
                support::metric(&maddr, "logferry_sink_events_delivered_total", &[&sink])
                    == Some(*n)
            })
    });
    assert!(delivered, "{}", lf.log());
    Many {
        lf,
        maddr,
        _moto: moto,
        _logs: logs,
    }
}

#[test]
fn metrics_of_many_sources_and_sinks_are_well_formed() {
    let many = start_many_sources_and_sinks();
    let (_, text) = http_get(&many.maddr, "/metrics").expect("scrape");
    let exposition = prometheus::Exposition::parse(&text)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{text}"));
    let count = |family: &str| exposition.family(family).map_or(0, |f| f.samples.len());
    // The families of the defect, each whole under one header, one series per sink or spool.
    for family in [
        "logferry_sink_oldest_unsent_seconds",
        "logferry_sink_events_dropped_total",
    ] {
        assert_eq!(count(family), 3, "{family}\n{text}");
    }
    assert_eq!(count("logferry_sink_events_dead_lettered_total"), 3 * 4);
    assert!(
        count("logferry_sink_put_latency_seconds") >= 3 * 3,
        "{text}"
    );
    for family in [
        "logferry_spool_bytes",
        "logferry_spool_oldest_pending_seconds",
        "logferry_spool_records_pending",
    ] {
        assert_eq!(
            count(family),
            2,
            "{family}: tcp_a and tcp_b are spooled\n{text}"
        );
    }
    assert_eq!(count("logferry_source_events_total"), 4, "{text}");
    assert_eq!(
        exposition.get(r#"logferry_source_events_total{source="files",type="file"}"#),
        Some(2.0)
    );

    let out = output_fed(
        Command::new("promtool").args(["check", "metrics"]),
        text.as_bytes(),
    )
    .expect("promtool (Debian package prometheus; scripts/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "promtool check metrics: {}\n{text}",
        printed(&out)
    );
}

/// Every line a source or a sink logs names it through its span, including the lines of the
/// tasks and threads it spawns: the file source's reader thread ("following file"), the sinks'
/// request tasks ("created log group"), the listeners ("listening").
#[test]
fn log_lines_carry_the_source_or_sink_they_come_from() {
    let many = start_many_sources_and_sinks();
    let lines: Vec<serde_json::Value> = many
        .lf
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let spans_of = |message: &str, key: &str| -> Vec<String> {
        let mut names: Vec<String> = lines
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .map(|l| l["span"][key].as_str().unwrap_or("(none)").to_string())
            .collect();
        names.sort();
        names.dedup();
        names
    };
    assert_eq!(
        spans_of("created log group", "sink"),
        ["cw_a", "cw_b", "cw_c"],
        "request tasks log in their sink's span\n{}",
        many.lf.log()
    );
    assert_eq!(spans_of("following file", "source"), ["files"]);
    assert_eq!(spans_of("following file", "type"), ["file"]);
    assert_eq!(spans_of("listening", "source"), ["tcp_a", "tcp_b", "udp"]);
}
#[test]
fn health_notices_a_stuck_pipeline_and_says_why() {
    let (moto, proxy) = moto_behind_proxy();
    let port = free_port();
    let (lf, maddr) = start_with_metrics(&config(port, &proxy.endpoint(), "/ops/health"));
    lf.wait_listening(1);
    tcp_send(port, b"first\n");
    wait_events(&moto.endpoint(), "/ops/health", "s", 1, WAIT);

    // CloudWatch held down: not ready (and why); liveness stays green, a restart cannot help.
    proxy
        .set_faults(&serde_json::json!({"outage": true}))
        .expect("faults");
    tcp_send(port, b"held during the outage\n");
    let mut ready = (0, String::new());
    assert!(
        wait_until(WAIT, || {
            ready = http_get(&maddr, "/ready").unwrap_or_default();
            ready.0 == 503
        }),
        "never unready: {ready:?}"
    );
    assert!(ready.1.contains("oldest unsent event"), "{ready:?}");
    assert_eq!(http_get(&maddr, "/health").map(|r| r.0), Some(200));

    // CloudWatch answers but refuses everything: the agent is stuck while the service is there.
    proxy
        .set_faults(&serde_json::json!({"throttle_pct": 100}))
        .expect("faults");
    let mut health = (0, String::new());
    assert!(
        wait_until(WAIT, || {
            health = http_get(&maddr, "/health").unwrap_or_default();
            health.0 == 503
        }),
        "never unhealthy: {health:?}\n{}",
        lf.log()
    );
    assert!(
        health.1.contains("Throttling") || health.1.contains("throttled"),
        "{health:?}"
    );

    // Recovery: everything delivered, healthy and ready again.
    proxy.clear_faults().expect("clear");
    wait_events(&moto.endpoint(), "/ops/health", "s", 2, WAIT);
    assert!(wait_until(WAIT, || http_get(&maddr, "/ready").map(|r| r.0)
        == Some(200)));
    assert_eq!(http_get(&maddr, "/health").map(|r| r.0), Some(200));
}

fn run_check(
    config_text: &str,
    args: &[&str],
    adjust: impl FnOnce(&mut Command),
) -> (bool, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let path = write_config(dir.path(), "c.toml", config_text);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.arg("check").arg("--config").arg(&path).args(args);
    aws_env(&mut cmd);
    adjust(&mut cmd);
    let out = cmd.output().expect("run check");
    (out.status.success(), printed(&out))
}

#[test]
fn check_explains_each_failure_and_never_prints_secrets() {
    let moto = Moto::start().expect("moto");
    let cfg = config(free_port(), &moto.endpoint(), "/ops/check");

    let (ok, out) = run_check(&cfg, &["--write"], |_| {});
    assert!(ok, "{out}");
    assert!(
        out.contains("ok    sink cw credentials: found, supplied by EnvironmentVariable"),
        "{out}"
    );
    assert!(
        out.contains("/ops/check does not exist yet; logferry will create it"),
        "{out}"
    );
    assert!(
        out.contains("ok    sink cw write: put one event in /ops/check"),
        "{out}"
    );
    assert!(
        !out.contains("planted-secret-do-not-log") && !out.contains("AKIDTESTING"),
        "{out}"
    );

    let (ok, out) = run_check(&cfg, &[], |cmd| {
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
    });
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  sink cw credentials"), "{out}");
    assert!(out.contains("fix: set AWS_ACCESS_KEY_ID"), "{out}");

    let dead = format!("http://127.0.0.1:{}", free_port());
    let (ok, out) = run_check(&config(free_port(), &dead, "/ops/check"), &[], |_| {});
    assert!(!ok, "{out}");
    assert!(
        out.contains("FAIL  sink cw endpoint: cannot reach CloudWatch Logs"),
        "{out}"
    );

    let strict = cfg.replace("/ops/check", "/ops/not-there").replace(
        "batch_timeout",
        "create_missing_group = false\nbatch_timeout",
    );
    let (ok, out) = run_check(&strict, &[], |_| {});
    assert!(!ok, "{out}");
    assert!(
        out.contains("does not exist and create_missing_group = false"),
        "{out}"
    );
}

#[test]
fn tail_prints_what_would_be_sent_and_sends_nothing() {
    let moto = Moto::start().expect("moto");
    let dir = tempfile::tempdir().expect("tmp");
    let text = config(free_port(), &moto.endpoint(), "/ops/{identifier}")
        .replace(
            "type = \"syslog\"\naddress = \"tcp://127.0.0.1",
            "type = \"stdin\"\n# address = \"tcp://127.0.0.1",
        )
        .replace("format = \"message\"", "format = \"short\"");
    let path = write_config(dir.path(), "c.toml", &text);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.args(["tail", "--config"]).arg(&path);
    aws_env(&mut cmd);
    let line = b"<13>Nov 25 16:20:39 node-1 kubelet[7]: tailed line\n";
    let out = output_fed(&mut cmd, line).expect("tail");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("/ops/kubelet s Nov 25 16:20:39 node-1 kubelet[7]: tailed line"),
        "{stdout}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let groups = cwl_testkit::client::list_groups(&moto.endpoint()).expect("list groups");
    assert!(groups.is_empty(), "tail sent to CloudWatch: {groups:?}");
}

#[test]
fn sighup_reloads_a_good_config_and_keeps_the_old_on_a_bad_one() {
    let moto = Moto::start().expect("moto");
    let port = free_port();
    let mut lf = Logferry::start(&config(port, &moto.endpoint(), "/ops/one"));
    lf.wait_listening(1);
    tcp_send(port, b"to one\n");
    wait_events(&moto.endpoint(), "/ops/one", "s", 1, WAIT);
    let text = std::fs::read_to_string(&lf.config_path).expect("read");
    std::fs::write(&lf.config_path, text.replace("/ops/one", "/ops/two")).expect("write");
    lf.sighup();
    lf.wait_listening(2);
    tcp_send(port, b"to two\n");
    assert_eq!(
        wait_events(&moto.endpoint(), "/ops/two", "s", 1, WAIT).len(),
        1,
        "{}",
        lf.log()
    );
    // A broken file is refused; the running pipeline goes on.
    std::fs::write(&lf.config_path, "this is [not toml").expect("write");
    lf.sighup();
    assert!(
        wait_until(WAIT, || lf.log().contains("keeping the running one")),
        "{}",
        lf.log()
    );
    tcp_send(port, b"still to two\n");
    assert_eq!(
        wait_events(&moto.endpoint(), "/ops/two", "s", 2, WAIT).len(),
        2,
        "{}",
        lf.log()
    );
    assert_eq!(events(&moto.endpoint(), "/ops/one", "s").len(), 1);
    let status = lf.terminate();
    assert!(status.success());
}
