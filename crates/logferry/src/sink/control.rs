//! Creating what PutLogEvents found missing: log streams and groups, paced, each once.
//!
//! Streams are created lazily. A request to a stream goes out first; only
//! `ResourceNotFoundException` puts the stream in the create queue (a restarted fleet whose
//! streams exist makes no control-plane call at all, and DescribeLogStreams, 25 calls/s per
//! account, is never used). The sink keeps the stream's requests until it exists, so one stream
//! is created once per process however many requests were waiting, and a throttled create is
//! retried from the queue, not by every request that wanted the stream.
//!
//! CreateLogStream and CreateLogGroup have quotas of their own (50 and 10 calls/s per account)
//! and each gets its own [`Governor`], paced like PutLogEvents but starting slower and growing
//! slower: their calls come in bursts (a node's pods all start at once) and one throttled create
//! costs as much quota as a successful one. A stream whose group is missing waits for the
//! group; everything a new group needs is in its one CreateLogGroup call, and retention
//! (PutRetentionPolicy, 5 calls/s, not adjustable) is set only on groups logferry created.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata;
use aws_sdk_cloudwatchlogs::types::LogGroupClass;

use super::governor::{Governor, Pace, Ticket};
use super::request::{credentials_accepted, warn_retry, FailedCall};
use super::retry::{backoff, classify, describe_error, Failure, RetryKind};
use super::Shared;

/// Control-plane calls in flight at once, for the whole sink.
const MAX_IN_FLIGHT: usize = 4;

/// Which API a job calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// CreateLogStream.
    Stream,
    /// CreateLogGroup (then PutRetentionPolicy when configured).
    Group,
}

/// One thing to create.
#[derive(Debug, Clone)]
pub struct Job {
    /// The sink's key of the stream (empty for a group).
    pub key: String,
    /// The group.
    pub group: Arc<str>,
    /// The stream (empty for a group).
    pub stream: Arc<str>,
    attempt: u32,
    not_before: Option<Instant>,
}

/// A finished call, for [`ControlPlane::finished`].
#[derive(Debug)]
pub struct Finished {
    job: Job,
    call: Call,
    ticket: Ticket,
    /// When the call was sent (Unix ms), to tell a stale credentials refusal from a new one.
    sent_ms: i64,
    result: Result<(), Failure>,
}

/// The create queues and their governors.
#[derive(Debug)]
pub struct ControlPlane {
    streams: VecDeque<Job>,
    groups: VecDeque<Job>,
    /// Stream jobs waiting for their group to be created.
    waiting: HashMap<Arc<str>, Vec<Job>>,
    stream_governor: Governor,
    group_governor: Governor,
    in_flight: usize,
}

impl ControlPlane {
    /// Empty queues; governors paced for `max_backoff`.
    pub fn new(max_backoff: Duration, now: Instant) -> ControlPlane {
        let pace = Pace::control_plane(max_backoff);
        ControlPlane {
            streams: VecDeque::new(),
            groups: VecDeque::new(),
            waiting: HashMap::new(),
            stream_governor: Governor::new(pace, now),
            group_governor: Governor::new(pace, now),
            in_flight: 0,
        }
    }

    /// Queues the creation of a stream PutLogEvents found missing (the caller asks once);
    /// with `group_missing` (and `create_missing_group`), its group's first.
    pub fn stream_missing(
        &mut self,
        shared: &Shared,
        key: &str,
        group: Arc<str>,
        stream: Arc<str>,
        group_missing: bool,
    ) {
        let job = Job {
            key: key.to_string(),
            group,
            stream,
            attempt: 0,
            not_before: None,
        };
        if group_missing && shared.config.create_missing_group {
            self.after_group(job);
        } else {
            self.streams.push_back(job);
        }
    }

    /// Makes `job` wait for its group, queueing the group's creation unless it is queued.
    fn after_group(&mut self, job: Job) {
        match self.waiting.get_mut(&job.group) {
            Some(waiters) => waiters.push(job),
            None => {
                self.groups.push_back(Job {
                    key: String::new(),
                    group: job.group.clone(),
                    stream: Arc::from(""),
                    attempt: 0,
                    not_before: None,
                });
                self.waiting.insert(job.group.clone(), vec![job]);
            }
        }
    }

    /// Whether nothing is queued, waiting or in flight.
    pub fn is_idle(&self) -> bool {
        self.streams.is_empty()
            && self.groups.is_empty()
            && self.waiting.is_empty()
            && self.in_flight == 0
    }

    /// The next call to make now, if any; otherwise when to look again (None: nothing queued).
    pub fn next(&mut self, now: Instant) -> Result<(Job, Call, Ticket), Option<Instant>> {
        if self.in_flight >= MAX_IN_FLIGHT {
            return Err(None);
        }
        let mut wake: Option<Instant> = None;
        for call in [Call::Group, Call::Stream] {
            let (queue, governor) = match call {
                Call::Group => (&mut self.groups, &mut self.group_governor),
                Call::Stream => (&mut self.streams, &mut self.stream_governor),
            };
            let Some(front) = queue.front() else { continue };
            if let Some(t) = front.not_before.filter(|t| *t > now) {
                wake = Some(wake.map_or(t, |w| w.min(t)));
                continue;
            }
            match governor.try_acquire(now) {
                Ok(ticket) => {
                    let Some(job) = queue.pop_front() else {
                        continue;
                    };
                    self.in_flight += 1;
                    return Ok((job, call, ticket));
                }
                Err(wait) => {
                    let t = now + wait;
                    wake = Some(wake.map_or(t, |w| w.min(t)));
                }
            }
        }
        Err(wake)
    }

    /// Takes a call's outcome; returns the keys of streams that exist now.
    pub fn finished(&mut self, shared: &Shared, done: Finished, now: Instant) -> Vec<String> {
        self.in_flight -= 1;
        let Finished {
            mut job,
            call,
            ticket,
            sent_ms,
            result,
        } = done;
        let (governor, queue) = match call {
            Call::Group => (&mut self.group_governor, &mut self.groups),
            Call::Stream => (&mut self.stream_governor, &mut self.streams),
        };
        let stats = &shared.stats;
        let failure = match result {
            Ok(()) => {
                governor.on_success(ticket, now);
                credentials_accepted(shared, sent_ms);
                self.publish_rates(shared);
                return match call {
                    Call::Stream => vec![job.key],
                    Call::Group => {
                        let waiters = self.waiting.remove(&job.group).unwrap_or_default();
                        for w in waiters.into_iter().rev() {
                            self.streams.push_front(w);
                        }
                        Vec::new()
                    }
                };
            }
            Err(f) => f,
        };
        match failure {
            Failure::Retry {
                kind: RetryKind::Throttled,
                detail,
                ..
            } => {
                let what = match call {
                    Call::Stream => "CreateLogStream",
                    Call::Group => "CreateLogGroup",
                };
                stats.set_error(&format!("{what} {}: {detail}", RetryKind::Throttled));
                governor.on_throttle(ticket, now);
                stats.throttled.fetch_add(1, Ordering::Relaxed);
                match call {
                    Call::Stream => &stats.throttled_create_log_stream,
                    Call::Group => &stats.throttled_create_log_group,
                }
                .fetch_add(1, Ordering::Relaxed);
                queue.push_front(job);
            }
            Failure::NotFound { .. }
                if call == Call::Stream && shared.config.create_missing_group =>
            {
                governor.on_success(ticket, now);
                self.after_group(job);
            }
            other => {
                governor.on_success(ticket, now);
                let (kind, detail) = match other {
                    Failure::Retry { kind, detail, .. } => (kind, detail),
                    Failure::NotFound { .. } => (
                        RetryKind::Missing,
                        "the log group does not exist and create_missing_group = false; create it, or allow logferry to".to_string(),
                    ),
                    f => (RetryKind::Create, format!("{f:?}")),
                };
                let what = match call {
                    Call::Stream => "creating the log stream",
                    Call::Group => "creating the log group",
                };
                let wait = backoff(job.attempt, shared.config.max_backoff);
                stats.set_error(&format!("{what} ({kind}): {detail}"));
                let failed = FailedCall {
                    what,
                    group: &job.group,
                    stream: &job.stream,
                    sent_ms,
                };
                warn_retry(shared, &failed, kind, &detail, wait);
                job.attempt += 1;
                job.not_before = Some(now + wait);
                queue.push_front(job);
            }
        }
        self.publish_rates(shared);
        Vec::new()
    }

    fn publish_rates(&self, shared: &Shared) {
        let s = &shared.stats;
        s.rate_create_log_stream_milli.store(
            (self.stream_governor.rate() * 1000.0) as u64,
            Ordering::Relaxed,
        );
        s.rate_create_log_group_milli.store(
            (self.group_governor.rate() * 1000.0) as u64,
            Ordering::Relaxed,
        );
    }
}

/// Makes the call `job` asks for.
pub async fn call(shared: Arc<Shared>, job: Job, call: Call, ticket: Ticket) -> Finished {
    let sent_ms = crate::event::now_ms();
    let result = tokio::select! {
        r = async {
            match call {
                Call::Stream => create_stream(&shared, &job.group, &job.stream).await,
                Call::Group => create_group(&shared, &job.group).await,
            }
        } => r,
        // Cancelled: report a failure nobody will act on; the sink is going away.
        _ = shared.cancel.cancelled() => Err(Failure::AlreadyAccepted),
    };
    Finished {
        job,
        call,
        ticket,
        sent_ms,
        result,
    }
}

async fn create_stream(shared: &Shared, group: &str, stream: &str) -> Result<(), Failure> {
    let r = shared
        .client
        .create_log_stream()
        .log_group_name(group)
        .log_stream_name(stream)
        .send()
        .await;
    match r {
        Ok(_) => {
            shared.stats.streams_created.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(log_group = group, log_stream = stream, "created log stream");
            Ok(())
        }
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(()),
        Err(e) => Err(classify(&e)),
    }
}

async fn create_group(shared: &Shared, group: &str) -> Result<(), Failure> {
    let cfg = &shared.config;
    let new = &cfg.new_group;
    let tags = (!new.tags.is_empty()).then(|| {
        new.tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<HashMap<_, _>>()
    });
    let created = shared
        .client
        .create_log_group()
        .log_group_name(group)
        .set_kms_key_id(new.kms_key_id.clone())
        .set_tags(tags)
        .set_log_group_class(new.class.map(|c| LogGroupClass::from(c.as_str())))
        .set_deletion_protection_enabled(new.deletion_protection)
        .send()
        .await;
    match created {
        Ok(_) => {
            shared.stats.groups_created.fetch_add(1, Ordering::Relaxed);
            tracing::info!(log_group = group, "created log group");
            if let Some(days) = cfg.retention_days {
                set_retention(shared, group, days).await;
            }
            Ok(())
        }
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(()),
        Err(e) => Err(classify(&e)),
    }
}

/// PutRetentionPolicy on a group logferry just created. Its quota is 5 calls/s per account
/// and not adjustable: a few tries with backoff, then a warning (delivery matters more).
async fn set_retention(shared: &Shared, group: &str, days: i32) {
    for attempt in 0..5 {
        let r = shared
            .client
            .put_retention_policy()
            .log_group_name(group)
            .retention_in_days(days)
            .send()
            .await;
        let e = match r {
            Ok(_) => return,
            Err(e) => e,
        };
        let retry = matches!(classify(&e), Failure::Retry { .. }) && attempt < 4;
        if !retry {
            tracing::warn!(
                log_group = group,
                "could not set retention to {days} days: {}",
                describe_error(&e)
            );
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff(attempt + 2, shared.config.max_backoff)) => {}
            _ = shared.cancel.cancelled() => return,
        }
    }
}
