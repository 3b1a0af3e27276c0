//! The CloudWatch Logs sink: from events to accepted PutLogEvents requests.
//!
//! One task ([`CloudWatchSink::run`]) takes event chunks from a bounded channel, renders each
//! event's text and group/stream names, and feeds a [`batch::RequestBuilder`] per stream. Full
//! requests (or ones older than `batch_timeout`) are handed to a request task ([`request`]),
//! at most `stream_concurrency` per stream and `max_in_flight` overall. Waiting for a free slot
//! stops the intake loop, the channel fills, and sources stop reading: that is the backpressure.
//!
//! Request tasks own the retry policy (the SDK's own retries are off: they could resend
//! silently) and resolve every event's acknowledgement as delivered or dead-lettered. Nothing
//! is given up on while the process runs; at shutdown, what could not be delivered within the
//! grace period is left unacknowledged, so a source with a position reads it again next time.
//!
//! Per-stream state is dropped once a stream has been idle for a while, so memory does not grow
//! with the number of streams ever seen (a Vector bug with per-pod streams). Requests being
//! built are capped in total ([`BUILDING_BUDGET`]): with a stream per pod, a hundred builders
//! each filling toward 1 MiB would otherwise hold a hundred MiB during a backlog; past the cap
//! the fullest one is sent early, which also waits for a slot, so the cap is backpressure too.

pub mod batch;
pub mod client;
pub mod dead_letter;
pub mod endpoint;
pub mod request;
pub mod stats;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::ack::AckStatus;
use crate::config::CloudWatchSinkConfig;
use crate::event::{now_ms, Event};
use crate::format::format_event;
use crate::template::Template;
use batch::{split_oversize, Pending, RequestBuilder, MAX_MESSAGE_BYTES};
use dead_letter::{DeadLetterFile, Reason};
use stats::SinkStats;

/// CloudWatch refuses events older than this.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// CloudWatch refuses events further ahead than this.
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;
/// Stream state idle this long is released.
const STREAM_IDLE: Duration = Duration::from_secs(300);
/// Bytes all streams' requests being built may hold together before the fullest is sent.
pub const BUILDING_BUDGET: usize = 16 << 20;

/// What request tasks share.
pub struct Shared {
    /// The SDK client (retries off).
    pub client: aws_sdk_cloudwatchlogs::Client,
    /// The sink's settings.
    pub config: CloudWatchSinkConfig,
    /// Where rejected events go.
    pub dead_letter: DeadLetterFile,
    /// The books.
    pub stats: Arc<SinkStats>,
    /// Cancelled when the shutdown grace period is over.
    pub cancel: CancellationToken,
    /// The sink's name, for logs.
    pub name: String,
    /// Rate limiting of repeated warnings.
    pub log_limiter: request::LogLimiter,
    /// Requests in flight and when each was dispatched, for the oldest-unsent-event age.
    pub in_flight_since: std::sync::Mutex<std::collections::BTreeMap<u64, Instant>>,
}

struct StreamState {
    group: Arc<str>,
    stream: Arc<str>,
    builder: RequestBuilder,
    slots: Arc<Semaphore>,
    last_used: Instant,
}

/// The sink task's state.
pub struct CloudWatchSink {
    shared: Arc<Shared>,
    group: Template,
    stream: Template,
    streams: HashMap<String, StreamState>,
    global_slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    key_buf: String,
    group_buf: String,
    stream_buf: String,
    rejected: Vec<(Pending, Reason)>,
    request_seq: u64,
    /// What every stream's builder holds, in request bytes.
    building_bytes: usize,
}

impl CloudWatchSink {
    /// A sink with host variables already bound in its templates.
    pub fn new(shared: Arc<Shared>, group: Template, stream: Template) -> Self {
        let max_in_flight = shared.config.max_in_flight;
        CloudWatchSink {
            shared,
            group,
            stream,
            streams: HashMap::new(),
            global_slots: Arc::new(Semaphore::new(max_in_flight)),
            tasks: JoinSet::new(),
            key_buf: String::new(),
            group_buf: String::new(),
            stream_buf: String::new(),
            rejected: Vec::new(),
            request_seq: 0,
            building_bytes: 0,
        }
    }

    /// Runs until every sender of `rx` is gone, then flushes and waits for in-flight requests
    /// (which give up, leaving events unacknowledged, when the cancel token fires).
    pub async fn run(mut self, mut rx: mpsc::Receiver<Vec<Event>>) {
        let tick_every = (self.shared.config.batch_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(_) = self.tasks.join_next(), if !self.tasks.is_empty() => {}
                chunk = rx.recv() => match chunk {
                    Some(events) => self.ingest(events).await,
                    None => break,
                },
                _ = tick.tick() => self.flush_due().await,
            }
        }
        let keys: Vec<String> = self.streams.keys().cloned().collect();
        for key in keys {
            self.flush_stream(&key).await;
        }
        while self.tasks.join_next().await.is_some() {}
    }

    async fn ingest(&mut self, events: Vec<Event>) {
        let stats = self.shared.stats.clone();
        stats
            .events_received
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        let now = now_ms();
        let format = self.shared.config.format;
        for event in events {
            let mut text = String::new();
            format_event(&event, format, &mut text);
            if text.is_empty() {
                // CloudWatch refuses empty messages; an explicit, counted policy.
                stats.dropped_empty.fetch_add(1, Ordering::Relaxed);
                event.ack.resolve(AckStatus::DeadLettered);
                continue;
            }
            self.route(&event);
            // Borrowed out of `key_buf` (and put back) so no event allocates its key.
            let key = std::mem::take(&mut self.key_buf);
            let ts = event.timestamp_ms;
            let reject = if ts < now - MAX_AGE_MS {
                Some(Reason::TooOld)
            } else if ts > now + MAX_AHEAD_MS {
                Some(Reason::TooNew)
            } else {
                None
            };
            let parts = split_oversize(ts, text, event.ack, MAX_MESSAGE_BYTES);
            if parts.len() > 1 {
                stats
                    .split_parts
                    .fetch_add(parts.len() as u64 - 1, Ordering::Relaxed);
            }
            if let Some(reason) = reject {
                self.rejected.extend(parts.into_iter().map(|p| (p, reason)));
                self.flush_rejected(&key);
            } else {
                for part in parts {
                    let Some(state) = self.streams.get_mut(&key) else {
                        continue;
                    };
                    let before = state.builder.bytes();
                    let cut = state.builder.push(part);
                    self.building_bytes = self.building_bytes - before + state.builder.bytes();
                    if let Some(request) = cut {
                        self.dispatch(&key, request).await;
                    }
                    if self.building_bytes > BUILDING_BUDGET {
                        self.flush_fullest().await;
                    }
                }
            }
            self.key_buf = key;
        }
    }

    /// Finds (or creates) the stream state for `event`, leaving its key in `key_buf`.
    fn route(&mut self, event: &Event) {
        let group = match self.group.as_static() {
            Some(g) => g,
            None => {
                self.group.render(event, &mut self.group_buf);
                &self.group_buf
            }
        };
        let stream = match self.stream.as_static() {
            Some(s) => s,
            None => {
                self.stream.render(event, &mut self.stream_buf);
                &self.stream_buf
            }
        };
        self.key_buf.clear();
        self.key_buf.push_str(group);
        self.key_buf.push('\n');
        self.key_buf.push_str(stream);
        let now = Instant::now();
        if let Some(state) = self.streams.get_mut(&self.key_buf) {
            state.last_used = now;
            return;
        }
        let cfg = &self.shared.config;
        self.streams.insert(
            self.key_buf.clone(),
            StreamState {
                group: group.into(),
                stream: stream.into(),
                builder: RequestBuilder::new(cfg.max_batch_events, cfg.max_batch_bytes),
                slots: Arc::new(Semaphore::new(cfg.stream_concurrency)),
                last_used: now,
            },
        );
    }

    fn flush_rejected(&mut self, key: &str) {
        if self.rejected.is_empty() {
            return;
        }
        let Some(state) = self.streams.get(key) else {
            return;
        };
        let rejected = std::mem::take(&mut self.rejected);
        let shared = self.shared.clone();
        let (group, stream) = (state.group.clone(), state.stream.clone());
        self.tasks.spawn(
            async move {
                request::dead_letter(&shared, &group, &stream, rejected, None).await;
            }
            .in_current_span(),
        );
    }

    async fn dispatch(&mut self, key: &str, request: Vec<Pending>) {
        let Some(state) = self.streams.get(key) else {
            return;
        };
        let (group, stream, slots) = (
            state.group.clone(),
            state.stream.clone(),
            state.slots.clone(),
        );
        let stream_permit = acquire(slots, &mut self.tasks).await;
        let global_permit = acquire(self.global_slots.clone(), &mut self.tasks).await;
        let shared = self.shared.clone();
        self.request_seq += 1;
        let seq = self.request_seq;
        if let Ok(mut m) = shared.in_flight_since.lock() {
            m.insert(seq, Instant::now());
        }
        self.tasks.spawn(
            async move {
                let _permits = (stream_permit, global_permit);
                request::deliver(&shared, &group, &stream, request).await;
                if let Ok(mut m) = shared.in_flight_since.lock() {
                    m.remove(&seq);
                }
            }
            .in_current_span(),
        );
    }

    async fn flush_stream(&mut self, key: &str) {
        let Some(state) = self.streams.get_mut(key) else {
            return;
        };
        self.building_bytes -= state.builder.bytes();
        if let Some(request) = state.builder.take() {
            self.dispatch(key, request).await;
        }
    }

    /// Sends the request that holds the most, to keep [`BUILDING_BUDGET`].
    async fn flush_fullest(&mut self) {
        let fullest = self
            .streams
            .iter()
            .max_by_key(|(_, s)| s.builder.bytes())
            .map(|(k, _)| k.clone());
        if let Some(key) = fullest {
            self.shared
                .stats
                .budget_flushes
                .fetch_add(1, Ordering::Relaxed);
            self.flush_stream(&key).await;
        }
    }

    async fn flush_due(&mut self) {
        let timeout = self.shared.config.batch_timeout;
        let now = Instant::now();
        let due: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.builder
                    .opened()
                    .is_some_and(|t| now.duration_since(t) >= timeout)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            self.flush_stream(&key).await;
        }
        let oldest_building = self
            .streams
            .values()
            .filter_map(|s| s.builder.opened())
            .map(|t| now.duration_since(t))
            .max()
            .unwrap_or_default();
        let oldest_in_flight = self
            .shared
            .in_flight_since
            .lock()
            .ok()
            .and_then(|m| m.values().next().map(|t| now.duration_since(*t)))
            .unwrap_or_default();
        self.shared.stats.oldest_held_age_ms.store(
            oldest_building.max(oldest_in_flight).as_millis() as u64,
            Ordering::Relaxed,
        );
        let stream_concurrency = self.shared.config.stream_concurrency;
        self.streams.retain(|_, s| {
            !(s.builder.is_empty()
                && now.duration_since(s.last_used) > STREAM_IDLE
                && s.slots.available_permits() == stream_concurrency)
        });
    }
}

/// Waits for a permit while still reaping finished request tasks, so a full pipeline does not
/// hold on to the memory of completed requests.
async fn acquire(slots: Arc<Semaphore>, tasks: &mut JoinSet<()>) -> Option<OwnedSemaphorePermit> {
    loop {
        tokio::select! {
            permit = slots.clone().acquire_owned() => return permit.ok(),
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// The span of one sink: everything it logs, in its intake loop and its request tasks, carries
/// `sink = NAME`.
pub fn span(name: &str) -> tracing::Span {
    tracing::info_span!("sink", sink = %name)
}
