//! Metrics and health over HTTP: `/metrics` (Prometheus text format), `/health`, `/ready`.
//!
//! The counters are the plain atomics the pipeline already keeps for its books
//! ([`SinkStats`], [`SourceStats`], the spool's own statistics); this module only renders them.
//! Writing the text format by hand (a few dozen lines) avoids a metrics registry in the hot
//! path and keeps label values under our control: they are config names, never event data or
//! credentials.
//!
//! Health:
//! - `/ready` answers 503 while any sink holds an event older than `stuck_after`, whatever the
//!   cause (CloudWatch unreachable, throttling, a stuck request), with the reason.
//! - `/health` (liveness) answers 503 only when that happens *while CloudWatch answers*: the
//!   agent is stuck although the service is there, which a restart may cure. When CloudWatch is
//!   unreachable a restart cannot help, so liveness stays green and readiness says why.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use logferry_spool::Spool;
use tokio_util::sync::CancellationToken;

use crate::event::now_ms;
use crate::sink::stats::{SinkStats, LATENCY_BUCKETS};

/// Counters of one source.
#[derive(Debug, Default)]
pub struct SourceStats {
    /// Events read.
    pub events: AtomicU64,
    /// Message bytes read.
    pub bytes: AtomicU64,
    /// Events truncated to `max_frame_bytes`.
    pub truncated: AtomicU64,
    /// Datagrams dropped because the spool was full.
    pub dropped_spool_full: AtomicU64,
    /// Records dropped by the spool's drop_oldest policy.
    pub dropped_spool_oldest: AtomicU64,
    /// Timestamp (Unix ms) of the newest event read; for the journal, how far behind it is.
    pub last_event_ms: AtomicI64,
    /// File sources: files open now.
    pub files_open: AtomicU64,
    /// File sources: truncations (copytruncate) seen.
    pub files_truncated: AtomicU64,
    /// File sources: files in the checkpoint that were gone at start (unread lines lost).
    pub files_missing: AtomicU64,
    /// Kubernetes sources: lines that were neither CRI nor Docker json-file (sent as they are).
    pub unparsed: AtomicU64,
    /// Datagrams dropped by `max_events_per_second` / `max_bytes_per_second`.
    pub dropped_rate_limited: AtomicU64,
    /// Time stream connections spent paused by the rate limit, in microseconds.
    pub throttled_us: AtomicU64,
    /// Stream connections open now.
    pub connections_open: AtomicU64,
    /// Stream connections accepted.
    pub connections_accepted: AtomicU64,
    /// Times the listener stopped accepting because `max_connections` were open.
    pub connection_limit_reached: AtomicU64,
    /// Connections closed by `idle_timeout`.
    pub idle_closed: AtomicU64,
    /// Connections or datagrams from peers outside `allowed_peers`.
    pub rejected_peer: AtomicU64,
    /// TLS handshakes that failed (plain text on a TLS port, bad or missing client certificate).
    pub rejected_tls_handshake: AtomicU64,
    /// TLS handshakes not finished within `handshake_timeout`.
    pub rejected_tls_timeout: AtomicU64,
    /// TLS certificate reloads that succeeded.
    pub tls_reloads: AtomicU64,
    /// TLS certificate reloads that failed (the previous certificate stays).
    pub tls_reload_failures: AtomicU64,
    /// Kubernetes sources with `kubernetes_api`: the pod metadata client, once started.
    pub pod_metadata: std::sync::OnceLock<logferry_kubernetes::PodMetadata>,
    /// Kubernetes sources: new pods' files whose lines were sent without labels because the
    /// API had not answered within `kubernetes_api.wait`.
    pub pod_wait_expired: AtomicU64,
}

/// `source="NAME",type="KIND"`: the labels of every per-source sample.
fn source_labels(e: &SourceEntry) -> String {
    format!("source=\"{}\",type=\"{}\"", label(&e.name), e.kind)
}

/// Picks one counter out of a source's stats.
type SourceCounter = fn(&SourceStats) -> &AtomicU64;

/// A metric with one sample per source of `entries`, read from the counter `get` picks.
fn per_source(
    t: &mut Text,
    entries: &[&SourceEntry],
    (name, kind, help): (&str, &str, &str),
    get: SourceCounter,
) {
    t.header(name, kind, help);
    for e in entries {
        t.line(
            name,
            &source_labels(e),
            get(&e.stats).load(Ordering::Relaxed),
        );
    }
}

/// One source as the registry sees it.
pub struct SourceEntry {
    /// Config name.
    pub name: String,
    /// `syslog`, `stdin`, `journald`, `file`, `kubernetes_logs`.
    pub kind: &'static str,
    /// Its counters.
    pub stats: Arc<SourceStats>,
    /// Its spool, if any.
    pub spool: Option<Arc<Spool>>,
}

/// Everything `/metrics` and the health endpoints read.
pub struct Registry {
    /// Sources.
    pub sources: Vec<SourceEntry>,
    /// Sinks by name.
    pub sinks: Vec<(String, Arc<SinkStats>)>,
    /// An event held longer than this makes the pipeline unready (and, with CloudWatch
    /// answering, unhealthy).
    pub stuck_after: Duration,
}

fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Text(String);

impl Text {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {v}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {v}");
        }
    }
}

impl Registry {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut t = Text(String::with_capacity(8192));
        let now = now_ms();
        t.header(
            "logferry_build_info",
            "gauge",
            "Version of the running logferry.",
        );
        t.line(
            "logferry_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
            1,
        );
        let src = source_labels;
        let all: Vec<&SourceEntry> = self.sources.iter().collect();
        let source_counters: [(&str, &str, SourceCounter); 3] = [
            (
                "logferry_source_events_total",
                "Events read by a source.",
                |s| &s.events,
            ),
            (
                "logferry_source_bytes_total",
                "Message bytes read by a source.",
                |s| &s.bytes,
            ),
            (
                "logferry_source_truncated_total",
                "Events truncated to max_frame_bytes (kept, flagged).",
                |s| &s.truncated,
            ),
        ];
        for (name, help, get) in source_counters {
            per_source(&mut t, &all, (name, "counter", help), get);
        }
        t.header(
            "logferry_source_dropped_total",
            "counter",
            "Events a source dropped, by reason (only by configured policy).",
        );
        for e in &self.sources {
            for (reason, c) in [
                ("spool_full", &e.stats.dropped_spool_full),
                ("spool_drop_oldest", &e.stats.dropped_spool_oldest),
                ("rate_limited", &e.stats.dropped_rate_limited),
            ] {
                t.line(
                    "logferry_source_dropped_total",
                    &format!("{},reason=\"{reason}\"", src(e)),
                    c.load(Ordering::Relaxed),
                );
            }
        }
        self.render_network(&mut t);
        t.header(
            "logferry_source_lag_seconds",
            "gauge",
            "Age of the newest event a source has read (journal: how far behind its tail).",
        );
        for e in &self.sources {
            let last = e.stats.last_event_ms.load(Ordering::Relaxed);
            if last > 0 {
                t.line(
                    "logferry_source_lag_seconds",
                    &src(e),
                    format!("{:.3}", (now - last).max(0) as f64 / 1000.0),
                );
            }
        }
        let files: Vec<&SourceEntry> = self
            .sources
            .iter()
            .filter(|e| matches!(e.kind, "file" | "kubernetes_logs"))
            .collect();
        if !files.is_empty() {
            per_source(
                &mut t,
                &files,
                (
                    "logferry_file_open_files",
                    "gauge",
                    "Files a file source has open.",
                ),
                |s| &s.files_open,
            );
            let file_counters: [(&str, &str, SourceCounter); 3] = [
                (
                    "logferry_file_truncations_total",
                    "Files found truncated (copytruncate) and read again from their start.",
                    |s| &s.files_truncated,
                ),
                (
                    "logferry_file_missing_total",
                    "Files with a saved offset that were gone at start (unread lines lost).",
                    |s| &s.files_missing,
                ),
                (
                    "logferry_file_unparsed_lines_total",
                    "Container log lines in neither CRI nor Docker format (sent as they are).",
                    |s| &s.unparsed,
                ),
            ];
            for (name, help, get) in file_counters {
                per_source(&mut t, &files, (name, "counter", help), get);
            }
            self.render_kubernetes_api(&mut t, &files);
        }
        t.header(
            "logferry_spool_bytes",
            "gauge",
            "Bytes of a source's spool on disk.",
        );
        t.header(
            "logferry_spool_records_pending",
            "gauge",
            "Spooled records not yet delivered.",
        );
        t.header(
            "logferry_spool_oldest_pending_seconds",
            "gauge",
            "Age of the oldest undelivered spooled record.",
        );
        for e in &self.sources {
            if let Some(spool) = &e.spool {
                let st = spool.stats();
                t.line("logferry_spool_bytes", &src(e), st.bytes_on_disk);
                t.line(
                    "logferry_spool_records_pending",
                    &src(e),
                    st.records_pending,
                );
                let age = st
                    .oldest_pending_appended_ms
                    .map(|ms| (now - ms as i64).max(0) as f64 / 1000.0)
                    .unwrap_or(0.0);
                t.line(
                    "logferry_spool_oldest_pending_seconds",
                    &src(e),
                    format!("{age:.3}"),
                );
            }
        }

        type SinkCounter = fn(&SinkStats) -> &AtomicU64;
        let sink_counters: [(&str, &str, SinkCounter); 12] = [
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
                "Requests sent before they were full because all streams' requests being built held 16 MiB together.",
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
        ];
        for (name, help, get) in sink_counters {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            t.header(name, kind, help);
            for (sink, s) in &self.sinks {
                t.line(
                    name,
                    &format!("sink=\"{}\"", label(sink)),
                    get(s).load(Ordering::Relaxed),
                );
            }
        }
        t.header(
            "logferry_sink_events_dead_lettered_total",
            "counter",
            "Events CloudWatch will never accept, written to the dead-letter file, by reason.",
        );
        t.header(
            "logferry_sink_events_dropped_total",
            "counter",
            "Events dropped by explicit policy, by reason.",
        );
        t.header(
            "logferry_sink_oldest_unsent_seconds",
            "gauge",
            "Age of the oldest event a sink holds (building or in flight).",
        );
        t.header(
            "logferry_sink_put_latency_seconds",
            "histogram",
            "PutLogEvents latency.",
        );
        for (sink, s) in &self.sinks {
            let l = format!("sink=\"{}\"", label(sink));
            for (reason, c) in [
                ("too_old", &s.dead_too_old),
                ("too_new", &s.dead_too_new),
                ("expired", &s.dead_expired),
                ("invalid_parameter", &s.dead_invalid),
            ] {
                t.line(
                    "logferry_sink_events_dead_lettered_total",
                    &format!("{l},reason=\"{reason}\""),
                    c.load(Ordering::Relaxed),
                );
            }
            t.line(
                "logferry_sink_events_dropped_total",
                &format!("{l},reason=\"empty_message\""),
                s.dropped_empty.load(Ordering::Relaxed),
            );
            t.line(
                "logferry_sink_oldest_unsent_seconds",
                &l,
                format!(
                    "{:.3}",
                    s.oldest_held_age_ms.load(Ordering::Relaxed) as f64 / 1000.0
                ),
            );
            for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
                t.line(
                    "logferry_sink_put_latency_seconds_bucket",
                    &format!("{l},le=\"{bound}\""),
                    s.latency_buckets[i].load(Ordering::Relaxed),
                );
            }
            let count = s.latency_count.load(Ordering::Relaxed);
            t.line(
                "logferry_sink_put_latency_seconds_bucket",
                &format!("{l},le=\"+Inf\""),
                count,
            );
            t.line(
                "logferry_sink_put_latency_seconds_sum",
                &l,
                format!(
                    "{:.6}",
                    s.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6
                ),
            );
            t.line("logferry_sink_put_latency_seconds_count", &l, count);
        }
        t.0
    }

    /// The Kubernetes API client of `kubernetes_logs` sources that use one.
    fn render_kubernetes_api(&self, t: &mut Text, files: &[&SourceEntry]) {
        let src = source_labels;
        let with_api: Vec<(&SourceEntry, &logferry_kubernetes::PodMetadata)> = files
            .iter()
            .filter_map(|e| e.stats.pod_metadata.get().map(|m| (*e, m)))
            .collect();
        if with_api.is_empty() {
            return;
        }
        t.header(
            "logferry_kubernetes_api_up",
            "gauge",
            "1 when the last pod lookup got an answer from the Kubernetes API.",
        );
        for (e, m) in &with_api {
            t.line(
                "logferry_kubernetes_api_up",
                &src(e),
                u8::from(m.is_healthy()),
            );
        }
        t.header(
            "logferry_kubernetes_api_requests_total",
            "counter",
            "Pod lookups sent to the Kubernetes API, by outcome (found, not_found, failed).",
        );
        for (e, m) in &with_api {
            let st = m.stats();
            for (outcome, c) in [
                ("found", &st.found),
                ("not_found", &st.not_found),
                ("failed", &st.failed),
            ] {
                t.line(
                    "logferry_kubernetes_api_requests_total",
                    &format!("{},outcome=\"{outcome}\"", src(e)),
                    c.load(Ordering::Relaxed),
                );
            }
        }
        let entries: Vec<&SourceEntry> = with_api.iter().map(|(e, _)| *e).collect();
        per_source(
            t,
            &entries,
            (
                "logferry_kubernetes_pod_wait_expired_total",
                "counter",
                "New pods' log files sent without labels because the API had not answered within kubernetes_api.wait.",
            ),
            |s| &s.pod_wait_expired,
        );
    }

    /// The network listeners' guards (syslog sources only: the others have no peers).
    fn render_network(&self, t: &mut Text) {
        let syslog: Vec<&SourceEntry> =
            self.sources.iter().filter(|e| e.kind == "syslog").collect();
        let src = source_labels;
        let simple: [(&str, &str, &str, SourceCounter); 6] = [
            (
                "logferry_source_connections",
                "gauge",
                "Stream connections open now.",
                |s| &s.connections_open,
            ),
            (
                "logferry_source_connections_total",
                "counter",
                "Stream connections accepted.",
                |s| &s.connections_accepted,
            ),
            (
                "logferry_source_connection_limit_reached_total",
                "counter",
                "Times a listener stopped accepting because max_connections were open (the kernel backlog then holds new clients).",
                |s| &s.connection_limit_reached,
            ),
            (
                "logferry_source_idle_closed_total",
                "counter",
                "Stream connections closed after idle_timeout without a complete frame.",
                |s| &s.idle_closed,
            ),
            (
                "logferry_source_tls_reload_failures_total",
                "counter",
                "Changed TLS files that did not load (the previous certificate stays in use).",
                |s| &s.tls_reload_failures,
            ),
            (
                "logferry_source_tls_reloads_total",
                "counter",
                "TLS certificate reloads (new connections use the new certificate).",
                |s| &s.tls_reloads,
            ),
        ];
        for (name, kind, help, get) in simple {
            per_source(t, &syslog, (name, kind, help), get);
        }
        t.header(
            "logferry_source_rejected_total",
            "counter",
            "Connections (TCP) or datagrams (UDP) refused before any event was read, by reason.",
        );
        for e in &syslog {
            for (reason, c) in [
                ("peer_not_allowed", &e.stats.rejected_peer),
                ("tls_handshake_failed", &e.stats.rejected_tls_handshake),
                ("tls_handshake_timeout", &e.stats.rejected_tls_timeout),
            ] {
                t.line(
                    "logferry_source_rejected_total",
                    &format!("{},reason=\"{reason}\"", src(e)),
                    c.load(Ordering::Relaxed),
                );
            }
        }
        t.header(
            "logferry_source_throttled_seconds_total",
            "counter",
            "Time stream connections were paused by max_events_per_second / max_bytes_per_second.",
        );
        for e in &syslog {
            t.line(
                "logferry_source_throttled_seconds_total",
                &src(e),
                format!(
                    "{:.3}",
                    e.stats.throttled_us.load(Ordering::Relaxed) as f64 / 1e6
                ),
            );
        }
    }

    /// Readiness: `Err(reason)` when some sink holds an event older than `stuck_after`.
    pub fn ready(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        for (name, s) in &self.sinks {
            let age = Duration::from_millis(s.oldest_held_age_ms.load(Ordering::Relaxed));
            if age > self.stuck_after {
                let last_error = s.last_error.lock().map(|e| e.clone()).unwrap_or_default();
                problems.push(format!(
                    "sink {name}: oldest unsent event is {} s old (last error: {})",
                    age.as_secs(),
                    if last_error.is_empty() {
                        "none"
                    } else {
                        &last_error
                    }
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Liveness: `Err(reason)` when a sink is stuck although CloudWatch answers.
    pub fn healthy(&self) -> Result<(), String> {
        let now = now_ms();
        let mut problems = Vec::new();
        for (name, s) in &self.sinks {
            let age = Duration::from_millis(s.oldest_held_age_ms.load(Ordering::Relaxed));
            let answered = s.last_answer_ms.load(Ordering::Relaxed);
            let reachable = answered > 0
                && Duration::from_millis((now - answered).max(0) as u64) <= self.stuck_after;
            if age > self.stuck_after && reachable {
                let last_error = s.last_error.lock().map(|e| e.clone()).unwrap_or_default();
                problems.push(format!(
                    "sink {name}: CloudWatch answers but the oldest unsent event is {} s old (last error: {last_error})",
                    age.as_secs()
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn route(registry: &Registry, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            registry.render(),
        ),
        "/health" => match registry.healthy() {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ok\n".into()),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("unhealthy: {why}\n"),
            ),
        },
        "/ready" => match registry.ready() {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "try /metrics, /health or /ready\n".into(),
        ),
    }
}

/// Binds the endpoint (a startup error if the address is taken).
pub async fn bind(addr: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let a: SocketAddr = addr
        .parse()
        .map_err(|e| anyhow::anyhow!("--metrics-address `{addr}`: {e}"))?;
    tokio::net::TcpListener::bind(a)
        .await
        .map_err(|e| anyhow::anyhow!("metrics endpoint {addr}: {e}"))
}

/// Serves until `stop` is cancelled, reading whichever registry `slot` holds at each request.
pub async fn serve(
    listener: tokio::net::TcpListener,
    slot: Arc<std::sync::Mutex<Arc<Registry>>>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("metrics endpoint accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let slot = slot.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let registry = slot.lock().map(|g| g.clone()).ok();
                let resp = match registry {
                    Some(r) => route(&r, &req),
                    None => respond(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        "registry unavailable\n".into(),
                    ),
                };
                async move { Ok::<_, Infallible>(resp) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
