//! The configuration file: TOML with named sources and sinks.
//!
//! Loading is in three passes so that `logferry validate` can report *every* problem at once,
//! each as `FILE:LINE: key: what is wrong`:
//!
//! 1. The text is parsed twice: by `toml` into values, and by `toml_edit` into a document that
//!    remembers where each key is, so later errors can be pinned to a line.
//! 2. `${ENV_VAR}` references in string values are expanded (after parsing, so an environment
//!    variable can never break the TOML syntax or shift line numbers).
//! 3. Each source and sink table is deserialized on its own (so one bad table does not hide
//!    problems in the next), then checked for meaning: addresses, templates, retention values,
//!    inputs that name real sources.
//!
//! `LOGFERRY_LOG_GROUP` and `LOGFERRY_LOG_STREAM` override every CloudWatch sink's names, in the
//! spirit of the old awslogs container's environment variables.
//!
//! Credentials written in a sink's `auth` table are [`Secret`](crate::secret::Secret)s: the config's `Debug` output
//! redacts them, and no error message quotes them (a bad `${` reference or a mistyped value in
//! `auth` is reported by key and line only). [`load`] warns when a file holding inline secrets
//! is readable by every user, or when any config file is writable by every user.
//!
//! One file per table: [`syslog`], [`stdin`], [`journald`], [`file`](mod@file) (also `kubernetes_logs`)
//! and [`cloudwatch`]; [`pushed`] holds what syslog and stdin share (frame limit, spool). The
//! machinery beside them: `diag` (errors with their line), `env` (`${VAR}` expansion),
//! `permissions` (inline secrets, permission warnings), `zero_config` (no file at all).
//!
//! Why a `config/` tree rather than each source's settings beside its code (Vector's layout):
//! the import graph stays one-way (sources and the sink read `config`; `config` reads no
//! runtime module, only the leaves `net` and `tls`), so `validate`, `check`, the config fuzz
//! target and a SIGHUP reload check a file without touching the pipeline; and every key of the
//! file is found in one directory. Vector puts config next to each component because
//! components are plugins found through a registry; logferry has five fixed types.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub mod cloudwatch;
mod diag;
mod env;
pub mod file;
pub mod journald;
mod permissions;
pub mod pushed;
pub mod stdin;
pub mod syslog;
mod zero_config;

pub use cloudwatch::{
    AssumeRole, AuthConfig, CloudWatchSinkConfig, LogGroupClass, MessageFormat, NewGroup,
    StaticKeys, RETENTION_DAYS,
};
use diag::{offset_to_line, Ctx};
pub use diag::{ConfigError, ConfigErrors};
pub use file::{
    FileSourceConfig, KubernetesApiSettings, MultilineSettings, TimestampSettings,
    KUBERNETES_DEFAULT_INCLUDE,
};
pub use journald::{JournalStart, JournaldSourceConfig};
pub use pushed::{SpoolFsync, SpoolFullPolicy, SpoolSettings, DEFAULT_MAX_FRAME_BYTES};
pub use stdin::StdinSourceConfig;
pub use syslog::{
    ClientAuth, ListenAddress, SyslogSourceConfig, TlsSettings, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
};
pub use zero_config::zero_config;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from.
    pub path: PathBuf,
    /// Cursors, offsets, spool and dead-letter files live here.
    pub data_dir: PathBuf,
    /// `data_dir_group`: the gid that may read (never write) the state: files `0640`,
    /// directories `0750`. `None`: owner only (`0600`/`0700`).
    pub data_dir_group: Option<u32>,
    /// How long a SIGTERM/SIGINT may take to flush what is held.
    pub shutdown_grace: Duration,
    /// An event held this long makes `/ready` (and, with CloudWatch answering, `/health`) fail.
    pub health_stuck_after: Duration,
    /// Sources by name, in file order.
    pub sources: Vec<(String, SourceConfig)>,
    /// Sinks by name, in file order.
    pub sinks: Vec<(String, SinkConfig)>,
    /// Sinks whose `auth` table holds a secret written in the file itself (not a `${VAR}`).
    pub inline_secrets: Vec<String>,
    /// Problems that do not stop logferry (world-readable secrets...), one line each, already
    /// logged by [`load`]; `validate` and `check`, which run without a logger, print them.
    pub warnings: Vec<String>,
}

/// A source's settings.
#[derive(Debug, Clone)]
pub enum SourceConfig {
    /// Syslog over TCP, UDP or unix sockets.
    Syslog(SyslogSourceConfig),
    /// Lines (or syslog frames) from standard input.
    Stdin(StdinSourceConfig),
    /// The systemd journal, read from its files.
    Journald(JournaldSourceConfig),
    /// Log files (`type = "file"`) or Kubernetes container logs (`type = "kubernetes_logs"`).
    File(FileSourceConfig),
}

/// A sink's settings.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// AWS CloudWatch Logs.
    CloudWatchLogs(CloudWatchSinkConfig),
}

impl SinkConfig {
    /// The sources feeding it.
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::CloudWatchLogs(c) => &c.inputs,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    data_dir: Option<PathBuf>,
    data_dir_group: Option<String>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    shutdown_grace: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    health_stuck_after: Option<Duration>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Value>,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Value>,
}

/// Accepts `"25s"`, `"1m 30s"`, `"250ms"` or a number of seconds.
pub(super) fn de_duration_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Secs(u64),
        Float(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Secs(s) => Ok(Some(Duration::from_secs(s))),
        Raw::Float(f) if f >= 0.0 && f.is_finite() => Ok(Some(Duration::from_secs_f64(f))),
        Raw::Float(f) => Err(serde::de::Error::custom(format!(
            "{f} is not a valid duration"
        ))),
        Raw::Text(t) => humantime::parse_duration(&t).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{t}` is not a duration ({e}); write e.g. \"1s\", \"250ms\" or \"2m\""
            ))
        }),
    }
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::whole_file(
            path,
            "(file)",
            format!("cannot read: {e}"),
        )])
    })?;
    let mut config = parse(path, &text, &|name| std::env::var(name).ok())?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map(|m| m.permissions().mode()).ok()
    };
    if let Some(w) =
        mode.and_then(|m| permissions::permission_warning(path, m, &config.inline_secrets))
    {
        // Only `run` (and its SIGHUP reloads) has a logger by now; `validate` and `check`
        // print `warnings` themselves.
        tracing::warn!("{w}");
        config.warnings.push(w);
    }
    Ok(config)
}

/// Parses and validates config text; `env` looks up environment variables.
pub fn parse(
    path: &Path,
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut ctx = Ctx {
        file: path,
        text,
        doc: None,
        errors: Vec::new(),
    };
    let mut root: toml::Value = match toml::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let line = e.span().map(|s| offset_to_line(text, s.start)).unwrap_or(1);
            return Err(ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line,
                key: "(syntax)".into(),
                message: match e.message().trim() {
                    // Some syntax errors (`y=` at the end of the file) carry no message.
                    "" => "invalid TOML syntax here".to_string(),
                    m => m.to_string(),
                },
            }]));
        }
    };
    ctx.doc = toml_edit::ImDocument::parse(text).ok();

    let inline_secrets = permissions::sinks_with_inline_secrets(&root);
    let mut env_errors = Vec::new();
    env::expand_env(&mut root, &mut Vec::new(), env, &mut env_errors);
    for (p, msg) in env_errors {
        let refs: Vec<&str> = p.iter().map(String::as_str).collect();
        ctx.error(&refs, msg);
    }

    let Some(raw) = ctx.deserialize::<RawRoot>(&[], root) else {
        return Err(ConfigErrors(ctx.errors));
    };

    let data_dir = raw
        .data_dir
        .unwrap_or_else(|| PathBuf::from("/var/lib/logferry"));
    let data_dir_group = raw.data_dir_group.and_then(|name| {
        let gid = logferry_private_files::resolve_group(&name);
        if gid.is_none() {
            ctx.error(
                &["data_dir_group"],
                format!("no group named or numbered `{name}` on this host"),
            );
        }
        gid
    });
    // Inputs are checked against every declared source, valid or not: a source with an error
    // of its own should not also be reported as missing from each sink that lists it.
    let declared: Vec<String> = raw.sources.keys().cloned().collect();
    let mut sources = Vec::new();
    for (name, value) in raw.sources {
        if let Some(s) = source_config(&mut ctx, &name, value) {
            sources.push((name, s));
        }
    }
    if ctx.errors.is_empty() && sources.is_empty() {
        ctx.error(&["sources"], "no source is configured");
    }
    let source_names: HashSet<&str> = declared.iter().map(String::as_str).collect();
    let mut sinks = Vec::new();
    for (name, value) in raw.sinks {
        if let Some(s) = sink_config(&mut ctx, &name, value, &source_names, &data_dir, env) {
            sinks.push((name, s));
        }
    }
    if ctx.errors.is_empty() && sinks.is_empty() {
        ctx.error(&["sinks"], "no sink is configured");
    }
    for (name, _) in &sources {
        if ctx.errors.is_empty() && !sinks.iter().any(|(_, s)| s.inputs().contains(name)) {
            ctx.error(
                &["sources", name],
                "no sink lists this source in its `inputs`; its events would go nowhere",
            );
        }
    }
    if !ctx.errors.is_empty() {
        return Err(ConfigErrors(ctx.errors));
    }
    Ok(Config {
        path: path.to_path_buf(),
        data_dir,
        data_dir_group,
        shutdown_grace: raw.shutdown_grace.unwrap_or(Duration::from_secs(25)),
        health_stuck_after: raw.health_stuck_after.unwrap_or(Duration::from_secs(300)),
        sources,
        sinks,
        inline_secrets,
        warnings: Vec::new(),
    })
}

fn take_type(
    ctx: &mut Ctx<'_>,
    section: &str,
    name: &str,
    value: &mut toml::Value,
) -> Option<String> {
    let Some(table) = value.as_table_mut() else {
        ctx.error(&[section, name], "must be a table");
        return None;
    };
    match table.remove("type") {
        Some(toml::Value::String(t)) => Some(t),
        Some(_) => {
            ctx.error(&[section, name, "type"], "must be a string");
            None
        }
        None => {
            ctx.error(&[section, name, "type"], "is required");
            None
        }
    }
}

fn source_config(ctx: &mut Ctx<'_>, name: &str, mut value: toml::Value) -> Option<SourceConfig> {
    let kind = take_type(ctx, "sources", name, &mut value)?;
    let path = ["sources", name];
    match kind.as_str() {
        "syslog" => {
            let raw: syslog::RawSyslog = ctx.deserialize(&path, value)?;
            syslog::syslog_config(ctx, name, raw)
        }
        "stdin" => {
            let raw: stdin::RawStdin = ctx.deserialize(&path, value)?;
            Some(stdin::stdin_config(ctx, name, raw))
        }
        "journald" => {
            let raw: journald::RawJournald = ctx.deserialize(&path, value)?;
            journald::journald_config(ctx, name, raw)
        }
        "file" | "kubernetes_logs" => {
            let raw: file::RawFile = ctx.deserialize(&path, value)?;
            file::file_config(ctx, name, raw, kind == "kubernetes_logs").map(SourceConfig::File)
        }
        other => {
            ctx.error(
                &["sources", name, "type"],
                format!("unknown source type `{other}`; expected one of: syslog, stdin, journald, file, kubernetes_logs"),
            );
            None
        }
    }
}

fn sink_config(
    ctx: &mut Ctx<'_>,
    name: &str,
    mut value: toml::Value,
    sources: &HashSet<&str>,
    data_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<SinkConfig> {
    let kind = take_type(ctx, "sinks", name, &mut value)?;
    if kind != "cloudwatch_logs" {
        ctx.error(
            &["sinks", name, "type"],
            format!("unknown sink type `{kind}`; expected: cloudwatch_logs"),
        );
        return None;
    }
    let raw: cloudwatch::RawCloudWatch = ctx.deserialize(&["sinks", name], value)?;
    cloudwatch::cloudwatch_config(ctx, name, raw, sources, data_dir, env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("c.toml"), text, &no_env) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    /// Some error starts with `prefix` (file:line: key: the start of the reason).
    fn assert_reported(errs: &[String], prefix: &str) {
        assert!(
            errs.iter().any(|e| e.starts_with(prefix)),
            "{prefix} not in {errs:?}"
        );
    }

    /// The testdata files start with a comment line: line numbers count it.
    const GOOD: &str = include_str!("testdata/good.toml");

    #[test]
    fn good_config_loads() {
        let c = parse(Path::new("c.toml"), GOOD, &no_env).expect("valid");
        assert_eq!(c.sources.len(), 1);
        let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
        assert_eq!(s.batch_timeout, Duration::from_millis(250));
        assert_eq!(s.retention_days, Some(14));
        assert_eq!(
            s.dead_letter_path,
            PathBuf::from("/tmp/x/dead-letter/cw.jsonl")
        );
    }

    #[test]
    fn data_dir_group_is_a_name_or_gid_known_here() {
        let c = parse(Path::new("c.toml"), GOOD, &no_env).expect("valid");
        assert_eq!(c.data_dir_group, None);
        let with = |g: &str| {
            GOOD.replacen(
                "data_dir = \"/tmp/x\"",
                &format!("data_dir = \"/tmp/x\"\ndata_dir_group = \"{g}\""),
                1,
            )
        };
        let c = parse(Path::new("c.toml"), &with("0"), &no_env).expect("gid");
        assert_eq!(c.data_dir_group, Some(0));
        let c = parse(Path::new("c.toml"), &with("root"), &no_env).expect("name");
        assert_eq!(c.data_dir_group, Some(0));
        assert_eq!(
            errors(&with("no-such-group-here")),
            vec!["c.toml:3: data_dir_group: no group named or numbered `no-such-group-here` on this host"]
        );
    }

    #[test]
    fn every_problem_is_reported_with_line_and_key() {
        let errs = errors(include_str!("testdata/errors.toml"));
        for want in [
            "c.toml:4: sources.syslog.adress: unknown field",
            "c.toml:8: sources.other.address: unknown scheme `ftp`",
            "c.toml:12: sinks.cw.inputs: `nope`",
            "c.toml:13: sinks.cw.log_group:",
            "c.toml:14: sinks.cw.retention_days: 13 is not",
        ] {
            assert_reported(&errs, want);
        }
    }

    #[test]
    fn entity_is_on_only_with_a_valid_cluster_name_from_config_or_env() {
        use crate::sink::entity::{EntityConfig, Platform};
        let base = "[sources.s]\ntype = \"stdin\"\n\n[sinks.cw]\ntype = \"cloudwatch_logs\"\ninputs = [\"s\"]\nlog_group = \"g\"\n";
        let entity = |extra: &str, env: &dyn Fn(&str) -> Option<String>| {
            let c = parse(Path::new("c.toml"), &format!("{base}{extra}"), env).expect("valid");
            let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
            s.entity.clone()
        };
        let cluster_env = |k: &str| (k == "CLUSTER_NAME").then(|| "from-env".to_string());
        assert_eq!(entity("", &no_env), None);
        assert_eq!(
            entity("", &cluster_env),
            Some(EntityConfig {
                cluster: "from-env".into(),
                platform: Platform::Eks
            })
        );
        assert_eq!(
            entity(
                "cluster_name = \"lab\"\ncluster_platform = \"kubernetes\"\n",
                &cluster_env
            ),
            Some(EntityConfig {
                cluster: "lab".into(),
                platform: Platform::Kubernetes
            })
        );
        let errs = errors(&format!(
            "{base}cluster_name = \"a/b\"\ncluster_platform = \"gke\"\n"
        ));
        assert_reported(&errs, "c.toml:8: sinks.cw.cluster_name: `a/b` must be");
        assert_reported(&errs, "c.toml:9: sinks.cw.cluster_platform: `gke` is not");
    }

    #[test]
    fn new_group_options_are_checked_with_line_and_key() {
        let base = "[sources.s]\ntype = \"stdin\"\n\n[sinks.cw]\ntype = \"cloudwatch_logs\"\ninputs = [\"s\"]\nlog_group = \"g\"\n";
        let errs = errors(&format!(
            "{base}log_group_class = \"DELIVERY\"\nkms_key_id = \"arn:aws:kms:us-east-1:123456789012:alias/logs\"\nmax_requests_per_second = 0\n[sinks.cw.tags]\n\"aws:team\" = \"x\"\n"
        ));
        for (line, key, what) in [
            (8, "log_group_class", "`DELIVERY` is not a log group class"),
            (9, "kms_key_id", "names an alias"),
            (10, "max_requests_per_second", "0 is not a rate"),
            (11, "tags", "tag key `aws:team`"),
        ] {
            let want = format!("c.toml:{line}: sinks.cw.{key}: ");
            assert!(
                errs.iter()
                    .any(|e| e.starts_with(&want) && e.contains(what)),
                "{want}{what} not in {errs:?}"
            );
        }
        let errs = errors(&format!(
            "{base}kms_key_id = \"1234abcd-12ab-34cd-56ef-1234567890ab\"\n"
        ));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:8: sinks.cw.kms_key_id: ")
                    && e.contains("is not an ARN")),
            "{errs:?}"
        );
        let errs = errors(&format!(
            "{base}create_missing_group = false\ndeletion_protection = true\n"
        ));
        assert_reported(&errs, "c.toml:8: sinks.cw.create_missing_group: is false");
        let ok = format!(
            "{base}log_group_class = \"INFREQUENT_ACCESS\"\nkms_key_id = \"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab\"\ndeletion_protection = true\nmax_requests_per_second = 2.5\n[sinks.cw.tags]\nteam = \"logs\"\n"
        );
        assert_eq!(errors(&ok), Vec::<String>::new());
    }

    #[test]
    fn syntax_error_has_a_line() {
        let errs = errors("[sources.a]\ntype = \"syslog\"\naddress = \n");
        assert_eq!(errs.len(), 1);
        assert!(errs[0].starts_with("c.toml:3: (syntax):"), "{errs:?}");
    }

    #[test]
    fn syntax_errors_always_say_something() {
        // Found by the config_parser fuzz target: toml gives this one an empty message.
        let errs = errors("\"\" = 1\n");
        assert!(
            errs[0].starts_with("c.toml:1: \"\": unknown field"),
            "{errs:?}"
        );
        let errs = errors("y=");
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].starts_with("c.toml:1: (syntax): ")
                && errs[0].len() > "c.toml:1: (syntax): ".len(),
            "{errs:?}"
        );
    }

    #[test]
    fn missing_and_mistyped_keys() {
        let text = "[sources.a]\ntype = \"syslog\"\n\n[sinks.b]\ntype = \"cloudwatch_logs\"\ninputs = [\"a\"]\nlog_group = \"g\"\nmax_in_flight = \"many\"\n";
        let errs = errors(text);
        assert_reported(&errs, "c.toml:1: sources.a.address: is required");
        assert_reported(&errs, "c.toml:8: sinks.b.max_in_flight:");
    }

    #[test]
    fn env_references_expand_and_unset_ones_are_errors() {
        let text = GOOD.replace("/coreos/{hostname}/system", "/c/${CLUSTER}/${MISSING:-sys}");
        let env = |n: &str| (n == "CLUSTER").then(|| "prod".to_string());
        let c = parse(Path::new("c.toml"), &text, &env).expect("valid");
        let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
        assert_eq!(s.log_group.source(), "/c/prod/sys");

        let text = GOOD.replace("tcp://127.0.0.1:514", "tcp://${HOST}:514");
        let errs = errors(&text);
        assert_reported(
            &errs,
            "c.toml:6: sources.syslog.address: environment variable `HOST` is not set",
        );
    }

    #[test]
    fn env_overrides_names() {
        let env = |n: &str| match n {
            "LOGFERRY_LOG_GROUP" => Some("/from/env".to_string()),
            "LOGFERRY_LOG_STREAM" => Some("node-{hostname}".to_string()),
            _ => None,
        };
        let c = parse(Path::new("c.toml"), GOOD, &env).expect("valid");
        let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
        assert_eq!(s.log_group.source(), "/from/env");
        assert_eq!(s.log_stream.source(), "node-{hostname}");
    }

    #[test]
    fn zero_config_needs_only_a_group() {
        let env = |n: &str| (n == "LOGFERRY_LOG_GROUP").then(|| "/fleet/system".to_string());
        let c = zero_config(&env).expect("valid");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/logferry"));
        assert!(
            matches!(&c.sources[0].1, SourceConfig::Journald(j) if j.start == JournalStart::End)
        );
        let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
        assert_eq!(s.log_group.source(), "/fleet/system");
        assert!(s.log_stream.uses_instance_id());
        let errs = zero_config(&no_env).expect_err("no group");
        assert!(errs.to_string().contains("LOGFERRY_LOG_GROUP"));
    }

    fn syslog_cfg(extra: &str) -> String {
        format!(
            "[sources.s]\ntype = \"syslog\"\n{extra}\n\n[sinks.c]\ntype = \"cloudwatch_logs\"\ninputs = [\"s\"]\nlog_group = \"g\"\n"
        )
    }

    fn syslog_of(text: &str) -> SyslogSourceConfig {
        match parse(Path::new("c.toml"), text, &no_env) {
            Ok(c) => match &c.sources[0].1 {
                SourceConfig::Syslog(s) => s.clone(),
                other => panic!("{other:?}"),
            },
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn plain_listeners_beyond_loopback_need_allow_insecure_remote() {
        for addr in [
            "tcp://0.0.0.0:514",
            "udp://[::]:514",
            "tcp://10.1.2.3:514",
            "udp://node-1:514",
        ] {
            let errs = errors(&syslog_cfg(&format!("address = \"{addr}\"")));
            assert_eq!(errs.len(), 1, "{errs:?}");
            assert!(
                errs[0].starts_with("c.toml:3: sources.s.address: ")
                    && errs[0].contains("allow_insecure_remote = true"),
                "{errs:?}"
            );
        }
        for addr in [
            "tcp://127.0.0.1:514",
            "udp://[::1]:514",
            "tcp://localhost:514",
            "tcp://127.3.4.5:9",
            "unix:///run/x.sock",
        ] {
            assert!(
                errors(&syslog_cfg(&format!("address = \"{addr}\""))).is_empty(),
                "{addr}"
            );
        }
        let s = syslog_of(&syslog_cfg(
            "address = \"udp://0.0.0.0:514\"\nallow_insecure_remote = true\nallowed_peers = [\"10.0.0.0/8\", \"fd00::/8\"]\nmax_events_per_second = 1000",
        ));
        assert_eq!(s.allowed_peers.len(), 2);
        assert_eq!(s.max_events_per_second, Some(1000));
        // Defaults.
        let s = syslog_of(&syslog_cfg("address = \"tcp://127.0.0.1:514\""));
        assert_eq!(s.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(s.idle_timeout, DEFAULT_IDLE_TIMEOUT);
        assert!(s.allowed_peers.is_empty() && s.tls.is_none() && s.max_bytes_per_second.is_none());
    }

    #[test]
    fn network_guard_keys_are_checked_with_line_and_key() {
        let errs = errors(&syslog_cfg(
            "address = \"unixgram:///run/x.sock\"\nallowed_peers = [\"10.0.0.1/8\"]\nmax_connections = 5\nidle_timeout = \"1m\"\nmax_bytes_per_second = 0",
        ));
        for want in [
            "c.toml:4: sources.s.allowed_peers: unix sockets have no IP peers",
            "c.toml:4: sources.s.allowed_peers: `10.0.0.1/8` has host bits set",
            "c.toml:5: sources.s.max_connections: applies to tcp",
            "c.toml:6: sources.s.idle_timeout: applies to tcp",
            "c.toml:7: sources.s.max_bytes_per_second: must be more than zero",
        ] {
            assert_reported(&errs, want);
        }
        let errs = errors(&syslog_cfg(
            "address = \"tcp://127.0.0.1:514\"\nallowed_peers = []\nmax_connections = 0\nidle_timeout = 0",
        ));
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("c.toml:4: sources.s.allowed_peers: is empty"),
            "{errs:?}"
        );
    }

    #[test]
    fn tls_table_loads_its_files_at_validation() {
        let dir = tempfile::tempdir().expect("tmp");
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).expect("write");
        std::fs::write(&k, key.serialize_pem()).expect("write");
        let table = format!(
            "address = \"tcp://0.0.0.0:6514\"\n[sources.s.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            c.display(),
            k.display()
        );
        // TLS makes a remote listener acceptable without allow_insecure_remote.
        let s = syslog_of(&syslog_cfg(&table));
        let tls = s.tls.expect("tls");
        assert_eq!(tls.client_ca, None);
        assert_eq!(tls.handshake_timeout, Duration::from_secs(10));
        // A missing file, client_auth without client_ca, TLS on UDP.
        let errs = errors(&syslog_cfg(&format!(
            "{}client_auth = \"optional\"\n",
            table.replace("k.pem", "missing.pem")
        )));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:5: sources.s.tls.cert: ")
                    && e.contains("missing.pem")),
            "{errs:?}"
        );
        assert_reported(
            &errs,
            "c.toml:7: sources.s.tls.client_auth: needs `client_ca`",
        );
        let errs = errors(&syslog_cfg(&table.replace("tcp://", "udp://")));
        assert_reported(&errs, "c.toml:4: sources.s.tls: TLS is for tcp");
    }

    const SECRET: &str = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY";

    fn with_auth(auth: &str) -> String {
        format!("{GOOD}\n[sinks.cw.auth]\n{auth}\n")
    }

    #[test]
    fn inline_credentials_load_and_never_print() {
        let text = with_auth(&format!(
            "access_key_id = \"AKIDINLINE\"\nsecret_access_key = \"{SECRET}\"\nsession_token = \"${{TOKEN}}\"\nassume_role = \"arn:aws:iam::123456789012:role/shipper\"\nexternal_id = \"ext-1\""
        ));
        let env = |n: &str| (n == "TOKEN").then(|| "token-from-env-0123456789".to_string());
        let c = parse(Path::new("c.toml"), &text, &env).expect("valid");
        let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
        let keys = s.auth.static_keys.as_ref().expect("keys");
        assert_eq!(keys.access_key_id.expose(), "AKIDINLINE");
        assert_eq!(keys.secret_access_key.expose(), SECRET);
        assert_eq!(
            keys.session_token.as_ref().map(Secret::expose),
            Some("token-from-env-0123456789")
        );
        let role = s.auth.assume_role.as_ref().expect("role");
        assert_eq!(role.role_arn, "arn:aws:iam::123456789012:role/shipper");
        assert_eq!(role.external_id.as_deref(), Some("ext-1"));
        assert_eq!(c.inline_secrets, vec!["cw".to_string()]);
        for dump in [format!("{c:?}"), format!("{c:#?}")] {
            assert!(dump.contains("**redacted**"), "{dump}");
            for leak in [SECRET, &SECRET[..8], "token-from-env", "AKIDINLINE"] {
                assert!(!dump.contains(leak), "{leak} in {dump}");
            }
        }
    }

    #[test]
    fn secrets_only_from_the_environment_are_not_inline() {
        let text = with_auth(
            "access_key_id = \"${KEY}\"\nsecret_access_key = \"${SECRET}\"\nsession_token = \"${TOKEN:-}x\"",
        );
        let env = |n: &str| Some(format!("v-{n}"));
        let c = parse(Path::new("c.toml"), &text, &env).expect("valid");
        // `x` is written in the file: that one counts.
        assert_eq!(c.inline_secrets, vec!["cw".to_string()]);
        let text = text.replace("${TOKEN:-}x", "${TOKEN}");
        let c = parse(Path::new("c.toml"), &text, &env).expect("valid");
        assert!(c.inline_secrets.is_empty());
        let c = parse(Path::new("c.toml"), GOOD, &no_env).expect("valid");
        assert!(c.inline_secrets.is_empty());
        let SinkConfig::CloudWatchLogs(s) = &c.sinks[0].1;
        assert_eq!(s.auth, AuthConfig::default());
    }

    #[test]
    fn auth_mistakes_are_reported_without_the_secret() {
        let cases: &[(String, &str)] = &[
            (
                format!("secret_access_key = \"{SECRET}\""),
                "c.toml:17: sinks.cw.auth.secret_access_key: needs `access_key_id`",
            ),
            (
                "access_key_id = \"AKID\"".into(),
                "c.toml:17: sinks.cw.auth.access_key_id: needs `secret_access_key`",
            ),
            (
                format!("access_key_id = \"A\"\nsecret_access_key = 12345678901234\nsession_token = \"{SECRET}\""),
                "c.toml:18: sinks.cw.auth.secret_access_key: must be a string (value not shown)",
            ),
            (
                format!("access_key_id = \"A\"\nsecret_access_key = \"${{{SECRET}\""),
                "c.toml:18: sinks.cw.auth.secret_access_key: invalid `${...}` reference (value not shown",
            ),
            (
                format!("access_key_id = \"A\"\nsecret_access_key = \"${{BAD {SECRET}}}\""),
                "c.toml:18: sinks.cw.auth.secret_access_key: invalid `${...}` reference (value not shown",
            ),
            (
                format!("access_key_id = \"A\"\nsecret_acess_key = \"{SECRET}\""),
                "c.toml:18: sinks.cw.auth.secret_acess_key: unknown field",
            ),
            (
                format!("session_token = \"{SECRET}\""),
                "c.toml:17: sinks.cw.auth.session_token: needs `access_key_id` and `secret_access_key`",
            ),
            (
                format!("access_key_id = \"A\"\nsecret_access_key = \"{SECRET}\"\nprofile = \"p\""),
                "c.toml:19: sinks.cw.auth.profile: cannot be used with",
            ),
            (
                "assume_role = \"shipper\"".into(),
                "c.toml:17: sinks.cw.auth.assume_role: `shipper` is not a role ARN",
            ),
            (
                "external_id = \"e\"".into(),
                "c.toml:17: sinks.cw.auth.external_id: only means something with `assume_role`",
            ),
            (
                "access_key_id = \"A\"\nsecret_access_key = \"${UNSET:-}\"".into(),
                "c.toml:18: sinks.cw.auth.secret_access_key: is empty",
            ),
        ];
        for (auth, want) in cases {
            let errs = errors(&with_auth(auth));
            assert!(errs.iter().any(|e| e.starts_with(want)), "{auth}: {errs:?}");
            for e in &errs {
                assert!(!e.contains(&SECRET[..8]), "{auth}: {e}");
            }
        }
        // A secret pasted as the whole table.
        let text = GOOD.replace(
            "batch_timeout",
            &format!("auth = \"{SECRET}\"\nbatch_timeout"),
        );
        let errs = errors(&text);
        assert_reported(&errs, "c.toml:14: sinks.cw.auth: must be a table");
        assert!(!errs.iter().any(|e| e.contains(&SECRET[..8])), "{errs:?}");
    }

    #[test]
    fn syntax_errors_near_a_secret_do_not_quote_it() {
        for bad in [
            format!("secret_access_key = {SECRET}"),
            format!("secret_access_key = \"{SECRET}"),
            format!("secret_access_key = \"{SECRET}\" trailing"),
            format!("secret_access_key = '{SECRET}"),
        ] {
            let errs = errors(&with_auth(&bad));
            assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
            assert!(
                errs[0].starts_with("c.toml:17: (syntax):"),
                "{bad}: {errs:?}"
            );
            assert!(!errs[0].contains(&SECRET[..8]), "{bad}: {errs:?}");
        }
    }

    #[test]
    fn load_warns_about_a_world_readable_file_with_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("l.toml");
        let text = with_auth(&format!(
            "access_key_id = \"A\"\nsecret_access_key = \"{SECRET}\""
        ));
        std::fs::write(&path, &text).expect("write");
        let chmod = |mode| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        chmod(0o644);
        let c = load(&path).expect("valid");
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("mode 0644"), "{:?}", c.warnings);
        assert!(!c.warnings[0].contains(&SECRET[..8]));
        chmod(0o600);
        assert!(load(&path).expect("valid").warnings.is_empty());
        chmod(0o646);
        assert!(load(&path).expect("valid").warnings[0].contains("mode 0646"));
    }
}
