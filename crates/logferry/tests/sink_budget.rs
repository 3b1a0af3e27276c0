//! End to end: the sink's one budget (`max_held_bytes`) bounds what it holds across all
//! streams, requests being built, ready and in flight together. Many container streams with a
//! backlog each, behind an endpoint slow to answer, keep the sink at its budget for the whole
//! run; it must never hold more than the budget plus one event, and still deliver every line
//! once, in order.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::*;

const GROUP: &str = "/k8s/budget";
const PODS: usize = 30;
const LINES: usize = 1_000;
const BUDGET: usize = 1 << 20;

/// `pod07 000042 xxxx…`: numbered, about 220 bytes.
fn line(pod: usize, i: usize) -> String {
    format!("pod{pod:02} {i:06} {}", "x".repeat(205))
}

#[test]
fn many_streams_with_a_backlog_never_hold_more_than_the_budget() {
    let (moto, proxy) =
        moto_behind_faulty_proxy(json!({ "latency_ms": 100, "operations": ["PutLogEvents"] }));
    let root = tempfile::tempdir().expect("tmp");
    let pods = root.path().join("var/log/pods");
    // Distinct milliseconds in the past, so CloudWatch's order is each file's.
    let base = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64
        - 600_000;
    cwl_testkit::client::create_group(&moto.endpoint(), GROUP).expect("group");
    let mut longest = 0;
    for pod in 0..PODS {
        let name = format!("pod{pod:02}");
        // The streams exist: creating them is paced, a start-up cost this test is not about.
        cwl_testkit::client::create_stream(&moto.endpoint(), GROUP, &format!("{name}.app"))
            .expect("stream");
        let mut text = String::new();
        for i in 0..LINES {
            let at = UNIX_EPOCH + Duration::from_millis(base + i as u64);
            let msg = line(pod, i);
            longest = longest.max(msg.len());
            text.push_str(&format!(
                "{} stdout F {msg}\n",
                humantime::format_rfc3339_nanos(at)
            ));
        }
        append(&pod_log(&pods, "budget", &name, "app"), &text);
    }
    let sources = source(
        "k",
        "kubernetes_logs",
        &format!("include = [\"{}/*/*/*.log\"]", pods.display()),
    );
    let sink = cw_sink(&["k"], GROUP, "{pod}.{container}", &proxy.endpoint())
        .format("message")
        .line(&format!("max_held_bytes = {BUDGET}"));
    let (lf, metrics) = start_with_metrics(&pipeline(&sources, &sink));
    let total = (PODS * LINES) as f64;
    let delivered = wait_until(Duration::from_secs(180), || {
        metric(&metrics, "logferry_sink_events_delivered_total", &[]) == Some(total)
    });
    assert!(delivered, "not every line was delivered:\n{}", lf.log());
    let peak = metric(&metrics, "logferry_sink_held_bytes_peak", &[]).expect("peak exported");
    eprintln!(
        "{} bytes of lines, peak held {peak} bytes, budget {BUDGET}",
        PODS * LINES * (longest + 26)
    );
    // Intake stops within a chunk as soon as the budget is reached: one event past it at most.
    assert!(
        peak <= (BUDGET + longest + 26) as f64,
        "the sink held {peak} bytes, over its budget of {BUDGET}"
    );
    // Otherwise the budget was never what bounded the run, and this test proves nothing.
    assert!(
        peak >= (BUDGET / 2) as f64,
        "the sink held at most {peak} bytes: the backlog never reached the budget"
    );
    for pod in 0..PODS {
        let stream = format!("pod{pod:02}.app");
        let got = wait_events(
            &moto.endpoint(),
            GROUP,
            &stream,
            LINES,
            Duration::from_secs(60),
        );
        let texts: Vec<String> = got.into_iter().map(|(_, text)| text).collect();
        let want: Vec<String> = (0..LINES).map(|i| line(pod, i)).collect();
        assert_eq!(texts, want, "{stream}: lost, repeated or out of order");
    }
    assert_no_violations(&proxy);
}
