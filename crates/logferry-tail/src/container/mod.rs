//! Kubernetes container logs: the two on-disk formats the kubelet's runtimes write, the
//! rejoining of lines the runtime split, and the pod a log file belongs to (from its path).
//!
//! # CRI (containerd, CRI-O)
//!
//! One line per record: `<time> <stream> <tags> <message>`, fields separated by one space
//! (reference: the kubelet's reader, `parseCRILog` in `pkg/kubelet/kuberuntime/logs/logs.go`,
//! and the tag constants `LogTagPartial`/`LogTagFull`/`LogTagDelimiter` of `cri-api`):
//!
//! - `time`: RFC 3339 with nanoseconds (Go's `RFC3339Nano`, trailing zeros of the fraction
//!   trimmed, so the fraction has any length or is absent), `Z` or a `±hh:mm` offset.
//! - `stream`: `stdout` or `stderr`.
//! - `tags`: colon-separated; the first is `F` (the message ends a line) or `P` (the runtime
//!   split a long line: more parts of it follow). Later tags are ignored (forward compatible).
//! - `message`: everything after the space that follows the tags, spaces included; possibly
//!   empty (the space may then be missing too). It is borrowed, never copied.
//!
//! `2024-01-02T03:04:05.123456789Z stdout F hello`
//!
//! # Docker json-file
//!
//! One JSON object per line (reference: moby `daemon/logger/jsonfilelog/jsonlog`):
//! `{"log":"hello\n","stream":"stdout","time":"2024-01-02T03:04:05.123456789Z"}`, keys in any
//! order, unknown keys (`attrs`) ignored. `log` is JSON-unescaped. Docker splits lines longer
//! than 16 KiB into several records; only the last one's `log` ends with `\n`, so a record
//! without it is partial. The trailing `\n` is not part of the message.
//!
//! # Rejoining ([`PartialJoiner`])
//!
//! Partial records of one stream are concatenated up to the next full record of that stream;
//! stdout and stderr are joined separately because their records interleave in one file. The
//! joined event keeps the first part's timestamp. While parts are held,
//! [`PartialJoiner::held_from`] is the offset where the oldest held first part starts: a saved
//! position beyond it would skip those parts after a restart.
//!
//! # Pod metadata from the path
//!
//! - `.../pods/<namespace>_<pod>_<pod uid>/<container>/<restart count>.log`, and the rotated
//!   `<n>.log.<YYYYMMDD-hhmmss>` and `<n>.log.<YYYYMMDD-hhmmss>.gz` (the kubelet's
//!   `BuildPodLogsDirectory` / `BuildContainerLogsDirectory`, and its log rotation). Namespaces
//!   and pod names are DNS names and cannot contain `_`; the uid is a UUID (or, for static
//!   pods, a hash) without `_`.
//! - `.../containers/<pod>_<namespace>_<container>-<64 hex digit container id>.log` (the
//!   kubelet's symlinks, `BuildContainerLogsPath`); the pod uid is not in that name.
//!
//! Only the last path components are looked at, so any root works.

use std::borrow::Cow;
use std::path::Path;

use bytes::Bytes;

use logferry_time::parse_rfc3339_ms;

use crate::multiline::append_capped;

/// The stream a container wrote a record to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn from_bytes(s: &[u8]) -> Option<Self> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }

    fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        }
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLine<'a> {
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub stream: Stream,
    /// The runtime split a longer line: more parts follow.
    pub partial: bool,
    /// Borrowed from the line for CRI; owned (unescaped) for Docker json-file.
    pub message: Cow<'a, [u8]>,
}

/// What is wrong with a line that is not in the expected format. Offending field values are
/// quoted (lossily, at most 64 bytes) so the log of the error is useful on its own.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    #[error("container log line is empty")]
    Empty,
    #[error("CRI line: invalid timestamp {0:?} (expected RFC 3339, e.g. 2024-01-02T03:04:05.123456789Z)")]
    CriTimestamp(String),
    #[error("CRI line: missing stream field")]
    CriMissingStream,
    #[error("CRI line: unknown stream {0:?} (expected stdout or stderr)")]
    CriStream(String),
    #[error("CRI line: missing tag field (F or P)")]
    CriMissingTag,
    #[error("CRI line: unknown tag {0:?} (expected F or P)")]
    CriTag(String),
    #[error("Docker json-file line: invalid JSON: {0}")]
    DockerJson(String),
    #[error("Docker json-file line: missing {0:?} field")]
    DockerMissingField(&'static str),
    #[error("Docker json-file line: unknown stream {0:?} (expected stdout or stderr)")]
    DockerStream(String),
    #[error("Docker json-file line: invalid time {0:?} (expected RFC 3339)")]
    DockerTime(String),
}

/// A field value for an error message: lossy UTF-8, at most 64 bytes of it.
fn quote(bytes: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).into_owned();
    if bytes.len() > 64 {
        s.push('…');
    }
    s
}

/// Splits at the first space: the field and what follows the space (`None` if no space).
fn field(s: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b' ', s) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    }
}

/// Parses one CRI record (without its `\n`; a trailing `\n` is tolerated and not part of the
/// message).
pub fn parse_cri(line: &[u8]) -> Result<ContainerLine<'_>, FormatError> {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    if line.is_empty() {
        return Err(FormatError::Empty);
    }
    let (time, rest) = field(line);
    let timestamp_ms =
        parse_rfc3339_ms(time).ok_or_else(|| FormatError::CriTimestamp(quote(time)))?;
    let (stream, rest) = match rest {
        Some(rest) => field(rest),
        None => return Err(FormatError::CriMissingStream),
    };
    if stream.is_empty() {
        return Err(FormatError::CriMissingStream);
    }
    let stream = Stream::from_bytes(stream).ok_or_else(|| FormatError::CriStream(quote(stream)))?;
    let (tags, message) = match rest {
        Some(rest) => field(rest),
        None => return Err(FormatError::CriMissingTag),
    };
    if tags.is_empty() {
        return Err(FormatError::CriMissingTag);
    }
    let first_tag = tags.split(|&b| b == b':').next().unwrap_or(tags);
    let partial = match first_tag {
        b"F" => false,
        b"P" => true,
        _ => return Err(FormatError::CriTag(quote(tags))),
    };
    Ok(ContainerLine {
        timestamp_ms,
        stream,
        partial,
        message: Cow::Borrowed(message.unwrap_or_default()),
    })
}

/// The fields of a json-file record we use. `Option` so that a missing field gets our own
/// error, naming it.
#[derive(serde::Deserialize)]
struct DockerRecord<'a> {
    #[serde(borrow)]
    log: Option<Text<'a>>,
    #[serde(borrow)]
    stream: Option<Text<'a>>,
    #[serde(borrow)]
    time: Option<Text<'a>>,
}

/// A JSON string borrowed from the line when it has no escapes. serde borrows a `Cow` only
/// when it is the field itself, not inside an `Option`: hence the newtype.
#[derive(serde::Deserialize)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// Parses one Docker json-file record.
pub fn parse_docker_json(line: &[u8]) -> Result<ContainerLine<'_>, FormatError> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return Err(FormatError::Empty);
    }
    let record: DockerRecord<'_> =
        serde_json::from_slice(line).map_err(|e| FormatError::DockerJson(e.to_string()))?;
    let log = record.log.ok_or(FormatError::DockerMissingField("log"))?.0;
    let stream = record
        .stream
        .ok_or(FormatError::DockerMissingField("stream"))?
        .0;
    let time = record
        .time
        .ok_or(FormatError::DockerMissingField("time"))?
        .0;
    let stream = Stream::from_bytes(stream.as_bytes())
        .ok_or_else(|| FormatError::DockerStream(quote(stream.as_bytes())))?;
    let timestamp_ms = parse_rfc3339_ms(time.as_bytes())
        .ok_or_else(|| FormatError::DockerTime(quote(time.as_bytes())))?;
    let partial = !log.ends_with('\n');
    let message = match log {
        Cow::Borrowed(s) => Cow::Borrowed(s.strip_suffix('\n').unwrap_or(s).as_bytes()),
        Cow::Owned(mut s) => {
            if !partial {
                s.pop();
            }
            Cow::Owned(s.into_bytes())
        }
    };
    Ok(ContainerLine {
        timestamp_ms,
        stream,
        partial,
        message,
    })
}

/// Docker json-file if the line starts with `{` (a CRI line starts with a digit), else CRI.
pub fn parse_auto(line: &[u8]) -> Result<ContainerLine<'_>, FormatError> {
    match line.first() {
        Some(b'{') => parse_docker_json(line),
        _ => parse_cri(line),
    }
}

/// The pod and container a log file belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub pod: String,
    /// Empty for `/var/log/containers/` names, which do not carry it.
    pub pod_uid: String,
    pub container: String,
}

/// Reads the pod and container from a kubelet log path (see the module doc for the layouts).
/// `None` if the path matches neither.
pub fn pod_info_from_path(path: &Path) -> Option<PodInfo> {
    let p = pod_path(path)?;
    Some(PodInfo {
        namespace: p.namespace.to_owned(),
        pod: p.pod.to_owned(),
        pod_uid: p.pod_uid.to_owned(),
        container: p.container.to_owned(),
    })
}

/// The namespace a kubelet log path names, borrowed from the path (no allocation: discovery
/// asks it of every matched file at every rescan).
pub fn namespace_from_path(path: &Path) -> Option<&str> {
    pod_path(path).map(|p| p.namespace)
}

/// [`PodInfo`], borrowed from the path.
struct PodPath<'a> {
    namespace: &'a str,
    pod: &'a str,
    pod_uid: &'a str,
    container: &'a str,
}

fn pod_path(path: &Path) -> Option<PodPath<'_>> {
    let file = path.file_name()?.to_str()?;
    from_containers_name(file).or_else(|| from_pods_layout(path, file))
}

/// `<pod>_<namespace>_<container>-<64 hex>.log`
fn from_containers_name(file: &str) -> Option<PodPath<'_>> {
    let stem = file.strip_suffix(".log")?;
    let split = stem.len().checked_sub(64)?;
    let (head, id) = (stem.get(..split)?, stem.get(split..)?);
    if !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut parts = head.strip_suffix('-')?.split('_');
    let (pod, namespace, container) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [pod, namespace, container].iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(PodPath {
        namespace,
        pod,
        pod_uid: "",
        container,
    })
}

/// `<namespace>_<pod>_<uid>/<container>/<n>.log[.<rotation suffix>]`
fn from_pods_layout<'a>(path: &'a Path, file: &str) -> Option<PodPath<'a>> {
    let after_digits = file.trim_start_matches(|c: char| c.is_ascii_digit());
    if after_digits.len() == file.len() {
        return None;
    }
    let suffix = after_digits.strip_prefix(".log")?;
    if !(suffix.is_empty() || suffix.starts_with('.')) {
        return None;
    }
    let container_dir = path.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
    let mut parts = pod_dir.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some()
        || [namespace, pod, uid, container]
            .iter()
            .any(|p| p.is_empty())
    {
        return None;
    }
    Some(PodPath {
        namespace,
        pod,
        pod_uid: uid,
        container,
    })
}

/// `include_namespaces` / `exclude_namespaces`: globs matched against the namespace a log
/// path names ([`namespace_from_path`]), so a pod's files are kept or left alone without
/// asking the Kubernetes API. Discovery treats a file this filter refuses like one an exclude
/// pattern matches: it is never opened.
#[derive(Debug, Clone, Default)]
pub struct NamespaceFilter {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl NamespaceFilter {
    /// Compiles the globs; the first that does not parse is the error (`pattern`, reason).
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, (String, String)> {
        let compile = |raw: &[String]| {
            raw.iter()
                .map(|p| glob::Pattern::new(p).map_err(|e| (p.clone(), e.to_string())))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(NamespaceFilter {
            include: compile(include)?,
            exclude: compile(exclude)?,
        })
    }

    /// Whether the file at `path` is read: its namespace matches an include glob (when there
    /// are any) and no exclude glob. A path that names no namespace is refused once include
    /// globs are given (it cannot be shown to be in one of them) and kept otherwise.
    pub fn admits(&self, path: &Path) -> bool {
        if self.include.is_empty() && self.exclude.is_empty() {
            return true;
        }
        match namespace_from_path(path) {
            Some(ns) => {
                (self.include.is_empty() || self.include.iter().any(|g| g.matches(ns)))
                    && !self.exclude.iter().any(|g| g.matches(ns))
            }
            None => self.include.is_empty(),
        }
    }
}

/// A rejoined record: a full line, or partial parts and the full part that ended them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The first part's timestamp.
    pub timestamp_ms: i64,
    pub stream: Stream,
    /// At most `max_bytes` long.
    pub message: Bytes,
    /// The file offset just past the last part.
    pub end_offset: u64,
    /// Bytes of the parts that were not kept because of `max_bytes`.
    pub truncated_bytes: u64,
    /// How many records were joined.
    pub parts: usize,
}

struct Held {
    timestamp_ms: i64,
    message: Vec<u8>,
    capped: bool,
    truncated_bytes: u64,
    parts: usize,
    start_offset: u64,
    end_offset: u64,
}

impl Held {
    fn finish(self, stream: Stream) -> Joined {
        Joined {
            timestamp_ms: self.timestamp_ms,
            stream,
            message: Bytes::from(self.message),
            end_offset: self.end_offset,
            truncated_bytes: self.truncated_bytes,
            parts: self.parts,
        }
    }
}

/// `part` as a slice of `source` when it lies within it (`None` otherwise).
fn slice_within(source: &Bytes, part: &[u8]) -> Option<Bytes> {
    if part.is_empty() {
        return Some(Bytes::new());
    }
    let start = (part.as_ptr() as usize).checked_sub(source.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= source.len()).then(|| source.slice(start..end))
}

/// Rejoins the partial records of one file, per stream.
pub struct PartialJoiner {
    max_bytes: usize,
    /// Indexed by [`Stream::index`].
    held: [Option<Held>; 2],
}

impl PartialJoiner {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            held: [None, None],
        }
    }

    /// Feeds one parsed record that occupies `start_offset..end_offset` of the file. A full
    /// record comes back joined with the parts of its stream held before it; a partial one is
    /// held. A message keeps its first `max_bytes` bytes; the rest is counted in
    /// [`Joined::truncated_bytes`] and never held.
    pub fn push(
        &mut self,
        line: ContainerLine<'_>,
        start_offset: u64,
        end_offset: u64,
    ) -> Option<Joined> {
        let max_bytes = self.max_bytes;
        let stream = line.stream;
        let slot = &mut self.held[stream.index()];
        match slot {
            Some(held) => {
                held.truncated_bytes += append_capped(
                    &mut held.message,
                    &mut held.capped,
                    max_bytes,
                    b"",
                    &line.message,
                );
                held.parts += 1;
                held.end_offset = end_offset;
            }
            None => {
                let mut capped = false;
                let (message, truncated_bytes) = match line.message {
                    // An owned message that fits is moved, not copied.
                    Cow::Owned(v) if v.len() <= max_bytes => (v, 0),
                    message => {
                        let mut v = Vec::new();
                        let cut = append_capped(&mut v, &mut capped, max_bytes, b"", &message);
                        (v, cut)
                    }
                };
                *slot = Some(Held {
                    timestamp_ms: line.timestamp_ms,
                    message,
                    capped,
                    truncated_bytes,
                    parts: 1,
                    start_offset,
                    end_offset,
                });
            }
        }
        if line.partial {
            return None;
        }
        slot.take().map(|held| held.finish(stream))
    }

    /// [`push`](Self::push) for a record parsed from `source`: a full record with nothing of
    /// its stream held (nearly every line) keeps its message as a slice of `source` instead
    /// of a copy: no allocation and no copy per line.
    pub fn push_from(
        &mut self,
        source: &Bytes,
        line: ContainerLine<'_>,
        start_offset: u64,
        end_offset: u64,
    ) -> Option<Joined> {
        if !line.partial && self.held[line.stream.index()].is_none() {
            if let Cow::Borrowed(m) = &line.message {
                if m.len() <= self.max_bytes {
                    if let Some(message) = slice_within(source, m) {
                        return Some(Joined {
                            timestamp_ms: line.timestamp_ms,
                            stream: line.stream,
                            message,
                            end_offset,
                            truncated_bytes: 0,
                            parts: 1,
                        });
                    }
                }
            }
        }
        self.push(line, start_offset, end_offset)
    }

    /// Emits everything held (the file is closed, or the parts waited too long), oldest first.
    pub fn flush(&mut self) -> Vec<Joined> {
        let mut held: Vec<(Stream, Held)> = [Stream::Stdout, Stream::Stderr]
            .into_iter()
            .filter_map(|s| self.held[s.index()].take().map(|h| (s, h)))
            .collect();
        held.sort_by_key(|(_, h)| h.start_offset);
        held.into_iter().map(|(s, h)| h.finish(s)).collect()
    }

    /// The lowest offset at which a held first part starts: the caller may save only
    /// positions `<=` this while parts are held. `None` when nothing is held.
    pub fn held_from(&self) -> Option<u64> {
        self.held.iter().flatten().map(|h| h.start_offset).min()
    }
}

#[cfg(test)]
mod tests;
