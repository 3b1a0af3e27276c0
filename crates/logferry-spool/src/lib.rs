//! `logferry-spool`: a crash-safe, bounded, segmented on-disk queue for
//! logferry's *pushed* inputs (syslog, stdin).
//!
//! # What and why
//!
//! Sources that cannot re-read their input append each event here *before*
//! acknowledging it upstream; the sink removes events (by [`Spool::ack`],
//! in any order) only once CloudWatch Logs has accepted them. After a process
//! kill or a power cut every intact, unacknowledged record is delivered again:
//! **at-least-once**, with duplicates bounded to what was in flight or acked
//! since the last checkpoint.
//!
//! Existing crates were considered and rejected: `segment-buffer` keeps a
//! batch in memory before spilling (a kill -9 loses it) and acks whole
//! segments; `yaque` and `queue-file` have no out-of-order per-record acks
//! (and `queue-file` is one ring file); `persistent-queue` and
//! `disk_backed_queue` sit on sled/redb/SQLite, far heavier than an append-only
//! log and without our torn-tail/quarantine semantics. The whole thing is about
//! 1,300 lines of code plus tests, and logferry's "no line is ever lost"
//! promise means we need to own its failure behaviour, so it is written here.
//!
//! # On-disk layout
//!
//! A spool is one directory:
//!
//! * `LOCK` — `flock`ed while a [`Spool`] is open (a second open fails with
//!   [`SpoolError::Locked`]).
//! * `{first_id:020}.seg` — append-only segment files, named by the id of
//!   their first record (e.g. `00000000000000000001.seg`). Ids are `u64`,
//!   start at 1, and are dense (+1) inside a segment; there can be gaps
//!   *between* segments (dropped or quarantined records). A new segment is
//!   started when the next batch would take the current one past
//!   `segment_bytes`.
//! * `ack.ckpt` — the delivered watermark: all ids below it are acknowledged.
//!   20 bytes: magic `LFSPACK1`, `u64` LE watermark, `u32` LE
//!   crc32c of the first 16 bytes. Replaced atomically (write `ack.ckpt.tmp`,
//!   fsync, rename, fsync the directory).
//! * `*.corrupt` — quarantined segments, kept for forensics, never deleted by
//!   the spool. Not counted in `max_bytes`.
//!
//! Each record is a 28-byte header followed by the payload (little-endian):
//!
//! ```text
//! [u32 len][u32 crc32c(payload)][u64 id][u64 appended_ms][u32 crc32c(header[0..24])][payload; len]
//! ```
//!
//! The id lets recovery detect misplaced data; `appended_ms` (wall clock)
//! feeds the "age of the oldest unsent event" statistic; the header checksum
//! distinguishes a torn write (data ends early) from a corrupted length field.
//! See [`format`](mod@format) for the encoder/decoder and the checkpoint codec.
//!
//! # Recovery
//!
//! [`Spool::open`] scans every segment and returns the list of
//! [`RecoveryEvent`]s it acted on: a torn tail of the last segment is
//! truncated; a segment with a damaged record anywhere else is renamed to
//! `*.corrupt` and its intact prefix put back (see the `recovery` module).
//! Segments wholly below the checkpoint are deleted unread.
//!
//! # Durability contract
//!
//! Every successful `append*` has handed its bytes to the kernel with one
//! `pwrite` (no user-space buffer), so:
//!
//! * **process crash / kill -9**: nothing that `append` returned is lost, under
//!   either policy — the data is in the page cache and the kernel writes it.
//!   Acks made after the last checkpoint (at most `checkpoint_interval`, default
//!   100 ms, or since the last [`Spool::flush`]) are forgotten, so those records
//!   are delivered again.
//! * **OS crash / power loss** with [`FsyncPolicy::Always`]: `append` returns
//!   only after `fdatasync`, so nothing it returned is lost (assuming the disk
//!   honours flushes). A batch whose `append` had not returned may be torn;
//!   recovery truncates it.
//! * **OS crash / power loss** with [`FsyncPolicy::Interval`]`(d)`: records
//!   appended in roughly the last `d` (default 100 ms) plus the time of one
//!   fsync may be lost, and a segment rotation is always fsynced first.
//!   [`Spool::flush`] makes everything appended so far durable.
//! * A background fsync failure is counted in [`SpoolStats::fsync_errors`] and
//!   reported once by the next [`Spool::flush`] as [`SpoolError::SyncFailed`].
//!
//! Dropping a [`Spool`] without [`Spool::close`] behaves like a process crash
//! (no final checkpoint), which is what the crash tests rely on.
//!
//! # Bounding
//!
//! `max_bytes` bounds the sum of live segment sizes. When a batch would not
//! fit, acknowledged segments are reclaimed first (all but the active one, which is never
//! deleted: hence `segment_bytes` may be at most half of `max_bytes`, checked at open, so that
//! once everything read is acknowledged a batch of up to half the bound fits); then
//! [`FullPolicy::Block`] returns [`SpoolError::Full`] (apply backpressure and
//! wait on [`Spool::space_notify`]) and [`FullPolicy::DropOldest`] deletes the
//! oldest segments and reports the unacknowledged records it discarded in
//! [`AppendOutcome`] and [`SpoolStats`]. A physically full disk (`ENOSPC`,
//! `EFBIG`, `EDQUOT`) yields [`SpoolError::DiskFull`]; the partial write is
//! truncated away so the spool stays consistent and appends succeed again
//! once space is freed.
//!
//! # Code
//!
//! This file is the queue (state, appends, reads, acks); `segments.rs` the segment files
//! (rotation, room under `max_bytes`, deletion, reading back); `checkpoint.rs` the background
//! fsync and the ack checkpoint; `recovery.rs` the scan at open; [`format`](mod@format) the
//! on-disk codecs and `crc.rs` their checksum; `acks.rs` the out-of-order acknowledgement set.
//!
//! # Concurrency
//!
//! [`Spool`] is `Send + Sync`; share it with `Arc`. Appends are serialised by
//! a writer lock (one writer task is expected), [`Spool::next_batch`] by a
//! reader lock (one reader task), and acks may come from any thread. File I/O
//! happens outside the shared-state lock. Recently appended records are kept
//! in a bounded in-memory tail (`memory_tail_bytes`) as zero-copy slices of
//! the batch buffer, so a reader that keeps up never touches the disk; a
//! lagging reader reads segment files with its own handle (`pread`) up to the
//! committed length. [`Spool::data_notify`] is notified after each append,
//! [`Spool::space_notify`] when space is freed (segments deleted, or an ack
//! completes a segment); both are `tokio::sync::Notify` used with
//! `notify_one`, so a single waiter never misses a wake-up.
//!
//! ```no_run
//! use logferry_spool::{Spool, SpoolConfig};
//! let (spool, events) = Spool::open("/var/lib/logferry/spool", SpoolConfig::default())?;
//! for e in &events { eprintln!("spool recovery: {e}"); }
//! spool.append_batch(&[b"line one".as_slice(), b"line two".as_slice()])?;
//! for rec in spool.next_batch(1000, 1 << 20)? {
//!     // ... deliver rec.payload, then:
//!     spool.ack(rec.id);
//! }
//! spool.close()?;
//! # Ok::<(), logferry_spool::SpoolError>(())
//! ```

mod acks;
mod checkpoint;
mod crc;
mod error;
pub mod format;
mod recovery;
mod segments;

use std::collections::VecDeque;
use std::fs::{self, File};

use logferry_private_files as private_files;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::Notify;

use crate::acks::AckSet;
use crate::checkpoint::{background_loop, Background};
pub use crate::error::{RecoveryEvent, SpoolError};
use crate::format::{
    encode_checkpoint, encode_header, parse_record, segment_file_name, Parsed, CHECKPOINT_FILE,
    HEADER_LEN, LOCK_FILE,
};
use crate::recovery::{fsync_dir, push_time_mark, SegMeta};

/// Bytes the reader fetches from a segment per `pread`.
const READ_CHUNK: usize = 256 * 1024;
/// Per-record bookkeeping charged against `memory_tail_bytes`.
const MEM_OVERHEAD: usize = 48;

/// When appended data is forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` before every `append*` returns.
    Always,
    /// `fdatasync` from a background thread at this interval (when something
    /// was appended), at segment rotation and on [`Spool::flush`].
    Interval(Duration),
}

impl Default for FsyncPolicy {
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(100))
    }
}

/// What `append` does when the spool has reached `max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Return [`SpoolError::Full`]; the caller applies backpressure.
    #[default]
    Block,
    /// Delete the oldest segments (even if unacknowledged) to make room; the
    /// discarded records are counted and returned.
    DropOldest,
}

/// Spool configuration. `Default` gives the production defaults.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Upper bound on the total size of live segment files (default 1 GiB).
    pub max_bytes: u64,
    /// Target segment size (default 64 MiB), at most half of `max_bytes`. A batch never
    /// spans segments, so a segment can exceed this by one batch when it starts empty.
    pub segment_bytes: u64,
    /// Durability policy (default `Interval(100ms)`).
    pub fsync: FsyncPolicy,
    /// Behaviour when full (default `Block`).
    pub full_policy: FullPolicy,
    /// How often the acknowledged watermark is persisted (default 100 ms).
    pub checkpoint_interval: Duration,
    /// Largest accepted payload (default 4 MiB); longer lengths found on disk
    /// are treated as corruption.
    pub max_record_bytes: u32,
    /// Budget for the in-memory tail of recent records served to the reader
    /// without disk reads (default 16 MiB; 0 disables).
    pub memory_tail_bytes: usize,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            max_bytes: 1 << 30,
            segment_bytes: 64 << 20,
            fsync: FsyncPolicy::default(),
            full_policy: FullPolicy::default(),
            checkpoint_interval: Duration::from_millis(100),
            max_record_bytes: 4 << 20,
            memory_tail_bytes: 16 << 20,
        }
    }
}

/// A record handed to the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Id to pass to [`Spool::ack`].
    pub id: u64,
    /// Wall-clock append time, milliseconds since the Unix epoch.
    pub appended_ms: u64,
    pub payload: Bytes,
}

/// A batch of payloads that writes each payload straight into the spool's write buffer
/// ([`Spool::append_payloads`]), for a caller whose records are made of parts: building
/// each as a buffer of its own first cost an allocation and a copy per record.
pub trait Payloads {
    /// How many payloads.
    fn count(&self) -> usize;
    /// The length of payload `i`: exactly what [`Payloads::write`] writes.
    fn len(&self, i: usize) -> usize;
    /// Appends payload `i` to `out`.
    fn write(&self, i: usize, out: &mut BytesMut);
}

impl<B: AsRef<[u8]>> Payloads for [B] {
    fn count(&self) -> usize {
        <[B]>::len(self)
    }

    fn len(&self, i: usize) -> usize {
        self[i].as_ref().len()
    }

    fn write(&self, i: usize, out: &mut BytesMut) {
        out.extend_from_slice(self[i].as_ref());
    }
}

/// Result of a successful append: the batch got ids
/// `first_id..first_id + count`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    pub first_id: u64,
    pub count: usize,
    /// Unacknowledged records discarded to make room (`DropOldest` only).
    pub dropped_records: u64,
    /// Bytes of segment files deleted to make room (`DropOldest` only).
    pub dropped_bytes: u64,
}

/// Point-in-time statistics for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Sum of live segment file sizes (what `max_bytes` bounds).
    pub bytes_on_disk: u64,
    pub segments: usize,
    /// Id the next appended record will get.
    pub next_id: u64,
    /// In-memory delivered watermark (all ids below are acknowledged).
    pub watermark: u64,
    /// Watermark last written to `ack.ckpt`.
    pub persisted_watermark: u64,
    /// Records on disk not yet acknowledged.
    pub records_pending: u64,
    /// Records not yet handed to the reader.
    pub records_unread: u64,
    /// Append time (ms since epoch) of the oldest unacknowledged record,
    /// to within one second (lower bound).
    pub oldest_pending_appended_ms: Option<u64>,
    /// Totals since open, for `DropOldest`.
    pub dropped_records: u64,
    pub dropped_bytes: u64,
    pub dropped_segments: u64,
    /// Acks for ids never assigned (ignored).
    pub invalid_acks: u64,
    pub fsync_errors: u64,
    /// Failed writes, deletions, checkpoint writes.
    pub io_errors: u64,
}

/// The clock as the spool's records keep it: unsigned (a clock before 1970 reads 0).
pub(crate) fn now_ms() -> u64 {
    u64::try_from(logferry_time::now_ms()).unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock is a bug in this crate; the protected state
    // is still consistent at every await-free step, so keep going.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct MemRec {
    id: u64,
    appended_ms: u64,
    payload: Bytes,
}

struct State {
    segments: VecDeque<SegMeta>,
    next_id: u64,
    bytes_on_disk: u64,
    acks: AckSet,
    persisted_watermark: u64,
    read_cursor: u64,
    mem: VecDeque<MemRec>,
    mem_bytes: usize,
    time_marks: VecDeque<(u64, u64)>,
    active_file: Option<Arc<File>>,
    dirty: bool,
    sync_error: Option<String>,
    dropped_records: u64,
    dropped_bytes: u64,
    dropped_segments: u64,
    invalid_acks: u64,
    fsync_errors: u64,
    io_errors: u64,
}

impl State {
    /// Re-establishes invariants after the watermark moved: the watermark
    /// skips gaps between segments, the read cursor is not behind it, and
    /// time marks below it are trimmed.
    fn normalize(&mut self) {
        loop {
            let w = self.acks.watermark();
            let idx = self.segments.partition_point(|s| s.end <= w);
            let target = match self.segments.get(idx) {
                Some(s) if s.first > w => s.first,
                Some(_) => break,
                None if w < self.next_id => self.next_id,
                None => break,
            };
            self.acks.advance_to(target);
        }
        let w = self.acks.watermark();
        if self.read_cursor < w {
            self.read_cursor = w;
        }
        while self.time_marks.len() >= 2 && self.time_marks[1].0 <= w {
            self.time_marks.pop_front();
        }
        while self.mem.front().is_some_and(|m| m.id < w) {
            if let Some(m) = self.mem.pop_front() {
                self.mem_bytes = self
                    .mem_bytes
                    .saturating_sub(m.payload.len() + MEM_OVERHEAD);
            }
        }
    }

    fn records_from(&self, from: u64) -> u64 {
        self.segments
            .iter()
            .map(|s| s.end.saturating_sub(s.first.max(from)))
            .sum()
    }
}

struct Active {
    first: u64,
    file: Arc<File>,
    len: u64,
}

struct Writer {
    active: Option<Active>,
    next_id: u64,
    poisoned: Option<String>,
}

struct Reader {
    seg_first: u64,
    file: Option<File>,
    offset: u64,
    id: u64,
    chunk: Bytes,
}

struct Inner {
    dir: PathBuf,
    cfg: SpoolConfig,
    state: Mutex<State>,
    writer: Mutex<Writer>,
    reader: Mutex<Reader>,
    /// Serialises checkpoint writes; holds the time of the last one.
    ckpt: Mutex<Instant>,
    /// Held across popping segments from the list and unlinking them, so a
    /// returning `flush` has no deletion still in flight on another thread.
    deleting: Mutex<()>,
    data_notify: Arc<Notify>,
    space_notify: Arc<Notify>,
    /// Stops and wakes the background thread ([`background_loop`]).
    background: Arc<Background>,
    _lock: File,
}

/// The spool. See the [crate documentation](crate).
pub struct Spool {
    inner: Arc<Inner>,
    background: Option<JoinHandle<()>>,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Spool>();
};

impl Spool {
    /// Opens (creating if needed) the spool in `dir`, running recovery.
    ///
    /// Returns the spool and what recovery found; log every event and count
    /// [`RecoveryEvent::is_data_loss`] ones.
    pub fn open(
        dir: impl AsRef<Path>,
        cfg: SpoolConfig,
    ) -> Result<(Spool, Vec<RecoveryEvent>), SpoolError> {
        if cfg.segment_bytes > cfg.max_bytes / 2 {
            return Err(SpoolError::InvalidConfig(format!(
                "segment_bytes ({}) is more than half of max_bytes ({}): the active segment is never deleted, so the spool could stay full with everything delivered",
                cfg.segment_bytes, cfg.max_bytes
            )));
        }
        let dir = dir.as_ref().to_path_buf();
        private_files::create_dir_all(&dir).map_err(|e| SpoolError::io("creating", &dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = private_files::open_lock(&lock_path)
            .map_err(|e| SpoolError::io("opening", &lock_path, e))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(SpoolError::Locked { path: dir }),
            Err(fs::TryLockError::Error(e)) => {
                return Err(SpoolError::io("locking", &lock_path, e))
            }
        }
        let max_record_bytes = cfg.max_record_bytes.max(1);
        let rec = recovery::recover(&dir, max_record_bytes)?;
        let mut cfg = cfg;
        cfg.max_record_bytes = max_record_bytes;
        cfg.segment_bytes = cfg.segment_bytes.max(1);

        let bytes_on_disk = rec.segments.iter().map(|s| s.len).sum();
        let mut state = State {
            segments: rec.segments,
            next_id: rec.next_id,
            bytes_on_disk,
            acks: AckSet::new(rec.watermark),
            persisted_watermark: rec.watermark,
            read_cursor: rec.watermark,
            mem: VecDeque::new(),
            mem_bytes: 0,
            time_marks: rec.time_marks,
            active_file: None,
            dirty: false,
            sync_error: None,
            dropped_records: 0,
            dropped_bytes: 0,
            dropped_segments: 0,
            invalid_acks: 0,
            fsync_errors: 0,
            io_errors: 0,
        };
        state.normalize();

        // Keep appending to the last segment if it continues the id sequence.
        let mut active = None;
        if let Some(last) = state.segments.back() {
            if last.end == state.next_id && last.len < cfg.segment_bytes {
                let path = dir.join(segment_file_name(last.first));
                let file = private_files::open_write(&path)
                    .map_err(|e| SpoolError::io("opening segment", &path, e))?;
                let file = Arc::new(file);
                state.active_file = Some(Arc::clone(&file));
                active = Some(Active {
                    first: last.first,
                    file,
                    len: last.len,
                });
            }
        }
        let writer = Writer {
            active,
            next_id: state.next_id,
            poisoned: None,
        };
        let background = Arc::new(Background {
            stop: Mutex::new(false),
            cv: Condvar::new(),
            parked: std::sync::atomic::AtomicBool::new(false),
        });
        let inner = Arc::new(Inner {
            background: Arc::clone(&background),
            dir,
            state: Mutex::new(state),
            writer: Mutex::new(writer),
            reader: Mutex::new(Reader {
                seg_first: 0,
                file: None,
                offset: 0,
                id: 0,
                chunk: Bytes::new(),
            }),
            ckpt: Mutex::new(Instant::now()),
            deleting: Mutex::new(()),
            data_notify: Arc::new(Notify::new()),
            space_notify: Arc::new(Notify::new()),
            _lock: lock_file,
            cfg,
        });
        let mut tick = inner.cfg.checkpoint_interval;
        if let FsyncPolicy::Interval(d) = inner.cfg.fsync {
            tick = tick.min(d);
        }
        let tick = tick.max(Duration::from_millis(1));
        let weak = Arc::downgrade(&inner);
        let thread = std::thread::Builder::new()
            .name("logferry-spool-sync".into())
            .spawn(move || background_loop(weak, background, tick))
            .map_err(|e| SpoolError::io("spawning sync thread for", &inner.dir, e))?;
        Ok((
            Spool {
                inner,
                background: Some(thread),
            },
            rec.events,
        ))
    }

    /// Appends one record. See [`Spool::append_batch`].
    pub fn append(&self, payload: &[u8]) -> Result<AppendOutcome, SpoolError> {
        self.append_batch(std::slice::from_ref(&payload))
    }

    /// Appends a batch atomically (all records or none) with a single write
    /// syscall; returns the ids assigned. With [`FsyncPolicy::Always`] the
    /// batch is fsynced before returning.
    ///
    /// Errors: [`SpoolError::Full`] / [`SpoolError::DiskFull`] (nothing was
    /// appended; see [`SpoolError::is_full`]), [`SpoolError::RecordTooLarge`],
    /// [`SpoolError::BatchTooLarge`], I/O errors.
    pub fn append_batch<B: AsRef<[u8]>>(
        &self,
        payloads: &[B],
    ) -> Result<AppendOutcome, SpoolError> {
        self.append_payloads(payloads)
    }

    /// Appends a batch whose payloads write themselves into the write buffer
    /// ([`Payloads`]): like [`Spool::append_batch`], without a buffer per
    /// payload built first and copied.
    pub fn append_payloads<P: Payloads + ?Sized>(
        &self,
        payloads: &P,
    ) -> Result<AppendOutcome, SpoolError> {
        let inner = &*self.inner;
        let max_rec = inner.cfg.max_record_bytes;
        let n = payloads.count();
        let mut total: u64 = 0;
        for i in 0..n {
            let len = payloads.len(i);
            if len > max_rec as usize {
                return Err(SpoolError::RecordTooLarge { len, max: max_rec });
            }
            total += (HEADER_LEN + len) as u64;
        }
        let mut w = lock(&inner.writer);
        if let Some(p) = &w.poisoned {
            return Err(SpoolError::Poisoned(p.clone()));
        }
        if n == 0 {
            return Ok(AppendOutcome {
                first_id: w.next_id,
                ..AppendOutcome::default()
            });
        }
        if total > inner.cfg.max_bytes {
            return Err(SpoolError::BatchTooLarge {
                len: total,
                max: inner.cfg.max_bytes,
            });
        }
        let (dropped_records, dropped_bytes) = inner.make_room(&mut w, total)?;
        let rotate = match &w.active {
            None => true,
            Some(a) => a.len > 0 && a.len + total > inner.cfg.segment_bytes,
        };
        if rotate {
            inner.rotate(&mut w)?;
        }
        let first_id = w.next_id;
        let ts = now_ms();
        let mut buf = BytesMut::with_capacity(total as usize);
        for i in 0..n {
            // The header goes in front of the payload once the payload is there to checksum.
            let start = buf.len();
            buf.resize(start + HEADER_LEN, 0);
            payloads.write(i, &mut buf);
            let payload = &buf[start + HEADER_LEN..];
            if payload.len() != payloads.len(i) {
                // Room was made for the announced lengths, and the memory tail is cut by
                // them: nothing of such a batch is written.
                return Err(SpoolError::PayloadLengths {
                    announced: payloads.len(i),
                    written: payload.len(),
                });
            }
            let header = encode_header(first_id + i as u64, ts, payload);
            buf[start..start + HEADER_LEN].copy_from_slice(&header);
        }
        let n = n as u64;
        let buf = buf.freeze();
        let mut retried = false;
        loop {
            let Some(active) = w.active.as_ref() else {
                return Err(SpoolError::Poisoned("no active segment".into()));
            };
            let start = active.len;
            let file = Arc::clone(&active.file);
            let seg_path = inner.seg_path(active.first);
            let mut res = file.write_all_at(&buf, start);
            if res.is_ok() && inner.cfg.fsync == FsyncPolicy::Always {
                res = file.sync_data();
            }
            let Err(e) = res else { break };
            // Roll back whatever part of the batch reached the file.
            if let Err(te) = file.set_len(start) {
                w.poisoned = Some(format!(
                    "could not truncate {} back to {start} bytes after a failed write: {te}",
                    seg_path.display()
                ));
            }
            lock(&inner.state).io_errors += 1;
            // EFBIG (per-file size limit): a fresh segment may take it.
            let too_big =
                e.kind() == std::io::ErrorKind::FileTooLarge || e.raw_os_error() == Some(27);
            if too_big && !retried && start > 0 && w.poisoned.is_none() {
                retried = true;
                inner.rotate(&mut w)?;
                continue;
            }
            return Err(SpoolError::io("appending to", seg_path, e));
        }
        if let Some(a) = w.active.as_mut() {
            a.len += total;
        }
        w.next_id = first_id + n;
        {
            let mut guard = lock(&inner.state);
            let st = &mut *guard;
            if let Some(seg) = st.segments.back_mut() {
                seg.len += total;
                seg.end = first_id + n;
            }
            st.next_id = first_id + n;
            st.bytes_on_disk += total;
            if inner.cfg.fsync != FsyncPolicy::Always {
                st.dirty = true;
            }
            push_time_mark(&mut st.time_marks, first_id, ts);
            let cap = inner.cfg.memory_tail_bytes;
            if cap > 0 {
                let mut off = 0usize;
                for i in 0..n as usize {
                    let len = payloads.len(i);
                    st.mem.push_back(MemRec {
                        id: first_id + i as u64,
                        appended_ms: ts,
                        payload: buf.slice(off + HEADER_LEN..off + HEADER_LEN + len),
                    });
                    st.mem_bytes += len + MEM_OVERHEAD;
                    off += HEADER_LEN + len;
                }
                while st.mem_bytes > cap {
                    let Some(m) = st.mem.pop_front() else { break };
                    st.mem_bytes = st.mem_bytes.saturating_sub(m.payload.len() + MEM_OVERHEAD);
                }
            }
        }
        drop(w);
        inner.data_notify.notify_one();
        if inner.cfg.fsync != FsyncPolicy::Always {
            inner.background.work_added();
        }
        Ok(AppendOutcome {
            first_id,
            count: n as usize,
            dropped_records,
            dropped_bytes,
        })
    }

    /// Returns up to `max_records` records (and about `max_bytes` of payload,
    /// but at least one record if any is available) in id order, starting
    /// after the last record returned. Returns immediately; an empty vector
    /// means nothing new — wait on [`Spool::data_notify`].
    ///
    /// Records returned are not removed until [`Spool::ack`]ed; after a
    /// reopen, unacknowledged ones are returned again.
    pub fn next_batch(
        &self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, SpoolError> {
        let inner = &*self.inner;
        let mut rd = lock(&inner.reader);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        while out.len() < max_records && (bytes < max_bytes || out.is_empty()) {
            let plan = {
                let mut guard = lock(&inner.state);
                let st = &mut *guard;
                let c = st.read_cursor;
                if c >= st.next_id {
                    break;
                }
                let mem_first = st.mem.front().map(|m| m.id);
                if let Some(front) = mem_first.filter(|&f| c >= f) {
                    let start = usize::try_from(c - front).unwrap_or(usize::MAX);
                    let mut newc = c;
                    for m in st.mem.range(start.min(st.mem.len())..) {
                        if out.len() >= max_records
                            || (!out.is_empty() && bytes + m.payload.len() > max_bytes)
                        {
                            break;
                        }
                        if !st.acks.is_acked(m.id) {
                            bytes += m.payload.len();
                            out.push(Record {
                                id: m.id,
                                appended_ms: m.appended_ms,
                                payload: m.payload.clone(),
                            });
                        }
                        newc = m.id + 1;
                    }
                    st.read_cursor = newc;
                    while st.mem.front().is_some_and(|m| m.id < newc) {
                        if let Some(m) = st.mem.pop_front() {
                            st.mem_bytes =
                                st.mem_bytes.saturating_sub(m.payload.len() + MEM_OVERHEAD);
                        }
                    }
                    break;
                }
                let idx = st.segments.partition_point(|s| s.end <= c);
                let Some(seg) = st.segments.get(idx).copied() else {
                    st.read_cursor = st.next_id;
                    break;
                };
                if seg.first > c {
                    st.read_cursor = seg.first;
                    continue;
                }
                (seg, c, seg.end.min(mem_first.unwrap_or(u64::MAX)))
            };
            let (seg, c, stop_at) = plan;
            let before = out.len();
            let newc = inner.read_disk(
                &mut rd,
                seg,
                c,
                stop_at,
                max_records,
                max_bytes,
                &mut out,
                &mut bytes,
            )?;
            let Some(newc) = newc else { continue };
            {
                let mut st = lock(&inner.state);
                if newc > st.read_cursor {
                    st.read_cursor = newc;
                }
            }
            if newc == c && out.len() == before {
                break; // no progress possible (limits reached)
            }
        }
        Ok(out)
    }

    /// Acknowledges delivery of record `id` (any order). Unknown ids are
    /// ignored and counted in [`SpoolStats::invalid_acks`].
    pub fn ack(&self, id: u64) {
        self.ack_many(std::slice::from_ref(&id));
    }

    /// Acknowledges many ids under one lock acquisition.
    pub fn ack_many(&self, ids: &[u64]) {
        let inner = &*self.inner;
        let mut st = lock(&inner.state);
        let w0 = st.acks.watermark();
        for &id in ids {
            if id == 0 || id >= st.next_id {
                st.invalid_acks += 1;
                continue;
            }
            st.acks.ack(id);
        }
        if st.acks.watermark() != w0 {
            st.normalize();
            let w = st.acks.watermark();
            let frees = st.segments.len() > 1 && st.segments.front().is_some_and(|s| s.end <= w);
            drop(st);
            inner.background.work_added();
            if frees {
                inner.space_notify.notify_one();
            }
        }
    }

    /// Makes everything appended so far durable (fdatasync), persists the
    /// acknowledged watermark and deletes fully acknowledged segments.
    pub fn flush(&self) -> Result<(), SpoolError> {
        let inner = &*self.inner;
        inner.sync_active(true)?;
        if let Some(msg) = lock(&inner.state).sync_error.take() {
            return Err(SpoolError::SyncFailed(msg));
        }
        inner.checkpoint()
    }

    /// Flushes and closes. Dropping without `close` is like a process crash:
    /// acks since the last checkpoint are redelivered next time.
    pub fn close(self) -> Result<(), SpoolError> {
        self.flush()
    }

    /// Makes the reader start again from the watermark (e.g. after the sink
    /// lost an in-flight batch). Records above the watermark that were already
    /// acknowledged may be returned again.
    pub fn rewind(&self) {
        let mut rd = lock(&self.inner.reader);
        rd.file = None;
        rd.chunk = Bytes::new();
        let mut st = lock(&self.inner.state);
        st.read_cursor = st.acks.watermark();
    }

    /// Notified (`notify_one`) after every append: the reader's wake-up.
    pub fn data_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.data_notify)
    }

    /// Notified (`notify_one`) when space may have been freed: a writer that
    /// got [`SpoolError::Full`] waits on this and retries.
    pub fn space_notify(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.space_notify)
    }

    /// Current statistics.
    pub fn stats(&self) -> SpoolStats {
        let st = lock(&self.inner.state);
        let w = st.acks.watermark();
        let pending = st
            .records_from(w)
            .saturating_sub(st.acks.acked_above_watermark());
        let oldest = if pending == 0 {
            None
        } else {
            let idx = st.time_marks.partition_point(|&(id, _)| id <= w);
            st.time_marks.get(idx.saturating_sub(1)).map(|&(_, ms)| ms)
        };
        SpoolStats {
            bytes_on_disk: st.bytes_on_disk,
            segments: st.segments.len(),
            next_id: st.next_id,
            watermark: w,
            persisted_watermark: st.persisted_watermark,
            records_pending: pending,
            records_unread: st.records_from(st.read_cursor),
            oldest_pending_appended_ms: oldest,
            dropped_records: st.dropped_records,
            dropped_bytes: st.dropped_bytes,
            dropped_segments: st.dropped_segments,
            invalid_acks: st.invalid_acks,
            fsync_errors: st.fsync_errors,
            io_errors: st.io_errors,
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The effective configuration.
    pub fn config(&self) -> &SpoolConfig {
        &self.inner.cfg
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        self.inner.background.stop();
        if let Some(h) = self.background.take() {
            let _ = h.join();
        }
    }
}
