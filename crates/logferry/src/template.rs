//! Log group and stream names from templates such as `/coreos/{cluster}/{hostname}`.
//!
//! Variables come in two kinds:
//! - *host* variables (`{hostname}`, `{instance_id}`, `{ip_address}`, `{region}`) are the same
//!   for every event; they are substituted once at start ([`Template::bind_host`]), and a name
//!   made only of them is checked against CloudWatch's naming rules then, so a bad name is a
//!   startup error rather than a stream of rejected requests.
//! - *event* variables (`{source}`, `{identifier}`, `{unit}`, `{pid}`, `{severity}`,
//!   `{facility}`, `{namespace}`, `{pod}`, `{container}`, or any field as `{field:NAME}`) are
//!   rendered per event. Their values come from input, so characters CloudWatch refuses are
//!   replaced by `_` (and an absent field renders as `unknown`) instead of failing the event.
//!
//! Literal text is checked when the config is loaded.

use crate::event::{Event, FACILITY_NAMES, SEVERITY_NAMES};

/// Which CloudWatch name a template produces; the rules differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateKind {
    /// `[.\-_/#A-Za-z0-9]{1,512}`, not starting with `aws/`.
    Group,
    /// 1..=512 characters, no `:` or `*`.
    Stream,
}

/// Values of host variables, found once at start.
#[derive(Debug, Clone, Default)]
pub struct HostInfo {
    /// The machine's host name.
    pub hostname: String,
    /// EC2 instance id, or the host name off EC2.
    pub instance_id: String,
    /// The host's primary IPv4 address.
    pub ip_address: String,
    /// The AWS region in use.
    pub region: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostVar {
    Hostname,
    InstanceId,
    IpAddress,
    Region,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EventVar {
    Source,
    Severity,
    Facility,
    Field(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Host(HostVar),
    Event(EventVar),
}

/// A parsed name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    kind: TemplateKind,
    parts: Vec<Part>,
}

const MAX_NAME: usize = 512;

fn group_char_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#')
}

fn stream_char_ok(c: char) -> bool {
    c != ':' && c != '*'
}

/// Checks a finished name against CloudWatch's rules.
pub fn check_name(name: &str, kind: TemplateKind) -> Result<(), String> {
    let n = name.chars().count();
    if n == 0 {
        return Err("is empty".into());
    }
    if n > MAX_NAME {
        return Err(format!(
            "is {n} characters long, CloudWatch allows at most 512"
        ));
    }
    match kind {
        TemplateKind::Group => {
            if let Some(c) = name.chars().find(|c| !group_char_ok(*c)) {
                return Err(format!(
                    "contains `{c}`; log group names may only contain A-Z a-z 0-9 . - _ / #"
                ));
            }
            if name.starts_with("aws/") {
                return Err("starts with `aws/`, which CloudWatch reserves".into());
            }
        }
        TemplateKind::Stream => {
            if let Some(c) = name.chars().find(|c| !stream_char_ok(*c)) {
                return Err(format!(
                    "contains `{c}`; log stream names may not contain : or *"
                ));
            }
        }
    }
    Ok(())
}

/// `text` cut at its first placeholder, `open` to the next `}`: the text before it, what stands
/// inside, and the text after it. `Ok(None)` without an `open`; `Err(())` when no `}` closes
/// it. (Templates use `{var}`, the config's environment references `${VAR}`.)
pub(crate) fn first_placeholder<'a>(
    text: &'a str,
    open: &str,
) -> Result<Option<(&'a str, &'a str, &'a str)>, ()> {
    let Some(at) = text.find(open) else {
        return Ok(None);
    };
    let after = &text[at + open.len()..];
    let close = after.find('}').ok_or(())?;
    Ok(Some((&text[..at], &after[..close], &after[close + 1..])))
}

impl Template {
    /// Parses `text`, checking variable names and literal characters.
    pub fn parse(text: &str, kind: TemplateKind) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some((before, var, after)) = first_placeholder(rest, "{")
            .map_err(|()| format!("`{text}`: `{{` without a closing `}}`"))?
        {
            literal.push_str(before);
            if !literal.is_empty() {
                parts.push(Part::Literal(std::mem::take(&mut literal)));
            }
            parts.push(parse_var(var).map_err(|e| format!("`{text}`: {e}"))?);
            rest = after;
        }
        if rest.contains('}') {
            return Err(format!("`{text}`: `}}` without an opening `{{`"));
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err("is empty".into());
        }
        for p in &parts {
            if let Part::Literal(l) = p {
                let ok = match kind {
                    TemplateKind::Group => l.chars().all(group_char_ok),
                    TemplateKind::Stream => l.chars().all(stream_char_ok),
                };
                if !ok {
                    // Reuse the full-name check for its message.
                    check_name(l, kind).map_err(|e| format!("`{text}` {e}"))?;
                }
            }
        }
        if kind == TemplateKind::Group {
            if let Some(Part::Literal(l)) = parts.first() {
                if l.starts_with("aws/") {
                    return Err(format!(
                        "`{text}` starts with `aws/`, which CloudWatch reserves"
                    ));
                }
            }
        }
        Ok(Template {
            source: text.to_string(),
            kind,
            parts,
        })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether `{instance_id}` (which may need EC2's metadata service) is used.
    pub fn uses_instance_id(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Host(HostVar::InstanceId)))
    }

    /// Substitutes host variables. A template left with no event variable must then be a valid
    /// name: otherwise the error names the template and the value it produced.
    pub fn bind_host(&self, host: &HostInfo) -> Result<Template, String> {
        let mut parts: Vec<Part> = Vec::new();
        for p in &self.parts {
            let text = match p {
                Part::Host(HostVar::Hostname) => host.hostname.clone(),
                Part::Host(HostVar::InstanceId) => host.instance_id.clone(),
                Part::Host(HostVar::IpAddress) => host.ip_address.clone(),
                Part::Host(HostVar::Region) => host.region.clone(),
                Part::Literal(l) => l.clone(),
                other => {
                    parts.push(other.clone());
                    continue;
                }
            };
            match parts.last_mut() {
                Some(Part::Literal(l)) => l.push_str(&text),
                _ => parts.push(Part::Literal(text)),
            }
        }
        let bound = Template {
            source: self.source.clone(),
            kind: self.kind,
            parts,
        };
        if let Some(name) = bound.as_static() {
            check_name(name, self.kind).map_err(|e| {
                format!("template `{}` renders to `{name}`, which {e}", self.source)
            })?;
        }
        Ok(bound)
    }

    /// The name when it does not depend on the event.
    pub fn as_static(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Literal(l)] => Some(l),
            _ => None,
        }
    }

    /// Renders the name for `event` into `out` (cleared first), replacing characters CloudWatch
    /// refuses with `_` and keeping at most 512 characters.
    pub fn render(&self, event: &Event, out: &mut String) {
        out.clear();
        for p in &self.parts {
            match p {
                Part::Literal(l) => out.push_str(l),
                Part::Host(_) => out.push_str("unknown"), // unreachable after bind_host
                Part::Event(EventVar::Source) => push_clean(out, &event.source, self.kind),
                Part::Event(EventVar::Severity) => match event.severity() {
                    Some(s) => out.push_str(SEVERITY_NAMES[usize::from(s & 7)]),
                    None => out.push_str("unknown"),
                },
                Part::Event(EventVar::Facility) => {
                    match event
                        .facility()
                        .and_then(|f| FACILITY_NAMES.get(usize::from(f)))
                    {
                        Some(name) => out.push_str(name),
                        None => out.push_str("unknown"),
                    }
                }
                Part::Event(EventVar::Field(name)) => match event.field(name) {
                    Some(v) if !v.is_empty() => {
                        push_clean(out, &String::from_utf8_lossy(v), self.kind)
                    }
                    _ => out.push_str("unknown"),
                },
            }
        }
        if out.chars().count() > MAX_NAME {
            let cut = out
                .char_indices()
                .nth(MAX_NAME)
                .map(|(i, _)| i)
                .unwrap_or(out.len());
            out.truncate(cut);
        }
        if self.kind == TemplateKind::Group && out.starts_with("aws/") {
            out.replace_range(0..4, "aws_");
        }
    }
}

fn push_clean(out: &mut String, value: &str, kind: TemplateKind) {
    for c in value.chars() {
        let ok = match kind {
            TemplateKind::Group => group_char_ok(c),
            TemplateKind::Stream => stream_char_ok(c) && !c.is_control(),
        };
        out.push(if ok { c } else { '_' });
    }
}

const EVENT_FIELDS: [&str; 9] = [
    "identifier",
    "unit",
    "pid",
    "msgid",
    "namespace",
    "pod",
    "container",
    "host",
    "peer",
];

fn parse_var(var: &str) -> Result<Part, String> {
    Ok(match var {
        "hostname" => Part::Host(HostVar::Hostname),
        "instance_id" => Part::Host(HostVar::InstanceId),
        "ip_address" => Part::Host(HostVar::IpAddress),
        "region" => Part::Host(HostVar::Region),
        "source" => Part::Event(EventVar::Source),
        "severity" => Part::Event(EventVar::Severity),
        "facility" => Part::Event(EventVar::Facility),
        // The event's own host name, as opposed to the shipping host's `{hostname}`.
        "host" => Part::Event(EventVar::Field(crate::event::names::HOSTNAME.to_string())),
        v if EVENT_FIELDS.contains(&v) => Part::Event(EventVar::Field(v.to_string())),
        v => match v.strip_prefix("field:") {
            Some(name) if !name.is_empty() => Part::Event(EventVar::Field(name.to_string())),
            _ => {
                return Err(format!(
                    "unknown variable `{{{v}}}`; known: hostname, instance_id, ip_address, region, \
                     source, severity, facility, {}, or field:NAME",
                    EVENT_FIELDS.join(", ")
                ))
            }
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Ack;
    use crate::event::{names, FieldName};
    use bytes::Bytes;

    fn host() -> HostInfo {
        HostInfo {
            hostname: "node-1".into(),
            instance_id: "i-0abc".into(),
            ip_address: "10.0.0.5".into(),
            region: "eu-west-1".into(),
        }
    }

    fn event(ident: &str) -> Event {
        Event {
            timestamp_ms: 0,
            message: Bytes::from_static(b"m"),
            priority: Some(3 * 8 + 6),
            common: None,
            fields: vec![(
                FieldName::Static(names::IDENTIFIER),
                Bytes::copy_from_slice(ident.as_bytes()),
            )],
            source: "sys".into(),
            truncated_bytes: 0,
            ack: Ack::none(),
            origin: 0,
            header: None,
            merged: None,
        }
    }

    #[test]
    fn host_variables_bind_to_a_static_name() {
        let t = Template::parse("/coreos/{region}/{hostname}", TemplateKind::Group).expect("parse");
        let b = t.bind_host(&host()).expect("bind");
        assert_eq!(b.as_static(), Some("/coreos/eu-west-1/node-1"));
    }

    #[test]
    fn bad_static_names_are_startup_errors() {
        let t = Template::parse("{hostname}", TemplateKind::Group).expect("parse");
        let mut h = host();
        h.hostname = "bad host".into();
        let e = t.bind_host(&h).expect_err("space refused");
        assert!(
            e.contains("template `{hostname}` renders to `bad host`"),
            "{e}"
        );
        assert!(Template::parse("a:b", TemplateKind::Stream).is_err());
        assert!(Template::parse("aws/x", TemplateKind::Group).is_err());
        assert!(Template::parse("{nope}", TemplateKind::Group).is_err());
        assert!(Template::parse("{open", TemplateKind::Group).is_err());
        assert!(Template::parse("x".repeat(513).as_str(), TemplateKind::Stream).is_ok());
        let long = Template::parse(&"x".repeat(513), TemplateKind::Stream).expect("parse");
        assert!(long.bind_host(&host()).is_err());
    }

    #[test]
    fn event_variables_are_rendered_and_cleaned() {
        let t = Template::parse(
            "{instance_id}/{identifier}-{severity}",
            TemplateKind::Stream,
        )
        .expect("parse")
        .bind_host(&host())
        .expect("bind");
        assert!(t.as_static().is_none());
        let mut out = String::new();
        t.render(&event("kube:let*"), &mut out);
        assert_eq!(out, "i-0abc/kube_let_-info");
        let g = Template::parse("/k/{identifier}", TemplateKind::Group).expect("parse");
        g.render(&event("a b"), &mut out);
        assert_eq!(out, "/k/a_b");
        g.render(&event(""), &mut out);
        assert_eq!(out, "/k/unknown");
    }
}
