//! End to end: fairness between containers, the real logferry binary reading kubelet-style pod
//! log directories, a real moto_server read back. A container with a large backlog does not
//! delay its quiet neighbours (files are read round-robin, a stream per container goes in
//! requests of its own), and a container over `max_container_bytes_per_second` is paused, not
//! cut.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use support::*;

const GROUP: &str = "/k8s/fair";
const WAIT: Duration = Duration::from_secs(180);
const BACKLOG: usize = 150_000;
const QUIET: usize = 10;
/// Rounds of quiet lines, four a second.
const ROUNDS: usize = 32;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
}

/// One CRI `F` line at `at_ms`.
fn cri(at_ms: u64, text: &str) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(at_ms);
    format!("{} stdout F {text}\n", humantime::format_rfc3339_nanos(at))
}

/// A `kubernetes_logs` source `k` over `pods` with `extra` lines, a stream per container.
fn config(pods: &Path, extra: &str, endpoint: &str) -> String {
    let lines = format!(
        "include = [\"{}/*/*/*.log\"]\nrescan_interval = \"500ms\"\n{extra}",
        pods.display()
    );
    pipeline(
        &source("k", "kubernetes_logs", &lines),
        &cw_sink(&["k"], GROUP, "{pod}.{container}", endpoint).format("message"),
    )
}

fn start(pods: &Path, extra: &str, endpoint: &str) -> (Logferry, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let a = addr.clone();
    let lf = Logferry::start_with(&config(pods, extra, endpoint), move |c| {
        c.env("LOGFERRY_METRICS_ADDRESS", &a);
    });
    (lf, addr)
}

/// `loud 000042 xxxx…`: numbered, about 200 bytes.
fn loud_line(i: usize) -> String {
    format!("loud {i:06} {}", "x".repeat(190))
}

#[test]
fn quiet_containers_are_not_delayed_by_a_loud_containers_backlog() {
    let moto = Moto::start().expect("moto");
    let root = tempfile::tempdir().expect("tmp");
    let pods = root.path().join("var/log/pods");
    let loud = pod_log(&pods, "fair", "loud", "app");
    // Distinct milliseconds in the past, so CloudWatch's order is the file's.
    let base = now_ms() - 600_000;
    let mut backlog = String::with_capacity(BACKLOG * 250);
    for i in 0..BACKLOG {
        backlog.push_str(&cri(base + i as u64, &loud_line(i)));
    }
    append(&loud, &backlog);
    drop(backlog);
    let quiet: Vec<PathBuf> = (0..QUIET)
        .map(|q| pod_log(&pods, "fair", &format!("quiet{q}"), "app"))
        .collect();
    // The streams exist, as on a node that has run for a while: creating them is paced (one
    // every ~2 s at first), a start-up cost this test is not about.
    cwl_testkit::client::create_group(&moto.endpoint(), GROUP).expect("group");
    for stream in
        std::iter::once("loud.app".to_string()).chain((0..QUIET).map(|q| format!("quiet{q}.app")))
    {
        cwl_testkit::client::create_stream(&moto.endpoint(), GROUP, &stream).expect("stream");
    }
    // No rate: round-robin reading alone must keep the quiet lines moving. (With
    // `max_container_bytes_per_second = 1000000` the median drops from ~2 s to ~0.5 s: the loud
    // lines no longer queue in the sink ahead of them.)
    let (lf, metrics) = start(&pods, "", &moto.endpoint());
    let delivered = || metric(&metrics, "logferry_sink_events_delivered_total", &[]).unwrap_or(0.0);

    // Four lines a second from each quiet container for 8 s, each stamped with its write time
    // (so some are written while the backlog drains, however fast it goes: it takes about 3 s
    // into moto); every quiet stream polled for its arrival meanwhile.
    let mut written: BTreeMap<String, u64> = BTreeMap::new();
    let mut arrived: BTreeMap<String, u64> = BTreeMap::new();
    let mut backlog_done_at = None;
    let started = Instant::now();
    let mut next_write = started;
    let mut round = 0;
    let mut quiet_lines_during_backlog = 0;
    while started.elapsed() < Duration::from_secs(60) {
        if round < ROUNDS && Instant::now() >= next_write {
            for (q, path) in quiet.iter().enumerate() {
                let text = format!("quiet{q} {round}");
                let at = now_ms();
                append(path, &cri(at, &text));
                written.insert(text, at);
            }
            round += 1;
            next_write += Duration::from_millis(250);
        }
        for q in 0..QUIET {
            for (_, text) in events(&moto.endpoint(), GROUP, &format!("quiet{q}.app")) {
                arrived.entry(text).or_insert_with(now_ms);
            }
        }
        // Delivered counts quiet events too; the backlog is done once all of it could be in.
        if backlog_done_at.is_none() && delivered() >= BACKLOG as f64 {
            backlog_done_at = Some(now_ms());
        }
        if round == ROUNDS && arrived.len() == written.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut latencies = Vec::new();
    for (text, at) in &written {
        let got = arrived
            .get(text)
            .unwrap_or_else(|| panic!("`{text}` never arrived\n{}", lf.log()));
        if backlog_done_at.is_none_or(|done| *got < done) {
            quiet_lines_during_backlog += 1;
        }
        latencies.push((got - at, text.clone()));
    }
    let mut by_round: BTreeMap<usize, u64> = BTreeMap::new();
    for (ms, text) in &latencies {
        let round: usize = text
            .rsplit(' ')
            .next()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let worst = by_round.entry(round).or_default();
        *worst = (*worst).max(*ms);
    }
    eprintln!("worst quiet-line latency by round (four a second): {by_round:?}");
    latencies.sort();
    let (worst, worst_text) = latencies.last().cloned().expect("lines");
    let median = latencies[latencies.len() / 2].0;
    eprintln!(
        "quiet-line latency: median {median} ms, worst {worst} ms (`{worst_text}`); \
         {quiet_lines_during_backlog} of {} arrived while the backlog drained",
        latencies.len(),
    );
    assert!(
        quiet_lines_during_backlog >= QUIET * 4,
        "the backlog drained too soon to show anything: {quiet_lines_during_backlog} quiet lines \
         arrived while it drained"
    );
    assert!(
        worst <= 5000,
        "a quiet line waited {worst} ms behind the backlog (`{worst_text}`)\n{}",
        lf.log()
    );

    // Nothing lost, nothing repeated, in the file's order.
    let got = wait_distinct(&moto.endpoint(), GROUP, "loud.app", BACKLOG, WAIT);
    let texts: Vec<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    let want: Vec<String> = (0..BACKLOG).map(loud_line).collect();
    assert!(
        texts == want,
        "the backlog arrived incomplete, repeated or out of order"
    );
    drop(lf);
}

#[test]
fn a_container_over_its_rate_is_paused_not_cut() {
    let moto = Moto::start().expect("moto");
    let root = tempfile::tempdir().expect("tmp");
    let pods = root.path().join("var/log/pods");
    let limited = pod_log(&pods, "fair", "limited", "app");
    // 2,000 lines of about 92 bytes (CRI prefix included) at 20,000 B/s: one second's burst,
    // then about eight seconds more (unlimited, they are all in within ~3 s).
    let base = now_ms() - 60_000;
    let mut text = String::new();
    for i in 0..2000usize {
        let line = cri(base + i as u64, &format!("lim {i:06} {}", "y".repeat(40)));
        text.push_str(&line);
    }
    let total = text.len();
    assert!((170_000..210_000).contains(&total), "{total}");
    append(&limited, &text);
    let other = pod_log(&pods, "fair", "other", "app");
    append(&other, &cri(now_ms(), "unlimited neighbour"));
    let started = Instant::now();
    let (lf, metrics) = start(
        &pods,
        "max_container_bytes_per_second = 20000",
        &moto.endpoint(),
    );
    wait_events(&moto.endpoint(), GROUP, "other.app", 1, WAIT);
    let got = wait_distinct(&moto.endpoint(), GROUP, "limited.app", 2000, WAIT);
    let took = started.elapsed();
    let texts: BTreeSet<&str> = got.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 2000, "nothing lost");
    assert_eq!(got.len(), 2000, "nothing repeated");
    // (total - 20,000 burst) / 20,000 B/s ≈ 8 s of pauses, plus start-up and batch_timeout.
    let expected = Duration::from_secs_f64((total - 20_000) as f64 / 20_000.0);
    eprintln!("{total} bytes at 20,000 B/s: delivered in {took:?} (pauses alone {expected:?})");
    assert!(
        took >= expected && took < expected + Duration::from_secs(15),
        "took {took:?}, expected about {expected:?}"
    );
    let pauses = metric(
        &metrics,
        "logferry_file_rate_pauses_total",
        &["source=\"k\""],
    )
    .unwrap_or(0.0);
    // One pause per whole read (20,000 bytes here) beyond the burst.
    assert!(pauses >= 7.0, "pauses counted: {pauses}\n{}", lf.log());
}
