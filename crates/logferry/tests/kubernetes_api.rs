//! Pod labels from the Kubernetes API, end to end: container log files -> the real logferry
//! binary (`kubernetes_logs` with `[sources.k.kubernetes_api]`, through kube-rs, a kubeconfig
//! and HTTPS) -> a real moto_server, read back as JSON events.
//!
//! No API server can run here (none is packaged for Debian or PyPI), so the API side is
//! `support/fake_kube_api.py`: real HTTPS with a CA made here, a bearer token, and the API
//! server's answers to `GET /api/v1/namespaces/NS/pods/NAME` (the Pod, a NotFound `Status`,
//! 401), slowed down per pod when a test asks, and to the node-scoped list and watch of
//! `/api/v1/pods?fieldSelector=spec.nodeName=NODE`. "Down" is a port nobody listens on.
//!
//! With `NODE_NAME` set logferry watches the node's pods; without it, it asks for each pod by
//! `GET`. The tests that check the `GET`s (request counts, a slow answer) run without it.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::fake_kube::{write_pod_lines, FakeKubeApi as FakeApi, Request, TOKEN};
use support::*;

const WAIT: Duration = Duration::from_secs(90);
const GROUP: &str = "/k8s/labels";

/// What every test here needs: moto, the fake API serving `pods`, and a pods directory.
struct Rig {
    moto: Moto,
    api: FakeApi,
    root: tempfile::TempDir,
    pods: PathBuf,
}

impl Rig {
    fn new(pods: serde_json::Value) -> Rig {
        let root = tempfile::tempdir().expect("tmp");
        Rig {
            moto: Moto::start().expect("moto"),
            api: FakeApi::start(pods),
            pods: root.path().join("pods"),
            root,
        }
    }

    /// logferry's config: the pods directory, moto, and the API reached through the kubeconfig
    /// file `kubeconfig` (see [`FakeApi::kubeconfig`]) with `api_extra` lines.
    fn config(&self, kubeconfig: &str, api_extra: &str) -> String {
        config(
            &self.pods,
            &self.moto.endpoint(),
            &self.api.kubeconfig(kubeconfig),
            api_extra,
        )
    }
}

fn config(pods_dir: &Path, moto: &str, kubeconfig: &Path, api_extra: &str) -> String {
    format!(
        r#"
data_dir = "@DATA@"
[sources.k]
type = "kubernetes_logs"
include = ["{pods}/*/*/*.log"]
rescan_interval = "500ms"
[sources.k.kubernetes_api]
kubeconfig = "{kubeconfig}"
{api_extra}
{sink}"#,
        pods = pods_dir.display(),
        kubeconfig = kubeconfig.display(),
        sink = cw_sink(&["k"], GROUP, "{namespace}.{pod}", moto).format("json"),
    )
}

/// A pod's events as JSON objects.
fn pod_events(moto: &str, ns: &str, pod: &str, n: usize) -> Vec<serde_json::Value> {
    wait_events(moto, GROUP, &format!("{ns}.{pod}"), n, WAIT)
        .iter()
        .map(|(_, t)| serde_json::from_str(t).expect("json event"))
        .collect()
}

/// The value of the label `key` an event carries, if it carries it.
fn label<'a>(e: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    e[format!("label.{key}").as_str()].as_str()
}

fn labels_of(e: &serde_json::Value) -> BTreeMap<String, String> {
    e.as_object()
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| {
                    Some((
                        k.strip_prefix("label.")?.to_string(),
                        v.as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Labels (and the node, with no `NODE_NAME`) reach every event of a pod, the first lines of
/// a pod that appears while logferry runs included; a pod the API does not know and a pod
/// whose name now belongs to another uid get none; every pod is asked for once; the token
/// never appears in logferry's output.
#[test]
fn pod_labels_and_node_from_the_api() {
    let rig = Rig::new(serde_json::json!({
        "shop/web-1": {"uid": "u-web", "labels": {"app": "web", "team": "shop"}, "node": "node-7"},
        "shop/late-1": {"uid": "u-late", "labels": {"app": "late"}, "node": "node-7"},
        "shop/db-0": {"uid": "u-db-new", "labels": {"app": "db"}, "node": "node-7"},
    }));
    let (moto, api, pods) = (&rig.moto, &rig.api, rig.pods.clone());
    write_pod_lines(&pods, "shop", "web-1", "u-web", "web", 300);
    write_pod_lines(&pods, "shop", "gone-1", "u-gone", "gone", 5);
    // db-0 was re-created: the API's db-0 has another uid; these logs are the old pod's.
    write_pod_lines(&pods, "shop", "db-0", "u-db-old", "db", 5);
    let lf = Logferry::start_with(&rig.config("kubeconfig", "wait = \"10s\""), |c| {
        c.env_remove("NODE_NAME").env_remove("KUBECONFIG");
    });
    let web = pod_events(&moto.endpoint(), "shop", "web-1", 300);
    assert_eq!(web.len(), 300, "{}", lf.log());
    let want: BTreeMap<String, String> = [("app", "web"), ("team", "shop")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for e in &web {
        assert_eq!(labels_of(e), want, "{e}");
        assert_eq!(e["node"], "node-7", "{e}");
        assert_eq!(e["pod_uid"], "u-web");
    }
    // A pod created while logferry runs: its very first lines carry its labels.
    write_pod_lines(&pods, "shop", "late-1", "u-late", "late", 50);
    let late = pod_events(&moto.endpoint(), "shop", "late-1", 50);
    assert!(
        late.iter().all(|e| label(e, "app") == Some("late")),
        "{late:?}"
    );
    for (pod, tag) in [("gone-1", "gone"), ("db-0", "db")] {
        let got = pod_events(&moto.endpoint(), "shop", pod, 5);
        assert_eq!(got.len(), 5);
        for e in &got {
            assert!(labels_of(e).is_empty(), "{pod} must get no labels: {e}");
            assert!(e.get("node").is_none(), "{e}");
            assert!(e["message"].as_str().is_some_and(|m| m.starts_with(tag)));
        }
    }
    // More lines of known pods are not asked for again.
    write_pod_lines(&pods, "shop", "web-1", "u-web", "web2", 10);
    pod_events(&moto.endpoint(), "shop", "web-1", 310);
    let requests = api.requests();
    for pod in ["web-1", "late-1", "gone-1", "db-0"] {
        let n = requests
            .iter()
            .filter(|r| r.starts_with(&format!("GET /api/v1/namespaces/shop/pods/{pod} ")))
            .count();
        assert_eq!(n, 1, "{pod} asked {n} times: {requests:?}");
    }
    assert!(
        requests.iter().all(|r| !r.ends_with(" 401")),
        "{requests:?}"
    );
    assert!(!lf.log().contains(TOKEN), "the token leaked into the log");
}

/// An API that answers slower than `wait`: the new pod's lines go without labels after
/// `wait` (the API's answer would come only after 60 s), and once it answers, later lines
/// carry them. Another pod's lines are not held up meanwhile.
#[test]
fn slow_api_holds_a_new_pod_only_for_wait() {
    let mut pods_json = serde_json::json!({
        "ops/slow-1": {"uid": "u-slow", "labels": {"app": "slow"}, "delay": 60},
        "ops/fast-1": {"uid": "u-fast", "labels": {"app": "fast"}},
    });
    let rig = Rig::new(pods_json.clone());
    let (moto, api, pods) = (&rig.moto, &rig.api, rig.pods.clone());
    let (lf, metrics) = start_with_metrics(&rig.config(
        "kubeconfig",
        "wait = \"1s\"\ntimeout = \"3s\"\ncache_ttl = \"1s\"",
    ));
    write_pod_lines(&pods, "ops", "slow-1", "u-slow", "slow", 20);
    write_pod_lines(&pods, "ops", "fast-1", "u-fast", "fast", 20);
    let slow = pod_events(&moto.endpoint(), "ops", "slow-1", 20);
    // Arrived without labels, before the API answered for slow-1 (it logs a request when it
    // has answered it, 60 s after it came in).
    assert!(slow.iter().all(|e| labels_of(e).is_empty()), "{slow:?}");
    assert!(
        !api.requests().iter().any(|r| r.contains("/pods/slow-1 ")),
        "held until the API answered"
    );
    let fast = pod_events(&moto.endpoint(), "ops", "fast-1", 20);
    assert!(fast.iter().all(|e| label(e, "app") == Some("fast")));
    let expired = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_kubernetes_pod_wait_expired_total", &[]) >= Some(1.0)
    });
    assert!(expired, "wait expiry not counted");
    // The timed-out request counts as a failure (the client's 3 s timeout).
    let failed = wait_until(Duration::from_secs(30), || {
        metric(
            &metrics,
            "logferry_kubernetes_api_requests_total",
            &["outcome=\"failed\""],
        ) >= Some(1.0)
    });
    assert!(failed, "{}", lf.log());
    // The API gets fast again: once it has answered, the same file's next lines are labelled.
    pods_json["ops/slow-1"]["delay"] = serde_json::json!(0);
    api.set_pods(&pods_json);
    let mut labelled = false;
    let mut n = 20;
    let deadline = Instant::now() + WAIT;
    while !labelled && Instant::now() < deadline {
        write_pod_lines(&pods, "ops", "slow-1", "u-slow", "slow-again", 1);
        n += 1;
        let got = pod_events(&moto.endpoint(), "ops", "slow-1", n);
        labelled = got.iter().any(|e| label(e, "app") == Some("slow"));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        labelled,
        "labels never came after the API recovered\n{}",
        lf.log()
    );
}

/// An API nobody answers at: every line arrives, without labels, and the API is reported
/// down in the metrics and once in the log.
#[test]
fn api_down_loses_nothing() {
    let rig = Rig::new(serde_json::json!({}));
    let (moto, api, pods) = (&rig.moto, &rig.api, rig.pods.clone());
    for p in 0..5 {
        write_pod_lines(
            &pods,
            "batch",
            &format!("job-{p}"),
            &format!("u{p}"),
            "job",
            100,
        );
    }
    let (lf, metrics) =
        start_with_metrics(&rig.config("kubeconfig-down", "wait = \"2s\"\ntimeout = \"1s\""));
    for p in 0..5 {
        let got = pod_events(&moto.endpoint(), "batch", &format!("job-{p}"), 100);
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|e| labels_of(e).is_empty()));
    }
    assert_eq!(
        metric(&metrics, "logferry_kubernetes_api_up", &[]),
        Some(0.0)
    );
    assert!(
        metric(
            &metrics,
            "logferry_kubernetes_api_requests_total",
            &["outcome=\"failed\""]
        ) >= Some(1.0)
    );
    let log = lf.log();
    assert_eq!(
        log.matches("the Kubernetes API does not answer").count(),
        1,
        "{log}"
    );
    assert!(!log.contains(TOKEN));
    assert!(api.requests().is_empty());
}

/// `logferry check` proves the API is reachable, trusted and lets the credentials read pods,
/// and says so when it is not, without printing the token.
#[test]
fn check_reports_api_access() {
    let rig = Rig::new(serde_json::json!({}));
    let (api, pods) = (&rig.api, rig.pods.clone());
    fs::create_dir_all(&pods).expect("mkdir");
    let check = |kubeconfig: &str| {
        let text = rig.config(kubeconfig, "");
        let path = write_config(rig.root.path(), &format!("{kubeconfig}.toml"), &text);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
        aws_env(&mut cmd);
        let out = cmd
            .arg("check")
            .arg("--config")
            .arg(&path)
            .output()
            .expect("logferry check");
        (out.status.success(), printed(&out))
    };
    let (ok, out) = check("kubeconfig");
    assert!(ok, "{out}");
    assert!(
        out.contains("ok    source k (Kubernetes API): reachable; pods can be read"),
        "{out}"
    );
    assert!(api.requests().contains(
        &"GET /api/v1/namespaces/kube-system/pods/logferry-access-check 404".to_string()
    ));
    let (ok, out) = check("kubeconfig-badtoken");
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  source k (Kubernetes API)"), "{out}");
    assert!(out.contains("401") || out.contains("Unauthorized"), "{out}");
    let (ok, out) = check("kubeconfig-down");
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  source k (Kubernetes API)"), "{out}");
    for (_, text) in [check("kubeconfig-badtoken"), check("kubeconfig")] {
        assert!(!text.contains("s3cr3t"), "a token leaked: {text}");
    }
}

/// A new pod that logs more than a file may hold while its lookup is pending stops waiting:
/// its lines go out without labels, released by the bound, not by `wait` running out (the
/// expiry counter stays 0) nor by the API's answer (it takes 60 s).
#[test]
fn hold_is_bounded_for_a_chatty_new_pod() {
    let rig = Rig::new(serde_json::json!({
        "ops/chatty-1": {"uid": "u-chatty", "labels": {"app": "chatty"}, "delay": 60},
    }));
    let (moto, api, pods) = (&rig.moto, &rig.api, rig.pods.clone());
    let (lf, metrics) =
        start_with_metrics(&rig.config("kubeconfig", "wait = \"50s\"\ntimeout = \"55s\""));
    write_pod_lines(&pods, "ops", "chatty-1", "u-chatty", "chatty", 15_000);
    let got = pod_events(&moto.endpoint(), "ops", "chatty-1", 15_000);
    assert_eq!(got.len(), 15_000, "{}", lf.log());
    assert!(got.iter().all(|e| labels_of(e).is_empty()));
    assert_eq!(
        metric(&metrics, "logferry_kubernetes_pod_wait_expired_total", &[]),
        Some(0.0),
        "released by the wait, not by the bound"
    );
    assert!(
        !api.requests().iter().any(|r| r.contains("/pods/chatty-1 ")),
        "held until the API answered"
    );
}

/// A pod relabelled while its file is open: after `cache_ttl` its new lines carry the new
/// labels (and a label removed is gone), without reopening the file.
#[test]
fn relabelled_pod_is_followed_after_cache_ttl() {
    let mut pods_json = serde_json::json!({
        "web/site-1": {"uid": "u-site", "labels": {"app": "site", "version": "v1", "canary": "yes"}},
    });
    let rig = Rig::new(pods_json.clone());
    let (moto, api, pods) = (&rig.moto, &rig.api, rig.pods.clone());
    let lf = Logferry::start(&rig.config("kubeconfig", "cache_ttl = \"1s\""));
    write_pod_lines(&pods, "web", "site-1", "u-site", "before", 10);
    let got = pod_events(&moto.endpoint(), "web", "site-1", 10);
    assert!(
        got.iter().all(|e| label(e, "version") == Some("v1")),
        "{got:?}"
    );
    pods_json["web/site-1"]["labels"] = serde_json::json!({"app": "site", "version": "v2"});
    api.set_pods(&pods_json);
    let mut n = 10;
    let mut relabelled = None;
    let deadline = Instant::now() + WAIT;
    while relabelled.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(300));
        write_pod_lines(&pods, "web", "site-1", "u-site", "after", 1);
        n += 1;
        relabelled = pod_events(&moto.endpoint(), "web", "site-1", n)
            .into_iter()
            .find(|e| label(e, "version") == Some("v2"));
    }
    let e = relabelled.unwrap_or_else(|| panic!("the new labels never came\n{}", lf.log()));
    let want: BTreeMap<String, String> = [("app", "site"), ("version", "v2")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(labels_of(&e), want, "{e}");
    assert_eq!(e["namespace"], "web", "path fields kept: {e}");
}

/// Appends CRI `stdout F` records of `lines` to container `container`'s log of a pod.
fn write_container_lines(
    pods_dir: &Path,
    (ns, pod, uid): (&str, &str, &str),
    container: &str,
    lines: &[String],
) {
    use std::io::Write;
    let dir = pods_dir.join(format!("{ns}_{pod}_{uid}/{container}"));
    fs::create_dir_all(&dir).expect("mkdir");
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
    let text: String = lines
        .iter()
        .map(|l| format!("{now} stdout F {l}\n"))
        .collect();
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("0.log"))
        .expect("open")
        .write_all(text.as_bytes())
        .expect("append");
}

fn numbered(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag} {i:05}")).collect()
}

/// `logferry.io/exclude: "true"`: none of the pod's lines arrive while its neighbour's do,
/// each excluded line is counted, and the excluded files' positions move on (a restarted
/// logferry counts only the lines written since, not the old ones again).
/// `logferry.io/exclude-<container>`: only that container of a two-container pod is left out.
#[test]
fn excluded_pods_and_containers_are_never_shipped() {
    let rig = Rig::new(serde_json::json!({
        "ops/noisy-1": {"uid": "u-noisy", "annotations": {"logferry.io/exclude": "true"}},
        "ops/quiet-1": {"uid": "u-quiet", "labels": {"app": "quiet"}},
        "ops/duo-1": {"uid": "u-duo", "annotations": {"logferry.io/exclude-sidecar": "true"}},
    }));
    let (moto, pods) = (&rig.moto, rig.pods.clone());
    let (lf, metrics) = start_with_metrics(&rig.config("kubeconfig", "wait = \"10s\""));
    write_pod_lines(&pods, "ops", "noisy-1", "u-noisy", "noisy", 200);
    let duo = ("ops", "duo-1", "u-duo");
    write_container_lines(&pods, duo, "sidecar", &numbered("sidecar", 30));
    write_container_lines(&pods, duo, "main", &numbered("main", 20));
    write_pod_lines(&pods, "ops", "quiet-1", "u-quiet", "quiet", 50);
    let quiet = pod_events(&moto.endpoint(), "ops", "quiet-1", 50);
    assert_eq!(quiet.len(), 50, "{}", lf.log());
    let counted = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_file_excluded_events_total", &[]) == Some(230.0)
    });
    assert!(
        counted,
        "excluded events counted: {:?}\n{}",
        metric(&metrics, "logferry_file_excluded_events_total", &[]),
        lf.log()
    );
    let both = pod_events(&moto.endpoint(), "ops", "duo-1", 20);
    assert!(
        both.iter().all(|e| e["container"] == "main"),
        "only the main container: {both:?}"
    );
    assert_eq!(both.len(), 20);
    // Lines the excluded pod writes later are left out too, and nothing of it ever arrived.
    write_pod_lines(&pods, "ops", "noisy-1", "u-noisy", "noisy-later", 10);
    let counted = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_file_excluded_events_total", &[]) == Some(240.0)
    });
    assert!(counted, "{}", lf.log());
    assert!(events(&moto.endpoint(), GROUP, "ops.noisy-1").is_empty());
    let mut lf = lf;
    lf.terminate();
    let metrics = respawn_with_metrics(&mut lf);
    write_pod_lines(&pods, "ops", "noisy-1", "u-noisy", "after-restart", 5);
    let counted = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_file_excluded_events_total", &[]) == Some(5.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        counted && metric(&metrics, "logferry_file_excluded_events_total", &[]) == Some(5.0),
        "the restart read excluded lines again: {:?}\n{}",
        metric(&metrics, "logferry_file_excluded_events_total", &[]),
        lf.log()
    );
    assert!(events(&moto.endpoint(), GROUP, "ops.noisy-1").is_empty());
    assert_eq!(pod_events(&moto.endpoint(), "ops", "quiet-1", 50).len(), 50);
}

/// `logferry.io/multiline: java` on a pod whose source sets no multiline: a Java trace it
/// writes arrives as one event, the log lines around it as their own; a pod without the
/// annotation keeps its lines apart.
#[test]
fn multiline_annotation_joins_a_pods_java_trace() {
    let rig = Rig::new(serde_json::json!({
        "shop/api-1": {"uid": "u-api", "annotations": {"logferry.io/multiline": "java"}},
        "shop/plain-1": {"uid": "u-plain"},
    }));
    let (moto, pods) = (&rig.moto, rig.pods.clone());
    let lf = Logferry::start(&rig.config("kubeconfig", "wait = \"10s\""));
    let trace: Vec<String> = [
        "2026-11-25 10:00:01.250 ERROR request failed",
        "java.lang.IllegalStateException: boom",
        "\tat com.example.Foo.bar(Foo.java:10)",
        "\tat com.example.Main.main(Main.java:5)",
        "Caused by: java.io.IOException: disk",
        "\t... 2 more",
        "2026-11-25 10:00:02.000 INFO next",
    ]
    .map(String::from)
    .into();
    write_container_lines(&pods, ("shop", "api-1", "u-api"), "app", &trace);
    write_container_lines(&pods, ("shop", "plain-1", "u-plain"), "app", &trace);
    let api = pod_events(&moto.endpoint(), "shop", "api-1", 3);
    let messages: Vec<&str> = api.iter().filter_map(|e| e["message"].as_str()).collect();
    assert_eq!(
        messages,
        [
            trace[0].as_str(),
            &trace[1..6].join("\n"),
            trace[6].as_str()
        ],
        "{}",
        lf.log()
    );
    let plain = pod_events(&moto.endpoint(), "shop", "plain-1", 7);
    assert_eq!(plain.len(), 7, "no annotation, no joining: {plain:?}");
}

/// `n` pods `shop/p-NN` on `node` (label `app=p-NN`), and 20 pods on another node.
fn node_pods(node: &str, n: usize) -> serde_json::Value {
    let mut pods = serde_json::Map::new();
    for i in 0..n {
        pods.insert(
            format!("shop/p-{i:02}"),
            serde_json::json!({"uid": format!("u-{i}"), "labels": {"app": format!("p-{i:02}")}, "node": node}),
        );
    }
    for i in 0..20 {
        pods.insert(
            format!("other/q-{i:02}"),
            serde_json::json!({"uid": format!("uq-{i}"), "labels": {"app": "q"}, "node": "node-elsewhere"}),
        );
    }
    serde_json::Value::Object(pods)
}

/// Writes `lines` lines to each of the first `n` pods of [`node_pods`].
fn write_node_pods(rig: &Rig, n: usize, lines: usize) {
    for i in 0..n {
        let (pod, uid) = (format!("p-{i:02}"), format!("u-{i}"));
        write_pod_lines(&rig.pods, "shop", &pod, &uid, "x", lines);
    }
}

/// Waits for `lines` events of each of the first `n` pods of [`node_pods`]; every one carries
/// its own pod's `app` label.
fn assert_node_pods_labelled(rig: &Rig, n: usize, lines: usize, lf: &Logferry) {
    for i in 0..n {
        let app = format!("p-{i:02}");
        let got = pod_events(&rig.moto.endpoint(), "shop", &app, lines);
        assert!(
            got.iter().all(|e| label(e, "app") == Some(app.as_str())),
            "{app}: {got:?}\n{}",
            lf.log()
        );
    }
}

/// Requests of each kind the fake served: (list, watch, get).
fn counts(api: &FakeApi) -> (usize, usize, usize) {
    let n = |k| api.requests_of(k).len();
    (n(Request::List), n(Request::Watch), n(Request::Get))
}

/// Writes a line to `ns/pod` every 300 ms until one arrives whose labels `want` accepts; that
/// event, and how long after the call it was written.
fn first_matching(
    rig: &Rig,
    (ns, pod, uid): (&str, &str, &str),
    written: usize,
    want: impl Fn(&serde_json::Value) -> bool,
) -> Option<(serde_json::Value, Duration)> {
    let start = Instant::now();
    let mut n = written;
    while start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(300));
        let at = start.elapsed();
        write_pod_lines(&rig.pods, ns, pod, uid, "probe", 1);
        n += 1;
        let got = pod_events(&rig.moto.endpoint(), ns, pod, n);
        if let Some(e) = got.iter().find(|e| want(e)) {
            return Some((e.clone(), at));
        }
    }
    None
}

/// 50 pods on this node (and 20 elsewhere), each logging: one list and one watch serve them
/// all, not a GET per pod, and every event carries its pod's labels. A relabel reaches the
/// next lines within seconds although `cache_ttl` is an hour.
#[test]
fn one_watch_serves_the_nodes_pods_and_a_relabel_at_once() {
    let mut pods_json = node_pods("node-7", 50);
    let rig = Rig::new(pods_json.clone());
    let config = rig.config("kubeconfig", "wait = \"10s\"\ncache_ttl = \"1h\"");
    let (lf, metrics) = start_with_metrics_env(&config, &[("NODE_NAME", "node-7")]);
    write_node_pods(&rig, 50, 20);
    assert_node_pods_labelled(&rig, 50, 20, &lf);
    let (lists, watches, gets) = counts(&rig.api);
    eprintln!("50 pods on the node: {lists} list, {watches} watch, {gets} GET");
    assert_eq!((lists, gets), (1, 0), "{:?}", rig.api.requests());
    assert!((1..=3).contains(&watches), "{:?}", rig.api.requests());
    assert_eq!(
        metric(&metrics, "logferry_kubernetes_watch_pods", &[]),
        Some(50.0)
    );
    assert_eq!(
        metric(&metrics, "logferry_kubernetes_watch_up", &[]),
        Some(1.0)
    );
    pods_json["shop/p-07"]["labels"] = serde_json::json!({"app": "p-07", "version": "v2"});
    rig.api.set_pods(&pods_json);
    let (e, after) = first_matching(&rig, ("shop", "p-07", "u-7"), 20, |e| {
        label(e, "version") == Some("v2")
    })
    .unwrap_or_else(|| panic!("the relabel never came\n{}", lf.log()));
    assert!(
        after < Duration::from_secs(5),
        "relabel seen after {after:?}"
    );
    assert_eq!(label(&e, "app"), Some("p-07"));
    let (lists, _, gets) = counts(&rig.api);
    assert_eq!((lists, gets), (1, 0), "{:?}", rig.api.requests());
    assert!(!lf.log().contains(TOKEN));
}

/// The same 50 pods without `NODE_NAME`: a GET per pod, as before the watch (a warning at
/// start says so).
#[test]
fn without_a_node_name_each_pod_is_a_get() {
    let rig = Rig::new(node_pods("node-7", 50));
    let lf = Logferry::start_with(&rig.config("kubeconfig", "wait = \"10s\""), |c| {
        c.env_remove("NODE_NAME");
    });
    write_node_pods(&rig, 50, 20);
    assert_node_pods_labelled(&rig, 50, 20, &lf);
    let (lists, watches, gets) = counts(&rig.api);
    eprintln!("50 pods, no NODE_NAME: {lists} list, {watches} watch, {gets} GET");
    assert_eq!(
        (lists, watches, gets),
        (0, 0, 50),
        "{:?}",
        rig.api.requests()
    );
    assert_eq!(
        lf.log().matches("NODE_NAME is not set").count(),
        1,
        "{}",
        lf.log()
    );
}

/// A watch ended by 410 Gone (its resourceVersion too old): logferry lists again and keeps
/// going: a pod added and a relabel after it are followed.
#[test]
fn a_410_gone_makes_the_watch_list_again_and_go_on() {
    let mut pods_json = node_pods("node-7", 3);
    let rig = Rig::new(pods_json.clone());
    let config = rig.config("kubeconfig", "wait = \"10s\"\ncache_ttl = \"1h\"");
    let (lf, metrics) = start_with_metrics_env(&config, &[("NODE_NAME", "node-7")]);
    write_pod_lines(&rig.pods, "shop", "p-00", "u-0", "x", 5);
    assert_eq!(pod_events(&rig.moto.endpoint(), "shop", "p-00", 5).len(), 5);
    rig.api.expire_watches();
    let relisted = wait_until(Duration::from_secs(30), || {
        metric(&metrics, "logferry_kubernetes_watch_lists_total", &[]) == Some(2.0)
    });
    assert!(relisted, "{:?}\n{}", rig.api.requests(), lf.log());
    assert!(
        metric(
            &metrics,
            "logferry_kubernetes_watch_restarts_total",
            &["reason=\"gone\""]
        ) >= Some(1.0)
    );
    pods_json["shop/new-1"] =
        serde_json::json!({"uid": "u-new", "labels": {"app": "new"}, "node": "node-7"});
    pods_json["shop/p-00"]["labels"] = serde_json::json!({"app": "p-00", "after": "gone"});
    rig.api.set_pods(&pods_json);
    write_pod_lines(&rig.pods, "shop", "new-1", "u-new", "n", 5);
    let new = pod_events(&rig.moto.endpoint(), "shop", "new-1", 5);
    assert!(
        new.iter().all(|e| label(e, "app") == Some("new")),
        "{new:?}"
    );
    let relabelled = first_matching(&rig, ("shop", "p-00", "u-0"), 5, |e| {
        label(e, "after") == Some("gone")
    });
    assert!(relabelled.is_some(), "{}", lf.log());
    let (lists, watches, gets) = counts(&rig.api);
    eprintln!("410: {lists} list, {watches} watch, {gets} GET");
    assert_eq!((lists, gets), (2, 0), "{:?}", rig.api.requests());
    assert_eq!(
        metric(&metrics, "logferry_kubernetes_watch_up", &[]),
        Some(1.0)
    );
}

/// Lists and watches answer 500: pods are asked for by GET meanwhile and events still carry
/// their labels; the failure is logged once; once the watch answers again it takes over.
#[test]
fn watch_down_falls_back_to_gets() {
    let mut pods_json = node_pods("node-7", 5);
    let rig = Rig::new(pods_json.clone());
    rig.api.set_list_watch_status(Some(500));
    let config = rig.config("kubeconfig", "wait = \"10s\"\ncache_ttl = \"1h\"");
    let (lf, metrics) = start_with_metrics_env(&config, &[("NODE_NAME", "node-7")]);
    write_node_pods(&rig, 5, 10);
    assert_node_pods_labelled(&rig, 5, 10, &lf);
    let (lists, _, gets) = counts(&rig.api);
    assert!(lists >= 1, "{:?}", rig.api.requests());
    assert_eq!(gets, 5, "{:?}", rig.api.requests());
    assert_eq!(
        metric(&metrics, "logferry_kubernetes_watch_up", &[]),
        Some(0.0)
    );
    rig.api.set_list_watch_status(None);
    let up = wait_until(Duration::from_secs(45), || {
        metric(&metrics, "logferry_kubernetes_watch_up", &[]) == Some(1.0)
    });
    assert!(up, "{}", lf.log());
    let log = lf.log();
    assert_eq!(
        log.matches("the watch of this node's pods failed").count(),
        1,
        "{log}"
    );
    pods_json["shop/p-01"]["labels"] = serde_json::json!({"app": "p-01", "back": "yes"});
    rig.api.set_pods(&pods_json);
    let relabelled = first_matching(&rig, ("shop", "p-01", "u-1"), 10, |e| {
        label(e, "back") == Some("yes")
    });
    assert!(relabelled.is_some(), "{}", lf.log());
    assert_eq!(counts(&rig.api).2, 5, "no GET once the watch is back");
}

/// [`start_with_metrics`] with `env` set for logferry.
fn start_with_metrics_env(config: &str, env: &[(&str, &str)]) -> (Logferry, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let a = addr.clone();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let lf = Logferry::start_with(config, move |cmd| {
        cmd.env("LOGFERRY_METRICS_ADDRESS", &a).envs(env);
    });
    (lf, addr)
}
