//! Pieces shared by the `fake-cloudwatch` and `cwl-proxy` binaries (feature `servers`).
//!
//! Borrowed request structs (messages stay `Cow<str>` slices of the body, so parsing a
//! 1 MiB batch allocates only the event vector), AWS JSON 1.1 error responses, the fault
//! RNG, and the rcgen/rustls setup that gives the fake endpoint a CA the client can trust.

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};

use crate::limits::{self, BatchSummary, Violation};

/// Content type of AWS JSON 1.1 requests and responses.
pub const AMZ_JSON: &str = "application/x-amz-json-1.1";

/// Response type of both servers.
pub type Resp = Response<Full<Bytes>>;

/// One event of a PutLogEvents request, borrowing from the body.
#[derive(Debug, Deserialize)]
pub struct InputEvent<'a> {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The message (borrowed unless it contained JSON escapes).
    #[serde(borrow)]
    pub message: Cow<'a, str>,
}

/// A PutLogEvents request, borrowing from the body. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct PutLogEventsReq<'a> {
    /// Target group.
    #[serde(rename = "logGroupName", borrow)]
    pub group: Cow<'a, str>,
    /// Target stream.
    #[serde(rename = "logStreamName", borrow)]
    pub stream: Cow<'a, str>,
    /// Events; missing means empty.
    #[serde(rename = "logEvents", default, borrow)]
    pub events: Vec<InputEvent<'a>>,
    /// The workload the events come from (`keyAttributes`, `attributes`), if sent.
    #[serde(default)]
    pub entity: Option<serde_json::Value>,
}

impl PutLogEventsReq<'_> {
    /// Runs the batch limits of [`limits::check_batch`] on this request.
    pub fn check(&self) -> (BatchSummary, Vec<Violation>) {
        limits::check_batch(self.events.iter().map(|e| (e.timestamp, e.message.len())))
    }
}

/// Any request naming a group and maybe a stream / retention (Create*, PutRetentionPolicy,
/// Describe*).
#[derive(Debug, Default, Deserialize)]
pub struct NamesReq<'a> {
    /// `logGroupName`.
    #[serde(rename = "logGroupName", borrow, default)]
    pub group: Option<Cow<'a, str>>,
    /// `logStreamName`.
    #[serde(rename = "logStreamName", borrow, default)]
    pub stream: Option<Cow<'a, str>>,
    /// `retentionInDays`.
    #[serde(rename = "retentionInDays", default)]
    pub retention: Option<i64>,
    /// `logGroupNamePrefix` (DescribeLogGroups).
    #[serde(rename = "logGroupNamePrefix", borrow, default)]
    pub group_prefix: Option<Cow<'a, str>>,
    /// `logStreamNamePrefix` (DescribeLogStreams).
    #[serde(rename = "logStreamNamePrefix", borrow, default)]
    pub stream_prefix: Option<Cow<'a, str>>,
}

/// The operation named by `X-Amz-Target` (`Logs_20140328.PutLogEvents` -> `PutLogEvents`).
pub fn target_operation(headers: &HeaderMap) -> Option<&str> {
    let t = headers.get("x-amz-target")?.to_str().ok()?;
    Some(t.rsplit_once('.').map_or(t, |(_, op)| op))
}

/// A JSON response with the AWS JSON 1.1 content type and a request id.
pub fn json_response(status: StatusCode, body: impl Into<Bytes>, request_id: u64) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(AMZ_JSON));
    if let Ok(v) = HeaderValue::from_str(&format!("00000000-0000-4000-8000-{request_id:012x}")) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// An AWS error: `{"__type": kind, "message": message}` with `x-amzn-ErrorType`.
pub fn aws_error(status: StatusCode, kind: &str, message: &str, request_id: u64) -> Resp {
    let body = serde_json::json!({ "__type": kind, "message": message }).to_string();
    let mut r = json_response(status, body, request_id);
    if let Ok(v) = HeaderValue::from_str(kind) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// The access key id of a SigV4 `Authorization` header (`... Credential=AKID/DATE/...`).
pub fn signing_key_id(headers: &HeaderMap) -> Option<&str> {
    let auth = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let rest = &auth[auth.find("Credential=")? + "Credential=".len()..];
    rest.split('/').next()
}

/// AWS's usual message for an error code the proxy is told to answer with.
pub fn default_error_message(code: &str) -> &'static str {
    match code {
        "ExpiredTokenException" => "The security token included in the request is expired",
        "UnrecognizedClientException" => "The security token included in the request is invalid.",
        "AccessDeniedException" => {
            "User: arn:aws:sts::123456789012:assumed-role/logferry/i-0 is not authorized to \
             perform this action (injected by cwl-proxy)"
        }
        _ => "injected by cwl-proxy",
    }
}

/// An account-wide quota on one operation, as posted to `/__proxy/quota`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Calls per second the account may make.
    pub per_second: f64,
    /// Calls that may come at once after a quiet spell (default: one second's worth).
    pub burst: Option<f64>,
}

/// The token bucket of one [`QuotaSpec`], shared by every client of the proxy.
#[derive(Debug)]
pub struct Bucket {
    /// What it enforces.
    pub spec: QuotaSpec,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(spec: QuotaSpec) -> Self {
        let mut b = Bucket {
            spec,
            tokens: 0.0,
            at: Instant::now(),
        };
        b.tokens = b.capacity();
        b
    }

    fn capacity(&self) -> f64 {
        self.spec.burst.unwrap_or(self.spec.per_second).max(1.0)
    }

    /// Takes one call's token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let earned = now.duration_since(self.at).as_secs_f64() * self.spec.per_second.max(0.0);
        self.tokens = (self.tokens + earned).min(self.capacity());
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

pub use logferry_time::now_ms;

/// SplitMix64: a tiny deterministic RNG for fault injection (`--seed`).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// Seed from the clock and pid.
    pub fn from_entropy() -> Self {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Rng(t ^ (u64::from(std::process::id()) << 32))
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 100)`.
    pub fn percent(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 100.0
    }
}

/// Generates a self-signed CA and a server certificate for `127.0.0.1`, `::1` and
/// `localhost`, writes the CA PEM to `ca_out` (if given) and returns a rustls server
/// config (ring provider, ALPN `http/1.1`).
pub fn tls_config(ca_out: Option<&Path>) -> io::Result<rustls::ServerConfig> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let err = |e: rcgen::Error| io::Error::other(format!("certificate generation: {e}"));

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cwl-testkit fake CloudWatch CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(err)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;

    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])
    .map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "fake-cloudwatch");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    let key = KeyPair::generate().map_err(err)?;
    let cert = params.signed_by(&key, &ca_cert, &ca_key).map_err(err)?;

    if let Some(path) = ca_out {
        std::fs::write(path, ca_cert.pem())?;
    }
    let chain = vec![
        CertificateDer::from(cert.der().to_vec()),
        CertificateDer::from(ca_cert.der().to_vec()),
    ];
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(io::Error::other)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Prints `listening <scheme>://<addr>` as a line on stdout and flushes it.
pub fn announce(scheme: &str, addr: std::net::SocketAddr) {
    use std::io::Write;
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "listening {scheme}://{addr}");
    let _ = out.flush();
}

/// Accepts connections until SIGTERM or SIGINT, each with `TCP_NODELAY` and served by
/// `serve` on a task of its own. A failed `accept` (out of descriptors under a load test) is
/// reported on stderr as `NAME: accept: ...` and retried shortly rather than ending the server.
pub async fn accept_until_shutdown<F, Fut>(
    name: &str,
    listener: tokio::net::TcpListener,
    mut serve: F,
) -> io::Result<()>
where
    F: FnMut(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (tcp, _) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{name}: accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(serve(tcp));
    }
}

/// A multi-thread runtime with `threads` workers; exits the process (status 1, the reason on
/// stderr as `NAME: runtime: ...`) if it cannot be built.
pub fn runtime(name: &str, threads: usize) -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: runtime: {e}");
            std::process::exit(1);
        }
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn borrowed_parse_and_check() {
        let body = br#"{"logGroupName":"g","logStreamName":"s","logEvents":[{"timestamp":1,"message":"h\u00e9"},{"timestamp":2,"message":"plain"}],"sequenceToken":"x"}"#;
        let req: PutLogEventsReq = serde_json::from_slice(body).unwrap();
        assert!(matches!(req.events[1].message, Cow::Borrowed(_)));
        let (s, v) = req.check();
        assert!(v.is_empty());
        assert_eq!(s.message_bytes, 3 + 5);
    }

    #[test]
    fn rng_is_deterministic() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            let p = a.percent();
            assert!((0.0..100.0).contains(&p));
            assert_eq!(p, b.percent());
        }
    }

    #[test]
    fn tls_config_builds() {
        let dir = std::env::temp_dir().join(format!("cwl-testkit-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        tls_config(Some(&ca)).unwrap();
        assert!(std::fs::read_to_string(&ca)
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
