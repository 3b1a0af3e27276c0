//! Order within a stream, end to end: many events sharing a few timestamps, cut into small
//! requests that are in flight at once, reach CloudWatch (moto behind `cwl-proxy`, whose
//! random latency lets a later request overtake an earlier one) and read back by
//! GetLogEvents in the order they were sent. CloudWatch orders a stream by timestamp and
//! equal timestamps by ingestion, so the sink must not let two requests sharing a timestamp
//! be in flight together (`sink/mod.rs`, "Order"); requests with distinct timestamps still
//! overlap.

mod support;

use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(180);
const GROUP: &str = "/order/test";

/// `n` RFC 5424 lines `order {i:05}` from `first`, their timestamps `start + i / per_ms` ms.
fn lines(first: usize, n: usize, start: i64, per_ms: usize) -> Vec<u8> {
    (first..first + n)
        .flat_map(|i| {
            let ts = start + ((i - first) / per_ms) as i64;
            format!("<14>1 {} h app - - - order {i:05}\n", rfc3339(ts)).into_bytes()
        })
        .collect()
}

/// The index of the first message out of place, and what was there instead.
fn first_out_of_order(got: &[(i64, String)], first: usize) -> Option<(usize, String)> {
    got.iter()
        .enumerate()
        .find_map(|(k, (_, m))| (*m != format!("order {:05}", first + k)).then(|| (k, m.clone())))
}

#[test]
fn equal_timestamps_keep_arrival_order_across_concurrent_requests() {
    // 5..60 ms per PutLogEvents, drawn per request: without the rule, a later request with the
    // same timestamps regularly reaches moto first.
    let (moto, proxy) = moto_behind_faulty_proxy(serde_json::json!({
        "latency_ms": 5,
        "latency_jitter_ms": 55,
        "operations": ["PutLogEvents"],
    }));
    let port = free_port();
    let sources = format!("[sources.s]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\n");
    // Requests of 10 events, 8 in flight per stream; a 20 ms max_backoff starts the governor at
    // 50 calls/s, so budget does not keep requests from overlapping.
    let sink = cw_sink(&["s"], GROUP, "s", &proxy.endpoint())
        .format("message")
        .max_backoff("20ms")
        .line("max_batch_events = 10\nstream_concurrency = 8\nmax_in_flight = 8");
    let lf = Logferry::start(&pipeline(&sources, &sink));
    lf.wait_listening(1);
    let start = now_ms() - 600_000;

    // 2,331 events on 7 timestamps (333 each, so some requests span two of them).
    let ties = 2331;
    tcp_send(port, &lines(0, ties, start, 333));
    let got = wait_events(&moto.endpoint(), GROUP, "s", ties, WAIT);
    assert_eq!(got.len(), ties, "duplicates or strays\n{}", lf.log());
    if let Some((k, m)) = first_out_of_order(&got, 0) {
        panic!(
            "event {k} read back is {m:?}, not \"order {k:05}\": equal timestamps interleaved \
             across requests\n{:#}",
            proxy.puts().expect("puts")
        );
    }
    assert_no_violations(&proxy);

    // Distinct timestamps, one per millisecond: no two requests share one, so the stream's
    // requests are in flight together (the rule does not serialise them).
    proxy.reset_stats().expect("reset");
    let distinct = 2000;
    tcp_send(port, &lines(ties, distinct, start + 1000, 1));
    let got = wait_events(&moto.endpoint(), GROUP, "s", ties + distinct, WAIT);
    assert_eq!(got.len(), ties + distinct, "duplicates or strays");
    if let Some((k, m)) = first_out_of_order(&got, 0) {
        panic!("event {k} read back is {m:?}, not \"order {k:05}\"");
    }
    let stats = proxy.stats().expect("stats");
    let overlap = stats["put_concurrency_max"][format!("{GROUP}/s")]
        .as_u64()
        .expect("put_concurrency_max of the stream");
    assert!(
        overlap > 1,
        "requests with distinct timestamps went one at a time: {stats:#}"
    );
    assert_no_violations(&proxy);
}
