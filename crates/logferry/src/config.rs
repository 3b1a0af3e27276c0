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
//! Credentials written in a sink's `auth` table are [`Secret`]s: the config's `Debug` output
//! redacts them, and no error message quotes them (a bad `${` reference or a mistyped value in
//! `auth` is reported by key and line only). [`load`] warns when a file holding inline secrets
//! is readable by every user, or when any config file is writable by every user.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::secret::Secret;
use crate::source::guard::Cidr;
use crate::template::{Template, TemplateKind};

mod file_source;
pub use file_source::{
    FileSourceConfig, KubernetesApiSettings, MultilineSettings, TimestampSettings,
    KUBERNETES_DEFAULT_INCLUDE,
};

/// Default size above which a syslog frame is truncated (and flagged).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 1024 * 1024;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line of the key (or of its table when the key is missing).
    pub line: usize,
    /// Dotted key path, e.g. `sinks.cloudwatch.retention_days`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.key,
            self.message
        )
    }
}

/// All problems found in a config file.
#[derive(Debug, Clone)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the file was read from.
    pub path: PathBuf,
    /// Cursors, offsets, spool and dead-letter files live here.
    pub data_dir: PathBuf,
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

/// Where a journald source starts when it has no saved cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalStart {
    /// Only entries written from now on.
    End,
    /// Everything in the journal.
    Beginning,
    /// Entries at or after this time (µs since the epoch).
    Since(u64),
}

/// `[sources.NAME] type = "journald"`
#[derive(Debug, Clone)]
pub struct JournaldSourceConfig {
    /// Journal directories (default: /var/log/journal and /run/log/journal).
    pub directories: Vec<PathBuf>,
    /// Where to start without a saved cursor.
    pub start: JournalStart,
    /// Keep only these units (`_SYSTEMD_UNIT`); empty = all.
    pub units: Vec<String>,
    /// Drop these units.
    pub exclude_units: Vec<String>,
    /// Keep only these `SYSLOG_IDENTIFIER`s; empty = all.
    pub identifiers: Vec<String>,
    /// Keep entries at this syslog level or more severe (0 = emerg .. 7 = debug).
    pub priority: Option<u8>,
    /// Groups of `FIELD=value`: all of a group must match; any group may.
    pub matches: Vec<Vec<(String, String)>>,
    /// Journal fields kept on events besides the standard ones.
    pub fields: Vec<String>,
    /// Strip the leading `_` of trusted fields in `fields`.
    pub strip_underscores: bool,
    /// Never save the cursor (`logferry tail`).
    pub dry_run: bool,
}

/// Where a syslog source listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// `tcp://HOST:PORT`
    Tcp(String),
    /// `udp://HOST:PORT`
    Udp(String),
    /// `unix:///path` (stream socket)
    UnixStream(PathBuf),
    /// `unixgram:///path` (datagram socket, like /dev/log)
    UnixDatagram(PathBuf),
}

impl ListenAddress {
    /// Parses `tcp://`, `udp://`, `unix://` or `unixgram://` addresses.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}` has no scheme: use tcp://HOST:PORT, udp://HOST:PORT, unix:///PATH or unixgram:///PATH"))?;
        let host_port = |rest: &str| -> Result<String, String> {
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("`{s}` needs HOST:PORT"))?;
            port.parse::<u16>()
                .map_err(|_| format!("`{s}`: port `{port}` is not a number from 0 to 65535"))?;
            if host.is_empty() {
                return Err(format!("`{s}` has an empty host"));
            }
            Ok(rest.to_string())
        };
        match scheme {
            "tcp" => Ok(ListenAddress::Tcp(host_port(rest)?)),
            "udp" => Ok(ListenAddress::Udp(host_port(rest)?)),
            "unix" | "unixgram" => {
                if !rest.starts_with('/') {
                    return Err(format!("`{s}`: the socket path must be absolute"));
                }
                let p = PathBuf::from(rest);
                Ok(if scheme == "unix" {
                    ListenAddress::UnixStream(p)
                } else {
                    ListenAddress::UnixDatagram(p)
                })
            }
            other => Err(format!(
                "unknown scheme `{other}`: use tcp, udp, unix or unixgram"
            )),
        }
    }
}

/// `[sources.NAME] type = "syslog"`
#[derive(Debug, Clone)]
pub struct SyslogSourceConfig {
    /// Where to listen.
    pub address: ListenAddress,
    /// Frames above this are truncated and flagged.
    pub max_frame_bytes: usize,
    /// The disk spool in front of the pipeline (None: events go straight to the sinks).
    pub spool: Option<SpoolSettings>,
    /// TLS on a TCP listener (RFC 5425); None: plain.
    pub tls: Option<TlsSettings>,
    /// Peers (TCP, UDP) allowed to send; empty: any.
    pub allowed_peers: Vec<Cidr>,
    /// Open connections at most (TCP, unix stream); beyond it the listener stops accepting.
    pub max_connections: usize,
    /// A stream connection that completes no frame for this long is closed.
    pub idle_timeout: Duration,
    /// Events per second for the whole source (streams paused, datagrams dropped beyond it).
    pub max_events_per_second: Option<u64>,
    /// Bytes per second for the whole source (same policy).
    pub max_bytes_per_second: Option<u64>,
}

/// Default `max_connections` of a stream listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Default `idle_timeout` of a stream connection.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Whether a TLS listener requires client certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A client without a certificate signed by `client_ca` is refused.
    Required,
    /// A client may present none; one it presents must be signed by `client_ca`.
    Optional,
}

/// `[sources.NAME.tls]`: the server side of syslog over TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates client certificates must chain to (mTLS); None: not asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: required or optional.
    pub client_auth: ClientAuth,
    /// Time a client has to complete the handshake.
    pub handshake_timeout: Duration,
    /// How often the files are checked for a new certificate.
    pub reload_interval: Duration,
}

/// `[sources.NAME] type = "stdin"`
#[derive(Debug, Clone)]
pub struct StdinSourceConfig {
    /// Lines above this are truncated and flagged.
    pub max_frame_bytes: usize,
    /// The disk spool in front of the pipeline.
    pub spool: Option<SpoolSettings>,
}

/// When spooled records reach the disk for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFsync {
    /// fdatasync before an append returns: survives power loss, slower.
    Always,
    /// fdatasync every 100 ms: a power cut may lose the last ~100 ms; kill -9 loses nothing.
    Interval,
}

/// What a full spool does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpoolFullPolicy {
    /// Stop reading input (TCP pushes back; datagrams that cannot be queued are counted dropped).
    Block,
    /// Delete the oldest undelivered records to make room (counted and logged).
    DropOldest,
}

/// A pushed source's disk spool.
#[derive(Debug, Clone)]
pub struct SpoolSettings {
    /// Bound on the spool's size on disk.
    pub max_bytes: u64,
    /// Durability.
    pub fsync: SpoolFsync,
    /// Behaviour when full.
    pub full_policy: SpoolFullPolicy,
}

/// How an event becomes the message text sent to CloudWatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageFormat {
    /// `Nov 25 16:20:39 host ident[pid]: message`, like `journalctl -o short`.
    Short,
    /// One JSON object per event with its fields, for CloudWatch Logs Insights.
    Json,
    /// The message text alone.
    Message,
}

/// `[sinks.NAME] type = "cloudwatch_logs"`
#[derive(Debug, Clone)]
pub struct CloudWatchSinkConfig {
    /// Source names feeding this sink.
    pub inputs: Vec<String>,
    /// Log group name template.
    pub log_group: Template,
    /// Log stream name template.
    pub log_stream: Template,
    /// How messages are rendered.
    pub format: MessageFormat,
    /// AWS region; else the SDK's chain decides.
    pub region: Option<String>,
    /// Endpoint override (else AWS_ENDPOINT_URL or the real service).
    pub endpoint: Option<String>,
    /// Create a missing log group.
    pub create_missing_group: bool,
    /// Create a missing log stream.
    pub create_missing_stream: bool,
    /// Retention set on groups logferry creates.
    pub retention_days: Option<i32>,
    /// Flush a partial batch after this long.
    pub batch_timeout: Duration,
    /// Events per request, at most 10,000.
    pub max_batch_events: usize,
    /// Bytes per request (message bytes + 26 per event), at most 1,048,576.
    pub max_batch_bytes: usize,
    /// Requests in flight for the whole sink.
    pub max_in_flight: usize,
    /// Requests in flight for one stream.
    pub stream_concurrency: usize,
    /// Time allowed for one PutLogEvents attempt.
    pub request_timeout: Duration,
    /// Upper bound of the retry backoff.
    pub max_backoff: Duration,
    /// JSON-lines file for events CloudWatch will never accept.
    pub dead_letter_path: PathBuf,
    /// Credentials for this sink instead of the AWS chain's defaults.
    pub auth: AuthConfig,
}

/// `[sinks.NAME.auth]`: where a sink's credentials come from. Everything unset (the default)
/// means the standard AWS chain: environment, profile, web identity (IRSA), container
/// credentials (ECS, Pod Identity), IMDSv2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthConfig {
    /// A fixed key pair (and session token), used instead of the chain.
    pub static_keys: Option<StaticKeys>,
    /// A profile of the shared config/credentials files, instead of `AWS_PROFILE`/`default`.
    pub profile: Option<String>,
    /// A role assumed with the credentials above (or the chain's) through STS.
    pub assume_role: Option<AssumeRole>,
}

/// `access_key_id`, `secret_access_key`, `session_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticKeys {
    /// The access key id (not a secret to AWS, but it names the account: kept out of logs too).
    pub access_key_id: Secret,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

/// `assume_role`, `external_id`, `session_name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssumeRole {
    /// The role's ARN.
    pub role_arn: String,
    /// The external id the role's trust policy asks for (AWS does not treat it as a secret).
    pub external_id: Option<String>,
    /// The session name CloudTrail shows (default: `logferry-HOSTNAME`).
    pub session_name: Option<String>,
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

/// Retention values CloudWatch accepts.
pub const RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoot {
    data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    shutdown_grace: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    health_stuck_after: Option<Duration>,
    #[serde(default)]
    sources: BTreeMap<String, toml::Value>,
    #[serde(default)]
    sinks: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSyslog {
    address: String,
    max_frame_bytes: Option<usize>,
    spool: Option<bool>,
    spool_max_bytes: Option<u64>,
    spool_fsync: Option<SpoolFsync>,
    spool_full_policy: Option<SpoolFullPolicy>,
    allow_insecure_remote: Option<bool>,
    tls: Option<RawTls>,
    allowed_peers: Option<Vec<String>>,
    max_connections: Option<usize>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    idle_timeout: Option<Duration>,
    max_events_per_second: Option<u64>,
    max_bytes_per_second: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    client_auth: Option<ClientAuth>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    reload_interval: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Level {
    Number(u8),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJournald {
    directory: Option<OneOrMany>,
    start: Option<String>,
    #[serde(default)]
    units: Vec<String>,
    #[serde(default)]
    exclude_units: Vec<String>,
    #[serde(default)]
    identifiers: Vec<String>,
    priority: Option<Level>,
    #[serde(default)]
    matches: Vec<Vec<String>>,
    #[serde(default)]
    fields: Vec<String>,
    strip_underscores: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStdin {
    max_frame_bytes: Option<usize>,
    spool: Option<bool>,
    spool_max_bytes: Option<u64>,
    spool_fsync: Option<SpoolFsync>,
    spool_full_policy: Option<SpoolFullPolicy>,
}

fn spool_settings(
    ctx: &mut Ctx<'_>,
    name: &str,
    enabled: Option<bool>,
    max_bytes: Option<u64>,
    fsync: Option<SpoolFsync>,
    full: Option<SpoolFullPolicy>,
) -> Option<SpoolSettings> {
    if !enabled.unwrap_or(true) {
        return None;
    }
    let max_bytes = max_bytes.unwrap_or(1 << 30);
    if max_bytes < 1 << 20 {
        ctx.error(
            &["sources", name, "spool_max_bytes"],
            format!("{max_bytes} is too small (at least 1048576)"),
        );
    }
    Some(SpoolSettings {
        max_bytes,
        fsync: fsync.unwrap_or(SpoolFsync::Interval),
        full_policy: full.unwrap_or(SpoolFullPolicy::Block),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCloudWatch {
    inputs: Vec<String>,
    log_group: Option<String>,
    log_stream: Option<String>,
    format: Option<MessageFormat>,
    region: Option<String>,
    endpoint: Option<String>,
    create_missing_group: Option<bool>,
    create_missing_stream: Option<bool>,
    retention_days: Option<i32>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    batch_timeout: Option<Duration>,
    max_batch_events: Option<usize>,
    max_batch_bytes: Option<usize>,
    max_in_flight: Option<usize>,
    stream_concurrency: Option<usize>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    max_backoff: Option<Duration>,
    dead_letter_path: Option<PathBuf>,
    // Deserialized on its own so that its errors name `sinks.NAME.auth.KEY` and its line.
    auth: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    access_key_id: Option<Secret>,
    secret_access_key: Option<Secret>,
    session_token: Option<Secret>,
    profile: Option<String>,
    assume_role: Option<String>,
    external_id: Option<String>,
    session_name: Option<String>,
}

/// The keys of an `auth` table whose values are secrets (the permission warning looks for them).
const SECRET_KEYS: [&str; 2] = ["secret_access_key", "session_token"];

/// Accepts `"25s"`, `"1m 30s"`, `"250ms"` or a number of seconds.
fn de_duration_opt<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
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

/// Collects errors with their line numbers.
struct Ctx<'a> {
    file: &'a Path,
    text: &'a str,
    doc: Option<toml_edit::ImDocument<&'a str>>,
    errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    fn error(&mut self, path: &[&str], message: impl Into<String>) {
        let line = self.line_of(path);
        let key = path.join(".");
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            key: if key.is_empty() {
                "(top level)".into()
            } else {
                key
            },
            message: message.into(),
        });
    }

    /// The line of the deepest key of `path` that exists in the document.
    fn line_of(&self, path: &[&str]) -> usize {
        let Some(doc) = &self.doc else { return 1 };
        let mut best: Option<std::ops::Range<usize>> = None;
        let mut table: Option<&dyn toml_edit::TableLike> = Some(doc.as_table());
        for key in path {
            let Some(t) = table else { break };
            let Some((k, item)) = t.get_key_value(key) else {
                break;
            };
            if let Some(span) = k.span() {
                best = Some(span);
            } else if let Some(span) = item.span() {
                best = Some(span);
            }
            table = item.as_table_like();
        }
        match best {
            Some(span) => offset_to_line(self.text, span.start),
            None => 1,
        }
    }

    /// Deserializes `value`, recording an error (with the key at fault) on failure.
    fn deserialize<T: DeserializeOwned>(&mut self, path: &[&str], value: toml::Value) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let mut inner = e.inner().to_string();
                // toml appends the enclosing table ("\nin `kubernetes_api`"); the key path
                // below says it already.
                if let Some(at) = inner.find("\nin `") {
                    inner.truncate(at);
                }
                let mut full: Vec<String> = path.iter().map(|s| s.to_string()).collect();
                // serde reports an unknown key from inside the table, without naming it in the
                // path: pull it out of the message so the line points at the typo (after the
                // path to a nested table such as `multiline`).
                if let Some(unknown) = backticked_after(&inner, "unknown field ") {
                    for seg in e.path().iter() {
                        if let serde_path_to_error::Segment::Map { key } = seg {
                            full.push(key.clone());
                        }
                    }
                    if full.len() > path.len() && full.last() == Some(&unknown) {
                        full.pop();
                    }
                    // An empty key (`"" = 1`) is legal TOML; show it quoted (found by fuzzing).
                    full.push(if unknown.is_empty() {
                        "\"\"".into()
                    } else {
                        unknown
                    });
                } else if let Some(missing) = backticked_after(&inner, "missing field ") {
                    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
                    let line = self.line_of(&refs);
                    full.push(missing);
                    self.errors.push(ConfigError {
                        file: self.file.to_path_buf(),
                        line,
                        key: full.join("."),
                        message: "is required".into(),
                    });
                    return None;
                } else {
                    for seg in e.path().iter() {
                        match seg {
                            serde_path_to_error::Segment::Map { key } => full.push(key.clone()),
                            serde_path_to_error::Segment::Seq { index } => {
                                full.push(index.to_string())
                            }
                            _ => {}
                        }
                    }
                }
                let refs: Vec<&str> = full.iter().map(String::as_str).collect();
                self.error(&refs, inner);
                None
            }
        }
    }
}

fn backticked_after(text: &str, prefix: &str) -> Option<String> {
    let rest = text.split_once(prefix)?.1;
    let rest = rest.strip_prefix('`')?;
    let (name, _) = rest.split_once('`')?;
    Some(name.to_string())
}

fn offset_to_line(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Replaces `${VAR}` (and `${VAR:-default}`) in every string of `value`.
fn expand_env(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<(Vec<String>, String)>,
) {
    match value {
        toml::Value::String(s) if s.contains("${") => match expand_str(s, lookup) {
            Ok(new) => *s = new,
            // The messages quote the text around the reference: not for a credential.
            Err(_) if in_auth_table(path) => errors.push((
                path.clone(),
                "invalid `${...}` reference (value not shown: this key holds credentials); write `${VAR}` or `${VAR:-default}`".into(),
            )),
            Err(msg) => errors.push((path.clone(), msg)),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_env(item, path, lookup, errors);
                path.pop();
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                path.push(k.clone());
                expand_env(v, path, lookup, errors);
                path.pop();
            }
        }
        _ => {}
    }
}

/// True for `sinks.NAME.auth` and anything under it.
fn in_auth_table(path: &[String]) -> bool {
    path.len() >= 3 && path[0] == "sinks" && path[2] == "auth"
}

/// The sinks whose `auth` table holds a secret written in the file itself rather than only
/// `${VAR}` references: what makes a readable config file a leak. Looked at before expansion.
fn sinks_with_inline_secrets(root: &toml::Value) -> Vec<String> {
    let Some(sinks) = root.get("sinks").and_then(toml::Value::as_table) else {
        return Vec::new();
    };
    sinks
        .iter()
        .filter(|(_, sink)| {
            let auth = sink.get("auth").and_then(toml::Value::as_table);
            SECRET_KEYS.iter().any(|k| {
                auth.and_then(|a| a.get(*k))
                    .and_then(toml::Value::as_str)
                    .is_some_and(|v| !without_env_refs(v).is_empty())
            })
        })
        .map(|(name, _)| name.clone())
        .collect()
}

/// `v` with its `${...}` references removed: what the file itself holds.
fn without_env_refs(v: &str) -> String {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        match rest[start..].find('}') {
            Some(end) => rest = &rest[start + end + 1..],
            None => return out + &rest[start..],
        }
    }
    out + rest
}

/// The warning [`load`] gives about `path`'s permission bits, if any: world-writable (anyone
/// can redirect the logs or the credentials), or world-readable while holding inline secrets.
fn permission_warning(path: &Path, mode: u32, secret_sinks: &[String]) -> Option<String> {
    let file = path.display();
    let mode = mode & 0o7777;
    if mode & 0o002 != 0 {
        return Some(format!(
            "{file}: mode {mode:04o} lets every user on this host change logferry's configuration \
             (where logs go, which credentials are used); run `chmod 600 {file}` (or 640 with a \
             dedicated group)"
        ));
    }
    if mode & 0o004 != 0 && !secret_sinks.is_empty() {
        let tables: Vec<String> = secret_sinks
            .iter()
            .map(|n| format!("[sinks.{n}.auth]"))
            .collect();
        return Some(format!(
            "{file}: mode {mode:04o} lets every user on this host read the credentials in {}; \
             run `chmod 600 {file}`, or write them as `${{VAR}}` references to the environment, \
             or use the AWS credential chain (instance role, IRSA, a profile)",
            tables.join(", ")
        ));
    }
    None
}

fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let spec = &after[..end];
        let (name, default) = match spec.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (spec, None),
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(format!(
                "`${{{spec}}}` is not a valid environment variable reference"
            ));
        }
        match (lookup(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (write `${{{name}:-default}}` for a fallback)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The configuration used when `logferry run` is given no file: the host journal to the group
/// named by `LOGFERRY_LOG_GROUP`, one stream per instance (EC2 instance id, else host name), as
/// the old journalctl | awslogs chain did with one environment variable. `LOGFERRY_LOG_STREAM`,
/// `LOGFERRY_DATA_DIR`, `LOGFERRY_START` (`end`, `beginning`, or an RFC 3339 time) and
/// `LOGFERRY_FORMAT` adjust it.
pub fn zero_config(env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let text = r#"
data_dir = "${LOGFERRY_DATA_DIR:-/var/lib/logferry}"

[sources.journal]
type = "journald"
start = "${LOGFERRY_START:-end}"

[sinks.cloudwatch]
type = "cloudwatch_logs"
inputs = ["journal"]
log_stream = "{instance_id}"
format = "${LOGFERRY_FORMAT:-short}"
"#;
    if env("LOGFERRY_LOG_GROUP").is_none_or(|g| g.is_empty()) {
        return Err(ConfigErrors(vec![ConfigError {
            file: PathBuf::from("(no config file)"),
            line: 1,
            key: "LOGFERRY_LOG_GROUP".into(),
            message: "give --config FILE, or set LOGFERRY_LOG_GROUP to ship the host journal there"
                .into(),
        }]));
    }
    parse(Path::new("(built-in zero config)"), text, env)
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 1,
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        }])
    })?;
    let mut config = parse(path, &text, &|name| std::env::var(name).ok())?;
    let mode = {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).map(|m| m.permissions().mode()).ok()
    };
    if let Some(w) = mode.and_then(|m| permission_warning(path, m, &config.inline_secrets)) {
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

    let inline_secrets = sinks_with_inline_secrets(&root);
    let mut env_errors = Vec::new();
    expand_env(&mut root, &mut Vec::new(), env, &mut env_errors);
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

fn frame_limit(ctx: &mut Ctx<'_>, path: &[&str], v: Option<usize>) -> usize {
    let v = v.unwrap_or(DEFAULT_MAX_FRAME_BYTES);
    if v < 64 {
        ctx.error(path, format!("{v} is too small (at least 64 bytes)"));
    }
    v
}

fn source_config(ctx: &mut Ctx<'_>, name: &str, mut value: toml::Value) -> Option<SourceConfig> {
    let kind = take_type(ctx, "sources", name, &mut value)?;
    let path = ["sources", name];
    match kind.as_str() {
        "syslog" => {
            let raw: RawSyslog = ctx.deserialize(&path, value)?;
            syslog_config(ctx, name, raw)
        }
        "stdin" => {
            let raw: RawStdin = ctx.deserialize(&path, value)?;
            let max_frame_bytes = frame_limit(
                ctx,
                &["sources", name, "max_frame_bytes"],
                raw.max_frame_bytes,
            );
            let spool = spool_settings(
                ctx,
                name,
                raw.spool,
                raw.spool_max_bytes,
                raw.spool_fsync,
                raw.spool_full_policy,
            );
            Some(SourceConfig::Stdin(StdinSourceConfig {
                max_frame_bytes,
                spool,
            }))
        }
        "journald" => {
            let raw: RawJournald = ctx.deserialize(&path, value)?;
            journald_config(ctx, name, raw)
        }
        "file" | "kubernetes_logs" => {
            let raw: file_source::RawFile = ctx.deserialize(&path, value)?;
            file_source::file_config(ctx, name, raw, kind == "kubernetes_logs")
                .map(SourceConfig::File)
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

/// Whether `HOST:PORT` names this host only (a loopback address or `localhost`). Any other name
/// may resolve to an address others can reach, so it counts as remote.
fn is_loopback_host(host_port: &str) -> bool {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| match ip {
            std::net::IpAddr::V6(v6) => {
                v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            v4 => v4.is_loopback(),
        })
}

fn syslog_config(ctx: &mut Ctx<'_>, name: &str, raw: RawSyslog) -> Option<SourceConfig> {
    let before = ctx.errors.len();
    let key = |k: &'static str| ["sources", name, k];
    let address = match ListenAddress::parse(&raw.address) {
        Ok(a) => a,
        Err(msg) => {
            ctx.error(&key("address"), msg);
            return None;
        }
    };
    let max_frame_bytes = frame_limit(ctx, &key("max_frame_bytes"), raw.max_frame_bytes);
    let spool = spool_settings(
        ctx,
        name,
        raw.spool,
        raw.spool_max_bytes,
        raw.spool_fsync,
        raw.spool_full_policy,
    );
    let (is_tcp, is_udp) = (
        matches!(address, ListenAddress::Tcp(_)),
        matches!(address, ListenAddress::Udp(_)),
    );
    let is_stream = is_tcp || matches!(address, ListenAddress::UnixStream(_));

    let has_tls = raw.tls.is_some();
    let tls = match raw.tls {
        None => None,
        Some(_) if !is_tcp => {
            ctx.error(
                &key("tls"),
                "TLS is for tcp:// listeners only (RFC 5425); unix sockets are protected by file permissions",
            );
            None
        }
        Some(t) => {
            let client_auth = match (&t.client_ca, t.client_auth) {
                (None, Some(_)) => {
                    ctx.error(
                        &["sources", name, "tls", "client_auth"],
                        "needs `client_ca`: the CA client certificates must be signed by",
                    );
                    ClientAuth::Required
                }
                (_, a) => a.unwrap_or(ClientAuth::Required),
            };
            let settings = TlsSettings {
                cert: t.cert,
                key: t.key,
                client_ca: t.client_ca,
                client_auth,
                handshake_timeout: t.handshake_timeout.unwrap_or(Duration::from_secs(10)),
                reload_interval: t.reload_interval.unwrap_or(Duration::from_secs(5)),
            };
            for (k, d) in [
                ("handshake_timeout", settings.handshake_timeout),
                ("reload_interval", settings.reload_interval),
            ] {
                if d.is_zero() {
                    ctx.error(&["sources", name, "tls", k], "must be more than zero");
                }
            }
            // Load the files now, so that `logferry validate` and a SIGHUP reload catch a
            // missing or mismatched certificate before the running listener is replaced.
            if let Err(e) = crate::source::tls::load(&settings) {
                ctx.error(&["sources", name, "tls", "cert"], format!("{e:#}"));
            }
            Some(settings)
        }
    };

    if let ListenAddress::Tcp(hp) | ListenAddress::Udp(hp) = &address {
        if !has_tls && !is_loopback_host(hp) && raw.allow_insecure_remote != Some(true) {
            ctx.error(
                &key("address"),
                format!(
                    "`{}` accepts plain {} syslog from other hosts: anyone who can reach the port can write into your logs, unauthenticated and unencrypted. Listen on 127.0.0.1 (or [::1]), add a `tls` table (tcp), or, if the network is trusted, set `allow_insecure_remote = true` (preferably with `allowed_peers`)",
                    raw.address,
                    if is_udp { "UDP" } else { "TCP" }
                ),
            );
        }
    }

    let mut allowed_peers = Vec::new();
    if let Some(peers) = raw.allowed_peers {
        if !(is_tcp || is_udp) {
            ctx.error(
                &key("allowed_peers"),
                "unix sockets have no IP peers; restrict them with file permissions",
            );
        } else if peers.is_empty() {
            ctx.error(
                &key("allowed_peers"),
                "is empty, which would refuse everyone; remove it to allow any peer",
            );
        }
        for p in &peers {
            match Cidr::parse(p) {
                Ok(c) => allowed_peers.push(c),
                Err(msg) => ctx.error(&key("allowed_peers"), msg),
            }
        }
    }
    if raw.max_connections.is_some() && !is_stream {
        ctx.error(
            &key("max_connections"),
            "applies to tcp:// and unix:// (stream) listeners only",
        );
    }
    let max_connections = raw.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if !(1..=1_000_000).contains(&max_connections) {
        ctx.error(
            &key("max_connections"),
            format!("{max_connections} is outside 1..=1000000"),
        );
    }
    if raw.idle_timeout.is_some() && !is_stream {
        ctx.error(
            &key("idle_timeout"),
            "applies to tcp:// and unix:// (stream) listeners only",
        );
    }
    let idle_timeout = raw.idle_timeout.unwrap_or(DEFAULT_IDLE_TIMEOUT);
    if idle_timeout.is_zero() {
        ctx.error(&key("idle_timeout"), "must be more than zero");
    }
    for (k, v) in [
        ("max_events_per_second", raw.max_events_per_second),
        ("max_bytes_per_second", raw.max_bytes_per_second),
    ] {
        if v == Some(0) {
            ctx.error(&key(k), "must be more than zero (remove it for no limit)");
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    Some(SourceConfig::Syslog(SyslogSourceConfig {
        address,
        max_frame_bytes,
        spool,
        tls,
        allowed_peers,
        max_connections,
        idle_timeout,
        max_events_per_second: raw.max_events_per_second,
        max_bytes_per_second: raw.max_bytes_per_second,
    }))
}

fn journald_config(ctx: &mut Ctx<'_>, name: &str, raw: RawJournald) -> Option<SourceConfig> {
    let before = ctx.errors.len();
    let start = match raw.start.as_deref() {
        None | Some("end") => JournalStart::End,
        Some("beginning") => JournalStart::Beginning,
        Some(t) => match humantime::parse_rfc3339_weak(t) {
            Ok(time) => JournalStart::Since(
                time.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0),
            ),
            Err(e) => {
                ctx.error(
                    &["sources", name, "start"],
                    format!("`{t}` is neither \"end\", \"beginning\" nor an RFC 3339 time ({e})"),
                );
                JournalStart::End
            }
        },
    };
    let priority = match raw.priority {
        None => None,
        Some(Level::Number(n)) if n <= 7 => Some(n),
        Some(Level::Number(n)) => {
            ctx.error(
                &["sources", name, "priority"],
                format!("{n} is not a level from 0 (emerg) to 7 (debug)"),
            );
            None
        }
        Some(Level::Name(n)) => {
            let lower = n.to_ascii_lowercase();
            let alias = match lower.as_str() {
                "error" => "err",
                "warn" => "warning",
                "emergency" | "panic" => "emerg",
                "critical" => "crit",
                other => other,
            };
            match crate::event::SEVERITY_NAMES
                .iter()
                .position(|s| *s == alias)
            {
                Some(p) => Some(p as u8),
                None => {
                    ctx.error(
                        &["sources", name, "priority"],
                        format!(
                            "`{n}` is not a level; use one of {}",
                            crate::event::SEVERITY_NAMES.join(", ")
                        ),
                    );
                    None
                }
            }
        }
    };
    let mut matches = Vec::new();
    for group in raw.matches {
        let mut g = Vec::new();
        for m in group {
            match m.split_once('=') {
                Some((f, v))
                    if !f.is_empty()
                        && f.bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
                {
                    g.push((f.to_string(), v.to_string()))
                }
                _ => ctx.error(
                    &["sources", name, "matches"],
                    format!("`{m}` is not FIELD=value (field names are upper case, digits and _)"),
                ),
            }
        }
        if !g.is_empty() {
            matches.push(g);
        }
    }
    if ctx.errors.len() != before {
        return None;
    }
    let directories = match raw.directory {
        None => logferry_journal::DEFAULT_DIRS
            .iter()
            .map(PathBuf::from)
            .collect(),
        Some(OneOrMany::One(p)) => vec![p],
        Some(OneOrMany::Many(v)) => v,
    };
    Some(SourceConfig::Journald(JournaldSourceConfig {
        directories,
        start,
        units: raw.units,
        exclude_units: raw.exclude_units,
        identifiers: raw.identifiers,
        priority,
        matches,
        fields: raw.fields,
        strip_underscores: raw.strip_underscores.unwrap_or(true),
        dry_run: false,
    }))
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
    let raw: RawCloudWatch = ctx.deserialize(&["sinks", name], value)?;
    let before = ctx.errors.len();
    let key = |k: &'static str| -> [String; 3] { ["sinks".into(), name.to_string(), k.into()] };
    let err = |ctx: &mut Ctx<'_>, k: &'static str, msg: String| {
        let p = key(k);
        let refs: Vec<&str> = p.iter().map(String::as_str).collect();
        ctx.error(&refs, msg);
    };

    if raw.inputs.is_empty() {
        err(ctx, "inputs", "lists no source".into());
    }
    for input in &raw.inputs {
        if !sources.contains(input.as_str()) {
            let mut known: Vec<&str> = sources.iter().copied().collect();
            known.sort_unstable();
            err(
                ctx,
                "inputs",
                format!(
                    "`{input}` is not a configured source (sources: {})",
                    known.join(", ")
                ),
            );
        }
    }

    let group_text = env("LOGFERRY_LOG_GROUP")
        .filter(|s| !s.is_empty())
        .or(raw.log_group);
    let stream_text = env("LOGFERRY_LOG_STREAM")
        .filter(|s| !s.is_empty())
        .or(raw.log_stream)
        .unwrap_or_else(|| "{instance_id}".to_string());
    let log_group = match group_text {
        None => {
            err(
                ctx,
                "log_group",
                "is required (or set LOGFERRY_LOG_GROUP)".into(),
            );
            None
        }
        Some(t) => match Template::parse(&t, TemplateKind::Group) {
            Ok(t) => Some(t),
            Err(msg) => {
                err(ctx, "log_group", msg);
                None
            }
        },
    };
    let log_stream = match Template::parse(&stream_text, TemplateKind::Stream) {
        Ok(t) => Some(t),
        Err(msg) => {
            err(ctx, "log_stream", msg);
            None
        }
    };
    if let Some(days) = raw.retention_days {
        if !RETENTION_DAYS.contains(&days) {
            err(
                ctx,
                "retention_days",
                format!(
                    "{days} is not a retention CloudWatch accepts; use one of {}",
                    RETENTION_DAYS.map(|d| d.to_string()).join(", ")
                ),
            );
        }
    }
    let max_batch_events = raw.max_batch_events.unwrap_or(10_000);
    if !(1..=10_000).contains(&max_batch_events) {
        err(
            ctx,
            "max_batch_events",
            format!("{max_batch_events} is outside 1..=10000"),
        );
    }
    let max_batch_bytes = raw.max_batch_bytes.unwrap_or(1_048_576);
    if !(1024..=1_048_576).contains(&max_batch_bytes) {
        err(
            ctx,
            "max_batch_bytes",
            format!("{max_batch_bytes} is outside 1024..=1048576"),
        );
    }
    let max_in_flight = raw.max_in_flight.unwrap_or(8);
    if !(1..=256).contains(&max_in_flight) {
        err(
            ctx,
            "max_in_flight",
            format!("{max_in_flight} is outside 1..=256"),
        );
    }
    let stream_concurrency = raw.stream_concurrency.unwrap_or(4);
    if !(1..=64).contains(&stream_concurrency) {
        err(
            ctx,
            "stream_concurrency",
            format!("{stream_concurrency} is outside 1..=64"),
        );
    }
    if let Some(ep) = &raw.endpoint {
        if !(ep.starts_with("http://") || ep.starts_with("https://")) {
            err(
                ctx,
                "endpoint",
                format!("`{ep}` must start with http:// or https://"),
            );
        }
    }
    let batch_timeout = raw.batch_timeout.unwrap_or(Duration::from_secs(1));
    if batch_timeout.is_zero() {
        err(ctx, "batch_timeout", "must be more than zero".into());
    }
    let auth = match raw.auth {
        None => AuthConfig::default(),
        Some(value) => auth_config(ctx, name, value).unwrap_or_default(),
    };
    if ctx.errors.len() != before {
        return None;
    }
    Some(SinkConfig::CloudWatchLogs(CloudWatchSinkConfig {
        inputs: raw.inputs,
        log_group: log_group?,
        log_stream: log_stream?,
        format: raw.format.unwrap_or(MessageFormat::Short),
        region: raw.region,
        endpoint: raw.endpoint,
        create_missing_group: raw.create_missing_group.unwrap_or(true),
        create_missing_stream: raw.create_missing_stream.unwrap_or(true),
        retention_days: raw.retention_days,
        batch_timeout,
        max_batch_events,
        max_batch_bytes,
        max_in_flight,
        stream_concurrency,
        request_timeout: raw.request_timeout.unwrap_or(Duration::from_secs(30)),
        max_backoff: raw.max_backoff.unwrap_or(Duration::from_secs(30)),
        dead_letter_path: raw
            .dead_letter_path
            .unwrap_or_else(|| data_dir.join("dead-letter").join(format!("{name}.jsonl"))),
        auth,
    }))
}

/// `[sinks.NAME.auth]`. No message here quotes a credential's value.
fn auth_config(ctx: &mut Ctx<'_>, sink: &str, value: toml::Value) -> Option<AuthConfig> {
    if !value.is_table() {
        // serde would quote the value ("invalid type: string \"...\""), and it may be a key.
        ctx.error(
            &["sinks", sink, "auth"],
            "must be a table ([sinks.NAME.auth] with access_key_id, secret_access_key, ...)",
        );
        return None;
    }
    let raw: RawAuth = ctx.deserialize(&["sinks", sink, "auth"], value)?;
    let before = ctx.errors.len();
    let err = |ctx: &mut Ctx<'_>, key: &str, msg: &str| {
        ctx.error(&["sinks", sink, "auth", key], msg);
    };
    // An empty value is most likely `${VAR:-}` with VAR unset: better refused than sent.
    for (key, v) in [
        ("access_key_id", &raw.access_key_id),
        ("secret_access_key", &raw.secret_access_key),
        ("session_token", &raw.session_token),
    ] {
        if v.as_ref().is_some_and(Secret::is_empty) {
            err(ctx, key, "is empty (an unset `${VAR:-}`?)");
        }
    }
    let static_keys = match (raw.access_key_id, raw.secret_access_key) {
        (Some(access_key_id), Some(secret_access_key)) => Some(StaticKeys {
            access_key_id,
            secret_access_key,
            session_token: raw.session_token,
        }),
        (Some(_), None) => {
            err(
                ctx,
                "access_key_id",
                "needs `secret_access_key` beside it (or remove both to use the AWS credential chain)",
            );
            None
        }
        (None, Some(_)) => {
            err(
                ctx,
                "secret_access_key",
                "needs `access_key_id` beside it (or remove both to use the AWS credential chain)",
            );
            None
        }
        (None, None) => {
            if raw.session_token.is_some() {
                err(
                    ctx,
                    "session_token",
                    "needs `access_key_id` and `secret_access_key` beside it",
                );
            }
            None
        }
    };
    if let Some(p) = &raw.profile {
        if static_keys.is_some() {
            err(
                ctx,
                "profile",
                "cannot be used with `access_key_id`/`secret_access_key`: choose one",
            );
        } else if p.is_empty() {
            err(ctx, "profile", "is empty");
        }
    }
    let assume_role = match raw.assume_role {
        Some(role_arn) => {
            if !role_arn.starts_with("arn:") || role_arn.split(':').count() < 6 {
                err(
                    ctx,
                    "assume_role",
                    &format!("`{role_arn}` is not a role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
                );
            }
            if let Some(n) = &raw.session_name {
                // STS's own rule for RoleSessionName.
                let valid = (2..=64).contains(&n.len())
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b));
                if !valid {
                    err(
                        ctx,
                        "session_name",
                        &format!("`{n}` is not 2 to 64 of letters, digits and _+=,.@-"),
                    );
                }
            }
            Some(AssumeRole {
                role_arn,
                external_id: raw.external_id,
                session_name: raw.session_name,
            })
        }
        None => {
            for (key, set) in [
                ("external_id", raw.external_id.is_some()),
                ("session_name", raw.session_name.is_some()),
            ] {
                if set {
                    err(ctx, key, "only means something with `assume_role`");
                }
            }
            None
        }
    };
    (ctx.errors.len() == before).then_some(AuthConfig {
        static_keys,
        profile: raw.profile,
        assume_role,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn errors(text: &str) -> Vec<String> {
        match parse(Path::new("c.toml"), text, &no_env) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    const GOOD: &str = r#"
data_dir = "/tmp/x"

[sources.syslog]
type = "syslog"
address = "tcp://127.0.0.1:514"

[sinks.cw]
type = "cloudwatch_logs"
inputs = ["syslog"]
log_group = "/coreos/{hostname}/system"
log_stream = "{instance_id}"
retention_days = 14
batch_timeout = "250ms"
"#;

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
    fn every_problem_is_reported_with_line_and_key() {
        let text = r#"
[sources.syslog]
type = "syslog"
adress = "tcp://127.0.0.1:514"

[sources.other]
type = "syslog"
address = "ftp://x"

[sinks.cw]
type = "cloudwatch_logs"
inputs = ["syslog", "nope"]
log_group = "bad group!"
retention_days = 13
"#;
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:4: sources.syslog.adress: unknown field")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:8: sources.other.address: unknown scheme `ftp`")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:12: sinks.cw.inputs: `nope`")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:13: sinks.cw.log_group:")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:14: sinks.cw.retention_days: 13 is not")),
            "{errs:?}"
        );
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
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:1: sources.a.address: is required")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:8: sinks.b.max_in_flight:")),
            "{errs:?}"
        );
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
        assert!(
            errs.iter().any(|e| e.starts_with(
                "c.toml:6: sources.syslog.address: environment variable `HOST` is not set"
            )),
            "{errs:?}"
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
            assert!(errs.iter().any(|e| e.starts_with(want)), "{want}\n{errs:?}");
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
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:7: sources.s.tls.client_auth: needs `client_ca`")),
            "{errs:?}"
        );
        let errs = errors(&syslog_cfg(&table.replace("tcp://", "udp://")));
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:4: sources.s.tls: TLS is for tcp")),
            "{errs:?}"
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            ListenAddress::parse("udp://[::1]:514"),
            Ok(ListenAddress::Udp("[::1]:514".into()))
        );
        assert_eq!(
            ListenAddress::parse("unixgram:///dev/log"),
            Ok(ListenAddress::UnixDatagram("/dev/log".into()))
        );
        assert!(ListenAddress::parse("tcp://host").is_err());
        assert!(ListenAddress::parse("unix://relative").is_err());
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
        assert!(
            errs.iter()
                .any(|e| e.starts_with("c.toml:14: sinks.cw.auth: must be a table")),
            "{errs:?}"
        );
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
    fn permission_warnings() {
        let p = Path::new("/etc/logferry/l.toml");
        let cw = vec!["cw".to_string()];
        assert_eq!(permission_warning(p, 0o100600, &cw), None);
        assert_eq!(permission_warning(p, 0o100640, &cw), None);
        assert_eq!(permission_warning(p, 0o100644, &[]), None);
        let w = permission_warning(p, 0o100644, &cw).expect("readable secrets");
        assert!(
            w.starts_with("/etc/logferry/l.toml: mode 0644 lets every user on this host read the credentials in [sinks.cw.auth]; run `chmod 600 /etc/logferry/l.toml`"),
            "{w}"
        );
        let w = permission_warning(p, 0o100666, &[]).expect("writable");
        assert!(
            w.starts_with("/etc/logferry/l.toml: mode 0666 lets every user on this host change"),
            "{w}"
        );
        assert!(w.contains("chmod 600"), "{w}");
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
