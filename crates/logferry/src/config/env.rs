//! `${VAR}` and `${VAR:-default}` in string values, expanded from the environment.
//!
//! Expansion runs on the parsed values, after the TOML syntax check, so an environment variable
//! can never break the syntax or shift the line numbers errors name. A reference inside a
//! sink's `auth` table is reported without quoting the text around it: that text may be a key.

use crate::template::first_placeholder;

/// Replaces `${VAR}` (and `${VAR:-default}`) in every string of `value`.
pub(super) fn expand_env(
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
pub(super) fn in_auth_table(path: &[String]) -> bool {
    path.len() >= 3 && path[0] == "sinks" && path[2] == "auth"
}

fn expand_str(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some((before, spec, after)) =
        first_placeholder(rest, "${").map_err(|()| format!("unterminated `${{` in `{s}`"))?
    {
        out.push_str(before);
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
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}
