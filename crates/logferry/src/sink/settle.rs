//! On start, before any event is taken in: settle what the last run's ledger left in flight.
//!
//! Each request the [`ledger`](super::ledger) recorded as sent but never as settled may or may
//! not be in CloudWatch (the process died between sending it and hearing the answer). It is
//! looked up: GetLogEvents over its stream and time window, every page. It counts as
//! delivered only on a complete, positive match: every one of its events (timestamp and text,
//! by [`content_hash`](super::ledger::content_hash)) found, each found event claimed once, and
//! only events CloudWatch ingested no earlier than the request was first sent (`ingestionTime`,
//! less [`CLOCK_SKEW_MS`]): an identical event an earlier request delivered is not it.
//! Anything else means *resend*, as without a ledger: not found or found in part (`resent`),
//! and a denied `logs:GetLogEvents`, an error or a lookup that takes more than
//! [`STREAM_BUDGET`] (`unknown`).
//!
//! What comes out is the set of *origins* to skip: the events of requests proven delivered,
//! and of requests the ledger already knew were settled (delivered, but perhaps not yet under
//! a saved position). When a source reads such an event again, the sink acknowledges it as
//! delivered instead of sending it ([`super::CloudWatchSink`]'s intake), so the source's
//! position moves past it. Matching re-read events by origin (the source's own position, not
//! the text) is what makes skipping safe: a new event with the same text is never taken for an
//! old one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use tokio::task::JoinSet;

use super::ledger::{content_hash, Loaded, Sent, State};
use super::Shared;

/// Longest time spent looking up one stream's unsettled requests.
pub const STREAM_BUDGET: Duration = Duration::from_secs(5);
/// An event ingested this long before its request was first sent still counts (clocks differ).
pub const CLOCK_SKEW_MS: i64 = 1_000;
/// Events of settled requests carried from one start to the next, newest first (16 bytes
/// each in the ledger).
const KEEP_EVENTS: usize = 1 << 18;
/// Streams looked up at once.
const PARALLEL_STREAMS: usize = 8;

/// What settling found.
#[derive(Debug, Default)]
pub struct Settled {
    /// Origins of events known to be in CloudWatch: skipped (acknowledged) when read again.
    pub skip: HashSet<u64>,
    /// The requests those origins come from, for the ledger's next generation.
    pub keep: Vec<Sent>,
}

/// Why a stream's lookup gave no answer.
#[derive(Debug)]
enum Lookup {
    /// The stream does not exist: nothing of it was delivered.
    Missing,
    /// Denied, an error, or too slow: nobody knows.
    Unknown(String),
}

/// One stream's events in a window: (content hash, ingestion time).
async fn fetch(
    shared: &Shared,
    group: &str,
    stream: &str,
    start: i64,
    end: i64,
) -> Result<(Vec<(u64, i64)>, u64), Lookup> {
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    let mut calls = 0u64;
    loop {
        calls += 1;
        let out = shared
            .client
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_time(start)
            .end_time(end)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(SdkError::ServiceError(e))
                if e.err().code() == Some("ResourceNotFoundException") =>
            {
                return Err(Lookup::Missing)
            }
            Err(e) => {
                let detail = match &e {
                    SdkError::ServiceError(s) => {
                        s.err().code().unwrap_or("service error").to_string()
                    }
                    other => format!("{other}"),
                };
                return Err(Lookup::Unknown(detail));
            }
        };
        let events = out.events();
        for ev in events {
            if let (Some(ts), Some(msg), Some(ingested)) =
                (ev.timestamp(), ev.message(), ev.ingestion_time())
            {
                found.push((content_hash(ts, msg), ingested));
            }
        }
        let next = out.next_forward_token().map(str::to_string);
        // The last page hands back the token it was asked with.
        if events.is_empty() || next.is_none() || next == token {
            return Ok((found, calls));
        }
        token = next;
    }
}

/// Which of `requests` (one stream's) are in `found` whole. Requests are matched in the order
/// they were first sent, each found event claimed by one event of one request at most, and
/// only by a request first sent no later than [`CLOCK_SKEW_MS`] after it was ingested.
pub fn prove(requests: &[&Sent], found: &[(u64, i64)]) -> Vec<bool> {
    let mut by_content: HashMap<u64, Vec<(i64, bool)>> = HashMap::new();
    for &(content, ingested) in found {
        by_content
            .entry(content)
            .or_default()
            .push((ingested, false));
    }
    for v in by_content.values_mut() {
        v.sort_unstable();
    }
    let mut order: Vec<usize> = (0..requests.len()).collect();
    order.sort_by_key(|&i| (requests[i].first_sent_ms, requests[i].id));
    let mut proven = vec![false; requests.len()];
    for i in order {
        let req = requests[i];
        let since = req.first_sent_ms - CLOCK_SKEW_MS;
        let mut claimed: Vec<(u64, usize)> = Vec::with_capacity(req.events.len());
        let mut whole = !req.events.is_empty();
        for m in &req.events {
            let slot = by_content.get_mut(&m.content).and_then(|v| {
                v.iter_mut()
                    .enumerate()
                    .find(|(_, (at, used))| !*used && *at >= since)
                    .map(|(k, e)| {
                        e.1 = true;
                        k
                    })
            });
            match slot {
                Some(k) => claimed.push((m.content, k)),
                None => {
                    whole = false;
                    break;
                }
            }
        }
        if !whole {
            for (content, k) in claimed {
                if let Some(e) = by_content.get_mut(&content).and_then(|v| v.get_mut(k)) {
                    e.1 = false;
                }
            }
        }
        proven[i] = whole;
    }
    proven
}

/// Settles what `loaded` left in flight; counts outcomes in the sink's stats and logs a
/// summary.
pub async fn settle(shared: &Arc<Shared>, loaded: Loaded) -> Settled {
    let started = Instant::now();
    let mut out = Settled::default();
    let mut streams: BTreeMap<(String, String), Vec<Sent>> = BTreeMap::new();
    for (sent, state) in loaded.requests {
        match state {
            State::Settled => out.keep.push(sent),
            State::Unsettled => streams
                .entry((sent.group.clone(), sent.stream.clone()))
                .or_default()
                .push(sent),
        }
    }
    let unsettled: usize = streams.values().map(Vec::len).sum();
    let stats = &shared.stats;
    let (mut settled, mut resent, mut unknown, mut calls) = (0u64, 0u64, 0u64, 0u64);
    let gate = Arc::new(tokio::sync::Semaphore::new(PARALLEL_STREAMS));
    let mut tasks = JoinSet::new();
    for ((group, stream), requests) in streams {
        let shared = shared.clone();
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let start = requests.iter().map(|r| r.min_ts).min().unwrap_or(0);
            let end = requests.iter().map(|r| r.max_ts).max().unwrap_or(0) + 1;
            let looked =
                tokio::time::timeout(STREAM_BUDGET, fetch(&shared, &group, &stream, start, end))
                    .await
                    .unwrap_or_else(|_| Err(Lookup::Unknown("timed out".into())));
            (group, stream, requests, looked)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((group, stream, requests, looked)) = done else {
            continue;
        };
        match looked {
            Ok((found, n)) => {
                calls += n;
                let refs: Vec<&Sent> = requests.iter().collect();
                let proven = prove(&refs, &found);
                for (req, ok) in requests.into_iter().zip(proven) {
                    if ok {
                        settled += 1;
                        out.keep.push(req);
                    } else {
                        resent += 1;
                    }
                }
            }
            Err(Lookup::Missing) => {
                calls += 1;
                resent += requests.len() as u64;
            }
            Err(Lookup::Unknown(why)) => {
                calls += 1;
                unknown += requests.len() as u64;
                tracing::warn!(
                    log_group = %group,
                    log_stream = %stream,
                    requests = requests.len(),
                    "cannot tell whether requests in flight at the last stop were delivered ({why}); sending them again (logs:GetLogEvents lets logferry settle them instead)"
                );
            }
        }
    }
    // Only the newest: older settled requests are long under saved positions.
    out.keep.sort_by_key(|s| std::cmp::Reverse(s.id));
    let mut events = 0usize;
    out.keep.retain(|s| {
        events += s.events.len();
        events <= KEEP_EVENTS
    });
    for sent in &out.keep {
        out.skip
            .extend(sent.events.iter().map(|m| m.origin).filter(|o| *o != 0));
    }
    stats.settle_settled.fetch_add(settled, Ordering::Relaxed);
    stats.settle_resent.fetch_add(resent, Ordering::Relaxed);
    stats.settle_unknown.fetch_add(unknown, Ordering::Relaxed);
    stats.settle_calls.fetch_add(calls, Ordering::Relaxed);
    if unsettled > 0 || loaded.unreadable_tails > 0 {
        tracing::info!(
            unsettled,
            settled,
            resent,
            unknown,
            get_log_events_calls = calls,
            events_to_skip = out.skip.len(),
            unreadable_ledger_tails = loaded.unreadable_tails,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "settled the requests in flight at the last stop"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::ledger::Mark;

    fn req(id: u64, first_sent_ms: i64, events: &[(i64, &str)]) -> Sent {
        Sent {
            id,
            first_sent_ms,
            min_ts: events.iter().map(|e| e.0).min().unwrap_or(0),
            max_ts: events.iter().map(|e| e.0).max().unwrap_or(0),
            group: "g".into(),
            stream: "s".into(),
            events: events
                .iter()
                .enumerate()
                .map(|(i, (ts, m))| Mark {
                    origin: id * 1000 + i as u64 + 1,
                    content: content_hash(*ts, m),
                })
                .collect(),
        }
    }

    fn found(events: &[(i64, &str, i64)]) -> Vec<(u64, i64)> {
        events
            .iter()
            .map(|(ts, m, ingested)| (content_hash(*ts, m), *ingested))
            .collect()
    }

    #[test]
    fn only_a_request_found_whole_is_proven() {
        let whole = req(1, 10_000, &[(1, "a"), (2, "b")]);
        let partial = req(2, 10_000, &[(3, "c"), (4, "d")]);
        let absent = req(3, 10_000, &[(5, "e")]);
        let got = prove(
            &[&whole, &partial, &absent],
            &found(&[(1, "a", 10_050), (2, "b", 10_050), (3, "c", 10_060)]),
        );
        assert_eq!(got, vec![true, false, false]);
    }

    #[test]
    fn identical_events_delivered_before_the_request_was_sent_do_not_count() {
        let r = req(1, 50_000, &[(1, "a")]);
        let earlier = found(&[(1, "a", 50_000 - CLOCK_SKEW_MS - 1)]);
        assert_eq!(prove(&[&r], &earlier), vec![false]);
        let ours = found(&[(1, "a", 50_000 - CLOCK_SKEW_MS)]);
        assert_eq!(prove(&[&r], &ours), vec![true]);
    }

    #[test]
    fn each_found_event_proves_one_event_of_one_request() {
        // Two requests of the same text; CloudWatch holds it once.
        let first = req(1, 10_000, &[(1, "a")]);
        let second = req(2, 10_001, &[(1, "a")]);
        let got = prove(&[&second, &first], &found(&[(1, "a", 10_100)]));
        assert_eq!(got, vec![false, true], "the first sent claims it");
        // A request holding the same event twice needs it twice.
        let twice = req(3, 10_000, &[(1, "a"), (1, "a")]);
        assert_eq!(prove(&[&twice], &found(&[(1, "a", 10_100)])), vec![false]);
        // A request that fails releases what it claimed for the next one.
        let fails = req(4, 10_000, &[(1, "a"), (9, "z")]);
        let next = req(5, 10_002, &[(1, "a")]);
        assert_eq!(
            prove(&[&fails, &next], &found(&[(1, "a", 10_100)])),
            vec![false, true]
        );
    }
}
