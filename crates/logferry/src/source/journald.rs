//! The journald source: the systemd journal, read natively from its files, resumed from a
//! saved cursor that only ever points at delivered entries.
//!
//! The reader (`logferry-journal`) is synchronous, so it runs on its own thread: it reads up to
//! [`CHUNK_EVENTS`] entries, turns the ones that pass the filters into events tied to one
//! acknowledgement batch, registers the batch with the cursor of its last entry (filtered-out
//! entries included, so a long run of them still moves the position), and sends the chunk,
//! blocking while the sink's channel is full: the journal simply waits on disk. Reaching the
//! journal's end after a backlog, it tells the sinks so ([`SourceContext::caught_up`]): the
//! backlog's last partial request then goes at once instead of after `batch_timeout`.
//!
//! The source's [`Keeper`](super::positions::Keeper) collects batch outcomes into a
//! [`Watermark`](crate::ack::Watermark) and saves the cursor of the newest batch whose
//! predecessors are all delivered (or dead-lettered), at most every 20 ms and once more at
//! shutdown, with write-temp + fsync + rename. After a crash, the reader resumes after that
//! cursor: nothing is lost, and what was in flight is sent again.
//!
//! With no saved cursor, `start = "end"` (or a time) is turned into a time-only cursor saved
//! before reading, so a crash before the first delivery resumes from the first start's
//! position rather than the journal's end at the restart.
//!
//! The cursor is in systemd's own format, so `journalctl --after-cursor="$(cat FILE)"` agrees
//! with it, and a cursor written by another tool can seed it.
//!
//! Cost per entry matters (a node's journal can hold millions): the fields logferry uses are
//! found in one pass over each entry ([`Known`]), a chunk's events share one buffer
//! ([`ChunkBuilder`]), and the journal's mapped pages are released from the resident set as
//! the reader moves on.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logferry_journal::{Cursor, Entry, Journal};
use tokio::sync::mpsc;

use super::positions::{Keeper, Single};
use super::{Chunk, SourceContext, CAUGHT_UP_AFTER, CHUNK_EVENTS};
use crate::ack::AckBatch;
use crate::config::{JournalStart, JournaldSourceConfig};
use crate::event::{names, Event, FieldName};

/// How often the cursor file is rewritten at most. Everything delivered since the last save is
/// sent again after a crash, so this bounds duplicates (by time, not count); each save is a
/// small write + fsync + rename.
const SAVE_EVERY: Duration = Duration::from_millis(20);
/// Every this many batches the journal's mapped pages already read are released from our
/// resident set (reading a 300 MB journal would otherwise show 300 MB of RSS).
const RELEASE_EVERY_BATCHES: u64 = 8;
/// How long the reader waits for journal changes before checking for shutdown (inotify wakes
/// it for new entries; the journal also rescans its directories this often). Once a second
/// keeps an idle node's cost near zero.
const WAIT_SLICE: Duration = Duration::from_secs(1);
/// Most entries examined per chunk, so heavy filtering still moves the cursor often.
const SCAN_LIMIT: usize = 8 * CHUNK_EVENTS;

/// Where this source keeps its cursor.
pub fn cursor_path(data_dir: &std::path::Path, source: &str) -> PathBuf {
    data_dir.join("journald").join(format!("{source}.cursor"))
}

/// Runs the source until shutdown.
pub async fn run(ctx: SourceContext, cfg: JournaldSourceConfig, data_dir: PathBuf) {
    let path = cursor_path(&data_dir, &ctx.name);
    let keeper = Keeper {
        path: path.clone(),
        every: SAVE_EVERY,
        // `logferry tail` reads from the saved cursor but never moves it.
        dry_run: cfg.dry_run,
        what: "cursor",
        stats: ctx.stats.clone(),
    };
    let saved = match crate::state::load(&path) {
        Ok(s) => s.and_then(|s| match s.trim().parse::<Cursor>() {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "ignoring unreadable cursor file");
                None
            }
        }),
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the cursor file");
            None
        }
    };
    // Without a saved cursor, `start = "end"` (or a time) would be re-evaluated on the next
    // start: entries written after this start but not delivered before a crash would be
    // skipped. Save a time-only cursor for the starting point now, so a restart resumes there
    // until the first delivered entry moves it (taken before seeking: at worst an entry or two
    // are sent again, never skipped).
    if saved.is_none() {
        let since = match cfg.start {
            JournalStart::Beginning => None,
            JournalStart::End => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| (d.as_micros() as u64).saturating_sub(1)),
            JournalStart::Since(usec) => Some(usec.saturating_sub(1)),
        };
        if let Some(t) = since {
            let start = Cursor {
                realtime: Some(t),
                ..Cursor::default()
            };
            keeper.save(Some(encode_cursor(&start))).await;
        }
    }
    let handle = tokio::runtime::Handle::current();
    let reader_ctx = ctx.clone();
    let books = Single::new(encode_cursor);
    let thread = format!("journal-{}", ctx.name);
    keeper
        .run_reader(thread, books, move |outcomes, register| {
            read_loop(reader_ctx, cfg, saved, outcomes, register, handle)
        })
        .await;
}

fn encode_cursor(cursor: &Cursor) -> Vec<u8> {
    format!("{cursor}\n").into_bytes()
}

struct Filter {
    units: Vec<Vec<u8>>,
    exclude_units: Vec<Vec<u8>>,
    identifiers: Vec<Vec<u8>>,
    priority: Option<u8>,
    matches: Vec<Vec<(String, Vec<u8>)>>,
}

impl Filter {
    fn new(cfg: &JournaldSourceConfig) -> Filter {
        let bytes = |v: &[String]| v.iter().map(|s| s.as_bytes().to_vec()).collect();
        Filter {
            units: bytes(&cfg.units),
            exclude_units: bytes(&cfg.exclude_units),
            identifiers: bytes(&cfg.identifiers),
            priority: cfg.priority,
            matches: cfg
                .matches
                .iter()
                .map(|g| {
                    g.iter()
                        .map(|(f, v)| (f.clone(), v.as_bytes().to_vec()))
                        .collect()
                })
                .collect(),
        }
    }

    fn keep(&self, e: &Entry, k: &Known<'_>) -> bool {
        if !self.units.is_empty() && !k.unit.is_some_and(|u| self.units.iter().any(|x| x == u)) {
            return false;
        }
        if k.unit
            .is_some_and(|u| self.exclude_units.iter().any(|x| x == u))
        {
            return false;
        }
        if !self.identifiers.is_empty()
            && !k
                .syslog_identifier
                .is_some_and(|i| self.identifiers.iter().any(|x| x == i))
        {
            return false;
        }
        if let (Some(max), Some(p)) = (self.priority, k.priority()) {
            if p > max {
                return false;
            }
        }
        if !self.matches.is_empty()
            && !self.matches.iter().any(|group| {
                group
                    .iter()
                    .all(|(f, v)| e.field_values(f).any(|have| have == v.as_slice()))
            })
        {
            return false;
        }
        true
    }
}

/// The fields logferry looks at, found in one pass over an entry (looking each up by name
/// would walk the entry's fields a dozen times per entry: the reader's main cost once).
/// The first value of each wins, as `Entry::field` and journalctl do.
#[derive(Default)]
struct Known<'a> {
    message: Option<&'a [u8]>,
    pid: Option<&'a [u8]>,
    syslog_pid: Option<&'a [u8]>,
    syslog_identifier: Option<&'a [u8]>,
    comm: Option<&'a [u8]>,
    hostname: Option<&'a [u8]>,
    unit: Option<&'a [u8]>,
    boot_id: Option<&'a [u8]>,
    container_name: Option<&'a [u8]>,
    transport: Option<&'a [u8]>,
    source_realtime: Option<&'a [u8]>,
    facility: Option<&'a [u8]>,
    priority: Option<&'a [u8]>,
}

impl<'a> Known<'a> {
    fn scan(e: &'a Entry) -> Known<'a> {
        let mut k = Known::default();
        for (name, v) in e.fields_bytes() {
            let slot = match name {
                b"MESSAGE" => &mut k.message,
                b"_PID" => &mut k.pid,
                b"SYSLOG_PID" => &mut k.syslog_pid,
                b"SYSLOG_IDENTIFIER" => &mut k.syslog_identifier,
                b"_COMM" => &mut k.comm,
                b"_HOSTNAME" => &mut k.hostname,
                b"_SYSTEMD_UNIT" => &mut k.unit,
                b"_BOOT_ID" => &mut k.boot_id,
                b"CONTAINER_NAME" => &mut k.container_name,
                b"_TRANSPORT" => &mut k.transport,
                b"_SOURCE_REALTIME_TIMESTAMP" => &mut k.source_realtime,
                b"SYSLOG_FACILITY" => &mut k.facility,
                b"PRIORITY" => &mut k.priority,
                _ => continue,
            };
            if slot.is_none() {
                *slot = Some(v);
            }
        }
        k
    }

    fn priority(&self) -> Option<u8> {
        match self.priority {
            Some([d]) if d.is_ascii_digit() && *d <= b'7' => Some(d - b'0'),
            _ => None,
        }
    }
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// An event whose bytes are in [`ChunkBuilder::buf`], not yet sliced.
struct Pending {
    message: (usize, usize),
    /// Range of [`ChunkBuilder::spans`].
    fields: (usize, usize),
    timestamp_ms: i64,
    priority: Option<u8>,
    ack: crate::ack::Ack,
    origin: u64,
}

/// Builds the events of one chunk over one shared buffer: the values kept from each entry are
/// copied into it, and the events' messages and fields are slices of it. That is one buffer
/// allocation per chunk instead of two or three per event; the sink renders and drops a
/// chunk's events together, so the buffer does not outlive them by much.
#[derive(Default)]
struct ChunkBuilder {
    buf: Vec<u8>,
    spans: Vec<(FieldName, usize, usize)>,
    pending: Vec<Pending>,
}

impl ChunkBuilder {
    fn len(&self) -> usize {
        self.pending.len()
    }

    fn push(
        &mut self,
        e: &Entry,
        k: &Known<'_>,
        extra: &[(String, FieldName)],
        ack: crate::ack::Ack,
    ) {
        // As `journalctl -o short` does: the trusted `_PID` first, then the one the sender
        // claims; the identifier falls back to the command name.
        let standard: [(&'static str, Option<&[u8]>); 7] = [
            (names::HOSTNAME, k.hostname),
            (names::IDENTIFIER, k.syslog_identifier.or(k.comm)),
            (names::UNIT, k.unit),
            ("boot_id", k.boot_id),
            ("container_name", k.container_name),
            ("transport", k.transport),
            (names::PID, k.pid.or(k.syslog_pid)),
        ];
        let msg_start = self.buf.len();
        self.buf.extend_from_slice(k.message.unwrap_or_default());
        let message = (msg_start, self.buf.len());
        let first_span = self.spans.len();
        for (name, v) in standard {
            if let Some(v) = v {
                let start = self.buf.len();
                self.buf.extend_from_slice(v);
                self.spans
                    .push((FieldName::Static(name), start, self.buf.len()));
            }
        }
        for (journal_name, name) in extra {
            for v in e.field_values(journal_name) {
                let start = self.buf.len();
                self.buf.extend_from_slice(v);
                self.spans.push((name.clone(), start, self.buf.len()));
            }
        }
        let usec = k
            .source_realtime
            .and_then(parse_u64)
            .unwrap_or(e.realtime_usec);
        let facility = k
            .facility
            .and_then(parse_u64)
            .filter(|f| *f < 24)
            .unwrap_or(1) as u8;
        self.pending.push(Pending {
            message,
            fields: (first_span, self.spans.len()),
            timestamp_ms: (usec / 1000) as i64,
            priority: k.priority().map(|p| facility * 8 + p),
            ack,
            // The cursor's fields: an entry's place in its journal, for good.
            origin: crate::event::origin(&[
                &e.seqnum_id,
                &e.seqnum.to_le_bytes(),
                &e.realtime_usec.to_le_bytes(),
                &e.xor_hash.to_le_bytes(),
            ]),
        });
    }

    /// The chunk's events; the builder is empty again (its scratch vectors keep their room).
    fn finish(&mut self, source: &Arc<str>) -> Chunk {
        // The next chunk is likely the same size: reserve it up front (capped) to spare the
        // reader a dozen doublings per chunk.
        let next = Vec::with_capacity(self.buf.len().min(4 << 20));
        let all = Bytes::from(std::mem::replace(&mut self.buf, next));
        let spans = &self.spans;
        let slice = |(s, e): (usize, usize)| all.slice(s..e);
        let chunk = self
            .pending
            .drain(..)
            .map(|p| Event {
                timestamp_ms: p.timestamp_ms,
                message: slice(p.message),
                priority: p.priority,
                common: None,
                fields: spans
                    .get(p.fields.0..p.fields.1)
                    .unwrap_or_default()
                    .iter()
                    .map(|(n, s, e)| (n.clone(), slice((*s, *e))))
                    .collect(),
                source: source.clone(),
                truncated_bytes: 0,
                ack: p.ack,
                origin: p.origin,
                header: None,
                merged: None,
            })
            .collect();
        self.spans.clear();
        chunk
    }
}

fn read_loop(
    ctx: SourceContext,
    cfg: JournaldSourceConfig,
    saved: Option<Cursor>,
    outcomes: mpsc::UnboundedSender<crate::ack::BatchOutcome>,
    register: mpsc::UnboundedSender<(u64, Cursor)>,
    handle: tokio::runtime::Handle,
) {
    let name = ctx.name.clone();
    let mut journal = match Journal::open_dirs(&cfg.directories) {
        Ok(j) => j,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the journal");
            return;
        }
    };
    match (&saved, &cfg.start) {
        (Some(c), _) => {
            tracing::info!(cursor = %c, "resuming after the saved cursor");
            journal.seek_after_cursor(c);
        }
        (None, JournalStart::Beginning) => journal.seek_head(),
        (None, JournalStart::End) => journal.seek_tail(),
        (None, JournalStart::Since(usec)) => journal.seek_realtime(*usec),
    }
    tracing::info!(files = journal.file_paths().len(), "journal opened");
    let filter = Filter::new(&cfg);
    let extra: Vec<(String, FieldName)> = cfg
        .fields
        .iter()
        .map(|f| {
            let shown = if cfg.strip_underscores {
                f.trim_start_matches('_')
            } else {
                f.as_str()
            };
            (
                f.clone(),
                FieldName::Owned(shown.to_ascii_lowercase().into()),
            )
        })
        .collect();
    let mut entry = Entry::new();
    let mut builder = ChunkBuilder::default();
    let mut batch_id = 0u64;
    let mut progress = Backfill::new();
    let mut read_since_release = false;
    // Entries read since the end of the journal was last reached.
    let mut backlog = 0u64;
    while !ctx.shutdown.is_cancelled() {
        // Wait for an entry before starting a batch: an `AckBatch` that is dropped empty
        // reports itself finished, so a batch must exist only once it has a position.
        match journal.next_entry_into(&mut entry) {
            Ok(true) => {}
            Ok(false) => {
                report_file_errors(&mut journal);
                if std::mem::take(&mut backlog) >= CAUGHT_UP_AFTER
                    && !handle.block_on(ctx.caught_up())
                {
                    return;
                }
                // Once per burst, not on every idle wake: it walks every mapped file.
                if std::mem::take(&mut read_since_release) {
                    journal.release_memory();
                }
                if let Err(e) = journal.wait(WAIT_SLICE) {
                    tracing::warn!(error = %e, "waiting for journal changes failed");
                    std::thread::sleep(WAIT_SLICE);
                }
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "journal read error");
                std::thread::sleep(WAIT_SLICE);
                continue;
            }
        }
        read_since_release = true;
        batch_id += 1;
        let batch = AckBatch::new(batch_id, &outcomes);
        let mut last = entry.cursor();
        let k = Known::scan(&entry);
        if filter.keep(&entry, &k) {
            builder.push(&entry, &k, &extra, batch.ack());
        }
        let mut scanned = 1;
        while builder.len() < CHUNK_EVENTS && scanned < SCAN_LIMIT {
            match journal.next_entry_into(&mut entry) {
                Ok(true) => {
                    scanned += 1;
                    last = entry.cursor();
                    let k = Known::scan(&entry);
                    if filter.keep(&entry, &k) {
                        builder.push(&entry, &k, &extra, batch.ack());
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::error!(error = %e, "journal read error");
                    break;
                }
            }
        }
        report_file_errors(&mut journal);
        backlog += scanned as u64;
        progress.entries(scanned as u64, last.realtime.unwrap_or(0), &name);
        if batch_id.is_multiple_of(RELEASE_EVERY_BATCHES) {
            journal.release_memory();
        }
        // Registered before the events leave, so the batch is known when its outcome comes
        // (the watermark also accepts outcomes that arrive first).
        if register.send((batch_id, last)).is_err() {
            return;
        }
        drop(batch);
        let chunk = builder.finish(&name);
        if !chunk.is_empty() && !handle.block_on(ctx.send(chunk)) {
            return;
        }
    }
}

/// Reports backfill progress (a source far behind the present, e.g. `start = "beginning"` on a
/// large journal) every [`Backfill::EVERY`]: rate, how far behind, and an ETA.
struct Backfill {
    since: Instant,
    entries: u64,
    journal_us_at_start: u64,
}

impl Backfill {
    const EVERY: Duration = Duration::from_secs(10);
    const BEHIND: Duration = Duration::from_secs(60);

    fn new() -> Self {
        Backfill {
            since: Instant::now(),
            entries: 0,
            journal_us_at_start: 0,
        }
    }

    fn entries(&mut self, n: u64, newest_realtime_us: u64, source: &str) {
        if self.journal_us_at_start == 0 {
            self.journal_us_at_start = newest_realtime_us;
        }
        self.entries += n;
        let elapsed = self.since.elapsed();
        if elapsed < Self::EVERY {
            return;
        }
        let now_us = (crate::event::now_ms().max(0) as u64) * 1000;
        let behind = Duration::from_micros(now_us.saturating_sub(newest_realtime_us));
        if behind > Self::BEHIND && newest_realtime_us > 0 {
            let rate = self.entries as f64 / elapsed.as_secs_f64();
            let journal_advanced =
                newest_realtime_us.saturating_sub(self.journal_us_at_start) as f64 / 1e6;
            // Journal seconds covered per wall second; catching up only when above 1.
            let speed = journal_advanced / elapsed.as_secs_f64();
            let eta = if speed > 1.0 {
                format!("{:.0} s", behind.as_secs_f64() / (speed - 1.0))
            } else {
                "unknown (not catching up)".to_string()
            };
            tracing::info!(
                source,
                entries_per_s = rate.round() as u64,
                behind_s = behind.as_secs(),
                catch_up_speed = format!("{speed:.1}x"),
                "backfill: {} behind the present, ETA {eta}",
                humantime::format_duration(Duration::from_secs(behind.as_secs()))
            );
        }
        *self = Backfill::new();
        self.journal_us_at_start = newest_realtime_us;
    }
}

fn report_file_errors(journal: &mut Journal) {
    for fe in journal.take_file_errors() {
        tracing::warn!(error = %fe, "journal file problem (other files are still read)");
    }
}
