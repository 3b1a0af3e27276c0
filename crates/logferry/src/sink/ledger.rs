//! The in-flight ledger: what each PutLogEvents request held, written before it is sent, so
//! that after a crash the next start knows what may already be in CloudWatch.
//!
//! Without it, kill -9 sends again everything that was in flight (or delivered but not yet
//! under a saved position): whole duplicate requests. With it, the next start
//! ([`super::settle`]) skips, and acknowledges as delivered, exactly the re-read events that
//! are known to be in CloudWatch: those of requests marked settled here, and those of
//! unsettled requests that GetLogEvents proves were ingested whole. Everything else is sent
//! again, as before.
//!
//! Each event is named by two 64-bit hashes: its *origin* (where the source read it: journal
//! cursor fields, file key and offset, spool record id; see [`crate::event::Event::origin`]),
//! which is what a re-read event is matched by, and its *content* (timestamp and the text
//! CloudWatch stores), which is what GetLogEvents' answer is matched by. An origin of 0 (a
//! source that cannot read again) is never skipped.
//!
//! ## Format
//!
//! `DATA_DIR/ledger/SINK.current` and `SINK.previous`, sequences of frames
//! `[len: u32 LE][crc32c(payload): u32 LE][payload]`; the payload's first byte says what it is:
//! - `1` *sent*: `id u64, first_sent_ms i64, min_ts i64, max_ts i64, group (u16 len + UTF-8),
//!   stream (u16 len + UTF-8), n u32, n x (origin u64, content u64)`, all little-endian;
//! - `2` *settled* `id u64`: CloudWatch answered 200 (every event delivered or dead-lettered);
//! - `3` *forgotten* `id u64`: the request was split in two new ones (it proves nothing).
//!
//! Appended with one `write` per record and no fsync: kill -9 keeps what `write` handed the
//! kernel, and a record lost to a power cut or a torn tail only means a resend, never a loss
//! (a *settled* record is written only after CloudWatch's 200 answer). Reading stops at the
//! first frame whose length or checksum is wrong.
//!
//! It stays small: once `current` passes [`ROTATE_BYTES`] it becomes `previous` (the old one
//! is dropped) and a new `current` starts with the still unsettled *sent* records. Settled
//! records are only needed until the positions past their events are saved (milliseconds), so
//! two generations of a few MiB keep far more than needed.
//!
//! Why no crate: no embedded database is needed for an append-only log read once at start;
//! the frame is the spool's (length + CRC32C, the `crc32c` crate), and the hashes are XXH3-64
//! (`twox-hash`, already in the tree): fast enough per event, and a collision only matters if it
//! also matches a re-read event's origin, which includes the source's position.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use logferry_private_files as private_files;

use super::batch::Pending;

/// `current` is rotated once it is this large.
pub const ROTATE_BYTES: u64 = 4 << 20;
const SENT: u8 = 1;
const SETTLED: u8 = 2;
const FORGOTTEN: u8 = 3;
/// A frame longer than this is corruption (a full request is 10,000 x 16 bytes + names).
const MAX_FRAME: usize = 1 << 20;

/// The content hash of an event as CloudWatch stores it (its input laid out in the thread's
/// scratch buffer, [`crate::event::xxh3`]: no allocation, however long the text).
pub fn content_hash(timestamp_ms: i64, message: &str) -> u64 {
    crate::event::xxh3(0, &[&timestamp_ms.to_le_bytes(), message.as_bytes()])
}

/// One event of a recorded request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Where the source read it (0: nowhere it can read again).
    pub origin: u64,
    /// [`content_hash`] of its timestamp and text.
    pub content: u64,
}

/// A request as recorded before it was first sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Unique within the ledger's files.
    pub id: u64,
    /// When it was first sent (Unix ms): CloudWatch ingested it no earlier.
    pub first_sent_ms: i64,
    /// Its oldest event's timestamp.
    pub min_ts: i64,
    /// Its newest event's timestamp.
    pub max_ts: i64,
    /// Log group.
    pub group: String,
    /// Log stream.
    pub stream: String,
    /// Its events, in request order.
    pub events: Vec<Mark>,
}

impl Sent {
    fn encode(&self, out: &mut Vec<u8>) {
        let mut p = Vec::with_capacity(64 + self.events.len() * 16);
        p.push(SENT);
        p.extend_from_slice(&self.id.to_le_bytes());
        p.extend_from_slice(&self.first_sent_ms.to_le_bytes());
        p.extend_from_slice(&self.min_ts.to_le_bytes());
        p.extend_from_slice(&self.max_ts.to_le_bytes());
        for name in [&self.group, &self.stream] {
            let b = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
            p.extend_from_slice(&(b.len() as u16).to_le_bytes());
            p.extend_from_slice(b);
        }
        p.extend_from_slice(&(self.events.len() as u32).to_le_bytes());
        for m in &self.events {
            p.extend_from_slice(&m.origin.to_le_bytes());
            p.extend_from_slice(&m.content.to_le_bytes());
        }
        frame(&p, out);
    }
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

fn mark(kind: u8, id: u64) -> Vec<u8> {
    let mut p = vec![kind];
    p.extend_from_slice(&id.to_le_bytes());
    let mut out = Vec::with_capacity(p.len() + 8);
    frame(&p, &mut out);
    out
}

/// Reads little-endian fields off a payload.
struct Cursor<'a>(&'a [u8]);

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn name(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

enum Frame {
    Sent(Sent),
    Mark(u8, u64),
}

fn decode(payload: &[u8]) -> Option<Frame> {
    let (&kind, rest) = payload.split_first()?;
    let mut c = Cursor(rest);
    match kind {
        SENT => {
            let id = c.u64()?;
            let first_sent_ms = c.i64()?;
            let min_ts = c.i64()?;
            let max_ts = c.i64()?;
            let group = c.name()?;
            let stream = c.name()?;
            let n = c.u32()? as usize;
            if c.0.len() != n.checked_mul(16)? {
                return None;
            }
            let events = (0..n)
                .map(|_| {
                    Some(Mark {
                        origin: c.u64()?,
                        content: c.u64()?,
                    })
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Frame::Sent(Sent {
                id,
                first_sent_ms,
                min_ts,
                max_ts,
                group,
                stream,
                events,
            }))
        }
        SETTLED | FORGOTTEN => Some(Frame::Mark(kind, c.u64()?)),
        _ => None,
    }
}

/// What a request's record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Sent, no answer recorded: it may or may not be in CloudWatch.
    Unsettled,
    /// CloudWatch accepted it.
    Settled,
}

/// What the ledger's files say, read at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every request recorded and not forgotten, by id order, with its state.
    pub requests: Vec<(Sent, State)>,
    /// Frames that could not be read (a torn or corrupt tail), counted for the log.
    pub unreadable_tails: usize,
    /// The highest id seen.
    pub max_id: u64,
}

/// Parses the frames of one file into `sent` / `marks`; `false` if it stopped at a bad frame.
fn parse(bytes: &[u8], sent: &mut HashMap<u64, Sent>, marks: &mut HashMap<u64, u8>) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        let Some(head) = bytes.get(at..at + 8) else {
            return false;
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_FRAME {
            return false;
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            return false;
        };
        if crc32c::crc32c(payload) != crc {
            return false;
        }
        match decode(payload) {
            Some(Frame::Sent(s)) => {
                sent.insert(s.id, s);
            }
            Some(Frame::Mark(kind, id)) => {
                // Forgotten wins over settled; settled over nothing.
                let e = marks.entry(id).or_insert(kind);
                *e = (*e).max(kind);
            }
            None => return false,
        }
        at += 8 + len;
    }
    true
}

/// The ledger of one sink: appends records, rotates, and is read once at start.
#[derive(Debug)]
pub struct Ledger {
    current: PathBuf,
    previous: PathBuf,
    file: Option<File>,
    written: u64,
    next_id: u64,
    /// The encoded *sent* frames of requests not yet settled, carried into a new `current`.
    unsettled: HashMap<u64, Vec<u8>>,
    /// Whether a write failed (logged once; the ledger then only costs resends).
    failed: bool,
}

impl Ledger {
    /// The ledger of sink `name` under `dir` (`DATA_DIR/ledger`), and what its files hold.
    /// Nothing is written until [`Ledger::start`].
    pub fn open(dir: &Path, name: &str) -> (Ledger, Loaded) {
        let current = dir.join(format!("{name}.current"));
        let previous = dir.join(format!("{name}.previous"));
        let mut sent = HashMap::new();
        let mut marks = HashMap::new();
        let mut loaded = Loaded::default();
        for path in [&previous, &current] {
            match private_files::read(path) {
                Ok(bytes) => {
                    if !parse(&bytes, &mut sent, &mut marks) {
                        loaded.unreadable_tails += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the in-flight ledger; what was in flight at the last stop will be sent again");
                    loaded.unreadable_tails += 1;
                }
            }
        }
        loaded.max_id = sent.keys().chain(marks.keys()).copied().max().unwrap_or(0);
        let mut requests: Vec<(Sent, State)> = sent
            .into_values()
            .filter_map(|s| match marks.get(&s.id) {
                Some(&FORGOTTEN) => None,
                Some(_) => Some((s, State::Settled)),
                None => Some((s, State::Unsettled)),
            })
            .collect();
        requests.sort_by_key(|(s, _)| s.id);
        loaded.requests = requests;
        let ledger = Ledger {
            current,
            previous,
            file: None,
            written: 0,
            next_id: loaded.max_id + 1,
            unsettled: HashMap::new(),
            failed: false,
        };
        (ledger, loaded)
    }

    /// Starts a new generation: `previous` holds `keep` (requests whose events are known to be
    /// in CloudWatch, as settled), `current` starts empty. Called once settling is done.
    pub fn start(&mut self, keep: &[Sent]) -> io::Result<()> {
        let dir = self
            .current
            .parent()
            .ok_or_else(|| io::Error::other("ledger path has no directory"))?;
        private_files::create_dir_all(dir)?;
        let mut out = Vec::new();
        for s in keep {
            s.encode(&mut out);
            out.extend_from_slice(&mark(SETTLED, s.id));
        }
        private_files::write_atomic(&self.previous, &out, true)?;
        private_files::write_atomic(&self.current, &[], true)?;
        self.file = Some(private_files::open_append(&self.current)?);
        self.written = 0;
        Ok(())
    }

    /// Whether requests are recorded (the ledger's file opened).
    pub fn recording(&self) -> bool {
        self.file.is_some()
    }

    /// Records a request about to be sent for the first time; returns its id.
    pub fn sent(&mut self, group: &str, stream: &str, events: &[Pending], now_ms: i64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        if self.file.is_none() {
            return id;
        }
        let (mut min_ts, mut max_ts) = (i64::MAX, i64::MIN);
        let marks = events
            .iter()
            .map(|p| {
                min_ts = min_ts.min(p.timestamp_ms);
                max_ts = max_ts.max(p.timestamp_ms);
                Mark {
                    origin: p.origin,
                    content: p
                        .content
                        .unwrap_or_else(|| content_hash(p.timestamp_ms, &p.message)),
                }
            })
            .collect();
        let sent = Sent {
            id,
            first_sent_ms: now_ms,
            min_ts,
            max_ts,
            group: group.to_string(),
            stream: stream.to_string(),
            events: marks,
        };
        let mut bytes = Vec::new();
        sent.encode(&mut bytes);
        self.append(&bytes);
        self.unsettled.insert(id, bytes);
        id
    }

    /// Records that CloudWatch accepted request `id`.
    pub fn settled(&mut self, id: u64) {
        if self.unsettled.remove(&id).is_some() {
            self.append(&mark(SETTLED, id));
        }
    }

    /// Records that request `id` became two others and proves nothing by itself.
    pub fn forgotten(&mut self, id: u64) {
        if self.unsettled.remove(&id).is_some() {
            self.append(&mark(FORGOTTEN, id));
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        if let Err(e) = file.write_all(bytes) {
            self.fail(&e);
            return;
        }
        self.written += bytes.len() as u64;
        if self.written >= ROTATE_BYTES {
            if let Err(e) = self.rotate() {
                self.fail(&e);
            }
        }
    }

    fn fail(&mut self, e: &io::Error) {
        if !self.failed {
            self.failed = true;
            tracing::warn!(path = %self.current.display(), error = %e, "cannot write the in-flight ledger; after a crash, what was in flight will be sent again (duplicates, no loss)");
        }
    }

    /// `current` becomes `previous`; a new `current` starts with the unsettled requests.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        std::fs::rename(&self.current, &self.previous)?;
        let carried: Vec<u8> = self.unsettled.values().flatten().copied().collect();
        private_files::write_atomic(&self.current, &carried, true)?;
        self.file = Some(private_files::open_append(&self.current)?);
        self.written = carried.len() as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ack::Ack;

    fn pending(ts: i64, msg: &str, origin: u64) -> Pending {
        Pending {
            timestamp_ms: ts,
            message: msg.to_string(),
            ack: Ack::none(),
            origin,
            known: None,
            content: None,
        }
    }

    fn started(dir: &Path) -> Ledger {
        let (mut l, loaded) = Ledger::open(dir, "s");
        assert!(loaded.requests.is_empty());
        l.start(&[]).expect("start");
        l
    }

    #[test]
    fn reads_back_sent_settled_and_forgotten_requests() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = started(dir.path());
        let a = l.sent("g", "s", &[pending(5, "a", 11), pending(6, "b", 12)], 100);
        let b = l.sent("g", "s", &[pending(7, "c", 13)], 101);
        let c = l.sent("g", "t", &[pending(8, "d", 0)], 102);
        l.settled(a);
        l.forgotten(c);
        drop(l);
        let (_, loaded) = Ledger::open(dir.path(), "s");
        let got: Vec<_> = loaded
            .requests
            .iter()
            .map(|(s, st)| (s.id, *st, s.events.len()))
            .collect();
        assert_eq!(
            got,
            vec![(a, State::Settled, 2), (b, State::Unsettled, 1)],
            "the forgotten request is gone"
        );
        let first = &loaded.requests[0].0;
        assert_eq!(
            (first.min_ts, first.max_ts, first.first_sent_ms),
            (5, 6, 100)
        );
        assert_eq!(first.events[1].content, content_hash(6, "b"));
        assert_eq!(first.events[1].origin, 12);
        assert_eq!(loaded.max_id, c);
    }

    #[test]
    fn a_torn_or_corrupt_tail_keeps_every_record_before_it() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = started(dir.path());
        let a = l.sent("g", "s", &[pending(5, "a", 1)], 100);
        l.sent("g", "s", &[pending(6, "b", 2)], 100);
        drop(l);
        let path = dir.path().join("s.current");
        let mut bytes = std::fs::read(&path).expect("read");
        // Cut the second record short, then garble what is left of it.
        bytes.truncate(bytes.len() - 5);
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(&path, &bytes).expect("write");
        let (_, loaded) = Ledger::open(dir.path(), "s");
        assert_eq!(loaded.unreadable_tails, 1);
        assert_eq!(loaded.requests.len(), 1);
        assert_eq!(loaded.requests[0].0.id, a);
    }

    #[test]
    fn rotation_keeps_unsettled_requests_and_bounds_the_files() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = started(dir.path());
        let big: Vec<Pending> = (0..10_000).map(|i| pending(i, "x", i as u64 + 1)).collect();
        let kept = l.sent("g", "s", &big[..1], 1);
        // Each request is 160 kB: enough of them rotate twice.
        for _ in 0..60 {
            let id = l.sent("g", "s", &big, 1);
            l.settled(id);
        }
        drop(l);
        for name in ["s.current", "s.previous"] {
            let len = std::fs::metadata(dir.path().join(name))
                .expect("stat")
                .len();
            assert!(len <= ROTATE_BYTES + 200_000, "{name}: {len} bytes");
        }
        let (_, loaded) = Ledger::open(dir.path(), "s");
        let unsettled: Vec<u64> = loaded
            .requests
            .iter()
            .filter(|(_, st)| *st == State::Unsettled)
            .map(|(s, _)| s.id)
            .collect();
        assert_eq!(unsettled, vec![kept]);
    }

    #[test]
    fn start_keeps_only_what_it_is_given_as_settled() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut l = started(dir.path());
        l.sent("g", "s", &[pending(5, "a", 1)], 100);
        drop(l);
        let (mut l, loaded) = Ledger::open(dir.path(), "s");
        let proven = loaded.requests[0].0.clone();
        l.start(std::slice::from_ref(&proven)).expect("start");
        let next = l.sent("g", "s", &[pending(9, "z", 3)], 200);
        assert!(next > proven.id, "ids keep growing across starts");
        drop(l);
        let (_, loaded) = Ledger::open(dir.path(), "s");
        assert_eq!(loaded.requests[0], (proven, State::Settled));
        assert_eq!(loaded.requests[1].1, State::Unsettled);
    }
}
