//! One PutLogEvents call, and what its answer means for the request's events.
//!
//! [`put`] sends one attempt of a request the batcher built ([`super::batch`]) and sorts the
//! answer into an [`Answer`] for the sink's scheduler, which decides what is sent when
//! ([`super::governor`] paces it, [`super::retry`] says how to retry):
//! - delivered: acknowledgements resolved; events a 200 answer still rejects
//!   (`rejectedLogEventsInfo`) go to the dead-letter file, the rest count as delivered;
//! - throttled: the request goes back to the queue, whole, and the sink slows down;
//! - the stream is missing: the request waits until [`super::control`] has created it;
//! - an invalid request is split in halves until the culprit stands alone and is dead-lettered;
//! - anything else: back to the queue after a backoff.
//!
//! The body is encoded once per request and reused by every attempt.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::SdkError;

use super::batch::Pending;
use super::dead_letter::{Reason, Record};
use super::retry::{backoff, classify, Failure, RetryKind};
use super::Shared;
use crate::ack::AckStatus;
use crate::format::push_json_str_known;
use crate::json_escape::push_json_str_bytes;

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

/// The PutLogEvents JSON body for `events`, built once per request and reused by every retry.
///
/// Why not let the SDK serialize `InputLogEvent`s: its serializer escapes strings character by
/// character and the input must be rebuilt (every message copied) for each attempt; on the
/// benchmark that was a fifth of logferry's CPU. The SDK still does everything else (endpoint,
/// signing over this exact body, HTTP, error parsing): the body is swapped in just before
/// signing. The request format is the documented AWS JSON 1.1 shape, checked byte for byte by
/// the tests' validating proxy and by moto. `entity` is a rendered `"entity":{...}` member
/// ([`super::entity`]).
pub fn encode_body(
    group: &str,
    stream: &str,
    entity: Option<&str>,
    events: &[Pending],
) -> bytes::Bytes {
    // Room for the escapes too (a `json` event's quotes double), so the body is not copied
    // to a larger buffer as it grows.
    let size: usize = events
        .iter()
        .map(|p| p.message.len() + p.message.len() / 4 + 48)
        .sum::<usize>()
        + 128;
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(b"{\"logGroupName\":");
    push_json_str_bytes(&mut out, group);
    out.extend_from_slice(b",\"logStreamName\":");
    push_json_str_bytes(&mut out, stream);
    if let Some(entity) = entity {
        out.push(b',');
        out.extend_from_slice(entity.as_bytes());
    }
    out.extend_from_slice(b",\"logEvents\":[");
    for (i, p) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"timestamp\":");
        out.extend_from_slice(itoa::Buffer::new().format(p.timestamp_ms).as_bytes());
        out.extend_from_slice(b",\"message\":");
        push_json_str_known(&mut out, &p.message, p.known.as_ref());
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    bytes::Bytes::from(out)
}

/// A request waiting for budget, or in flight.
#[derive(Debug)]
pub struct Request {
    /// Its events, sorted, within every PutLogEvents limit.
    pub events: Vec<Pending>,
    /// When its oldest event was taken in.
    pub opened: Instant,
    /// What it counts for against the request size limit.
    pub bytes: usize,
    /// How full it is, 0..=1, by events or bytes, whichever is fuller.
    pub fill: f64,
    /// Failed attempts so far (not counting throttles), for the backoff.
    pub attempt: u32,
    /// Not to be sent before this (a backoff).
    pub not_before: Option<Instant>,
    /// Its record in the in-flight ledger, once it was first sent.
    pub ledger_id: Option<u64>,
    /// The body, once encoded.
    body: Option<bytes::Bytes>,
}

impl Request {
    /// A request of `events` (sorted, valid) opened at `opened`.
    pub fn new(events: Vec<Pending>, opened: Instant, fill: f64) -> Request {
        let bytes = events.iter().map(Pending::cost).sum();
        Request {
            events,
            opened,
            bytes,
            fill,
            attempt: 0,
            not_before: None,
            ledger_id: None,
            body: None,
        }
    }

    /// Its earliest and latest timestamp (its events are sorted); `None` when empty.
    pub fn span(&self) -> Option<(i64, i64)> {
        Some((
            self.events.first()?.timestamp_ms,
            self.events.last()?.timestamp_ms,
        ))
    }

    fn half(events: Vec<Pending>, opened: Instant, fill: f64) -> Request {
        Request::new(events, opened, fill / 2.0)
    }

    /// The body, encoded on the first attempt; from then on it is the only copy of the text.
    ///
    /// The events' messages are let go once encoded: a request in flight (or waiting to be
    /// sent again) held its text twice, as messages and as body, and the requests in flight
    /// were most of the sink's memory. The rare paths that need a message again (a split, a
    /// dead letter) read them back from the body ([`Request::messages_back`]).
    fn body(&mut self, group: &str, stream: &str, entity: Option<&str>) -> bytes::Bytes {
        if let Some(body) = &self.body {
            return body.clone();
        }
        let body = encode_body(group, stream, entity, &self.events);
        for p in &mut self.events {
            p.message = String::new();
            p.known = None;
        }
        self.body = Some(body.clone());
        body
    }

    /// Puts the messages back into the events from the body (which is dropped): for a split
    /// or a dead letter, which need the text itself.
    fn messages_back(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        #[derive(serde::Deserialize)]
        struct Body {
            #[serde(rename = "logEvents")]
            log_events: Vec<Sent>,
        }
        #[derive(serde::Deserialize)]
        struct Sent {
            message: String,
        }
        match serde_json::from_slice::<Body>(&body) {
            Ok(b) if b.log_events.len() == self.events.len() => {
                for (p, sent) in self.events.iter_mut().zip(b.log_events) {
                    p.message = sent.message;
                }
            }
            // Cannot happen: the body is ours (`encode_body`, tested to be the documented
            // JSON with every message). Were it a bug, going on would send or dead-letter empty
            // texts; a panic stops the process instead (`task_failed`), and the events, never
            // acknowledged, are read or sent again after the restart.
            other => panic!(
                "cannot read a request's messages back from its body: {:?}",
                other.err()
            ),
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Answer {
    /// Every event is resolved: delivered or dead-lettered.
    Done,
    /// The account's quota is spent: slow down, send again later.
    Throttled(Request),
    /// The stream (or, with `group`, its group) does not exist.
    NotFound {
        /// The request, to send once the stream exists.
        req: Request,
        /// CloudWatch said the group is missing.
        group: bool,
    },
    /// CloudWatch refused the request as invalid: send the halves, first one first.
    Split(Request, Request),
    /// Another failure: send again at `not_before`.
    Retry(Request),
    /// The shutdown grace period ended: the events stay unacknowledged.
    Cancelled,
}

/// A call that failed, for [`warn_retry`].
#[derive(Debug)]
pub struct FailedCall<'a> {
    /// The API or what it was for ("PutLogEvents", "creating the log stream").
    pub what: &'a str,
    /// The log group.
    pub group: &'a str,
    /// The log stream (empty for a group).
    pub stream: &'a str,
    /// When the call was sent (Unix ms).
    pub sent_ms: i64,
}

/// Logs a failed call, at most once per kind every 10 s; refused credentials once per episode.
pub fn warn_retry(
    shared: &Shared,
    call: &FailedCall<'_>,
    kind: RetryKind,
    detail: &str,
    wait: Duration,
) {
    if kind == RetryKind::Auth {
        credentials_refused(shared, call, detail, wait);
        return;
    }
    if let Some(suppressed) = shared
        .log_limiter
        .allow(kind.as_str(), Duration::from_secs(10))
    {
        tracing::warn!(
            log_group = call.group,
            log_stream = call.stream,
            kind = kind.as_str(),
            suppressed,
            retry_in_ms = wait.as_millis() as u64,
            "{} failed, will retry (events are kept): {detail}",
            call.what
        );
    }
}

/// CloudWatch refused the credentials (expired, unknown, not allowed): counted every time,
/// logged at error level when it starts an episode (see [`super::retry::AuthEpisode`]).
/// `detail` is the service's code and message, which name no secret (an access denied names
/// the principal's ARN, which is no secret and what the operator needs to fix the policy).
fn credentials_refused(shared: &Shared, call: &FailedCall<'_>, detail: &str, wait: Duration) {
    let stats = &shared.stats;
    stats.auth_refused.fetch_add(1, Ordering::Relaxed);
    if stats.auth.refused(call.sent_ms) {
        tracing::error!(
            log_group = call.group,
            log_stream = call.stream,
            kind = RetryKind::Auth.as_str(),
            retry_in_ms = wait.as_millis() as u64,
            "CloudWatch refuses the credentials ({} failed: {detail}); every event is kept and \
             retried with backoff up to max_backoff until they are accepted: renew the \
             credentials or fix the IAM policy",
            call.what
        );
    }
}

/// A call sent at `sent_ms` was accepted: ends a refused-credentials episode, if one was on.
pub fn credentials_accepted(shared: &Shared, sent_ms: i64) {
    if let Some(refused) = shared.stats.auth.accepted(sent_ms) {
        tracing::info!(
            refused_calls = refused,
            "CloudWatch accepts the credentials again; delivery resumes"
        );
    }
}

/// Sends one attempt of `req` to `group`/`stream`, with the entity of its events if they have
/// one.
pub async fn put(
    shared: &Shared,
    group: &str,
    stream: &str,
    entity: Option<&str>,
    mut req: Request,
) -> Answer {
    let stats = &shared.stats;
    stats.in_flight.fetch_add(1, Ordering::Relaxed);
    stats.requests.fetch_add(1, Ordering::Relaxed);
    if req.attempt > 0 {
        stats.retries.fetch_add(1, Ordering::Relaxed);
    }
    let body = req.body(group, stream, entity);
    let call = shared
        .client
        .put_log_events()
        .log_group_name(group)
        .log_stream_name(stream)
        .customize()
        .mutate_request(move |r| {
            let len = body.len();
            *r.body_mut() = aws_smithy_types::body::SdkBody::from(body.clone());
            r.headers_mut().insert("content-length", len.to_string());
        })
        .send();
    let started = Instant::now();
    let sent_ms = crate::event::now_ms();
    let result = tokio::select! {
        r = call => Some(r),
        _ = shared.cancel.cancelled() => None,
    };
    stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    let Some(result) = result else {
        return Answer::Cancelled;
    };
    stats.observe_latency(started.elapsed());
    let now_ms = crate::event::now_ms();
    match &result {
        Ok(_) => {
            credentials_accepted(shared, sent_ms);
            stats.last_success_ms.store(now_ms, Ordering::Relaxed);
            stats.last_answer_ms.store(now_ms, Ordering::Relaxed);
        }
        Err(SdkError::ServiceError(_)) => stats.last_answer_ms.store(now_ms, Ordering::Relaxed),
        Err(_) => {}
    }
    let failure = match result {
        Ok(out) => {
            if let Some(refused) = out.rejected_entity_info() {
                stats.entity_rejected(refused.error_type().as_str());
            }
            let info = out.rejected_log_events_info();
            let (new_start, old_end, exp_end) = (
                info.and_then(|i| i.too_new_log_event_start_index()),
                info.and_then(|i| i.too_old_log_event_end_index()),
                info.and_then(|i| i.expired_log_event_end_index()),
            );
            stats.observe_events_per_request(req.events.len());
            // Written before any acknowledgement, so a position saved past these events always
            // finds them settled after a crash. A request with rejected events is only
            // forgotten: those are not in CloudWatch, and the dead-letter write may yet fail.
            let any_rejected = (0..req.events.len())
                .any(|i| rejected_reason(i, new_start, old_end, exp_end).is_some());
            if let Some(id) = req.ledger_id {
                shared.ledger_note(id, !any_rejected);
            }
            if !any_rejected {
                let n = req.events.len() as u64;
                for p in req.events {
                    p.ack.resolve(AckStatus::Delivered);
                }
                stats.events_delivered.fetch_add(n, Ordering::Relaxed);
                stats
                    .bytes_delivered
                    .fetch_add(req.bytes as u64, Ordering::Relaxed);
                return Answer::Done;
            }
            // The rejected ones go to the dead-letter file, with their text.
            req.messages_back();
            let mut rejected = Vec::new();
            let (mut n, mut bytes) = (0u64, 0u64);
            for (i, p) in req.events.into_iter().enumerate() {
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
            return Answer::Done;
        }
        Err(e) => classify(&e),
    };
    match failure {
        Failure::NotFound { group } => Answer::NotFound { req, group },
        Failure::Invalid(msg) => {
            // Its events go on in halves (new requests) or to the dead-letter file.
            if let Some(id) = req.ledger_id {
                shared.ledger_note(id, false);
            }
            // Halves are encoded anew; a lone event goes to the dead-letter file.
            req.messages_back();
            if req.events.len() > 1 {
                let mut first = std::mem::take(&mut req.events);
                let second = first.split_off(first.len() / 2);
                Answer::Split(
                    Request::half(first, req.opened, req.fill),
                    Request::half(second, req.opened, req.fill),
                )
            } else {
                let rejected = req
                    .events
                    .into_iter()
                    .map(|p| (p, Reason::InvalidParameter))
                    .collect();
                dead_letter(shared, group, stream, rejected, Some(&msg)).await;
                Answer::Done
            }
        }
        Failure::AlreadyAccepted => {
            if let Some(id) = req.ledger_id {
                shared.ledger_note(id, true);
            }
            let n = req.events.len() as u64;
            for p in req.events {
                p.ack.resolve(AckStatus::Delivered);
            }
            stats.events_delivered.fetch_add(n, Ordering::Relaxed);
            Answer::Done
        }
        Failure::Retry {
            kind: RetryKind::Throttled,
            detail,
            ..
        } => {
            stats.set_error(&format!("PutLogEvents {}: {detail}", RetryKind::Throttled));
            stats.throttled.fetch_add(1, Ordering::Relaxed);
            stats
                .throttled_put_log_events
                .fetch_add(1, Ordering::Relaxed);
            Answer::Throttled(req)
        }
        Failure::Retry {
            kind,
            ambiguous,
            detail,
        } => {
            if ambiguous {
                stats.ambiguous_resends.fetch_add(1, Ordering::Relaxed);
            }
            let wait = backoff(req.attempt, shared.config.max_backoff);
            stats.set_error(&format!("PutLogEvents {kind}: {detail}"));
            let failed = FailedCall {
                what: "PutLogEvents",
                group,
                stream,
                sent_ms,
            };
            warn_retry(shared, &failed, kind, &detail, wait);
            req.attempt += 1;
            req.not_before = Some(Instant::now() + wait);
            Answer::Retry(req)
        }
    }
}

/// Writes `rejected` to the dead-letter file, then resolves them as dead-lettered. If the file
/// cannot be written (disk full, read-only, I/O error), the write is tried again with backoff
/// until it succeeds: the events stay unacknowledged meanwhile, so no position (journal cursor,
/// file checkpoint, spool acknowledgement) moves past them, and the first failure of an episode
/// is logged at error level and each one counted. Only the end of the shutdown grace period
/// gives up; the source then keeps them (read again, or delivered from the spool, on restart).
pub async fn dead_letter(
    shared: &Shared,
    group: &str,
    stream: &str,
    mut rejected: Vec<(Pending, Reason)>,
    detail: Option<&str>,
) {
    let mut attempt = 0;
    loop {
        let (result, back) = write_dead_letters(shared, group, stream, rejected, detail).await;
        rejected = back;
        let Err(e) = result else { break };
        if rejected.is_empty() {
            tracing::error!("{e}; events kept unacknowledged");
            return;
        }
        let stats = &shared.stats;
        stats
            .dead_letter_write_failures
            .fetch_add(1, Ordering::Relaxed);
        let wait = backoff(attempt, shared.config.max_backoff);
        if !stats.dead_letter_failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                path = %shared.dead_letter.path().display(),
                retry_in_ms = wait.as_millis() as u64,
                "cannot write the dead-letter file ({e}); {} rejected events stay \
                 unacknowledged (their source keeps them) and the write is retried until it \
                 succeeds",
                rejected.len()
            );
        }
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shared.cancel.cancelled() => return,
        }
    }
    if shared
        .stats
        .dead_letter_failing
        .swap(false, Ordering::Relaxed)
    {
        tracing::info!(
            path = %shared.dead_letter.path().display(),
            "the dead-letter file can be written again"
        );
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

/// One attempt at writing `rejected` (on a blocking thread); gives them back either way.
async fn write_dead_letters(
    shared: &Shared,
    group: &str,
    stream: &str,
    rejected: Vec<(Pending, Reason)>,
    detail: Option<&str>,
) -> (std::io::Result<()>, Vec<(Pending, Reason)>) {
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
    match written {
        Ok(done) => done,
        // The task panicked: its events went with it, their acks dropped (failed), so their
        // source keeps them.
        Err(e) => (
            Err(std::io::Error::other(format!(
                "dead-letter writer task failed: {e}"
            ))),
            Vec::new(),
        ),
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
    fn an_encoded_request_keeps_its_text_only_in_the_body_and_gives_it_back() {
        let texts = ["plain", "q\"b\\s\n\t\u{1}é", "[part 1/2] x"];
        let events: Vec<Pending> = texts
            .iter()
            .enumerate()
            .map(|(i, m)| Pending {
                timestamp_ms: i as i64,
                message: m.to_string(),
                ack: crate::ack::Ack::none(),
                origin: 0,
                known: None,
                content: None,
            })
            .collect();
        let mut req = Request::new(events, Instant::now(), 0.5);
        let bytes = req.bytes;
        let body = req.body("g", "s", None);
        assert!(req.events.iter().all(|p| p.message.is_empty()));
        assert_eq!(req.body("g", "s", None), body, "encoded once");
        assert_eq!(req.bytes, bytes);
        req.messages_back();
        let back: Vec<&str> = req.events.iter().map(|p| p.message.as_str()).collect();
        assert_eq!(back, texts);
        assert!(req.body.is_none());
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
            origin: 0,
            known: None,
            content: None,
        })
        .collect();
        let body = encode_body("/g\"", "s", None, &events);
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
}
