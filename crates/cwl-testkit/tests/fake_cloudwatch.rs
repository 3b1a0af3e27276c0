//! Tests of the `fake-cloudwatch` binary: valid requests are counted, every limit violation
//! is answered with InvalidParameterException and counted, stats add up (over `GET /stats`
//! and in the line printed at SIGTERM), and HTTPS works with the CA it writes.

use std::sync::Arc;

use cwl_testkit::server::now_ms;
use cwl_testkit::{call, call_raw, put_events, FakeCloudWatch};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_fake-cloudwatch");

fn expect_invalid(r: (u16, Value), rule: &str) {
    assert_eq!(r.0, 400, "{}", r.1);
    assert_eq!(r.1["__type"], "InvalidParameterException", "{}", r.1);
    assert!(
        r.1["message"].as_str().unwrap().contains(rule),
        "{rule} not in {}",
        r.1
    );
}

#[test]
fn accepts_valid_rejects_each_violation_and_counts() {
    let fake = FakeCloudWatch::start_with_binary(BIN, &["--plain-http"]).unwrap();
    let ep = fake.endpoint();
    assert!(ep.starts_with("http://127.0.0.1:"));
    let now = now_ms();

    // Unknown stream first: ResourceNotFoundException, like the real service.
    let (st, v) = put_events(&ep, "g", "s", &[(now, "x")]).unwrap();
    assert_eq!(
        (st, v["__type"].as_str()),
        (400, Some("ResourceNotFoundException"))
    );

    assert_eq!(
        call(&ep, "CreateLogGroup", &json!({"logGroupName": "g"}))
            .unwrap()
            .0,
        200
    );
    let again = call(&ep, "CreateLogGroup", &json!({"logGroupName": "g"})).unwrap();
    assert_eq!(again.1["__type"], "ResourceAlreadyExistsException");
    let body = json!({"logGroupName": "g", "logStreamName": "s"});
    assert_eq!(call(&ep, "CreateLogStream", &body).unwrap().0, 200);
    let body = json!({"logGroupName": "g", "retentionInDays": 7});
    assert_eq!(call(&ep, "PutRetentionPolicy", &body).unwrap().0, 200);
    let bad = json!({"logGroupName": "g", "retentionInDays": 8});
    expect_invalid(call(&ep, "PutRetentionPolicy", &bad).unwrap(), "retention");

    // Valid: 3 events, 1 + 5 + 3 ("h\u00e9" is 3 UTF-8 bytes) message bytes.
    let (st, v) = put_events(
        &ep,
        "g",
        "s",
        &[(now, "a"), (now, "hello"), (now + 1, "hé")],
    )
    .unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["nextSequenceToken"], "1");

    // Exactly at the limits: accepted.
    let max_msg = "m".repeat(1_048_576 - 26);
    assert_eq!(
        put_events(&ep, "g", "s", &[(now, &max_msg)]).unwrap().0,
        200
    );
    let many: Vec<(i64, &str)> = (0..10_000).map(|_| (now, "z")).collect();
    assert_eq!(put_events(&ep, "g", "s", &many).unwrap().0, 200);

    // Violations.
    let too_many: Vec<(i64, &str)> = (0..10_001).map(|_| (now, "z")).collect();
    expect_invalid(
        put_events(&ep, "g", "s", &too_many).unwrap(),
        "too_many_events",
    );
    let half = "h".repeat(600_000);
    expect_invalid(
        put_events(&ep, "g", "s", &[(now, &half), (now, &half)]).unwrap(),
        "batch_too_large",
    );
    let big = "b".repeat(1_048_576 - 25);
    expect_invalid(
        put_events(&ep, "g", "s", &[(now, &big)]).unwrap(),
        "event_too_large",
    );
    expect_invalid(
        put_events(&ep, "g", "s", &[(now, "b"), (now - 1, "a")]).unwrap(),
        "not_chronological",
    );
    let day = 24 * 3600 * 1000;
    expect_invalid(
        put_events(&ep, "g", "s", &[(now - day - 1, "a"), (now, "b")]).unwrap(),
        "span_too_long",
    );
    expect_invalid(
        put_events(&ep, "g", "s", &[(now, "")]).unwrap(),
        "empty_message",
    );
    expect_invalid(put_events(&ep, "g", "s", &[]).unwrap(), "empty_batch");
    let r = call_raw(&ep, "PutLogEvents", b"{not json").unwrap();
    assert_eq!(r.status, 400);

    // Old / future events: 200 with rejectedLogEventsInfo (AWS semantics), not counted.
    let (st, v) = put_events(
        &ep,
        "g",
        "s",
        &[
            (now - 8 * day, "expired"),
            (now, "ok"),
            (now + 3 * 3600 * 1000, "future"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // 8 days span > 24 h: that is a violation first.
    assert_eq!(st, 400, "{v}");
    let (st, v) = put_events(
        &ep,
        "g",
        "s",
        &[(now, "ok"), (now + 3 * 3600 * 1000, "future")],
    )
    .unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["rejectedLogEventsInfo"]["tooNewLogEventStartIndex"], 1,
        "{v}"
    );

    // Describe*.
    let (_, v) = call(&ep, "DescribeLogGroups", &json!({})).unwrap();
    assert_eq!(v["logGroups"][0]["logGroupName"], "g");
    assert_eq!(v["logGroups"][0]["retentionInDays"], 7);
    let (_, v) = call(&ep, "DescribeLogStreams", &json!({"logGroupName": "g"})).unwrap();
    assert_eq!(v["logStreams"][0]["logStreamName"], "s");

    let stats = fake.stats().unwrap();
    let expected_events = 3 + 1 + 10_000 + 1;
    let expected_bytes = 9 + (1_048_576 - 26) + 10_000 + 2;
    assert_eq!(stats["events"], expected_events, "{stats}");
    assert_eq!(stats["message_bytes"], expected_bytes, "{stats}");
    assert_eq!(stats["by_stream"]["g/s"], expected_events, "{stats}");
    // 7 limit violations + malformed body + the 8-day batch + bad retention.
    assert_eq!(stats["violations"], 10, "{stats}");
    assert_eq!(stats["rejected_events"], 1, "{stats}");
    assert_eq!(stats["violations_by_rule"]["too_many_events"], 1, "{stats}");
    let requests = stats["requests"].as_u64().unwrap();
    assert!(requests >= 20, "{stats}");

    let last = fake.stop().unwrap();
    assert_eq!(last["events"], expected_events, "{last}");
    assert_eq!(last["violations"], 10, "{last}");
}

#[test]
fn auto_create_accepts_unknown_streams() {
    let fake = FakeCloudWatch::start_with_binary(BIN, &["--plain-http", "--auto-create"]).unwrap();
    let (st, _) = put_events(&fake.endpoint(), "g2", "s2", &[(now_ms(), "x")]).unwrap();
    assert_eq!(st, 200);
    assert_eq!(fake.stats().unwrap()["by_stream"]["g2/s2"], 1);
}

/// One HTTPS connection, two requests (keep-alive), trusting only the CA file.
#[test]
fn https_with_generated_ca_and_keep_alive() {
    use http_body_util::{BodyExt, Full};
    use hyper::Request;
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};

    let fake = FakeCloudWatch::start_with_binary(BIN, &[]).unwrap();
    let ep = fake.endpoint();
    assert!(ep.starts_with("https://127.0.0.1:"), "{ep}");
    let addr = ep.trim_start_matches("https://").to_string();
    let ca = CertificateDer::from_pem_file(fake.ca_path().unwrap()).unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
            .await
            .unwrap();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        for (op, body) in [
            ("CreateLogGroup", r#"{"logGroupName":"tls"}"#),
            (
                "CreateLogStream",
                r#"{"logGroupName":"tls","logStreamName":"s"}"#,
            ),
        ] {
            let req = Request::post("/")
                .header("host", "127.0.0.1")
                .header("x-amz-target", format!("Logs_20140328.{op}"))
                .header("content-type", "application/x-amz-json-1.1")
                .body(Full::new(bytes::Bytes::from(body)))
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), 200);
            let b = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&b[..], b"{}");
        }
    });
    let stats = fake.stop().unwrap();
    assert_eq!(stats["requests"], 2, "{stats}");
    assert_eq!(stats["by_stream"]["tls/s"], 0, "{stats}");
}
