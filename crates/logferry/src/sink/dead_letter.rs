//! The dead-letter file: where events CloudWatch will never accept go, with the reason.
//!
//! An event rejected as too old, too new or expired, or isolated as the cause of an
//! `InvalidParameterException`, is written here as one JSON line
//! (`{"time":..,"reason":..,"log_group":..,"log_stream":..,"timestamp":..,"message":..}`) and
//! fsynced *before* its acknowledgement says "dead-lettered", so a source may move past it
//! only once it is safe on disk. If the file cannot be written (disk full, read-only, I/O
//! error), the sink keeps the events unacknowledged and writes them again until it succeeds
//! (`request::dead_letter`); a write cut short is truncated away, so a retry leaves no torn
//! line and no record twice.

use std::fs::File;

use logferry_private_files as private_files;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::format::rfc3339_ms;

/// Why an event was dead-lettered. The names are the metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Older than 14 days (CloudWatch `tooOldLogEventEndIndex`).
    TooOld,
    /// More than 2 hours in the future (`tooNewLogEventStartIndex`).
    TooNew,
    /// Older than the group's retention (`expiredLogEventEndIndex`).
    Expired,
    /// CloudWatch answered InvalidParameterException for this event alone.
    InvalidParameter,
}

impl Reason {
    /// The label used in logs, metrics and the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooOld => "too_old",
            Reason::TooNew => "too_new",
            Reason::Expired => "expired",
            Reason::InvalidParameter => "invalid_parameter",
        }
    }
}

/// One dead-lettered event.
#[derive(Debug)]
pub struct Record<'a> {
    /// Why.
    pub reason: Reason,
    /// Extra detail (the service's message), if any.
    pub detail: Option<&'a str>,
    /// Where it was going.
    pub log_group: &'a str,
    /// Where it was going.
    pub log_stream: &'a str,
    /// The event's timestamp.
    pub timestamp_ms: i64,
    /// The text that was to be sent.
    pub message: &'a str,
}

/// An append-only JSON-lines file shared by a sink's request tasks.
#[derive(Debug, Clone)]
pub struct DeadLetterFile {
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
}

impl DeadLetterFile {
    /// A dead-letter file at `path`, created (with its directory) on first use.
    pub fn new(path: PathBuf) -> Self {
        DeadLetterFile {
            path,
            file: Arc::new(Mutex::new(None)),
        }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `records` and fsyncs. Blocking: call from a blocking thread.
    pub fn write(&self, records: &[Record<'_>]) -> std::io::Result<()> {
        let mut buf = String::new();
        for r in records {
            buf.push_str("{\"time\":\"");
            rfc3339_ms(crate::event::now_ms(), &mut buf);
            buf.push_str("\",\"reason\":\"");
            buf.push_str(r.reason.as_str());
            buf.push('"');
            let mut field = |name: &str, value: &str| {
                buf.push_str(",\"");
                buf.push_str(name);
                buf.push_str("\":");
                buf.push_str(&serde_json::Value::from(value).to_string());
            };
            if let Some(d) = r.detail {
                field("detail", d);
            }
            field("log_group", r.log_group);
            field("log_stream", r.log_stream);
            buf.push_str(&format!(",\"timestamp\":{}", r.timestamp_ms));
            buf.push_str(",\"message\":");
            buf.push_str(&serde_json::Value::from(r.message).to_string());
            buf.push_str("}\n");
        }
        let mut guard = self
            .file
            .lock()
            .map_err(|_| std::io::Error::other("dead-letter lock poisoned"))?;
        if guard.is_none() {
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                private_files::create_dir_all(dir)?;
            }
            // 0600 whatever the umask; a link planted in its place is refused, not followed.
            *guard = Some(private_files::open_append(&self.path)?);
        }
        let file = guard
            .as_mut()
            .ok_or_else(|| std::io::Error::other("dead-letter file not open"))?;
        let len = file.metadata()?.len();
        let result = file
            .write_all(buf.as_bytes())
            .and_then(|_| file.sync_data());
        if result.is_err() {
            // A write cut short (ENOSPC halfway) leaves no torn line behind: the records are
            // written again, whole, on the next try.
            let _ = file.set_len(len);
            // Reopen next time: the handle may be in a bad state (e.g. after ENOSPC).
            *guard = None;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_json_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dl = DeadLetterFile::new(dir.path().join("sub/dl.jsonl"));
        let rec = |reason, message| Record {
            reason,
            detail: None,
            log_group: "g",
            log_stream: "s\"q",
            timestamp_ms: 5,
            message,
        };
        dl.write(&[rec(Reason::TooOld, "a\nb"), rec(Reason::TooNew, "c")])
            .expect("write");
        dl.write(&[rec(Reason::Expired, "d")]).expect("write");
        let text = std::fs::read_to_string(dl.path()).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["reason"], "too_old");
        assert_eq!(lines[0]["message"], "a\nb");
        assert_eq!(lines[0]["log_stream"], "s\"q");
        assert_eq!(lines[2]["reason"], "expired");
    }
}
