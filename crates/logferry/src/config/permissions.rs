//! Credentials written in the file, and the file's permission bits.
//!
//! A config file readable by every user is only a leak when it holds a secret itself (not a
//! `${VAR}` reference); one writable by every user is always a problem (anyone could redirect
//! the logs or the credentials). [`load`](super::load) turns what this finds into warnings.

use std::path::Path;

use super::cloudwatch::SECRET_KEYS;

/// The sinks whose `auth` table holds a secret written in the file itself rather than only
/// `${VAR}` references: what makes a readable config file a leak. Looked at before expansion.
pub(super) fn sinks_with_inline_secrets(root: &toml::Value) -> Vec<String> {
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

/// The warning [`load`](super::load) gives about `path`'s permission bits, if any: world-writable (anyone
/// can redirect the logs or the credentials), or world-readable while holding inline secrets.
pub(super) fn permission_warning(
    path: &Path,
    mode: u32,
    secret_sinks: &[String],
) -> Option<String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
