//! Running the shipped deployment artifacts for real: the image under podman, the DaemonSet's
//! pod under `podman kube play`, the systemd unit under systemd as PID 1 in systemd-nspawn.
//!
//! What this machine needs (docs/deploy.md, "What the tests run"): podman with `runc` (crun
//! refuses this host's hybrid cgroup layout), the sandbox's hard ulimits, host networking only
//! (other modes create a CNI bridge and iptables chains on the host). [`Podman`] passes all of
//! that through a private `containers.conf`, so `podman kube play` gets it too.
//!
//! A missing tool or image skips a test on a developer's machine (`cwl_testkit::skipped`: it
//! prints `SKIPPED` and test.sh lists it) and fails it in CI: the deployment tests must never
//! pass by not running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// How long a deployment test waits for lines to reach CloudWatch.
pub const DELIVERY_WAIT: Duration = Duration::from_secs(120);

/// The image `scripts/build-image.sh` tags.
pub const IMAGE: &str = "localhost/logferry:test";

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// True under CI (`CI` set), where nothing may be skipped (as `cwl_testkit::skipped` decides).
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// True when the test can run (`why` is None); otherwise reports the skip through
/// `cwl_testkit::skipped` (which fails the test under CI) and returns false.
pub fn skip_unless(test: &str, why: Option<String>) -> bool {
    match why {
        None => true,
        Some(why) => !cwl_testkit::skipped(test, &why),
    }
}

/// Why `tools` cannot all be run here, if they cannot; also needs root.
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            let t = Path::new(t);
            if t.is_absolute() {
                !t.exists()
            } else {
                !std::env::split_paths(&path).any(|d| d.join(t).is_file())
            }
        })
        .collect();
    (!missing.is_empty()).then(|| format!("missing {}", missing.join(", ")))
}

/// Runs `cmd`, returning its output; panics if it cannot be spawned.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

/// Runs `cmd`, asserting success; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// podman with this machine's settings (see the module doc).
pub struct Podman;

impl Podman {
    /// A `podman` command with the private containers.conf.
    pub fn cmd() -> Command {
        static CONF: OnceLock<PathBuf> = OnceLock::new();
        let conf = CONF.get_or_init(|| {
            let path = std::env::temp_dir().join(format!(
                "logferry-tests-containers-{}.conf",
                std::process::id()
            ));
            std::fs::write(
                &path,
                "[containers]\n\
                 default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
                 netns = \"host\"\n\
                 [engine]\n\
                 runtime = \"runc\"\n",
            )
            .expect("write containers.conf");
            path
        });
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", conf);
        c
    }

    /// `podman ARGS`, asserting success; returns stdout.
    pub fn ok(args: &[&str]) -> String {
        run_ok(Self::cmd().args(args))
    }

    /// Why the image cannot be used here, if it cannot.
    pub fn image_missing() -> Option<String> {
        if let Some(why) = missing_tools(&["podman", "runc"]) {
            return Some(why);
        }
        let out = output(Self::cmd().args(["image", "exists", IMAGE]));
        (!out.status.success()).then(|| format!("no image {IMAGE}: run scripts/build-image.sh"))
    }

    /// A container's `.State.ExitCode`.
    pub fn exit_code(name: &str) -> i32 {
        Self::ok(&["inspect", "--format", "{{.State.ExitCode}}", name])
            .trim()
            .parse()
            .expect("exit code")
    }

    /// A container's output so far (logferry logs JSON lines to stderr).
    pub fn logs(name: &str) -> String {
        let out = output(Self::cmd().args(["logs", name]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until the container's log holds `needle` at least `n` times.
    pub fn wait_log(name: &str, needle: &str, n: usize, timeout: Duration) {
        let ok = super::wait_until(timeout, || Self::logs(name).matches(needle).count() >= n);
        assert!(
            ok,
            "{name} never logged {needle:?} x{n}:\n{}",
            Self::logs(name)
        );
    }
}

/// Removes the container (and anything `podman rm` leaves) when dropped.
pub struct Container(pub String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Podman::cmd()
            .args(["rm", "-f", "-t", "0", "--ignore", &self.0])
            .output();
        remove_empty_conmon_cgroups();
    }
}

/// Removes the named volume when dropped.
pub struct Volume(pub String);

impl Volume {
    pub fn create(name: &str) -> Volume {
        let _ = Podman::cmd().args(["volume", "rm", "-f", name]).output();
        Podman::ok(&["volume", "create", name]);
        Volume(name.to_string())
    }

    /// Where podman keeps the volume's data on the host.
    pub fn mountpoint(&self) -> PathBuf {
        PathBuf::from(
            Podman::ok(&["volume", "inspect", "--format", "{{.Mountpoint}}", &self.0]).trim(),
        )
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = Podman::cmd().args(["volume", "rm", "-f", &self.0]).output();
    }
}

/// runc (cgroup v1 controllers here) leaves empty `libpod_parent/conmon` cgroup directories
/// behind; an empty cgroup directory can only be removed with rmdir, and a busy one is kept.
pub fn remove_empty_conmon_cgroups() {
    if let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") {
        for c in controllers.flatten() {
            let _ = std::fs::remove_dir(c.path().join("libpod_parent/conmon"));
        }
    }
}

/// The gid of the host's `systemd-journal` group (journal files are root:systemd-journal 0640).
pub fn journal_gid() -> u32 {
    let group = std::fs::read_to_string("/etc/group").expect("/etc/group");
    group
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some("systemd-journal")).then(|| f.nth(1)?.parse().ok())?
        })
        .expect("a systemd-journal group (Debian package systemd)")
}

/// Gives a test journald's directory the layout of a host's: group systemd-journal, setgid
/// directories (so files journald creates later get the group too), files 0640.
pub fn journal_dir_as_on_a_host(dir: &Path) {
    let gid = journal_gid().to_string();
    run_ok(Command::new("chgrp").args(["-R", &gid]).arg(dir));
    run_ok(
        Command::new("find")
            .arg(dir)
            .args(["-type", "d", "-exec", "chmod", "2755", "{}", "+"]),
    );
}

/// Runs `scripts/nspawn-rootfs.sh` and returns the cached rootfs tarball.
pub fn nspawn_rootfs_tarball() -> PathBuf {
    PathBuf::from(
        run_ok(&mut Command::new(
            repo_root().join("scripts/nspawn-rootfs.sh"),
        ))
        .trim()
        .to_string(),
    )
}

/// dist/logferry from `scripts/build-static.sh`, if built.
pub fn static_binary() -> Option<PathBuf> {
    let p = repo_root().join("dist/logferry");
    p.exists().then_some(p)
}

/// Lines written as `<tag> <index:06>` (after any prefix a format adds), counted in moto.
/// How many times each `<tag> <index>` occurs in the group's events, whatever the stream.
pub fn tagged(endpoint: &str, group: &str, tag: &str) -> BTreeMap<usize, usize> {
    let mut seen = BTreeMap::new();
    for stream in cwl_testkit::client::list_streams(endpoint, group).unwrap_or_default() {
        for (_, text) in super::events(endpoint, group, &stream) {
            let Some(at) = text.find(&format!("{tag} ")) else {
                continue;
            };
            let digits: String = text[at + tag.len() + 1..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(i) = digits.parse() {
                *seen.entry(i).or_insert(0) += 1;
            }
        }
    }
    seen
}

/// Waits until every index in `0..n` of `tag` is in the group; returns the counts.
pub fn wait_all(endpoint: &str, group: &str, tag: &str, n: usize) -> BTreeMap<usize, usize> {
    wait_copies(endpoint, group, tag, n, 1)
}

/// Waits until every index in `0..n` of `tag` is in the group `copies` times or more.
pub fn wait_copies(
    endpoint: &str,
    group: &str,
    tag: &str,
    n: usize,
    copies: usize,
) -> BTreeMap<usize, usize> {
    let mut seen = BTreeMap::new();
    let short = |seen: &BTreeMap<usize, usize>| -> Vec<usize> {
        (0..n)
            .filter(|i| seen.get(i).copied().unwrap_or(0) < copies)
            .collect()
    };
    super::wait_until(DELIVERY_WAIT, || {
        seen = tagged(endpoint, group, tag);
        short(&seen).is_empty()
    });
    let missing = short(&seen);
    assert!(
        missing.is_empty(),
        "{tag}: {} of {n} lines reached CloudWatch fewer than {copies} times (first: {:?})",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    seen
}
