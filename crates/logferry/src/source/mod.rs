//! Sources: where events come from.
//!
//! Each source runs as its own task with a [`SourceContext`]: its name, a bounded channel to
//! every sink that lists it, and a shutdown token. Sending awaits when a sink's channel is full,
//! which is how backpressure reaches the socket or file being read.
//!
//! - [`syslog`]: TCP (plain or [`crate::tls`]), UDP and unix sockets, through the `logferry-syslog`
//!   codec, behind the network [`guard`]s (allowed peers, rate limits).
//! - [`journald`]: the systemd journal, from its files, resumed from a saved cursor.
//! - [`file`]: log files and Kubernetes container logs, through `logferry-tail`, resumed from
//!   saved offsets.
//! - [`stdin`]: standard input, one event per line or syslog frame; at end of input it waits
//!   until everything it read is delivered, then ends (so `journalctl | logferry` exits 0 only
//!   when CloudWatch has it all).

pub mod file;
pub mod guard;
pub mod journald;
pub mod positions;
pub mod spooled;
pub mod stats;
pub mod stdin;
pub mod syslog;

use stats::SourceKind;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use logferry_syslog::{Frame, Message, ParseOptions};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::Ack;
use crate::event::{Event, SyslogHeader};

/// Events travel to sinks in chunks, to keep per-event channel costs out of the hot path.
pub type Chunk = Vec<Event>;

/// Most events a source puts in one chunk.
pub const CHUNK_EVENTS: usize = 1024;

/// What a source sends a sink.
#[derive(Debug)]
pub enum SinkInput {
    /// Events read (never empty).
    Events(Chunk),
    /// The source has just read the end of a backlog ([`SourceContext::caught_up`]): the
    /// sink sends what it is building now instead of waiting `batch_timeout` for more.
    CaughtUp,
}

/// What a source task is given.
#[derive(Clone)]
pub struct SourceContext {
    /// The source's name (its key in the config).
    pub name: Arc<str>,
    /// One sender per sink fed by this source.
    pub outputs: Vec<mpsc::Sender<SinkInput>>,
    /// Cancelled when the source must stop reading.
    pub shutdown: CancellationToken,
    /// The source's counters (for metrics).
    pub stats: Arc<stats::SourceStats>,
}

impl SourceContext {
    /// Sends a chunk to every sink (copying events when there are several). Returns false when
    /// every sink has gone away.
    pub async fn send(&self, chunk: Chunk) -> bool {
        if chunk.is_empty() {
            return true;
        }
        let (mut bytes, mut truncated, mut newest) = (0u64, 0u64, 0i64);
        for e in &chunk {
            bytes += e.message.len() as u64;
            truncated += u64::from(e.truncated_bytes > 0);
            newest = newest.max(e.timestamp_ms);
        }
        let st = &self.stats;
        st.events.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        st.bytes.fetch_add(bytes, Ordering::Relaxed);
        st.truncated.fetch_add(truncated, Ordering::Relaxed);
        st.last_event_ms.fetch_max(newest, Ordering::Relaxed);
        let mut alive = false;
        let last = self.outputs.len().saturating_sub(1);
        let mut chunk = Some(chunk);
        for (i, out) in self.outputs.iter().enumerate() {
            let events = if i == last {
                chunk.take().unwrap_or_default()
            } else {
                chunk
                    .as_ref()
                    .map(|c| c.iter().map(fork_event).collect())
                    .unwrap_or_default()
            };
            alive |= out.send(SinkInput::Events(events)).await.is_ok();
        }
        alive
    }
}

impl SourceContext {
    /// Tells every sink that this source has just read the end of a backlog:
    /// nothing more of it is coming now, so the requests being built need not wait
    /// `batch_timeout` for more events (the last part of a backfill went a second late).
    /// Sent only after a backlog ([`CAUGHT_UP_AFTER`] events or more without reaching the end
    /// of the input), so it costs at most one partial request per stream per backlog, never
    /// a request per event of a live trickle. Returns false when every sink has gone away.
    pub async fn caught_up(&self) -> bool {
        let mut alive = false;
        for out in &self.outputs {
            alive |= out.send(SinkInput::CaughtUp).await.is_ok();
        }
        alive
    }
}

/// Events a source reads without reaching the end of its input before it is in a backlog,
/// whose end it reports with [`SourceContext::caught_up`]: eight chunks (a full request or
/// so), so that the one partial request per stream this may add is at most one call per
/// full one.
pub const CAUGHT_UP_AFTER: u64 = 8 * CHUNK_EVENTS as u64;

fn fork_event(e: &Event) -> Event {
    Event {
        timestamp_ms: e.timestamp_ms,
        message: e.message.clone(),
        priority: e.priority,
        common: e.common.clone(),
        fields: e.fields.clone(),
        header: e.header.clone(),
        source: e.source.clone(),
        truncated_bytes: e.truncated_bytes,
        ack: e.ack.fork(),
        origin: e.origin,
        merged: e.merged,
    }
}

/// Turns a syslog frame into an event. Every slice the parser returns lies within the frame,
/// so the header's fields are places in the frame's head, and the message is the frame cut
/// down to it: no copy, no field `Vec`, one reference count for the head.
pub fn syslog_event(
    frame: Frame,
    peer: Option<&Bytes>,
    source: &Arc<str>,
    opts: &ParseOptions,
    ack: Ack,
) -> Event {
    let mut data = frame.data;
    let msg: Message<'_> = logferry_syslog::parse(&data, opts);
    let timestamp_ms = msg.timestamp_unix_ms.unwrap_or(opts.now_unix_ms);
    let priority = msg.priority;
    let values = [
        msg.hostname,
        msg.app_name,
        msg.procid,
        msg.msgid,
        msg.structured_data,
    ]
    .map(|v| v.map(str::as_bytes));
    // The head ends where the last header value does (before the message, in every dialect).
    let offset = |v: &[u8]| v.as_ptr() as usize - data.as_ptr() as usize;
    let head_end = values
        .iter()
        .flatten()
        .filter(|v| !v.is_empty())
        .map(|v| offset(v) + v.len())
        .max();
    let header = (head_end.is_some() || peer.is_some()).then(|| {
        let head = head_end.map_or_else(Bytes::new, |end| data.slice(..end));
        SyslogHeader::new(head, values, peer.cloned())
    });
    // For unrecognised frames the codec returns the whole frame (less a valid PRI) as message.
    // The message is the frame cut down to it (no reference count taken and dropped).
    let message_at = (!msg.message.is_empty()).then(|| {
        let start = offset(msg.message);
        (start, start + msg.message.len())
    });
    let message = match message_at {
        Some((start, end)) => {
            data.truncate(end);
            data.advance(start);
            data
        }
        None => Bytes::new(),
    };
    Event {
        timestamp_ms,
        message,
        priority,
        common: None,
        fields: Vec::new(),
        header,
        source: source.clone(),
        truncated_bytes: frame.truncated_bytes,
        ack,
        origin: 0,
        merged: None,
    }
}

/// The span of one source: everything it logs, in its tasks and its reader thread, carries
/// `source = NAME` and `type = KIND`. Spawned tasks take it with `.in_current_span()`, reader
/// threads by entering a clone of it.
pub fn span(name: &str, kind: SourceKind) -> tracing::Span {
    tracing::info_span!("source", source = %name, r#type = %kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::names;
    use logferry_syslog::Framing;

    fn event(frame: &'static [u8], peer: Option<&Bytes>) -> Event {
        let frame = Frame {
            data: Bytes::from_static(frame),
            truncated_bytes: 0,
            framing: Framing::NewlineDelimited,
        };
        let opts = ParseOptions {
            now_unix_ms: 1_795_623_639_000,
            local_utc_offset_secs: 0,
        };
        syslog_event(frame, peer, &Arc::from("s"), &opts, Ack::none())
    }

    fn fields(e: &Event) -> Vec<(String, String)> {
        let header = e.header.as_ref().map(|h| h.to_fields()).unwrap_or_default();
        header
            .iter()
            .chain(&e.fields)
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    /// The header's places give the fields the parser found, by name and in order, and the
    /// message is the frame cut down to it, in every dialect.
    #[test]
    fn a_syslog_events_header_fields_are_slices_of_its_frame() {
        let peer = Bytes::from_static(b"127.0.0.1:5000");
        let e = event(
            b"<30>1 2026-11-25T16:20:39.123Z node-1 kubelet 2174 ID7 [a x=\"1\"] hello there",
            Some(&peer),
        );
        let want = [
            (names::HOSTNAME, "node-1"),
            (names::IDENTIFIER, "kubelet"),
            (names::PID, "2174"),
            (names::MSGID, "ID7"),
            (names::STRUCTURED_DATA, "[a x=\"1\"]"),
            (names::PEER, "127.0.0.1:5000"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(fields(&e), want);
        for (name, value) in &want {
            assert_eq!(e.field(name), Some(value.as_bytes()), "{name}");
        }
        assert_eq!(&e.message[..], b"hello there");
        assert_eq!(e.timestamp_ms, 1_795_623_639_123);

        let e = event(b"<13>Nov 25 16:20:39 host app[42]: hi", None);
        assert_eq!(e.field(names::HOSTNAME), Some(&b"host"[..]));
        assert_eq!(e.field(names::IDENTIFIER), Some(&b"app"[..]));
        assert_eq!(e.field(names::PID), Some(&b"42"[..]));
        assert_eq!(e.field(names::MSGID), None);
        assert_eq!(e.field(names::PEER), None);
        assert_eq!(&e.message[..], b"hi");

        // No header, no message, no peer: nothing to hold.
        let e = event(b"<13>1 - - - - - -", None);
        assert!(e.header.is_none() && e.message.is_empty());
        let e = event(b"just text", Some(&peer));
        assert_eq!(
            fields(&e),
            [(names::PEER.to_string(), "127.0.0.1:5000".to_string())]
        );
        assert_eq!(&e.message[..], b"just text");
    }

    /// `json` output has a syslog event's header fields as members, as when they were fields.
    #[test]
    fn a_syslog_events_header_fields_are_json_members() {
        let e = event(b"<30>1 - node-1 kubelet 2174 - - hi", None);
        let mut out = String::new();
        crate::format::format_event(&e, crate::config::MessageFormat::Json, &mut out);
        let v: serde_json::Value = serde_json::from_str(&out).expect("valid JSON");
        assert_eq!(v["hostname"], "node-1");
        assert_eq!(v["identifier"], "kubelet");
        assert_eq!(v["pid"], "2174");
        assert_eq!(v["message"], "hi");
        assert_eq!(v["severity"], "info");
    }
}
