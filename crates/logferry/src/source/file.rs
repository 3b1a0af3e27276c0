//! The file and Kubernetes container log sources: files tailed through rotation, with offsets
//! saved only once CloudWatch has accepted the lines before them.
//!
//! `logferry-tail` does the reading (globs, inotify, rotation, identity by inode +
//! fingerprint, line splitting); this module turns lines into events and keeps the books:
//!
//! - **A reader thread** (the tailer is synchronous) reads up to [`CHUNK_EVENTS`] lines at a
//!   time across all files. Each run of lines from one file becomes one acknowledgement batch,
//!   registered with the position to save once it is delivered, then the chunk is sent,
//!   blocking while the sink's channel is full: the files wait on disk.
//! - **Per-file decoding state**: Kubernetes CRI/Docker lines are decoded and partial (`P`)
//!   lines joined; `multiline.start_pattern` joins stack traces. A position registered for a
//!   batch is never past the first byte of something still held (a partial line, an unfinished
//!   multiline event), so a crash re-reads it rather than losing it.
//! - **A collector task** moves each file's position on a [`Watermark`] over its batches and
//!   rewrites the checkpoint file (`DATA_DIR/file/SOURCE.json`: path, device, inode,
//!   fingerprint, offset for every file) at most every [`SAVE_EVERY`], with write-temp, fsync,
//!   rename. A file's entry is created when it is opened (so `start = "end"` is not
//!   re-evaluated after a restart) and removed once the file is closed (deleted, or rotated
//!   away and finished) and everything read from it is delivered.
//!
//! - **Pod labels** (`kubernetes_api`): a pod seen for the first time is looked up by
//!   `logferry-kubernetes` in the background; its file's events are held (in memory, not past
//!   their position: a crash re-reads them) for at most `kubernetes_api.wait`, then sent with
//!   its labels, or without them if the API has not answered. The reader never waits on the
//!   network itself, and an API that is down makes no file wait at all. An open file looks its
//!   pod up again every `cache_ttl` (still a map lookup), so a relabelled pod is followed.
//!
//! The position saved for a batch carries the file's fingerprint as it was when the lines were
//! read, so a file truncated (copytruncate) after that no longer matches and is read from its
//! start after a restart, instead of resuming at an offset that means nothing in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use logferry_kubernetes::{Lookup, PodMeta, PodMetadata, PodRef};
use logferry_tail::container::{self, PartialJoiner, PodInfo};
use logferry_tail::multiline::{Multiline, MultilineOptions};
use logferry_tail::tailer::{
    CloseReason, FileId, Line, Notice, SavedPosition, Tailer, TailerOptions,
};
use logferry_tail::timestamp::TimestampParser;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Chunk, SourceContext, CHUNK_EVENTS};
use crate::ack::{AckBatch, AckStatus, BatchOutcome, Watermark};
use crate::config::FileSourceConfig;
use crate::event::{Event, FieldName};

/// How often the checkpoint is rewritten at most. It holds every file's position, so it is
/// larger than a journal cursor; what was delivered since the last save is sent again after a
/// crash.
const SAVE_EVERY: Duration = Duration::from_millis(250);
/// Longest sleep of the reader when nothing happens (it also checks for shutdown).
const IDLE_WAIT: Duration = Duration::from_millis(250);
/// How often the reader asks again for the labels of pods whose files are waiting for them.
const POD_POLL: Duration = Duration::from_millis(20);
/// Events one file may hold while its pod's labels are looked up, and message bytes all files
/// together may hold: past either, the file stops waiting and sends without labels. A new pod
/// rarely logs this much within `wait`; the bound keeps memory flat when hundreds start at once.
const POD_HOLD_MAX: usize = 10_000;
const POD_HOLD_MAX_BYTES: usize = 16 << 20;

/// Field names of file events (templates read them as `{namespace}`, `{pod}`, ...).
pub mod fields {
    /// The path the line was read from.
    pub const FILE: &str = "file";
    /// Kubernetes namespace.
    pub const NAMESPACE: &str = "namespace";
    /// Pod name.
    pub const POD: &str = "pod";
    /// Pod UID.
    pub const POD_UID: &str = "pod_uid";
    /// Container name.
    pub const CONTAINER: &str = "container";
    /// `stdout` or `stderr`.
    pub const STREAM: &str = "stream";
    /// The node (from `NODE_NAME`, as the DaemonSet sets it with the downward API, else the
    /// pod's `spec.nodeName` from the Kubernetes API).
    pub const NODE: &str = "node";
    /// Prefix of pod label fields from the Kubernetes API: `label.app`, `label.team`, ...
    pub const LABEL_PREFIX: &str = "label.";
}

/// Where a source keeps its file positions.
pub fn checkpoint_path(data_dir: &Path, source: &str) -> PathBuf {
    data_dir.join("file").join(format!("{source}.json"))
}

#[derive(Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    files: Vec<SavedPosition>,
}

/// The saved positions, or `None` when this source never saved any (its first start).
fn load_checkpoint(source: &str, path: &Path) -> Option<Vec<SavedPosition>> {
    let files = match crate::state::load(path) {
        Ok(None) => return None,
        Ok(Some(text)) => match serde_json::from_str::<Checkpoint>(&text) {
            Ok(c) => c.files,
            Err(e) => {
                // Starting over re-reads files (duplicates), which beats skipping them.
                tracing::error!(source, path = %path.display(), "ignoring an unreadable checkpoint file, files are read again from their start: {e}");
                Vec::new()
            }
        },
        Err(e) => {
            tracing::error!(source, path = %path.display(), "cannot read the checkpoint file, files are read again from their start: {e}");
            Vec::new()
        }
    };
    Some(files)
}

/// What the reader tells the collector.
enum Registration {
    /// A file was opened at this position: its entry exists from now on.
    Opened(FileId, SavedPosition),
    /// Batch `id` holds lines of this file; once delivered, the position may move here.
    Batch(u64, FileId, SavedPosition),
    /// The file is closed: drop its entry once everything read from it is delivered.
    Closed(FileId),
}

/// Runs the source until shutdown.
pub async fn run(ctx: SourceContext, cfg: FileSourceConfig, data_dir: PathBuf) {
    let path = checkpoint_path(&data_dir, &ctx.name);
    let saved = load_checkpoint(&ctx.name, &path);
    // `start = "end"` is for the first start only, like the journal's: once a checkpoint
    // exists, a file without a position is one that appeared while logferry was stopped, and
    // all of it is new.
    let start_at_end = cfg.tail.start_at_end && saved.is_none();
    let saved = saved.unwrap_or_default();
    // `logferry tail` reads from the saved offsets but never moves them.
    let dry_run = cfg.dry_run;
    let opts = TailerOptions {
        start_at_end,
        ..cfg.tail.clone()
    };
    let tailer = match Tailer::new(opts, saved) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(source = %ctx.name, "cannot start tailing: {e}");
            return;
        }
    };
    let pods = match &cfg.kubernetes_api {
        None => None,
        Some(k) => {
            let opts = logferry_kubernetes::Options {
                kubeconfig: k.kubeconfig.clone(),
                timeout: k.timeout,
                cache_ttl: k.cache_ttl,
                ..logferry_kubernetes::Options::default()
            };
            match PodMetadata::connect(opts).await {
                Ok(m) => {
                    let _ = ctx.stats.kubernetes_api.set(m.stats_handle());
                    Some(m)
                }
                Err(e) => {
                    // The logs matter more than their labels: ship them without.
                    tracing::error!(source = %ctx.name, "pod labels are left out: {e}");
                    None
                }
            }
        }
    };
    let (outcome_tx, mut outcomes) = mpsc::unbounded_channel();
    let (register_tx, mut registrations) = mpsc::unbounded_channel();
    let handle = tokio::runtime::Handle::current();
    let reader_ctx = ctx.clone();
    let reader = std::thread::Builder::new()
        .name(format!("file-{}", ctx.name))
        .spawn(move || {
            Reader::new(
                reader_ctx,
                cfg,
                tailer,
                pods,
                outcome_tx,
                register_tx,
                handle,
            )
            .run();
        });
    let reader = match reader {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(source = %ctx.name, "cannot start the file reader thread: {e}");
            return;
        }
    };

    let mut books = Books::default();
    let mut saved_at = Instant::now();
    let (mut reg_open, mut out_open) = (true, true);
    while reg_open || out_open {
        let save_due = tokio::time::Instant::from_std(saved_at + SAVE_EVERY);
        tokio::select! {
            biased;
            r = registrations.recv(), if reg_open => match r {
                Some(r) => books.register(r),
                None => reg_open = false,
            },
            o = outcomes.recv(), if out_open => match o {
                Some(o) => books.complete(o),
                None => out_open = false,
            },
            _ = tokio::time::sleep_until(save_due), if books.dirty => {}
        }
        if dry_run {
            books.dirty = false;
        }
        if books.dirty && saved_at.elapsed() >= SAVE_EVERY {
            save(&ctx.name, &path, books.snapshot()).await;
            saved_at = Instant::now();
        }
    }
    if books.dirty {
        save(&ctx.name, &path, books.snapshot()).await;
    }
    if books.stuck() {
        tracing::warn!(source = %ctx.name, "some lines were not delivered; they will be read again on restart");
    }
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
}

async fn save(source: &str, path: &Path, files: Vec<SavedPosition>) {
    let text = match serde_json::to_vec(&Checkpoint { version: 1, files }) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(source, "cannot encode the checkpoint: {e}");
            return;
        }
    };
    let p = path.to_path_buf();
    match tokio::task::spawn_blocking(move || crate::state::save_atomic(&p, &text)).await {
        Ok(Ok(())) => tracing::trace!(source, "file positions saved"),
        Ok(Err(e)) => {
            tracing::error!(source, path = %path.display(), "cannot save file positions: {e}")
        }
        Err(e) => tracing::error!(source, "checkpoint writer failed: {e}"),
    }
}

/// The collector's state: every file's delivered position.
#[derive(Default)]
struct Books {
    files: HashMap<FileId, Tracked>,
    batch_file: HashMap<u64, FileId>,
    /// Outcomes that overtook their registration.
    early: HashMap<u64, AckStatus>,
    dirty: bool,
}

struct Tracked {
    watermark: Watermark<SavedPosition>,
    delivered: SavedPosition,
    closed: bool,
}

impl Books {
    fn register(&mut self, r: Registration) {
        match r {
            Registration::Opened(file, pos) => {
                self.files.insert(
                    file,
                    Tracked {
                        watermark: Watermark::default(),
                        delivered: pos,
                        closed: false,
                    },
                );
                self.dirty = true;
            }
            Registration::Batch(id, file, pos) => {
                let Some(t) = self.files.get_mut(&file) else {
                    return;
                };
                self.batch_file.insert(id, file);
                if let Some(p) = t.watermark.push(id, pos) {
                    t.delivered = p;
                    self.dirty = true;
                }
                if let Some(status) = self.early.remove(&id) {
                    self.complete(BatchOutcome {
                        batch_id: id,
                        status,
                    });
                }
            }
            Registration::Closed(file) => {
                if let Some(t) = self.files.get_mut(&file) {
                    t.closed = true;
                }
                self.retire(file);
            }
        }
    }

    fn complete(&mut self, o: BatchOutcome) {
        let Some(file) = self.batch_file.remove(&o.batch_id) else {
            self.early.insert(o.batch_id, o.status);
            return;
        };
        if let Some(t) = self.files.get_mut(&file) {
            if let Some(p) = t.watermark.complete(o) {
                t.delivered = p;
                self.dirty = true;
            }
        }
        self.retire(file);
    }

    /// A closed file whose lines are all delivered leaves the checkpoint.
    fn retire(&mut self, file: FileId) {
        if self
            .files
            .get(&file)
            .is_some_and(|t| t.closed && t.watermark.outstanding() == 0)
        {
            self.files.remove(&file);
            self.dirty = true;
        }
    }

    fn snapshot(&mut self) -> Vec<SavedPosition> {
        self.dirty = false;
        self.files.values().map(|t| t.delivered.clone()).collect()
    }

    fn stuck(&self) -> bool {
        self.files.values().any(|t| t.watermark.is_stuck())
    }
}

/// What the reader keeps per open file.
struct FileState {
    /// Fields every event of this file carries (path, pod metadata).
    fields: Vec<(FieldName, Bytes)>,
    /// Offset just past the last line taken from the tailer.
    consumed: u64,
    multiline: Option<Multiline>,
    joiner: Option<PartialJoiner>,
    /// The pod's labels from the Kubernetes API, when they are being looked up.
    pod: PodLabels,
    /// How many of `fields` come from the path (the rest, from the API, are replaced when the
    /// pod's labels change).
    path_fields: usize,
}

/// Where a file stands with its pod's labels.
enum PodLabels {
    /// Nothing to look up (no API, not a pod's file).
    Unwanted,
    /// First lookup pending: events are held until `until`.
    Waiting {
        pod: PodRef,
        until: Instant,
        held: Vec<Pending>,
        held_bytes: usize,
        /// The file's position when holding began; nothing past it may be saved.
        from: u64,
    },
    /// The wait ran out, or the API is down: events go without labels, but each batch looks
    /// again (a map lookup) until the API has answered.
    Late(PodRef),
    /// The API answered (`meta` is `None` for a pod it does not know); looked up again every
    /// `cache_ttl`, so a relabelled pod's files follow.
    Known {
        pod: PodRef,
        meta: Option<Arc<PodMeta>>,
        checked: Instant,
    },
}

/// What a pod lookup came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodAnswer {
    /// The API answered; its labels (or their absence) are applied.
    Applied,
    /// Being asked while the API answers.
    Pending,
    /// No answer to be had now.
    Unavailable,
}

impl FileState {
    /// The furthest position that may be saved: past every consumed line, but never past the
    /// start of something still held.
    fn safe_offset(&self) -> u64 {
        let mut at = self.consumed;
        if let PodLabels::Waiting { from, .. } = &self.pod {
            at = at.min(*from);
        }
        if let Some(h) = self.multiline.as_ref().and_then(Multiline::held_from) {
            at = at.min(h);
        }
        if let Some(h) = self.joiner.as_ref().and_then(PartialJoiner::held_from) {
            at = at.min(h);
        }
        at
    }
}

/// One decoded event before it gets its acknowledgement.
struct Pending {
    timestamp_ms: i64,
    message: Bytes,
    extra: Option<(FieldName, Bytes)>,
    truncated_bytes: u64,
}

impl Pending {
    /// A container line (joined from its parts), with its stream as a field.
    fn from_joined(j: container::Joined) -> Self {
        Pending {
            timestamp_ms: j.timestamp_ms,
            message: j.message,
            extra: Some((
                FieldName::Static(fields::STREAM),
                Bytes::from_static(j.stream.as_str().as_bytes()),
            )),
            truncated_bytes: j.truncated_bytes,
        }
    }
}

struct Reader {
    ctx: SourceContext,
    cfg: FileSourceConfig,
    tailer: Tailer,
    outcomes: mpsc::UnboundedSender<BatchOutcome>,
    register: mpsc::UnboundedSender<Registration>,
    handle: tokio::runtime::Handle,
    files: HashMap<FileId, FileState>,
    timestamps: Option<TimestampParser>,
    node: Option<Bytes>,
    /// Pod labels from the Kubernetes API (`kubernetes_api`).
    pods: Option<PodMetadata>,
    /// Files whose first pod lookup is pending.
    waiting: Vec<FileId>,
    /// Message bytes those files hold.
    held_bytes: usize,
    next_batch: u64,
    /// Unparseable container lines reported so far (the first few are logged).
    unparsed: u64,
}

impl Reader {
    fn new(
        ctx: SourceContext,
        cfg: FileSourceConfig,
        tailer: Tailer,
        pods: Option<PodMetadata>,
        outcomes: mpsc::UnboundedSender<BatchOutcome>,
        register: mpsc::UnboundedSender<Registration>,
        handle: tokio::runtime::Handle,
    ) -> Self {
        let timestamps = cfg
            .timestamp
            .as_ref()
            .and_then(|t| TimestampParser::new(&t.format, t.zone).ok());
        let node = cfg
            .kubernetes
            .then(|| std::env::var("NODE_NAME").ok())
            .flatten()
            .filter(|n| !n.is_empty())
            .map(Bytes::from);
        Reader {
            ctx,
            cfg,
            tailer,
            outcomes,
            register,
            handle,
            files: HashMap::new(),
            timestamps,
            node,
            pods,
            waiting: Vec::new(),
            held_bytes: 0,
            next_batch: 0,
            unparsed: 0,
        }
    }

    fn run(mut self) {
        let mut lines: Vec<Line> = Vec::with_capacity(CHUNK_EVENTS);
        let mut notices = Vec::new();
        while !self.ctx.shutdown.is_cancelled() {
            lines.clear();
            let n = self.tailer.read(&mut lines, CHUNK_EVENTS);
            self.tailer.drain_notices(&mut notices);
            // Opened comes before the file's lines; closing flushes what the file still
            // holds, so it must come after them.
            let mut closing = Vec::new();
            for notice in notices.drain(..) {
                match notice {
                    Notice::Closed { file, reason } => closing.push((file, reason)),
                    other => self.notice(other),
                }
            }
            let mut chunk = Chunk::with_capacity(n);
            self.take_lines(&lines, &mut chunk);
            for (file, reason) in closing {
                self.close(file, reason, &mut chunk);
            }
            self.release_waiting(&mut chunk);
            self.flush_due(&mut chunk);
            let idle = n == 0 && chunk.is_empty();
            if !chunk.is_empty() && !self.handle.block_on(self.ctx.send(chunk)) {
                return;
            }
            if idle {
                let wait = self
                    .next_deadline()
                    .map(|d| d.saturating_duration_since(Instant::now()))
                    .map_or(IDLE_WAIT, |d| d.min(IDLE_WAIT));
                self.tailer.wait(wait);
            }
        }
    }

    fn notice(&mut self, notice: Notice) {
        let name = &self.ctx.name;
        match notice {
            Notice::Opened {
                file,
                path,
                key: _,
                offset,
            } => {
                tracing::debug!(source = %name, path = %path.display(), offset, "following file");
                self.open(file, &path, offset);
            }
            Notice::Truncated { file, path, at } => {
                tracing::warn!(source = %name, path = %path.display(), at, "file truncated; reading it again from its start");
                self.ctx
                    .stats
                    .files_truncated
                    .fetch_add(1, Ordering::Relaxed);
                // What was held belongs to content that is gone.
                if let Some(st) = self.files.get_mut(&file) {
                    st.consumed = 0;
                    if let Some(m) = st.multiline.as_mut() {
                        let _ = m.flush();
                    }
                    if let Some(j) = st.joiner.as_mut() {
                        let _ = j.flush();
                    }
                }
            }
            Notice::Missing { saved } => {
                tracing::error!(source = %name, path = %saved.path.display(), offset = saved.offset, "a file read before was deleted while logferry was stopped; its unread lines are lost");
                self.ctx.stats.files_missing.fetch_add(1, Ordering::Relaxed);
            }
            Notice::Skipped { path, reason } => {
                tracing::debug!(source = %name, path = %path.display(), "not read: {reason}");
            }
            Notice::Error { path, error } => {
                tracing::warn!(source = %name, path = %path.display(), "cannot read: {error}");
            }
            Notice::Closed { .. } => {}
        }
    }

    fn open(&mut self, file: FileId, path: &Path, offset: u64) {
        let mut fields = vec![(
            FieldName::Static(fields::FILE),
            Bytes::from(path.to_string_lossy().into_owned()),
        )];
        let mut pod_ref = None;
        if self.cfg.kubernetes {
            if let Some(PodInfo {
                namespace,
                pod,
                pod_uid,
                container,
            }) = container::pod_info_from_path(path)
            {
                pod_ref = Some(PodRef {
                    namespace: namespace.clone(),
                    name: pod.clone(),
                    uid: pod_uid.clone(),
                });
                fields.push((FieldName::Static(fields::NAMESPACE), Bytes::from(namespace)));
                fields.push((FieldName::Static(fields::POD), Bytes::from(pod)));
                if !pod_uid.is_empty() {
                    fields.push((FieldName::Static(fields::POD_UID), Bytes::from(pod_uid)));
                }
                fields.push((FieldName::Static(fields::CONTAINER), Bytes::from(container)));
            }
            if let Some(n) = &self.node {
                fields.push((FieldName::Static(fields::NODE), n.clone()));
            }
        }
        let path_fields = fields.len();
        // A pod's file starts late and learns its labels at once, or waits for them.
        let labels = match (pod_ref, &self.pods) {
            (Some(pod), Some(_)) => PodLabels::Late(pod),
            _ => PodLabels::Unwanted,
        };
        let multiline = self.cfg.multiline.as_ref().map(|m| {
            Multiline::new(MultilineOptions {
                start_pattern: m.start_pattern.clone(),
                timeout: m.timeout,
                max_lines: m.max_lines,
                max_bytes: m.max_bytes,
            })
        });
        let joiner = self
            .cfg
            .kubernetes
            .then(|| PartialJoiner::new(self.cfg.tail.max_line_bytes));
        self.files.insert(
            file,
            FileState {
                fields,
                consumed: offset,
                multiline,
                joiner,
                pod: labels,
                path_fields,
            },
        );
        if self.learn_pod(file) == PodAnswer::Pending {
            let wait = self
                .cfg
                .kubernetes_api
                .as_ref()
                .map_or(Duration::ZERO, |k| k.wait);
            if let Some(st) = self.files.get_mut(&file) {
                if let PodLabels::Late(pod) = std::mem::replace(&mut st.pod, PodLabels::Unwanted) {
                    st.pod = PodLabels::Waiting {
                        pod,
                        until: Instant::now() + wait,
                        held: Vec::new(),
                        held_bytes: 0,
                        from: offset,
                    };
                    self.waiting.push(file);
                }
            }
        }
        self.ctx.stats.files_open.fetch_add(1, Ordering::Relaxed);
        if let Some(pos) = self.tailer.position(file, offset) {
            let _ = self.register.send(Registration::Opened(file, pos));
        }
    }

    /// Turns a read's lines into events, one acknowledgement batch per run of one file.
    fn take_lines(&mut self, lines: &[Line], chunk: &mut Chunk) {
        let now_ms = now_ms();
        let now = Instant::now();
        let mut pending = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            let file = lines[i].file;
            let run_len = lines[i..].iter().take_while(|l| l.file == file).count();
            let run = &lines[i..i + run_len];
            i += run_len;
            pending.clear();
            for line in run {
                self.decode(line, now_ms, now, &mut pending);
            }
            self.emit(file, &mut pending, chunk);
        }
    }

    /// One line through the file's decoders; finished events land in `out`.
    fn decode(&mut self, line: &Line, now_ms: i64, now: Instant, out: &mut Vec<Pending>) {
        let Some(st) = self.files.get_mut(&line.file) else {
            return;
        };
        let start_offset = st.consumed;
        st.consumed = line.end_offset;
        if !self.cfg.kubernetes {
            let ts = self
                .timestamps
                .as_ref()
                .and_then(|p| p.parse(&line.bytes, now_ms));
            match st.multiline.as_mut() {
                None => out.push(Pending {
                    timestamp_ms: ts.unwrap_or(now_ms),
                    message: line.bytes.clone(),
                    extra: None,
                    truncated_bytes: line.truncated_bytes,
                }),
                Some(m) => {
                    if let Some(a) = m.push(&line.bytes, start_offset, line.end_offset, now) {
                        out.push(self_timestamped(&self.timestamps, a, now_ms));
                    }
                }
            }
            return;
        }
        let parsed = match container::parse_auto(&line.bytes) {
            Ok(p) => p,
            Err(e) => {
                // Not what the runtime writes: ship the line as it is rather than lose it.
                self.unparsed += 1;
                self.ctx.stats.unparsed.fetch_add(1, Ordering::Relaxed);
                if self.unparsed <= 10 {
                    tracing::warn!(source = %self.ctx.name, "a container log line is neither CRI nor Docker json-file ({e}); sent as it is");
                }
                out.push(Pending {
                    timestamp_ms: now_ms,
                    message: line.bytes.clone(),
                    extra: None,
                    truncated_bytes: line.truncated_bytes,
                });
                return;
            }
        };
        let Some(joiner) = st.joiner.as_mut() else {
            return;
        };
        // A joined event starts at its first part, which may be lines back.
        let first_part = joiner
            .held_from()
            .map_or(start_offset, |h| h.min(start_offset));
        if let Some(j) = joiner.push(parsed, start_offset, line.end_offset) {
            let mut pending = Pending::from_joined(j);
            pending.truncated_bytes += line.truncated_bytes;
            match st.multiline.as_mut() {
                None => out.push(pending),
                Some(m) => {
                    if let Some(a) = m.push(&pending.message, first_part, line.end_offset, now) {
                        out.push(Pending {
                            timestamp_ms: pending.timestamp_ms,
                            message: a.message,
                            extra: pending.extra,
                            truncated_bytes: a.truncated_bytes,
                        });
                    }
                }
            }
        }
    }

    /// Gives `pending` events of `file` one acknowledgement batch and registers the position
    /// to save once it is delivered.
    fn emit(&mut self, file: FileId, pending: &mut Vec<Pending>, chunk: &mut Chunk) {
        let Some(st) = self.files.get_mut(&file) else {
            return;
        };
        match &mut st.pod {
            PodLabels::Waiting {
                held, held_bytes, ..
            } if held.len() < POD_HOLD_MAX && self.held_bytes < POD_HOLD_MAX_BYTES => {
                let bytes = pending.iter().map(|p| p.message.len()).sum::<usize>();
                *held_bytes += bytes;
                self.held_bytes += bytes;
                held.append(pending);
                return;
            }
            PodLabels::Waiting { .. } => self.settle_pod(file, true, chunk),
            PodLabels::Late(_) => {
                self.learn_pod(file);
            }
            PodLabels::Known { checked, .. } => {
                let refresh = self.cfg.kubernetes_api.as_ref().map(|k| k.cache_ttl);
                if refresh.is_some_and(|every| checked.elapsed() >= every) {
                    self.learn_pod(file);
                }
            }
            PodLabels::Unwanted => {}
        }
        let Some(st) = self.files.get(&file) else {
            return;
        };
        let Some(pos) = self.tailer.position(file, st.safe_offset()) else {
            return;
        };
        let id = self.next_batch;
        self.next_batch += 1;
        // Registered before the events leave, so the collector knows the batch first (it
        // also copes with an outcome that overtakes its registration).
        if self
            .register
            .send(Registration::Batch(id, file, pos))
            .is_err()
        {
            return;
        }
        let batch = AckBatch::new(id, &self.outcomes);
        for p in pending.drain(..) {
            if p.message.is_empty() {
                // CloudWatch refuses empty events; the position still moves past the line.
                continue;
            }
            let mut fields = st.fields.clone();
            fields.extend(p.extra);
            chunk.push(Event {
                timestamp_ms: p.timestamp_ms,
                message: p.message,
                priority: None,
                fields,
                source: self.ctx.name.clone(),
                truncated_bytes: p.truncated_bytes,
                ack: batch.ack(),
            });
        }
    }

    /// Sends what a closed file still holds, then lets the collector retire it.
    fn close(&mut self, file: FileId, reason: CloseReason, chunk: &mut Chunk) {
        self.settle_pod(file, true, chunk);
        let mut pending = Vec::new();
        if let Some(st) = self.files.get_mut(&file) {
            if let Some(j) = st.joiner.as_mut() {
                for j in j.flush() {
                    pending.push(Pending::from_joined(j));
                }
            }
            if let Some(a) = st.multiline.as_mut().and_then(Multiline::flush) {
                pending.push(self_timestamped(&self.timestamps, a, now_ms()));
            }
        }
        if !pending.is_empty() {
            self.emit(file, &mut pending, chunk);
        }
        if let Some(path) = self.tailer.path(file) {
            tracing::debug!(source = %self.ctx.name, path = %path.display(), ?reason, "file closed");
        }
        if self.files.remove(&file).is_some() {
            self.ctx.stats.files_open.fetch_sub(1, Ordering::Relaxed);
        }
        self.tailer.forget(file);
        let _ = self.register.send(Registration::Closed(file));
    }

    /// Multiline events whose timeout passed.
    fn flush_due(&mut self, chunk: &mut Chunk) {
        let now = Instant::now();
        let due: Vec<FileId> = self
            .files
            .iter()
            .filter(|(_, st)| {
                st.multiline
                    .as_ref()
                    .and_then(Multiline::deadline)
                    .is_some_and(|d| d <= now)
            })
            .map(|(f, _)| *f)
            .collect();
        let now_ms = now_ms();
        for file in due {
            let mut pending = Vec::new();
            if let Some(a) = self
                .files
                .get_mut(&file)
                .and_then(|st| st.multiline.as_mut())
                .and_then(|m| m.flush_due(now))
            {
                pending.push(self_timestamped(&self.timestamps, a, now_ms));
            }
            if !pending.is_empty() {
                self.emit(file, &mut pending, chunk);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let multiline = self
            .files
            .values()
            .filter_map(|st| st.multiline.as_ref().and_then(Multiline::deadline))
            .min();
        // Labels are polled for, not pushed: look again shortly while a file waits.
        let pods = (!self.waiting.is_empty()).then(|| Instant::now() + POD_POLL);
        multiline.into_iter().chain(pods).min()
    }

    /// Files whose pod lookup is answered, or whose wait ran out, send what they held.
    fn release_waiting(&mut self, chunk: &mut Chunk) {
        if self.waiting.is_empty() {
            return;
        }
        let now = Instant::now();
        for file in std::mem::take(&mut self.waiting) {
            let ready = match self.files.get(&file).map(|st| &st.pod) {
                Some(PodLabels::Waiting { pod, until, .. }) => {
                    *until <= now
                        || self
                            .pods
                            .as_ref()
                            .is_none_or(|p| p.lookup(pod) != Lookup::Pending)
                }
                _ => continue,
            };
            if ready {
                self.settle_pod(file, false, chunk);
            } else {
                self.waiting.push(file);
            }
        }
    }

    /// Looks the pod of a [`PodLabels::Late`] or [`PodLabels::Known`] file up again and applies
    /// what the API says. Without an answer a late file stays late and a known one keeps what it
    /// has.
    fn learn_pod(&mut self, file: FileId) -> PodAnswer {
        let Some(st) = self.files.get_mut(&file) else {
            return PodAnswer::Unavailable;
        };
        let (pod, known) = match std::mem::replace(&mut st.pod, PodLabels::Unwanted) {
            PodLabels::Late(pod) => (pod, None),
            PodLabels::Known { pod, meta, .. } => (pod, Some(meta)),
            other => {
                st.pod = other;
                return PodAnswer::Unavailable;
            }
        };
        let now = Instant::now();
        let meta = match self.pods.as_ref().map(|p| p.lookup(&pod)) {
            Some(Lookup::Found(m)) => Some(m),
            Some(Lookup::NotFound) | None => None,
            Some(no @ (Lookup::Unavailable | Lookup::Pending)) => {
                st.pod = match known {
                    Some(meta) => PodLabels::Known {
                        pod,
                        meta,
                        checked: now,
                    },
                    None => PodLabels::Late(pod),
                };
                return if no == Lookup::Pending {
                    PodAnswer::Pending
                } else {
                    PodAnswer::Unavailable
                };
            }
        };
        if known.as_ref() != Some(&meta) {
            st.fields.truncate(st.path_fields);
            if let Some(m) = &meta {
                add_pod_fields(&mut st.fields, m, self.node.is_none());
            }
        }
        st.pod = PodLabels::Known {
            pod,
            meta,
            checked: now,
        };
        PodAnswer::Applied
    }

    /// Ends a file's wait for its pod's labels: applies them if known (else the file goes
    /// [`PodLabels::Late`]) and sends the held events. `early`: the wait is cut short (the
    /// file is closing, or holds too much), which is not counted as the API being late.
    fn settle_pod(&mut self, file: FileId, early: bool, chunk: &mut Chunk) {
        let Some(st) = self.files.get_mut(&file) else {
            return;
        };
        let PodLabels::Waiting {
            pod,
            held,
            held_bytes,
            ..
        } = std::mem::replace(&mut st.pod, PodLabels::Unwanted)
        else {
            return;
        };
        st.pod = PodLabels::Late(pod);
        self.held_bytes -= held_bytes;
        let answered = self.learn_pod(file) == PodAnswer::Applied;
        if !answered && !early {
            self.ctx
                .stats
                .pod_wait_expired
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(source = %self.ctx.name, "no pod labels yet; sending without them");
        }
        self.waiting.retain(|f| *f != file);
        let mut held = held;
        if !held.is_empty() {
            self.emit(file, &mut held, chunk);
        }
    }
}

/// Pod labels as `label.NAME` fields, and the node from the pod's spec when `NODE_NAME` did
/// not give it.
fn add_pod_fields(out: &mut Vec<(FieldName, Bytes)>, meta: &PodMeta, want_node: bool) {
    for (k, v) in &meta.labels {
        out.push((
            FieldName::Owned(format!("{}{k}", fields::LABEL_PREFIX).into()),
            Bytes::from(v.clone()),
        ));
    }
    // `want_node` is false exactly when NODE_NAME put a node among the path's fields.
    if let Some(node) = meta.node_name.as_ref().filter(|_| want_node) {
        out.push((FieldName::Static(fields::NODE), Bytes::from(node.clone())));
    }
}

/// A finished multiline event, with its time read from its first line.
fn self_timestamped(
    parser: &Option<TimestampParser>,
    a: logferry_tail::multiline::Aggregated,
    now_ms: i64,
) -> Pending {
    let ts = parser.as_ref().and_then(|p| p.parse(&a.message, now_ms));
    Pending {
        timestamp_ms: ts.unwrap_or(now_ms),
        message: a.message,
        extra: None,
        truncated_bytes: a.truncated_bytes,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
