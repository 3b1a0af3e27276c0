//! The `[sinks.NAME]` table of a test config: the CloudWatch Logs sink of every test, written
//! once. Keys a test does not set keep the values tests share: the real SDK to a local
//! endpoint (moto, or `cwl-proxy` in front of it) in `us-east-1`, requests sent after 200 ms.

use std::fmt;

/// A `cloudwatch_logs` sink table; its `Display` is the TOML.
#[derive(Debug, Clone)]
pub struct CwSink {
    name: String,
    inputs: Vec<String>,
    group: String,
    stream: String,
    endpoint: String,
    batch_timeout: String,
    /// Further `key = value` lines, the values already TOML.
    more: Vec<String>,
}

/// `[sinks.cw]` reading `inputs`, writing to `group`/`stream` (templates as the config takes
/// them: `{hostname}`, `{namespace}`) at `endpoint`.
pub fn cw_sink(inputs: &[&str], group: &str, stream: &str, endpoint: &str) -> CwSink {
    CwSink {
        name: "cw".into(),
        inputs: inputs.iter().map(|i| i.to_string()).collect(),
        group: group.into(),
        stream: stream.into(),
        endpoint: endpoint.into(),
        batch_timeout: "200ms".into(),
        more: Vec::new(),
    }
}

/// A whole test config: the harness's `data_dir`, a 20 s shutdown grace, `sources` (TOML
/// tables) and `sink`.
pub fn pipeline(sources: &str, sink: &CwSink) -> String {
    pipeline_with("shutdown_grace = \"20s\"", sources, sink)
}

/// [`pipeline`] with the top-level `settings` (a `shutdown_grace` among them) in place of the
/// 20 s grace.
pub fn pipeline_with(settings: &str, sources: &str, sink: &CwSink) -> String {
    format!("data_dir = \"@DATA@\"\n{settings}\n{sources}\n\n{sink}")
}

/// `[sources.NAME]` of type `kind` with `lines` (TOML, may be empty).
pub fn source(name: &str, kind: &str, lines: &str) -> String {
    format!("[sources.{name}]\ntype = \"{kind}\"\n{lines}\n")
}

/// `[sources.NAME]`, a syslog listener on 127.0.0.1:`port` over `transport` (`tcp`, `udp`)
/// with `extra` lines (TOML, may be empty).
pub fn syslog_source(name: &str, transport: &str, port: u16, extra: &str) -> String {
    let address = format!("address = \"{transport}://127.0.0.1:{port}\"");
    source(name, "syslog", &format!("{address}\n{extra}"))
}

impl CwSink {
    /// `[sinks.NAME]` instead of `[sinks.cw]`.
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// `format = "..."` (`message`, `json`, `short`).
    pub fn format(self, format: &str) -> Self {
        self.string("format", format)
    }

    pub fn batch_timeout(mut self, duration: &str) -> Self {
        self.batch_timeout = duration.into();
        self
    }

    pub fn max_backoff(self, duration: &str) -> Self {
        self.string("max_backoff", duration)
    }

    /// `key = "value"`.
    pub fn string(self, key: &str, value: &str) -> Self {
        self.line(&format!("{key} = \"{value}\""))
    }

    /// A line as it is (`max_batch_events = 200`, a whole `[table]`, or nothing).
    pub fn line(mut self, line: &str) -> Self {
        self.more.push(line.into());
        self
    }
}

impl fmt::Display for CwSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inputs: Vec<String> = self.inputs.iter().map(|i| format!("\"{i}\"")).collect();
        writeln!(f, "[sinks.{}]", self.name)?;
        writeln!(f, "type = \"cloudwatch_logs\"")?;
        writeln!(f, "inputs = [{}]", inputs.join(", "))?;
        writeln!(f, "log_group = \"{}\"", self.group)?;
        writeln!(f, "log_stream = \"{}\"", self.stream)?;
        writeln!(f, "endpoint = \"{}\"", self.endpoint)?;
        writeln!(f, "region = \"us-east-1\"")?;
        writeln!(f, "batch_timeout = \"{}\"", self.batch_timeout)?;
        for line in &self.more {
            writeln!(f, "{line}")?;
        }
        Ok(())
    }
}
