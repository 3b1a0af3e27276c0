//! Metrics and health over HTTP: `/metrics` (Prometheus text format), `/health`, `/ready`.
//!
//! The counters are the plain atomics the pipeline already keeps for its books
//! ([`SinkStats`], [`SourceStats`], the spool's own statistics); this module only renders them
//! (`render.rs`, one function per group of families) through a small encoder that keeps each
//! family's samples together (`exposition.rs`, which says why it is not `prometheus-client`).
//! No metrics registry in the hot path, and label values under our control: they are config
//! names, never event data or credentials.
//!
//! Health:
//! - `/ready` answers 503 while any sink holds an event older than `stuck_after`, whatever the
//!   cause (CloudWatch unreachable, throttling, a stuck request), with the reason.
//! - `/health` (liveness) answers 503 only when that happens *while CloudWatch answers*: the
//!   agent is stuck although the service is there, which a restart may cure. When CloudWatch is
//!   unreachable a restart cannot help, so liveness stays green and readiness says why.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use logferry_spool::Spool;
use tokio_util::sync::CancellationToken;

use crate::event::now_ms;
use crate::sink::stats::SinkStats;
use crate::source::stats::{SourceKind, SourceStats};

mod exposition;
mod render;

/// One source as the registry sees it.
pub struct SourceEntry {
    /// Config name.
    pub name: String,
    /// Its type.
    pub kind: SourceKind,
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

impl Registry {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        render::render(self)
    }

    /// Readiness: `Err(reason)` when some sink holds an event older than `stuck_after`, unless
    /// it is only pacing itself: it waited for its governor's budget and CloudWatch accepted a
    /// request within `stuck_after`. A fleet at its share of the account's quota holds events
    /// longer by design; that is not a fault a restart or another pod could cure, and a probe
    /// that flapped with every backlog would say nothing.
    pub fn ready(&self) -> Result<(), String> {
        let now = now_ms();
        let recent =
            |ms: i64| ms > 0 && Duration::from_millis((now - ms).max(0) as u64) <= self.stuck_after;
        let mut problems = Vec::new();
        for (name, s) in &self.sinks {
            let age = Duration::from_millis(s.oldest_held_age_ms.load(Ordering::Relaxed));
            let pacing = recent(s.last_budget_wait_ms.load(Ordering::Relaxed))
                && recent(s.last_success_ms.load(Ordering::Relaxed));
            if age > self.stuck_after && !pacing {
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

/// A probe's answer: 200 and `yes`, or 503 and `no: why`.
fn probe(state: Result<(), String>, yes: &str, no: &str) -> Response<Full<Bytes>> {
    match state {
        Ok(()) => respond(StatusCode::OK, "text/plain", format!("{yes}\n")),
        Err(why) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{no}: {why}\n"),
        ),
    }
}

fn route(registry: &Registry, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            registry.render(),
        ),
        "/health" => probe(registry.healthy(), "ok", "unhealthy"),
        "/ready" => probe(registry.ready(), "ready", "not ready"),
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
                    tracing::warn!(error = %e, "metrics endpoint accept failed");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(stats: &Arc<SinkStats>) -> Registry {
        Registry {
            sources: Vec::new(),
            sinks: vec![("cw".to_string(), stats.clone())],
            stuck_after: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_sink_pacing_itself_stays_ready_a_stuck_one_does_not() {
        let stats = Arc::new(SinkStats::default());
        let r = registry(&stats);
        let now = now_ms();
        // Events held past stuck_after, nothing accepted lately: not ready.
        stats.oldest_held_age_ms.store(120_000, Ordering::Relaxed);
        stats.set_error("PutLogEvents throttled: ThrottlingException: Rate exceeded");
        let why = r.ready().expect_err("stuck");
        assert!(why.contains("oldest unsent event is 120 s old"), "{why}");
        // Waiting for the governor's budget while requests are accepted: pacing, ready.
        stats
            .last_budget_wait_ms
            .store(now - 1_000, Ordering::Relaxed);
        stats.last_success_ms.store(now - 2_000, Ordering::Relaxed);
        assert_eq!(r.ready(), Ok(()));
        // Waiting for budget, but nothing accepted within stuck_after: not ready.
        stats.last_success_ms.store(now - 90_000, Ordering::Relaxed);
        assert!(r.ready().is_err());
        // Accepted lately, but not waiting for budget (something else holds events): not ready.
        stats.last_success_ms.store(now - 2_000, Ordering::Relaxed);
        stats
            .last_budget_wait_ms
            .store(now - 90_000, Ordering::Relaxed);
        assert!(r.ready().is_err());
    }
}
