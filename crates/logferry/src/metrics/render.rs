//! Which families `/metrics` has, one function per group: every source, network listeners,
//! file sources, the Kubernetes API, spools, sinks.
//!
//! Each function visits its sources or sinks once and adds one sample per family it reads;
//! [`Exposition`] keeps each family's samples together, whatever order they come in. Label
//! values are config names (escaped), never event data or credentials.

use std::sync::atomic::{AtomicU64, Ordering};

use super::exposition::{label_value, Exposition, Family, Kind, Spec};
use super::{Registry, SourceEntry};
use crate::event::now_ms;
use crate::sink::stats::{SinkStats, EVENTS_PER_REQUEST_BUCKETS, LATENCY_BUCKETS};
use crate::source::stats::SourceStats;

/// Picks one counter out of a source's stats.
type SourceCounter = fn(&SourceStats) -> &AtomicU64;

/// Picks one counter out of a sink's stats.
type SinkCounter = fn(&SinkStats) -> &AtomicU64;

/// `source="NAME",type="KIND"`: the labels of every per-source sample.
fn source_labels(e: &SourceEntry) -> String {
    format!("source=\"{}\",type=\"{}\"", label_value(&e.name), e.kind)
}

/// Milliseconds as seconds with three decimals.
fn seconds(ms: i64) -> String {
    format!("{:.3}", ms.max(0) as f64 / 1000.0)
}

/// Families with one sample per source of `entries`, each read from the counter it picks.
fn one_sample_per_source(
    x: &mut Exposition,
    entries: &[&SourceEntry],
    families: &[(&'static str, Kind, &'static str, SourceCounter)],
) {
    for &(name, kind, help, get) in families {
        let family = x.family(name, kind, help);
        for e in entries {
            family.sample(&source_labels(e), get(&e.stats).load(Ordering::Relaxed));
        }
    }
}

/// Samples of `family` split by one more label: `labels,label="VALUE"`, each from its counter.
fn by_label(family: &mut Family, labels: &str, label: &str, counters: &[(&str, &AtomicU64)]) {
    for (value, c) in counters {
        family.sample(
            &format!("{labels},{label}=\"{value}\""),
            c.load(Ordering::Relaxed),
        );
    }
}

/// A histogram's samples: a cumulative `_bucket` per bound and `+Inf`, `_sum` and `_count`.
fn histogram(
    family: &mut Family,
    labels: &str,
    bounds: &[f64],
    buckets: &[AtomicU64],
    count: u64,
    sum: impl std::fmt::Display,
) {
    for (bound, bucket) in bounds.iter().zip(buckets) {
        family.suffixed(
            "_bucket",
            &format!("{labels},le=\"{bound}\""),
            bucket.load(Ordering::Relaxed),
        );
    }
    family.suffixed("_bucket", &format!("{labels},le=\"+Inf\""), count);
    family.suffixed("_sum", labels, sum);
    family.suffixed("_count", labels, count);
}

/// The whole exposition.
pub(super) fn render(registry: &Registry) -> String {
    let mut x = Exposition::default();
    x.gauge("logferry_build_info", "Version of the running logferry.")
        .sample(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION")), 1);
    let now = now_ms();
    every_source(&mut x, &registry.sources, now);
    listeners(&mut x, &registry.sources);
    file_sources(&mut x, &registry.sources);
    kubernetes_api(&mut x, &registry.sources);
    spools(&mut x, &registry.sources, now);
    sinks(&mut x, &registry.sinks);
    x.finish()
}

/// What every source has: events, bytes, truncations, drops by reason, lag.
fn every_source(x: &mut Exposition, sources: &[SourceEntry], now: i64) {
    let all: Vec<&SourceEntry> = sources.iter().collect();
    let counters: [(&'static str, Kind, &'static str, SourceCounter); 4] = [
        (
            "logferry_source_events_total",
            Kind::Counter,
            "Events read by a source.",
            |s| &s.events,
        ),
        (
            "logferry_source_bytes_total",
            Kind::Counter,
            "Message bytes read by a source.",
            |s| &s.bytes,
        ),
        (
            "logferry_source_truncated_total",
            Kind::Counter,
            "Events truncated to max_frame_bytes (kept, flagged).",
            |s| &s.truncated,
        ),
        (
            "logferry_source_state_save_failures_total",
            Kind::Counter,
            "Failed saves of a source's position (journal cursor, file checkpoint), each retried; the saved position stays behind meanwhile.",
            |s| &s.state_save_failures,
        ),
    ];
    one_sample_per_source(x, &all, &counters);
    for e in sources {
        let dropped = x.counter(
            "logferry_source_dropped_total",
            "Events a source dropped, by reason (only by configured policy).",
        );
        by_label(
            dropped,
            &source_labels(e),
            "reason",
            &[
                ("spool_full", &e.stats.dropped_spool_full),
                ("spool_drop_oldest", &e.stats.dropped_spool_oldest),
                ("rate_limited", &e.stats.dropped_rate_limited),
            ],
        );
    }
    let lag = x.gauge(
        "logferry_source_lag_seconds",
        "Age of the newest event a source has read (journal: how far behind its tail).",
    );
    for e in sources {
        let last = e.stats.last_event_ms.load(Ordering::Relaxed);
        if last > 0 {
            lag.sample(&source_labels(e), seconds(now - last));
        }
    }
}

/// Network listeners' guards (syslog sources only: the others have no peers).
fn listeners(x: &mut Exposition, sources: &[SourceEntry]) {
    let listening: Vec<&SourceEntry> = sources.iter().filter(|e| e.kind.listens()).collect();
    let simple: [(&'static str, Kind, &'static str, SourceCounter); 6] = [
        (
            "logferry_source_connections",
            Kind::Gauge,
            "Stream connections open now.",
            |s| &s.connections_open,
        ),
        (
            "logferry_source_connections_total",
            Kind::Counter,
            "Stream connections accepted.",
            |s| &s.connections_accepted,
        ),
        (
            "logferry_source_connection_limit_reached_total",
            Kind::Counter,
            "Times a listener stopped accepting because max_connections were open (the kernel backlog then holds new clients).",
            |s| &s.connection_limit_reached,
        ),
        (
            "logferry_source_idle_closed_total",
            Kind::Counter,
            "Stream connections closed after idle_timeout without a complete frame.",
            |s| &s.idle_closed,
        ),
        (
            "logferry_source_tls_reload_failures_total",
            Kind::Counter,
            "Changed TLS files that did not load (the previous certificate stays in use).",
            |s| &s.tls_reload_failures,
        ),
        (
            "logferry_source_tls_reloads_total",
            Kind::Counter,
            "TLS certificate reloads (new connections use the new certificate).",
            |s| &s.tls_reloads,
        ),
    ];
    one_sample_per_source(x, &listening, &simple);
    let rejected = x.counter(
        "logferry_source_rejected_total",
        "Connections (TCP) or datagrams (UDP) refused before any event was read, by reason.",
    );
    for e in &listening {
        by_label(
            rejected,
            &source_labels(e),
            "reason",
            &[
                ("peer_not_allowed", &e.stats.rejected_peer),
                ("tls_handshake_failed", &e.stats.rejected_tls_handshake),
                ("tls_handshake_timeout", &e.stats.rejected_tls_timeout),
            ],
        );
    }
    let throttled = x.counter(
        "logferry_source_throttled_seconds_total",
        "Time stream connections were paused by max_events_per_second / max_bytes_per_second.",
    );
    for e in &listening {
        let us = e.stats.throttled_us.load(Ordering::Relaxed);
        throttled.sample(&source_labels(e), format!("{:.3}", us as f64 / 1e6));
    }
}

/// File and Kubernetes container log sources (the families exist only when there is one).
fn file_sources(x: &mut Exposition, sources: &[SourceEntry]) {
    let files: Vec<&SourceEntry> = sources.iter().filter(|e| e.kind.reads_files()).collect();
    if files.is_empty() {
        return;
    }
    let families: [(&'static str, Kind, &'static str, SourceCounter); 7] = [
        (
            "logferry_file_open_files",
            Kind::Gauge,
            "Files a file source has open.",
            |s| &s.files_open,
        ),
        (
            "logferry_file_truncations_total",
            Kind::Counter,
            "Files found truncated (copytruncate) and read again from their start.",
            |s| &s.files_truncated,
        ),
        (
            "logferry_file_missing_total",
            Kind::Counter,
            "Files with a saved offset that were gone at start (unread lines lost).",
            |s| &s.files_missing,
        ),
        (
            "logferry_file_rate_pauses_total",
            Kind::Counter,
            "Times a file was paused, not cut, for reading max_file_bytes_per_second (max_container_bytes_per_second).",
            |s| &s.files_rate_paused,
        ),
        (
            "logferry_file_unparsed_lines_total",
            Kind::Counter,
            "Container log lines in neither CRI nor Docker format (sent as they are).",
            |s| &s.unparsed,
        ),
        (
            "logferry_file_json_merge_failures_total",
            Kind::Counter,
            "Lines starting with `{` that merge_json did not merge: invalid JSON, nested too deep, or too long (sent as they are).",
            |s| &s.json_merge_failures,
        ),
        (
            "logferry_file_excluded_events_total",
            Kind::Counter,
            "Events of pods or containers annotated logferry.io/exclude (read, never shipped).",
            |s| &s.excluded_events,
        ),
    ];
    one_sample_per_source(x, &files, &families);
}

/// The pod lookups of `kubernetes_logs` sources with `kubernetes_api` (only once one started).
fn kubernetes_api(x: &mut Exposition, sources: &[SourceEntry]) {
    for e in sources.iter().filter(|e| e.kind.reads_files()) {
        let Some(api) = e.stats.kubernetes_api.get() else {
            continue;
        };
        let l = source_labels(e);
        x.gauge(
            "logferry_kubernetes_api_up",
            "1 when the last pod GET got an answer from the Kubernetes API.",
        )
        .sample(&l, u8::from(api.up.load(Ordering::Relaxed)));
        let requests = x.counter(
            "logferry_kubernetes_api_requests_total",
            "Pod GETs sent to the Kubernetes API, by outcome (found, not_found, failed).",
        );
        by_label(
            requests,
            &l,
            "outcome",
            &[
                ("found", &api.found),
                ("not_found", &api.not_found),
                ("failed", &api.failed),
            ],
        );
        if api.watching.load(Ordering::Relaxed) {
            x.gauge(
                "logferry_kubernetes_watch_up",
                "1 while the watch of this node's pods is open and its list current.",
            )
            .sample(&l, u8::from(api.watch_up.load(Ordering::Relaxed)));
            x.gauge(
                "logferry_kubernetes_watch_pods",
                "Pods of this node the watch holds.",
            )
            .sample(&l, api.watch_pods.load(Ordering::Relaxed));
            x.counter(
                "logferry_kubernetes_watch_lists_total",
                "Lists of this node's pods: the first, then after 410 Gone.",
            )
            .sample(&l, api.watch_lists.load(Ordering::Relaxed));
            let restarts = x.counter(
                "logferry_kubernetes_watch_restarts_total",
                "Watches of this node's pods started again, by reason (closed by the server, gone: 410 and a new list, failed: after a backoff).",
            );
            by_label(
                restarts,
                &l,
                "reason",
                &[
                    ("closed", &api.restarts_closed),
                    ("gone", &api.restarts_gone),
                    ("failed", &api.restarts_failed),
                ],
            );
        }
        x.counter(
            "logferry_kubernetes_pod_wait_expired_total",
            "New pods' log files sent without labels because the API had not answered within kubernetes_api.wait.",
        )
        .sample(&l, e.stats.pod_wait_expired.load(Ordering::Relaxed));
    }
}

/// The disk spools of pushed sources.
fn spools(x: &mut Exposition, sources: &[SourceEntry], now: i64) {
    // Declared up front: the families exist (empty) without a spooled source, as scrapers
    // have always seen them.
    for spec in [SPOOL_BYTES, SPOOL_PENDING, SPOOL_OLDEST] {
        x.declare(spec);
    }
    for e in sources {
        let Some(spool) = &e.spool else { continue };
        let st = spool.stats();
        let l = source_labels(e);
        x.declare(SPOOL_BYTES).sample(&l, st.bytes_on_disk);
        x.declare(SPOOL_PENDING).sample(&l, st.records_pending);
        let age_ms = st
            .oldest_pending_appended_ms
            .map_or(0, |ms| now - ms as i64);
        x.declare(SPOOL_OLDEST).sample(&l, seconds(age_ms));
    }
}

/// Every sink's books, requests, dead letters and PutLogEvents latency.
fn sinks(x: &mut Exposition, sinks: &[(String, std::sync::Arc<SinkStats>)]) {
    let counters: [(&'static str, &'static str, SinkCounter); 18] = [
        (
            "logferry_sink_events_received_total",
            "Events a sink took in.",
            |s| &s.events_received,
        ),
        (
            "logferry_sink_events_delivered_total",
            "Events CloudWatch accepted.",
            |s| &s.events_delivered,
        ),
        (
            "logferry_sink_billed_bytes_total",
            "Bytes CloudWatch bills for ingestion (message bytes + 26 per event).",
            |s| &s.bytes_delivered,
        ),
        (
            "logferry_sink_split_parts_total",
            "Extra parts created by splitting oversize events.",
            |s| &s.split_parts,
        ),
        (
            "logferry_sink_budget_flushes_total",
            "Requests sent before they were full because the sink held max_held_bytes, most of it in requests being built.",
            |s| &s.budget_flushes,
        ),
        (
            "logferry_sink_requests_total",
            "PutLogEvents attempts.",
            |s| &s.requests,
        ),
        (
            "logferry_sink_retries_total",
            "PutLogEvents attempts that were retries.",
            |s| &s.retries,
        ),
        (
            "logferry_sink_throttled_total",
            "ThrottlingException answers.",
            |s| &s.throttled,
        ),
        (
            "logferry_sink_ambiguous_resends_total",
            "Retries after failures CloudWatch may have ingested (possible duplicates).",
            |s| &s.ambiguous_resends,
        ),
        (
            "logferry_sink_auth_refused_total",
            "Calls CloudWatch refused for their credentials or permissions (expired, unknown, access denied); their events are kept and retried.",
            |s| &s.auth_refused,
        ),
        (
            "logferry_sink_dead_letter_write_failures_total",
            "Failed writes of the dead-letter file (disk full, read-only, I/O error); their events stay unacknowledged and the write is retried.",
            |s| &s.dead_letter_write_failures,
        ),
        (
            "logferry_sink_events_skipped_delivered_total",
            "Events read again after a crash and acknowledged without sending: their request was known to be in CloudWatch.",
            |s| &s.events_skipped_delivered,
        ),
        (
            "logferry_sink_settle_calls_total",
            "GetLogEvents calls made at start to settle requests in flight at the last stop.",
            |s| &s.settle_calls,
        ),
        (
            "logferry_sink_groups_created_total",
            "Log groups created.",
            |s| &s.groups_created,
        ),
        (
            "logferry_sink_streams_created_total",
            "Log streams created.",
            |s| &s.streams_created,
        ),
        (
            "logferry_sink_requests_in_flight",
            "PutLogEvents requests in flight.",
            |s| &s.in_flight,
        ),
        (
            "logferry_sink_held_bytes",
            "Bytes the sink holds (messages + 26 each) in requests being built, ready and in flight; sources wait past max_held_bytes.",
            |s| &s.held_bytes,
        ),
        (
            "logferry_sink_held_bytes_peak",
            "The most bytes the sink has held since start.",
            |s| &s.held_bytes_peak,
        ),
    ];
    for (name, help, get) in counters {
        let kind = if name.ends_with("_total") {
            Kind::Counter
        } else {
            Kind::Gauge
        };
        let family = x.family(name, kind, help);
        for (sink, s) in sinks {
            family.sample(
                &format!("sink=\"{}\"", label_value(sink)),
                get(s).load(Ordering::Relaxed),
            );
        }
    }
    for spec in [
        DEAD_LETTERED,
        ENTITY_REJECTED,
        SINK_DROPPED,
        IN_FLIGHT_SETTLED,
        OLDEST_UNSENT,
        PUT_LATENCY,
        AUTH_FAILING,
        CALLS_THROTTLED,
        REQUEST_RATE,
        BUDGET_WAIT,
        EVENTS_PER_REQUEST,
    ] {
        x.declare(spec);
    }
    for (sink, s) in sinks {
        let l = format!("sink=\"{}\"", label_value(sink));
        by_label(
            x.declare(DEAD_LETTERED),
            &l,
            "reason",
            &[
                ("too_old", &s.dead_too_old),
                ("too_new", &s.dead_too_new),
                ("expired", &s.dead_expired),
                ("invalid_parameter", &s.dead_invalid),
            ],
        );
        if let Ok(by_type) = s.entity_rejected.lock() {
            for (error_type, n) in by_type.iter() {
                x.declare(ENTITY_REJECTED)
                    .sample(&format!("{l},reason=\"{}\"", label_value(error_type)), *n);
            }
        }
        x.declare(SINK_DROPPED).sample(
            &format!("{l},reason=\"empty_message\""),
            s.dropped_empty.load(Ordering::Relaxed),
        );
        by_label(
            x.declare(IN_FLIGHT_SETTLED),
            &l,
            "outcome",
            &[
                ("settled", &s.settle_settled),
                ("resent", &s.settle_resent),
                ("unknown", &s.settle_unknown),
            ],
        );
        let oldest_ms = s.oldest_held_age_ms.load(Ordering::Relaxed);
        x.declare(OLDEST_UNSENT)
            .sample(&l, seconds(i64::try_from(oldest_ms).unwrap_or(i64::MAX)));
        x.declare(AUTH_FAILING)
            .sample(&l, u64::from(s.auth.is_failing()));
        let sum_us = s.latency_sum_us.load(Ordering::Relaxed);
        histogram(
            x.declare(PUT_LATENCY),
            &l,
            &LATENCY_BUCKETS,
            &s.latency_buckets,
            s.latency_count.load(Ordering::Relaxed),
            format!("{:.6}", sum_us as f64 / 1e6),
        );
        governors(x, &l, s);
    }
}

/// The pacing against the account's quotas: each API's pace and throttles, time spent waiting
/// for budget, and how full the requests that went out were.
fn governors(x: &mut Exposition, l: &str, s: &SinkStats) {
    for (api, throttled, rate) in [
        (
            "PutLogEvents",
            &s.throttled_put_log_events,
            &s.rate_put_log_events_milli,
        ),
        (
            "CreateLogStream",
            &s.throttled_create_log_stream,
            &s.rate_create_log_stream_milli,
        ),
        (
            "CreateLogGroup",
            &s.throttled_create_log_group,
            &s.rate_create_log_group_milli,
        ),
    ] {
        let al = format!("{l},api=\"{api}\"");
        x.declare(CALLS_THROTTLED)
            .sample(&al, throttled.load(Ordering::Relaxed));
        x.declare(REQUEST_RATE).sample(
            &al,
            format!("{:.3}", rate.load(Ordering::Relaxed) as f64 / 1000.0),
        );
    }
    x.declare(BUDGET_WAIT).sample(
        l,
        format!(
            "{:.3}",
            s.budget_wait_us.load(Ordering::Relaxed) as f64 / 1e6
        ),
    );
    histogram(
        x.declare(EVENTS_PER_REQUEST),
        l,
        &EVENTS_PER_REQUEST_BUCKETS,
        &s.events_per_request_buckets,
        s.events_per_request_count.load(Ordering::Relaxed),
        s.events_per_request_sum.load(Ordering::Relaxed),
    );
}

const CALLS_THROTTLED: Spec = (
    "logferry_sink_calls_throttled_total",
    Kind::Counter,
    "Calls answered ThrottlingException, by API (the account's quota was spent).",
);
const REQUEST_RATE: Spec = (
    "logferry_sink_request_rate",
    Kind::Gauge,
    "Calls per second the sink's governor allows now, by API (AIMD against the account's quota).",
);
const BUDGET_WAIT: Spec = (
    "logferry_sink_budget_wait_seconds_total",
    Kind::Counter,
    "Time requests ready to go waited for the governor's budget.",
);
const EVENTS_PER_REQUEST: Spec = (
    "logferry_sink_events_per_request",
    Kind::Histogram,
    "Events in each PutLogEvents request CloudWatch accepted.",
);

const DEAD_LETTERED: Spec = (
    "logferry_sink_events_dead_lettered_total",
    Kind::Counter,
    "Events CloudWatch will never accept, written to the dead-letter file, by reason.",
);
const ENTITY_REJECTED: Spec = (
    "logferry_sink_entity_rejected_total",
    Kind::Counter,
    "PutLogEvents requests whose entity CloudWatch refused (rejectedEntityInfo; the events were accepted), by CloudWatch's error type.",
);
const SINK_DROPPED: Spec = (
    "logferry_sink_events_dropped_total",
    Kind::Counter,
    "Events dropped by explicit policy, by reason.",
);
const IN_FLIGHT_SETTLED: Spec = (
    "logferry_sink_in_flight_at_start_total",
    Kind::Counter,
    "Requests in flight at the last stop, by what the start made of them: settled (proven delivered by GetLogEvents, not resent), resent (not found whole), unknown (lookup denied, failed or timed out; resent).",
);
const OLDEST_UNSENT: Spec = (
    "logferry_sink_oldest_unsent_seconds",
    Kind::Gauge,
    "Age of the oldest event a sink holds (building or in flight).",
);
const AUTH_FAILING: Spec = (
    "logferry_sink_auth_failing",
    Kind::Gauge,
    "1 while CloudWatch refuses the sink's credentials (from the first refused call to the next accepted one).",
);
const PUT_LATENCY: Spec = (
    "logferry_sink_put_latency_seconds",
    Kind::Histogram,
    "PutLogEvents latency.",
);
const SPOOL_BYTES: Spec = (
    "logferry_spool_bytes",
    Kind::Gauge,
    "Bytes of a source's spool on disk.",
);
const SPOOL_PENDING: Spec = (
    "logferry_spool_records_pending",
    Kind::Gauge,
    "Spooled records not yet delivered.",
);
const SPOOL_OLDEST: Spec = (
    "logferry_spool_oldest_pending_seconds",
    Kind::Gauge,
    "Age of the oldest undelivered spooled record.",
);
