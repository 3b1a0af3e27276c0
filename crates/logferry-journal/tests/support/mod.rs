//! Test support: a real systemd-journald writing into a temporary directory, plus helpers
//! to compare our reader with journalctl.
//!
//! journald runs in a private mount namespace where its socket directory, its runtime
//! journal directory and its config are bind mounts of temporary paths, so tests never
//! touch the host's journal and several can run at once. Needs root (for `unshare` and
//! `mount`); tests call [`Journald::start`] which returns `None`, after printing why,
//! when that is not possible, and the test then skips.
#![allow(dead_code)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use logferry_journal::{Entry, Journal};

pub const JOURNALD: &str = "/lib/systemd/systemd-journald";
pub const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

pub struct Journald {
    pub root: tempfile::TempDir,
    child: Option<Child>,
    sender: UnixDatagram,
    extra_conf: String,
    sync_seq: u64,
}

/// Why a journald cannot be run here, if it cannot.
pub fn journald_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some("not root: cannot create a mount namespace for a private journald".into());
    }
    for tool in [JOURNALD, "/usr/bin/unshare", "/usr/bin/journalctl"] {
        if !Path::new(tool).exists() {
            return Some(format!("{tool} missing"));
        }
    }
    None
}

/// Prints a skip notice and returns true when journald tests cannot run.
pub fn skip(test: &str) -> bool {
    match journald_unavailable() {
        Some(why) => {
            eprintln!("SKIPPED {test}: {why}");
            true
        }
        None => false,
    }
}

impl Journald {
    /// Starts journald with volatile storage, no rate limit and 1 MiB files (so that tests
    /// see rotation). `extra_conf` lines are appended to `[Journal]`.
    pub fn start(extra_conf: &str) -> Option<Journald> {
        if let Some(why) = journald_unavailable() {
            eprintln!("SKIPPED: {why}");
            return None;
        }
        let root = tempfile::Builder::new()
            .prefix("lf-journald-")
            .tempdir()
            .expect("tempdir");
        std::fs::create_dir_all(root.path().join("sock")).unwrap();
        std::fs::create_dir_all(root.path().join("log")).unwrap();
        std::fs::create_dir_all("/run/systemd/journal").unwrap();
        std::fs::create_dir_all("/run/log/journal").unwrap();
        let mut j = Journald {
            root,
            child: None,
            sender: UnixDatagram::unbound().unwrap(),
            extra_conf: extra_conf.to_string(),
            sync_seq: 0,
        };
        j.spawn();
        Some(j)
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.path().join("log")
    }

    fn socket(&self) -> PathBuf {
        self.root.path().join("sock/socket")
    }

    fn spawn(&mut self) {
        let t = self.root.path();
        let conf = format!(
            "[Journal]\nStorage=volatile\nRateLimitIntervalSec=0\nRateLimitBurst=0\n\
             RuntimeMaxFileSize=1M\nReadKMsg=no\nForwardToSyslog=no\nForwardToWall=no\n\
             ForwardToConsole=no\nForwardToKMsg=no\n{}\n",
            self.extra_conf
        );
        std::fs::write(t.join("journald.conf"), conf).unwrap();
        let _ = std::fs::remove_file(self.socket());
        let script = format!(
            "mount --bind {t}/sock /run/systemd/journal && \
             mount --bind {t}/log /run/log/journal && \
             mount --bind {t}/journald.conf /etc/systemd/journald.conf && \
             exec {JOURNALD}",
            t = t.display()
        );
        let log = std::fs::File::create(t.join("journald.out")).unwrap();
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn journald");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.socket().exists() || self.active_file().is_none() {
            if Instant::now() > deadline {
                let out = std::fs::read_to_string(t.join("journald.out")).unwrap_or_default();
                panic!("journald did not start: {out}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn active_file(&self) -> Option<PathBuf> {
        let rd = std::fs::read_dir(self.log_dir()).ok()?;
        for d in rd.flatten() {
            let p = d.path().join("system.journal");
            if p.exists() {
                return Some(p);
            }
        }
        None
    }

    /// Sends one entry over the native protocol. Values with a newline use the binary
    /// form `NAME\n<u64 LE len><bytes>\n`.
    pub fn send(&self, fields: &[(&str, &[u8])]) {
        let mut msg = Vec::new();
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
        let mut tries = 0;
        loop {
            match self.sender.send_to(&msg, self.socket()) {
                Ok(_) => return,
                // journald's queue full or restarting: retry briefly.
                Err(e) if tries < 500 => {
                    tries += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("send to journald: {e}"),
            }
        }
    }

    pub fn send_message(&self, msg: &str, extra: &[(&str, &[u8])]) {
        let mut fields: Vec<(&str, &[u8])> = vec![("MESSAGE", msg.as_bytes())];
        fields.extend_from_slice(extra);
        self.send(&fields);
    }

    /// Waits until everything sent so far is in the journal files: sends a marker and
    /// waits until journalctl sees it (journald handles datagrams in order).
    pub fn sync(&mut self) {
        self.sync_seq += 1;
        let marker = format!("{}-{}", std::process::id(), self.sync_seq);
        self.send(&[("MESSAGE", b"sync"), ("LF_SYNC", marker.as_bytes())]);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = Command::new("journalctl")
                .arg("-D")
                .arg(self.log_dir())
                .args(["-q", "-o", "cat", &format!("LF_SYNC={marker}")])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("sync") {
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
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
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
    /// `*.journal~`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.spawn();
    }

    pub fn start_again(&mut self) {
        assert!(self.child.is_none());
        self.spawn();
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// All journal files under `dir` (recursively).
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

/// journalctl's export output for `-D dir` (or `--file` for each file) with extra args.
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

/// Our reader's export output for every entry from the current position.
pub fn our_export(j: &mut Journal) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Entry::new();
    while j.next_entry_into(&mut e).expect("next_entry") {
        e.write_export(&mut out).unwrap();
    }
    out
}

/// A parsed export stream: entries of (name, value) in order.
pub type Exported = Vec<Vec<(String, Vec<u8>)>>;

/// Parses journald's export format (`NAME=value\n` or `NAME\n<u64 LE len><bytes>\n`,
/// entries separated by an empty line).
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
            let name = String::from_utf8(line[..eq].to_vec()).unwrap();
            cur.push((name, line[eq + 1..].to_vec()));
        } else {
            let name = String::from_utf8(line.to_vec()).unwrap();
            let len = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
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

/// Asserts two export streams are equal, explaining the first difference.
pub fn assert_same_export(ours: &[u8], theirs: &[u8], what: &str) {
    if ours == theirs {
        return;
    }
    let (a, b) = (parse_export(ours), parse_export(theirs));
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        if x != y {
            let show = |e: &Vec<(String, Vec<u8>)>| {
                e.iter()
                    .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(&v[..v.len().min(80)])))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            panic!(
                "{what}: entry {i} differs\n ours:   {}\n theirs: {}",
                show(x),
                show(y)
            );
        }
    }
    panic!(
        "{what}: ours has {} entries, journalctl {} (bytes {} vs {})",
        a.len(),
        b.len(),
        ours.len(),
        theirs.len()
    );
}

/// Converts an export stream into a journal file with systemd-journal-remote, with the
/// given environment (e.g. SYSTEMD_JOURNAL_COMPACT=0) and extra arguments.
pub fn journal_remote(export: &[u8], out: &Path, env: &[(&str, &str)], args: &[&str]) {
    let input = out.with_extension("export");
    std::fs::write(&input, export).unwrap();
    let st = Command::new(JOURNAL_REMOTE)
        .envs(env.iter().copied())
        .arg(format!("--output={}", out.display()))
        .args(args)
        .arg(&input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run systemd-journal-remote");
    assert!(st.success(), "systemd-journal-remote failed");
    std::fs::remove_file(&input).unwrap();
}

/// The header line of `journalctl --header` starting with `key`.
pub fn header_line(file: &Path, key: &str) -> String {
    let out = Command::new("journalctl")
        .arg("--file")
        .arg(file)
        .arg("--header")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

/// A mix of entries exercising the interesting field shapes: repeated fields, binary
/// values, empty values, UTF-8, and fields big enough to be compressed (>= 512 bytes).
pub fn send_variety(j: &Journald, tag: &str) {
    let big: Vec<u8> = (0..6000).map(|i| b'a' + (i % 26) as u8).collect();
    let huge: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 | 1)
        .collect();
    j.send_message(&format!("{tag} plain"), &[("PRIORITY", b"6")]);
    j.send_message(
        &format!("{tag} repeated"),
        &[("FOO", b"a"), ("FOO", b"b"), ("FOO", b"a")],
    );
    j.send_message(
        &format!("{tag} binary"),
        &[("BIN", b"line1\nline2\0\xff\xfe")],
    );
    j.send_message(&format!("{tag} empty"), &[("EMPTY", b"")]);
    j.send_message(&format!("{tag} utf8 żółw ☃"), &[("CTRL", b"bell\x07")]);
    j.send_message(&format!("{tag} big"), &[("BIG", &big)]);
    j.send_message(&format!("{tag} huge-binary"), &[("HUGE", &huge)]);
    let long_msg = format!("{tag} long {}", "x".repeat(5000));
    j.send_message(&long_msg, &[]);
}
