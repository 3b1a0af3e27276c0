//! The container image (`scripts/build-image.sh` → `localhost/logferry:test`), run by podman
//! the way the old chain ran its container: a host journal (a real journald's directory)
//! mounted read-only at /var/log/journal, `--read-only --cap-drop ALL --user 65532
//! --security-opt no-new-privileges`, only `LOGFERRY_LOG_GROUP` and the AWS variables set (and
//! a metrics address: on the shared host network, the default port may be taken), a named
//! state volume; shipping to a real moto_server.
//!
//! Also the migration shape: the old `journalctl -o short -f | ncat 127.0.0.1 514` pipe into
//! the container's syslog listener, with `deploy/systemd/logferry.toml`'s syslog block enabled
//! as docs/deploy.md ("Upgrading from the old chain", Path 2) says.
//!
//! Needs root, podman + runc and the image; skipped with `SKIPPED` outside CI when they are
//! missing, failed in CI (see support/deploy.rs).

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use cwl_testkit::journald::JournalSender;
use cwl_testkit::Journald;
use support::deploy::{self, tagged, wait_all, wait_copies, Container, Podman, Volume, IMAGE};
use support::*;

const WAIT: Duration = Duration::from_secs(120);

fn ready(test: &str) -> bool {
    deploy::skip_unless(
        test,
        Podman::image_missing()
            .or_else(cwl_testkit::journald::journald_unavailable)
            .or_else(|| deploy::missing_tools(&["ncat", "journalctl", "chgrp"])),
    )
}

/// Writes `<tag> <i:06>` entries for `range`.
fn write_entries(s: &JournalSender, tag: &str, range: std::ops::Range<usize>) {
    for i in range {
        s.send(&[
            ("MESSAGE", format!("{tag} {i:06}").as_bytes()),
            ("SYSLOG_IDENTIFIER", b"deploytest"),
            ("PRIORITY", b"6"),
        ]);
    }
}

fn aws_args(moto: &Moto) -> Vec<String> {
    [
        "AWS_ACCESS_KEY_ID=AKIDTESTING".to_string(),
        "AWS_SECRET_ACCESS_KEY=planted-secret-do-not-log".to_string(),
        "AWS_REGION=us-east-1".to_string(),
        format!("AWS_ENDPOINT_URL={}", moto.endpoint()),
        // Off EC2 the credential chain would otherwise wait for IMDS timeouts.
        "AWS_EC2_METADATA_DISABLED=true".to_string(),
    ]
    .into_iter()
    .flat_map(|e| ["-e".to_string(), e])
    .collect()
}

/// `podman run -d` with the hardening the old chain's container had, and more.
fn run_hardened(name: &str, extra: &[String], args_after_image: &[&str]) {
    let mut args: Vec<String> = [
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--user",
        "65532:65532",
        "--security-opt",
        "no-new-privileges",
        "--network",
        "host",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend_from_slice(extra);
    args.push(IMAGE.to_string());
    args.extend(args_after_image.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Podman::ok(&refs);
}

#[test]
fn image_ships_a_read_only_host_journal_as_nonroot_and_loses_nothing_across_stop_and_kill() {
    if !ready("image_ships_a_read_only_host_journal") {
        return;
    }
    let moto = Moto::start().expect("moto");
    let mut jd = Journald::start("").expect("journald");
    deploy::journal_dir_as_on_a_host(&jd.log_dir());
    let id = std::process::id();
    let name = format!("lf-test-journal-{id}");
    let group = format!("/deploy/container-{id}");
    let _container = Container(name.clone());
    let volume = Volume::create(&format!("lf-test-state-{id}"));
    let metrics = format!("127.0.0.1:{}", free_port());

    let mut extra = vec![
        "--group-add".to_string(),
        deploy::journal_gid().to_string(),
        "-v".to_string(),
        format!("{}:/var/log/journal:ro", jd.log_dir().display()),
        "-v".to_string(),
        format!("{}:/var/lib/logferry", volume.0),
        "-e".to_string(),
        format!("LOGFERRY_LOG_GROUP={group}"),
        "-e".to_string(),
        format!("LOGFERRY_METRICS_ADDRESS={metrics}"),
    ];
    extra.extend(aws_args(&moto));
    run_hardened(&name, &extra, &[]);
    // The zero config starts at the journal's end: write only once the journal is open.
    Podman::wait_log(&name, "journal opened", 1, WAIT);
    let sender = jd.sender();
    write_entries(&sender, "live", 0..300);
    jd.sync();
    wait_all(&moto.endpoint(), &group, "live", 300);
    let (status, _) = http_get(&metrics, "/ready").expect("/ready answers");
    assert_eq!(status, 200, "/ready:\n{}", Podman::logs(&name));

    // The state volume: the image's 0700 directory, owned by 65532, written as 65532.
    let data = volume.mountpoint();
    let root = std::fs::metadata(&data).expect("volume");
    assert_eq!((root.uid(), root.gid()), (65532, 65532), "volume owner");
    assert_eq!(root.permissions().mode() & 0o777, 0o700, "volume mode");
    let meta = std::fs::metadata(data.join("journald")).expect("journald state dir");
    assert_eq!(meta.uid(), 65532, "state written as 65532");
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o700,
        "journald state dir mode"
    );
    let cursor = data.join("journald/journal.cursor");
    let cursor_meta = std::fs::metadata(&cursor).expect("cursor");
    assert_eq!(cursor_meta.uid(), 65532);
    assert_eq!(
        cursor_meta.permissions().mode() & 0o7777,
        0o600,
        "cursor mode"
    );
    // Never root inside.
    let top = Podman::ok(&["top", &name, "huser", "hgroup"]);
    assert!(
        top.lines()
            .skip(1)
            .all(|l| l.split_whitespace().next() == Some("65532")),
        "processes not all uid 65532:\n{top}"
    );

    // kill -9, lines written while it is down, start again on the same volume: none lost.
    Podman::ok(&["kill", "-s", "KILL", &name]);
    write_entries(&sender, "down", 0..300);
    jd.sync();
    Podman::ok(&["start", &name]);
    Podman::wait_log(&name, "resuming after the saved cursor", 1, WAIT);
    write_entries(&sender, "after", 0..300);
    jd.sync();
    let down = wait_all(&moto.endpoint(), &group, "down", 300);
    wait_all(&moto.endpoint(), &group, "after", 300);
    let dups: usize = down.values().map(|c| c - 1).sum();
    assert!(dups < 3, "{dups} duplicates of 300 across kill -9");

    // podman stop: SIGTERM, flush, exit 0; a burst written just before is either delivered
    // or after the saved cursor, so the next start ships the rest: nothing lost.
    write_entries(&sender, "burst", 0..3000);
    Podman::ok(&["stop", "-t", "30", &name]);
    assert_eq!(Podman::exit_code(&name), 0, "{}", Podman::logs(&name));
    let logs = Podman::logs(&name);
    assert!(
        logs.contains("SIGTERM: stopping sources, flushing"),
        "{logs}"
    );
    assert!(
        !logs.contains("grace"),
        "flush did not finish in time:\n{logs}"
    );
    jd.sync();
    Podman::ok(&["start", &name]);
    wait_all(&moto.endpoint(), &group, "burst", 3000);
    Podman::ok(&["stop", "-t", "30", &name]);
    assert_eq!(Podman::exit_code(&name), 0, "{}", Podman::logs(&name));
}

/// `deploy/systemd/logferry.toml` with its migration syslog block enabled, as docs/deploy.md
/// says: uncomment `[sources.syslog]` and add "syslog" to the sink's inputs.
fn migration_config() -> String {
    let text = std::fs::read_to_string(deploy::repo_root().join("deploy/systemd/logferry.toml"))
        .expect("deploy/systemd/logferry.toml");
    let mut out = String::new();
    for line in text.lines() {
        let line = match line {
            "# [sources.syslog]"
            | "# type = \"syslog\""
            | "# address = \"tcp://127.0.0.1:514\"" => &line[2..],
            l => l,
        };
        let line = if line == "inputs = [\"journal\"]" {
            "inputs = [\"journal\", \"syslog\"]"
        } else {
            line
        };
        out.push_str(line);
        out.push('\n');
    }
    assert!(
        out.contains("\n[sources.syslog]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:514\"\n")
            && out.contains("inputs = [\"journal\", \"syslog\"]"),
        "deploy/systemd/logferry.toml no longer has the migration block the docs describe:\n{out}"
    );
    out
}

#[test]
fn image_takes_the_old_journalctl_ncat_pipe_on_its_syslog_port() {
    if !ready("image_takes_the_old_journalctl_ncat_pipe") {
        return;
    }
    let moto = Moto::start().expect("moto");
    let mut jd = Journald::start("").expect("journald");
    deploy::journal_dir_as_on_a_host(&jd.log_dir());
    let id = std::process::id();
    let name = format!("lf-test-migration-{id}");
    let cluster = format!("migration-{id}");
    let group = format!("/k8s/{cluster}/system");
    let _container = Container(name.clone());
    let volume = Volume::create(&format!("lf-test-migration-state-{id}"));
    let etc = tempfile::tempdir().expect("tmp");
    std::fs::write(etc.path().join("logferry.toml"), migration_config()).expect("config");
    std::fs::set_permissions(etc.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let metrics = format!("127.0.0.1:{}", free_port());

    let mut extra = vec![
        "--group-add".to_string(),
        deploy::journal_gid().to_string(),
        // Port 514 (docs/deploy.md, Path 2): the one capability the migration needs.
        "--cap-add".to_string(),
        "NET_BIND_SERVICE".to_string(),
        "-v".to_string(),
        format!("{}:/var/log/journal:ro", jd.log_dir().display()),
        "-v".to_string(),
        format!("{}:/etc/logferry:ro", etc.path().display()),
        "-v".to_string(),
        format!("{}:/var/lib/logferry", volume.0),
        "-e".to_string(),
        format!("CLUSTER_NAME={cluster}"),
    ];
    extra.extend(aws_args(&moto));
    run_hardened(
        &name,
        &extra,
        &[
            "--config",
            "/etc/logferry/logferry.toml",
            "--metrics-address",
            &metrics,
        ],
    );
    Podman::wait_log(&name, "listening", 1, WAIT);

    // The old chain's unit, verbatim but for -D (this test's journald, not the host's).
    let mut pipe = Command::new("sh");
    pipe.process_group(0)
        .arg("-c")
        .arg(format!(
            "exec journalctl -D '{}' -o short -f | ncat 127.0.0.1 514",
            jd.log_dir().display()
        ))
        .stdin(Stdio::null());
    let mut pipe = pipe.spawn().expect("journalctl | ncat");
    // The pipe is live once a probe line has come through it.
    let sender = jd.sender();
    let live = wait_until(WAIT, || {
        write_entries(&sender, "probe", 0..1);
        std::thread::sleep(Duration::from_millis(500));
        !tagged(&moto.endpoint(), &group, "probe").is_empty()
    });
    assert!(
        live,
        "nothing came through the pipe:\n{}",
        Podman::logs(&name)
    );
    write_entries(&sender, "piped", 0..500);
    jd.sync();
    // Each line arrives twice: read from the journal directly, and through the pipe as a
    // `journalctl -o short` line parsed by the syslog source.
    let seen = wait_copies(&moto.endpoint(), &group, "piped", 500, 2);
    let extra: usize = seen.values().map(|c| c - 2).sum();
    assert!(extra < 3, "{extra} duplicates beyond journal + pipe");
    let _ = Command::new("kill")
        .args(["-TERM", "--"])
        .arg(format!("-{}", pipe.id()))
        .status();
    let _ = pipe.wait();
    let spool = volume.mountpoint().join("spool/syslog");
    assert!(
        spool.is_dir(),
        "the syslog input was spooled in the state volume"
    );
    Podman::ok(&["stop", "-t", "30", &name]);
    assert_eq!(Podman::exit_code(&name), 0, "{}", Podman::logs(&name));
}
