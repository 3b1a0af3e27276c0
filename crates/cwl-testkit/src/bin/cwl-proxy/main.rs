//! `cwl-proxy`: a validating, fault-injecting HTTP proxy in front of `moto_server`.
//!
//! moto is a good correctness target (it stores events and gives them back) but it does not
//! enforce most CloudWatch Logs limits and cannot misbehave on demand. This proxy forwards
//! every request unchanged (method, path, headers including the SigV4 `Authorization`,
//! body) and relays the response, while it
//!
//! * checks every PutLogEvents (and CreateLogGroup/CreateLogStream/PutRetentionPolicy names
//!   and values) against the real limits, keeping counters and a list of violations;
//! * records one entry per PutLogEvents (group, stream, events, bytes, first/last
//!   timestamp, entity, fault, upstream and client-visible status);
//! * injects faults chosen at run time through an admin API under `/__proxy/` on the same
//!   port: throttling, 503, 500, connection reset before forwarding, reset *after*
//!   forwarding (the events are stored but the client never hears so: the real-life source
//!   of duplicates), outages, latency, operations denied (`denied_operations`:
//!   AccessDeniedException, as an IAM policy without them answers), and any AWS error code
//!   chosen by name (expired or refused credentials: `ExpiredTokenException`,
//!   `AccessDeniedException`, `UnrecognizedClientException`), for the next N requests or until
//!   cleared, optionally only for requests signed with one access key id (so a renewed key
//!   gets through). `--seed` makes the fault sequence reproducible;
//! * enforces account-wide quotas per operation (`/__proxy/quota`): one token bucket per API
//!   shared by every client, as CloudWatch's quotas are per account and region, so several
//!   shippers behind one proxy compete for the same calls per second and the excess is
//!   answered ThrottlingException (counted per operation, never forwarded).
//!
//! The first stdout line is `listening http://ADDR`. See the crate README for the API.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use cwl_testkit::limits::{self, Violation};
use cwl_testkit::server::{
    accept_until_shutdown, announce, aws_error, default_error_message, runtime, signing_key_id,
    target_operation, Bucket, NamesReq, PutLogEventsReq, QuotaSpec, Resp, Rng,
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::net::TcpListener;

mod faults;
use faults::{FaultKind, Faults, OutageMode};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Validating, fault-injecting proxy for CloudWatch Logs (moto_server)")]
struct Args {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Upstream base URL, e.g. http://127.0.0.1:5000 (plain HTTP).
    #[arg(long)]
    upstream: String,
    /// Seed of the fault RNG (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Largest request body read, in bytes (larger: connection closed).
    #[arg(long, default_value_t = 64 << 20)]
    max_body: usize,
    /// Most PutLogEvents records / violations kept in memory (older ones are still counted).
    #[arg(long, default_value_t = 200_000)]
    max_records: usize,
}

#[derive(Debug, Default)]
struct Stats {
    requests: u64,
    by_operation: BTreeMap<String, u64>,
    faults: BTreeMap<&'static str, u64>,
    put_requests: u64,
    put_events_seen: u64,
    put_events_forwarded: u64,
    put_events_ingested: u64,
    put_events_acknowledged: u64,
    upstream_errors: u64,
    /// Calls refused by an account-wide quota, per operation.
    quota_throttled: BTreeMap<String, u64>,
    violations: u64,
    violations_by_rule: BTreeMap<&'static str, u64>,
    violation_list: Vec<Value>,
    puts: Vec<Value>,
    records_dropped: u64,
    seq: u64,
    /// PutLogEvents being handled now, per `group/stream`.
    puts_in_flight: BTreeMap<String, u64>,
    /// The most PutLogEvents of one `group/stream` handled at once.
    put_concurrency_max: BTreeMap<String, u64>,
    /// The most streams with a PutLogEvents being handled at once.
    put_streams_in_flight_max: u64,
}

/// Counts one PutLogEvents of a stream as being handled until dropped (also when the client
/// goes away mid-request).
struct PutInFlight {
    sh: Arc<Shared>,
    key: String,
}

impl PutInFlight {
    fn enter(sh: &Arc<Shared>, key: String) -> Self {
        let mut guard = sh.lock();
        let s = &mut guard.stats;
        let now = s.puts_in_flight.entry(key.clone()).or_default();
        *now += 1;
        let now = *now;
        let max = s.put_concurrency_max.entry(key.clone()).or_default();
        *max = (*max).max(now);
        let streams = s.puts_in_flight.values().filter(|n| **n > 0).count() as u64;
        s.put_streams_in_flight_max = s.put_streams_in_flight_max.max(streams);
        drop(guard);
        PutInFlight {
            sh: sh.clone(),
            key,
        }
    }
}

impl Drop for PutInFlight {
    fn drop(&mut self) {
        let mut guard = self.sh.lock();
        if let Some(n) = guard.stats.puts_in_flight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

struct Inner {
    faults: Faults,
    quotas: BTreeMap<String, Bucket>,
    script: VecDeque<FaultKind>,
    /// How many more requests get `faults.error_code` (None: no limit).
    errors_left: Option<u64>,
    rng: Rng,
    stats: Stats,
}

struct Shared {
    args: Args,
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    inner: Mutex<Inner>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The service error that makes hyper drop the connection without answering.
#[derive(Debug)]
struct DropConnection(&'static str);

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "connection dropped by proxy: {}", self.0)
    }
}

impl std::error::Error for DropConnection {}

/// Makes the next close of `fd` send RST instead of FIN.
fn arm_reset(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the socket of the connection whose request is being served, so it is
    // open; setsockopt only reads `linger` for the given length.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// What the proxy learned from a PutLogEvents body.
struct PutInfo {
    group: String,
    stream: String,
    entity: Option<Value>,
    summary: limits::BatchSummary,
}

fn inspect(op: &str, body: &[u8]) -> (Option<PutInfo>, Vec<Violation>) {
    match op {
        "PutLogEvents" => match serde_json::from_slice::<PutLogEventsReq>(body) {
            Ok(req) => {
                let (summary, v) = req.check();
                let info = PutInfo {
                    group: req.group.into_owned(),
                    stream: req.stream.into_owned(),
                    entity: req.entity,
                    summary,
                };
                (Some(info), v)
            }
            Err(e) => (
                None,
                vec![Violation {
                    rule: limits::Rule::Malformed,
                    detail: format!("PutLogEvents body: {e}"),
                }],
            ),
        },
        "CreateLogGroup" | "CreateLogStream" | "PutRetentionPolicy" => {
            let Ok(req) = serde_json::from_slice::<NamesReq>(body) else {
                return (
                    None,
                    vec![Violation {
                        rule: limits::Rule::Malformed,
                        detail: format!("{op} body is not valid JSON"),
                    }],
                );
            };
            let mut v = Vec::new();
            v.extend(limits::check_group_name(req.group.as_deref().unwrap_or("")));
            if op == "CreateLogStream" {
                v.extend(limits::check_stream_name(
                    req.stream.as_deref().unwrap_or(""),
                ));
            }
            if op == "PutRetentionPolicy" {
                v.extend(limits::check_retention(req.retention.unwrap_or(0)));
            }
            (None, v)
        }
        _ => (None, Vec::new()),
    }
}

enum Action {
    Forward {
        latency_ms: u64,
        reset_after: bool,
    },
    Respond(FaultKind),
    /// Answer 400 with this AWS error code and message.
    AwsError(String, String),
    Reset,
    Outage(OutageMode, u64),
}

/// The chosen AWS error for this request, if `error_code` applies to it (and counts it).
fn aws_error_fault(inner: &mut Inner, key_id: Option<&str>, body: &[u8]) -> Option<Action> {
    let f = &inner.faults;
    let code = f.error_code.clone()?;
    if f.error_access_key_id
        .as_deref()
        .is_some_and(|k| Some(k) != key_id)
    {
        return None;
    }
    if f.error_body_contains.as_deref().is_some_and(|text| {
        !body
            .windows(text.len().max(1))
            .any(|w| w == text.as_bytes())
    }) {
        return None;
    }
    match &mut inner.errors_left {
        Some(0) => return None,
        Some(n) => *n -= 1,
        None => {}
    }
    let message = f
        .error_message
        .clone()
        .unwrap_or_else(|| default_error_message(&code).to_string());
    Some(Action::AwsError(code, message))
}

fn decide(
    inner: &mut Inner,
    op: &str,
    key_id: Option<&str>,
    body: &[u8],
) -> (Action, Option<&'static str>) {
    let f = &inner.faults;
    if f.outage {
        return (Action::Outage(f.outage_mode, f.hang_ms), Some("outage"));
    }
    if let Some(bucket) = inner.quotas.get_mut(op) {
        if !bucket.take(Instant::now()) {
            *inner
                .stats
                .quota_throttled
                .entry(op.to_string())
                .or_default() += 1;
            return (Action::Respond(FaultKind::Throttle), Some("quota"));
        }
    }
    let f = &inner.faults;
    if f.denied_operations.iter().any(|d| d == op) {
        return (
            Action::Respond(FaultKind::AccessDenied),
            Some(FaultKind::AccessDenied.as_str()),
        );
    }
    if !f.applies_to(op) {
        return (
            Action::Forward {
                latency_ms: 0,
                reset_after: false,
            },
            None,
        );
    }
    let latency_ms = match f.latency_jitter_ms {
        0 => f.latency_ms,
        jitter => f.latency_ms + inner.rng.next_u64() % (jitter + 1),
    };
    if let Some(action) = aws_error_fault(inner, key_id, body) {
        return (action, Some("aws_error"));
    }
    let kind = match inner.script.pop_front() {
        Some(k) => k,
        None => {
            let f = &inner.faults;
            let u = inner.rng.percent();
            let table = [
                (f.throttle_pct, FaultKind::Throttle),
                (f.error_503_pct, FaultKind::Error503),
                (f.error_500_pct, FaultKind::Error500),
                (f.reset_pct, FaultKind::Reset),
                (f.reset_after_forward_pct, FaultKind::ResetAfterForward),
            ];
            let mut acc = 0.0;
            let mut chosen = FaultKind::None;
            for (pct, k) in table {
                acc += pct.max(0.0);
                if u < acc {
                    chosen = k;
                    break;
                }
            }
            chosen
        }
    };
    let name = (kind != FaultKind::None).then(|| kind.as_str());
    let action = match kind {
        FaultKind::None => Action::Forward {
            latency_ms,
            reset_after: false,
        },
        FaultKind::ResetAfterForward => Action::Forward {
            latency_ms,
            reset_after: true,
        },
        FaultKind::Reset => Action::Reset,
        k => Action::Respond(k),
    };
    (action, name)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "content-length"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (k, v) in from {
        if !is_hop_by_hop(k) {
            to.append(k.clone(), v.clone());
        }
    }
}

fn admin_json(status: StatusCode, v: Value) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn stats_json(inner: &Inner) -> Value {
    let s = &inner.stats;
    json!({
        "requests": s.requests,
        "requests_by_operation": s.by_operation,
        "faults_injected": s.faults,
        "faults_total": s.faults.values().sum::<u64>(),
        "put_requests": s.put_requests,
        "put_events_seen": s.put_events_seen,
        "put_events_forwarded": s.put_events_forwarded,
        "put_events_ingested": s.put_events_ingested,
        "put_events_acknowledged": s.put_events_acknowledged,
        "upstream_errors": s.upstream_errors,
        "quota_throttled": s.quota_throttled,
        "violations": s.violations,
        "violations_by_rule": s.violations_by_rule,
        "violation_list": s.violation_list,
        "records_dropped": s.records_dropped,
        "put_concurrency_max": s.put_concurrency_max,
        "put_streams_in_flight_max": s.put_streams_in_flight_max,
        "faults": inner.faults,
        "quota": quota_json(inner),
        "script_remaining": inner.script.len(),
        "errors_left": inner.errors_left,
    })
}

fn quota_json(inner: &Inner) -> Value {
    json!(inner
        .quotas
        .iter()
        .map(|(op, b)| (op.clone(), b.spec))
        .collect::<BTreeMap<_, _>>())
}

async fn admin(req: Request<Incoming>, sh: &Shared) -> Resp {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return admin_json(StatusCode::BAD_REQUEST, json!({ "error": e.to_string() })),
    };
    match (method, path.as_str()) {
        (Method::GET, "/__proxy/stats") => admin_json(StatusCode::OK, stats_json(&sh.lock())),
        (Method::GET, "/__proxy/puts") => {
            admin_json(StatusCode::OK, json!({ "puts": sh.lock().stats.puts }))
        }
        (Method::GET, "/__proxy/faults") => admin_json(StatusCode::OK, json!(sh.lock().faults)),
        (Method::POST, "/__proxy/faults") => {
            let parsed = if body.iter().all(u8::is_ascii_whitespace) {
                Ok(Faults::default())
            } else {
                serde_json::from_slice::<Faults>(&body)
            };
            match parsed {
                Ok(f) => {
                    let mut inner = sh.lock();
                    inner.script = f.script.iter().copied().collect();
                    inner.errors_left = f.error_count;
                    inner.faults = f;
                    admin_json(StatusCode::OK, json!(inner.faults))
                }
                Err(e) => admin_json(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("bad fault config: {e}") }),
                ),
            }
        }
        (Method::GET, "/__proxy/quota") => admin_json(StatusCode::OK, quota_json(&sh.lock())),
        (Method::POST, "/__proxy/quota") => {
            let parsed = if body.iter().all(u8::is_ascii_whitespace) {
                Ok(BTreeMap::new())
            } else {
                serde_json::from_slice::<BTreeMap<String, QuotaSpec>>(&body)
            };
            match parsed {
                Ok(specs) => {
                    let mut inner = sh.lock();
                    inner.quotas = specs
                        .into_iter()
                        .map(|(op, spec)| (op, Bucket::new(spec)))
                        .collect();
                    admin_json(StatusCode::OK, quota_json(&inner))
                }
                Err(e) => admin_json(
                    StatusCode::BAD_REQUEST,
                    json!({ "error": format!("bad quota config: {e}") }),
                ),
            }
        }
        (Method::POST, "/__proxy/reset") => {
            sh.lock().stats = Stats::default();
            admin_json(StatusCode::OK, json!({ "reset": true }))
        }
        _ => admin_json(
            StatusCode::NOT_FOUND,
            json!({ "error": "unknown admin path", "paths": [
                "GET /__proxy/stats", "GET /__proxy/puts", "GET /__proxy/faults",
                "POST /__proxy/faults", "GET /__proxy/quota", "POST /__proxy/quota",
                "POST /__proxy/reset"] }),
        ),
    }
}

/// Forwards the request; returns the upstream response (buffered) or a 502.
async fn forward(
    sh: &Shared,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<Resp, String> {
    let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("{}{pq}", sh.upstream)
        .parse()
        .map_err(|e| format!("bad upstream uri: {e}"))?;
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    copy_headers(&parts.headers, req.headers_mut());
    let resp = sh
        .client
        .request(req)
        .await
        .map_err(|e| format!("upstream request failed: {e}"))?;
    let (rparts, rbody) = resp.into_parts();
    let bytes = rbody
        .collect()
        .await
        .map_err(|e| format!("upstream body failed: {e}"))?
        .to_bytes();
    let mut out = Response::new(Full::new(bytes));
    *out.status_mut() = rparts.status;
    copy_headers(&rparts.headers, out.headers_mut());
    Ok(out)
}

/// `resp` (moto's answer to a PutLogEvents) with `rejectedEntityInfo` added when it is a
/// success; anything else is relayed as it is.
async fn reject_entity(resp: Resp, error_type: &str) -> Resp {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = body.collect().await.map(|b| b.to_bytes());
    let mut v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}));
    if !v.is_object() {
        v = json!({});
    }
    v["rejectedEntityInfo"] = json!({ "errorType": error_type });
    let out = Bytes::from(v.to_string());
    parts.headers.remove(hyper::header::CONTENT_LENGTH);
    Response::from_parts(parts, Full::new(out))
}

async fn handle(
    req: Request<Incoming>,
    sh: Arc<Shared>,
    fd: RawFd,
) -> Result<Resp, DropConnection> {
    if req.uri().path().starts_with("/__proxy/") {
        return Ok(admin(req, &sh).await);
    }
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, sh.args.max_body).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Err(DropConnection("request body unreadable or too large")),
    };
    let op = target_operation(&parts.headers)
        .unwrap_or("(no X-Amz-Target)")
        .to_string();
    let (put, violations) = inspect(&op, &body);
    let _in_flight = put
        .as_ref()
        .map(|p| PutInFlight::enter(&sh, format!("{}/{}", p.group, p.stream)));

    let (action, fault, seq) = {
        let mut guard = sh.lock();
        let inner = &mut *guard;
        let s = &mut inner.stats;
        s.requests += 1;
        s.seq += 1;
        let seq = s.seq;
        *s.by_operation.entry(op.clone()).or_default() += 1;
        if let Some(p) = &put {
            s.put_requests += 1;
            s.put_events_seen += p.summary.events as u64;
        }
        if !violations.is_empty() {
            s.violations += 1;
        }
        for v in &violations {
            *s.violations_by_rule.entry(v.rule.as_str()).or_default() += 1;
            if s.violation_list.len() < sh.args.max_records {
                s.violation_list.push(json!({
                    "seq": seq,
                    "operation": op,
                    "rule": v.rule.as_str(),
                    "detail": v.detail,
                    "group": put.as_ref().map(|p| p.group.as_str()),
                    "stream": put.as_ref().map(|p| p.stream.as_str()),
                    "events": put.as_ref().map(|p| p.summary.events),
                    "batch_bytes": put.as_ref().map(|p| p.summary.batch_bytes),
                }));
            } else {
                s.records_dropped += 1;
            }
        }
        let (action, fault) = decide(inner, &op, signing_key_id(&parts.headers), &body);
        if let Some(f) = fault {
            *inner.stats.faults.entry(f).or_default() += 1;
        }
        (action, fault, seq)
    };

    let id = seq;
    let mut forwarded = false;
    let mut upstream_status: Option<u16> = None;
    let result: Result<Resp, DropConnection> = match action {
        Action::Outage(mode, hang_ms) => {
            match mode {
                OutageMode::Close => {}
                OutageMode::Reset => arm_reset(fd),
                OutageMode::Hang => tokio::time::sleep(Duration::from_millis(hang_ms)).await,
            }
            Err(DropConnection("outage"))
        }
        Action::Reset => {
            arm_reset(fd);
            Err(DropConnection("reset"))
        }
        Action::AwsError(code, message) => {
            Ok(aws_error(StatusCode::BAD_REQUEST, &code, &message, id))
        }
        Action::Respond(kind) => Ok(match kind {
            FaultKind::Throttle => aws_error(
                StatusCode::BAD_REQUEST,
                "ThrottlingException",
                "Rate exceeded",
                id,
            ),
            FaultKind::AccessDenied => aws_error(
                StatusCode::BAD_REQUEST,
                "AccessDeniedException",
                "User is not authorized to perform this action (injected by cwl-proxy)",
                id,
            ),
            FaultKind::Error503 => aws_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                "The service is unavailable. Try again later. (injected by cwl-proxy)",
                id,
            ),
            _ => aws_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure",
                "The request processing has failed because of an unknown error. (injected by cwl-proxy)",
                id,
            ),
        }),
        Action::Forward {
            latency_ms,
            reset_after,
        } => {
            if latency_ms > 0 {
                tokio::time::sleep(Duration::from_millis(latency_ms)).await;
            }
            match forward(&sh, &parts, body).await {
                Ok(mut resp) => {
                    if put.as_ref().is_some_and(|p| p.entity.is_some()) {
                        let reject = sh.lock().faults.reject_entity.clone();
                        if let Some(error_type) = reject {
                            resp = reject_entity(resp, &error_type).await;
                        }
                    }
                    forwarded = true;
                    upstream_status = Some(resp.status().as_u16());
                    if reset_after {
                        arm_reset(fd);
                        Err(DropConnection("reset after forward"))
                    } else {
                        Ok(resp)
                    }
                }
                Err(e) => {
                    sh.lock().stats.upstream_errors += 1;
                    Ok(aws_error(
                        StatusCode::BAD_GATEWAY,
                        "ServiceUnavailableException",
                        &format!("cwl-proxy: {e}"),
                        id,
                    ))
                }
            }
        }
    };

    if let Some(p) = put {
        let status = result.as_ref().ok().map(|r| r.status().as_u16());
        let mut guard = sh.lock();
        let s = &mut guard.stats;
        let n = p.summary.events as u64;
        if forwarded {
            s.put_events_forwarded += n;
        }
        if upstream_status == Some(200) {
            s.put_events_ingested += n;
        }
        if status == Some(200) {
            s.put_events_acknowledged += n;
        }
        if s.puts.len() < sh.args.max_records {
            s.puts.push(json!({
                "seq": seq,
                "group": p.group,
                "stream": p.stream,
                "events": p.summary.events,
                "message_bytes": p.summary.message_bytes,
                "batch_bytes": p.summary.batch_bytes,
                "entity": p.entity,
                "first_ts": p.summary.first_ts,
                "last_ts": p.summary.last_ts,
                "violations": violations.iter().map(|v| v.rule.as_str()).collect::<Vec<_>>(),
                "fault": fault,
                "forwarded": forwarded,
                "upstream_status": upstream_status,
                "status": status,
            }));
        } else {
            s.records_dropped += 1;
        }
    }
    result
}

async fn serve(sh: Arc<Shared>) -> std::io::Result<()> {
    let listener = TcpListener::bind(sh.args.listen).await?;
    announce("http", listener.local_addr()?);
    accept_until_shutdown("cwl-proxy", listener, |tcp| {
        let fd = tcp.as_raw_fd();
        let sh = sh.clone();
        async move {
            let svc = service_fn(move |req| handle(req, sh.clone(), fd));
            // Errors here are dropped connections (ours or the client's).
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        }
    })
    .await
}

fn main() {
    let args = Args::parse();
    let upstream = args.upstream.trim_end_matches('/').to_string();
    if !upstream.starts_with("http://") {
        eprintln!("cwl-proxy: --upstream must be an http:// URL");
        std::process::exit(2);
    }
    let rt = runtime("cwl-proxy", args.threads);
    let rng = args.seed.map_or_else(Rng::from_entropy, Rng::new);
    let sh = {
        // The legacy client needs a runtime context for its pool timer.
        let _guard = rt.enter();
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(5))
            .build(HttpConnector::new());
        Arc::new(Shared {
            args,
            upstream,
            client,
            inner: Mutex::new(Inner {
                faults: Faults::default(),
                quotas: BTreeMap::new(),
                script: VecDeque::new(),
                errors_left: None,
                rng,
                stats: Stats::default(),
            }),
        })
    };
    let result = rt.block_on(serve(sh.clone()));
    if let Err(e) = result {
        eprintln!("cwl-proxy: {e}");
        std::process::exit(1);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", stats_json(&sh.lock()));
    let _ = out.flush();
    std::process::exit(0);
}
