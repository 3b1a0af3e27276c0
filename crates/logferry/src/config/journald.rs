//! `[sources.NAME] type = "journald"`: directories, where to start, and the entry filters.

use std::path::PathBuf;

use serde::Deserialize;

use super::diag::Ctx;
use super::SourceConfig;

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
pub(super) struct RawJournald {
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

pub(super) fn journald_config(
    ctx: &mut Ctx<'_>,
    name: &str,
    raw: RawJournald,
) -> Option<SourceConfig> {
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
