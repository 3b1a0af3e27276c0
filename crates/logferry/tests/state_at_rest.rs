//! What logferry keeps on disk stays as private as its sources, whatever the umask, and no one
//! else can read it, write into it or redirect logferry's writes: a real journald, a spooled
//! syslog source, a file source and a dead-lettered event fill `data_dir`, then every path under
//! it is checked. Needs root (journald in a private mount namespace; `chown` for the
//! other-owner case), as the rest of the suite.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cwl_testkit::Journald;
use support::*;

const WAIT: Duration = Duration::from_secs(60);
const GROUP: &str = "/test/at-rest";

fn with_umask(cmd: &mut Command, umask: u32) {
    // SAFETY: umask is async-signal-safe and touches nothing but the child's own mask.
    unsafe {
        cmd.pre_exec(move || {
            libc::umask(umask as libc::mode_t);
            Ok(())
        });
    }
}

fn config(journal_dir: &Path, logs: &Path, tcp: u16, endpoint: &str) -> String {
    format!(
        r#"
data_dir = "@DATA@"

[sources.j]
type = "journald"
directory = "{journal}"
start = "beginning"

[sources.s]
type = "syslog"
address = "tcp://127.0.0.1:{tcp}"

[sources.f]
type = "file"
include = ["{logs}/*.log"]
start = "beginning"

{sink}"#,
        journal = journal_dir.display(),
        logs = logs.display(),
        sink = cw_sink(&["j", "s", "f"], GROUP, "node", endpoint).format("message"),
    )
}

/// Every path under `root` with its type and permission bits (links reported as links).
fn modes_under(root: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).expect("stat");
        assert!(
            !m.file_type().is_symlink(),
            "a link under data_dir: {}",
            p.display()
        );
        out.push((p.clone(), m.is_dir(), m.mode() & 0o7777));
        if m.is_dir() {
            for e in std::fs::read_dir(&p).expect("ls") {
                stack.push(e.expect("entry").path());
            }
        }
    }
    out
}

fn stamp(ms: i64) -> String {
    let mut s = String::new();
    logferry::format::rfc3339_ms(ms, &mut s);
    s
}

#[test]
fn every_state_path_is_private_under_umask_000_and_022() {
    for umask in [0o000, 0o022] {
        let Some(mut jd) = Journald::start("") else {
            return;
        };
        let moto = Moto::start().expect("moto");
        let logs = tempfile::tempdir().expect("logs dir");
        std::fs::write(logs.path().join("app.log"), "from a file\n").expect("log file");
        let tcp = free_port();
        jd.send_message("from the journal", &[]);
        jd.sync();
        let mut lf = Logferry::start_with(
            &config(&jd.log_dir(), logs.path(), tcp, &moto.endpoint()),
            |cmd| with_umask(cmd, umask),
        );
        lf.wait_listening(1);
        let now = logferry::event::now_ms();
        let lines = format!(
            "<14>1 {} h a - - - twenty days old\n<14>1 {} h a - - - from syslog\n",
            stamp(now - 20 * 86_400_000),
            stamp(now)
        );
        tcp_send(tcp, lines.as_bytes());
        let data = lf.data_dir();
        let arrived = wait_until(WAIT, || {
            let got: Vec<String> = events(&moto.endpoint(), GROUP, "node")
                .into_iter()
                .map(|(_, m)| m)
                .collect();
            ["from the journal", "from syslog", "from a file"]
                .iter()
                .all(|want| got.iter().any(|m| m == want))
                && !dead_letters(&data, "cw").is_empty()
                && data.join("journald/j.cursor").exists()
                && data.join("file/f.json").exists()
        });
        assert!(
            arrived,
            "umask {umask:03o}: not everything arrived:\n{}",
            lf.log()
        );
        assert!(lf.terminate().success(), "{}", lf.log());

        let paths = modes_under(&data);
        for want in [
            "spool/s",
            "spool/s/LOCK",
            "spool/s/ack.ckpt",
            "journald/j.cursor",
            "file/f.json",
            "dead-letter/cw.jsonl",
        ] {
            assert!(
                paths.iter().any(|(p, _, _)| p.ends_with(want)),
                "umask {umask:03o}: {want} was not written: {paths:?}"
            );
        }
        assert!(
            paths
                .iter()
                .any(|(p, _, _)| p.extension().is_some_and(|e| e == "seg")),
            "no spool segment: {paths:?}"
        );
        for (path, is_dir, mode) in &paths {
            let want = if *is_dir { 0o700 } else { 0o600 };
            assert_eq!(
                *mode,
                want,
                "umask {umask:03o}: {} is {mode:04o}",
                path.display()
            );
        }
    }
}

#[test]
fn state_left_open_by_an_earlier_run_is_tightened_and_reported() {
    let moto = Moto::start().expect("moto");
    let tcp = free_port();
    let cfg = syslog_config("", tcp, &cw_sink(&["s"], GROUP, "node", &moto.endpoint()));
    // First run under umask 022 ... of a logferry that honoured it: make it look that way.
    let mut lf = Logferry::start(&cfg);
    lf.wait_listening(1);
    tcp_send(tcp, b"<14>1 - h a - - - first\n");
    assert_eq!(
        wait_events(&moto.endpoint(), GROUP, "node", 1, WAIT).len(),
        1
    );
    assert!(lf.terminate().success());
    let data = lf.data_dir();
    let opened: Vec<PathBuf> = modes_under(&data).into_iter().map(|(p, _, _)| p).collect();
    for p in &opened {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        chmod(p, mode);
    }

    lf.spawn(|_| {});
    lf.wait_listening(2);
    for p in &opened {
        let m = std::fs::metadata(p).expect("stat").mode() & 0o7777;
        assert_eq!(m, if p.is_dir() { 0o700 } else { 0o600 }, "{}", p.display());
        let line = lf
            .log()
            .lines()
            .find(|l| l.contains("tightened") && l.contains(&format!("\"{}\"", p.display())))
            .map(str::to_string);
        let line = line.unwrap_or_else(|| panic!("no log line for {}:\n{}", p.display(), lf.log()));
        let want_old = if p.is_dir() { "0755" } else { "0644" };
        let want_new = if p.is_dir() { "0700" } else { "0600" };
        assert!(line.contains(want_old) && line.contains(want_new), "{line}");
    }
    tcp_send(tcp, b"<14>1 - h a - - - second\n");
    assert_eq!(
        wait_events(&moto.endpoint(), GROUP, "node", 2, WAIT).len(),
        2
    );
}

/// `logferry SUBCOMMAND` on a config with one syslog source and one sink whose data_dir is
/// `data_dir` (logferry must refuse it or report on it before reaching the sink). The TempDir
/// holds the config: keep it until the command has run.
fn logferry_on(data_dir: &Path, subcommand: &str) -> (tempfile::TempDir, Command) {
    let t = tempfile::tempdir().expect("tmp");
    let cfg = t.path().join("logferry.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = \"{}\"\n[sources.s]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{}\"\n\
             [sinks.cw]\ntype = \"cloudwatch_logs\"\ninputs = [\"s\"]\nlog_group = \"/x\"\n\
             endpoint = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\n",
            data_dir.display(),
            free_port()
        ),
    )
    .expect("config");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
    cmd.arg(subcommand).arg("--config").arg(&cfg);
    aws_env(&mut cmd);
    (t, cmd)
}

/// A config with the syslog source `s` on `tcp` feeding `sink`, `settings` (top-level lines)
/// after the harness's data_dir.
fn syslog_config(settings: &str, tcp: u16, sink: &sink::CwSink) -> String {
    format!(
        "data_dir = \"@DATA@\"\n{settings}\n[sources.s]\ntype = \"syslog\"\n\
         address = \"tcp://127.0.0.1:{tcp}\"\n{sink}"
    )
}

/// Sets `path`'s permission bits, whatever the umask.
fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Creates the directory `path` with `mode`; returns its path.
fn mkdir(path: PathBuf, mode: u32) -> PathBuf {
    std::fs::create_dir(&path).expect("mkdir");
    chmod(&path, mode);
    path
}

/// Runs `logferry run` on a config whose data_dir is `data_dir`, which it must refuse to start
/// on: asserts its exit code is not zero; returns its stderr.
fn refused(data_dir: &Path) -> String {
    let (_config, mut cmd) = logferry_on(data_dir, "run");
    let mut child = cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let exited = wait_until(Duration::from_secs(20), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("output");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_ne!(out.status.code(), Some(0), "{err}");
    err
}

/// `logferry check`'s report lines for a config whose data_dir is `data_dir`.
fn check_output(data_dir: &Path) -> String {
    let (_config, mut cmd) = logferry_on(data_dir, "check");
    let out = cmd.output().expect("run check");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_data_dir_others_could_read_or_swap_is_refused_with_the_reason() {
    let t = tempfile::tempdir().expect("tmp");

    let open = mkdir(t.path().join("open"), 0o777);
    let err = refused(&open);
    assert!(
        err.contains("writable by other users") && err.contains(&open.display().to_string()),
        "{err}"
    );
    assert!(!open.join("spool").exists(), "wrote into it anyway");

    let real = t.path().join("real");
    std::fs::create_dir(&real).expect("dir");
    let link = t.path().join("link");
    std::os::unix::fs::symlink(&real, &link).expect("link");
    let err = refused(&link);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(!real.join("spool").exists(), "wrote through the link");

    let foreign = t.path().join("foreign");
    std::fs::create_dir(&foreign).expect("dir");
    std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).expect("chown (needs root)");
    let err = refused(&foreign);
    assert!(err.contains("uid 65534"), "{err}");

    // A link planted in place of a spool segment: refused before anything is read or written.
    let planted = t.path().join("planted");
    std::fs::create_dir_all(planted.join("spool/s")).expect("dir");
    let victim = t.path().join("victim");
    std::fs::write(&victim, b"secret\n").expect("victim");
    std::os::unix::fs::symlink(&victim, planted.join("spool/s/00000000000000000000.seg"))
        .expect("link");
    let err = refused(&planted);
    assert!(
        err.contains("symbolic link") && err.contains(".seg"),
        "{err}"
    );
    assert_eq!(std::fs::read(&victim).expect("victim"), b"secret\n");
}

#[test]
fn a_link_planted_as_the_dead_letter_file_is_never_written_through_and_nothing_is_lost() {
    let moto = Moto::start().expect("moto");
    let tcp = free_port();
    let sink = cw_sink(&["s"], GROUP, "node", &moto.endpoint()).format("message");
    let cfg = syslog_config("", tcp, &sink);
    let mut lf = Logferry::start(&cfg);
    lf.wait_listening(1);
    let data = lf.data_dir();
    let victim = lf.dir.path().join("victim");
    std::fs::write(&victim, b"root-owned file\n").expect("victim");
    std::fs::create_dir_all(data.join("dead-letter")).expect("dir");
    std::os::unix::fs::symlink(&victim, data.join("dead-letter/cw.jsonl")).expect("link");

    let old = stamp(logferry::event::now_ms() - 20 * 86_400_000);
    tcp_send(
        tcp,
        format!("<14>1 {old} h a - - - twenty days old\n").as_bytes(),
    );
    let refused = wait_until(WAIT, || {
        lf.log()
            .lines()
            .any(|l| l.contains("dead-letter") && l.contains("symbolic link"))
    });
    assert!(refused, "no refusal logged:\n{}", lf.log());
    assert_eq!(
        std::fs::read(&victim).expect("victim"),
        b"root-owned file\n"
    );
    assert!(lf.terminate().success());

    // The rejected event was kept (spooled, unacknowledged): once the link is gone it is
    // dead-lettered for real.
    std::fs::remove_file(data.join("dead-letter/cw.jsonl")).expect("unlink");
    lf.spawn(|_| {});
    assert!(
        wait_until(WAIT, || dead_letters(&data, "cw")
            .iter()
            .any(|v| v["message"] == "twenty days old")),
        "{}",
        lf.log()
    );
    assert_eq!(
        std::fs::read(&victim).expect("victim"),
        b"root-owned file\n"
    );
    let m = std::fs::metadata(data.join("dead-letter/cw.jsonl")).expect("stat");
    assert_eq!(m.mode() & 0o7777, 0o600);
}

#[test]
fn check_reports_the_data_dir_owner_and_mode_and_what_is_wrong() {
    let t = tempfile::tempdir().expect("tmp");
    let dir = mkdir(t.path().join("data"), 0o700);
    let out = check_output(&dir);
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let owner_line = format!("owner uid {me}, mode 0700");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains(&owner_line)),
        "{out}"
    );

    mkdir(dir.join("spool"), 0o755);
    let out = check_output(&dir);
    assert!(
        out.lines().any(|l| l.starts_with("warn")
            && l.contains("more open than 0700/0600")
            && l.contains("0755")),
        "{out}"
    );

    chmod(&dir, 0o777);
    let out = check_output(&dir);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL") && l.contains("writable by other users")),
        "{out}"
    );
}

#[test]
fn data_dir_group_may_read_the_state_and_never_write_it() {
    let moto = Moto::start().expect("moto");
    let tcp = free_port();
    let gid = 4; // any gid: a number need not name a group
    let cfg = syslog_config(
        &format!("data_dir_group = \"{gid}\""),
        tcp,
        &cw_sink(&["s"], GROUP, "node", &moto.endpoint()),
    );
    let mut lf = Logferry::start_with(&cfg, |cmd| with_umask(cmd, 0o077));
    lf.wait_listening(1);
    tcp_send(tcp, b"<14>1 - h a - - - shared\n");
    assert_eq!(
        wait_events(&moto.endpoint(), GROUP, "node", 1, WAIT).len(),
        1
    );
    assert!(lf.terminate().success(), "{}", lf.log());
    let paths = modes_under(&lf.data_dir());
    assert!(paths.len() >= 5, "{paths:?}");
    for (path, is_dir, mode) in paths {
        let want = if is_dir { 0o750 } else { 0o640 };
        assert_eq!(mode, want, "{}", path.display());
        let owner_gid = std::fs::metadata(&path).expect("stat").gid();
        assert_eq!(owner_gid, gid, "{}", path.display());
    }
}
