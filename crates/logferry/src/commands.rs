//! The operator commands besides `run`: `check` (does this host have what it takes to ship?) and
//! `tail` (what would be shipped?).
//!
//! `check` prints one line per check, `ok` or `FAIL` with a fix, and never prints a secret: for
//! credentials it names the provider in the AWS chain that supplied them, nothing more. It
//! creates nothing in CloudWatch unless asked (`--write`, which puts one event in a throwaway
//! stream).
//!
//! `tail` runs the configured sources (spool off, journal cursor untouched) and prints each
//! event as the first sink fed by its source would send it, with its group and stream; nothing
//! is sent and no position moves.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_credential_types::provider::ProvideCredentials;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use logferry_tail::discovery::Discovery;

use crate::config::{Config, SinkConfig, SourceConfig};
use crate::format::format_event;
use crate::sink::{client, endpoint};
use crate::source::stats::{SourceKind, SourceStats};
use crate::source::{self, SinkInput, SourceContext};
use tracing::Instrument;

struct Report {
    failures: usize,
}

impl Report {
    fn ok(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("ok    {what}: {detail}");
    }
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display) {
        println!("warn  {what}: {detail}");
    }
    fn fail(&mut self, what: &str, detail: impl std::fmt::Display, fix: &str) {
        self.failures += 1;
        println!("FAIL  {what}: {detail}\n      fix: {fix}");
    }
}

fn check_data_dir(r: &mut Report, dir: &Path) {
    use logferry_private_files::{inspect_data_dir, mode_string};
    let report = match inspect_data_dir(dir) {
        Ok(report) => report,
        Err(e) => {
            r.fail(
                "data_dir",
                e,
                "logferry refuses to start with this data_dir: state there could be read or replaced by another local user",
            );
            return;
        }
    };
    match (report.owner, report.mode) {
        (Some(owner), Some(mode)) => r.ok(
            "data_dir",
            format!(
                "{} owner uid {owner}, mode {}",
                dir.display(),
                mode_string(mode)
            ),
        ),
        _ => r.ok(
            "data_dir",
            format!(
                "{} does not exist yet; logferry will create it 0700",
                dir.display()
            ),
        ),
    }
    if let Some(link) = report.links.first() {
        r.fail(
            "data_dir",
            format!("{} is a symbolic link inside data_dir", link.display()),
            "remove it: logferry never reads or writes its state through a link, and refuses to start with one there",
        );
    }
    if !report.too_open.is_empty() {
        let (first, mode) = &report.too_open[0];
        r.warn(
            "data_dir",
            format!(
                "{} path(s) more open than 0700/0600, e.g. {} ({}); logferry narrows them at start",
                report.too_open.len(),
                first.display(),
                mode_string(*mode)
            ),
        );
    }
    let probe = dir.join(".logferry-check");
    let res = logferry_private_files::create_dir_all(dir).and_then(|_| {
        let _ = std::fs::remove_file(&probe); // left by a check that was killed
        logferry_private_files::create_new(&probe)?;
        std::fs::remove_file(&probe)
    });
    match res {
        Ok(()) => r.ok("data_dir", format!("{} is writable", dir.display())),
        Err(e) => r.fail(
            "data_dir",
            format!("{}: {e}", dir.display()),
            "create it and give logferry's user write access (systemd: StateDirectory=logferry)",
        ),
    }
}

/// The files a file source would follow now, found by the same [`Discovery`] walk as `run`'s
/// tailer (not a separate glob, which could disagree with it), and the ones of them that
/// cannot be opened (`path: error`).
fn matching_files(
    cfg: &crate::config::FileSourceConfig,
) -> Result<(Vec<PathBuf>, Vec<String>), String> {
    let discovery = Discovery::new(&cfg.tail.include, &cfg.tail.exclude)
        .map_err(|e| format!("`{}`: {}", e.pattern, e.reason))?
        .with_namespaces(cfg.tail.namespaces.clone());
    let (mut matched, mut unreadable) = (Vec::new(), Vec::new());
    for found in discovery.scan().files {
        // Special files and dangling symlinks are skipped by the tailer too.
        if found.excluded || !found.path.is_file() {
            continue;
        }
        if let Err(e) = std::fs::File::open(&found.path) {
            unreadable.push(format!("{}: {e}", found.path.display()));
        }
        matched.push(found.path);
    }
    Ok((matched, unreadable))
}

/// How many files the patterns match now, and whether they can be opened.
fn check_files(r: &mut Report, name: &str, cfg: &crate::config::FileSourceConfig) {
    let what = format!("source {name} (files)");
    let (matched, unreadable) = match matching_files(cfg) {
        Ok((matched, unreadable)) => (matched.len(), unreadable),
        Err(e) => {
            r.fail(&what, e, "fix the pattern in `include` / `exclude`");
            return;
        }
    };
    if let Some(first) = unreadable.first() {
        r.fail(
            &what,
            format!(
                "{} of {matched} files cannot be opened, e.g. {first}",
                unreadable.len()
            ),
            "give logferry's user read access (group adm or root for /var/log)",
        );
    } else if matched == 0 {
        r.warn(
            &what,
            format!(
                "no file matches {:?} yet; they are picked up when they appear",
                cfg.tail.include
            ),
        );
    } else {
        r.ok(&what, format!("{matched} files match and are readable"));
    }
}

/// The endpoint the SDK resolves (FIPS, dual-stack, overrides) and the proxy it goes through.
async fn check_route(
    r: &mut Report,
    what: &str,
    sdk: &aws_config::SdkConfig,
    configured: Option<&str>,
) {
    let url = match endpoint::resolve(sdk, configured).await {
        Ok(url) => url,
        Err(e) => {
            r.fail(
                &format!("{what} endpoint"),
                format!("the SDK cannot resolve an endpoint: {e}"),
                "check the region, `endpoint` / AWS_ENDPOINT_URL, AWS_USE_FIPS_ENDPOINT and AWS_USE_DUALSTACK_ENDPOINT (the SDK refuses FIPS or dual-stack with a custom endpoint)",
            );
            return;
        }
    };
    r.ok(&format!("{what} endpoint"), &url);
    match endpoint::proxy_for(&url) {
        Some(proxy) => r.ok(&format!("{what} proxy"), format!("{url} through {proxy}")),
        None => {
            let set = endpoint::proxy_variables_set();
            if set.is_empty() {
                r.ok(&format!("{what} proxy"), "none (no proxy variable set)");
            } else {
                r.ok(
                    &format!("{what} proxy"),
                    format!("none for {url} (set: {})", set.join(", ")),
                );
            }
        }
    }
}

/// Whether the API answers these credentials' `get pods`.
async fn check_kubernetes_api(
    r: &mut Report,
    name: &str,
    k: &crate::config::KubernetesApiSettings,
) {
    let what = format!("source {name} (Kubernetes API)");
    let node_name = std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty());
    let opts = logferry_kubernetes::Options {
        kubeconfig: k.kubeconfig.clone(),
        node_name: node_name.clone(),
        timeout: k.timeout,
        ..logferry_kubernetes::Options::default()
    };
    match logferry_kubernetes::PodMetadata::check_access(&opts).await {
        Ok(()) => match node_name {
            Some(node) => r.ok(
                &what,
                format!("reachable; pods can be read, and node {node}'s listed"),
            ),
            None => r.ok(
                &what,
                "reachable; pods can be read (NODE_NAME unset: one GET per pod, no watch)",
            ),
        },
        Err(e) => r.fail(
            &what,
            e,
            "check the kubeconfig / service account and that its role grants `get`, `list` and \
             `watch` on `pods` (deploy/kubernetes/rbac.yaml); events are still shipped without \
             labels",
        ),
    }
}

fn check_journal(r: &mut Report, name: &str, dirs: &[std::path::PathBuf]) {
    let what = format!("source {name} (journal)");
    match logferry_journal::Journal::open_dirs(dirs) {
        Ok(mut j) => {
            let files = j.file_paths().len();
            j.seek_head();
            let first = j.next_entry();
            let errors = j.take_file_errors();
            if let Some(e) = errors.iter().find(|e| e.message.contains("ermission")) {
                r.fail(
                    &what,
                    e,
                    "run as root or add logferry's user to the systemd-journal group",
                );
            } else if files == 0 {
                r.fail(
                    &what,
                    format!("no journal files under {dirs:?}"),
                    "mount /var/log/journal and /run/log/journal (read-only) or set `directory`",
                );
            } else {
                match first {
                    Ok(Some(_)) => r.ok(&what, format!("{files} journal files readable")),
                    Ok(None) => r.ok(&what, format!("{files} journal files, no entries yet")),
                    Err(e) => r.fail(&what, e, "check the directory's permissions"),
                }
                for e in errors.iter().take(3) {
                    r.warn(&what, e);
                }
            }
        }
        Err(e) => r.fail(&what, e, "set `directory` to the journal's location"),
    }
}

/// The name of the credential provider that supplied `c` (`Environment`, `ProfileFile`,
/// `WebIdentityToken`, `EcsContainer`, `IMDSv2`, ...). The SDK exposes it only through its
/// `Debug` output (which redacts the secret); only the name is taken from it, nothing else is
/// printed.
fn provider_name(c: &aws_credential_types::Credentials) -> String {
    let debug = format!("{c:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| "the AWS credential chain".to_string())
}

/// `logferry check`: returns the number of failed checks.
pub async fn check(config: &Config, write: bool) -> usize {
    let mut r = Report { failures: 0 };
    r.ok("config", format!("{} is valid", config.path.display()));
    for w in &config.warnings {
        r.warn("config", w);
    }
    check_data_dir(&mut r, &config.data_dir);
    for (name, source) in &config.sources {
        match source {
            SourceConfig::Journald(j) => check_journal(&mut r, name, &j.directories),
            SourceConfig::File(f) => {
                check_files(&mut r, name, f);
                if let Some(k) = &f.kubernetes_api {
                    check_kubernetes_api(&mut r, name, k).await;
                }
            }
            _ => {}
        }
    }
    for (name, sink) in &config.sinks {
        let SinkConfig::CloudWatchLogs(cfg) = sink;
        let what = format!("sink {name}");
        let sdk = match client::sdk_config(cfg).await {
            Ok(s) => s,
            Err(e) => {
                r.fail(&what, e, "set `region` in the sink or AWS_REGION");
                continue;
            }
        };
        let region = client::region_of(&sdk).unwrap_or_default();
        r.ok(&format!("{what} region"), &region);
        check_route(&mut r, &what, &sdk, cfg.endpoint.as_deref()).await;
        match sdk.credentials_provider() {
            None => r.fail(&format!("{what} credentials"), "no credentials provider", "configure AWS credentials"),
            Some(p) => match tokio::time::timeout(Duration::from_secs(15), p.provide_credentials()).await {
                Ok(Ok(c)) => r.ok(
                    &format!("{what} credentials"),
                    format!("found, supplied by {}", provider_name(&c)),
                ),
                Ok(Err(e)) => r.fail(
                    &format!("{what} credentials"),
                    e,
                    "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, IRSA (AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), Pod Identity, or an EC2 instance role",
                ),
                Err(_) => r.fail(
                    &format!("{what} credentials"),
                    "timed out resolving credentials",
                    "off EC2 set AWS_EC2_METADATA_DISABLED=true and provide credentials another way",
                ),
            },
        }
        let need_imds = cfg.log_group.uses_instance_id() || cfg.log_stream.uses_instance_id();
        let host = client::host_info(&region, need_imds).await;
        let group = match cfg.log_group.bind_host(&host) {
            Ok(g) => g,
            Err(e) => {
                r.fail(
                    &format!("{what} log_group"),
                    e,
                    "fix the template or the host's name",
                );
                continue;
            }
        };
        let Some(group) = group.as_static().map(str::to_string) else {
            r.ok(
                &format!("{what} log_group"),
                format!(
                    "`{}` depends on events; not checked",
                    cfg.log_group.source()
                ),
            );
            continue;
        };
        let cw = client::client(&sdk);
        let described = cw
            .describe_log_groups()
            .log_group_name_prefix(&group)
            .send()
            .await;
        match described {
            Ok(out) => {
                let exists = out
                    .log_groups()
                    .iter()
                    .any(|g| g.log_group_name() == Some(group.as_str()));
                if exists {
                    r.ok(&format!("{what} log group"), format!("{group} exists"));
                } else if cfg.create_missing_group {
                    r.ok(
                        &format!("{what} log group"),
                        format!("{group} does not exist yet; logferry will create it"),
                    );
                } else {
                    r.fail(
                        &format!("{what} log group"),
                        format!("{group} does not exist and create_missing_group = false"),
                        "create the group, or set create_missing_group = true",
                    );
                }
            }
            Err(e) => {
                use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
                match e.code() {
                    Some("AccessDeniedException") => r.warn(
                        &format!("{what} log group"),
                        "not allowed to describe log groups (logs:DescribeLogGroups is not needed to ship; use --write to test PutLogEvents)",
                    ),
                    Some(code) => r.fail(
                        &format!("{what} endpoint"),
                        format!("CloudWatch answered {code}: {}", e.message().unwrap_or("")),
                        "check the credentials' account and the region",
                    ),
                    None => r.fail(
                        &format!("{what} endpoint"),
                        format!("cannot reach CloudWatch Logs: {}", crate::sink::retry::describe_error(&e)),
                        "check network access to logs.<region>.amazonaws.com (or `endpoint`), proxies (HTTPS_PROXY/NO_PROXY) and the region",
                    ),
                }
            }
        }
        if write {
            let stream = format!(
                "logferry-check-{}-{}",
                host.hostname,
                crate::event::now_ms()
            );
            let mut created = cw
                .create_log_stream()
                .log_group_name(&group)
                .log_stream_name(&stream)
                .send()
                .await;
            let missing_group = matches!(&created, Err(e) if {
                use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
                e.code() == Some("ResourceNotFoundException")
            });
            if missing_group && cfg.create_missing_group {
                // As logferry itself would on first delivery.
                let _ = cw.create_log_group().log_group_name(&group).send().await;
                created = cw
                    .create_log_stream()
                    .log_group_name(&group)
                    .log_stream_name(&stream)
                    .send()
                    .await;
            }
            let put = match created {
                Ok(_) => {
                    let ev = aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                        .timestamp(crate::event::now_ms())
                        .message("logferry check --write")
                        .build();
                    match ev {
                        Ok(ev) => cw
                            .put_log_events()
                            .log_group_name(&group)
                            .log_stream_name(&stream)
                            .log_events(ev)
                            .send()
                            .await
                            .map(|_| ())
                            .map_err(|e| crate::sink::retry::describe_error(&e)),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Err(e) => Err(crate::sink::retry::describe_error(&e)),
            };
            match put {
                Ok(()) => r.ok(&format!("{what} write"), format!("put one event in {group} / {stream}")),
                Err(e) => r.fail(
                    &format!("{what} write"),
                    e,
                    "grant logs:CreateLogStream and logs:PutLogEvents on the group (see deploy/iam), and make sure the group exists",
                ),
            }
        }
    }
    r.failures
}

/// `logferry tail`: prints what would be shipped until Ctrl-C (or end of stdin input).
pub async fn tail(config: &Config, only: Option<&str>) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let (tx, mut rx) = mpsc::channel(16);
    let mut tasks = tokio::task::JoinSet::new();
    for (name, source) in &config.sources {
        if only.is_some_and(|o| o != name) {
            continue;
        }
        let ctx = SourceContext {
            name: name.as_str().into(),
            outputs: vec![tx.clone()],
            shutdown: shutdown.clone(),
            stats: Arc::new(SourceStats::default()),
        };
        let span = source::span(name, SourceKind::of(source));
        match source {
            SourceConfig::Syslog(cfg) => {
                let listener = source::syslog::bind(cfg).await?;
                eprintln!("tail: {name} listening on {}", listener.local_addr());
                tasks.spawn(source::syslog::run(ctx, cfg.clone(), listener, None).instrument(span));
            }
            SourceConfig::Stdin(cfg) => {
                let mut cfg = cfg.clone();
                cfg.spool = None;
                tasks.spawn(source::stdin::run(ctx, cfg, None).instrument(span));
            }
            SourceConfig::Journald(cfg) => {
                let mut cfg = cfg.clone();
                cfg.dry_run = true;
                tasks.spawn(
                    source::journald::run(ctx, cfg, config.data_dir.clone()).instrument(span),
                );
            }
            SourceConfig::File(cfg) => {
                let mut cfg = cfg.clone();
                cfg.dry_run = true;
                tasks.spawn(source::file::run(ctx, cfg, config.data_dir.clone()).instrument(span));
            }
        }
    }
    drop(tx);
    if tasks.is_empty() {
        anyhow::bail!("no source named {:?}", only.unwrap_or(""));
    }
    let host = client::host_info("unknown", false).await;
    let mut sinks = Vec::new();
    for (_, sink) in &config.sinks {
        let SinkConfig::CloudWatchLogs(cfg) = sink;
        let group = cfg.log_group.bind_host(&host).map_err(anyhow::Error::msg)?;
        let stream = cfg
            .log_stream
            .bind_host(&host)
            .map_err(anyhow::Error::msg)?;
        sinks.push((cfg.inputs.clone(), cfg.format, group, stream));
    }
    let mut text = String::new();
    let (mut g, mut s) = (String::new(), String::new());
    loop {
        tokio::select! {
            input = rx.recv() => {
                let Some(input) = input else { break };
                let SinkInput::Events(chunk) = input else { continue };
                for event in chunk {
                    let Some((_, format, group, stream)) = sinks.iter().find(|(inputs, ..)| inputs.iter().any(|i| **i == *event.source)) else { continue };
                    format_event(&event, *format, &mut text);
                    group.render(&event, &mut g);
                    stream.render(&event, &mut s);
                    println!("{g} {s} {text}");
                    // Resolved as not delivered: nothing moves.
                    drop(event);
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_source(include: &str, exclude: &str) -> crate::config::FileSourceConfig {
        let text = format!(
            "[sources.f]\ntype = \"file\"\ninclude = [{include}]\nexclude = [{exclude}]\n\
             [sinks.cw]\ntype = \"cloudwatch_logs\"\ninputs = [\"f\"]\nlog_group = \"g\"\n"
        );
        let config = crate::config::parse(Path::new("t.toml"), &text, &|_| None).expect("config");
        match config.sources.into_iter().next() {
            Some((_, SourceConfig::File(f))) => f,
            other => panic!("not a file source: {other:?}"),
        }
    }

    #[test]
    fn check_finds_the_files_the_tailer_would_follow() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for f in [
            "a.log",
            "sub/b.log",
            "sub/deep/c.log",
            "sub/skip.log",
            "sub/d.txt",
        ] {
            let path = root.join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, "x\n").expect("write");
        }
        // A directory whose name matches the pattern is not a file to read.
        std::fs::create_dir_all(root.join("dir.log")).expect("mkdir");
        // `**` through a symlinked directory: the tailer's walk does not follow it (a loop
        // would never end), so `check` must not count what is behind it either.
        std::os::unix::fs::symlink(root.join("sub"), root.join("link")).expect("symlink");
        let cfg = file_source(
            &format!("\"{}/**/*.log\"", root.display()),
            &format!("\"{}/sub/skip.log\"", root.display()),
        );
        let (mut found, unreadable) = matching_files(&cfg).expect("patterns");
        found.sort();
        let tailer = Discovery::new(&cfg.tail.include, &cfg.tail.exclude).expect("discovery");
        let mut followed: Vec<PathBuf> = tailer
            .scan()
            .files
            .into_iter()
            .filter(|f| !f.excluded && f.path.is_file())
            .map(|f| f.path)
            .collect();
        followed.sort();
        assert_eq!(found, followed);
        let names: Vec<String> = found
            .iter()
            .map(|p| {
                p.strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string()
            })
            .collect();
        assert!(names.contains(&"a.log".to_string()), "{names:?}");
        assert!(names.contains(&"sub/deep/c.log".to_string()), "{names:?}");
        assert!(!names
            .iter()
            .any(|n| n.ends_with("skip.log") || n.ends_with(".txt")));
        assert!(unreadable.is_empty(), "{unreadable:?}");
    }
}
