//! A Kubernetes node for tests: pod log files as the kubelet writes them, and
//! `fake_kube_api.py`, a stand-in for the Kubernetes API server's pod reads over real HTTPS (a
//! CA made here, a bearer token): `GET /api/v1/namespaces/NS/pods/NAME`, and the node-scoped
//! list and watch of `/api/v1/pods?fieldSelector=spec.nodeName=NODE`.
//! No API server can run on these machines (none is packaged for Debian or PyPI).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use super::free_port;

/// The bearer token the fake server accepts (a test checks it never appears in output).
pub const TOKEN: &str = "kube-token-s3cr3t-do-not-log";

/// The fake API server, its kubeconfigs, the service account directory a kubelet would mount,
/// and its request log.
pub struct FakeKubeApi {
    dir: tempfile::TempDir,
    child: Child,
    port: u16,
}

impl FakeKubeApi {
    /// Serves `pods` (`{"NS/NAME": {"uid", "labels", "node", "delay"}}`).
    pub fn start(pods: serde_json::Value) -> FakeKubeApi {
        let dir = tempfile::tempdir().expect("tmp");
        let ca_key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name
            .push(DnType::CommonName, "fake kube CA");
        let ca = p.self_signed(&ca_key).expect("ca");
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        p.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = p.signed_by(&key, &ca, &ca_key).expect("sign");
        fs::write(dir.path().join("ca.pem"), ca.pem()).expect("write");
        fs::write(dir.path().join("server.pem"), cert.pem()).expect("write");
        fs::write(dir.path().join("server.key"), key.serialize_pem()).expect("write");
        fs::write(dir.path().join("requests.log"), "").expect("write");
        fs::write(dir.path().join("control.json"), "{}").expect("write");
        // What the kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount.
        let sa = dir.path().join("serviceaccount");
        fs::create_dir_all(&sa).expect("mkdir");
        fs::write(sa.join("token"), TOKEN).expect("write");
        fs::write(sa.join("ca.crt"), ca.pem()).expect("write");
        fs::write(sa.join("namespace"), "logferry").expect("write");
        let port = free_port();
        let mut api = FakeKubeApi {
            child: Command::new("sleep").arg("0").spawn().expect("placeholder"),
            dir,
            port,
        };
        api.set_pods(&pods);
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/support/fake_kube_api.py"
        );
        let d = api.dir.path();
        api.child = Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(d.join("server.pem"))
            .arg(d.join("server.key"))
            .arg(TOKEN)
            .arg(d.join("pods.json"))
            .arg(d.join("requests.log"))
            .arg(d.join("control.json"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 fake_kube_api.py");
        let mut line = String::new();
        if let Some(out) = api.child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        assert_eq!(line.trim(), "ready", "the fake API server did not start");
        api.write_kubeconfig("kubeconfig", port);
        // The same server and credentials, at a port nobody listens on.
        api.write_kubeconfig("kubeconfig-down", free_port());
        api.write_kubeconfig_with("kubeconfig-badtoken", port, "wrong-token-s3cr3t");
        api
    }

    pub fn set_pods(&self, pods: &serde_json::Value) {
        let tmp = self.dir.path().join("pods.json.new");
        fs::write(&tmp, pods.to_string()).expect("write");
        fs::rename(&tmp, self.dir.path().join("pods.json")).expect("rename");
    }

    /// Lists and watches answer `status` (`None`: they answer again); GETs still answer.
    pub fn set_list_watch_status(&self, status: Option<u16>) {
        self.control(|c| c["list_watch_status"] = serde_json::json!(status));
    }

    /// Ends every open watch with a 410 ERROR event, and makes every resourceVersion handed
    /// out so far too old: the client must list again.
    pub fn expire_watches(&self) {
        self.control(|c| {
            let n = c["expire"].as_u64().unwrap_or(0);
            c["expire"] = serde_json::json!(n + 1);
        });
    }

    fn control(&self, change: impl FnOnce(&mut serde_json::Value)) {
        let path = self.dir.path().join("control.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).expect("control")).expect("json");
        change(&mut c);
        let tmp = self.dir.path().join("control.json.new");
        fs::write(&tmp, c.to_string()).expect("write");
        fs::rename(&tmp, &path).expect("rename");
    }

    pub fn write_kubeconfig(&self, name: &str, port: u16) {
        self.write_kubeconfig_with(name, port, TOKEN);
    }

    pub fn write_kubeconfig_with(&self, name: &str, port: u16, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    \
             certificate-authority: {ca}\n\
             users:\n- name: logferry\n  user:\n    token: {token}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: logferry\n",
            ca = self.dir.path().join("ca.pem").display()
        );
        fs::write(self.dir.path().join(name), text).expect("kubeconfig");
    }

    pub fn kubeconfig(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Its port on 127.0.0.1 (KUBERNETES_SERVICE_PORT for an in-cluster client).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory a kubelet mounts at /var/run/secrets/kubernetes.io/serviceaccount: the
    /// token, the CA (ca.crt) and the namespace.
    pub fn service_account_dir(&self) -> PathBuf {
        self.dir.path().join("serviceaccount")
    }

    /// Requests served so far of one kind, as "GET PATH STATUS".
    pub fn requests_of(&self, kind: Request) -> Vec<String> {
        self.requests()
            .into_iter()
            .filter(|r| Request::of(r) == Some(kind))
            .collect()
    }

    /// Requests served so far, as "GET PATH STATUS".
    pub fn requests(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("requests.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The kinds of request the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `GET /api/v1/namespaces/NS/pods/NAME`.
    Get,
    /// `GET /api/v1/pods?fieldSelector=...`.
    List,
    /// The same with `watch=true`.
    Watch,
}

impl Request {
    /// The kind of a request log line.
    pub fn of(line: &str) -> Option<Request> {
        let path = line.split(' ').nth(1)?;
        if path.starts_with("/api/v1/namespaces/") {
            Some(Request::Get)
        } else if !path.starts_with("/api/v1/pods?") {
            None
        } else if path.contains("watch=true") || path.contains("watch=1") {
            Some(Request::Watch)
        } else {
            Some(Request::List)
        }
    }
}

/// Appends CRI lines `<tag> <i:05>` (`0..n`) to the log of container `app` of pod `ns/pod`
/// under a node's /var/log/pods, as the kubelet writes them.
pub fn write_pod_lines(pods_dir: &Path, ns: &str, pod: &str, uid: &str, tag: &str, n: usize) {
    use std::io::Write;
    let dir = pods_dir.join(format!("{ns}_{pod}_{uid}/app"));
    fs::create_dir_all(&dir).expect("mkdir");
    // Now, so CloudWatch takes them (it refuses events over 2 h ahead or 14 days old).
    let now = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
    let mut text = String::new();
    for i in 0..n {
        text.push_str(&format!("{now} stdout F {tag} {i:05}\n"));
    }
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("0.log"))
        .expect("open")
        .write_all(text.as_bytes())
        .expect("append");
}
