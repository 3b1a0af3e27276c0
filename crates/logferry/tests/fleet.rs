//! A fleet in one account: several real logferry processes, each shipping many container
//! streams, all behind one `cwl-proxy` that enforces account-wide quotas (one token bucket
//! per API shared by every client, as CloudWatch's quotas are per account and region) in front
//! of a real moto_server.
//!
//! The figures the fleet must keep (issue 14): nothing lost, at most 5% of PutLogEvents calls
//! throttled, at most 1.05 CreateLogStream calls per stream, the backlog drained within 30 s
//! after the writers stop. `bench/fleet.py` reports the same figures at other sizes.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::*;

const GROUP: &str = "/fleet";
/// logferry processes (nodes).
const NODES: usize = 6;
/// Container streams per node.
const PODS: usize = 25;
/// How long the writers run.
const WRITE_FOR: Duration = Duration::from_secs(60);
/// One line per pod per tick.
const TICK: Duration = Duration::from_millis(250);
/// The account's quotas, scaled down with the fleet (AWS: 5,000 and 50 calls/s).
const PUT_PER_SECOND: f64 = 20.0;
const CREATE_STREAM_PER_SECOND: f64 = 4.0;
const CREATE_GROUP_PER_SECOND: f64 = 2.0;

/// The CRI log file of pod `pod` on node `node`, under `root`.
fn pod_log(root: &Path, node: usize, pod: usize) -> PathBuf {
    root.join(format!(
        "n{node}/fleet_n{node}-p{pod:02}_00000000-0000-0000-0000-{node:06}{pod:06}/app/0.log"
    ))
}

fn node_config(root: &Path, node: usize, endpoint: &str) -> String {
    // The default batch_timeout (1 s), as a fleet would run.
    let sink = cw_sink(&["k"], GROUP, "{namespace}.{pod}", endpoint)
        .batch_timeout("1s")
        .format("message");
    format!(
        r#"
data_dir = "@DATA@"
shutdown_grace = "5s"

[sources.k]
type = "kubernetes_logs"
include = ["{}/*/*/*.log"]

{sink}"#,
        root.join(format!("n{node}")).display()
    )
}

/// What the proxy saw, as the issue states it.
#[derive(Debug)]
struct Figures {
    put_calls: u64,
    put_throttled: u64,
    create_stream_calls: u64,
    streams: usize,
    events_per_request: f64,
    drain: Duration,
}

impl Figures {
    fn throttled_share(&self) -> f64 {
        self.put_throttled as f64 / self.put_calls.max(1) as f64
    }

    fn creates_per_stream(&self) -> f64 {
        self.create_stream_calls as f64 / self.streams.max(1) as f64
    }
}

#[test]
fn fleet_stays_inside_the_account_quota_and_loses_nothing() {
    let (moto, proxy) = moto_behind_proxy();
    proxy
        .set_quota(&serde_json::json!({
            "PutLogEvents": {"per_second": PUT_PER_SECOND},
            "CreateLogStream": {"per_second": CREATE_STREAM_PER_SECOND},
            "CreateLogGroup": {"per_second": CREATE_GROUP_PER_SECOND},
        }))
        .expect("quota");
    let root = tempfile::tempdir().expect("tmp");
    let mut files: Vec<(String, File)> = Vec::new();
    for node in 0..NODES {
        for pod in 0..PODS {
            let path = pod_log(root.path(), node, pod);
            fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("pod log");
            files.push((format!("fleet.n{node}-p{pod:02}"), file));
        }
    }
    let nodes: Vec<Logferry> = (0..NODES)
        .map(|node| {
            Logferry::start_with(&node_config(root.path(), node, &proxy.endpoint()), |c| {
                c.env("NODE_NAME", format!("node-{node}"));
            })
        })
        .collect();

    // Every pod writes a numbered line per tick, as a fleet's containers do all the time.
    let started = Instant::now();
    let mut written = 0u64;
    let mut seq = 0u64;
    while started.elapsed() < WRITE_FOR {
        let ts = rfc3339(now_ms());
        for (stream, file) in &mut files {
            writeln!(file, "{ts} stdout F {stream} {seq:07}").expect("write");
            written += 1;
        }
        seq += 1;
        std::thread::sleep(TICK);
    }
    let stopped = Instant::now();
    let drained = wait_until(Duration::from_secs(240), || {
        proxy.stats().expect("stats")["put_events_ingested"]
            .as_u64()
            .unwrap_or(0)
            >= written
    });
    let drain = stopped.elapsed();
    let logs = || {
        nodes
            .iter()
            .map(Logferry::log)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(drained, "the backlog never drained\n{}", logs());

    let stats = proxy.stats().expect("stats");
    let puts = proxy.puts().expect("puts");
    let accepted: Vec<u64> = puts["puts"]
        .as_array()
        .expect("puts")
        .iter()
        .filter(|p| p["status"] == 200)
        .filter_map(|p| p["events"].as_u64())
        .collect();
    let figures = Figures {
        put_calls: stats["requests_by_operation"]["PutLogEvents"]
            .as_u64()
            .unwrap_or(0),
        put_throttled: stats["quota_throttled"]["PutLogEvents"]
            .as_u64()
            .unwrap_or(0),
        create_stream_calls: stats["requests_by_operation"]["CreateLogStream"]
            .as_u64()
            .unwrap_or(0),
        streams: files.len(),
        events_per_request: accepted.iter().sum::<u64>() as f64 / accepted.len().max(1) as f64,
        drain,
    };
    eprintln!(
        "fleet of {NODES} x {PODS}: {written} lines; PutLogEvents {} calls, {} throttled ({:.1}%); \
         CreateLogStream {} calls for {} streams ({:.2} per stream); {:.1} events per request; \
         drained {:.1} s after the writers stopped; quota_throttled {}",
        figures.put_calls,
        figures.put_throttled,
        100.0 * figures.throttled_share(),
        figures.create_stream_calls,
        figures.streams,
        figures.creates_per_stream(),
        figures.events_per_request,
        figures.drain.as_secs_f64(),
        stats["quota_throttled"],
    );

    // Nothing lost: every stream holds every line written to its pod.
    let mut lost = BTreeMap::new();
    for (stream, _) in &files {
        let got = events(&moto.endpoint(), GROUP, stream);
        let seen: BTreeSet<u64> = got
            .iter()
            .filter_map(|(_, m)| m.rsplit(' ').next()?.parse().ok())
            .collect();
        let missing = (0..seq).filter(|i| !seen.contains(i)).count();
        if missing > 0 {
            lost.insert(stream.clone(), missing);
        }
    }
    assert!(lost.is_empty(), "lines lost per stream: {lost:?}");
    assert_eq!(stats["violations"], 0, "{stats:#}");
    assert!(
        figures.throttled_share() <= 0.05,
        "{:.1}% of PutLogEvents calls throttled: {figures:?}",
        100.0 * figures.throttled_share()
    );
    assert!(
        figures.creates_per_stream() <= 1.05,
        "{} CreateLogStream calls for {} streams: {figures:?}",
        figures.create_stream_calls,
        figures.streams
    );
    assert!(
        figures.drain <= Duration::from_secs(30),
        "backlog drained {:.1} s after the writers stopped: {figures:?}",
        figures.drain.as_secs_f64()
    );
}
