//! End to end: `kubernetes_logs` with `merge_json` and with namespace filters, the real
//! logferry binary reading kubelet-style pod log directories, a real moto_server read back.

mod support;

use std::fs;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

const GROUP: &str = "/k8s/test";
const WAIT: Duration = Duration::from_secs(120);

/// A `kubernetes_logs` source `k` over `pods` with `extra` lines, `json` events to
/// `GROUP`/`stream`.
fn config(pods: &Path, extra: &str, stream: &str, endpoint: &str) -> String {
    let lines = format!(
        "include = [\"{}/*/*/*.log\"]\nrescan_interval = \"500ms\"\n{extra}",
        pods.display()
    );
    pipeline(
        &source("k", "kubernetes_logs", &lines),
        &cw_sink(&["k"], GROUP, stream, endpoint).format("json"),
    )
}

#[test]
fn json_lines_are_merged_with_pod_metadata_under_kubernetes() {
    let moto = Moto::start().expect("moto");
    let root = tempfile::tempdir().expect("tmp");
    let pods = root.path().join("var/log/pods");
    let log = pod_log(&pods, "shop", "web-7d9f", "api");
    append(
        &log,
        "2026-11-25T10:00:00.100000000Z stdout F {\"level\":\"info\",\"msg\":\"ready\",\"port\":8080}\n\
         2026-11-25T10:00:00.200000000Z stdout P {\"level\":\"warn\",\"msg\":\"split \n\
         2026-11-25T10:00:00.250000000Z stderr F a plain stderr line\n\
         2026-11-25T10:00:00.300000000Z stdout F across parts\",\"req\":{\"id\":7,\"tags\":[\"a\",{\"b\":null}]}}\n\
         2026-11-25T10:00:00.400000000Z stdout F {\"broken\": \n\
         2026-11-25T10:00:00.500000000Z stdout F {\"namespace\":\"app-ns\",\"stream\":\"mine\",\"level\":\"debug\"}\n",
    );
    let (lf, metrics) = {
        let addr = format!("127.0.0.1:{}", free_port());
        let a = addr.clone();
        let cfg = config(
            &pods,
            "merge_json = true",
            "{namespace}.{pod}.{container}",
            &moto.endpoint(),
        );
        let lf = Logferry::start_with(&cfg, move |c| {
            c.env("NODE_NAME", "node-7");
            c.env("LOGFERRY_METRICS_ADDRESS", &a);
        });
        (lf, addr)
    };
    let got = wait_events(&moto.endpoint(), GROUP, "shop.web-7d9f.api", 5, WAIT);
    let events: Vec<Value> = got
        .iter()
        .map(|(_, t)| serde_json::from_str(t).unwrap_or_else(|e| panic!("{e}: {t}")))
        .collect();
    let by = |key: &str, value: &str| {
        events
            .iter()
            .find(|v| v[key] == value)
            .unwrap_or_else(|| panic!("no event with {key} = {value}: {events:#?}\n{}", lf.log()))
    };
    let kubernetes = |stream: &str| {
        json!({
            "namespace": "shop",
            "pod": "web-7d9f",
            "pod_uid": "0b5e1c1e-1111-2222-3333-0000web-7d9f",
            "container": "api",
            "node": "node-7",
            "file": log.display().to_string(),
            "stream": stream,
        })
    };
    // The P + F parts arrive as one event, its keys top-level, nested values as written.
    let split = by("level", "warn");
    assert_eq!(
        split,
        &json!({
            "level": "warn",
            "msg": "split across parts",
            "req": {"id": 7, "tags": ["a", {"b": null}]},
            "kubernetes": kubernetes("stdout"),
            "timestamp": "2026-11-25T10:00:00.200Z",
            "source": "k",
        }),
        "{}",
        lf.log()
    );
    let ready = by("level", "info");
    assert_eq!(
        (&ready["msg"], &ready["port"]),
        (&json!("ready"), &json!(8080))
    );
    assert!(ready.get("message").is_none(), "{ready}");
    // The app's keys win; logferry's own are still there, under `kubernetes`.
    let mine = by("level", "debug");
    assert_eq!(
        (&mine["namespace"], &mine["stream"]),
        (&json!("app-ns"), &json!("mine"))
    );
    assert_eq!(mine["kubernetes"], kubernetes("stdout"));
    // Not objects, or not valid ones: sent as they were, with today's fields.
    let plain = by("message", "a plain stderr line");
    assert_eq!(
        (&plain["namespace"], &plain["stream"]),
        (&json!("shop"), &json!("stderr"))
    );
    assert_eq!(by("message", "{\"broken\": ")["pod"], "web-7d9f");
    // 2026-11-25T10:00:00.100Z: the event time is still the runtime's.
    assert_eq!(got[0].0, 1_795_600_800_100);
    let mut failures = None;
    wait_until(Duration::from_secs(10), || {
        failures = metric(
            &metrics,
            "logferry_file_json_merge_failures_total",
            &["source=\"k\""],
        );
        failures.is_some()
    });
    assert_eq!(failures, Some(1.0), "only the broken line\n{}", lf.log());
}

#[test]
fn namespaces_filtered_out_by_glob_are_never_opened() {
    let moto = Moto::start().expect("moto");
    let root = tempfile::tempdir().expect("tmp");
    let pods = root.path().join("var/log/pods");
    let line = |text: &str| format!("2026-11-25T10:00:00.100000000Z stdout F {text}\n");
    let mut logs = Vec::new();
    for ns in ["team-a", "kube-system", "kube-public", "default"] {
        let log = pod_log(&pods, ns, "p", "c");
        append(&log, &line(&format!("hello from {ns}")));
        logs.push(log);
    }
    let lf = Logferry::start(&config(
        &pods,
        "include_namespaces = [\"team-*\", \"kube-*\"]\nexclude_namespaces = [\"kube-public\"]",
        "{namespace}",
        &moto.endpoint(),
    ));
    for ns in ["team-a", "kube-system"] {
        wait_events(&moto.endpoint(), GROUP, ns, 1, WAIT);
    }
    // A pod started later, in an excluded namespace and in an included one.
    let late_out = pod_log(&pods, "kube-public", "late", "c");
    append(&late_out, &line("late, excluded"));
    let late_in = pod_log(&pods, "team-b", "late", "c");
    append(&late_in, &line("late, included"));
    let got = wait_events(&moto.endpoint(), GROUP, "team-b", 1, WAIT);
    assert!(got[0].1.contains("late, included"), "{got:?}");
    std::thread::sleep(Duration::from_secs(2));
    for ns in ["kube-public", "default"] {
        assert!(
            events(&moto.endpoint(), GROUP, ns).is_empty(),
            "{ns} was shipped\n{}",
            lf.log()
        );
    }
    // Never opened: not followed, not in the checkpoint.
    let checkpoint = fs::read_to_string(lf.data_dir().join("file/k.json")).expect("checkpoint");
    let log = lf.log();
    for excluded in [&logs[2], &logs[3], &late_out] {
        let path = excluded.display().to_string();
        assert!(!checkpoint.contains(&path), "{path} in {checkpoint}");
        assert!(
            !log.lines()
                .any(|l| l.contains("following file") && l.contains(&path)),
            "{path} was opened\n{log}"
        );
    }
    assert!(
        log.lines()
            .any(|l| l.contains("following file") && l.contains(&logs[0].display().to_string())),
        "the log says which files are followed\n{log}"
    );
}
