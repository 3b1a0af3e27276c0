//! A tiny blocking HTTP/1.1 client and CloudWatch Logs (AWS JSON 1.1) calls on top of it.
//!
//! Tests need to read back what a shipper wrote to moto, drive the proxy's admin API and
//! send hand-made (even invalid) PutLogEvents requests. A hand-written client over
//! `TcpStream` keeps the library dependency-free (no TLS, no async) and lets tests see a
//! connection reset as a plain `io::Error`.
//!
//! moto_server routes a request to a service by the credential scope of its
//! `Authorization` header: without one it answers as S3. It does not verify signatures, so
//! every call here carries a fixed fake SigV4 header scoped to `us-east-1/logs`.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

/// A fake SigV4 `Authorization` header value that moto routes to CloudWatch Logs.
pub const FAKE_AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/logs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=0000000000000000000000000000000000000000000000000000000000000000";

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// The body parsed as JSON; an empty body is `{}`, a non-JSON body a JSON string.
    pub fn json(&self) -> Value {
        if self.body.iter().all(u8::is_ascii_whitespace) {
            return json!({});
        }
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&self.body).into_owned()))
    }

    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn host_port(endpoint: &str) -> io::Result<&str> {
    let rest = endpoint.strip_prefix("http://").ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("only http:// endpoints are supported, got {endpoint:?}"),
        )
    })?;
    Ok(rest.trim_end_matches('/'))
}

/// Sends one HTTP/1.1 request (`Connection: close`) and reads the whole response.
///
/// `endpoint` is `http://host:port`; `path` starts with `/`. A connection closed or reset
/// before a complete response is an `Err` (kind `ConnectionReset`, `ConnectionAborted`
/// or `UnexpectedEof`), which is how tests observe the proxy's reset faults.
pub fn http_request(
    endpoint: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> io::Result<HttpResponse> {
    let hp = host_port(endpoint)?;
    let mut stream = TcpStream::connect(hp)?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    stream.set_nodelay(true)?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hp}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    read_response(BufReader::new(stream))
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<String> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a complete response",
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

fn read_response<R: BufRead>(mut r: R) -> io::Result<HttpResponse> {
    let status_line = read_line(&mut r)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let size_line = read_line(&mut r)?;
            let size_hex = size_line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| bad(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            read_line(&mut r)?;
        }
    } else if let Some(len) = get("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| bad(format!("bad content-length {len:?}")))?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

/// Calls a CloudWatch Logs operation (AWS JSON 1.1) and returns the raw response.
///
/// The body is sent as given: tests use this to send requests that break the limits.
pub fn call_raw(endpoint: &str, operation: &str, body: &[u8]) -> io::Result<HttpResponse> {
    let target = format!("Logs_20140328.{operation}");
    http_request(
        endpoint,
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", &target),
            ("X-Amz-Date", "20240101T000000Z"),
            ("Authorization", FAKE_AUTHORIZATION),
        ],
        body,
    )
}

/// Calls a CloudWatch Logs operation and returns `(status, parsed JSON body)`.
pub fn call(endpoint: &str, operation: &str, body: &Value) -> io::Result<(u16, Value)> {
    let r = call_raw(endpoint, operation, body.to_string().as_bytes())?;
    Ok((r.status, r.json()))
}

fn call_ok(endpoint: &str, operation: &str, body: &Value) -> io::Result<Value> {
    let (status, v) = call(endpoint, operation, body)?;
    if status == 200 {
        Ok(v)
    } else {
        Err(io::Error::other(format!(
            "{operation} answered {status}: {v}"
        )))
    }
}

/// Creates a log group; an already existing group is not an error.
pub fn create_group(endpoint: &str, group: &str) -> io::Result<()> {
    create_ignoring_exists(
        endpoint,
        "CreateLogGroup",
        &json!({ "logGroupName": group }),
    )
}

/// Creates a log stream; an already existing stream is not an error.
pub fn create_stream(endpoint: &str, group: &str, stream: &str) -> io::Result<()> {
    create_ignoring_exists(
        endpoint,
        "CreateLogStream",
        &json!({ "logGroupName": group, "logStreamName": stream }),
    )
}

fn create_ignoring_exists(endpoint: &str, op: &str, body: &Value) -> io::Result<()> {
    let (status, v) = call(endpoint, op, body)?;
    if status == 200 || v["__type"].as_str() == Some("ResourceAlreadyExistsException") {
        Ok(())
    } else {
        Err(io::Error::other(format!("{op} answered {status}: {v}")))
    }
}

/// Sends one PutLogEvents with `(timestamp_ms, message)` events; returns `(status, body)`.
pub fn put_events(
    endpoint: &str,
    group: &str,
    stream: &str,
    events: &[(i64, &str)],
) -> io::Result<(u16, Value)> {
    let evs: Vec<Value> = events
        .iter()
        .map(|(t, m)| json!({ "timestamp": t, "message": m }))
        .collect();
    call(
        endpoint,
        "PutLogEvents",
        &json!({ "logGroupName": group, "logStreamName": stream, "logEvents": evs }),
    )
}

/// Reads every event of a stream, oldest first, as `(timestamp_ms, message)`.
///
/// Uses GetLogEvents with `startFromHead=true` and follows `nextForwardToken` until a page
/// is empty or the token repeats (that is how the API signals the end).
pub fn read_events(endpoint: &str, group: &str, stream: &str) -> io::Result<Vec<(i64, String)>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = json!({
            "logGroupName": group,
            "logStreamName": stream,
            "startFromHead": true,
            "limit": 10000,
        });
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let v = call_ok(endpoint, "GetLogEvents", &req)?;
        let events = v["events"].as_array().cloned().unwrap_or_default();
        for e in &events {
            let ts = e["timestamp"]
                .as_i64()
                .ok_or_else(|| bad(format!("event without timestamp: {e}")))?;
            let msg = e["message"].as_str().unwrap_or_default().to_string();
            out.push((ts, msg));
        }
        let next = v["nextForwardToken"].as_str().map(str::to_string);
        if events.is_empty() || next.is_none() || next == token {
            return Ok(out);
        }
        token = next;
    }
}

fn paged_names(
    endpoint: &str,
    op: &str,
    base: Value,
    list_key: &str,
    name_key: &str,
) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut req = base.clone();
        if let Some(t) = &token {
            req["nextToken"] = json!(t);
        }
        let v = call_ok(endpoint, op, &req)?;
        if let Some(items) = v[list_key].as_array() {
            out.extend(
                items
                    .iter()
                    .filter_map(|i| i[name_key].as_str().map(str::to_string)),
            );
        }
        match v["nextToken"].as_str() {
            Some(t) if !t.is_empty() && token.as_deref() != Some(t) => token = Some(t.into()),
            _ => return Ok(out),
        }
    }
}

/// Names of every log stream of a group (DescribeLogStreams, all pages).
pub fn list_streams(endpoint: &str, group: &str) -> io::Result<Vec<String>> {
    paged_names(
        endpoint,
        "DescribeLogStreams",
        json!({ "logGroupName": group }),
        "logStreams",
        "logStreamName",
    )
}

/// Names of every log group (DescribeLogGroups, all pages).
pub fn list_groups(endpoint: &str) -> io::Result<Vec<String>> {
    paged_names(
        endpoint,
        "DescribeLogGroups",
        json!({}),
        "logGroups",
        "logGroupName",
    )
}

/// The retention of a group in days, `None` if it has none (DescribeLogGroups).
pub fn group_retention(endpoint: &str, group: &str) -> io::Result<Option<i64>> {
    let v = call_ok(
        endpoint,
        "DescribeLogGroups",
        &json!({ "logGroupNamePrefix": group }),
    )?;
    Ok(v["logGroups"]
        .as_array()
        .and_then(|gs| gs.iter().find(|g| g["logGroupName"] == group))
        .and_then(|g| g["retentionInDays"].as_i64()))
}
