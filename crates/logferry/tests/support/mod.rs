//! Test support: run the real `logferry` binary against real peers.
//!
//! The CloudWatch side is a real `moto_server` (through `cwl-testkit`), optionally behind the
//! validating, fault-injecting `cwl-proxy`; syslog comes from `logger`, `ncat` or raw sockets.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use cwl_testkit::{Moto, Proxy};
// Every test binary compiles this module and uses a part of it (hence also `dead_code`).
#[allow(unused_imports)]
pub use sink::{cw_sink, pipeline, pipeline_with, source, syslog_source};

pub mod sink;

pub mod deploy;
pub mod disk;
pub mod fake_kube;
pub mod prometheus;

/// A free loopback TCP port (also used for UDP: free for both in practice on a test box).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

/// Starts the proxy binary built alongside the tests.
pub fn proxy(upstream: &str) -> Proxy {
    Proxy::start(upstream).expect("start cwl-proxy (cargo build --workspace --bins first)")
}

/// A moto_server behind a `cwl-proxy`: logferry is pointed at the proxy (which checks every
/// request against CloudWatch's limits and injects faults on demand), the test reads back from
/// moto.
pub fn moto_behind_proxy() -> (Moto, Proxy) {
    let moto = Moto::start().expect("moto");
    let proxy = proxy(&moto.endpoint());
    (moto, proxy)
}

/// [`moto_behind_proxy`], the proxy injecting `faults` (its fault settings) from the start.
pub fn moto_behind_faulty_proxy(faults: serde_json::Value) -> (Moto, Proxy) {
    let (moto, proxy) = moto_behind_proxy();
    proxy.set_faults(&faults).expect("faults");
    (moto, proxy)
}

/// Asserts the proxy saw no request that breaks a PutLogEvents limit.
pub fn assert_no_violations(proxy: &Proxy) {
    let stats = proxy.stats().expect("proxy stats");
    assert_eq!(
        stats["violations"], 0,
        "PutLogEvents limit violations: {stats:#}"
    );
}

/// A running logferry process with its own data dir and log file.
pub struct Logferry {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
}

pub fn aws_env(cmd: &mut Command) {
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDTESTING")
        .env("AWS_SECRET_ACCESS_KEY", "planted-secret-do-not-log")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("LOGFERRY_LOG_GROUP")
        .env_remove("LOGFERRY_LOG_STREAM")
        .env("LOGFERRY_LOG", "info,logferry=debug")
        // Tests run in parallel: no fixed metrics port unless a test asks for one.
        .env("LOGFERRY_METRICS_ADDRESS", "off");
}

/// Writes `config` to `dir/name` with `@DATA@` replaced by `dir/data`; returns its path. The
/// file is 0644, as a config file usually is, whatever the umask the tests run under (the
/// permission warnings logferry prints depend on it).
pub fn write_config(dir: &Path, name: &str, config: &str) -> PathBuf {
    let path = dir.join(name);
    let text = config.replace("@DATA@", &dir.join("data").display().to_string());
    std::fs::write(&path, text).expect("write config");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod config");
    path
}

/// What a finished command printed: its stdout, then its stderr.
pub fn printed(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Logferry {
    /// Writes `config` (with `@DATA@` replaced by the data dir) and starts `logferry run`.
    pub fn start(config: &str) -> Logferry {
        Self::start_with(config, |_| {})
    }

    /// Like [`Logferry::start`], letting the caller adjust the command (env, stdin).
    pub fn start_with(config: &str, adjust: impl FnOnce(&mut Command)) -> Logferry {
        let dir = tempfile::tempdir().expect("tempdir");
        let config_path = write_config(dir.path(), "logferry.toml", config);
        let log_path = dir.path().join("logferry.log");
        let mut lf = Logferry {
            child: None,
            dir,
            config_path,
            log_path,
        };
        lf.spawn(adjust);
        lf
    }

    /// Starts (again) the process on the same config and data dir.
    pub fn spawn(&mut self, adjust: impl FnOnce(&mut Command)) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--log-format")
            .arg("json")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        aws_env(&mut cmd);
        adjust(&mut cmd);
        let before = self.log().matches("\"listening\"").count();
        self.child = Some(cmd.spawn().expect("spawn logferry"));
        let _ = before;
    }

    /// Waits until `n` sources report listening (counting from the start of the log file).
    pub fn wait_listening(&self, n: usize) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.log().matches("\"message\":\"listening\"").count() >= n
        });
        assert!(ok, "logferry did not start listening:\n{}", self.log());
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY-free: `kill` is a separate program.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < end,
                "logferry did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills with SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGHUP (reload the config file); panics if the signal cannot be delivered.
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .arg("-HUP")
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -HUP {} failed", self.pid());
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let end = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("logferry did not exit in {timeout:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Logferry {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A thread writing numbered lines all the time, as a busy host's sources are written: it calls
/// `write(i..i + 50)` every 50 ms (about 1,000 lines/s), `i` from 0 up, until [`Writer::stop`].
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Writer {
    pub fn start(mut write: impl FnMut(std::ops::Range<usize>) + Send + 'static) -> Writer {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut i = 0;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                write(i..i + 50);
                i += 50;
                std::thread::sleep(Duration::from_millis(50));
            }
            i
        });
        Writer { stop, thread }
    }

    /// Stops writing; returns how many lines were written (`0..n`).
    pub fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().expect("writer")
    }
}

/// Sends `data` over one TCP connection and closes it.
pub fn tcp_send(port: u16, data: &[u8]) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.write_all(data).expect("send");
}

/// Pipes `data` into a real `ncat` client run with `args` and waits for it to succeed.
pub fn ncat_send(args: &[&str], data: &[u8]) {
    let mut ncat = Command::new("ncat")
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("ncat");
    ncat.stdin
        .as_mut()
        .expect("stdin")
        .write_all(data)
        .expect("write");
    drop(ncat.stdin.take());
    assert!(ncat.wait().expect("ncat").success(), "ncat {args:?}");
}

/// GET `path` from a plain-HTTP server at `addr`: (status, body).
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Runs `cmd` with `input` on its stdin (then closed); returns what it printed and how it
/// exited. For commands that print little: their output is read once the input is written.
pub fn output_fed(cmd: &mut Command, input: &[u8]) -> std::io::Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child.stdin.take().expect("stdin").write_all(input)?;
    child.wait_with_output()
}

/// Runs a command, asserting success.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}", printed(&out));
}

/// All events of `group`/`stream` in moto; empty only when the group or stream does not exist
/// (nothing was sent there). Any other failure to read panics: a read error taken for "no
/// events" would make every "nothing was sent" assertion pass.
pub fn events(endpoint: &str, group: &str, stream: &str) -> Vec<(i64, String)> {
    match cwl_testkit::client::read_events(endpoint, group, stream) {
        Ok(events) => events,
        Err(e) if e.to_string().contains("ResourceNotFoundException") => Vec::new(),
        Err(e) => panic!("reading {group}/{stream} from {endpoint} failed: {e}"),
    }
}

/// Waits until `group`/`stream` holds at least `n` events and two reads in a row agree (moto
/// pages by index into a sorted list, so a read during ingestion can repeat or skip events);
/// returns them. Panics when `n` never arrive: a result thrown away must still fail the test.
pub fn wait_events(
    endpoint: &str,
    group: &str,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Vec<(i64, String)> {
    wait_stable(endpoint, group, stream, timeout, |got| got.len() >= n).unwrap_or_else(|got| {
        panic!(
            "{group}/{stream}: {} of {n} events arrived within {timeout:?}",
            got.len()
        )
    })
}

/// Like [`wait_events`], but counts distinct messages: a duplicate must not end the wait while
/// other events are still on their way (the test would then report them lost, not the
/// duplicate).
pub fn wait_distinct(
    endpoint: &str,
    group: &str,
    stream: &str,
    n: usize,
    timeout: Duration,
) -> Vec<(i64, String)> {
    wait_stable(endpoint, group, stream, timeout, |got| {
        tally(got).len() >= n
    })
    .unwrap_or_else(|got| {
        panic!(
            "{group}/{stream}: {} of {n} distinct events arrived within {timeout:?} ({} in all)",
            tally(&got).len(),
            got.len()
        )
    })
}

/// What a stream holds: (timestamp in ms, message), in CloudWatch's order.
type Events = Vec<(i64, String)>;

/// Reads `group`/`stream` until `enough` holds for two reads in a row that agree; `Err` with
/// the last read at `timeout`.
fn wait_stable(
    endpoint: &str,
    group: &str,
    stream: &str,
    timeout: Duration,
    enough: impl Fn(&[(i64, String)]) -> bool,
) -> Result<Events, Events> {
    let mut got = Vec::new();
    wait_until(timeout, || {
        got = events(endpoint, group, stream);
        if !enough(&got) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(300));
        let again = events(endpoint, group, stream);
        let stable = again == got;
        got = again;
        stable
    });
    if enough(&got) {
        Ok(got)
    } else {
        Err(got)
    }
}

/// How many times each message arrived (a duplicate counts 2).
pub fn tally(got: &[(i64, String)]) -> std::collections::BTreeMap<&str, usize> {
    let mut m = std::collections::BTreeMap::new();
    for (_, line) in got {
        *m.entry(line.as_str()).or_default() += 1;
    }
    m
}

/// Asserts nothing arrived twice: `counts` holds how many times each message (or index) arrived.
/// Names the first ten that arrived more than once, after `what`.
pub fn assert_none_twice<K: std::fmt::Debug>(
    counts: &std::collections::BTreeMap<K, usize>,
    what: &str,
) {
    let twice: Vec<(&K, &usize)> = counts.iter().filter(|(_, k)| **k > 1).collect();
    assert!(
        twice.is_empty(),
        "{what}: {} sent twice (first {:?})",
        twice.len(),
        &twice[..twice.len().min(10)]
    );
}

/// Dead-letter lines written by the sink named `sink`.
pub fn dead_letters(data_dir: &Path, sink: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data_dir.join("dead-letter").join(format!("{sink}.jsonl")))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A seed for a test's random choices: `LOGFERRY_TEST_SEED` when set (to repeat a run), else
/// a fresh one. Printed either way, so a failure can be replayed.
pub fn test_seed(test: &str) -> u64 {
    let seed = std::env::var("LOGFERRY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ u64::from(std::process::id())
        });
    eprintln!("{test}: seed {seed} (LOGFERRY_TEST_SEED={seed} repeats this run)");
    seed
}

/// A container log file as the kubelet lays them out, `<pods>/<ns>_<pod>_<uid>/<container>/0.log`
/// (the uid ends in the pod's name), its directory created.
pub fn pod_log(pods: &Path, ns: &str, pod: &str, container: &str) -> PathBuf {
    let path = pods.join(format!("{ns}_{pod}_0b5e1c1e-1111-2222-3333-{pod:0>12}"));
    let path = path.join(container).join("0.log");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
    path
}

/// Appends `text` to `path`, creating it.
pub fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open")
        .write_all(text.as_bytes())
        .expect("append");
}

/// Starts logferry with `/metrics` on a free loopback port; returns it with that address.
pub fn start_with_metrics(config: &str) -> (Logferry, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let a = addr.clone();
    let lf = Logferry::start_with(config, move |cmd| {
        cmd.env("LOGFERRY_METRICS_ADDRESS", &a);
    });
    (lf, addr)
}

/// Starts `lf` again (same config and data dir) with `/metrics` on a free loopback port;
/// returns that address.
pub fn respawn_with_metrics(lf: &mut Logferry) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    let a = addr.clone();
    lf.spawn(move |cmd| {
        cmd.env("LOGFERRY_METRICS_ADDRESS", &a);
    });
    addr
}

/// Asserts that the restarted logferry at `metrics` read nothing again that was delivered
/// before: no sink skipped a re-read event as already delivered. The in-flight ledger
/// acknowledges, without sending, events re-read from a position that was lost or reset, so
/// "nothing was sent again" alone cannot tell a resumed position from a lost one.
pub fn assert_nothing_reread(metrics: &str, log: &str) {
    let name = "logferry_sink_events_skipped_delivered_total";
    let mut skipped = None;
    wait_until(Duration::from_secs(30), || {
        skipped = metric(metrics, name, &[]);
        skipped.is_some()
    });
    assert_eq!(
        skipped,
        Some(0.0),
        "the restart read delivered events again (the ledger skipped them): the saved position \
         was not resumed\n{log}"
    );
}

/// The sum of every sample of metric `name` whose labels contain all of `labels` (e.g.
/// `reason="peer_not_allowed"`); None when the endpoint does not answer. The exposition is
/// parsed strictly ([`prometheus::Exposition`]): a malformed one fails the test.
pub fn metric(addr: &str, name: &str, labels: &[&str]) -> Option<f64> {
    let (status, body) = http_get(addr, "/metrics")?;
    if status != 200 {
        return None;
    }
    let exposition = prometheus::Exposition::parse(&body)
        .unwrap_or_else(|e| panic!("/metrics is not valid Prometheus text: {e}\n{body}"));
    // None for a metric that is not exported: `== Some(0.0)` must not pass for a metric that
    // does not exist.
    exposition.sum(name, labels)
}

/// A field of /proc/PID/status in KiB (`VmHWM`: peak resident set, `VmRSS`: now).
///
/// Panics when the process is gone or the field is missing: reading 0 would satisfy every
/// memory bound.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("process {pid} is gone (crashed?): {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

/// Descriptors process `pid` holds on files under `dir`. Panics when the process is gone:
/// reading 0 for a crashed logferry would pass every "released" check.
pub fn fd_count_under(pid: u32, dir: &Path) -> usize {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("process {pid} is gone (crashed?): {e}"));
    fds.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|t| t.starts_with(dir))
        .count()
}

/// `2026-12-02T14:00:00.123Z` for a time in ms since the epoch (logferry's own formatter).
pub fn rfc3339(ms: i64) -> String {
    let mut out = String::new();
    logferry::format::rfc3339_ms(ms, &mut out);
    out
}

/// Now, in ms since the epoch (what logferry stamps events with).
pub fn now_ms() -> i64 {
    logferry::event::now_ms()
}
