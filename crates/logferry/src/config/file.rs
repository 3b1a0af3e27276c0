//! `type = "file"` and `type = "kubernetes_logs"`: the settings of the file tailing sources.
//!
//! Both types share one shape: `kubernetes_logs` is a file source with the container log
//! decoding turned on and `/var/log/pods/*/*/*.log` as its default `include`. Every value is checked here
//! (globs, regex, strftime format, encoding label, time zone) so a mistake is a startup error
//! with its line, not a source that silently reads nothing.

use std::time::Duration;

use serde::Deserialize;

use logferry_tail::multiline::{JoinRule, Preset};
use logferry_tail::tailer::TailerOptions;

use super::{de_duration_opt, Ctx};

/// Where the kubelet keeps container logs: `<namespace>_<pod>_<uid>/<container>/<n>.log`.
pub const KUBERNETES_DEFAULT_INCLUDE: &str = "/var/log/pods/*/*/*.log";

/// Lines longer than this are truncated by default: CloudWatch's own event limit (256 KiB,
/// less 26 bytes of overhead) would split them into parts anyway.
pub const DEFAULT_MAX_LINE_BYTES: usize = 256 * 1024;

/// `[sources.NAME] type = "file"` / `"kubernetes_logs"`
#[derive(Debug, Clone)]
pub struct FileSourceConfig {
    /// What the tailer takes as it is (globs, `start`, line limit, encoding, identity,
    /// rescan and rotation timing). `start_at_end` is the configured `start = "end"`; the
    /// source applies it only at its first start (no checkpoint yet).
    pub tail: TailerOptions,
    /// Joining continuation lines into one event.
    pub multiline: Option<MultilineSettings>,
    /// Reading the event time from the line.
    pub timestamp: Option<TimestampSettings>,
    /// Decode CRI / Docker json-file lines and add pod metadata from the path.
    pub kubernetes: bool,
    /// Add pod labels (and the node) from the Kubernetes API (`kubernetes_logs` only).
    pub kubernetes_api: Option<KubernetesApiSettings>,
    /// A line that is a JSON object becomes the event's fields (`merge_json`).
    pub merge_json: bool,
    /// Never save positions (`logferry tail`).
    pub dry_run: bool,
}

/// `[sources.NAME.multiline]`
#[derive(Debug, Clone)]
pub struct MultilineSettings {
    /// `start_pattern` (a line matching it starts a new event; others continue the current
    /// one) or `preset` (a language's stack traces are joined).
    pub rule: JoinRule,
    /// A held event is sent after this long without a new line.
    pub timeout: Duration,
    /// Most lines in one event.
    pub max_lines: usize,
    /// Most bytes in one event; the rest is counted as truncated.
    pub max_bytes: usize,
}

/// `[sources.NAME.kubernetes_api]`: present means enabled.
#[derive(Debug, Clone)]
pub struct KubernetesApiSettings {
    /// A kubeconfig file; unset: `KUBECONFIG`, `~/.kube/config`, then the pod's service
    /// account.
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Longest wait for one API request.
    pub timeout: Duration,
    /// How long a pod's answer is used before it is asked again.
    pub cache_ttl: Duration,
    /// How long the lines of a pod seen for the first time wait for its labels before they
    /// are sent without them.
    pub wait: Duration,
}

/// `timestamp_format` / `timezone`
#[derive(Debug, Clone)]
pub struct TimestampSettings {
    /// strftime format of the time at the start of each line.
    pub format: String,
    /// The zone of times that carry none.
    pub zone: logferry_tail::timestamp::Zone,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    include: Vec<String>,
    #[serde(default)]
    exclude: Vec<String>,
    start: Option<String>,
    max_line_bytes: Option<usize>,
    encoding: Option<String>,
    fingerprint_bytes: Option<usize>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    rescan_interval: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    rotate_wait: Option<Duration>,
    multiline: Option<RawMultiline>,
    timestamp_format: Option<String>,
    timezone: Option<String>,
    kubernetes_api: Option<RawKubernetesApi>,
    include_namespaces: Option<Vec<String>>,
    exclude_namespaces: Option<Vec<String>>,
    #[serde(default)]
    merge_json: bool,
    max_file_bytes_per_second: Option<u64>,
    max_container_bytes_per_second: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetesApi {
    kubeconfig: Option<std::path::PathBuf>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    cache_ttl: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    wait: Option<Duration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMultiline {
    start_pattern: Option<String>,
    preset: Option<String>,
    #[serde(default, deserialize_with = "de_duration_opt")]
    timeout: Option<Duration>,
    max_lines: Option<usize>,
    max_bytes: Option<usize>,
}

/// Checks a `file` (or, with `kubernetes`, a `kubernetes_logs`) source table.
pub(super) fn file_config(
    ctx: &mut Ctx<'_>,
    name: &str,
    raw: RawFile,
    kubernetes: bool,
) -> Option<FileSourceConfig> {
    let before = ctx.errors.len();
    let key = |k: &'static str| ["sources", name, k];
    let mut include = raw.include;
    if include.is_empty() {
        if kubernetes {
            include.push(KUBERNETES_DEFAULT_INCLUDE.to_string());
        } else {
            ctx.error(
                &key("include"),
                "is required: a list of glob patterns such as [\"/var/log/app/*.log\"]",
            );
        }
    }
    for (k, patterns) in [("include", &include), ("exclude", &raw.exclude)] {
        for p in patterns {
            if let Err(e) = glob::Pattern::new(p) {
                ctx.error(&key(k), format!("`{p}` is not a valid glob pattern: {e}"));
            } else if k == "include" && !p.starts_with('/') {
                ctx.error(&key(k), format!("`{p}` must be an absolute path"));
            }
        }
    }
    let start_at_end = match raw.start.as_deref() {
        None | Some("beginning") => false,
        Some("end") => true,
        Some(other) => {
            ctx.error(
                &key("start"),
                format!("`{other}` is neither \"beginning\" nor \"end\""),
            );
            false
        }
    };
    let max_line_bytes = raw.max_line_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES);
    if max_line_bytes < 64 {
        ctx.error(
            &key("max_line_bytes"),
            format!("{max_line_bytes} is too small (at least 64 bytes)"),
        );
    }
    let encoding = match raw.encoding.as_deref() {
        None => encoding_rs::UTF_8,
        Some(label) => match encoding_rs::Encoding::for_label(label.as_bytes()) {
            Some(e) => e,
            None => {
                ctx.error(
                    &key("encoding"),
                    format!(
                        "`{label}` is not an encoding label; use e.g. \"utf-8\", \"latin1\", \
                         \"utf-16le\", \"utf-16be\", \"shift_jis\" (WHATWG labels)"
                    ),
                );
                encoding_rs::UTF_8
            }
        },
    };
    let fingerprint_bytes = ctx.in_range(
        &key("fingerprint_bytes"),
        raw.fingerprint_bytes,
        256,
        16..=65536,
    );
    let multiline = raw.multiline.and_then(|m| {
        let ml_key = |k: &'static str| ["sources", name, "multiline", k];
        let rule = match (m.start_pattern, m.preset) {
            (Some(_), Some(_)) => {
                // Both would decide where events start; which one wins would be a guess.
                ctx.error(
                    &ml_key("preset"),
                    "cannot be combined with start_pattern: use one or the other",
                );
                return None;
            }
            (None, None) => {
                ctx.error(
                    &["sources", name, "multiline"],
                    "needs start_pattern or preset (\"java\", \"python\", \"go\")",
                );
                return None;
            }
            (Some(pattern), None) => match regex::bytes::Regex::new(&pattern) {
                Ok(r) => JoinRule::StartPattern(r),
                Err(e) => {
                    ctx.error(
                        &ml_key("start_pattern"),
                        format!("not a valid regular expression: {e}"),
                    );
                    return None;
                }
            },
            (None, Some(preset)) => match Preset::from_name(&preset) {
                Some(p) => JoinRule::Preset(p),
                None => {
                    ctx.error(
                        &ml_key("preset"),
                        format!("`{preset}` is not a preset: use \"java\", \"python\" or \"go\""),
                    );
                    return None;
                }
            },
        };
        Some(MultilineSettings {
            rule,
            timeout: m.timeout.unwrap_or(Duration::from_secs(1)),
            max_lines: m.max_lines.unwrap_or(500).max(1),
            max_bytes: m.max_bytes.unwrap_or(DEFAULT_MAX_LINE_BYTES).max(64),
        })
    });
    let zone = match raw.timezone.as_deref() {
        None => logferry_tail::timestamp::Zone::Utc,
        Some(z) => match z.parse::<logferry_tail::timestamp::Zone>() {
            Ok(z) => z,
            Err(e) => {
                ctx.error(&key("timezone"), format!("`{z}`: {e}"));
                logferry_tail::timestamp::Zone::Utc
            }
        },
    };
    let timestamp =
        raw.timestamp_format.and_then(
            |format| match logferry_tail::timestamp::TimestampParser::new(&format, zone) {
                Ok(_) => Some(TimestampSettings { format, zone }),
                Err(e) => {
                    ctx.error(&key("timestamp_format"), format!("`{format}`: {e}"));
                    None
                }
            },
        );
    let kubernetes_api = ctx
        .only_where(
            kubernetes,
            &key("kubernetes_api"),
            raw.kubernetes_api,
            "only a `kubernetes_logs` source has pods to look up",
        )
        .map(|k| {
            let api_key = |k: &'static str| ["sources", name, "kubernetes_api", k];
            if let Some(p) = k.kubeconfig.as_ref().filter(|p| !p.is_absolute()) {
                ctx.error(
                    &api_key("kubeconfig"),
                    format!("`{}` must be an absolute path", p.display()),
                );
            }
            let timeout = k.timeout.unwrap_or(Duration::from_secs(5));
            if timeout.is_zero() {
                ctx.error(&api_key("timeout"), "must be more than zero");
            }
            let wait = k.wait.unwrap_or(Duration::from_secs(1));
            if wait > Duration::from_secs(60) {
                ctx.error(
                    &api_key("wait"),
                    "at most 60s: a new pod's lines are held in memory while they wait",
                );
            }
            KubernetesApiSettings {
                kubeconfig: k.kubeconfig,
                timeout,
                cache_ttl: k.cache_ttl.unwrap_or(Duration::from_secs(300)),
                wait,
            }
        });
    let mut namespace_globs = |k: &'static str, globs: Option<Vec<String>>| {
        let globs = ctx.only_where(
            kubernetes,
            &key(k),
            globs,
            "only a `kubernetes_logs` source reads pods' files",
        )?;
        for g in &globs {
            if let Err(e) = glob::Pattern::new(g) {
                ctx.error(&key(k), format!("`{g}` is not a valid glob pattern: {e}"));
            }
        }
        Some(globs)
    };
    let include_namespaces = namespace_globs("include_namespaces", raw.include_namespaces);
    let exclude_namespaces = namespace_globs("exclude_namespaces", raw.exclude_namespaces);
    // One setting under the name of what the source reads: a container's log is one file.
    let (rate_key, other_key, rate, other) = if kubernetes {
        (
            "max_container_bytes_per_second",
            "max_file_bytes_per_second",
            raw.max_container_bytes_per_second,
            raw.max_file_bytes_per_second,
        )
    } else {
        (
            "max_file_bytes_per_second",
            "max_container_bytes_per_second",
            raw.max_file_bytes_per_second,
            raw.max_container_bytes_per_second,
        )
    };
    if other.is_some() {
        ctx.error(
            &key(other_key),
            format!("this source type calls it `{rate_key}`"),
        );
    }
    if rate == Some(0) {
        ctx.error(
            &key(rate_key),
            "must be more than zero (remove it for no limit)",
        );
    }
    if ctx.errors.len() != before {
        return None;
    }
    let namespaces = logferry_tail::container::NamespaceFilter::new(
        &include_namespaces.unwrap_or_default(),
        &exclude_namespaces.unwrap_or_default(),
    )
    .ok()?;
    Some(FileSourceConfig {
        tail: TailerOptions {
            include,
            exclude: raw.exclude,
            namespaces,
            start_at_end,
            max_line_bytes,
            encoding,
            fingerprint_bytes,
            rescan_interval: raw.rescan_interval.unwrap_or(Duration::from_secs(5)),
            rotate_wait: raw.rotate_wait.unwrap_or(Duration::from_secs(5)),
            max_file_bytes_per_second: rate,
            ..TailerOptions::default()
        },
        multiline,
        timestamp,
        kubernetes,
        kubernetes_api,
        merge_json: raw.merge_json,
        dry_run: false,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{parse, SourceConfig};
    use logferry_tail::multiline::{JoinRule, Preset};
    use std::path::Path;

    fn with_source(source: &str) -> Result<SourceConfig, Vec<String>> {
        let text = format!(
            "data_dir = \"/tmp/x\"\n[sources.f]\n{source}\n[sinks.cw]\ntype = \"cloudwatch_logs\"\n\
             inputs = [\"f\"]\nlog_group = \"/g\"\nlog_stream = \"s\"\n"
        );
        match parse(Path::new("c.toml"), &text, &|_| None) {
            Ok(mut c) => Ok(c.sources.remove(0).1),
            Err(e) => Err(e.0.iter().map(|e| e.to_string()).collect()),
        }
    }

    /// The errors of a source that must not load, one a line.
    fn errors_of(source: &str) -> String {
        with_source(source).expect_err("invalid").join("\n")
    }

    #[test]
    fn kubernetes_defaults_to_the_pods_directory() {
        let Ok(SourceConfig::File(f)) = with_source("type = \"kubernetes_logs\"") else {
            panic!("valid");
        };
        assert!(f.kubernetes);
        assert_eq!(f.tail.include, [super::KUBERNETES_DEFAULT_INCLUDE]);
        assert!(!f.tail.start_at_end);
    }

    #[test]
    fn every_mistake_names_its_line_and_key() {
        let all = errors_of(
            "type = \"file\"\ninclude = [\"relative/*.log\", \"/x/[\"]\nstart = \"middle\"\n\
             encoding = \"klingon\"\ntimestamp_format = \"%Y-%Q\"\ntimezone = \"Mars/Base\"\n\
             [sources.f.multiline]\nstart_pattern = \"(\"",
        );
        for want in [
            "c.toml:4: sources.f.include: `relative/*.log` must be an absolute path",
            "c.toml:4: sources.f.include: `/x/[` is not a valid glob pattern",
            "c.toml:5: sources.f.start: `middle`",
            "c.toml:6: sources.f.encoding: `klingon` is not an encoding label",
            "c.toml:7: sources.f.timestamp_format: `%Y-%Q`",
            "c.toml:8: sources.f.timezone: `Mars/Base`",
            "c.toml:10: sources.f.multiline.start_pattern: not a valid regular expression",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let errs = with_source("type = \"file\"").expect_err("no include");
        assert!(
            errs[0].contains("sources.f.include: is required"),
            "{errs:?}"
        );
        let errs =
            with_source("type = \"file\"\ninclude = [\"/a\"]\ninclde = 1").expect_err("typo");
        assert!(errs[0].contains("c.toml:5: sources.f.inclde"), "{errs:?}");
    }

    #[test]
    fn kubernetes_api_is_for_pods_only_and_checked() {
        let Ok(SourceConfig::File(f)) =
            with_source("type = \"kubernetes_logs\"\n[sources.f.kubernetes_api]\nwait = \"2s\"")
        else {
            panic!("valid");
        };
        let k = f.kubernetes_api.expect("enabled by its table");
        assert_eq!(k.wait, std::time::Duration::from_secs(2));
        assert_eq!(k.timeout, std::time::Duration::from_secs(5));
        assert!(k.kubeconfig.is_none());
        let errs = with_source(
            "type = \"file\"\ninclude = [\"/a\"]\n[sources.f.kubernetes_api]\nwait = \"1s\"",
        )
        .expect_err("file source");
        assert!(
            errs[0].contains("sources.f.kubernetes_api: only a `kubernetes_logs` source"),
            "{errs:?}"
        );
        let bad_api = "type = \"kubernetes_logs\"\n[sources.f.kubernetes_api]\n\
                       kubeconfig = \"k.yaml\"\ntimeout = \"0s\"\nwait = \"5m\"";
        let all = errors_of(&format!("{bad_api}\ncache_tl = \"1m\""));
        assert!(
            all.contains("c.toml:8: sources.f.kubernetes_api.cache_tl"),
            "{all}"
        );
        let all = errors_of(bad_api);
        for want in [
            "sources.f.kubernetes_api.kubeconfig: `k.yaml` must be an absolute path",
            "sources.f.kubernetes_api.timeout: must be more than zero",
            "sources.f.kubernetes_api.wait: at most 60s",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn the_read_rate_is_named_after_what_the_source_reads_and_more_than_zero() {
        let Ok(SourceConfig::File(f)) =
            with_source("type = \"kubernetes_logs\"\nmax_container_bytes_per_second = 65536")
        else {
            panic!("valid");
        };
        assert_eq!(f.tail.max_file_bytes_per_second, Some(65536));
        let Ok(SourceConfig::File(f)) =
            with_source("type = \"file\"\ninclude = [\"/a\"]\nmax_file_bytes_per_second = 9")
        else {
            panic!("valid");
        };
        assert_eq!(f.tail.max_file_bytes_per_second, Some(9));
        let all = errors_of(
            "type = \"kubernetes_logs\"\nmax_container_bytes_per_second = 0\n\
             max_file_bytes_per_second = 5",
        );
        for want in [
            "c.toml:4: sources.f.max_container_bytes_per_second: must be more than zero",
            "c.toml:5: sources.f.max_file_bytes_per_second: this source type calls it \
             `max_container_bytes_per_second`",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let all =
            errors_of("type = \"file\"\ninclude = [\"/a\"]\nmax_container_bytes_per_second = 5");
        assert!(
            all.contains("c.toml:5: sources.f.max_container_bytes_per_second: this source type calls it `max_file_bytes_per_second`"),
            "{all}"
        );
    }

    #[test]
    fn namespace_filters_are_for_pods_only_and_checked() {
        let Ok(SourceConfig::File(f)) = with_source(
            "type = \"kubernetes_logs\"\ninclude_namespaces = [\"team-*\"]\n\
             exclude_namespaces = [\"team-b\"]\nmerge_json = true",
        ) else {
            panic!("valid");
        };
        assert!(f.merge_json);
        let pods = |ns: &str| format!("/var/log/pods/{ns}_web-0_u/c/0.log");
        assert!(f.tail.namespaces.admits(Path::new(&pods("team-a"))));
        assert!(!f.tail.namespaces.admits(Path::new(&pods("team-b"))));
        assert!(!f.tail.namespaces.admits(Path::new(&pods("default"))));
        let all = errors_of(
            "type = \"kubernetes_logs\"\ninclude_namespaces = [\"ok\", \"[bad\"]\n\
             exclude_namespaces = [\"x[\"]",
        );
        for want in [
            "c.toml:4: sources.f.include_namespaces: `[bad` is not a valid glob pattern",
            "c.toml:5: sources.f.exclude_namespaces: `x[` is not a valid glob pattern",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
        let all = errors_of(
            "type = \"file\"\ninclude = [\"/a\"]\nexclude_namespaces = [\"kube-*\"]\n\
             include_namespaces = []",
        );
        for want in [
            "c.toml:5: sources.f.exclude_namespaces: only a `kubernetes_logs` source",
            "c.toml:6: sources.f.include_namespaces: only a `kubernetes_logs` source",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }

    #[test]
    fn merge_json_is_off_unless_asked_and_allowed_on_files() {
        let Ok(SourceConfig::File(f)) = with_source("type = \"kubernetes_logs\"") else {
            panic!("valid");
        };
        assert!(!f.merge_json);
        let Ok(SourceConfig::File(f)) =
            with_source("type = \"file\"\ninclude = [\"/a\"]\nmerge_json = true")
        else {
            panic!("valid");
        };
        assert!(f.merge_json);
        let all = errors_of("type = \"file\"\ninclude = [\"/a\"]\nmerge_json = \"yes\"");
        assert!(all.contains("c.toml:5: sources.f.merge_json"), "{all}");
    }

    #[test]
    fn encodings_and_multiline_are_read() {
        let Ok(SourceConfig::File(f)) = with_source(
            "type = \"file\"\ninclude = [\"/var/log/app/*.log\"]\nencoding = \"latin1\"\n\
             start = \"end\"\n[sources.f.multiline]\nstart_pattern = '^\\d'\ntimeout = \"2s\"",
        ) else {
            panic!("valid");
        };
        assert_eq!(f.tail.encoding, encoding_rs::WINDOWS_1252);
        assert!(f.tail.start_at_end);
        let m = f.multiline.expect("multiline");
        let JoinRule::StartPattern(p) = m.rule else {
            panic!("start_pattern");
        };
        assert!(p.is_match(b"2026"));
        assert_eq!(m.timeout, std::time::Duration::from_secs(2));
    }

    #[test]
    fn multiline_preset_is_read_and_never_combined_with_start_pattern() {
        let Ok(SourceConfig::File(f)) = with_source(
            "type = \"kubernetes_logs\"\n[sources.f.multiline]\npreset = \"python\"\nmax_lines = 9",
        ) else {
            panic!("valid");
        };
        let m = f.multiline.expect("multiline");
        assert!(matches!(m.rule, JoinRule::Preset(Preset::Python)), "{m:?}");
        assert_eq!(m.max_lines, 9);
        let all = errors_of(
            "type = \"kubernetes_logs\"\n[sources.f.multiline]\nstart_pattern = '^\\d'\n\
             preset = \"java\"",
        );
        assert!(
            all.contains(
                "c.toml:6: sources.f.multiline.preset: cannot be combined with start_pattern"
            ),
            "{all}"
        );
        let all = errors_of("type = \"kubernetes_logs\"\n[sources.f.multiline]\npreset = \"rust\"");
        assert!(
            all.contains("c.toml:5: sources.f.multiline.preset: `rust` is not a preset"),
            "{all}"
        );
        let all = errors_of("type = \"kubernetes_logs\"\n[sources.f.multiline]\ntimeout = \"1s\"");
        assert!(
            all.contains("c.toml:4: sources.f.multiline: needs start_pattern or preset"),
            "{all}"
        );
    }
}
