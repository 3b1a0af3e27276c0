//! The retry policy: which failures are retried, and how long to wait.
//!
//! - A throttle (`ThrottlingException` and its kin) is not an error of one request but a sign
//!   that the account's quota is spent: it slows the whole sink ([`super::governor`]) and the
//!   request goes back to the queue, to be sent again when there is budget. Never given up.
//! - `ServiceUnavailableException`, 5xx, timeouts, connection failures and credential or
//!   permission errors are retried forever (while the process runs) with exponential backoff
//!   and full jitter, capped at `max_backoff`. An outage must not drop data; logs say what is
//!   wrong, rate-limited ([`LogLimiter`]).
//! - Refused credentials (`ExpiredTokenException`, `UnrecognizedClientException`,
//!   `AccessDeniedException`, bad signatures) are such a retry, but an operator must act (renew
//!   the credentials, fix the IAM policy) unless the SDK renews them on its own: an
//!   [`AuthEpisode`] makes it one error-level line when the refusals start, however many
//!   requests and streams meet them, and one info line when a call is accepted again. Every
//!   refused call is counted (`logferry_sink_auth_refused_total`) and `logferry_sink_auth_failing`
//!   is 1 meanwhile. The events are kept; nothing is given up, however long it lasts.
//! - `ResourceNotFoundException` creates what is missing (see [`super::control`]); creation
//!   calls meet the same throttles and outages and are retried the same way (Vector drops a
//!   batch when CreateLogGroup is throttled; we do not).
//! - `InvalidParameterException` means a request logferry built wrongly or an event CloudWatch
//!   will never take: the request is split in halves until the culprit stands alone, and only
//!   that event is dead-lettered. Never a loop.
//!
//! A retry after a timeout or a lost response may duplicate events CloudWatch did ingest;
//! that is the price of at-least-once, counted in `ambiguous_resends`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use rand::Rng;

/// How a failed call should be handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The group or stream does not exist; `group` when the message says it is the group
    /// ("The specified log group does not exist.", AWS and moto alike), so the group can be
    /// created first instead of learning it from a failed CreateLogStream.
    NotFound {
        /// The group is what is missing.
        group: bool,
    },
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
/// one kind (throttling) that also slows the sink and is counted on its own.
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
                "ResourceNotFoundException" => Failure::NotFound {
                    group: msg.contains("log group"),
                },
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

/// Whether CloudWatch refuses a sink's credentials now. An episode starts at the first refused
/// call and ends at the first accepted one, so it is logged once however many requests meet it.
/// A refusal of a call sent no later than the last accepted one is stale (it was in flight when
/// the credentials were renewed) and starts nothing.
#[derive(Debug, Default)]
pub struct AuthEpisode {
    failing: AtomicBool,
    refused_in_episode: AtomicU64,
    last_accepted_sent_ms: AtomicI64,
}

impl AuthEpisode {
    /// A call sent at `sent_ms` (Unix ms) was refused; true when this starts an episode.
    pub fn refused(&self, sent_ms: i64) -> bool {
        if sent_ms <= self.last_accepted_sent_ms.load(Ordering::Relaxed) {
            return false;
        }
        self.refused_in_episode.fetch_add(1, Ordering::Relaxed);
        !self.failing.swap(true, Ordering::Relaxed)
    }

    /// A call sent at `sent_ms` was accepted; the episode's refused calls when this ends one.
    pub fn accepted(&self, sent_ms: i64) -> Option<u64> {
        self.last_accepted_sent_ms
            .fetch_max(sent_ms, Ordering::Relaxed);
        if !self.failing.load(Ordering::Relaxed) || !self.failing.swap(false, Ordering::Relaxed) {
            return None;
        }
        Some(self.refused_in_episode.swap(0, Ordering::Relaxed))
    }

    /// Whether an episode is going on.
    pub fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_refusals_make_one_episode_until_a_call_is_accepted() {
        let a = AuthEpisode::default();
        assert_eq!(a.accepted(10), None, "no episode to end");
        assert!(a.refused(20), "the first refusal starts an episode");
        assert!(!a.refused(21), "later ones belong to it");
        assert!(!a.refused(22));
        assert!(a.is_failing());
        assert_eq!(a.accepted(30), Some(3), "ended, with its refusals");
        assert!(!a.is_failing());
        assert!(!a.refused(29), "sent before the accepted call: stale");
        assert!(!a.is_failing());
        assert!(a.refused(31), "sent after it: a new episode");
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
