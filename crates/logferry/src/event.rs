//! The event: what every source produces and every sink consumes.
//!
//! An event is kept close to the bytes it came from: the message and field values are
//! [`Bytes`] slices of the buffer the source read, so building an event copies nothing. Text is
//! decoded (lossily, invalid UTF-8 becoming U+FFFD) only once, when the sink formats the line it
//! sends.
//!
//! Well-known field names (`hostname`, `identifier`, `pid`, `unit`, ...) are shared constants so
//! sources and templates agree on them and no event allocates a name.

use std::sync::Arc;

use bytes::Bytes;

use crate::ack::Ack;

/// Names of the fields sources fill in and templates (`{identifier}`, `{unit}`, `{pod}`) read.
pub mod names {
    /// The host the event was logged on (syslog HOSTNAME, journal `_HOSTNAME`).
    pub const HOSTNAME: &str = "hostname";
    /// Syslog APP-NAME / TAG, journal `SYSLOG_IDENTIFIER`.
    pub const IDENTIFIER: &str = "identifier";
    /// Process id (syslog PROCID, journal `_PID`).
    pub const PID: &str = "pid";
    /// RFC 5424 MSGID.
    pub const MSGID: &str = "msgid";
    /// RFC 5424 STRUCTURED-DATA, as sent.
    pub const STRUCTURED_DATA: &str = "structured_data";
    /// The network peer (or socket path) a syslog frame came from.
    pub const PEER: &str = "peer";
    /// The systemd unit (journal `_SYSTEMD_UNIT`).
    pub const UNIT: &str = "unit";
    /// The path a file source read the line from.
    pub const FILE: &str = "file";
    /// Kubernetes namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Pod name.
    pub const POD: &str = "pod";
    /// Pod UID.
    pub const POD_UID: &str = "pod_uid";
    /// Container name.
    pub const CONTAINER: &str = "container";
    /// `stdout` or `stderr` (container logs).
    pub const STREAM: &str = "stream";
    /// The node (from `NODE_NAME`, as the DaemonSet sets it with the downward API, else the
    /// pod's `spec.nodeName` from the Kubernetes API).
    pub const NODE: &str = "node";
    /// Prefix of pod label fields from the Kubernetes API: `label.app`, `label.team`, ...
    pub const LABEL_PREFIX: &str = "label.";
}

/// A field name: a shared constant for well-known names, shared text for the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldName {
    /// One of [`names`] or another compile-time name.
    Static(&'static str),
    /// A name that came from input (e.g. a journal field).
    Owned(Arc<str>),
}

impl FieldName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        match self {
            FieldName::Static(s) => s,
            FieldName::Owned(s) => s,
        }
    }
}

/// One log event.
#[derive(Debug)]
pub struct Event {
    /// When it was logged, per its source (milliseconds since the Unix epoch, UTC); arrival time
    /// only when the source carries none.
    pub timestamp_ms: i64,
    /// The message text as received (may be invalid UTF-8).
    pub message: Bytes,
    /// Syslog PRI (facility * 8 + severity), when known.
    pub priority: Option<u8>,
    /// Structured fields, in source order; a name may repeat.
    pub fields: Vec<(FieldName, Bytes)>,
    /// The name of the source (config key) that produced it.
    pub source: Arc<str>,
    /// Bytes cut off because the input exceeded a size limit; 0 when intact.
    pub truncated_bytes: u64,
    /// Resolved by the sink once the event is delivered or dead-lettered.
    pub ack: Ack,
    /// Where the source read it, as a hash that is the same when the source reads it again
    /// after a restart (journal cursor, file key and offset, spool record); 0 for a source that
    /// cannot read again. The sink's in-flight ledger records it, so that an event read again
    /// after a crash whose request is known to be in CloudWatch is not sent twice
    /// (`sink::ledger`). Include whatever makes a position unique for good: a skipped event is
    /// acknowledged without being sent.
    pub origin: u64,
    /// The message is a JSON object whose keys are the event's (`merge_json`): `json` format
    /// renders its keys top-level, with the fields above nested under one object
    /// ([`crate::json_merge`]).
    pub merged: Option<crate::json_merge::Merged>,
}

impl Event {
    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&Bytes> {
        self.fields
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v)
    }

    /// Syslog severity (0 = emerg .. 7 = debug).
    pub fn severity(&self) -> Option<u8> {
        self.priority.map(|p| p & 7)
    }

    /// Syslog facility (0 = kern .. 23 = local7).
    pub fn facility(&self) -> Option<u8> {
        self.priority.map(|p| p >> 3)
    }
}

/// Names of syslog severities, as `journalctl` and rsyslog print them.
pub const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// Names of syslog facilities (RFC 5424 table 1).
pub const FACILITY_NAMES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

pub use logferry_time::now_ms;

/// An [`Event::origin`] from the parts that name a position for good (never 0).
pub fn origin(parts: &[&[u8]]) -> u64 {
    with_scratch(|buf| {
        for part in parts {
            buf.extend_from_slice(&(part.len() as u64).to_le_bytes());
            buf.extend_from_slice(part);
        }
        twox_hash::XxHash3_64::oneshot_with_seed(0x6c66_6f72_6967_696e, buf).max(1)
    })
}

/// Runs `f` with this thread's scratch buffer, empty. Hashing its parts laid end to end in one
/// go gives the value the streaming hasher gives for them in turn (XXH3 is defined so), and the
/// streaming hasher allocates its state on the heap at every call: that was two allocations per
/// event (its origin, and the ledger's content hash).
pub fn with_scratch<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|s| {
        let mut buf = s.take();
        buf.clear();
        let out = f(&mut buf);
        // A huge event's buffer is not kept for good.
        if buf.capacity() <= 64 << 10 {
            s.replace(buf);
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Origins are saved (in the in-flight ledger) and compared after a restart, so they must
    /// stay what the streaming hasher they were first computed with gives.
    #[test]
    fn origin_is_the_streaming_hash_of_its_parts() {
        let big = vec![b'x'; 5000];
        let cases: [&[&[u8]]; 4] = [
            &[],
            &[b"a"],
            &[b"source", b"", &[0u8; 24]],
            &[&big, b"tail"],
        ];
        for parts in cases {
            let mut h = twox_hash::XxHash3_64::with_seed(0x6c66_6f72_6967_696e);
            for part in parts {
                std::hash::Hasher::write(&mut h, &(part.len() as u64).to_le_bytes());
                std::hash::Hasher::write(&mut h, part);
            }
            assert_eq!(origin(parts), std::hash::Hasher::finish(&h).max(1));
        }
    }
}
