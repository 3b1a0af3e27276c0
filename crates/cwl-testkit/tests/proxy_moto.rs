//! Tests of `cwl-proxy` in front of a real `moto_server`: a round trip through the proxy is
//! readable back from moto, every fault kind is observable by the client and counted, and
//! limit violations are recorded although moto accepts the requests.

use std::io;
use std::time::{Duration, Instant};

use cwl_testkit::server::now_ms;
use cwl_testkit::{
    call, create_group, create_stream, list_groups, list_streams, put_events, read_events, Moto,
    Proxy,
};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_cwl-proxy");

fn is_dropped(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::BrokenPipe
    )
}

/// moto behind a proxy started with `args`, and `group` with `streams` made through the proxy;
/// returns both (keep moto alive) and the proxy's endpoint.
fn proxied_moto_with(args: &[&str], group: &str, streams: &[&str]) -> (Moto, Proxy, String) {
    let moto = Moto::start().unwrap();
    let proxy = Proxy::start_with_args(BIN, &moto.endpoint(), args).unwrap();
    let ep = proxy.endpoint();
    create_group(&ep, group).unwrap();
    for stream in streams {
        create_stream(&ep, group, stream).unwrap();
    }
    (moto, proxy, ep)
}

#[test]
fn round_trip_through_proxy_and_paged_read_back() {
    let (moto, proxy, ep) = proxied_moto_with(&[], "/logferry/test", &["host-a", "host-b"]);
    let t0 = now_ms() - 60_000;
    // 12,500 events in two batches: reading back needs more than one GetLogEvents page.
    let msgs: Vec<String> = (0..12_500).map(|i| format!("line {i} é")).collect();
    for chunk in (0..12_500usize).collect::<Vec<_>>().chunks(10_000) {
        let evs: Vec<(i64, &str)> = chunk
            .iter()
            .map(|&i| (t0 + i as i64, msgs[i].as_str()))
            .collect();
        let (st, v) = put_events(&ep, "/logferry/test", "host-a", &evs).unwrap();
        assert_eq!(st, 200, "{v}");
    }
    let back = read_events(&moto.endpoint(), "/logferry/test", "host-a").unwrap();
    assert_eq!(back.len(), 12_500);
    for (i, (ts, m)) in back.iter().enumerate() {
        assert_eq!((*ts, m.as_str()), (t0 + i as i64, msgs[i].as_str()));
    }
    assert_eq!(
        list_streams(&moto.endpoint(), "/logferry/test").unwrap(),
        vec!["host-a", "host-b"]
    );
    assert_eq!(
        list_groups(&moto.endpoint()).unwrap(),
        vec!["/logferry/test"]
    );

    let stats = proxy.stats().unwrap();
    assert_eq!(stats["violations"], 0, "{stats}");
    assert_eq!(stats["put_requests"], 2);
    assert_eq!(stats["put_events_forwarded"], 12_500);
    assert_eq!(stats["put_events_acknowledged"], 12_500);
    assert_eq!(stats["requests_by_operation"]["CreateLogStream"], 2);
    let puts = proxy.puts().unwrap();
    let first = &puts["puts"][0];
    assert_eq!(first["events"], 10_000);
    assert_eq!(first["stream"], "host-a");
    assert_eq!(first["first_ts"], t0);
    assert_eq!(first["last_ts"], t0 + 9_999);
    assert_eq!(first["status"], 200);

    proxy.reset_stats().unwrap();
    assert_eq!(proxy.stats().unwrap()["requests"], 0);

    // Drop kills moto: no process left behind.
    let pid = moto.pid() as i32;
    drop(proxy);
    drop(moto);
    assert_ne!(
        unsafe { libc::kill(pid, 0) },
        0,
        "moto_server still running"
    );
}

#[test]
fn every_fault_kind_is_observable_and_counted() {
    let (moto, proxy, ep) = proxied_moto_with(&["--seed", "42"], "g", &["s"]);
    let t = now_ms();

    proxy
        .set_faults(&json!({
            "script": ["throttle", "error_503", "error_500", "reset", "reset_after_forward", "none"],
            "operations": ["PutLogEvents"],
        }))
        .unwrap();
    // Other operations are not affected by the script.
    assert_eq!(call(&ep, "DescribeLogGroups", &json!({})).unwrap().0, 200);

    let (st, v) = put_events(&ep, "g", "s", &[(t, "throttled")]).unwrap();
    assert_eq!(
        (st, v["__type"].as_str()),
        (400, Some("ThrottlingException"))
    );
    assert_eq!(v["message"], "Rate exceeded");
    let (st, v) = put_events(&ep, "g", "s", &[(t, "503")]).unwrap();
    assert_eq!(
        (st, v["__type"].as_str()),
        (503, Some("ServiceUnavailableException"))
    );
    let (st, _) = put_events(&ep, "g", "s", &[(t, "500")]).unwrap();
    assert_eq!(st, 500);
    let e = put_events(&ep, "g", "s", &[(t, "reset")]).unwrap_err();
    assert!(is_dropped(&e), "{e:?}");
    let e = put_events(&ep, "g", "s", &[(t, "stored but unanswered")]).unwrap_err();
    assert!(is_dropped(&e), "{e:?}");
    let (st, _) = put_events(&ep, "g", "s", &[(t, "passes")]).unwrap();
    assert_eq!(st, 200);

    // Only the reset-after-forward and the passing event reached moto.
    let back: Vec<String> = read_events(&moto.endpoint(), "g", "s")
        .unwrap()
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_eq!(back, vec!["stored but unanswered", "passes"]);

    // Latency.
    proxy.set_faults(&json!({"latency_ms": 300})).unwrap();
    let start = Instant::now();
    assert_eq!(put_events(&ep, "g", "s", &[(t, "slow")]).unwrap().0, 200);
    assert!(start.elapsed() >= Duration::from_millis(300));

    // Outage: nothing answered, whatever the operation; admin API still works.
    proxy.set_faults(&json!({"outage": true})).unwrap();
    let e = call(&ep, "CreateLogGroup", &json!({"logGroupName": "x"})).unwrap_err();
    assert!(is_dropped(&e), "{e:?}");
    proxy
        .set_faults(&json!({"outage": true, "outage_mode": "reset"}))
        .unwrap();
    let e = put_events(&ep, "g", "s", &[(t, "lost")]).unwrap_err();
    assert!(is_dropped(&e), "{e:?}");

    // Percentages with a filter: 100 % throttle on CreateLogStream only.
    proxy
        .set_faults(&json!({"throttle_pct": 100, "operations": ["CreateLogStream"]}))
        .unwrap();
    let body = json!({"logGroupName": "g", "logStreamName": "t"});
    assert_eq!(call(&ep, "CreateLogStream", &body).unwrap().0, 400);
    assert_eq!(put_events(&ep, "g", "s", &[(t, "ok")]).unwrap().0, 200);
    // Unknown fields are refused, so typos do not silently disable a test.
    assert!(proxy.set_faults(&json!({"throtle_pct": 10})).is_err());
    proxy.clear_faults().unwrap();

    let stats = proxy.stats().unwrap();
    let f = &stats["faults_injected"];
    for kind in [
        "throttle",
        "error_503",
        "error_500",
        "reset",
        "reset_after_forward",
    ] {
        assert!(f[kind].as_u64().unwrap() >= 1, "{kind}: {stats}");
    }
    assert_eq!(f["throttle"], 2, "{stats}");
    assert_eq!(f["outage"], 2, "{stats}");
    // slow + stored + passes + ok (the reset-after-forward one was ingested, not acked).
    assert_eq!(stats["put_events_ingested"], 4, "{stats}");
    assert_eq!(stats["put_events_acknowledged"], 3, "{stats}");
    let puts = proxy.puts().unwrap();
    let raf = puts["puts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["fault"] == "reset_after_forward")
        .unwrap();
    assert_eq!(raf["upstream_status"], 200);
    assert!(raf["status"].is_null());
}

#[test]
fn seeded_percentages_are_reproducible() {
    let moto = Moto::start().unwrap();
    let run = |seed: &str| {
        let proxy = Proxy::start_with_args(BIN, &moto.endpoint(), &["--seed", seed]).unwrap();
        proxy
            .set_faults(&json!({"throttle_pct": 30, "error_503_pct": 20}))
            .unwrap();
        (0..40)
            .map(|_| {
                call(&proxy.endpoint(), "DescribeLogGroups", &json!({}))
                    .unwrap()
                    .0
            })
            .collect::<Vec<u16>>()
    };
    let a = run("7");
    assert_eq!(a, run("7"));
    let throttled = a.iter().filter(|&&s| s == 400).count();
    let unavailable = a.iter().filter(|&&s| s == 503).count();
    assert!(throttled > 3 && unavailable > 1, "{a:?}");
}

#[test]
fn limit_violations_recorded_though_moto_accepts() {
    let (moto, proxy, ep) = proxied_moto_with(&[], "g", &["s"]);
    let t = now_ms() - 3_600_000;
    let day = 24 * 3600 * 1000;

    let too_many: Vec<(i64, &str)> = (0..10_001).map(|_| (t, "x")).collect();
    assert_eq!(put_events(&ep, "g", "s", &too_many).unwrap().0, 200);
    let half = "h".repeat(600_000);
    assert_eq!(
        put_events(&ep, "g", "s", &[(t, &half), (t, &half)])
            .unwrap()
            .0,
        200
    );
    assert_eq!(
        put_events(&ep, "g", "s", &[(t - day - 1, "a"), (t, "b")])
            .unwrap()
            .0,
        200
    );
    assert_eq!(put_events(&ep, "g", "s", &[(t, "")]).unwrap().0, 200);
    // moto enforces order itself (or not): either way the proxy records it.
    let _ = put_events(&ep, "g", "s", &[(t, "b"), (t - 1, "a")]).unwrap();
    // A name moto accepts but CloudWatch refuses.
    let _ = call(&ep, "CreateLogGroup", &json!({"logGroupName": "bad name"})).unwrap();

    let stats = proxy.stats().unwrap();
    assert_eq!(stats["violations"], 6, "{stats}");
    let rules: Vec<&str> = stats["violation_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        vec![
            "too_many_events",
            "batch_too_large",
            "span_too_long",
            "empty_message",
            "not_chronological",
            "bad_group_name"
        ]
    );
    let first = &stats["violation_list"][0];
    assert_eq!(first["group"], "g");
    assert_eq!(first["stream"], "s");
    assert_eq!(first["events"], 10_001);
    assert_eq!(first["batch_bytes"], 10_001 * 27);
    // moto stored the oversize batch: the proxy is the only one to notice.
    assert!(read_events(&moto.endpoint(), "g", "s").unwrap().len() >= 10_001);
}

#[test]
fn account_quota_is_one_bucket_shared_by_every_client() {
    let (moto, proxy, ep) = proxied_moto_with(&[], "/quota", &[]);
    // Two "nodes" (threads with their own connections) share 5 calls/s with a burst of 5.
    proxy
        .set_quota(&json!({"CreateLogStream": {"per_second": 5, "burst": 5}}))
        .unwrap();
    let started = Instant::now();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let nodes: Vec<_> = (0..2)
            .map(|node| {
                let ep = ep.clone();
                s.spawn(move || {
                    (0..10)
                        .map(|i| {
                            let body = json!({"logGroupName": "/quota", "logStreamName": format!("n{node}-{i}")});
                            call(&ep, "CreateLogStream", &body).unwrap().0
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        nodes.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // The burst plus what the bucket earned while the calls ran, whichever node made them.
    assert!(
        ok >= 5 && (ok as f64) <= 5.0 + 5.0 * elapsed + 1.0,
        "{ok} in {elapsed:.2}s"
    );
    let stats = proxy.stats().unwrap();
    assert_eq!(
        stats["quota_throttled"]["CreateLogStream"],
        20 - ok as u64,
        "{stats:#}"
    );
    // Other operations are not limited, and throttled calls never reached moto.
    assert_eq!(stats["quota_throttled"].get("CreateLogGroup"), None);
    assert_eq!(list_streams(&moto.endpoint(), "/quota").unwrap().len(), ok);
    // The bucket refills at its rate.
    std::thread::sleep(Duration::from_millis(1100));
    let body = json!({"logGroupName": "/quota", "logStreamName": "later"});
    assert_eq!(call(&ep, "CreateLogStream", &body).unwrap().0, 200);
    // Bad specs are refused; an empty body removes every quota.
    assert!(proxy
        .set_quota(&json!({"PutLogEvents": {"rate": 1}}))
        .is_err());
    proxy.set_quota(&json!({})).unwrap();
}
