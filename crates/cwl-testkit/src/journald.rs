//! A real `systemd-journald` for tests, writing into a private temporary directory.
//!
//! journald runs in a private mount namespace (`unshare --mount`) where its socket directory
//! (`/run/systemd/journal`), its runtime journal directory (`/run/log/journal`) and its config
//! (`/etc/systemd/journald.conf`) are bind mounts of paths under a temporary directory, so a
//! test never touches the host's journal and several tests can run at once. Storage is
//! volatile, rate limiting is off and files rotate at 1 MiB (override with `extra_conf`).
//!
//! Entries are written over journald's native protocol (`FIELD=value` lines in one datagram,
//! the binary form for values containing a newline) and can be read back with
//! `journalctl -D <log_dir>`.
//!
//! This needs root (for the mount namespace) and `/lib/systemd/systemd-journald`:
//! [`Journald::start`] returns `None` after printing `SKIPPED: <why>` when they are missing,
//! so a test can skip cleanly:
//!
//! ```no_run
//! let Some(mut jd) = cwl_testkit::Journald::start("") else { return };
//! jd.send_message("hello", &[("PRIORITY", b"6"), ("SYSLOG_IDENTIFIER", b"app")]);
//! jd.sync();
//! let out = cwl_testkit::journald::journalctl(&jd.log_dir(), &["-o", "cat"]);
//! assert!(String::from_utf8_lossy(&out).contains("hello"));
//! ```

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The journald binary (Debian/Ubuntu path).
pub const JOURNALD: &str = "/lib/systemd/systemd-journald";
/// `systemd-journal-remote`, which turns an export stream into a journal file.
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Why a private journald cannot be run here, if it cannot.
pub fn journald_unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: cannot create a mount namespace for a private journald".into());
    }
    for tool in [JOURNALD, "/usr/bin/unshare", "/usr/bin/journalctl"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} missing"));
        }
    }
    None
}

/// True, after [`crate::skipped`] has recorded it (a panic under CI), when journald tests
/// cannot run here.
pub fn skip(test: &str) -> bool {
    journald_unavailable().is_some_and(|why| crate::skipped(test, &why))
}

/// Encodes one entry in journald's native protocol: `NAME=value\n`, or
/// `NAME\n<u64 LE length><bytes>\n` for values that contain a newline.
pub fn encode_entry(fields: &[(&str, &[u8])]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(fields.iter().map(|(n, v)| n.len() + v.len() + 10).sum());
    for (name, value) in fields {
        msg.extend_from_slice(name.as_bytes());
        if value.contains(&b'\n') {
            msg.push(b'\n');
            msg.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            msg.push(b'=');
        }
        msg.extend_from_slice(value);
        msg.push(b'\n');
    }
    msg
}

/// Writes entries to a journald socket; independent of the [`Journald`] handle so a writer
/// thread can own one while the test restarts journald or the shipper.
#[derive(Debug)]
pub struct JournalSender {
    socket: PathBuf,
    sock: UnixDatagram,
}

impl JournalSender {
    /// A sender for the native socket at `socket`.
    pub fn new(socket: &Path) -> io::Result<JournalSender> {
        Ok(JournalSender {
            socket: socket.to_path_buf(),
            sock: UnixDatagram::unbound()?,
        })
    }

    /// Sends one entry, retrying for up to ~10 s while journald is restarting or its queue
    /// is full. Panics if it still cannot (a test helper: a lost entry must not go unnoticed).
    pub fn send(&self, fields: &[(&str, &[u8])]) {
        let msg = encode_entry(fields);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.sock.send_to(&msg, &self.socket) {
                Ok(_) => return,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("send to journald at {}: {e}", self.socket.display()),
            }
        }
    }

    /// Sends `MESSAGE=msg` plus `extra` fields.
    pub fn send_message(&self, msg: &str, extra: &[(&str, &[u8])]) {
        let mut fields: Vec<(&str, &[u8])> = Vec::with_capacity(extra.len() + 1);
        fields.push(("MESSAGE", msg.as_bytes()));
        fields.extend_from_slice(extra);
        self.send(&fields);
    }
}

/// A running private journald (killed, and its directory removed, on drop).
#[derive(Debug)]
pub struct Journald {
    root: PathBuf,
    child: Option<Child>,
    sender: JournalSender,
    extra_conf: String,
    sync_seq: u64,
}

impl Journald {
    /// Starts journald with volatile storage, no rate limit and 1 MiB files (so tests see
    /// rotation); `extra_conf` lines are appended to `[Journal]` (a later key wins).
    /// Returns `None`, after [`crate::skipped`] has recorded it (a panic under CI), when
    /// journald cannot run here. Panics if it should run but does not start within 20 s.
    pub fn start(extra_conf: &str) -> Option<Journald> {
        if let Some(why) = journald_unavailable() {
            crate::skipped("a test with a real journald", &why);
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("lf-journald-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for d in [
            root.join("sock"),
            root.join("log"),
            PathBuf::from("/run/systemd/journal"),
            PathBuf::from("/run/log/journal"),
        ] {
            std::fs::create_dir_all(&d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        let sender = JournalSender::new(&root.join("sock/socket")).expect("unix datagram socket");
        let mut j = Journald {
            root,
            child: None,
            sender,
            extra_conf: extra_conf.to_string(),
            sync_seq: 0,
        };
        j.spawn();
        Some(j)
    }

    /// The temporary directory holding everything (`sock/`, `log/`, `journald.conf`,
    /// `journald.out`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The journal directory (`journalctl -D` it; holds one machine-id directory).
    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    /// journald's native-protocol socket.
    pub fn socket_path(&self) -> PathBuf {
        self.root.join("sock/socket")
    }

    /// journald's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A new independent sender for this journald's socket (for writer threads).
    pub fn sender(&self) -> JournalSender {
        JournalSender::new(&self.socket_path()).expect("unix datagram socket")
    }

    fn spawn(&mut self) {
        let t = self.root.clone();
        let conf = format!(
            "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n\
             RuntimeMaxFileSize=1M\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\n\
             ForwardToConsole=no\nForwardToKMsg=no\n{}\n",
            self.extra_conf
        );
        std::fs::write(t.join("journald.conf"), conf).expect("write journald.conf");
        let _ = std::fs::remove_file(self.socket_path());
        let script = format!(
            "mount --bind {t}/sock /run/systemd/journal && \
             mount --bind {t}/log /run/log/journal && \
             mount --bind {t}/journald.conf /etc/systemd/journald.conf && \
             exec {JOURNALD}",
            t = t.display()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(t.join("journald.out"))
            .expect("journald.out");
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn journald");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket_path().exists() || self.active_file().is_none() {
            if Instant::now() > deadline {
                let out = std::fs::read_to_string(t.join("journald.out")).unwrap_or_default();
                panic!("journald did not start: {out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The file journald writes to (`<machine-id>/system.journal`), once it exists.
    pub fn active_file(&self) -> Option<PathBuf> {
        let rd = std::fs::read_dir(self.log_dir()).ok()?;
        for d in rd.flatten() {
            let p = d.path().join("system.journal");
            if p.exists() {
                return Some(p);
            }
        }
        None
    }

    /// Sends one entry over the native protocol (see [`JournalSender::send`]).
    pub fn send(&self, fields: &[(&str, &[u8])]) {
        self.sender.send(fields)
    }

    /// Sends `MESSAGE=msg` plus `extra` fields.
    pub fn send_message(&self, msg: &str, extra: &[(&str, &[u8])]) {
        self.sender.send_message(msg, extra)
    }

    /// Waits until everything sent so far (from any sender) is in the journal files: sends a
    /// marker entry (`MESSAGE=sync`, `LF_SYNC=<id>`) and waits until journalctl sees it
    /// (journald handles datagrams in order). The marker is an entry like any other.
    pub fn sync(&mut self) {
        self.sync_seq += 1;
        let marker = format!("{}-{}", std::process::id(), self.sync_seq);
        self.send(&[("MESSAGE", b"sync"), ("LF_SYNC", marker.as_bytes())]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = journalctl(
                &self.log_dir(),
                &["-q", "-o", "cat", &format!("LF_SYNC={marker}")],
            );
            if String::from_utf8_lossy(&out).contains("sync") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "journald did not write the marker"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Clean stop (SIGTERM): journald marks its files OFFLINE.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid, which is not reaped yet.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Crash (SIGKILL): the active file stays ONLINE; the next journald renames it to
    /// `*.journal~` and starts a new one.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kill -9 then start again on the same directories.
    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    /// Starts again after [`Journald::stop`] or [`Journald::kill9`].
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "journald is still running");
        self.spawn();
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        self.kill9();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Runs `journalctl -D dir --no-pager ARGS` and returns its stdout. Panics if it cannot run
/// or fails with output on stderr and nothing on stdout.
pub fn journalctl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .arg("--no-pager")
        .args(args)
        .output()
        .expect("run journalctl");
    assert!(
        out.status.success() || out.stdout.is_empty() && out.stderr.is_empty(),
        "journalctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// All journal files under `dir` (recursively), sorted.
pub fn journal_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(journal_files(&p));
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".journal") || n.ends_with(".journal~"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// journalctl's export output for `-D dir` with extra args.
pub fn journalctl_export(dir: &Path, extra: &[&str]) -> Vec<u8> {
    let out = Command::new("journalctl")
        .arg("-D")
        .arg(dir)
        .args(["-o", "export", "--no-pager"])
        .args(extra)
        .output()
        .expect("run journalctl");
    assert!(
        out.status.success() || out.status.code() == Some(1) && out.stdout.is_empty(),
        "journalctl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A parsed export stream: entries of (name, value) in order.
pub type Exported = Vec<Vec<(String, Vec<u8>)>>;

/// Parses journald's export format (`NAME=value\n` or `NAME\n<u64 LE len><bytes>\n`,
/// entries separated by an empty line). Panics on malformed input (test helper).
pub fn parse_export(mut data: &[u8]) -> Exported {
    let mut entries = Vec::new();
    let mut cur = Vec::new();
    while !data.is_empty() {
        let nl = data
            .iter()
            .position(|&b| b == b'\n')
            .expect("unterminated line");
        let line = &data[..nl];
        data = &data[nl + 1..];
        if line.is_empty() {
            entries.push(std::mem::take(&mut cur));
            continue;
        }
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            cur.push((name, line[eq + 1..].to_vec()));
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let mut len = [0u8; 8];
            len.copy_from_slice(&data[..8]);
            let len = u64::from_le_bytes(len) as usize;
            let value = data[8..8 + len].to_vec();
            assert_eq!(data[8 + len], b'\n', "binary field not newline-terminated");
            data = &data[9 + len..];
            cur.push((name, value));
        }
    }
    if !cur.is_empty() {
        entries.push(cur);
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_encoding_uses_binary_form_for_newlines() {
        let m = encode_entry(&[("MESSAGE", b"a\nb"), ("X", b"y")]);
        let mut want = b"MESSAGE\n".to_vec();
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(b"a\nb\nX=y\n");
        assert_eq!(m, want);
    }

    #[test]
    fn export_round_trip() {
        let mut data = b"A=1\nB\n".to_vec();
        data.extend_from_slice(&2u64.to_le_bytes());
        data.extend_from_slice(b"x\n\n\nA=2\n\n");
        let e = parse_export(&data);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0][1], ("B".to_string(), b"x\n".to_vec()));
        assert_eq!(e[1][0], ("A".to_string(), b"2".to_vec()));
    }
}
