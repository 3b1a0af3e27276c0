//! Credentials that CloudWatch stops accepting mid-run, for real, through `cwl-proxy` in front
//! of moto (moto accepts any credentials): an expired session token, a key it does not know, a
//! policy that denies. Whatever the error, nothing is lost, the operator reads one clear error
//! per episode (never a secret) and a metric, and delivery resumes on its own once the
//! credentials are accepted again: when the fault ends, and, through the SDK's real refresh,
//! when container credentials (ECS / EKS Pod Identity's endpoint) are renewed.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const WAIT: Duration = Duration::from_secs(120);
const GROUP: &str = "/faults/auth";
const SECRET: &str = "planted-secret-do-not-log";
const TOKEN: &str = "planted-session-token-do-not-log";
const REFUSED: &str = "CloudWatch refuses the credentials";

fn config(port: u16, endpoint: &str) -> String {
    format!(
        "data_dir = \"@DATA@\"\n[sources.s]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\n{}",
        cw_sink(&["s"], GROUP, "s", endpoint)
            .format("message")
            .max_backoff("500ms")
    )
}

fn lines(tag: &str, n: usize) -> String {
    (0..n).map(|i| format!("{tag} {i:03}\n")).collect()
}

/// Every line of logferry's log that reports a refused-credentials episode.
fn episodes(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains(REFUSED)).collect()
}

/// What every test checks after the fault: all `n` events exactly once, one error-level
/// episode naming `code`, its end logged, the metrics back to normal, no secret printed.
fn assert_recovered(lf: &Logferry, metrics: &str, moto: &Moto, n: usize, code: &str) {
    let got = wait_events(&moto.endpoint(), GROUP, "s", n, WAIT);
    let counts = tally(&got);
    assert_eq!(counts.len(), n, "lost events\n{}", lf.log());
    // A refused call was never ingested: resending it cannot duplicate anything.
    assert_eq!(got.len(), n, "duplicates");
    let ended = wait_until(WAIT, || {
        metric(metrics, "logferry_sink_auth_failing", &[]) == Some(0.0)
    });
    assert!(ended, "auth_failing still set\n{}", lf.log());
    let log = lf.log();
    let errors = episodes(&log);
    assert_eq!(
        errors.len(),
        1,
        "one error per episode, not per request\n{log}"
    );
    assert!(errors[0].contains("\"level\":\"ERROR\""), "{}", errors[0]);
    assert!(
        errors[0].contains(code),
        "the error names the code: {}",
        errors[0]
    );
    assert!(
        log.contains("CloudWatch accepts the credentials again"),
        "recovery not logged\n{log}"
    );
    for secret in [SECRET, TOKEN] {
        assert!(!log.contains(secret), "a secret in the log\n{log}");
        let (_, body) = http_get(metrics, "/metrics").expect("metrics");
        assert!(!body.contains(secret), "a secret in the metrics");
    }
}

/// Delivers a first wave, then makes CloudWatch answer `fault` (an `error_code` fault) and
/// sends a second; returns what the test needs to end the fault and check the books.
fn refused_while_sending(code: &str, fault: serde_json::Value) -> (Moto, Proxy, Logferry, String) {
    let moto = Moto::start().expect("moto");
    let proxy = proxy(&moto.endpoint());
    let port = free_port();
    let addr = format!("127.0.0.1:{}", free_port());
    let a = addr.clone();
    let lf = Logferry::start_with(&config(port, &proxy.endpoint()), move |cmd| {
        cmd.env("LOGFERRY_METRICS_ADDRESS", &a)
            .env("AWS_SESSION_TOKEN", TOKEN);
    });
    lf.wait_listening(1);
    tcp_send(port, lines("before", 10).as_bytes());
    wait_events(&moto.endpoint(), GROUP, "s", 10, WAIT);

    proxy.set_faults(&fault).expect("faults");
    tcp_send(port, lines(code, 200).as_bytes());
    let refused = wait_until(WAIT, || {
        metric(&addr, "logferry_sink_auth_refused_total", &[]) >= Some(3.0)
    });
    assert!(refused, "no refused call counted\n{}", lf.log());
    (moto, proxy, lf, addr)
}

fn refused_until_cleared(code: &str) {
    let fault = serde_json::json!({ "error_code": code });
    let (moto, proxy, lf, metrics) = refused_while_sending(code, fault);
    assert_eq!(
        metric(&metrics, "logferry_sink_auth_failing", &[]),
        Some(1.0),
        "{}",
        lf.log()
    );
    assert_eq!(
        events(&moto.endpoint(), GROUP, "s").len(),
        10,
        "sent through refused credentials?"
    );
    // Still refused, still retried: the sink backs off but never gives the events up.
    let before = metric(&metrics, "logferry_sink_auth_refused_total", &[]).unwrap_or(0.0);
    let retried = wait_until(WAIT, || {
        metric(&metrics, "logferry_sink_auth_refused_total", &[]) > Some(before + 2.0)
    });
    assert!(retried, "gave up retrying\n{}", lf.log());

    proxy.clear_faults().expect("clear");
    assert_recovered(&lf, &metrics, &moto, 210, code);
    let stats = proxy.stats().expect("stats");
    assert_eq!(stats["violations"], 0, "{stats:#}");
}

#[test]
fn an_expired_token_keeps_every_event_logs_one_error_and_resumes_when_accepted() {
    refused_until_cleared("ExpiredTokenException");
}

#[test]
fn access_denied_keeps_every_event_logs_one_error_and_resumes_when_allowed() {
    refused_until_cleared("AccessDeniedException");
}

#[test]
fn an_unrecognized_key_refused_for_some_requests_ends_by_itself() {
    let code = "UnrecognizedClientException";
    // Refused for the next 8 calls only: nobody clears anything, delivery resumes by itself.
    let fault = serde_json::json!({ "error_code": code, "error_count": 8 });
    let (moto, proxy, lf, metrics) = refused_while_sending(code, fault);
    assert_recovered(&lf, &metrics, &moto, 210, code);
    let stats = proxy.stats().expect("stats");
    assert_eq!(stats["faults_injected"]["aws_error"], 8, "{stats:#}");
    assert_eq!(
        metric(&metrics, "logferry_sink_auth_refused_total", &[]),
        Some(8.0),
        "every refused call counted"
    );
}

/// A stand-in for the ECS agent / EKS Pod Identity agent: serves the current access key id as
/// container credentials that expire 30 s after each fetch (the SDK renews them 10 to 15 s
/// before that). Returns the URL and the number of fetches.
fn container_credentials(key: Arc<Mutex<String>>) -> (String, Arc<Mutex<u32>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/creds", listener.local_addr().expect("addr"));
    let fetches = Arc::new(Mutex::new(0u32));
    let counted = fetches.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut req = Vec::new();
            let mut buf = [0u8; 1024];
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => req.extend_from_slice(&buf[..n]),
                }
            }
            let id = key.lock().map(|k| k.clone()).unwrap_or_default();
            let body = serde_json::json!({
                "AccessKeyId": id,
                "SecretAccessKey": SECRET,
                "Token": TOKEN,
                "Expiration": rfc3339(now_ms() + 30_000),
            })
            .to_string();
            if let Ok(mut n) = counted.lock() {
                *n += 1;
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, fetches)
}

#[test]
fn expired_container_credentials_renewed_by_the_sdk_resume_delivery_without_loss() {
    let moto = Moto::start().expect("moto");
    let proxy = proxy(&moto.endpoint());
    let key = Arc::new(Mutex::new("AKIDOLDEXPIRED".to_string()));
    let (url, fetches) = container_credentials(key.clone());
    // Only calls signed with the old key are refused, as CloudWatch refuses an expired
    // session's: the renewed key gets through with no change to the fault.
    proxy
        .set_faults(&serde_json::json!({
            "error_code": "ExpiredTokenException",
            "error_access_key_id": "AKIDOLDEXPIRED",
        }))
        .expect("faults");
    let port = free_port();
    let metrics = format!("127.0.0.1:{}", free_port());
    let a = metrics.clone();
    let lf = Logferry::start_with(&config(port, &proxy.endpoint()), move |cmd| {
        // No key in the environment or a profile: the SDK's chain reaches the container
        // credentials endpoint.
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
            .env("AWS_CONFIG_FILE", "/nonexistent/config")
            .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &url)
            .env("LOGFERRY_METRICS_ADDRESS", &a);
    });
    lf.wait_listening(1);
    tcp_send(port, lines("renewed", 100).as_bytes());
    let refused = wait_until(WAIT, || {
        metric(&metrics, "logferry_sink_auth_refused_total", &[]) >= Some(3.0)
    });
    assert!(refused, "the old key was not refused\n{}", lf.log());
    assert!(
        events(&moto.endpoint(), GROUP, "s").is_empty(),
        "sent with expired credentials?"
    );
    let fetched_before = *fetches.lock().expect("fetches");

    // The agent hands out a new key; the SDK fetches it when the old one nears expiry.
    *key.lock().expect("key") = "AKIDNEWRENEWED".to_string();
    assert_recovered(&lf, &metrics, &moto, 100, "ExpiredTokenException");
    let fetched = *fetches.lock().expect("fetches");
    assert!(
        fetched > fetched_before,
        "delivered without renewing the credentials ({fetched} fetches)"
    );
    let stats = proxy.stats().expect("stats");
    assert!(
        stats["faults_injected"]["aws_error"].as_u64() >= Some(3),
        "{stats:#}"
    );
    assert_eq!(stats["violations"], 0, "{stats:#}");
}
