//! `deploy/systemd/logferry.service` under a real systemd as PID 1: a Debian bookworm rootfs
//! (`scripts/nspawn-rootfs.sh`, cached under /var/tmp) booted with `systemd-nspawn -b`, the
//! unit installed by running the install lines of its own header, shipping to a real
//! moto_server on the host (nspawn shares the host's network).
//!
//! One test, one boot: nspawn without a host systemd puts its container in a fixed `payload`
//! cgroup, so two boots at once would collide.
//!
//! The binary is `dist/logferry` (`scripts/build-static.sh`), the one users install; outside CI
//! the debug build stands in when it is missing (same glibc as the rootfs).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::deploy::{self, output, run_ok, wait_all};
use support::*;

const WAIT: Duration = Duration::from_secs(120);

/// A booted container: `systemd-nspawn -b` and the systemd inside it.
struct Nspawn {
    nspawn: Child,
    systemd_pid: u32,
    root: tempfile::TempDir,
}

impl Nspawn {
    fn boot(tarball: &Path, prepare: impl FnOnce(&Path)) -> Nspawn {
        let root = tempfile::Builder::new()
            .prefix("lf-nspawn-")
            .tempdir_in("/var/tmp")
            .expect("tmp");
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(root.path())
                .arg("-xf")
                .arg(tarball),
        );
        prepare(root.path());
        let name = format!("lf-test-{}", std::process::id());
        let nspawn = Command::new("systemd-nspawn")
            .args(["-b", "-D"])
            .arg(root.path())
            // Both required on a host without systemd (no machined, no bus to register on).
            .args([
                "--register=no",
                "--keep-unit",
                "--console=pipe",
                "-M",
                &name,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("systemd-nspawn");
        let mut booted = Nspawn {
            nspawn,
            systemd_pid: 0,
            root,
        };
        let nspawn_pid = booted.nspawn.id();
        let found = wait_until(Duration::from_secs(60), || {
            let out = output(Command::new("pgrep").args([
                "-P",
                &nspawn_pid.to_string(),
                "-x",
                "systemd",
            ]));
            let pid = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .unwrap_or(0);
            booted.systemd_pid = pid;
            pid != 0 && Path::new(&format!("/proc/{pid}/root/run/systemd/private")).exists()
        });
        assert!(found, "systemd did not come up in the container");
        let state = booted.sh("systemctl is-system-running --wait || true");
        assert!(
            state.trim() == "running" || state.trim() == "degraded",
            "system state {state}"
        );
        booted
    }

    /// Runs `script` with sh inside the container (all its namespaces); returns the output.
    fn sh_output(&self, script: &str) -> std::process::Output {
        output(Command::new("timeout").arg("120").arg("nsenter").args([
            "-t",
            &self.systemd_pid.to_string(),
            "-a",
            "sh",
            "-c",
            script,
        ]))
    }

    /// Like [`Nspawn::sh_output`], asserting success; returns stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.sh_output(script);
        assert!(
            out.status.success(),
            "in the container: {script}\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `systemctl show logferry -p NAME --value`.
    fn prop(&self, name: &str) -> String {
        self.sh(&format!("systemctl show logferry -p {name} --value"))
            .trim()
            .to_string()
    }

    fn unit_log(&self) -> String {
        self.sh("journalctl -u logferry --no-pager -o cat")
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.root.path().join(inside.trim_start_matches('/'))
    }
}

impl Drop for Nspawn {
    fn drop(&mut self) {
        if self.systemd_pid != 0 {
            let _ = self.sh_output("systemctl --no-block poweroff");
        }
        let end = Instant::now() + Duration::from_secs(30);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
        // nspawn leaves its (empty) payload cgroups behind when there is no host systemd.
        for c in ["systemd", "unified"] {
            let base = PathBuf::from(format!("/sys/fs/cgroup/{c}/payload"));
            let _ = Command::new("find")
                .arg(&base)
                .args(["-depth", "-type", "d", "-exec", "rmdir", "{}", ";"])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// `deploy/systemd/logferry.service`'s install lines (`#   CMD` in its header).
fn header_install_lines(unit: &str) -> Vec<String> {
    unit.lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("#   "))
        .map(str::to_string)
        .collect()
}

/// `logger` lines `<tag> <i:06>` for `0..n`, written inside the container.
fn logger_script(tag: &str, n: usize) -> String {
    format!(
        "for i in $(seq 0 {}); do logger -t deploytest \"{tag} $(printf %06d $i)\"; done",
        n - 1
    )
}

#[test]
fn the_unit_runs_under_systemd_restarts_on_kill_and_watchdog_and_stops_cleanly() {
    let test = "the_unit_runs_under_systemd";
    if !deploy::skip_unless(
        test,
        deploy::missing_tools(&["systemd-nspawn", "nsenter", "mmdebstrap", "tar", "pgrep"]),
    ) {
        return;
    }
    let binary = match deploy::static_binary() {
        Some(p) => p,
        None if deploy::in_ci() => panic!("{test}: no dist/logferry (scripts/build-static.sh)"),
        None => {
            eprintln!("{test}: no dist/logferry, installing the debug build instead");
            PathBuf::from(env!("CARGO_BIN_EXE_logferry"))
        }
    };
    let tarball = deploy::nspawn_rootfs_tarball();
    let moto = Moto::start().expect("moto");
    let cluster = format!("nspawn-{}", std::process::id());
    let group = format!("/k8s/{cluster}/system");
    let unit_text =
        std::fs::read_to_string(deploy::repo_root().join("deploy/systemd/logferry.service"))
            .expect("unit");

    let c = Nspawn::boot(&tarball, |root| {
        // The files the header's install lines name, in the directory they run in.
        let src = root.join("root/logferry-install");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::copy(&binary, src.join("logferry")).expect("copy binary");
        for f in ["logferry.service", "logferry.sysusers", "logferry.toml"] {
            std::fs::copy(
                deploy::repo_root().join("deploy/systemd").join(f),
                src.join(f),
            )
            .expect("copy deploy file");
        }
    });

    // /etc/logferry/env as docs/deploy.md describes (here: moto and test keys).
    c.sh(&format!(
        "install -d -m 0755 /etc/logferry && umask 077 && printf '%s\\n' \
         AWS_ACCESS_KEY_ID=AKIDTESTING AWS_SECRET_ACCESS_KEY=planted-secret-do-not-log \
         AWS_REGION=us-east-1 AWS_ENDPOINT_URL={} AWS_EC2_METADATA_DISABLED=true \
         CLUSTER_NAME={cluster} > /etc/logferry/env",
        moto.endpoint()
    ));
    let lines = header_install_lines(&unit_text);
    assert!(
        lines.last().map(String::as_str) == Some("systemctl enable --now logferry"),
        "the unit's header no longer ends with `systemctl enable --now logferry`: {lines:?}"
    );
    // `install -m 0640 -g logferry logferry.toml /etc/logferry/logferry.toml` needs the dir.
    for line in &lines {
        c.sh(&format!("cd /root/logferry-install && {line}"));
    }

    // `enable --now` returned: for Type=notify that is after READY=1, whose STATUS= came in
    // the same datagram.
    assert_eq!(c.prop("ActiveState"), "active", "{}", c.unit_log());
    assert_eq!(c.prop("StatusText"), "shipping", "{}", c.unit_log());

    // Its own user, never root.
    let uid: u32 = c
        .sh("id -u logferry")
        .trim()
        .parse()
        .expect("uid of logferry");
    assert_ne!(uid, 0);
    let pid = c.prop("MainPID");
    let status = c.sh(&format!("cat /proc/{pid}/status"));
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .expect("Uid line")
        .split_whitespace()
        .map(|u| u.parse().expect("uid"))
        .collect();
    assert!(
        uids.iter().all(|&u| u == uid),
        "runs as {uids:?}, not {uid}"
    );

    // logger -> journald -> logferry -> moto.
    c.sh(&logger_script("logger", 200));
    wait_all(&moto.endpoint(), &group, "logger", 200);

    // kill -9: systemd restarts it (Restart=always, RestartSec=2); lines logged while it is
    // down are shipped after the restart from the saved cursor.
    let restarts = |c: &Nspawn| c.prop("NRestarts").parse::<u32>().unwrap_or(0);
    let before = restarts(&c);
    c.sh("systemctl kill -s KILL logferry");
    c.sh(&logger_script("killed", 200));
    let restarted = wait_until(WAIT, || {
        restarts(&c) > before && c.prop("ActiveState") == "active"
    });
    assert!(restarted, "not restarted after SIGKILL:\n{}", c.unit_log());
    let seen = wait_all(&moto.endpoint(), &group, "killed", 200);
    let dups: usize = seen.values().map(|n| n - 1).sum();
    assert!(dups < 3, "{dups} duplicates across kill -9");

    // The watchdog: a stopped process sends no WATCHDOG=1; systemd kills and restarts it.
    let dropin = c.path("/etc/systemd/system/logferry.service.d");
    std::fs::create_dir_all(&dropin).expect("drop-in dir");
    std::fs::write(dropin.join("watchdog.conf"), "[Service]\nWatchdogSec=5s\n").expect("drop-in");
    c.sh("systemctl daemon-reload && systemctl restart logferry");
    assert_eq!(c.prop("WatchdogUSec"), "5s");
    let before = restarts(&c);
    let stopped = c.prop("MainPID");
    c.sh(&format!("kill -STOP {stopped}"));
    let restarted = wait_until(WAIT, || {
        restarts(&c) > before && c.prop("ActiveState") == "active" && c.prop("MainPID") != stopped
    });
    assert!(
        restarted,
        "the watchdog did not restart it:\n{}",
        c.unit_log()
    );
    let log = c.sh("journalctl -u logferry --no-pager");
    assert!(log.contains("Failed with result 'watchdog'"), "{log}");
    c.sh(&logger_script("watchdog", 100));
    wait_all(&moto.endpoint(), &group, "watchdog", 100);

    // systemctl stop: SIGTERM, flush, exit 0.
    c.sh("systemctl stop logferry");
    assert_eq!(c.prop("Result"), "success", "{}", c.unit_log());
    assert_eq!(c.prop("ExecMainStatus"), "0", "{}", c.unit_log());
    assert_eq!(c.prop("ActiveState"), "inactive");

    // systemd's own verdict on the sandbox.
    let report = c.sh("systemd-analyze security --no-pager logferry.service");
    let exposure: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for logferry.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    eprintln!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{report}");
}
