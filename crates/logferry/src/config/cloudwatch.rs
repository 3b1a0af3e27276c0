//! `[sinks.NAME] type = "cloudwatch_logs"`: names, format, batching and request limits, the
//! dead-letter file, and `[sinks.NAME.auth]`.
//!
//! Limits are checked against PutLogEvents' own (10,000 events, 1,048,576 bytes per request),
//! so a sink can only be configured to build requests CloudWatch accepts. What a new log group
//! gets (`kms_key_id`, `tags`, `log_group_class`, `deletion_protection`) is checked against
//! CreateLogGroup's rules, so a mistake is a startup error rather than a create retried
//! forever. No message about `auth` quotes a credential's value.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::de_duration_opt;
use super::diag::Ctx;
use super::SinkConfig;
use crate::secret::Secret;
use crate::template::{Template, TemplateKind};

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
    /// What a log group logferry creates gets in its one CreateLogGroup call.
    pub new_group: NewGroup,
    /// A ceiling on PutLogEvents calls per second (the governor adapts below it).
    pub max_requests_per_second: Option<f64>,
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
    /// Bytes the sink may hold (requests being built, ready and in flight; messages + 26
    /// each) before its sources wait ([`crate::sink`]'s "Backpressure").
    pub max_held_bytes: usize,
    /// Time allowed for one PutLogEvents attempt.
    pub request_timeout: Duration,
    /// Upper bound of the retry backoff.
    pub max_backoff: Duration,
    /// JSON-lines file for events CloudWatch will never accept.
    pub dead_letter_path: PathBuf,
    /// Credentials for this sink instead of the AWS chain's defaults.
    pub auth: AuthConfig,
    /// CloudWatch's entity for container logs (`cluster_name`, `cluster_platform`): `None`
    /// when no cluster name is known ([`crate::sink::entity`]).
    pub entity: Option<crate::sink::entity::EntityConfig>,
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

/// What a log group logferry creates gets, all in its one CreateLogGroup call (PutRetentionPolicy,
/// TagResource and AssociateKmsKey are 5 calls/s per account, not adjustable).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewGroup {
    /// The ARN of the KMS key that encrypts the group.
    pub kms_key_id: Option<String>,
    /// Tags (at most 50).
    pub tags: BTreeMap<String, String>,
    /// `STANDARD` or `INFREQUENT_ACCESS` (half the ingestion price, fewer features); fixed at
    /// creation.
    pub class: Option<LogGroupClass>,
    /// Refuse DeleteLogGroup until it is turned off.
    pub deletion_protection: Option<bool>,
}

/// A log group's class (`DELIVERY` is for vended logs only and takes no PutLogEvents).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogGroupClass {
    /// All features.
    Standard,
    /// Half the ingestion price; no metric filters, subscriptions or Live Tail.
    InfrequentAccess,
}

impl LogGroupClass {
    /// The API's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogGroupClass::Standard => "STANDARD",
            LogGroupClass::InfrequentAccess => "INFREQUENT_ACCESS",
        }
    }
}

/// Why `arn` is not a KMS key ARN CreateLogGroup takes
/// (`arn:PARTITION:kms:REGION:ACCOUNT:key/KEY-ID`; aliases are refused by the API).
fn kms_key_arn_problem(arn: &str) -> Option<&'static str> {
    let parts: Vec<&str> = arn.split(':').collect();
    let [prefix, partition, service, region, account, resource] = parts[..] else {
        return Some("is not an ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)");
    };
    if prefix != "arn" || !partition.starts_with("aws") || service != "kms" {
        return Some("is not a KMS ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)");
    }
    if region.is_empty() {
        return Some("has no region");
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Some("has no 12-digit account id");
    }
    match resource.strip_prefix("key/") {
        Some(id) if !id.is_empty() => None,
        _ if resource.starts_with("alias/") => {
            Some("names an alias; CreateLogGroup takes the key's ARN (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)")
        }
        _ => Some("does not name a key (…:key/KEY-ID)"),
    }
}

/// Retention values CloudWatch accepts.
pub const RETENTION_DAYS: [i32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCloudWatch {
    inputs: Vec<String>,
    log_group: Option<String>,
    log_stream: Option<String>,
    format: Option<MessageFormat>,
    region: Option<String>,
    endpoint: Option<String>,
    create_missing_group: Option<bool>,
    create_missing_stream: Option<bool>,
    retention_days: Option<i32>,
    kms_key_id: Option<String>,
    tags: Option<BTreeMap<String, String>>,
    log_group_class: Option<String>,
    deletion_protection: Option<bool>,
    max_requests_per_second: Option<f64>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    batch_timeout: Option<Duration>,
    max_batch_events: Option<usize>,
    max_batch_bytes: Option<usize>,
    max_in_flight: Option<usize>,
    stream_concurrency: Option<usize>,
    max_held_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    request_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    max_backoff: Option<Duration>,
    dead_letter_path: Option<PathBuf>,
    cluster_name: Option<String>,
    cluster_platform: Option<String>,
    // Deserialized on its own so that its errors name `sinks.NAME.auth.KEY` and its line.
    auth: Option<toml::Value>,
}

/// `kms_key_id`, `tags`, `log_group_class`, `deletion_protection`, checked.
fn new_group(
    ctx: &mut Ctx<'_>,
    err: &dyn Fn(&mut Ctx<'_>, &'static str, String),
    raw: &RawCloudWatch,
) -> NewGroup {
    let class = match raw.log_group_class.as_deref() {
        None => None,
        Some("STANDARD") => Some(LogGroupClass::Standard),
        Some("INFREQUENT_ACCESS") => Some(LogGroupClass::InfrequentAccess),
        Some(other) => {
            err(
                ctx,
                "log_group_class",
                format!("`{other}` is not a log group class logferry can write to; use \"STANDARD\" or \"INFREQUENT_ACCESS\""),
            );
            None
        }
    };
    if let Some(arn) = &raw.kms_key_id {
        if let Some(problem) = kms_key_arn_problem(arn) {
            err(ctx, "kms_key_id", format!("`{arn}` {problem}"));
        }
    }
    let tags = raw.tags.clone().unwrap_or_default();
    if tags.len() > 50 {
        err(
            ctx,
            "tags",
            format!("{} tags; a log group takes at most 50", tags.len()),
        );
    }
    for (k, v) in &tags {
        if k.is_empty() || k.chars().count() > 128 || k.starts_with("aws:") {
            err(
                ctx,
                "tags",
                format!("tag key `{k}` must be 1 to 128 characters and not start with aws:"),
            );
        }
        if v.chars().count() > 256 {
            err(
                ctx,
                "tags",
                format!("the value of tag `{k}` is over 256 characters"),
            );
        }
    }
    let group = NewGroup {
        kms_key_id: raw.kms_key_id.clone(),
        tags,
        class,
        deletion_protection: raw.deletion_protection,
    };
    if raw.create_missing_group == Some(false) && group != NewGroup::default() {
        err(
            ctx,
            "create_missing_group",
            "is false, so kms_key_id, tags, log_group_class and deletion_protection (applied when logferry creates a group) would do nothing".into(),
        );
    }
    group
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
pub(super) const SECRET_KEYS: [&str; 2] = ["secret_access_key", "session_token"];

pub(super) fn cloudwatch_config(
    ctx: &mut Ctx<'_>,
    name: &str,
    raw: RawCloudWatch,
    sources: &HashSet<&str>,
    data_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<SinkConfig> {
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

    let new_group = new_group(ctx, &err, &raw);
    let entity = entity_config(ctx, &err, &raw, env);
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
    if let Some(rate) = raw.max_requests_per_second {
        if !(rate > 0.0 && rate <= 1e6) {
            err(
                ctx,
                "max_requests_per_second",
                format!("{rate} is not a rate of calls per second (more than 0)"),
            );
        }
    }
    let max_batch_events = ctx.in_range(
        &["sinks", name, "max_batch_events"],
        raw.max_batch_events,
        10_000,
        1..=10_000,
    );
    let max_batch_bytes = ctx.in_range(
        &["sinks", name, "max_batch_bytes"],
        raw.max_batch_bytes,
        1_048_576,
        1024..=1_048_576,
    );
    let max_in_flight = ctx.in_range(
        &["sinks", name, "max_in_flight"],
        raw.max_in_flight,
        8,
        1..=256,
    );
    let stream_concurrency = ctx.in_range(
        &["sinks", name, "stream_concurrency"],
        raw.stream_concurrency,
        4,
        1..=64,
    );
    let max_held_bytes = ctx.in_range(
        &["sinks", name, "max_held_bytes"],
        raw.max_held_bytes,
        crate::sink::MAX_HELD_BYTES,
        1_048_576..=1 << 30,
    );
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
        new_group,
        max_requests_per_second: raw.max_requests_per_second,
        batch_timeout,
        max_batch_events,
        max_batch_bytes,
        max_in_flight,
        stream_concurrency,
        max_held_bytes,
        request_timeout: raw.request_timeout.unwrap_or(Duration::from_secs(30)),
        max_backoff: raw.max_backoff.unwrap_or(Duration::from_secs(30)),
        dead_letter_path: raw
            .dead_letter_path
            .unwrap_or_else(|| data_dir.join("dead-letter").join(format!("{name}.jsonl"))),
        auth,
        entity,
    }))
}

/// `cluster_name` (else `CLUSTER_NAME`) and `cluster_platform`, checked; `None` without a
/// cluster name.
fn entity_config(
    ctx: &mut Ctx<'_>,
    err: &dyn Fn(&mut Ctx<'_>, &'static str, String),
    raw: &RawCloudWatch,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<crate::sink::entity::EntityConfig> {
    use crate::sink::entity::{cluster_name_problem, EntityConfig, Platform};
    let platform = match raw.cluster_platform.as_deref() {
        None | Some("eks") => Platform::Eks,
        Some("kubernetes") => Platform::Kubernetes,
        Some(other) => {
            err(
                ctx,
                "cluster_platform",
                format!("`{other}` is not a platform; use \"eks\" or \"kubernetes\""),
            );
            Platform::Eks
        }
    };
    let (cluster, from) = match &raw.cluster_name {
        Some(name) => (name.clone(), ""),
        None => (
            env("CLUSTER_NAME").filter(|s| !s.is_empty())?,
            " (from CLUSTER_NAME)",
        ),
    };
    if let Some(problem) = cluster_name_problem(&cluster) {
        err(ctx, "cluster_name", format!("`{cluster}`{from} {problem}"));
        return None;
    }
    Some(EntityConfig { cluster, platform })
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
