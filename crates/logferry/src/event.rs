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

/// Fields many events share (a file's path, its pod's metadata and labels, the container
/// stream), held once and pointed to by each event rather than copied into it, with their
/// `json` members rendered once ([`crate::format`]).
///
/// Why: a container log event used to carry its own copy of its file's ~9 fields, a `Vec`
/// allocated on the reader's thread and an atomic refcount per field taken there and dropped
/// on the sink's, and `json` formatting rendered the same members again for every event: a
/// sixth of the `merge_json` path's CPU. A change (new labels) makes a new one.
#[derive(Debug)]
pub struct CommonFields {
    fields: Vec<(FieldName, Bytes)>,
    rendered: crate::format::RenderedMembers,
}

impl CommonFields {
    /// The fields, in order (a name may repeat).
    pub fn new(fields: Vec<(FieldName, Bytes)>) -> Self {
        let rendered = crate::format::RenderedMembers::of(&fields);
        CommonFields { fields, rendered }
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[(FieldName, Bytes)] {
        &self.fields
    }

    /// Their `json` members, rendered.
    pub(crate) fn rendered(&self) -> &crate::format::RenderedMembers {
        &self.rendered
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
    /// Fields this event shares with others of its origin (a file's path, pod metadata and
    /// labels, stream), ahead of [`Event::fields`] in order; `None` for sources whose every
    /// event has fields of its own.
    pub common: Option<Arc<CommonFields>>,
    /// Structured fields of this event alone, in source order, after the common ones; a name
    /// may repeat.
    pub fields: Vec<(FieldName, Bytes)>,
    /// A syslog frame's header fields (and peer), ahead of [`Event::fields`] in order: read
    /// with [`Event::field`], or as fields with [`SyslogHeader::to_fields`]; not among
    /// [`Event::all_fields`].
    pub header: Option<SyslogHeader>,
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
    /// The first value of field `name`: the syslog header's, the common ones, then its own.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        if let Some(v) = self.header.as_ref().and_then(|h| h.get(name)) {
            return Some(v);
        }
        self.all_fields()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| &v[..])
    }

    /// Every field in order: the common ones, then the event's own (a syslog header's are
    /// not among them: [`Event::field`] reads them, [`SyslogHeader::to_fields`] lists them).
    pub fn all_fields(&self) -> impl Iterator<Item = &(FieldName, Bytes)> {
        self.common
            .iter()
            .flat_map(|c| c.fields())
            .chain(&self.fields)
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

/// The fields of a syslog frame's header, as places in the bytes before its message.
///
/// Why not fields of their own: a syslog event pushed six `(name, Bytes)` fields into a fresh
/// `Vec`, allocated on the spool reader's thread and freed on the sink's, each value a
/// reference count taken and dropped on the read's buffer: a tenth of a syslog run's CPU went
/// to that and its malloc and free. The header holds one slice of the frame (and the peer).
#[derive(Debug, Clone)]
pub struct SyslogHeader {
    head: Bytes,
    /// Where each of [`SyslogHeader::NAMES`]' values lies in `head`, if it is there.
    values: [Option<(u32, u32)>; 5],
    peer: Option<Bytes>,
}

impl SyslogHeader {
    /// The header fields' names, in order (then [`names::PEER`]).
    pub const NAMES: [&'static str; 5] = [
        names::HOSTNAME,
        names::IDENTIFIER,
        names::PID,
        names::MSGID,
        names::STRUCTURED_DATA,
    ];

    /// A header of `head` (the frame before its message), with `values` (slices of `head`,
    /// or `None`) for [`SyslogHeader::NAMES`], and the peer. A value that is not a slice of
    /// `head` is left out.
    pub fn new(head: Bytes, values: [Option<&[u8]>; 5], peer: Option<Bytes>) -> Self {
        let start = head.as_ptr() as usize;
        let place = |v: Option<&[u8]>| {
            let at = (v?.as_ptr() as usize).checked_sub(start)?;
            let end = at.checked_add(v?.len())?;
            (end <= head.len()).then_some((u32::try_from(at).ok()?, u32::try_from(end).ok()?))
        };
        let values = values.map(place);
        SyslogHeader { head, values, peer }
    }

    /// The value of header field `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        if name == names::PEER {
            return self.peer.as_deref();
        }
        let i = Self::NAMES.iter().position(|n| *n == name)?;
        self.value(i)
    }

    fn value(&self, i: usize) -> Option<&[u8]> {
        let (at, end) = self.values[i]?;
        self.head.get(at as usize..end as usize)
    }

    /// The header's fields as [`Event::fields`] would hold them, in order.
    pub fn to_fields(&self) -> Vec<(FieldName, Bytes)> {
        let mut fields = Vec::with_capacity(6);
        for (i, name) in Self::NAMES.iter().enumerate() {
            if let Some((at, end)) = self.values[i] {
                let value = self.head.slice(at as usize..end as usize);
                fields.push((FieldName::Static(name), value));
            }
        }
        if let Some(peer) = &self.peer {
            fields.push((FieldName::Static(names::PEER), peer.clone()));
        }
        fields
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
    laid_end_to_end(|input| {
        for part in parts {
            input.extend_from_slice(&(part.len() as u64).to_le_bytes());
            input.extend_from_slice(part);
        }
        twox_hash::XxHash3_64::oneshot_with_seed(0x6c66_6f72_6967_696e, input).max(1)
    })
}

/// XXH3-64 with `seed` of `parts` one after the other: the value a streaming `XxHash3_64` fed
/// the parts in turn gives (so hashes already stored keep matching), at a fraction of the cost.
/// The streaming hasher allocates its state and copies its input through a buffer, and these
/// hashes run once or twice per event (origins, the in-flight ledger): a twentieth of the CPU
/// of a syslog run.
pub fn xxh3(seed: u64, parts: &[&[u8]]) -> u64 {
    laid_end_to_end(|input| {
        for part in parts {
            input.extend_from_slice(part);
        }
        twox_hash::XxHash3_64::oneshot_with_seed(seed, input)
    })
}

/// Runs `f` with this thread's scratch buffer, emptied, for the one-shot hashes' input.
///
/// Why a buffer kept per thread: a fresh one per hash either allocated (a `Vec`) or was
/// zeroed first (512 bytes on the stack, twice per event: 2% of a syslog run in `memset`).
fn laid_end_to_end<T>(f: impl FnOnce(&mut Vec<u8>) -> T) -> T {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut input) => {
            input.clear();
            let hash = f(&mut input);
            if input.capacity() > 64 << 10 {
                // Not kept at the size of the largest message ever hashed.
                *input = Vec::new();
            }
            hash
        }
        // Not reentrant today; a nested call would get a buffer of its own.
        Err(_) => f(&mut Vec::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(seed: u64, parts: &[&[u8]]) -> u64 {
        let mut h = twox_hash::XxHash3_64::with_seed(seed);
        for part in parts {
            std::hash::Hasher::write(&mut h, part);
        }
        std::hash::Hasher::finish(&h)
    }

    /// Origins and content hashes are stored (the in-flight ledger) and compared after a
    /// restart, perhaps by another version: the one-shot hash must give the streaming one's
    /// values, on the stack and past it.
    #[test]
    fn one_shot_hashes_equal_the_streaming_ones() {
        let text: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [
            0, 1, 3, 16, 17, 128, 129, 240, 241, 500, 504, 505, 1024, 5000,
        ] {
            let ts = 1_764_087_639_123i64.to_le_bytes();
            let parts: [&[u8]; 2] = [&ts, &text[..len]];
            assert_eq!(xxh3(0, &parts), streamed(0, &parts), "{len} bytes");
            let name = b"syslog";
            let id = (len as u64).to_le_bytes();
            let lens = [
                (name.len() as u64).to_le_bytes(),
                (len as u64).to_le_bytes(),
                8u64.to_le_bytes(),
            ];
            let framed: [&[u8]; 6] = [&lens[0], name, &lens[1], &text[..len], &lens[2], &id];
            assert_eq!(
                origin(&[name, &text[..len], &id]),
                streamed(0x6c66_6f72_6967_696e, &framed).max(1)
            );
        }
    }
}
