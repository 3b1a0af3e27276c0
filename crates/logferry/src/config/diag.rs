//! Diagnostics: every problem in a config file as `FILE:LINE: key: what is wrong`.
//!
//! The text is parsed twice: by `toml` into values (what the rest of `config` reads), and by
//! `toml_edit` into a document that remembers where each key is. `Ctx` holds the second, so
//! a check anywhere can report against a dotted key path and get its line; it collects every
//! error instead of stopping at the first, which is what lets `logferry validate` list them all.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {key}: {message}", file.display())]
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

impl ConfigError {
    /// A problem with the file as a whole (it cannot be read, no file was given...).
    pub(super) fn whole_file(file: &Path, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            line: 1,
            key: key.into(),
            message: message.into(),
        }
    }
}

/// All problems found in a config file, one per line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", one_per_line(.0))]
pub struct ConfigErrors(pub Vec<ConfigError>);

fn one_per_line(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ConfigError::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Collects errors with their line numbers.
pub(super) struct Ctx<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    pub(super) doc: Option<toml_edit::ImDocument<&'a str>>,
    pub(super) errors: Vec<ConfigError>,
}

impl<'a> Ctx<'a> {
    pub(super) fn error(&mut self, path: &[&str], message: impl Into<String>) {
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

    /// `value`, or `default` when it is not set; a value outside `range` is recorded as an
    /// error (and returned all the same: the caller stops at the errors before using it).
    pub(super) fn in_range(
        &mut self,
        path: &[&str],
        value: Option<usize>,
        default: usize,
        range: RangeInclusive<usize>,
    ) -> usize {
        let value = value.unwrap_or(default);
        if !range.contains(&value) {
            self.error(
                path,
                format!("{value} is outside {}..={}", range.start(), range.end()),
            );
        }
        value
    }

    /// `value` where the setting applies; where it does not (`applies` false), a value that
    /// is set anyway is an error saying why (`reason`) and is dropped.
    pub(super) fn only_where<T>(
        &mut self,
        applies: bool,
        path: &[&str],
        value: Option<T>,
        reason: &str,
    ) -> Option<T> {
        if value.is_some() && !applies {
            self.error(path, reason);
            return None;
        }
        value
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
    pub(super) fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &[&str],
        value: toml::Value,
    ) -> Option<T> {
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

pub(super) fn offset_to_line(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
