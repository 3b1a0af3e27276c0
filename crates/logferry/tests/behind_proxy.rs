//! Behind a corporate proxy: the real logferry binary, a real proxy (Debian's `tinyproxy`,
//! which logs every request line it forwards), and a real moto_server.
//!
//! - `HTTP_PROXY` (moto is plain HTTP): every CloudWatch call goes through the proxy, counted
//!   in its log and in moto's; `NO_PROXY` naming the endpoint's host bypasses it.
//! - `HTTPS_PROXY` with the real AWS endpoints, offline: the client sends `CONNECT host:443`
//!   through the proxy, so the proxy's log shows which endpoint the SDK's standard chain
//!   resolved: `AWS_USE_FIPS_ENDPOINT` → `logs-fips.REGION.amazonaws.com`,
//!   `AWS_USE_DUALSTACK_ENDPOINT` → `logs.REGION.api.aws` (the CONNECT fails, as there is no
//!   internet here; what matters is where it was sent).
//! - `logferry check` prints the endpoint and the proxy, never the proxy's credentials.
//! - A host without CA certificates (no `ca-certificates` package) gets an error saying so,
//!   not the SDK's panic: the system bundle is hidden in a private mount namespace.
//!
//! Needs tinyproxy (skipped outside CI without it, failed in CI).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::deploy;
use support::*;

const WAIT: Duration = Duration::from_secs(60);

struct Tinyproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Tinyproxy {
    fn start() -> Tinyproxy {
        let dir = tempfile::tempdir().expect("tmp");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        std::fs::write(
            dir.path().join("tinyproxy.conf"),
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{}\"\nLogLevel Info\n\
                 MaxClients 100\nAllow 127.0.0.1\nConnectPort 443\n",
                log.display()
            ),
        )
        .expect("tinyproxy.conf");
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(dir.path().join("tinyproxy.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tinyproxy");
        let up = wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "tinyproxy did not listen");
        Tinyproxy { child, port, dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines it forwarded (`POST http://...`, `CONNECT host:443`).
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("tinyproxy.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("]: Request (file descriptor "))
            .filter_map(|(_, rest)| rest.split_once("): ").map(|(_, r)| r.to_string()))
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ready(test: &str) -> bool {
    deploy::skip_unless(test, deploy::missing_tools(&["tinyproxy"]))
}

/// CloudWatch calls moto has answered so far (its request log).
fn moto_calls(moto: &Moto) -> usize {
    std::fs::read_to_string(moto.log_path())
        .unwrap_or_default()
        .matches("\"POST / HTTP/1.1\"")
        .count()
}

const STDIN_CONFIG: &str = r#"
data_dir = "@DATA@"
shutdown_grace = "20s"

[sources.in]
type = "stdin"

[sinks.cw]
type = "cloudwatch_logs"
inputs = ["in"]
log_group = "/proxy/test"
log_stream = "s"
batch_timeout = "200ms"
max_backoff = "1s"
# tinyproxy serves one request per client connection and closes it a moment later; a request
# the client sends on that connection meanwhile is never answered and waits out the timeout.
request_timeout = "5s"
"#;

fn lines_file(dir: &Path, tag: &str, n: usize) -> PathBuf {
    let path = dir.join(format!("{tag}.txt"));
    let text: String = (0..n).map(|i| format!("{tag} {i:06}\n")).collect();
    std::fs::write(&path, text).expect("write lines");
    path
}

/// Ships `n` lines on stdin with `env` set (after the tests' defaults), to moto via
/// AWS_ENDPOINT_URL; waits for logferry to exit (it does once stdin is delivered).
fn ship(moto: &Moto, stream_tag: &str, n: usize, env: &[(&str, &str)]) {
    let input = tempfile::tempdir().expect("tmp");
    let file = lines_file(input.path(), stream_tag, n);
    let config = STDIN_CONFIG.replace(
        "log_stream = \"s\"",
        &format!("log_stream = \"{stream_tag}\""),
    );
    let endpoint = moto.endpoint();
    let mut lf = Logferry::start_with(&config, |cmd| {
        cmd.env("AWS_ENDPOINT_URL", &endpoint)
            .env_remove("NO_PROXY")
            .stdin(std::fs::File::open(&file).expect("open"));
        for (k, v) in env {
            cmd.env(k, v);
        }
    });
    let status = lf.wait_exit(WAIT);
    assert!(status.success(), "logferry failed:\n{}", lf.log());
}

/// Asserts the `n` lines `ship` sent under `stream_tag` are in moto (reading moto is a call
/// too: count calls before).
fn assert_delivered(moto: &Moto, stream_tag: &str, n: usize) {
    let got = wait_events(&moto.endpoint(), "/proxy/test", stream_tag, n, WAIT);
    assert_eq!(got.len(), n);
}

#[test]
fn every_cloudwatch_call_goes_through_http_proxy_unless_no_proxy_names_the_host() {
    if !ready("every_cloudwatch_call_goes_through_http_proxy") {
        return;
    }
    let moto = Moto::start().expect("moto");
    let proxy = Tinyproxy::start();
    let target = format!("http://127.0.0.1:{}/", moto.port());

    let before = moto_calls(&moto);
    ship(&moto, "proxied", 500, &[("HTTP_PROXY", &proxy.url())]);
    let via_proxy = proxy
        .requests()
        .iter()
        .filter(|r| r.starts_with(&format!("POST {target}")))
        .count();
    let answered = moto_calls(&moto) - before;
    // CreateLogGroup, CreateLogStream and PutLogEvents at least; every one of them proxied.
    assert!(via_proxy >= 3, "{via_proxy} calls through the proxy");
    assert_eq!(
        via_proxy, answered,
        "moto answered calls that bypassed the proxy"
    );
    assert_delivered(&moto, "proxied", 500);

    // NO_PROXY names the endpoint's host: straight to moto, the proxy sees nothing more.
    let seen = proxy.requests().len();
    ship(
        &moto,
        "direct",
        200,
        &[
            ("HTTP_PROXY", &proxy.url()),
            ("NO_PROXY", "127.0.0.1,localhost"),
        ],
    );
    assert_eq!(proxy.requests().len(), seen, "NO_PROXY was ignored");
    assert_delivered(&moto, "direct", 200);
}

/// Runs logferry until the proxy has seen a CONNECT, with no endpoint override: the SDK
/// resolves the real AWS endpoint from the region and `env`.
fn connect_target(proxy: &Tinyproxy, env: &[(&str, &str)]) -> String {
    let seen = proxy.requests().len();
    let mut lf = Logferry::start_with(STDIN_CONFIG, |cmd| {
        cmd.env("HTTPS_PROXY", proxy.url())
            .env_remove("NO_PROXY")
            .stdin(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
    });
    if let Some(stdin) = lf.child.as_mut().and_then(|c| c.stdin.as_mut()) {
        use std::io::Write;
        let _ = stdin.write_all(b"one line\n");
    }
    let mut target = String::new();
    let found = wait_until(WAIT, || {
        target = proxy
            .requests()
            .into_iter()
            .skip(seen)
            .find(|r| r.starts_with("CONNECT "))
            .unwrap_or_default();
        !target.is_empty()
    });
    lf.kill9();
    assert!(found, "no CONNECT through the proxy:\n{}", lf.log());
    target
}

#[test]
fn https_proxy_carries_the_endpoint_the_standard_chain_resolves_fips_and_dual_stack() {
    if !ready("https_proxy_carries_the_endpoint") {
        return;
    }
    let proxy = Tinyproxy::start();
    let plain = connect_target(&proxy, &[]);
    assert!(
        plain.starts_with("CONNECT logs.us-east-1.amazonaws.com:443 "),
        "{plain}"
    );
    let fips = connect_target(&proxy, &[("AWS_USE_FIPS_ENDPOINT", "true")]);
    assert!(
        fips.starts_with("CONNECT logs-fips.us-east-1.amazonaws.com:443 "),
        "{fips}"
    );
    let dual = connect_target(&proxy, &[("AWS_USE_DUALSTACK_ENDPOINT", "true")]);
    assert!(
        dual.starts_with("CONNECT logs.us-east-1.api.aws:443 "),
        "{dual}"
    );
}

/// `logferry check` with `env`; returns its stdout.
fn check(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "logferry.toml", STDIN_CONFIG);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.args(["check", "--config"]).arg(&config);
    aws_env(&mut cmd);
    cmd.env_remove("NO_PROXY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    printed(&cmd.output().expect("logferry check"))
}

#[test]
fn check_prints_the_endpoint_and_the_proxy_without_its_credentials() {
    if !ready("check_prints_the_endpoint_and_the_proxy") {
        return;
    }
    let proxy = Tinyproxy::start();
    let with_password = format!("http://alice:pr0xy-s3cret@127.0.0.1:{}", proxy.port);
    let out = check(&[
        ("AWS_USE_FIPS_ENDPOINT", "true"),
        ("HTTPS_PROXY", &with_password),
    ]);
    assert!(
        out.contains("ok    sink cw endpoint: https://logs-fips.us-east-1.amazonaws.com\n"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "ok    sink cw proxy: https://logs-fips.us-east-1.amazonaws.com through {}\n",
            proxy.url()
        )),
        "{out}"
    );
    assert!(
        !out.contains("pr0xy-s3cret") && !out.contains("alice"),
        "{out}"
    );

    let out = check(&[
        ("AWS_USE_DUALSTACK_ENDPOINT", "true"),
        ("HTTPS_PROXY", &proxy.url()),
        ("NO_PROXY", ".amazonaws.com,.api.aws"),
    ]);
    assert!(
        out.contains("ok    sink cw proxy: none for https://logs.us-east-1.api.aws (set: HTTPS_PROXY, NO_PROXY)\n"),
        "{out}"
    );
    let moto = Moto::start().expect("moto");
    let out = check(&[
        ("AWS_ENDPOINT_URL", &moto.endpoint()),
        ("HTTP_PROXY", &proxy.url()),
    ]);
    assert!(
        out.contains(&format!("ok    sink cw endpoint: {}\n", moto.endpoint())),
        "{out}"
    );
    assert!(out.contains(&format!("through {}\n", proxy.url())), "{out}");
}

#[test]
fn a_host_without_ca_certificates_gets_an_error_not_a_panic() {
    let test = "a_host_without_ca_certificates_gets_an_error";
    if !deploy::skip_unless(test, deploy::missing_tools(&["unshare", "mount"])) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let config = write_config(dir.path(), "logferry.toml", STDIN_CONFIG);
    // Empty tmpfs over where Debian keeps its CA bundle and OpenSSL's directory.
    let script = format!(
        "mount -t tmpfs none /etc/ssl && mount -t tmpfs none /usr/lib/ssl; \
         exec {} run --config {} </dev/null",
        env!("CARGO_BIN_EXE_logferry"),
        config.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &script]);
    aws_env(&mut cmd);
    cmd.env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    let out = cmd.output().expect("unshare");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("no CA certificates found"), "{stderr}");
    assert!(
        stderr.contains("install the ca-certificates package"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
