//! The CloudWatch Logs sink: from events to accepted PutLogEvents requests.
//!
//! One task ([`CloudWatchSink::run`]) takes event chunks from a bounded channel, renders each
//! event's text and group/stream names ([`intake`]), and feeds a [`batch::StreamBatcher`] per
//! stream (a request being built per UTC day of the stream's events). Then it schedules: a full request
//! may go at once, a partial one once it is `batch_timeout` old, and each goes only when the
//! sink's [`governor`] has budget for a call: CloudWatch's quotas are per account, and the
//! governor paces the sink to its share of them (AIMD, like TCP). While there is no budget,
//! requests keep filling, so latency grows instead of throttles and each call carries more.
//! When budget frees, the request with the highest `age + fill x batch_timeout` goes first
//! (the oldest, a full one counting as one `batch_timeout` older), so no stream starves.
//!
//! A sent request runs in a task ([`request::put`], one attempt); its answer comes back here:
//! a throttle slows the whole sink and puts the request back in its queue, a missing stream
//! waits for [`control`] to create it (once, paced), other failures wait a backoff
//! ([`retry`]). Nothing is given up on while the process runs; at shutdown, what could not be
//! delivered within the grace period is left unacknowledged, so a source with a position reads
//! it again next time.
//!
//! Order: CloudWatch orders a stream's events by timestamp, and events with the same timestamp
//! in the order it ingested them. Within a request the batcher keeps arrival order for equal
//! timestamps (a stable sort); across requests only the scheduler can: two requests of one
//! stream that share a timestamp, in flight at once, could be stored in either order and their
//! equal-timestamp events interleave. So a request goes while others of its stream are in
//! flight only if its timestamp range `[first, last]` is disjoint from each of theirs;
//! otherwise it waits for their answers (and the stream's later requests wait behind it).
//! Requests with distinct timestamps keep up to `stream_concurrency` in flight. A stream with
//! many events per millisecond would have consecutive requests sharing their boundary
//! millisecond, one request per round trip (150,000 events/s for a journal backfill); the
//! batcher keeps that millisecond's events back for the next request, so they do not.
//!
//! Backpressure: one budget, `max_held_bytes` ([`MAX_HELD_BYTES`] by default), bounds every
//! byte of text the sink holds, across all streams: requests being built, ready, and in flight
//! (a request's bytes stay counted until its answer). Past it, intake stops in the middle of
//! a chunk, so the channel fills and sources stop reading; the budget is exceeded by one event
//! at most. When requests being built hold most of it, the fullest is made ready at once;
//! when ready and in-flight ones do, the sink waits for answers instead (cutting builders
//! then would only make the next requests tiny). At most `stream_concurrency` requests per
//! stream and `max_in_flight` overall are in flight. Per-stream state is dropped once a stream
//! has been idle for a while, so memory does not grow with the number of streams ever seen
//! (a Vector bug with per-pod streams).

pub mod batch;
pub mod client;
pub mod control;
pub mod dead_letter;
pub mod endpoint;
pub mod entity;
pub mod governor;
mod intake;
pub mod ledger;
pub mod request;
pub mod retry;
pub mod settle;
pub mod stats;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::CloudWatchSinkConfig;
use crate::event::{now_ms, Event};
use crate::source::SinkInput;
use crate::template::Template;
use batch::{Cut, Pending, StreamBatcher};
use control::ControlPlane;
use dead_letter::{DeadLetterFile, Reason};
use governor::{Governor, Pace, Ticket};
use request::{Answer, Request};
use stats::SinkStats;

/// CloudWatch refuses events older than this.
pub const MAX_AGE_MS: i64 = 14 * 24 * 3600 * 1000;
/// CloudWatch refuses events further ahead than this.
pub const MAX_AHEAD_MS: i64 = 2 * 3600 * 1000;
/// Stream state idle this long is released.
const STREAM_IDLE: Duration = Duration::from_secs(300);
/// How often an idle sink looks for streams unused for [`STREAM_IDLE`] (and the end of
/// [`SKIP_FOR`]); both are minutes, so this need not be sooner.
const IDLE_HOUSEKEEPING: Duration = Duration::from_secs(10);
/// The default `max_held_bytes`: text (messages + 26 bytes each) the sink holds in requests
/// being built, ready and in flight, across all streams, before its sources wait.
///
/// Separate caps per stage (16 MiB being built, 2 MiB ready, in flight uncapped) let the
/// sink be most of the process's peak: up to 72 MiB of heap with a hundred container
/// streams. What the budget must allow: a full request (1 MiB) in flight while the next one
/// fills, and enough bytes in flight to cover the round trip; see ARCHITECTURE.md's
/// performance notes for what was measured. Past it the input waits upstream, in files, the
/// journal, the spool or the client's TCP buffers.
pub const MAX_HELD_BYTES: usize = 2 << 20;

/// A stream other than the one being fed is cut for the budget only if it holds at least
/// this fraction of it ([`CloudWatchSink::make_fullest_ready`]): cutting tiny requests frees
/// too little to be worth a call.
const WORTH_CUTTING: usize = 16;

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
    pub log_limiter: retry::LogLimiter,
    /// What each request held, for the next start after a crash ([`ledger`]).
    pub ledger: std::sync::Mutex<ledger::Ledger>,
}

impl Shared {
    /// Records request `id`'s answer in the ledger: `delivered` (every event is in CloudWatch)
    /// or not (split, or some events dead-lettered: it proves nothing).
    pub fn ledger_note(&self, id: u64, delivered: bool) {
        if let Ok(mut l) = self.ledger.lock() {
            if delivered {
                l.settled(id);
            } else {
                l.forgotten(id);
            }
        }
    }
}

/// Whether a stream is known to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Existence {
    /// Not known yet: one request at a time until the first answer says.
    Unknown,
    /// PutLogEvents found it missing; [`control`] is creating it.
    Missing,
    /// A request succeeded, or it was created.
    Exists,
}

struct StreamState {
    group: Arc<str>,
    stream: Arc<str>,
    /// The `"entity":{...}` member of its requests ([`entity`]), part of its key.
    entity: Option<Arc<str>>,
    building: StreamBatcher,
    /// Requests cut (full) or sent back (throttled, failed, waiting for the stream), in order.
    ready: VecDeque<Request>,
    /// The requests in flight, with their timestamp ranges (see "Order" above).
    in_flight: Vec<Flying>,
    existence: Existence,
    last_used: Instant,
}

/// A request in flight: its number, the timestamps its events cover and the bytes it holds.
struct Flying {
    seq: u64,
    first: i64,
    last: i64,
    bytes: usize,
}

/// Whether a request covering `span` shares a timestamp range with one in flight, and so must
/// wait for it to keep equal-timestamp events in arrival order.
fn overlaps_in_flight(in_flight: &[Flying], span: Option<(i64, i64)>) -> bool {
    span.is_some_and(|(first, last)| in_flight.iter().any(|f| first <= f.last && f.first <= last))
}

/// What a finished task reports.
enum Finished {
    Put {
        key: String,
        seq: u64,
        ticket: Ticket,
        answer: Answer,
    },
    Control(control::Finished),
    DeadLettered,
}

/// Where the next request comes from.
enum Source {
    Ready,
    Building(usize),
}

/// The sink task's state.
pub struct CloudWatchSink {
    shared: Arc<Shared>,
    group: Template,
    stream: Template,
    /// By `group\nstream[\nentity]`. Looked up for every event taken in, so hashed with
    /// foldhash (seeded per process) rather than SipHash, which was 1.7% of a container run.
    streams: HashMap<String, StreamState, foldhash::fast::RandomState>,
    entities: Option<entity::EntityMapper>,
    governor: Governor,
    control: ControlPlane,
    tasks: JoinSet<Finished>,
    puts_in_flight: usize,
    key_buf: String,
    /// The last routed event's common fields, source and priority, and its key: a file's
    /// events share all three, so they are routed without rendering names or the entity.
    last_route: Option<intake::LastRoute>,
    group_buf: String,
    stream_buf: String,
    text_buf: String,
    rejected: Vec<(Pending, Reason)>,
    /// The rest of a chunk taken in while the budget was full: taken in first once it is not.
    unread: std::vec::IntoIter<Event>,
    /// Bytes held: being built, ready or in flight (see "Backpressure" above).
    held_bytes: usize,
    /// When the sink began waiting for budget with a request ready, if it is.
    waiting_since: Option<Instant>,
    /// When each in-flight request's oldest event was taken in, by request number.
    in_flight_opened: BTreeMap<u64, Instant>,
    request_seq: u64,
    /// What the ledger held at start, settled before the first event is taken in.
    loaded: Option<ledger::Loaded>,
    /// Origins of events known to be in CloudWatch ([`settle`]): acknowledged, not sent, when
    /// a source reads them again. Emptied after [`SKIP_FOR`].
    skip: HashSet<u64>,
    started: Instant,
    /// Whether the last housekeeping reported something held: once idle, one more pass
    /// reports zero.
    oldest_held_reported: bool,
}

/// A request or control task that did not finish (it panicked: nothing cancels them while the
/// sink runs). Its slot in `puts_in_flight` and its stream's in-flight mark would never be
/// released, so the sink would stall with events held; stopping the process instead lets the
/// supervisor restart it, and everything unacknowledged is read again. Release builds abort on
/// panic anyway (`panic = "abort"`); this makes debug builds, which the tests run, do the same.
fn task_failed(e: tokio::task::JoinError) -> ! {
    tracing::error!(error = %e, "a CloudWatch request task failed; stopping so that nothing stays held");
    std::process::abort()
}

/// How long after start re-read events may be skipped (a source re-reads from its saved
/// position at once; this only bounds the memory).
const SKIP_FOR: Duration = Duration::from_secs(600);

impl CloudWatchSink {
    /// A sink with host variables already bound in its templates.
    pub fn new(shared: Arc<Shared>, group: Template, stream: Template) -> Self {
        let now = Instant::now();
        let cfg = &shared.config;
        let governor = Governor::new(
            Pace::put_log_events(cfg.max_backoff, cfg.max_requests_per_second),
            now,
        );
        let control = ControlPlane::new(cfg.max_backoff, now);
        let entities = cfg.entity.clone().map(entity::EntityMapper::new);
        CloudWatchSink {
            shared,
            group,
            stream,
            streams: HashMap::default(),
            entities,
            governor,
            control,
            tasks: JoinSet::new(),
            puts_in_flight: 0,
            key_buf: String::new(),
            last_route: None,
            group_buf: String::new(),
            stream_buf: String::new(),
            text_buf: String::new(),
            rejected: Vec::new(),
            unread: Vec::new().into_iter(),
            held_bytes: 0,
            waiting_since: None,
            in_flight_opened: BTreeMap::new(),
            request_seq: 0,
            loaded: None,
            skip: HashSet::new(),
            started: now,
            oldest_held_reported: false,
        }
    }

    /// Settles what the ledger held at start (`loaded`) before taking events in.
    pub fn settle_first(mut self, loaded: ledger::Loaded) -> Self {
        self.loaded = Some(loaded);
        self
    }

    async fn settle(&mut self) {
        let settled = match self.loaded.take() {
            Some(loaded) => settle::settle(&self.shared, loaded).await,
            None => settle::Settled::default(),
        };
        let started = match self.shared.ledger.lock() {
            Ok(mut l) => l.start(&settled.keep),
            Err(_) => Err(std::io::Error::other("ledger lock poisoned")),
        };
        if let Err(e) = started {
            tracing::warn!(error = %e, "cannot start the in-flight ledger; after a crash, what was in flight will be sent again (duplicates, no loss)");
        }
        self.skip = settled.skip;
        self.started = Instant::now();
    }

    /// Runs until every sender of `rx` is gone and everything is delivered, or until the
    /// cancel token fires after that (then what is left stays unacknowledged).
    pub async fn run(mut self, mut rx: mpsc::Receiver<SinkInput>) {
        // Before the first event: sources are already re-reading past their saved positions.
        self.settle().await;
        let busy_every = (self.shared.config.batch_timeout / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(250));
        let mut last_housekeeping = Instant::now();
        let mut open = true;
        let cancel = self.shared.cancel.clone();
        let budget = self.shared.config.max_held_bytes;
        loop {
            if !self.unread.as_slice().is_empty() && self.held_bytes < budget {
                self.take_in();
            }
            self.note_held();
            let wake = self.send_what_may_go();
            if !open && self.is_idle() {
                break;
            }
            let intake = open && self.unread.as_slice().is_empty() && self.held_bytes < budget;
            let sleep = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into());
            let housekeeping_at = self
                .housekeeping_every(busy_every)
                .map(|every| last_housekeeping + every);
            let housekeeping =
                tokio::time::sleep_until(housekeeping_at.unwrap_or_else(Instant::now).into());
            tokio::select! {
                biased;
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => {
                    match done {
                        Ok(done) => self.finished(done),
                        Err(e) => task_failed(e),
                    }
                }
                input = rx.recv(), if intake => match input {
                    Some(SinkInput::CaughtUp) => self.make_all_ready(),
                    Some(SinkInput::Events(events)) => self.ingest(events),
                    None => {
                        open = false;
                        self.make_all_ready();
                    }
                },
                _ = sleep, if wake.is_some() => {}
                _ = housekeeping, if housekeeping_at.is_some() => {
                    self.housekeeping();
                    last_housekeeping = Instant::now();
                }
                _ = cancel.cancelled(), if !open => break,
            }
        }
        // Cancelled tasks return at once; what they held stays unacknowledged.
        while self.tasks.join_next().await.is_some() {}
    }

    /// How often [`housekeeping`](Self::housekeeping) runs: at `busy_every` while anything is
    /// held (the oldest-held gauge stays fresh), rarely while only idle streams or the
    /// skip set wait to be dropped, and never when there is nothing at all: an idle sink
    /// has no timer (it runs on every node of a fleet).
    fn housekeeping_every(&self, busy_every: Duration) -> Option<Duration> {
        if !self.is_idle() || self.oldest_held_reported {
            Some(busy_every)
        } else if !self.streams.is_empty() || !self.skip.is_empty() {
            Some(IDLE_HOUSEKEEPING)
        } else {
            None
        }
    }

    fn is_idle(&self) -> bool {
        self.unread.as_slice().is_empty()
            && self.tasks.is_empty()
            && self.control.is_idle()
            && self
                .streams
                .values()
                .all(|s| s.ready.is_empty() && s.building.is_empty())
    }
    /// Publishes the held bytes and their peak.
    fn note_held(&self) {
        let stats = &self.shared.stats;
        let held = self.held_bytes as u64;
        stats.held_bytes.store(held, Ordering::Relaxed);
        stats.held_bytes_peak.fetch_max(held, Ordering::Relaxed);
    }

    /// Bytes held in requests being built (the rest of `held_bytes` is ready or sent back).
    fn building_bytes(&self) -> usize {
        self.streams.values().map(|s| s.building.bytes()).sum()
    }

    /// Makes the fullest request being built ready at once, to keep within the budget; not
    /// the one of stream `fed` (the last event's) while another holds at least
    /// [`WORTH_CUTTING`] of the budget. A source reads its files in runs (one file's lines
    /// for a while, then another's), so the stream being fed is about to grow and the others
    /// hold whole runs: cutting the fed one whenever it was the fullest made a request of each
    /// piece of a run, at about the size the last answer freed (under load, ~300 events a
    /// request for 1,300-line runs).
    fn make_fullest_ready(&mut self, fed: &str) {
        let budget = self.shared.config.max_held_bytes;
        let fullest = |skip: Option<&str>| {
            self.streams
                .iter()
                .filter(|(k, _)| Some(k.as_str()) != skip)
                .flat_map(|(k, s)| {
                    s.building
                        .open()
                        .map(move |(i, _, fill)| (k, i, fill, s.building.bytes()))
                })
                .max_by(|a, b| a.2.total_cmp(&b.2))
        };
        let other = fullest(Some(fed)).filter(|(_, _, _, bytes)| *bytes >= budget / WORTH_CUTTING);
        let Some((key, index)) = other
            .or_else(|| fullest(None))
            .map(|(k, i, _, _)| (k.clone(), i))
        else {
            return;
        };
        if let Some(state) = self.streams.get_mut(&key) {
            if let Some(cut) = state.building.take(index) {
                self.shared
                    .stats
                    .budget_flushes
                    .fetch_add(1, Ordering::Relaxed);
                state.ready.push_back(into_request(cut));
            }
        }
    }

    /// At shutdown, or when a source has read the end of a backlog: every request being built
    /// may go now.
    fn make_all_ready(&mut self) {
        for state in self.streams.values_mut() {
            for cut in state.building.take_all() {
                state.ready.push_back(into_request(cut));
            }
        }
    }

    /// Sends every request and control call that may go now; returns when to look again.
    fn send_what_may_go(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut wake = loop {
            match self.control.next(now) {
                Ok((job, call, ticket)) => {
                    let shared = self.shared.clone();
                    self.tasks.spawn(
                        async move {
                            Finished::Control(control::call(shared, job, call, ticket).await)
                        }
                        .in_current_span(),
                    );
                }
                Err(wake) => break wake,
            }
        };
        let earliest = |wake: &mut Option<Instant>, t: Instant| {
            *wake = Some(wake.map_or(t, |w| w.min(t)));
        };
        let max_in_flight = self.shared.config.max_in_flight;
        while self.puts_in_flight < max_in_flight {
            let (best, due) = self.best_request(now);
            if let Some(t) = due {
                earliest(&mut wake, t);
            }
            let Some((key, source)) = best else {
                self.stop_waiting(now);
                break;
            };
            let ticket = match self.governor.try_acquire(now) {
                Ok(ticket) => ticket,
                Err(wait) => {
                    self.waiting_since.get_or_insert(now);
                    let stats = &self.shared.stats;
                    stats.waiting_for_budget.store(true, Ordering::Relaxed);
                    stats.last_budget_wait_ms.store(now_ms(), Ordering::Relaxed);
                    earliest(&mut wake, now + wait);
                    break;
                }
            };
            self.stop_waiting(now);
            let Some(state) = self.streams.get_mut(&key) else {
                break;
            };
            let req = match source {
                Source::Ready => state.ready.pop_front(),
                Source::Building(i) => state.building.take(i).map(into_request),
            };
            let Some(mut req) = req else { break };
            if req.ledger_id.is_none() {
                if let Ok(mut l) = self.shared.ledger.lock() {
                    req.ledger_id =
                        Some(l.sent(&state.group, &state.stream, &req.events, now_ms()));
                }
            }
            // Still held (in flight) until its answer.
            self.puts_in_flight += 1;
            self.request_seq += 1;
            let seq = self.request_seq;
            let (first, last) = req.span().unwrap_or((i64::MIN, i64::MAX));
            state.in_flight.push(Flying {
                seq,
                first,
                last,
                bytes: req.bytes,
            });
            self.in_flight_opened.insert(seq, req.opened);
            let (shared, group, stream, entity) = (
                self.shared.clone(),
                state.group.clone(),
                state.stream.clone(),
                state.entity.clone(),
            );
            self.tasks.spawn(
                async move {
                    let answer =
                        request::put(&shared, &group, &stream, entity.as_deref(), req).await;
                    Finished::Put {
                        key,
                        seq,
                        ticket,
                        answer,
                    }
                }
                .in_current_span(),
            );
        }
        wake
    }

    fn stop_waiting(&mut self, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            let stats = &self.shared.stats;
            stats.budget_wait_us.fetch_add(
                now.duration_since(since).as_micros() as u64,
                Ordering::Relaxed,
            );
            stats.waiting_for_budget.store(false, Ordering::Relaxed);
        }
    }

    /// The request that should go next, and the earliest time another becomes due.
    ///
    /// A ready request (full, or sent back) may go unless it waits out a backoff; a request
    /// being built once it is `batch_timeout` old. The highest `age + fill x batch_timeout`
    /// wins. A stream not yet known to exist has one request in flight at most; one being
    /// created has none. A request sharing a timestamp with one of its stream's requests in
    /// flight waits for that one's answer.
    fn best_request(&self, now: Instant) -> (Option<(String, Source)>, Option<Instant>) {
        let cfg = &self.shared.config;
        let timeout = cfg.batch_timeout;
        let mut best: Option<(f64, &String, Source)> = None;
        let mut due: Option<Instant> = None;
        let score = |opened: Instant, fill: f64| {
            now.saturating_duration_since(opened).as_secs_f64() + fill * timeout.as_secs_f64()
        };
        for (key, s) in &self.streams {
            let limit = match s.existence {
                Existence::Unknown => 1,
                Existence::Missing => 0,
                Existence::Exists => cfg.stream_concurrency,
            };
            if s.in_flight.len() >= limit {
                continue;
            }
            let mut candidates: Vec<(f64, Source)> = Vec::new();
            if let Some(front) = s.ready.front() {
                // Requests being built wait behind the stream's ready ones.
                match front.not_before.filter(|t| *t > now) {
                    Some(t) => due = Some(due.map_or(t, |d| d.min(t))),
                    // Waits for the answer of the request it shares timestamps with.
                    None if overlaps_in_flight(&s.in_flight, front.span()) => {}
                    None => candidates.push((score(front.opened, front.fill), Source::Ready)),
                }
            } else {
                for (i, opened, fill) in s.building.open() {
                    if overlaps_in_flight(&s.in_flight, s.building.span(i)) {
                        continue;
                    }
                    let at = opened + timeout;
                    if at <= now || fill >= 1.0 {
                        candidates.push((score(opened, fill), Source::Building(i)));
                    } else {
                        due = Some(due.map_or(at, |d| d.min(at)));
                    }
                }
            }
            for (score, source) in candidates {
                if best.as_ref().is_none_or(|(b, _, _)| score > *b) {
                    best = Some((score, key, source));
                }
            }
        }
        (best.map(|(_, k, s)| (k.clone(), s)), due)
    }

    fn finished(&mut self, done: Finished) {
        let now = Instant::now();
        let (key, seq, ticket, answer) = match done {
            Finished::DeadLettered => return,
            Finished::Control(f) => {
                for key in self.control.finished(&self.shared, f, now) {
                    if let Some(s) = self.streams.get_mut(&key) {
                        s.existence = Existence::Exists;
                    }
                }
                return;
            }
            Finished::Put {
                key,
                seq,
                ticket,
                answer,
            } => {
                self.in_flight_opened.remove(&seq);
                (key, seq, ticket, answer)
            }
        };
        self.puts_in_flight -= 1;
        let stats = self.shared.stats.clone();
        match &answer {
            Answer::Throttled(_) => self.governor.on_throttle(ticket, now),
            _ => self.governor.on_success(ticket, now),
        }
        stats
            .rate_put_log_events_milli
            .store((self.governor.rate() * 1000.0) as u64, Ordering::Relaxed);
        let Some(state) = self.streams.get_mut(&key) else {
            return;
        };
        if let Some(i) = state.in_flight.iter().position(|f| f.seq == seq) {
            let flying = state.in_flight.swap_remove(i);
            self.held_bytes -= flying.bytes;
        }
        // A request sent back is held again, as ready.
        let mut back = |req: Request, held: &mut usize| {
            *held += req.bytes;
            state.ready.push_front(req);
        };
        match answer {
            Answer::Done => {
                if state.existence == Existence::Unknown {
                    state.existence = Existence::Exists;
                }
            }
            Answer::Cancelled => {}
            Answer::Throttled(req) | Answer::Retry(req) => back(req, &mut self.held_bytes),
            Answer::Split(first, second) => {
                back(second, &mut self.held_bytes);
                back(first, &mut self.held_bytes);
            }
            Answer::NotFound { mut req, group } => {
                if !self.shared.config.create_missing_stream {
                    let wait = retry::backoff(req.attempt, self.shared.config.max_backoff);
                    let detail = "the log stream does not exist and create_missing_stream = false; create it, or allow logferry to";
                    stats.set_error(detail);
                    let failed = request::FailedCall {
                        what: "PutLogEvents",
                        group: &state.group,
                        stream: &state.stream,
                        sent_ms: crate::event::now_ms(),
                    };
                    request::warn_retry(
                        &self.shared,
                        &failed,
                        retry::RetryKind::Missing,
                        detail,
                        wait,
                    );
                    req.attempt += 1;
                    req.not_before = Some(now + wait);
                } else if state.existence != Existence::Missing {
                    state.existence = Existence::Missing;
                    self.control.stream_missing(
                        &self.shared,
                        &key,
                        state.group.clone(),
                        state.stream.clone(),
                        group,
                    );
                }
                back(req, &mut self.held_bytes);
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        if !self.skip.is_empty() && now.duration_since(self.started) > SKIP_FOR {
            self.skip = HashSet::new();
        }
        let oldest = self
            .streams
            .values()
            .flat_map(|s| {
                s.ready
                    .iter()
                    .map(|r| r.opened)
                    .chain(s.building.open().map(|(_, opened, _)| opened))
            })
            .chain(self.in_flight_opened.values().copied())
            .min()
            .map(|t| now.duration_since(t))
            .unwrap_or_default();
        self.shared
            .stats
            .oldest_held_age_ms
            .store(oldest.as_millis() as u64, Ordering::Relaxed);
        self.oldest_held_reported = !oldest.is_zero();
        self.streams.retain(|_, s| {
            !(s.building.is_empty()
                && s.ready.is_empty()
                && s.in_flight.is_empty()
                && s.existence != Existence::Missing
                && now.duration_since(s.last_used) > STREAM_IDLE)
        });
    }
}

fn cut_bytes(cut: &Cut) -> usize {
    cut.events.iter().map(Pending::cost).sum()
}

fn into_request(cut: Cut) -> Request {
    Request::new(cut.events, cut.opened, cut.fill)
}

/// The span of one sink: everything it logs, in its intake loop and its request tasks, carries
/// `sink = NAME`.
pub fn span(name: &str) -> tracing::Span {
    tracing::info_span!("sink", sink = %name)
}
