//! The reader thread (the tailer is synchronous): up to [`CHUNK_EVENTS`] lines at a time
//! across all files, decoded per file, one acknowledgement batch per run of a file's lines
//! registered with the position to save once it is delivered, then the chunk sent, blocking
//! while the sink's channel is full: the files wait on disk.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use logferry_kubernetes::{PodMetadata, PodRef};
use logferry_tail::container::{self, PodInfo};
use logferry_tail::multiline::{JoinRule, MultilineOptions, Preset};
use logferry_tail::tailer::{CloseReason, FileId, Line, Notice, Tailer};
use logferry_tail::timestamp::TimestampParser;
use tokio::sync::mpsc;

use super::books::Registration;
use super::decode::{Decoder, Pending};
use super::pod_labels::{Labels, PodAnswer};
use crate::ack::{AckBatch, BatchOutcome};
use crate::config::FileSourceConfig;
use crate::event::{names, now_ms, Event, FieldName};
use crate::json_merge::{self, Inspection};
use crate::source::{Chunk, SourceContext, CHUNK_EVENTS};

/// Longest sleep of the reader when nothing happens (it also checks for shutdown, so this is
/// how late a stop may be noticed; inotify wakes it for any change). Once a second keeps an
/// idle node's cost near zero.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often the reader asks again for the labels of pods whose files are waiting for them.
const POD_POLL: Duration = Duration::from_millis(20);

/// What the reader keeps per open file.
struct FileState {
    decoder: Decoder,
    labels: Labels,
    /// The file's identity (source, device, inode), the start of its events' origins.
    origin_seed: [u8; 24],
    /// The `logferry.io/multiline` preset the decoder joins with (`None`: the source's rule).
    preset: Option<Preset>,
}

impl FileState {
    /// The furthest position that may be saved: past every consumed line, but never past the
    /// start of something still held (by the decoders, or while the pod's labels are awaited).
    fn safe_offset(&self) -> u64 {
        let at = self.decoder.safe_offset();
        self.labels.held_from().map_or(at, |from| at.min(from))
    }
}

pub(super) struct Reader {
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
    /// Lines starting with `{` that `merge_json` could not merge (the first few are logged).
    merge_failures: u64,
}

impl Reader {
    pub fn new(
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
            merge_failures: 0,
        }
    }

    pub fn run(mut self) {
        let mut lines: Vec<Line> = Vec::with_capacity(CHUNK_EVENTS);
        let mut notices = Vec::new();
        while !self.ctx.shutdown.is_cancelled() {
            lines.clear();
            let n = self.tailer.read(&mut lines, CHUNK_EVENTS);
            self.tailer.drain_notices(&mut notices);
            self.ctx
                .stats
                .files_rate_paused
                .store(self.tailer.rate_pauses(), Ordering::Relaxed);
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
        match notice {
            Notice::Opened {
                file,
                path,
                key,
                offset,
            } => {
                tracing::debug!(path = %path.display(), offset, "following file");
                let mut seed = [0u8; 24];
                seed[..8].copy_from_slice(
                    &crate::event::origin(&[self.ctx.name.as_bytes()]).to_le_bytes(),
                );
                seed[8..16].copy_from_slice(&key.dev.to_le_bytes());
                seed[16..].copy_from_slice(&key.ino.to_le_bytes());
                self.open(file, &path, offset, seed);
            }
            Notice::Truncated { file, path, at } => {
                tracing::warn!(path = %path.display(), at, "file truncated; reading it again from its start");
                self.ctx
                    .stats
                    .files_truncated
                    .fetch_add(1, Ordering::Relaxed);
                // What was held belongs to content that is gone.
                if let Some(st) = self.files.get_mut(&file) {
                    st.decoder.truncated();
                }
            }
            Notice::Missing { saved } => {
                tracing::error!(path = %saved.path.display(), offset = saved.offset, "a file read before was deleted while logferry was stopped; its unread lines are lost");
                self.ctx.stats.files_missing.fetch_add(1, Ordering::Relaxed);
            }
            Notice::Skipped { path, reason } => {
                tracing::debug!(path = %path.display(), "not read: {reason}");
            }
            Notice::Error { path, error } => {
                tracing::warn!(path = %path.display(), error = %error, "cannot read");
            }
            Notice::Closed { .. } => {}
        }
    }

    fn open(&mut self, file: FileId, path: &Path, offset: u64, origin_seed: [u8; 24]) {
        let mut fields = vec![(
            FieldName::Static(names::FILE),
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
                pod_ref = Some((
                    PodRef {
                        namespace: namespace.clone(),
                        name: pod.clone(),
                        uid: pod_uid.clone(),
                    },
                    container.clone(),
                ));
                fields.push((FieldName::Static(names::NAMESPACE), Bytes::from(namespace)));
                fields.push((FieldName::Static(names::POD), Bytes::from(pod)));
                if !pod_uid.is_empty() {
                    fields.push((FieldName::Static(names::POD_UID), Bytes::from(pod_uid)));
                }
                fields.push((FieldName::Static(names::CONTAINER), Bytes::from(container)));
            }
            if let Some(n) = &self.node {
                fields.push((FieldName::Static(names::NODE), n.clone()));
            }
        }
        let labels = Labels::new(fields, pod_ref, self.pods.is_some());
        let multiline = self.multiline_options(None);
        let decoder = Decoder::new(
            offset,
            self.cfg.kubernetes,
            self.cfg.tail.max_line_bytes,
            multiline,
        );
        self.files.insert(
            file,
            FileState {
                decoder,
                labels,
                origin_seed,
                preset: None,
            },
        );
        let answer = self.learn_pod(file);
        self.follow_multiline_annotation(file, &mut Vec::new());
        if answer == PodAnswer::Pending {
            let wait = self
                .cfg
                .kubernetes_api
                .as_ref()
                .map_or(Duration::ZERO, |k| k.wait);
            if let Some(st) = self.files.get_mut(&file) {
                if st.labels.start_waiting(Instant::now() + wait, offset) {
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
        let timestamps = self.timestamps.as_ref();
        let before = out.len();
        let result = st.decoder.line(line, timestamps, now_ms, now, out);
        // The line that finished them, and their text: a copytruncated file's new content at
        // an old offset is not taken for the old.
        for (i, p) in out[before..].iter_mut().enumerate() {
            p.origin = crate::event::origin(&[
                &st.origin_seed,
                &line.end_offset.to_le_bytes(),
                &(i as u64).to_le_bytes(),
                &p.message,
            ]);
        }
        if let Err(e) = result {
            // Not what the runtime writes: the line was shipped as it is rather than lost.
            self.unparsed += 1;
            self.ctx.stats.unparsed.fetch_add(1, Ordering::Relaxed);
            if self.unparsed <= 10 {
                tracing::warn!(error = %e, "a container log line is neither CRI nor Docker json-file; sent as it is");
            }
        }
    }

    /// Gives `pending` events of `file` one acknowledgement batch and registers the position
    /// to save once it is delivered.
    fn emit(&mut self, file: FileId, pending: &mut Vec<Pending>, chunk: &mut Chunk) {
        let Some(st) = self.files.get_mut(&file) else {
            return;
        };
        if let Some(bytes) = st.labels.hold(pending, self.held_bytes) {
            self.held_bytes += bytes;
            return;
        }
        let refresh = self.cfg.kubernetes_api.as_ref().map(|k| k.cache_ttl);
        let generation = self.pods.as_ref().map_or(0, |p| p.generation());
        if st.labels.is_waiting() {
            self.settle_pod(file, true, chunk);
        } else if st.labels.lookup_due(refresh, generation) {
            self.learn_pod(file);
        }
        self.follow_multiline_annotation(file, pending);
        let Some(st) = self.files.get_mut(&file) else {
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
        if st.labels.directives.excluded {
            // A `logferry.io/exclude` annotation: the batch, without events, is delivered as
            // it is dropped, so the position moves past lines that are never shipped.
            let excluded = pending.drain(..).filter(|p| !p.message.is_empty()).count();
            self.ctx
                .stats
                .excluded_events
                .fetch_add(excluded as u64, Ordering::Relaxed);
            return;
        }
        // Logferry's fields of a merged line go under one key, so the app's keys always win.
        let meta_key = if self.cfg.kubernetes {
            "kubernetes"
        } else {
            "logferry"
        };
        for p in pending.drain(..) {
            if p.message.is_empty() {
                // CloudWatch refuses empty events; the position still moves past the line.
                continue;
            }
            let merged = if self.cfg.merge_json {
                match json_merge::inspect(&p.message, p.truncated_bytes > 0, meta_key) {
                    Inspection::Merged(m) => Some(m),
                    Inspection::NotAnObject => None,
                    Inspection::Failed(why) => {
                        self.merge_failures += 1;
                        self.ctx
                            .stats
                            .json_merge_failures
                            .fetch_add(1, Ordering::Relaxed);
                        if self.merge_failures <= 10 {
                            tracing::warn!(error = %why, "a line starting with `{{` is not merged (merge_json); sent as it is");
                        }
                        None
                    }
                }
            } else {
                None
            };
            chunk.push(Event {
                timestamp_ms: p.timestamp_ms,
                message: p.message,
                priority: None,
                common: Some(st.labels.common(p.extra)),
                fields: Vec::new(),
                source: self.ctx.name.clone(),
                truncated_bytes: p.truncated_bytes,
                ack: batch.ack(),
                origin: p.origin,
                header: None,
                merged,
            });
        }
    }

    /// Sends what a closed file still holds, then lets the collector retire it.
    fn close(&mut self, file: FileId, reason: CloseReason, chunk: &mut Chunk) {
        self.settle_pod(file, true, chunk);
        let timestamps = self.timestamps.as_ref();
        let mut pending = match self.files.get_mut(&file) {
            Some(st) => st.decoder.flush(timestamps, now_ms()),
            None => Vec::new(),
        };
        if !pending.is_empty() {
            self.emit(file, &mut pending, chunk);
        }
        if let Some(path) = self.tailer.path(file) {
            tracing::debug!(path = %path.display(), ?reason, "file closed");
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
            .filter(|(_, st)| st.decoder.deadline().is_some_and(|d| d <= now))
            .map(|(f, _)| *f)
            .collect();
        let now_ms = now_ms();
        for file in due {
            let timestamps = self.timestamps.as_ref();
            let mut due = self
                .files
                .get_mut(&file)
                .map(|st| st.decoder.flush_due(now, timestamps, now_ms))
                .unwrap_or_default();
            if !due.is_empty() {
                self.emit(file, &mut due, chunk);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let multiline = self
            .files
            .values()
            .filter_map(|st| st.decoder.deadline())
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
            let pods = self.pods.as_ref();
            let over = self
                .files
                .get(&file)
                .and_then(|st| st.labels.wait_over(|pod| pods.map(|p| p.lookup(pod)), now));
            let Some(ready) = over else {
                continue;
            };
            if ready {
                self.settle_pod(file, false, chunk);
            } else {
                self.waiting.push(file);
            }
        }
    }

    /// The multiline options of a file: `preset` (a pod's `logferry.io/multiline`) with the
    /// source's bounds (or their defaults), else the source's own.
    fn multiline_options(&self, preset: Option<Preset>) -> Option<MultilineOptions> {
        let source = self.cfg.multiline.as_ref();
        let rule = match (preset, source) {
            (Some(p), _) => JoinRule::Preset(p),
            (None, Some(m)) => m.rule.clone(),
            (None, None) => return None,
        };
        Some(MultilineOptions {
            rule,
            timeout: source.map_or(Duration::from_secs(1), |m| m.timeout),
            max_lines: source.map_or(500, |m| m.max_lines),
            max_bytes: source.map_or(self.cfg.tail.max_line_bytes, |m| m.max_bytes),
        })
    }

    /// When the pod's `logferry.io/multiline` annotation differs from what the file's decoder
    /// joins with, the decoder takes it, and `events` (decoded before it was known, not sent)
    /// are joined again under it.
    fn follow_multiline_annotation(&mut self, file: FileId, events: &mut Vec<Pending>) {
        let Some(st) = self.files.get(&file) else {
            return;
        };
        let wanted = st.labels.directives.multiline;
        if wanted == st.preset {
            return;
        }
        let options = self.multiline_options(wanted);
        let timestamps = self.timestamps.as_ref();
        let Some(st) = self.files.get_mut(&file) else {
            return;
        };
        st.preset = wanted;
        let earlier = std::mem::take(events);
        *events = st.decoder.rejoin(options, earlier, timestamps, now_ms());
    }

    /// Looks the pod of a late or known file up again and applies what the API says (see
    /// [`Labels::learn`]).
    fn learn_pod(&mut self, file: FileId) -> PodAnswer {
        let Some(st) = self.files.get_mut(&file) else {
            return PodAnswer::Unavailable;
        };
        let pods = self.pods.as_ref();
        let want_node = self.node.is_none();
        // Read before the lookup: a change landing in between moves it again.
        st.labels.generation = pods.map_or(0, |p| p.generation());
        st.labels
            .learn(|pod| pods.map(|p| p.lookup(pod)), want_node, Instant::now())
    }

    /// Ends a file's wait for its pod's labels: applies them if known (else the file goes
    /// late) and sends the held events. `early`: the wait is cut short (the
    /// file is closing, or holds too much), which is not counted as the API being late.
    fn settle_pod(&mut self, file: FileId, early: bool, chunk: &mut Chunk) {
        let Some(st) = self.files.get_mut(&file) else {
            return;
        };
        let Some((mut held, held_bytes)) = st.labels.end_wait() else {
            return;
        };
        self.held_bytes -= held_bytes;
        let answered = self.learn_pod(file) == PodAnswer::Applied;
        if !answered && !early {
            self.ctx
                .stats
                .pod_wait_expired
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("no pod labels yet; sending without them");
        }
        self.waiting.retain(|f| *f != file);
        self.follow_multiline_annotation(file, &mut held);
        if !held.is_empty() {
            self.emit(file, &mut held, chunk);
        }
    }
}
