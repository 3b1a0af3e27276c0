//! One PutLogEvents request, seen through to the end.
//!
//! The retry policy is ours, not the SDK's:
//! - Throttling, `ServiceUnavailableException`, 5xx, timeouts, connection failures and
//!   credential or permission errors are retried forever (while the process runs) with
//!   exponential backoff and full jitter, capped at `max_backoff`. An outage must not drop
//!   data; logs say what is wrong, rate-limited.
//! - `ResourceNotFoundException` creates the stream, and the group if the stream cannot be
//!   created for lack of one (each only when allowed), then retries. Creation calls meet the
//!   same throttles and outages as PutLogEvents and are retried the same way (Vector drops a
//!   batch when CreateLogGroup is throttled; we do not).
//! - `InvalidParameterException` means a request logferry built wrongly or an event CloudWatch
//!   will never take: the request is split in halves until the culprit stands alone, and only
//!   that event is dead-lettered. Never a loop.
//! - A 200 answer may still reject events (`rejectedLogEventsInfo`): those go to the dead-letter
//!   file, the rest count as delivered.
//!
//! Only the failed request is retried, never more. A retry after a timeout or a lost response
//! may duplicate events CloudWatch did ingest; that is the price of at-least-once, counted in
//! `ambiguous_resends`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use rand::Rng;

use super::batch::Pending;
use super::dead_letter::{Reason, Record};
use super::Shared;
use crate::ack::AckStatus;
use crate::format::push_json_str;

/// How a failed call should be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The group or stream does not exist.
    NotFound,
    /// The request (or an event in it) can never succeed as is.
    Invalid(String),
    /// The service says these events were already taken (obsolete sequence-token API).
    AlreadyAccepted,
    /// Try again later. `ambiguous` when the request may have been ingested.
    Retry {
        /// Why, in a word (for logs, the last error `/ready` shows, and throttling's count).
        kind: RetryKind,
        /// Whether the service may have ingested the request anyway.
        ambiguous: bool,
        /// What happened, for the log.
        detail: String,
    },
}

/// Why a request is retried: a word for logs, for the last error `/ready` shows, and the
/// one kind (throttling) that is also counted on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// `ThrottlingException`.
    Throttled,
    /// `ServiceUnavailableException` or another 5xx.
    Unavailable,
    /// Access denied or expired credentials.
    Auth,
    /// Another error the service answered with.
    ServiceError,
    /// The attempt timed out (it may have been ingested).
    Timeout,
    /// The connection failed.
    Network,
    /// An answer that could not be read.
    BadResponse,
    /// No credentials could be loaded.
    Credentials,
    /// Anything else.
    Unknown,
    /// The group or stream is missing and the config forbids creating it.
    Missing,
    /// Creating the group or stream failed otherwise.
    Create,
}

impl RetryKind {
    /// The word logged (`kind = ...`) and shown by `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryKind::Throttled => "throttled",
            RetryKind::Unavailable => "unavailable",
            RetryKind::Auth => "auth",
            RetryKind::ServiceError => "service_error",
            RetryKind::Timeout => "timeout",
            RetryKind::Network => "network",
            RetryKind::BadResponse => "bad_response",
            RetryKind::Credentials => "credentials",
            RetryKind::Unknown => "unknown",
            RetryKind::Missing => "missing",
            RetryKind::Create => "create",
        }
    }
}

impl std::fmt::Display for RetryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sorts an SDK error into a [`Failure`].
pub fn classify<E, R>(err: &SdkError<E, R>) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            let code = e.code().unwrap_or("");
            let msg = e.message().unwrap_or("").to_string();
            match code {
                "ResourceNotFoundException" => Failure::NotFound,
                "InvalidParameterException" => Failure::Invalid(msg),
                "DataAlreadyAcceptedException" => Failure::AlreadyAccepted,
                "ThrottlingException" | "LimitExceededException" | "TooManyRequestsException" => {
                    Failure::Retry {
                        kind: RetryKind::Throttled,
                        ambiguous: false,
                        detail: format!("{code}: {msg}"),
                    }
                }
                "ServiceUnavailableException" | "InternalFailure" | "InternalServerError" => {
                    Failure::Retry {
                        kind: RetryKind::Unavailable,
                        ambiguous: true,
                        detail: format!("{code}: {msg}"),
                    }
                }
                "UnrecognizedClientException"
                | "ExpiredTokenException"
                | "AccessDeniedException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken" => Failure::Retry {
                    kind: RetryKind::Auth,
                    ambiguous: false,
                    detail: format!("{code}: {msg}"),
                },
                _ => Failure::Retry {
                    kind: RetryKind::ServiceError,
                    ambiguous: true,
                    detail: if code.is_empty() {
                        format!("unexpected service error: {}", error_chain(err))
                    } else {
                        format!("{code}: {msg}")
                    },
                },
            }
        }
        SdkError::TimeoutError(_) => Failure::Retry {
            kind: RetryKind::Timeout,
            ambiguous: true,
            detail: "request timed out".into(),
        },
        SdkError::DispatchFailure(d) => Failure::Retry {
            kind: if d.is_timeout() {
                RetryKind::Timeout
            } else {
                RetryKind::Network
            },
            // A connection refused never carried the request; other I/O errors may have.
            ambiguous: !error_chain(err).contains("Connection refused"),
            detail: error_chain(err),
        },
        SdkError::ResponseError(_) => Failure::Retry {
            kind: RetryKind::BadResponse,
            ambiguous: true,
            detail: error_chain(err),
        },
        SdkError::ConstructionFailure(_) => Failure::Retry {
            kind: RetryKind::Credentials,
            ambiguous: false,
            detail: error_chain(err),
        },
        _ => Failure::Retry {
            kind: RetryKind::Unknown,
            ambiguous: true,
            detail: error_chain(err),
        },
    }
}

/// An SDK error and its causes on one line, for operators (no secrets: see [`error_chain`]).
pub fn describe_error(err: &dyn std::error::Error) -> String {
    error_chain(err)
}

/// The error and its causes on one line. The SDK's errors never include secrets (it redacts
/// credentials in its Debug/Display output), and we print only Display.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let t = e.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = e.source();
    }
    s
}

/// Which events of a request CloudWatch rejected, per the AWS documentation:
/// `tooOldLogEventEndIndex` and `expiredLogEventEndIndex` are exclusive ends,
/// `tooNewLogEventStartIndex` an inclusive start. (moto, the emulator, is off by one here; we
/// follow AWS.)
pub fn rejected_reason(
    index: usize,
    too_new_start: Option<i32>,
    too_old_end: Option<i32>,
    expired_end: Option<i32>,
) -> Option<Reason> {
    let below = |end: Option<i32>| end.is_some_and(|e| e > 0 && index < e as usize);
    if below(expired_end) {
        Some(Reason::Expired)
    } else if below(too_old_end) {
        Some(Reason::TooOld)
    } else if too_new_start.is_some_and(|s| s >= 0 && index >= s as usize) {
        Some(Reason::TooNew)
    } else {
        None
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, 100 ms * 2^attempt)].
pub fn backoff(attempt: u32, cap: Duration) -> Duration {
    let base = Duration::from_millis(100);
    let ceiling = base
        .checked_mul(1u32 << attempt.min(20))
        .unwrap_or(cap)
        .min(cap);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(rand::thread_rng().gen_range(0..=ms.max(1)))
}

/// Limits repeated warnings to one per key per interval, counting what was suppressed.
#[derive(Debug, Default)]
pub struct LogLimiter {
    last: Mutex<HashMap<&'static str, (Instant, u64)>>,
}

impl LogLimiter {
    /// Returns `Some(suppressed_since_last)` when a message with `key` may be logged now.
    pub fn allow(&self, key: &'static str, every: Duration) -> Option<u64> {
        let mut map = self.last.lock().ok()?;
        let now = Instant::now();
        match map.get_mut(key) {
            Some((at, n)) if now.duration_since(*at) < every => {
                *n += 1;
                None
            }
            Some((at, n)) => {
                let suppressed = *n;
                *at = now;
                *n = 0;
                Some(suppressed)
            }
            None => {
                map.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

async fn sleep_or_cancel(shared: &Shared, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shared.cancel.cancelled() => false,
    }
}

/// The PutLogEvents JSON body for `events`, built once per request and reused by every retry.
///
/// Why not let the SDK serialize `InputLogEvent`s: its serializer escapes strings character by
/// character and the input must be rebuilt (every message copied) for each attempt; on the
/// benchmark that was a fifth of logferry's CPU. The SDK still does everything else (endpoint,
/// signing over this exact body, HTTP, error parsing): the body is swapped in just before
/// signing. The request format is the documented AWS JSON 1.1 shape, checked byte for byte by
/// the tests' validating proxy and by moto.
pub fn encode_body(group: &str, stream: &str, events: &[Pending]) -> bytes::Bytes {
    use std::fmt::Write as _;
    let size: usize = events.iter().map(|p| p.message.len() + 40).sum::<usize>() + 128;
    let mut out = String::with_capacity(size);
    out.push_str("{\"logGroupName\":");
    push_json_str(&mut out, group);
    out.push_str(",\"logStreamName\":");
    push_json_str(&mut out, stream);
    out.push_str(",\"logEvents\":[");
    for (i, p) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"timestamp\":{},\"message\":", p.timestamp_ms);
        push_json_str(&mut out, &p.message);
        out.push('}');
    }
    out.push_str("]}");
    bytes::Bytes::from(out.into_bytes())
}

fn warn_retry(
    shared: &Shared,
    what: &str,
    group: &str,
    stream: &str,
    kind: RetryKind,
    detail: &str,
    wait: Duration,
) {
    if let Some(suppressed) = shared
        .log_limiter
        .allow(kind.as_str(), Duration::from_secs(10))
    {
        tracing::warn!(
            log_group = group,
            log_stream = stream,
            kind = kind.as_str(),
            suppressed,
            retry_in_ms = wait.as_millis() as u64,
            "{what} failed, will retry (events are kept): {detail}"
        );
    }
}

/// Delivers `events` (one valid request) to `group`/`stream`, resolving every acknowledgement,
/// unless the sink is cancelled first (then the events stay unacknowledged).
pub async fn deliver(shared: &Shared, group: &str, stream: &str, events: Vec<Pending>) {
    shared.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    deliver_inner(shared, group, stream, events).await;
    shared.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
}

async fn deliver_inner(shared: &Shared, group: &str, stream: &str, events: Vec<Pending>) {
    let stats = &shared.stats;
    // Halves of a request split to isolate an invalid event; processed first-half first.
    let mut queue = vec![events];
    while let Some(events) = queue.pop() {
        let body = encode_body(group, stream, &events);
        let mut attempt: u32 = 0;
        let mut ensured = false;
        loop {
            if shared.cancel.is_cancelled() {
                return;
            }
            stats.requests.fetch_add(1, Ordering::Relaxed);
            if attempt > 0 {
                stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let body = body.clone();
            let call = shared
                .client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .customize()
                .mutate_request(move |req| {
                    let len = body.len();
                    *req.body_mut() = aws_smithy_types::body::SdkBody::from(body.clone());
                    req.headers_mut().insert("content-length", len.to_string());
                })
                .send();
            let started = std::time::Instant::now();
            let result = tokio::select! {
                r = call => r,
                _ = shared.cancel.cancelled() => return,
            };
            stats.observe_latency(started.elapsed());
            let answered = match &result {
                Ok(_) => {
                    stats
                        .last_success_ms
                        .store(crate::event::now_ms(), Ordering::Relaxed);
                    true
                }
                Err(SdkError::ServiceError(_)) => true,
                Err(_) => false,
            };
            if answered {
                stats
                    .last_answer_ms
                    .store(crate::event::now_ms(), Ordering::Relaxed);
            }
            let failure = match result {
                Ok(out) => {
                    let info = out.rejected_log_events_info();
                    let (new_start, old_end, exp_end) = (
                        info.and_then(|i| i.too_new_log_event_start_index()),
                        info.and_then(|i| i.too_old_log_event_end_index()),
                        info.and_then(|i| i.expired_log_event_end_index()),
                    );
                    let mut rejected = Vec::new();
                    let (mut n, mut bytes) = (0u64, 0u64);
                    for (i, p) in events.into_iter().enumerate() {
                        match rejected_reason(i, new_start, old_end, exp_end) {
                            Some(reason) => rejected.push((p, reason)),
                            None => {
                                n += 1;
                                bytes += p.cost() as u64;
                                p.ack.resolve(AckStatus::Delivered);
                            }
                        }
                    }
                    stats.events_delivered.fetch_add(n, Ordering::Relaxed);
                    stats.bytes_delivered.fetch_add(bytes, Ordering::Relaxed);
                    if !rejected.is_empty() {
                        dead_letter(shared, group, stream, rejected, None).await;
                    }
                    break;
                }
                Err(e) => classify(&e),
            };
            match failure {
                Failure::NotFound if !ensured => {
                    ensured = true;
                    if let Err(f) = ensure_stream(shared, group, stream).await {
                        let (kind, detail) = match &f {
                            Failure::Retry { kind, detail, .. } => (*kind, detail.clone()),
                            other => (RetryKind::Create, format!("{other:?}")),
                        };
                        let wait = backoff(attempt, shared.config.max_backoff);
                        stats.set_error(&format!("creating the log stream ({kind}): {detail}"));
                        warn_retry(
                            shared,
                            "creating the log stream",
                            group,
                            stream,
                            kind,
                            &detail,
                            wait,
                        );
                        attempt += 1;
                        ensured = false;
                        if !sleep_or_cancel(shared, wait).await {
                            return;
                        }
                    }
                }
                Failure::NotFound => {
                    // Created, yet not found: eventual consistency right after creation.
                    ensured = false;
                    let wait = backoff(attempt, shared.config.max_backoff);
                    attempt += 1;
                    if !sleep_or_cancel(shared, wait).await {
                        return;
                    }
                }
                Failure::Invalid(msg) => {
                    if events.len() > 1 {
                        let mut first = events;
                        let second = first.split_off(first.len() / 2);
                        queue.push(second);
                        queue.push(first);
                    } else {
                        let rejected = events
                            .into_iter()
                            .map(|p| (p, Reason::InvalidParameter))
                            .collect();
                        dead_letter(shared, group, stream, rejected, Some(&msg)).await;
                    }
                    break;
                }
                Failure::AlreadyAccepted => {
                    let n = events.len() as u64;
                    for p in events {
                        p.ack.resolve(AckStatus::Delivered);
                    }
                    stats.events_delivered.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                Failure::Retry {
                    kind,
                    ambiguous,
                    detail,
                } => {
                    if kind == RetryKind::Throttled {
                        stats.throttled.fetch_add(1, Ordering::Relaxed);
                    }
                    if ambiguous {
                        stats.ambiguous_resends.fetch_add(1, Ordering::Relaxed);
                    }
                    let wait = backoff(attempt, shared.config.max_backoff);
                    stats.set_error(&format!("PutLogEvents {kind}: {detail}"));
                    warn_retry(shared, "PutLogEvents", group, stream, kind, &detail, wait);
                    attempt += 1;
                    if !sleep_or_cancel(shared, wait).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Creates `stream` (and its group when that is what is missing), as allowed by the config.
async fn ensure_stream(shared: &Shared, group: &str, stream: &str) -> Result<(), Failure> {
    let cfg = &shared.config;
    let not_allowed = |what: &str, key: &str| Failure::Retry {
        kind: RetryKind::Missing,
        ambiguous: false,
        detail: format!("{what} does not exist and {key} = false; create it, or allow logferry to"),
    };
    if !cfg.create_missing_stream {
        return Err(not_allowed("the log stream", "create_missing_stream"));
    }
    match create_stream(shared, group, stream).await {
        Ok(()) => return Ok(()),
        Err(Failure::NotFound) => {}
        Err(other) => return Err(other),
    }
    if !cfg.create_missing_group {
        return Err(not_allowed("the log group", "create_missing_group"));
    }
    let created = shared
        .client
        .create_log_group()
        .log_group_name(group)
        .send()
        .await;
    match created {
        Ok(_) => {
            shared.stats.groups_created.fetch_add(1, Ordering::Relaxed);
            tracing::info!(log_group = group, "created log group");
            if let Some(days) = cfg.retention_days {
                let r = shared
                    .client
                    .put_retention_policy()
                    .log_group_name(group)
                    .retention_in_days(days)
                    .send()
                    .await;
                if let Err(e) = r {
                    // Delivery matters more than retention: warn and go on.
                    tracing::warn!(
                        log_group = group,
                        "could not set retention to {days} days: {}",
                        error_chain(&e)
                    );
                }
            }
        }
        Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
        Err(e) => return Err(classify(&e)),
    }
    create_stream(shared, group, stream).await
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

/// Writes `rejected` to the dead-letter file, then resolves them as dead-lettered. If the file
/// cannot be written, they stay unacknowledged (their source keeps them) and an error is logged.
pub async fn dead_letter(
    shared: &Shared,
    group: &str,
    stream: &str,
    rejected: Vec<(Pending, Reason)>,
    detail: Option<&str>,
) {
    let dl = shared.dead_letter.clone();
    let (group_s, stream_s, detail_s) = (
        group.to_string(),
        stream.to_string(),
        detail.map(str::to_string),
    );
    let written = tokio::task::spawn_blocking(move || {
        let records: Vec<Record<'_>> = rejected
            .iter()
            .map(|(p, reason)| Record {
                reason: *reason,
                detail: detail_s.as_deref(),
                log_group: &group_s,
                log_stream: &stream_s,
                timestamp_ms: p.timestamp_ms,
                message: &p.message,
            })
            .collect();
        let r = dl.write(&records);
        (r, rejected)
    })
    .await;
    let Ok((result, rejected)) = written else {
        tracing::error!("dead-letter writer task failed; events kept unacknowledged");
        return;
    };
    if let Err(e) = result {
        tracing::error!(
            path = %shared.dead_letter.path().display(),
            "cannot write the dead-letter file ({e}); {} rejected events stay unacknowledged",
            rejected.len()
        );
        return;
    }
    let mut counts: HashMap<Reason, u64> = HashMap::new();
    for (p, reason) in rejected {
        *counts.entry(reason).or_default() += 1;
        p.ack.resolve(AckStatus::DeadLettered);
    }
    for (reason, n) in &counts {
        shared.stats.dead_lettered(*reason, *n);
    }
    if let Some(suppressed) = shared
        .log_limiter
        .allow("dead_letter", Duration::from_secs(10))
    {
        let summary: Vec<String> = counts
            .iter()
            .map(|(r, n)| format!("{}: {n}", r.as_str()))
            .collect();
        tracing::warn!(
            log_group = group,
            log_stream = stream,
            path = %shared.dead_letter.path().display(),
            suppressed,
            "CloudWatch will not accept some events ({}); written to the dead-letter file",
            summary.join(", ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_indexes_follow_aws_semantics() {
        // 6 events: 0,1 too old (end index 2, exclusive); 4,5 too new (start 4, inclusive).
        let r: Vec<Option<Reason>> = (0..6)
            .map(|i| rejected_reason(i, Some(4), Some(2), None))
            .collect();
        assert_eq!(
            r,
            vec![
                Some(Reason::TooOld),
                Some(Reason::TooOld),
                None,
                None,
                Some(Reason::TooNew),
                Some(Reason::TooNew)
            ]
        );
        // Expired takes precedence over too old for the same index.
        assert_eq!(
            rejected_reason(0, None, Some(3), Some(1)),
            Some(Reason::Expired)
        );
        assert_eq!(
            rejected_reason(1, None, Some(3), Some(1)),
            Some(Reason::TooOld)
        );
        assert_eq!(rejected_reason(0, None, None, None), None);
        // Zero end index rejects nothing; negative values are ignored.
        assert_eq!(rejected_reason(0, Some(-1), Some(0), Some(-5)), None);
    }

    #[test]
    fn body_is_the_documented_json() {
        let events: Vec<Pending> = [
            (i64::MIN, "min"),
            (-5i64, "plain"),
            (0, "q\"b\\s\n\t\u{1}é"),
            (1_764_087_639_123, ""),
        ]
        .into_iter()
        .map(|(t, m)| Pending {
            timestamp_ms: t,
            message: m.to_string(),
            ack: crate::ack::Ack::none(),
        })
        .collect();
        let body = encode_body("/g\"", "s", &events);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!({
                "logGroupName": "/g\"",
                "logStreamName": "s",
                "logEvents": [
                    {"timestamp": i64::MIN, "message": "min"},
                    {"timestamp": -5, "message": "plain"},
                    {"timestamp": 0, "message": "q\"b\\s\n\t\u{1}é"},
                    {"timestamp": 1_764_087_639_123i64, "message": ""},
                ]
            })
        );
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let cap = Duration::from_secs(30);
        for attempt in 0..64 {
            assert!(backoff(attempt, cap) <= cap);
        }
        assert!(backoff(0, cap) <= Duration::from_millis(100));
        let big: Duration = (0..50).map(|_| backoff(12, cap)).max().unwrap_or_default();
        assert!(
            big > Duration::from_secs(1),
            "50 draws up to 30 s all under 1 s: {big:?}"
        );
    }

    #[test]
    fn limiter_suppresses_and_counts() {
        let l = LogLimiter::default();
        assert_eq!(l.allow("k", Duration::from_secs(60)), Some(0));
        assert_eq!(l.allow("k", Duration::from_secs(60)), None);
        assert_eq!(l.allow("other", Duration::from_secs(60)), Some(0));
        assert_eq!(l.allow("k", Duration::ZERO), Some(1));
    }
}
