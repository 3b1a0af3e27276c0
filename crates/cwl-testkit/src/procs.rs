//! Child-process handles for `moto_server`, `cwl-proxy` and `fake-cloudwatch`.
//!
//! Each handle starts its process on a free loopback port, waits until it answers, and
//! kills and reaps it on `Drop`, so a failing test leaves no server (and no zombie)
//! behind. Output goes to a log file in a private temporary directory (moto) or is read
//! from a pipe by a background thread (our binaries print their address first and their
//! final stats last).

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn private_dir(prefix: &str) -> io::Result<PathBuf> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn kill_and_reap(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A running `moto_server`, killed on drop.
///
/// The program is `$MOTO_SERVER` if set, else `moto_server` from `PATH`.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Moto {
    /// Starts `moto_server -H 127.0.0.1 -p PORT` on a free port and waits (up to 30 s)
    /// until it answers a CloudWatch Logs call. Retries on another port if it dies early.
    pub fn start() -> io::Result<Moto> {
        let program: OsString =
            std::env::var_os("MOTO_SERVER").unwrap_or_else(|| "moto_server".into());
        let dir = private_dir("cwl-testkit-moto")?;
        let mut last_err = None;
        for _attempt in 0..3 {
            let port = free_port()?;
            let log = std::fs::File::create(dir.join("moto.log"))?;
            let child = Command::new(&program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program:?}: {e}")))?;
            let mut moto = Moto {
                child,
                port,
                dir: dir.clone(),
            };
            match moto.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return Ok(moto),
                Err(e) => {
                    kill_and_reap(&mut moto.child);
                    // Keep the directory for the next attempt: forget this handle's Drop.
                    std::mem::forget(moto);
                    last_err = Some(e);
                }
            }
        }
        let log = std::fs::read_to_string(dir.join("moto.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        Err(io::Error::other(format!(
            "moto_server did not start: {}; log:\n{log}",
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!("moto_server exited: {status}")));
            }
            if let Ok((200, _)) = client::call(&self.endpoint(), "DescribeLogGroups", &json!({})) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "moto_server not answering",
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The moto_server process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// moto's combined stdout/stderr (removed on drop).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("moto.log")
    }

    /// Clears all of moto's state (`POST /moto-api/reset`).
    pub fn reset(&self) -> io::Result<()> {
        let r = client::http_request(&self.endpoint(), "POST", "/moto-api/reset", &[], b"")?;
        if r.status == 200 {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "moto reset answered {}",
                r.status
            )))
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A child that printed `listening <url>` as its first stdout line; the rest of stdout is
/// collected by a thread so that the final stats line can be returned by `stop`.
#[derive(Debug)]
struct Announced {
    child: Child,
    endpoint: String,
    rest: Option<JoinHandle<Vec<String>>>,
}

impl Announced {
    fn spawn(bin: &Path, args: &[&str], name: &str) -> io::Result<Announced> {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot run {name} at {}: {e}", bin.display()),
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        let rest = std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first.and_then(Result::ok));
            lines.map_while(Result::ok).collect::<Vec<_>>()
        });
        let first = rx.recv_timeout(Duration::from_secs(30)).ok().flatten();
        let endpoint = first
            .as_deref()
            .and_then(|l| l.strip_prefix("listening "))
            .map(|s| s.trim().to_string());
        match endpoint {
            Some(endpoint) => Ok(Announced {
                child,
                endpoint,
                rest: Some(rest),
            }),
            None => {
                kill_and_reap(&mut child);
                Err(io::Error::other(format!(
                    "{name} did not announce its address (first line {first:?})"
                )))
            }
        }
    }

    /// SIGTERM, wait for exit, return the lines printed after the first one.
    fn stop(&mut self) -> io::Result<Vec<String>> {
        // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                kill_and_reap(&mut self.child);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let rest = self.rest.take().map(|h| h.join().unwrap_or_default());
        Ok(rest.unwrap_or_default())
    }
}

impl Drop for Announced {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// Finds one of this crate's binaries for [`Proxy::start`] / [`FakeCloudWatch::start`]:
/// `$<ENV_VAR>` if set, else next to the running test executable
/// (`target/<profile>/deps/../<name>`, then `target/<profile>/<name>`).
pub fn find_binary(name: &str, env_var: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env_var) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join(name));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(name));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{name} binary not found next to {}: build it (cargo build -p cwl-testkit --bins) \
                 and set {env_var}, or pass its path explicitly",
                exe.display()
            ),
        )
    })
}

/// A running `cwl-proxy` in front of `upstream`, killed on drop.
#[derive(Debug)]
pub struct Proxy {
    inner: Announced,
}

impl Proxy {
    /// Starts the proxy found by [`find_binary`]`("cwl-proxy", "CWL_PROXY_BIN")`.
    pub fn start(upstream: &str) -> io::Result<Proxy> {
        Self::start_with_binary(find_binary("cwl-proxy", "CWL_PROXY_BIN")?, upstream)
    }

    /// Starts the proxy binary at `bin` (in this crate's own tests:
    /// `env!("CARGO_BIN_EXE_cwl-proxy")`).
    pub fn start_with_binary(bin: impl AsRef<Path>, upstream: &str) -> io::Result<Proxy> {
        Self::start_with_args(bin, upstream, &[])
    }

    /// Like [`Proxy::start_with_binary`] with extra arguments, e.g. `&["--seed", "7"]`.
    pub fn start_with_args(
        bin: impl AsRef<Path>,
        upstream: &str,
        extra: &[&str],
    ) -> io::Result<Proxy> {
        let mut args = vec!["--listen", "127.0.0.1:0", "--upstream", upstream];
        args.extend_from_slice(extra);
        Ok(Proxy {
            inner: Announced::spawn(bin.as_ref(), &args, "cwl-proxy")?,
        })
    }

    /// `http://127.0.0.1:PORT`: point the client under test here.
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.clone()
    }

    fn admin(&self, method: &str, path: &str, body: &[u8]) -> io::Result<Value> {
        let r = client::http_request(
            &self.inner.endpoint,
            method,
            path,
            &[("Content-Type", "application/json")],
            body,
        )?;
        if r.status == 200 {
            Ok(r.json())
        } else {
            Err(io::Error::other(format!(
                "{method} {path} answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )))
        }
    }

    /// Replaces the fault configuration (`POST /__proxy/faults`); missing fields are 0/off.
    pub fn set_faults(&self, faults: &Value) -> io::Result<()> {
        self.admin("POST", "/__proxy/faults", faults.to_string().as_bytes())
            .map(drop)
    }

    /// Replaces the account-wide quotas (`POST /__proxy/quota`), e.g.
    /// `{"PutLogEvents": {"per_second": 20}, "CreateLogStream": {"per_second": 4, "burst": 4}}`:
    /// one token bucket per operation shared by every client; `{}` removes them.
    pub fn set_quota(&self, quota: &Value) -> io::Result<()> {
        self.admin("POST", "/__proxy/quota", quota.to_string().as_bytes())
            .map(drop)
    }

    /// Turns every fault off.
    pub fn clear_faults(&self) -> io::Result<()> {
        self.set_faults(&json!({}))
    }

    /// Counters and violations (`GET /__proxy/stats`).
    pub fn stats(&self) -> io::Result<Value> {
        self.admin("GET", "/__proxy/stats", b"")
    }

    /// One record per PutLogEvents seen (`GET /__proxy/puts`).
    pub fn puts(&self) -> io::Result<Value> {
        self.admin("GET", "/__proxy/puts", b"")
    }

    /// Clears counters, violations and records (`POST /__proxy/reset`); faults stay.
    pub fn reset_stats(&self) -> io::Result<()> {
        self.admin("POST", "/__proxy/reset", b"").map(drop)
    }
}

/// A running `fake-cloudwatch`, killed on drop.
#[derive(Debug)]
pub struct FakeCloudWatch {
    inner: Announced,
    ca_path: Option<PathBuf>,
    dir: PathBuf,
}

impl FakeCloudWatch {
    /// Starts the binary found by [`find_binary`]`("fake-cloudwatch", "FAKE_CLOUDWATCH_BIN")`
    /// over HTTPS with a fresh CA written to [`FakeCloudWatch::ca_path`].
    pub fn start() -> io::Result<FakeCloudWatch> {
        Self::start_with_binary(find_binary("fake-cloudwatch", "FAKE_CLOUDWATCH_BIN")?, &[])
    }

    /// Starts the binary at `bin` with extra arguments (e.g. `&["--plain-http"]`,
    /// `&["--threads", "2"]`). `--listen` and `--ca-out` are supplied.
    pub fn start_with_binary(bin: impl AsRef<Path>, extra: &[&str]) -> io::Result<Self> {
        let dir = private_dir("cwl-testkit-fake")?;
        let plain = extra.contains(&"--plain-http");
        let ca = dir.join("ca.pem");
        let ca_str = ca.to_string_lossy().into_owned();
        let mut args = vec!["--listen", "127.0.0.1:0"];
        if !plain {
            args.extend(["--ca-out", ca_str.as_str()]);
        }
        args.extend_from_slice(extra);
        let inner = Announced::spawn(bin.as_ref(), &args, "fake-cloudwatch")?;
        Ok(FakeCloudWatch {
            inner,
            ca_path: (!plain).then_some(ca),
            dir,
        })
    }

    /// `https://127.0.0.1:PORT` (or `http://` with `--plain-http`).
    pub fn endpoint(&self) -> String {
        self.inner.endpoint.clone()
    }

    /// The CA certificate (PEM) the client must trust; `None` with `--plain-http`.
    pub fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// `GET /stats` (plain-HTTP mode only: this library has no TLS client).
    pub fn stats(&self) -> io::Result<Value> {
        let r = client::http_request(&self.inner.endpoint, "GET", "/stats", &[], b"")?;
        Ok(r.json())
    }

    /// Sends SIGTERM and returns the stats JSON the server prints as its last line.
    pub fn stop(mut self) -> io::Result<Value> {
        let lines = self.inner.stop()?;
        let last = lines
            .iter()
            .rev()
            .find(|l| l.starts_with('{'))
            .ok_or_else(|| io::Error::other("fake-cloudwatch printed no stats"))?;
        serde_json::from_str(last).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

impl Drop for FakeCloudWatch {
    fn drop(&mut self) {
        kill_and_reap(&mut self.inner.child);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
