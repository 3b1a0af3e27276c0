//! End to end: `kubernetes_logs` with a cluster name, the real logferry binary behind
//! `cwl-proxy` (which records the `entity` of every PutLogEvents) in front of moto.

mod support;

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const GROUP: &str = "/k8s/entity";
const WAIT: Duration = Duration::from_secs(120);

/// `<pods>/<ns>_<pod>_<uid>/<container>/0.log` holding `lines` CRI lines.
fn pod_log(pods: &Path, ns: &str, pod: &str, lines: usize) -> PathBuf {
    let dir = pods.join(format!("{ns}_{pod}_0b5e1c1e-1111-2222-3333-444444444444"));
    let path = dir.join("c").join("0.log");
    fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("open");
    for i in 0..lines {
        writeln!(
            f,
            "2026-11-30T10:00:00.{i:03}000000Z stdout F {pod} line {i}"
        )
        .expect("append");
    }
    path
}

/// Two pods of different workloads writing to one stream, `extra` sink lines; returns the
/// proxy's PutLogEvents records once moto holds all 5 events, and the metrics address.
fn run(extra_faults: Value) -> (Vec<Value>, String, Logferry) {
    let (moto, proxy) = moto_behind_faulty_proxy(extra_faults);
    let root = tempfile::tempdir().expect("tmp");
    let pods = root.path().join("var/log/pods");
    pod_log(&pods, "shop", "web-7d4b9c8f6-x2kzq", 3);
    pod_log(&pods, "shop", "db-0", 2);
    let lines = format!(
        "include = [\"{}/*/*/*.log\"]\nrescan_interval = \"500ms\"",
        pods.display()
    );
    let addr = format!("127.0.0.1:{}", free_port());
    let a = addr.clone();
    // One stream for both pods: only the entity keeps their events in separate requests.
    let cfg = pipeline(
        &source("k", "kubernetes_logs", &lines),
        &cw_sink(&["k"], GROUP, "all", &proxy.endpoint()).string("cluster_name", "prod-1"),
    );
    let lf = Logferry::start_with(&cfg, move |c| {
        c.env("NODE_NAME", "node-7");
        c.env("LOGFERRY_METRICS_ADDRESS", &a);
    });
    let got = wait_events(&moto.endpoint(), GROUP, "all", 5, WAIT);
    assert_eq!(got.len(), 5, "{}", lf.log());
    assert_no_violations(&proxy);
    let puts = proxy.puts().expect("puts")["puts"]
        .as_array()
        .expect("puts")
        .clone();
    drop(root);
    (puts, addr, lf)
}

/// Events per entity `Name` over the PutLogEvents moto accepted.
fn events_by_workload(puts: &[Value]) -> Vec<(String, u64)> {
    let mut by: Vec<(String, u64)> = Vec::new();
    for p in puts.iter().filter(|p| p["upstream_status"] == 200) {
        let name = p["entity"]["keyAttributes"]["Name"]
            .as_str()
            .unwrap_or_else(|| panic!("a request without an entity: {p}"))
            .to_string();
        let n = p["events"].as_u64().expect("events");
        match by.iter_mut().find(|(w, _)| *w == name) {
            Some((_, total)) => *total += n,
            None => by.push((name, n)),
        }
    }
    by.sort();
    by
}

#[test]
fn each_request_carries_the_entity_of_its_workload() {
    let (puts, _, lf) = run(json!({}));
    assert_eq!(
        events_by_workload(&puts),
        [("db".to_string(), 2), ("web".to_string(), 3)],
        "{puts:#?}\n{}",
        lf.log()
    );
    let web = puts
        .iter()
        .find(|p| p["entity"]["keyAttributes"]["Name"] == "web")
        .expect("web");
    assert_eq!(
        web["entity"],
        json!({
            "keyAttributes": {"Type": "Service", "Name": "web", "Environment": "eks:prod-1/shop"},
            "attributes": {
                "PlatformType": "AWS::EKS",
                "EKS.Cluster": "prod-1",
                "K8s.Namespace": "shop",
                "K8s.Workload": "web",
                "K8s.Node": "node-7",
                "AWS.ServiceNameSource": "K8sWorkload",
            },
        })
    );
}

#[test]
fn a_refused_entity_is_counted_and_its_events_are_kept() {
    let (puts, metrics, lf) = run(json!({"reject_entity": "InvalidAttributes"}));
    assert_eq!(
        events_by_workload(&puts),
        [("db".to_string(), 2), ("web".to_string(), 3)],
        "nothing resent, nothing lost: {puts:#?}"
    );
    let accepted = puts.iter().filter(|p| p["upstream_status"] == 200).count() as f64;
    let mut rejected = None;
    wait_until(Duration::from_secs(10), || {
        rejected = metric(
            &metrics,
            "logferry_sink_entity_rejected_total",
            &["sink=\"cw\"", "reason=\"InvalidAttributes\""],
        );
        rejected == Some(accepted)
    });
    assert_eq!(rejected, Some(accepted), "one per request\n{}", lf.log());
    let delivered = metric(&metrics, "logferry_sink_events_delivered_total", &[]);
    assert_eq!(delivered, Some(5.0), "{}", lf.log());
}
