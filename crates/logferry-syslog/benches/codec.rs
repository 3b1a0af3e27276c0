//! Framing + parsing throughput on short lines, reported by criterion as lines/s
//! ("elements/s"). The shipper's budget is ~3 µs per event end to end, so this path should
//! stay well above 2 million lines/s on one core.
//!
//! Two groups measure the same work: `frame+parse` in wall-clock time (criterion's default)
//! and `frame+parse-cpu` in CPU time of the benchmarking thread, read from
//! `/proc/thread-self/schedstat` (Linux). The latter is the per-core figure to quote on a
//! shared, busy machine, where wall-clock time also counts time spent descheduled.

use std::time::Duration;

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use logferry_syslog::{parse, Framer, ParseOptions};

const LINES: usize = 10_000;

fn stream(kind: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..LINES {
        match kind {
            "rfc3164" => out.extend_from_slice(
                format!("<30>Nov 25 16:20:{:02} node-1 sshd[{}]: Accepted publickey for core from 10.0.0.{} port 52814 ssh2\n", i % 60, 900 + i % 100, i % 250).as_bytes(),
            ),
            "rfc5424" => {
                let msg = format!("<165>1 2026-11-25T16:20:{:02}.{:06}Z web-{} nginx {} ACCESS [meta@32473 req=\"{}\" st=\"200\"] GET /api/v1/items 200 512", i % 60, i, i % 8, 800 + i % 50, i);
                out.extend_from_slice(format!("{} {}", msg.len(), msg).as_bytes());
            }
            _ => out.extend_from_slice(
                format!("Nov 25 16:20:{:02} node-1 kubelet[2174]: I1125 16:20:39.{:06}    2174 kubelet.go:2415] \"SyncLoop (PLEG): event for pod\"\n", i % 60, i).as_bytes(),
            ),
        }
    }
    out
}

const KINDS: [&str; 3] = ["rfc3164", "rfc5424", "journalctl-short"];

/// One pass over the whole stream: one copy in, as a socket read would do, then zero-copy
/// frames, each parsed.
fn frame_and_parse(framer: &mut Framer, input: &[u8], opts: &ParseOptions) -> usize {
    let mut buf = BytesMut::from(input);
    let mut n = 0usize;
    while let Some(frame) = framer.decode(&mut buf) {
        let m = parse(&frame.data, opts);
        n += m.message.len() + usize::from(m.timestamp_unix_ms.is_some());
    }
    assert!(n > 0);
    n
}

/// CPU time consumed so far by the calling thread.
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = stat
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn codec(c: &mut Criterion) {
    let opts = ParseOptions {
        now_unix_ms: 1_795_623_639_000,
        local_utc_offset_secs: 0,
    };
    // The same work timed twice: wall-clock, then this thread's CPU time (see the module doc).
    for (name, cpu_time) in [("frame+parse", false), ("frame+parse-cpu", true)] {
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(LINES as u64));
        for kind in KINDS {
            let input = stream(kind);
            group.bench_with_input(BenchmarkId::from_parameter(kind), &input, |b, input| {
                let mut framer = Framer::default();
                if !cpu_time {
                    b.iter(|| black_box(frame_and_parse(&mut framer, input, &opts)));
                    return;
                }
                b.iter_custom(|iters| {
                    let start = thread_cpu_time();
                    for _ in 0..iters {
                        black_box(frame_and_parse(&mut framer, input, &opts));
                    }
                    thread_cpu_time().saturating_sub(start)
                });
            });
        }
        group.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
