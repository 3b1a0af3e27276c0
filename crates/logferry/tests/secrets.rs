//! Secrets never reach logferry's output: planted credentials (in the environment and in the
//! config file's `[sinks.NAME.auth]`) are looked for in everything the real binary prints, at
//! `trace` level, through a normal run shipping to moto (with and without `assume_role`),
//! runs whose endpoint or STS is dead, bad configs, `check`, `validate`, `/metrics`, `/health`
//! and `/ready`.
//!
//! Each secret is also looked for by its first 8 characters (a truncated or partly escaped
//! copy is still a leak), and the STS response's own credentials (which the test cannot know)
//! by the XML elements that carry them. `LOG_SENSITIVE_BODIES=true` is set throughout: it is the
//! SDK's switch for logging credential-bearing response bodies, and logferry must hold even
//! when an operator flips it.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// In the environment: what the SDK's chain would sign with.
const ENV_SECRET: &str = "Qv7Zk2Xp9mEnvSecretAccessKey";
const ENV_TOKEN: &str = "Jp2Gs9Ke7wEnvSessionToken";
/// In the config file's `auth` table.
const FILE_SECRET: &str = "Wd4Rt8Ln3sFileSecretAccessKey";
const FILE_TOKEN: &str = "Hc6Yb1Mf5uFileSessionToken";
const ROLE: &str = "arn:aws:iam::123456789012:role/shipper";

/// What must appear nowhere: each secret, its first 8 characters, and the markup of STS's
/// credentials (moto's session tokens start `FQoGZXIvYXdzE`, like AWS's old ones).
fn forbidden() -> Vec<String> {
    let mut out = Vec::new();
    for s in [ENV_SECRET, ENV_TOKEN, FILE_SECRET, FILE_TOKEN] {
        out.push(s.to_string());
        out.push(s[..8].to_string());
    }
    for s in ["<SecretAccessKey>", "<SessionToken>", "FQoGZXIvYXdzE"] {
        out.push(s.to_string());
    }
    out
}

/// Fails, naming the output and showing the line, if any forbidden string is in `text`.
fn assert_clean(label: &str, text: &str) {
    for bad in forbidden() {
        if let Some(line) = text.lines().find(|l| l.contains(&bad)) {
            panic!(
                "{label}: `{bad}` leaked:\n{}",
                &line[..line.len().min(2000)]
            );
        }
    }
}

/// Everything planted, most verbose logging on.
fn secret_env(cmd: &mut Command) {
    aws_env(cmd);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDPLANTEDENV")
        .env("AWS_SECRET_ACCESS_KEY", ENV_SECRET)
        .env("AWS_SESSION_TOKEN", ENV_TOKEN)
        .env("LOGFERRY_LOG", "trace")
        .env("RUST_LOG", "trace")
        .env("LOG_SENSITIVE_BODIES", "true");
}

fn config(port: u16, endpoint: &str, group: &str, auth: &str) -> String {
    let sink = cw_sink(&["in"], group, "s", endpoint)
        .format("message")
        .batch_timeout("100ms")
        .max_backoff("300ms")
        .line(auth);
    let settings = "shutdown_grace = \"2s\"\nhealth_stuck_after = \"1s\"";
    pipeline_with(settings, &syslog_source("in", "tcp", port, ""), &sink)
}

fn inline_auth(role: bool) -> String {
    let mut t = format!(
        "[sinks.cw.auth]\naccess_key_id = \"AKIDPLANTEDFILE\"\nsecret_access_key = \"{FILE_SECRET}\"\nsession_token = \"{FILE_TOKEN}\"\n"
    );
    if role {
        t.push_str(&format!(
            "assume_role = \"{ROLE}\"\nexternal_id = \"ext-7\"\n"
        ));
    }
    t
}

/// A `logferry run` with everything planted, shipping from the syslog port `port` to `group`
/// at `endpoint` (with `auth` in the sink), metrics served on `maddr`. Its stderr goes to its
/// log (`Logferry::log`), its stdout (which support discards) to `stdout`.
struct Run {
    port: u16,
    maddr: String,
    stdout: tempfile::NamedTempFile,
    lf: Logferry,
}

impl Run {
    /// Starts it (`extra` adjusts the command) and waits until it listens.
    fn start(endpoint: &str, group: &str, auth: &str, extra: impl FnOnce(&mut Command)) -> Run {
        let port = free_port();
        let maddr = format!("127.0.0.1:{}", free_port());
        let stdout = tempfile::NamedTempFile::new().expect("tmp");
        let out = stdout.reopen().expect("stdout file");
        let lf = Logferry::start_with(&config(port, endpoint, group, auth), |cmd| {
            secret_env(cmd);
            cmd.env("LOGFERRY_METRICS_ADDRESS", &maddr).stdout(out);
            extra(cmd);
        });
        lf.wait_listening(1);
        Run {
            port,
            maddr,
            stdout,
            lf,
        }
    }

    /// `/metrics`, `/health` and `/ready`, labelled.
    fn scrape(&self) -> Vec<(String, String)> {
        ["/metrics", "/health", "/ready"]
            .iter()
            .map(|p| {
                let (status, body) = http_get(&self.maddr, p).unwrap_or_default();
                (format!("GET {p} ({status})"), body)
            })
            .collect()
    }

    /// Stops it (SIGTERM); returns whether it exited 0, and its stderr and stdout.
    fn stop(mut self) -> (bool, String) {
        let ok = self.lf.terminate().success();
        let printed = format!(
            "{}{}",
            self.lf.log(),
            std::fs::read_to_string(self.stdout.path()).unwrap_or_default()
        );
        (ok, printed)
    }
}

/// A run that ships `lines` from its syslog port to `group` in moto and stops cleanly; returns
/// its `/metrics`, `/health` and `/ready` (scraped before the stop) and its output.
fn ship(
    moto: &Moto,
    group: &str,
    auth: &str,
    extra: impl FnOnce(&mut Command),
    lines: &[&str],
) -> (Vec<(String, String)>, String) {
    let run = Run::start(&moto.endpoint(), group, auth, extra);
    let data: String = lines.iter().map(|l| format!("{l}\n")).collect();
    tcp_send(run.port, data.as_bytes());
    let got = wait_events(&moto.endpoint(), group, "s", lines.len(), WAIT);
    assert_eq!(got.len(), lines.len(), "{}", run.lf.log());
    let scraped = run.scrape();
    let (ok, log) = run.stop();
    assert!(ok, "{log}");
    (scraped, log)
}

#[test]
fn shipping_at_trace_level_never_prints_a_secret() {
    let moto = Moto::start().expect("moto");
    let mut outputs: Vec<(String, String)> = Vec::new();

    // 1. Credentials from the environment (key, secret and session token, all signed with).
    let (scraped, log) = ship(&moto, "/sec/env", "", |_| {}, &["env one", "env two"]);
    outputs.extend(scraped);
    // The test means something only if the SDK really logged at trace, and really had a
    // session token to sign with (the header is there, redacted by the SDK).
    assert!(log.contains("\"target\":\"aws_sigv4"), "no SDK trace logs");
    assert!(log.contains("\"level\":\"TRACE\""), "no trace level");
    assert!(
        log.contains("x-amz-security-token") && log.contains("** redacted"),
        "the session token was not used"
    );
    outputs.push(("run, environment credentials".into(), log));

    // 2. Inline credentials assuming a role through STS (moto's): STS answers with fresh
    //    credentials, in a response body the SDK would log under LOG_SENSITIVE_BODIES.
    let sts = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL_STS", moto.endpoint());
    };
    let (scraped, log) = ship(&moto, "/sec/role", &inline_auth(true), sts, &["role one"]);
    outputs.extend(scraped);
    assert!(
        log.contains("obtained assumed credentials"),
        "STS was not used:\n{log}"
    );
    // The config file is 0644 (support's Logferry writes it so, whatever the umask) and holds
    // secrets: warned, by name and mode, without the secret.
    assert!(
        log.contains("mode 0644 lets every user on this host read the credentials in [sinks.cw.auth]; run `chmod 600"),
        "no permission warning:\n{}",
        &log[..log.len().min(3000)]
    );
    outputs.push(("run, inline credentials + assume_role".into(), log));

    for (label, text) in &outputs {
        assert_clean(label, text);
    }
}

#[test]
fn errors_at_trace_level_never_print_a_secret() {
    let mut outputs: Vec<(String, String)> = Vec::new();
    let dead = format!("http://127.0.0.1:{}", free_port());

    // 1. A dead CloudWatch endpoint, inline credentials: retried errors, then unready.
    let run = Run::start(&dead, "/sec/dead", &inline_auth(false), |_| {});
    tcp_send(run.port, b"never delivered\n");
    let unready = wait_until(WAIT, || {
        http_get(&run.maddr, "/ready").is_some_and(|r| r.0 == 503)
    });
    assert!(unready, "{}", run.lf.log());
    assert!(run.lf.log().contains("will retry"), "{}", run.lf.log());
    outputs.extend(run.scrape());
    outputs.push(("run, dead endpoint".into(), run.stop().1));

    // 2. A credential error: the role cannot be assumed (STS is dead); the base credentials
    //    that would sign the STS call are the planted ones.
    let sts = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL_STS", &dead);
    };
    let run = Run::start(&dead, "/sec/cred", &inline_auth(true), sts);
    tcp_send(run.port, b"never delivered either\n");
    let refused = wait_until(WAIT, || run.lf.log().contains("loading credentials"));
    assert!(refused, "{}", run.lf.log());
    outputs.extend(run.scrape());
    outputs.push(("run, credential error".into(), run.stop().1));

    // 3. Bad configs around a secret: `run` and `validate` refuse them, by key and line.
    let dir = tempfile::tempdir().expect("tmp");
    let bad_auths = [
        // The secret where the key should be, the key missing, a typo'd key.
        format!("[sinks.cw.auth]\nsecret_access_key = \"{FILE_SECRET}\"\nsession_token = \"{FILE_TOKEN}\"\n"),
        format!("[sinks.cw.auth]\naccess_key_id = \"A\"\nsecret_acces_key = \"{FILE_SECRET}\"\n"),
        // A broken `${` reference inside the secret, and a secret pasted as a number.
        format!("[sinks.cw.auth]\naccess_key_id = \"A\"\nsecret_access_key = \"{FILE_SECRET}${{\"\n"),
        "[sinks.cw.auth]\naccess_key_id = \"A\"\nsecret_access_key = 73198246501234\nsession_token = \"x\"\n".into(),
        // TOML syntax errors on the secret's line.
        format!("[sinks.cw.auth]\naccess_key_id = \"A\"\nsecret_access_key = {FILE_SECRET}\n"),
        format!("[sinks.cw.auth]\naccess_key_id = \"A\"\nsecret_access_key = \"{FILE_SECRET}\n"),
        // The whole table replaced by the secret.
        format!("auth = \"{FILE_SECRET}\"\n"),
    ];
    for (i, auth) in bad_auths.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.toml"));
        let text = config(free_port(), &dead, "/sec/bad", "")
            .replace("@DATA@", &dir.path().display().to_string())
            .replace(
                "max_backoff = \"300ms\"\n",
                &format!("max_backoff = \"300ms\"\n{auth}"),
            );
        std::fs::write(&path, text).expect("write");
        for sub in ["validate", "run", "check"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
            cmd.arg(sub).arg("--config").arg(&path);
            secret_env(&mut cmd);
            let out = cmd.stdin(Stdio::null()).output().expect("spawn");
            let text = printed(&out);
            assert_eq!(out.status.code(), Some(2), "{sub} {auth}: {text}");
            assert!(
                text.contains(&format!("bad{i}.toml:")),
                "{sub} {auth}: {text}"
            );
            outputs.push((format!("{sub} bad config {i}"), text));
        }
    }
    // The number pasted as a secret is a secret too.
    for (label, text) in &outputs {
        assert!(!text.contains("73198246"), "{label}: {text}");
        assert_clean(label, text);
    }
}

#[test]
fn check_and_validate_never_print_a_secret() {
    let moto = Moto::start().expect("moto");
    let dir = tempfile::tempdir().expect("tmp");
    let mut outputs: Vec<(String, String)> = Vec::new();
    let run = |args: &[&str], text: &str, extra: &dyn Fn(&mut Command)| -> (bool, String) {
        // 0644 whatever the umask: the permission warning below is about exactly this mode.
        let path = write_config(dir.path(), "c.toml", text);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_logferry"));
        cmd.args(args).arg("--config").arg(&path);
        secret_env(&mut cmd);
        extra(&mut cmd);
        let out = cmd.stdin(Stdio::null()).output().expect("spawn");
        (out.status.success(), printed(&out))
    };
    let sts = moto.endpoint();
    let with_sts = |cmd: &mut Command| {
        cmd.env("AWS_ENDPOINT_URL_STS", &sts);
    };
    let none = |_: &mut Command| {};

    // Where the credentials come from, what check says supplies them, and whether it warns
    // that the config file (0644) holds them.
    type Adjust<'a> = &'a dyn Fn(&mut Command);
    let cases: [(&str, String, Adjust, &str, bool); 3] = [
        (
            "environment",
            String::new(),
            &none,
            "EnvironmentVariable",
            false,
        ),
        (
            "inline",
            inline_auth(false),
            &none,
            "LogferryConfigAuth",
            true,
        ),
        (
            "assume_role",
            inline_auth(true),
            &with_sts,
            "AssumeRoleProvider",
            false,
        ),
    ];
    for (label, auth, extra, provider, warns) in cases {
        let cfg = config(free_port(), &moto.endpoint(), "/sec/check", &auth);
        let (ok, out) = run(&["check", "--write"], &cfg, extra);
        assert!(ok, "{out}");
        let found = format!("credentials: found, supplied by {provider}");
        assert!(out.contains(&found), "{out}");
        if warns {
            assert!(
                out.contains("warn  config: ") && out.contains("mode 0644"),
                "{out}"
            );
        }
        outputs.push((format!("check --write, {label}"), out));
    }

    let dead = format!("http://127.0.0.1:{}", free_port());
    let dead_cfg = config(free_port(), &dead, "/sec/check", &inline_auth(true));
    let (ok, out) = run(&["check", "--write"], &dead_cfg, &|cmd| {
        cmd.env("AWS_ENDPOINT_URL_STS", &dead);
    });
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL  sink cw credentials"), "{out}");
    outputs.push(("check, dead STS and endpoint".into(), out));

    let role_cfg = config(
        free_port(),
        &moto.endpoint(),
        "/sec/check",
        &inline_auth(true),
    );
    let (ok, out) = run(&["validate"], &role_cfg, &none);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: ") && out.contains("chmod 600"),
        "{out}"
    );
    outputs.push(("validate".into(), out));

    for (label, text) in &outputs {
        assert_clean(label, text);
    }
}
