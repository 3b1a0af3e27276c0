//! The DaemonSet's pod, played by podman: `kubectl kustomize deploy/kubernetes` renders the
//! manifests, this test turns the DaemonSet's pod template into a Pod and plays it with its
//! ConfigMap (`podman kube play --configmap`), with the securityContext, hostPath mounts,
//! args, env and probes as written. A real journald's directory is the node's journal, CRI log
//! files under the node's /var/log/pods are its containers' logs; shipping to a real moto.
//!
//! What a cluster would add and the test supplies instead (each is a line in
//! [`pod_from_daemonset`]):
//! - the node: hostPath paths point into a temporary directory standing for the node's root;
//! - IRSA's credentials: static keys and AWS_ENDPOINT_URL (moto) in the container's env;
//! - the service account token the kubelet mounts, and KUBERNETES_SERVICE_HOST/PORT: a
//!   hostPath at /var/run/secrets/kubernetes.io/serviceaccount and env vars pointing at
//!   `support/fake_kube_api.py` (HTTPS, bearer token), which serves the pod's labels;
//! - `spec.nodeName` (the downward API's NODE_NAME): podman has no node, the value is set;
//! - the network: podman here may only use the host's network (`--network host`), so the
//!   metrics port is moved to a free one; podman 4.3 refuses `ports` with host networking, so
//!   that declaration is dropped and the probes name the port's number, as the kubelet would
//!   resolve it;
//! - CLUSTER_NAME, which an overlay patches (docs/deploy.md), is made unique per run.
//!
//! The probes are not run by podman: podman 4.3 turns the liveness probe into a healthcheck
//! `CMD-SHELL curl -f http://localhost:PORT/health` run inside the container (the image has
//! no shell and no curl; the kubelet makes the HTTP request itself) on a systemd timer (this
//! host has no systemd), and ignores the readiness probe. The test asks both probes' paths on
//! their port from outside, as the kubelet does.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cwl_testkit::Journald;
use serde_json::{json, Value};
use support::deploy::{self, Podman, IMAGE};
use support::fake_kube::{write_pod_lines, FakeKubeApi, Request, TOKEN};
use support::*;

const WAIT: Duration = Duration::from_secs(120);

/// `kubectl kustomize deploy/kubernetes`, as JSON documents.
fn rendered_manifests() -> Vec<Value> {
    let yaml = deploy::run_ok(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(deploy::repo_root().join("deploy/kubernetes")),
    );
    let mut py = Command::new("python3")
        .args([
            "-c",
            "import sys, json, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    {
        use std::io::Write;
        py.stdin
            .take()
            .expect("stdin")
            .write_all(yaml.as_bytes())
            .expect("write");
    }
    let out = py.wait_with_output().expect("python3");
    assert!(out.status.success(), "YAML -> JSON failed");
    serde_json::from_slice(&out.stdout).expect("json")
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

/// What the test stands in for (see the module doc).
struct Node<'a> {
    root: &'a Path,
    journal: &'a Path,
    moto: &'a str,
    api: &'a FakeKubeApi,
    cluster: &'a str,
    node_name: &'a str,
    metrics_port: u16,
}

fn env_var(name: &str, value: &str) -> Value {
    json!({"name": name, "value": value})
}

/// The DaemonSet's pod template as a Pod podman can play on this "node".
fn pod_from_daemonset(ds: &Value, pod_name: &str, node: &Node) -> Value {
    let template = &ds["spec"]["template"];
    let mut spec = template["spec"].clone();
    let container = &mut spec["containers"][0];
    container["image"] = json!(IMAGE);
    // Host network only here: a free metrics port instead of 9880.
    let port = node.metrics_port.to_string();
    if let Some(args) = container["args"].as_array_mut() {
        for a in args.iter_mut() {
            if a == "0.0.0.0:9880" {
                *a = json!(format!("0.0.0.0:{port}"));
            }
        }
    }
    // podman 4.3 turns `ports` into port mappings, which host networking refuses ("PortMappings
    // can only be used with Bridge or slirp4netns networking"): the declaration goes, and the
    // probes get the number their named port stands for, as the kubelet resolves it.
    let ports = container
        .as_object_mut()
        .and_then(|c| c.remove("ports"))
        .unwrap_or_default();
    for probe in ["livenessProbe", "readinessProbe"] {
        let named = container[probe]["httpGet"]["port"].clone();
        let known = ports
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == named))
            .is_some_and(|p| p["containerPort"] == 9880);
        assert!(
            known,
            "{probe} uses port {named}, not the metrics port 9880"
        );
        container[probe]["httpGet"]["port"] = json!(node.metrics_port);
    }
    let env = container["env"].as_array_mut().expect("env");
    for e in env.iter_mut() {
        match e["name"].as_str() {
            // The downward API's spec.nodeName: there is no node.
            Some("NODE_NAME") => *e = env_var("NODE_NAME", node.node_name),
            // An overlay's patch (docs/deploy.md).
            Some("CLUSTER_NAME") => *e = env_var("CLUSTER_NAME", node.cluster),
            _ => {}
        }
    }
    // IRSA's part: credentials (static here) and the endpoint (moto).
    env.push(env_var("AWS_ACCESS_KEY_ID", "AKIDTESTING"));
    env.push(env_var(
        "AWS_SECRET_ACCESS_KEY",
        "planted-secret-do-not-log",
    ));
    env.push(env_var("AWS_ENDPOINT_URL", node.moto));
    env.push(env_var("AWS_EC2_METADATA_DISABLED", "true"));
    // The kubelet's part for automountServiceAccountToken: true.
    env.push(env_var("KUBERNETES_SERVICE_HOST", "127.0.0.1"));
    env.push(env_var(
        "KUBERNETES_SERVICE_PORT",
        &node.api.port().to_string(),
    ));
    container["volumeMounts"]
        .as_array_mut()
        .expect("volumeMounts")
        .push(json!({
            "name": "kube-api-access",
            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
            "readOnly": true,
        }));
    let volumes = spec["volumes"].as_array_mut().expect("volumes");
    for v in volumes.iter_mut() {
        if let Some(path) = v["hostPath"]["path"].as_str() {
            let on_node = if path == "/var/log/journal" {
                node.journal.to_path_buf()
            } else {
                node.root.join(path.trim_start_matches('/'))
            };
            v["hostPath"]["path"] = json!(on_node.display().to_string());
        }
    }
    volumes.push(json!({
        "name": "kube-api-access",
        "hostPath": {"path": node.api.service_account_dir().display().to_string(), "type": "Directory"},
    }));
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name,
            "namespace": ds["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": spec,
    })
}

/// Removes the played pod, and the volume podman made of the ConfigMap, when dropped.
struct Played {
    pod: String,
    configmap_volume: String,
}

impl Played {
    /// Clears a ConfigMap volume a failed run may have left: podman would reuse its content.
    fn new(pod: &str, configmap: &str) -> Played {
        let played = Played {
            pod: pod.to_string(),
            configmap_volume: configmap.to_string(),
        };
        played.clean();
        played
    }

    fn clean(&self) {
        let _ = Podman::cmd()
            .args(["pod", "rm", "-f", "-t", "0", &self.pod])
            .output();
        let _ = Podman::cmd()
            .args(["volume", "rm", "-f", &self.configmap_volume])
            .output();
        deploy::remove_empty_conmon_cgroups();
    }
}

impl Drop for Played {
    fn drop(&mut self) {
        self.clean();
    }
}

#[test]
fn the_daemonsets_pod_ships_the_node_journal_and_pod_logs_and_answers_its_probes() {
    let test = "the_daemonsets_pod";
    if !deploy::skip_unless(
        test,
        Podman::image_missing()
            .or_else(cwl_testkit::journald::journald_unavailable)
            .or_else(|| deploy::missing_tools(&["kubectl", "python3"])),
    ) {
        return;
    }
    let docs = rendered_manifests();
    let ds = of_kind(&docs, "DaemonSet");
    let cm = of_kind(&docs, "ConfigMap");

    let moto = Moto::start().expect("moto");
    let mut jd = Journald::start("").expect("journald");
    let id = std::process::id();
    let cluster = format!("kube-{id}");
    let node_name = format!("node-{id}");
    let app_pod = format!("web-{id}");
    let api = FakeKubeApi::start(json!({
        format!("default/{app_pod}"): {"uid": "u-web", "labels": {"app": "web", "tier": "front"}, "node": node_name},
    }));
    let node_root = tempfile::tempdir().expect("node root");
    let r = node_root.path();
    // What hostPath `type` demands: Directory and File must exist, DirectoryOrCreate not.
    std::fs::create_dir_all(r.join("var/log/pods")).expect("mkdir");
    std::fs::create_dir_all(r.join("etc")).expect("mkdir");
    std::fs::write(
        r.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .expect("write");
    write_pod_lines(
        &r.join("var/log/pods"),
        "default",
        &app_pod,
        "u-web",
        "early",
        100,
    );

    let pod_name = format!("logferry-{id}");
    let metrics_port = free_port();
    let pod = pod_from_daemonset(
        ds,
        &pod_name,
        &Node {
            root: r,
            journal: &jd.log_dir(),
            moto: &moto.endpoint(),
            api: &api,
            cluster: &cluster,
            node_name: &node_name,
            metrics_port,
        },
    );
    let files = tempfile::tempdir().expect("tmp");
    let pod_file = files.path().join("pod.json");
    let cm_file = files.path().join("configmap.json");
    std::fs::write(&pod_file, pod.to_string()).expect("write pod");
    std::fs::write(&cm_file, cm.to_string()).expect("write configmap");

    let _played = Played::new(&pod_name, cm["metadata"]["name"].as_str().expect("name"));
    let pod_path = pod_file.display().to_string();
    let cm_path = cm_file.display().to_string();
    let played = deploy::output(Podman::cmd().args([
        "kube",
        "play",
        "--network",
        "host",
        "--configmap",
        &cm_path,
        &pod_path,
    ]));
    assert!(
        played.status.success(),
        "podman kube play: {}{}",
        String::from_utf8_lossy(&played.stdout),
        String::from_utf8_lossy(&played.stderr)
    );
    let container = format!("{pod_name}-logferry");
    Podman::wait_log(&container, "journal opened", 1, WAIT);

    // The securityContext as written, as the running process has it.
    let inspect: Value =
        serde_json::from_str(&Podman::ok(&["inspect", &container])).expect("inspect json");
    let c = &inspect[0];
    assert_eq!(
        c["HostConfig"]["ReadonlyRootfs"], true,
        "readOnlyRootFilesystem"
    );
    let pid = c["State"]["Pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    for caps in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(caps), "0000000000000000", "drop ALL: {caps}");
    }
    assert_eq!(field("NoNewPrivs"), "1", "allowPrivilegeEscalation: false");
    assert_eq!(
        field("Seccomp"),
        "2",
        "seccompProfile RuntimeDefault: a filter"
    );
    assert!(
        field("Uid").split_whitespace().all(|u| u == "0"),
        "runAsUser 0"
    );
    for m in c["Mounts"].as_array().expect("mounts") {
        let dest = m["Destination"].as_str().unwrap_or("");
        let writable = m["RW"] == true;
        assert_eq!(
            writable,
            dest == "/var/lib/logferry",
            "only the state dir is writable: {m}"
        );
    }

    // The journal -> /k8s/CLUSTER/system, stream NODE_NAME.
    let sender = jd.sender();
    for i in 0..200 {
        sender.send_message(
            &format!("node {i:06}"),
            &[("SYSLOG_IDENTIFIER", b"kubelet")],
        );
    }
    jd.sync();
    let system = format!("/k8s/{cluster}/system");
    let got = wait_events(&moto.endpoint(), &system, &node_name, 200, WAIT);
    let shipped = got.iter().filter(|(_, t)| t.contains(" node ")).count();
    assert!(
        shipped >= 200,
        "{shipped} journal lines:\n{}",
        Podman::logs(&container)
    );

    // Container logs -> /k8s/CLUSTER/containers, one stream per container, with the pod's
    // labels from the API.
    write_pod_lines(
        &r.join("var/log/pods"),
        "default",
        &app_pod,
        "u-web",
        "later",
        100,
    );
    let containers = format!("/k8s/{cluster}/containers");
    let stream = format!("default.{app_pod}.app");
    let got = wait_events(&moto.endpoint(), &containers, &stream, 200, WAIT);
    assert_eq!(got.len(), 200, "{}", Podman::logs(&container));
    for (_, text) in &got {
        let e: Value = serde_json::from_str(text).expect("json event");
        assert_eq!(e["label.app"], "web", "{e}");
        assert_eq!(e["node"], node_name, "{e}");
    }
    // The labels came from the node-scoped list+watch that NODE_NAME enables (RBAC list and
    // watch), not from a GET per pod.
    let lists = api.requests_of(Request::List);
    assert!(
        lists
            .iter()
            .any(|r| r.contains(&node_name) && r.ends_with(" 200")),
        "no list of this node's pods: {:?}",
        api.requests()
    );
    assert!(
        !api.requests_of(Request::Watch).is_empty(),
        "{:?}",
        api.requests()
    );

    // The probes: their paths on their port, asked as the kubelet would.
    for probe in ["livenessProbe", "readinessProbe"] {
        let get = &pod["spec"]["containers"][0][probe]["httpGet"];
        let path = get["path"].as_str().expect("path").to_string();
        let answer = http_get(&format!("127.0.0.1:{}", get["port"]), &path);
        assert_eq!(
            answer.as_ref().map(|a| a.0),
            Some(200),
            "{probe} {path}: {answer:?}"
        );
    }

    // The state hostPath (DirectoryOrCreate) was created and holds the cursor.
    let state = r.join("var/lib/logferry");
    assert!(
        state.join("journald/journal.cursor").exists(),
        "cursor in the state hostPath"
    );
    // No token in logferry's output.
    assert!(!Podman::logs(&container).contains(TOKEN));

    // Stopping the pod: SIGTERM, flush within terminationGracePeriodSeconds, exit 0.
    let grace = pod["spec"]["terminationGracePeriodSeconds"].to_string();
    Podman::ok(&["pod", "stop", "-t", &grace, &pod_name]);
    assert_eq!(
        Podman::exit_code(&container),
        0,
        "{}",
        Podman::logs(&container)
    );
    Podman::ok(&["kube", "down", &pod_path]);
}
