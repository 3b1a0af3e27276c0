//! `fake-cloudwatch`: a fast fake CloudWatch Logs endpoint for benchmarks.
//!
//! moto_server tops out around 30–100k events/s and keeps everything in RAM, so a shipper
//! benchmark at ~350k events/s needs an endpoint of its own. This one speaks just enough
//! AWS JSON 1.1 (CreateLogGroup, CreateLogStream, PutRetentionPolicy, DescribeLogGroups,
//! DescribeLogStreams, PutLogEvents), keeps only counters, and checks every PutLogEvents
//! against the real service's limits, answering `InvalidParameterException` (and counting
//! a violation) where the real service would. Events more than 14 days old, older than the
//! group's retention, or more than 2 hours ahead are rejected inside a 200 response with
//! `rejectedLogEventsInfo`, using AWS's documented index semantics.
//!
//! It serves HTTPS by default with a CA generated at start (written to `--ca-out`), since
//! the TLS cost is part of what a benchmark should measure; `--plain-http` turns TLS off.
//! The first stdout line is `listening <url>`; `GET /stats` returns the counters, and on
//! SIGTERM/SIGINT the same JSON is printed as the last stdout line before exiting.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use clap::Parser;
use cwl_testkit::limits::{self, Rejected};
use cwl_testkit::server::{
    accept_until_shutdown, announce, aws_error, json_response, now_ms, runtime, target_operation,
    tls_config, NamesReq, PutLogEventsReq, Resp,
};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Fast fake CloudWatch Logs endpoint for benchmarks")]
struct Args {
    /// Address to listen on (port 0 picks a free one; the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of HTTPS.
    #[arg(long)]
    plain_http: bool,
    /// Write the generated CA certificate (PEM) here, for the client to trust.
    #[arg(long)]
    ca_out: Option<PathBuf>,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Create groups and streams on first PutLogEvents instead of answering
    /// ResourceNotFoundException.
    #[arg(long)]
    auto_create: bool,
    /// Accept any timestamp (no rejectedLogEventsInfo for too old / too new / expired).
    #[arg(long)]
    accept_any_timestamp: bool,
    /// Largest request body read, in bytes (larger bodies get InvalidParameterException).
    #[arg(long, default_value_t = 16 << 20)]
    max_body: usize,
}

#[derive(Debug, Default)]
struct Stream {
    created: i64,
    events: u64,
    bytes: u64,
    first_ts: Option<i64>,
    last_ts: Option<i64>,
}

#[derive(Debug, Default)]
struct Group {
    created: i64,
    retention: Option<i64>,
    streams: HashMap<String, Stream>,
}

#[derive(Debug, Default)]
struct State {
    groups: HashMap<String, Group>,
    events: u64,
    message_bytes: u64,
    rejected_events: u64,
    violations: u64,
    violations_by_rule: BTreeMap<&'static str, u64>,
    errors_by_type: BTreeMap<&'static str, u64>,
}

struct Shared {
    args: Args,
    requests: AtomicU64,
    ids: AtomicU64,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters inconsistent enough to
        // matter for a test fake: keep serving.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn stats(&self) -> Value {
        let st = self.lock();
        let mut by_stream = Map::new();
        for (g, group) in &st.groups {
            for (s, stream) in &group.streams {
                by_stream.insert(format!("{g}/{s}"), json!(stream.events));
            }
        }
        json!({
            "requests": self.requests.load(Ordering::Relaxed),
            "events": st.events,
            "message_bytes": st.message_bytes,
            "violations": st.violations,
            "rejected_events": st.rejected_events,
            "violations_by_rule": st.violations_by_rule,
            "errors_by_type": st.errors_by_type,
            "by_stream": by_stream,
        })
    }
}

type Outcome = Result<Value, (&'static str, String)>;

fn err(kind: &'static str, msg: impl Into<String>) -> Outcome {
    Err((kind, msg.into()))
}

impl Group {
    /// A new, empty log group.
    fn created_at(ms: i64) -> Group {
        Group {
            created: ms,
            ..Group::default()
        }
    }
}

impl Stream {
    /// A new, empty log stream.
    fn created_at(ms: i64) -> Stream {
        Stream {
            created: ms,
            ..Stream::default()
        }
    }
}

/// Log `kind` (group, stream) `name`; a missing one is made by `make` (`--auto-create`) or
/// answered with ResourceNotFoundException.
fn found_or_made<'a, T>(
    existing: &'a mut HashMap<String, T>,
    name: &str,
    kind: &str,
    make: impl FnOnce() -> Option<T>,
) -> Result<&'a mut T, (&'static str, String)> {
    if !existing.contains_key(name) {
        let Some(new) = make() else {
            return Err((
                "ResourceNotFoundException",
                format!("The specified log {kind} does not exist."),
            ));
        };
        existing.insert(name.to_owned(), new);
    }
    existing
        .get_mut(name)
        .ok_or_else(|| ("InternalFailure", format!("log {kind} {name} vanished")))
}

/// Adds log `kind` (group, stream) `name`, unless there is one by that name already.
fn create<T>(existing: &mut HashMap<String, T>, name: String, new: T, kind: &str) -> Outcome {
    match existing.entry(name) {
        Entry::Occupied(_) => err(
            "ResourceAlreadyExistsException",
            format!("The specified log {kind} already exists"),
        ),
        Entry::Vacant(slot) => {
            slot.insert(new);
            Ok(json!({}))
        }
    }
}

async fn handle(req: Request<Incoming>, sh: Arc<Shared>) -> Result<Resp, Infallible> {
    let id = sh.ids.fetch_add(1, Ordering::Relaxed);
    if req.method() == Method::GET && req.uri().path() == "/stats" {
        return Ok(json_response(StatusCode::OK, sh.stats().to_string(), id));
    }
    if req.method() != Method::POST || req.uri().path() != "/" {
        return Ok(aws_error(
            StatusCode::NOT_FOUND,
            "UnknownOperationException",
            "only POST / and GET /stats are served",
            id,
        ));
    }
    sh.requests.fetch_add(1, Ordering::Relaxed);
    let op = target_operation(req.headers()).map(str::to_owned);
    let body = match Limited::new(req.into_body(), sh.args.max_body)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let mut st = sh.lock();
            *st.errors_by_type
                .entry("InvalidParameterException")
                .or_default() += 1;
            if op.as_deref() == Some("PutLogEvents") {
                st.violations += 1;
                *st.violations_by_rule
                    .entry(limits::Rule::BatchTooLarge.as_str())
                    .or_default() += 1;
            }
            return Ok(aws_error(
                StatusCode::BAD_REQUEST,
                "InvalidParameterException",
                &format!("request body unreadable or too large: {e}"),
                id,
            ));
        }
    };
    let outcome = match op.as_deref() {
        Some("PutLogEvents") => put_log_events(&sh, &body),
        Some(
            op @ ("CreateLogGroup" | "CreateLogStream" | "PutRetentionPolicy" | "DescribeLogGroups"
            | "DescribeLogStreams"),
        ) => other_op(&sh, op, &body),
        Some(op) => err(
            "UnknownOperationException",
            format!("operation {op:?} is not implemented by fake-cloudwatch"),
        ),
        None => err("UnknownOperationException", "missing X-Amz-Target header"),
    };
    Ok(match outcome {
        Ok(v) => json_response(StatusCode::OK, v.to_string(), id),
        Err((kind, msg)) => {
            *sh.lock().errors_by_type.entry(kind).or_default() += 1;
            aws_error(StatusCode::BAD_REQUEST, kind, &msg, id)
        }
    })
}

fn put_log_events(sh: &Shared, body: &Bytes) -> Outcome {
    let req: PutLogEventsReq = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            let mut st = sh.lock();
            st.violations += 1;
            *st.violations_by_rule
                .entry(limits::Rule::Malformed.as_str())
                .or_default() += 1;
            return err(
                "SerializationException",
                format!("bad PutLogEvents body: {e}"),
            );
        }
    };
    let (summary, violations) = req.check();
    let mut guard = sh.lock();
    let st = &mut *guard;
    if !violations.is_empty() {
        st.violations += 1;
        for v in &violations {
            *st.violations_by_rule.entry(v.rule.as_str()).or_default() += 1;
        }
        let msg = violations
            .iter()
            .map(|v| format!("{}: {}", v.rule, v.detail))
            .collect::<Vec<_>>()
            .join("; ");
        return err("InvalidParameterException", msg);
    }
    let now = now_ms();
    let auto = sh.args.auto_create;
    let group = found_or_made(&mut st.groups, &req.group, "group", || {
        auto.then(|| Group::created_at(now))
    })?;
    let retention = group.retention;
    let stream = found_or_made(&mut group.streams, &req.stream, "stream", || {
        auto.then(|| Stream::created_at(now))
    })?;
    let (lo, hi) = (summary.min_ts.unwrap_or(now), summary.max_ts.unwrap_or(now));
    let oldest_ok = now
        - retention.map_or(limits::MAX_AGE_MS, |d| {
            (d * 86_400_000).min(limits::MAX_AGE_MS)
        });
    let rejected =
        if sh.args.accept_any_timestamp || (lo >= oldest_ok && hi <= now + limits::MAX_FUTURE_MS) {
            None
        } else {
            let ts: Vec<i64> = req.events.iter().map(|e| e.timestamp).collect();
            Rejected::compute(&ts, now, retention)
        };
    let n = req.events.len();
    let (accepted, bytes, first, last) = match rejected {
        None => (n, summary.message_bytes, summary.first_ts, summary.last_ts),
        Some(r) => {
            let kept = &req.events[r.kept(n)];
            (
                kept.len(),
                kept.iter().map(|e| e.message.len() as u64).sum(),
                kept.first().map(|e| e.timestamp),
                kept.last().map(|e| e.timestamp),
            )
        }
    };
    stream.events += accepted as u64;
    stream.bytes += bytes;
    if stream.first_ts.is_none() {
        stream.first_ts = first;
    }
    if last.is_some() {
        stream.last_ts = last;
    }
    st.events += accepted as u64;
    st.message_bytes += bytes;
    st.rejected_events += (n - accepted) as u64;
    let mut resp = json!({ "nextSequenceToken": "1" });
    if let Some(r) = rejected {
        let mut info = Map::new();
        if let Some(i) = r.too_old_end {
            info.insert("tooOldLogEventEndIndex".into(), json!(i));
        }
        if let Some(i) = r.too_new_start {
            info.insert("tooNewLogEventStartIndex".into(), json!(i));
        }
        if let Some(i) = r.expired_end {
            info.insert("expiredLogEventEndIndex".into(), json!(i));
        }
        resp["rejectedLogEventsInfo"] = Value::Object(info);
    }
    Ok(resp)
}

fn group_json(name: &str, g: &Group) -> Value {
    let mut v = json!({
        "logGroupName": name,
        "creationTime": g.created,
        "metricFilterCount": 0,
        "arn": format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}:*"),
        "logGroupArn": format!("arn:aws:logs:us-east-1:123456789012:log-group:{name}"),
        "storedBytes": g.streams.values().map(|s| s.bytes).sum::<u64>(),
        "logGroupClass": "STANDARD",
    });
    if let Some(r) = g.retention {
        v["retentionInDays"] = json!(r);
    }
    v
}

fn stream_json(group: &str, name: &str, s: &Stream) -> Value {
    let mut v = json!({
        "logStreamName": name,
        "creationTime": s.created,
        "arn": format!("arn:aws:logs:us-east-1:123456789012:log-group:{group}:log-stream:{name}"),
        "storedBytes": s.bytes,
        "uploadSequenceToken": "1",
    });
    if let (Some(f), Some(l)) = (s.first_ts, s.last_ts) {
        v["firstEventTimestamp"] = json!(f);
        v["lastEventTimestamp"] = json!(l);
        v["lastIngestionTime"] = json!(now_ms());
    }
    v
}

fn other_op(sh: &Shared, op: &str, body: &Bytes) -> Outcome {
    let req: NamesReq = if body.iter().all(u8::is_ascii_whitespace) {
        NamesReq::default()
    } else {
        match serde_json::from_slice(body) {
            Ok(r) => r,
            Err(e) => return err("SerializationException", format!("bad {op} body: {e}")),
        }
    };
    let group_name = req.group.as_deref();
    let mut st = sh.lock();
    let invalid = |st: &mut State, v: limits::Violation| -> Outcome {
        st.violations += 1;
        *st.violations_by_rule.entry(v.rule.as_str()).or_default() += 1;
        err("InvalidParameterException", v.detail)
    };
    let need_group = |name: Option<&str>| -> Result<String, (&'static str, String)> {
        name.map(str::to_owned).ok_or((
            "InvalidParameterException",
            "logGroupName is required".to_string(),
        ))
    };
    let not_found = || {
        err(
            "ResourceNotFoundException",
            "The specified log group does not exist.",
        )
    };
    match op {
        "CreateLogGroup" => {
            let name = need_group(group_name)?;
            if let Some(v) = limits::check_group_name(&name) {
                return invalid(&mut st, v);
            }
            create(&mut st.groups, name, Group::created_at(now_ms()), "group")
        }
        "CreateLogStream" => {
            let name = need_group(group_name)?;
            let stream = req.stream.as_deref().unwrap_or_default().to_owned();
            if let Some(v) = limits::check_stream_name(&stream) {
                return invalid(&mut st, v);
            }
            let Some(group) = st.groups.get_mut(&name) else {
                return not_found();
            };
            create(
                &mut group.streams,
                stream,
                Stream::created_at(now_ms()),
                "stream",
            )
        }
        "PutRetentionPolicy" => {
            let name = need_group(group_name)?;
            let days = req.retention.unwrap_or(0);
            if let Some(v) = limits::check_retention(days) {
                return invalid(&mut st, v);
            }
            let Some(group) = st.groups.get_mut(&name) else {
                return not_found();
            };
            group.retention = Some(days);
            Ok(json!({}))
        }
        "DescribeLogGroups" => {
            let prefix = req.group_prefix.as_deref().unwrap_or("");
            let mut names: Vec<&String> =
                st.groups.keys().filter(|n| n.starts_with(prefix)).collect();
            names.sort();
            let groups: Vec<Value> = names
                .into_iter()
                .filter_map(|n| st.groups.get(n).map(|g| group_json(n, g)))
                .collect();
            Ok(json!({ "logGroups": groups }))
        }
        "DescribeLogStreams" => {
            let name = need_group(group_name)?;
            let Some(group) = st.groups.get(&name) else {
                return not_found();
            };
            let prefix = req.stream_prefix.as_deref().unwrap_or("");
            let mut names: Vec<&String> = group
                .streams
                .keys()
                .filter(|n| n.starts_with(prefix))
                .collect();
            names.sort();
            let streams: Vec<Value> = names
                .into_iter()
                .filter_map(|n| group.streams.get(n).map(|s| stream_json(&name, n, s)))
                .collect();
            Ok(json!({ "logStreams": streams }))
        }
        _ => err(
            "UnknownOperationException",
            format!("unknown operation {op}"),
        ),
    }
}

async fn serve(sh: Arc<Shared>) -> std::io::Result<()> {
    let tls = if sh.args.plain_http {
        None
    } else {
        if sh.args.ca_out.is_none() {
            eprintln!("fake-cloudwatch: no --ca-out given: clients cannot trust this server");
        }
        let cfg = tls_config(sh.args.ca_out.as_deref())?;
        Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
    };
    let listener = TcpListener::bind(sh.args.listen).await?;
    announce(
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
    );
    accept_until_shutdown("fake-cloudwatch", listener, |tcp| {
        let sh = sh.clone();
        let tls = tls.clone();
        async move {
            let svc = service_fn(move |req| handle(req, sh.clone()));
            let builder = http1::Builder::new();
            // Connection errors (client went away mid-request) are the client's business.
            let _ = match tls {
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), svc).await,
                    Err(_) => return,
                },
                None => builder.serve_connection(TokioIo::new(tcp), svc).await,
            };
        }
    })
    .await
}

fn main() {
    let args = Args::parse();
    let rt = runtime("fake-cloudwatch", args.threads);
    let sh = Arc::new(Shared {
        args,
        requests: AtomicU64::new(0),
        ids: AtomicU64::new(1),
        state: Mutex::new(State::default()),
    });
    let result = rt.block_on(serve(sh.clone()));
    if let Err(e) = result {
        eprintln!("fake-cloudwatch: {e}");
        std::process::exit(1);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", sh.stats());
    let _ = out.flush();
    // Skip waiting for open keep-alive connections.
    std::process::exit(0);
}
