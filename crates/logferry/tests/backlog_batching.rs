//! A backlog on one stream goes out in full requests. With requests slow to answer (cwl-proxy
//! adds latency) and one stream's requests sharing their timestamps (so they go one at a time),
//! what the sink holds reaches its cap; it must then wait for its ready requests to go, not
//! cut each new chunk into a request of its own (it did: 34 events a request, 27,000 events/s
//! on one syslog stream into a fast endpoint).

mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const LINES: usize = 150_000;

#[test]
fn a_backlog_past_the_sinks_cap_goes_out_in_full_requests() {
    let (_moto, proxy) =
        moto_behind_faulty_proxy(json!({ "latency_ms": 200, "operations": ["PutLogEvents"] }));
    let port = free_port();
    let sources = syslog_source("in", "tcp", port, "");
    let sink = cw_sink(&["in"], "/backlog", "one", &proxy.endpoint()).format("message");
    let (lf, metrics) = start_with_metrics(&pipeline(&sources, &sink));
    lf.wait_listening(1);
    // About 21 MB in one stream, all in the same second: more than the 16 MiB the sink holds.
    let mut data = String::with_capacity(LINES * 150);
    for i in 0..LINES {
        data.push_str(&format!(
            "<30>1 2026-12-03T08:00:00.000Z node-1 kubelet 2174 - - line {i:07} SyncLoop pod=\"kube-system/coredns-{i}\" with some padding to a typical size\n"
        ));
    }
    ncat_send(
        &["--send-only", "127.0.0.1", &port.to_string()],
        data.as_bytes(),
    );
    let delivered = wait_until(Duration::from_secs(300), || {
        metric(&metrics, "logferry_sink_events_delivered_total", &[]) == Some(LINES as f64)
    });
    assert!(delivered, "not every line was delivered:\n{}", lf.log());
    let requests = metric(&metrics, "logferry_sink_events_per_request_count", &[])
        .expect("events per request exported");
    let per_request = LINES as f64 / requests;
    let budget_flushes =
        metric(&metrics, "logferry_sink_budget_flushes_total", &[]).expect("budget flushes");
    eprintln!(
        "{LINES} lines in {requests} requests ({per_request:.0} events each), {budget_flushes} budget flushes"
    );
    // A full request holds about 6,500 of these lines (1 MiB); the bound leaves room for the
    // batch timeout's partial requests at the start and the end.
    assert!(
        per_request >= 2_000.0,
        "{per_request:.0} events per request: the backlog was cut into small requests"
    );
    assert_no_violations(&proxy);
}
