//! The disk spool in front of pushed sources (syslog, stdin): what makes input that cannot be
//! read again survive a kill -9, a crash or an hour without CloudWatch.
//!
//! ```text
//!  connection tasks ──append frames──▶ spool (disk) ──next_batch──▶ reader ──events──▶ sinks
//!                                        ▲                                              │
//!                                        └──────────── ack ids ◀── outcomes ◀───────────┘
//! ```
//!
//! A stream connection appends the frames of one read *before* reading more from its socket,
//! so what a TCP client has handed over is on disk (page cache, fsynced on the configured
//! policy) before the kernel takes more from it. When the spool is full under the `block`
//! policy, appends wait for space and the connection stops reading: TCP pushes back. A datagram
//! that cannot be queued is counted as dropped.
//!
//! One reader task per source turns spooled frames into events, one acknowledgement batch per
//! spool read, and sends them on. Outcomes come back in any order; delivered (or dead-lettered)
//! records are acknowledged to the spool, which persists its watermark and deletes finished
//! segments. Failed batches (shutdown came first) are not acknowledged: they are delivered
//! again, first, after a restart.
//!
//! A spooled record is the frame plus what parsing needs later: the arrival time (used for
//! year inference and as the timestamp of frames that carry none, so replayed input keeps its
//! original time), the bytes cut by truncation and the peer address.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use logferry_spool::{FsyncPolicy, FullPolicy, Spool, SpoolConfig, SpoolError};
use logferry_syslog::{Frame, Framing, ParseOptions};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{syslog_event, Chunk, SourceContext};
use crate::ack::AckBatch;
use crate::config::{SpoolFsync, SpoolFullPolicy, SpoolSettings};
use crate::event::now_ms;
use crate::source::stats::SourceStats;

const RECORD_VERSION: u8 = 1;

/// Records per spool read, i.e. per acknowledgement batch. A batch is acknowledged when its last
/// event is delivered, so smaller batches mean fewer resends after a kill -9; 256 keeps the
/// per-batch overhead negligible.
const SPOOL_READ_RECORDS: usize = 256;

/// Opens (and recovers) the spool of source `name` under `data_dir/spool/NAME`.
pub fn open(
    data_dir: &Path,
    name: &str,
    settings: &SpoolSettings,
    max_frame_bytes: usize,
) -> anyhow::Result<Arc<Spool>> {
    let dir = data_dir.join("spool").join(name);
    logferry_private_files::create_dir_all(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let cfg = SpoolConfig {
        max_bytes: settings.max_bytes,
        fsync: match settings.fsync {
            SpoolFsync::Always => FsyncPolicy::Always,
            SpoolFsync::Interval => FsyncPolicy::Interval(Duration::from_millis(100)),
        },
        full_policy: match settings.full_policy {
            SpoolFullPolicy::Block => FullPolicy::Block,
            SpoolFullPolicy::DropOldest => FullPolicy::DropOldest,
        },
        max_record_bytes: u32::try_from(max_frame_bytes + 4096).unwrap_or(u32::MAX),
        // Enough for a reader that keeps up to read from memory (thousands of lines, tens of
        // milliseconds of a busy client), small enough for a tight RSS: a reader that lags
        // further reads the page cache whatever the size, and 4 MiB was a tenth of the peak.
        memory_tail_bytes: 1 << 20,
        // The watermark file is tiny; persisting it often keeps the duplicates a kill -9 causes
        // down to what was in flight (the spool's own default, 100 ms, resent ~40% in the
        // kill-loop test).
        checkpoint_interval: Duration::from_millis(10),
        // Space comes back a segment at a time, and the active segment is never deleted:
        // segments of an eighth of the bound free it while the rest is still being delivered.
        // With the library's 64 MiB segments a spool bounded near that size stayed full for
        // good once CloudWatch came back (found by tests/faults.rs, block policy).
        segment_bytes: (settings.max_bytes / 8).clamp(128 << 10, 64 << 20),
    };
    let (spool, events) =
        Spool::open(&dir, cfg).with_context(|| format!("opening the spool {}", dir.display()))?;
    for e in events {
        if e.is_data_loss() {
            tracing::error!(error = %e, "spool recovery");
        } else {
            tracing::warn!(error = %e, "spool recovery");
        }
    }
    let stats = spool.stats();
    if stats.records_pending > 0 {
        tracing::info!(
            pending = stats.records_pending,
            "spooled events from a previous run will be sent first"
        );
    }
    Ok(Arc::new(spool))
}

/// The peer address as a record keeps it (at most `u16::MAX` bytes).
fn record_peer(peer: Option<&Bytes>) -> &[u8] {
    peer.map(|p| &p[..p.len().min(u16::MAX as usize)])
        .unwrap_or(&[])
}

/// The length of a frame's spool record.
fn record_len(frame: &Frame, peer: Option<&Bytes>) -> usize {
    1 + 8 + 8 + 2 + record_peer(peer).len() + frame.data.len()
}

/// Encodes a frame as a spool record.
pub fn encode(frame: &Frame, peer: Option<&Bytes>, received_ms: i64, out: &mut BytesMut) {
    let peer = record_peer(peer);
    out.reserve(1 + 8 + 8 + 2 + peer.len() + frame.data.len());
    out.put_u8(RECORD_VERSION);
    out.put_i64_le(received_ms);
    out.put_u64_le(frame.truncated_bytes);
    out.put_u16_le(peer.len() as u16);
    out.put_slice(peer);
    out.put_slice(&frame.data);
}

/// Decodes a spool record: (frame, peer, received_ms). The record back for one this version
/// does not understand (it is then delivered as raw text rather than lost).
pub fn decode(record: Bytes) -> Result<(Frame, Option<Bytes>, i64), Bytes> {
    let Some((received_ms, truncated_bytes, data_start)) = decode_header(&record) else {
        return Err(record);
    };
    let peer = (data_start > 19).then(|| record.slice(19..data_start));
    let mut data = record;
    data.advance(data_start);
    let frame = Frame {
        data,
        truncated_bytes,
        framing: Framing::NewlineDelimited,
    };
    Ok((frame, peer, received_ms))
}

/// A record's (received_ms, truncated_bytes, where the frame starts), if it is one.
fn decode_header(b: &[u8]) -> Option<(i64, u64, usize)> {
    if b.len() < 19 || b[0] != RECORD_VERSION {
        return None;
    }
    let received_ms = i64::from_le_bytes(b[1..9].try_into().ok()?);
    let truncated_bytes = u64::from_le_bytes(b[9..17].try_into().ok()?);
    let peer_len = usize::from(u16::from_le_bytes(b[17..19].try_into().ok()?));
    let data_start = 19 + peer_len;
    (data_start <= b.len()).then_some((received_ms, truncated_bytes, data_start))
}

/// The payloads of one spool read copied into one buffer of their own, as slices of it.
///
/// Every field of an event is a slice of its record, so a reference count taken here and
/// dropped when the sink has formatted the event. Slices of the spool's own buffers (an
/// append's batch, a 256 KiB read) put those counts of thousands of events on one cache line
/// that this thread and the sink's wrote in turn, per field per event; a copy per read
/// (about 40 KiB) gives each read's events a count of their own.
fn own_copy(records: &[logferry_spool::Record]) -> Vec<Bytes> {
    let total = records.iter().map(|r| r.payload.len()).sum();
    let mut buf = BytesMut::with_capacity(total);
    for r in records {
        buf.extend_from_slice(&r.payload);
    }
    let buf = buf.freeze();
    let mut at = 0;
    records
        .iter()
        .map(|r| {
            let payload = buf.slice(at..at + r.payload.len());
            at += r.payload.len();
            payload
        })
        .collect()
}

/// One read's frames as spool records, encoded straight into the spool's write buffer.
struct FrameRecords<'a> {
    frames: &'a [(Frame, Option<Bytes>)],
    received_ms: i64,
}

impl logferry_spool::Payloads for FrameRecords<'_> {
    fn count(&self) -> usize {
        self.frames.len()
    }

    fn len(&self, i: usize) -> usize {
        let (frame, peer) = &self.frames[i];
        record_len(frame, peer.as_ref())
    }

    fn write(&self, i: usize, out: &mut BytesMut) {
        let (frame, peer) = &self.frames[i];
        encode(frame, peer.as_ref(), self.received_ms, out);
    }
}

/// Appends frames, waiting for space when the spool is full (`block`). Returns false if the
/// spool failed for good (the caller stops reading).
pub async fn append_frames(
    spool: &Arc<Spool>,
    frames: &[(Frame, Option<Bytes>)],
    counters: &SourceStats,
    wait_for_space: bool,
    shutdown: &tokio_util::sync::CancellationToken,
) -> bool {
    if frames.is_empty() {
        return true;
    }
    let records = FrameRecords {
        frames,
        received_ms: now_ms(),
    };
    let mut warned = false;
    loop {
        match spool.append_payloads(&records) {
            Ok(outcome) => {
                if outcome.dropped_records > 0 {
                    counters
                        .dropped_spool_oldest
                        .fetch_add(outcome.dropped_records, Ordering::Relaxed);
                    tracing::warn!(
                        dropped = outcome.dropped_records,
                        "spool full: dropped the oldest undelivered records (spool_full_policy = \"drop_oldest\")"
                    );
                }
                return true;
            }
            Err(e) if e.is_full() && wait_for_space => {
                if !warned {
                    tracing::warn!(error = %e, "spool full; input paused until space frees up");
                    warned = true;
                }
                if shutdown.is_cancelled() {
                    // Stopping while full: these frames (at most one read) were not spooled.
                    tracing::error!(
                        lost = frames.len(),
                        "shutdown while the spool is full: frames not spooled"
                    );
                    return false;
                }
                let space = spool.space_notify();
                let _ = tokio::time::timeout(Duration::from_millis(500), space.notified()).await;
            }
            Err(e) if e.is_full() => {
                counters
                    .dropped_spool_full
                    .fetch_add(frames.len() as u64, Ordering::Relaxed);
                tracing::warn!(
                    dropped = frames.len(),
                    error = %e,
                    "spool full: datagrams dropped"
                );
                return true;
            }
            Err(e @ SpoolError::RecordTooLarge { .. })
            | Err(e @ SpoolError::BatchTooLarge { .. })
            | Err(e @ SpoolError::PayloadLengths { .. }) => {
                tracing::error!(error = %e, "cannot spool frames");
                return true;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool write failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Reads the spool and feeds the sinks until shutdown (or, with `until_empty`, until the input
/// has ended and everything spooled is delivered). Then waits for the outcomes of what it sent,
/// acknowledges them, and closes the spool cleanly.
pub async fn run_reader(
    ctx: SourceContext,
    spool: Arc<Spool>,
    input_done: tokio_util::sync::CancellationToken,
    until_empty: bool,
) {
    let (tx, mut outcomes) = mpsc::unbounded_channel::<crate::ack::BatchOutcome>();
    let in_flight: Arc<std::sync::Mutex<HashMap<u64, Vec<u64>>>> = Arc::default();
    let acker = {
        let spool = spool.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(
            async move {
                while let Some(o) = outcomes.recv().await {
                    let ids = in_flight
                        .lock()
                        .ok()
                        .and_then(|mut m| m.remove(&o.batch_id));
                    if let (Some(ids), true) = (ids, o.status.is_final()) {
                        spool.ack_many(&ids);
                    }
                }
            }
            .in_current_span(),
        )
    };
    let data = spool.data_notify();
    let mut batch_id = 0u64;
    loop {
        if ctx.shutdown.is_cancelled() {
            // On SIGTERM stop taking from the spool: what is left stays on disk for next time.
            break;
        }
        let records = match spool.next_batch(SPOOL_READ_RECORDS, 4 << 20) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "spool read failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if records.is_empty() {
            if until_empty && input_done.is_cancelled() && spool.stats().records_pending == 0 {
                break;
            }
            // An append wakes `data` (its permit is kept if it came since `next_batch`), so
            // an idle reader sleeps without a timer. Only a draining `until_empty` reader
            // polls, for the acknowledgements that empty the spool.
            let draining = until_empty && input_done.is_cancelled();
            tokio::select! {
                _ = data.notified() => {}
                _ = input_done.cancelled(), if until_empty && !draining => {}
                _ = tokio::time::sleep(Duration::from_millis(100)), if draining => {}
                _ = ctx.shutdown.cancelled() => {}
            }
            continue;
        }
        batch_id += 1;
        let batch = AckBatch::new(batch_id, &tx);
        let mut ids = Vec::with_capacity(records.len());
        let mut chunk: Chunk = Vec::with_capacity(records.len());
        let payloads = own_copy(&records);
        for (rec, payload) in records.iter().zip(payloads) {
            ids.push(rec.id);
            let (frame, peer, received) = decode(payload).unwrap_or_else(|payload| {
                (
                    Frame {
                        data: payload,
                        truncated_bytes: 0,
                        framing: Framing::NewlineDelimited,
                    },
                    None,
                    rec.appended_ms as i64,
                )
            });
            let opts = ParseOptions {
                now_unix_ms: received,
                local_utc_offset_secs: 0,
            };
            let mut event = syslog_event(frame, peer.as_ref(), &ctx.name, &opts, batch.ack());
            // The spool's record: its id and when it was appended (ids start over with a new
            // spool, the time does not).
            event.origin = crate::event::origin(&[
                ctx.name.as_bytes(),
                &rec.id.to_le_bytes(),
                &rec.appended_ms.to_le_bytes(),
            ]);
            chunk.push(event);
        }
        if let Ok(mut m) = in_flight.lock() {
            m.insert(batch_id, ids);
        }
        drop(batch);
        if !ctx.send(chunk).await {
            break;
        }
    }
    // Let the sinks drain: they finish once every source has dropped its senders.
    drop(ctx);
    drop(tx);
    let _ = acker.await;
    let spool = Arc::try_unwrap(spool);
    match spool {
        Ok(s) => {
            if let Err(e) = s.close() {
                tracing::error!(error = %e, "closing the spool");
            }
        }
        Err(s) => {
            if let Err(e) = s.flush() {
                tracing::error!(error = %e, "flushing the spool");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let frame = Frame {
            data: Bytes::from_static(b"<13>Nov 25 16:20:39 h app: hi"),
            truncated_bytes: 7,
            framing: Framing::OctetCounted,
        };
        let peer = Bytes::from_static(b"127.0.0.1:5000");
        let mut buf = BytesMut::new();
        encode(&frame, Some(&peer), 1234, &mut buf);
        let rec = buf.freeze();
        let (f, p, t) = decode(rec).expect("decodes");
        assert_eq!(f.data, frame.data);
        assert_eq!(f.truncated_bytes, 7);
        assert_eq!(p.as_deref(), Some(&b"127.0.0.1:5000"[..]));
        assert_eq!(t, 1234);
        let mut buf = BytesMut::new();
        encode(&frame, None, 5, &mut buf);
        assert_eq!(decode(buf.freeze()).expect("decodes").1, None);
    }

    #[test]
    fn a_record_is_as_long_as_announced() {
        let frame = Frame {
            data: Bytes::from_static(b"<13>1 - h app - - - hi"),
            truncated_bytes: 0,
            framing: Framing::NewlineDelimited,
        };
        let long_peer = Bytes::from(vec![b'p'; 70_000]);
        for peer in [
            None,
            Some(Bytes::from_static(b"[::1]:514")),
            Some(long_peer),
        ] {
            let mut buf = BytesMut::new();
            encode(&frame, peer.as_ref(), 7, &mut buf);
            assert_eq!(buf.len(), record_len(&frame, peer.as_ref()));
        }
    }

    #[test]
    fn damaged_records_are_refused_not_panicked_on() {
        for len in 0..40 {
            let junk = Bytes::from(vec![1u8; len]);
            // Too short, or (from 19 bytes) a peer of 257 bytes past the end.
            assert_eq!(decode(junk.clone()).err(), Some(junk));
        }
        let mut bad = vec![1u8; 19];
        bad[17] = 0xff;
        bad[18] = 0xff;
        assert!(decode(Bytes::from(bad)).is_err());
        assert!(decode(Bytes::from_static(b"\x02xxxxxxxxxxxxxxxxxxxxxxx")).is_err());
    }
}
