//! The container log formats, rejoining and pod paths against real lines: CRI and Docker
//! records as the runtimes write them, split and malformed ones, and the kubelet's path layouts.

use std::path::PathBuf;

use super::*;

const T: i64 = 1_704_164_645_123; // 2024-01-02T03:04:05.123Z

fn cri(line: &str) -> Result<ContainerLine<'_>, FormatError> {
    parse_cri(line.as_bytes())
}

#[test]
fn cri_full_and_partial_lines() {
    let l = cri("2024-01-02T03:04:05.123456789Z stdout F hello world").expect("valid");
    assert_eq!(l.timestamp_ms, T);
    assert_eq!((l.stream, l.partial), (Stream::Stdout, false));
    assert_eq!(&l.message[..], b"hello world");
    assert!(
        matches!(l.message, Cow::Borrowed(_)),
        "CRI messages are not copied"
    );

    let l = cri("2024-01-02T03:04:05.123Z stderr P part one").expect("valid");
    assert_eq!(
        (l.stream, l.partial, &l.message[..]),
        (Stream::Stderr, true, &b"part one"[..])
    );
    // Only the first of colon-separated tags counts.
    assert!(
        cri("2024-01-02T03:04:05.123Z stdout P:x:y m")
            .expect("valid")
            .partial
    );
    assert!(
        !cri("2024-01-02T03:04:05.123Z stdout F:x m")
            .expect("valid")
            .partial
    );
}

#[test]
fn cri_message_is_everything_after_the_tag_space() {
    let l = cri("2024-01-02T03:04:05.123Z stdout F   indented  ").expect("valid");
    assert_eq!(&l.message[..], b"  indented  ");
    // A trailing newline is tolerated and not part of the message.
    let l = cri("2024-01-02T03:04:05.123Z stdout F x\n").expect("valid");
    assert_eq!(&l.message[..], b"x");
    // Empty messages, with or without the space after the tag.
    for line in [
        "2024-01-02T03:04:05.123Z stdout F ",
        "2024-01-02T03:04:05.123Z stdout F",
    ] {
        let l = cri(line).expect("valid");
        assert_eq!((&l.message[..], l.partial), (&b""[..], false), "{line:?}");
    }
    // Bytes that are not UTF-8 pass through.
    let l = parse_cri(b"2024-01-02T03:04:05.123Z stdout F \xff\xfe").expect("valid");
    assert_eq!(&l.message[..], b"\xff\xfe");
}

#[test]
fn cri_timestamp_with_offset() {
    let l = cri("2024-01-02T05:34:05.123456+02:30 stdout F x").expect("valid");
    assert_eq!(l.timestamp_ms, T);
}

#[test]
fn cri_errors_say_what_is_wrong() {
    let cases = [
        ("", FormatError::Empty),
        ("\n", FormatError::Empty),
        ("hello world", FormatError::CriTimestamp("hello".into())),
        (
            "2024-13-02T03:04:05Z stdout F x",
            FormatError::CriTimestamp("2024-13-02T03:04:05Z".into()),
        ),
        ("2024-01-02T03:04:05Z", FormatError::CriMissingStream),
        ("2024-01-02T03:04:05Z  F x", FormatError::CriMissingStream),
        (
            "2024-01-02T03:04:05Z stdin F x",
            FormatError::CriStream("stdin".into()),
        ),
        ("2024-01-02T03:04:05Z stdout", FormatError::CriMissingTag),
        ("2024-01-02T03:04:05Z stdout  x", FormatError::CriMissingTag),
        (
            "2024-01-02T03:04:05Z stdout X x",
            FormatError::CriTag("X".into()),
        ),
        (
            "2024-01-02T03:04:05Z stdout :P x",
            FormatError::CriTag(":P".into()),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(cri(line), Err(want), "{line:?}");
    }
    assert_eq!(
        FormatError::CriMissingStream.to_string(),
        "CRI line: missing stream field"
    );
    let long = format!("{} stdout F x", "9".repeat(100));
    let Err(FormatError::CriTimestamp(q)) = cri(&long) else {
        panic!("bad timestamp accepted")
    };
    assert!(
        q.chars().count() == 65 && q.ends_with('…'),
        "quoted value is bounded: {q}"
    );
}

#[test]
fn docker_json_full_line_unescaped() {
    let line = br#"{"log":"tab\there \"q\" \u00e9 \\ end\n","stream":"stderr","time":"2024-01-02T03:04:05.123456789Z"}"#;
    let l = parse_docker_json(line).expect("valid");
    assert_eq!(l.timestamp_ms, T);
    assert_eq!((l.stream, l.partial), (Stream::Stderr, false));
    assert_eq!(
        std::str::from_utf8(&l.message),
        Ok("tab\there \"q\" é \\ end")
    );
}

#[test]
fn docker_json_any_key_order_extra_keys_and_partials() {
    let line = br#"{"time":"2024-01-02T03:04:05.123Z","attrs":{"tag":"x"},"stream":"stdout","log":"no newline yet"}"#;
    let l = parse_docker_json(line).expect("valid");
    assert_eq!(
        (l.stream, l.partial, &l.message[..]),
        (Stream::Stdout, true, &b"no newline yet"[..])
    );
    // Without escapes the message is borrowed from the line, not copied.
    assert!(matches!(l.message, Cow::Borrowed(_)));
    // An empty line is a full record with an empty message.
    let l =
        parse_docker_json(br#"{"log":"\n","stream":"stdout","time":"2024-01-02T03:04:05.123Z"}"#)
            .expect("valid");
    assert_eq!((l.partial, &l.message[..]), (false, &b""[..]));
    // Only one trailing newline is the terminator; a "\r" before it is content.
    let l = parse_docker_json(
        br#"{"log":"a\r\n\n","stream":"stdout","time":"2024-01-02T03:04:05.123Z"}"#,
    )
    .expect("valid");
    assert_eq!(&l.message[..], b"a\r\n");
    // Trailing newline/whitespace after the object (the raw file line) is fine.
    assert!(parse_docker_json(
        b"{\"log\":\"x\\n\",\"stream\":\"stdout\",\"time\":\"2024-01-02T03:04:05Z\"}\n"
    )
    .is_ok());
}

#[test]
fn docker_json_errors_say_what_is_wrong() {
    let missing = [
        (
            r#"{"stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
            "log",
        ),
        (
            r#"{"log":null,"stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
            "log",
        ),
        (r#"{"log":"x\n","time":"2024-01-02T03:04:05Z"}"#, "stream"),
        (r#"{"log":"x\n","stream":"stdout"}"#, "time"),
    ];
    for (line, field) in missing {
        assert_eq!(
            parse_docker_json(line.as_bytes()),
            Err(FormatError::DockerMissingField(field))
        );
    }
    assert_eq!(
        parse_docker_json(br#"{"log":"x\n","stream":"stdin","time":"2024-01-02T03:04:05Z"}"#),
        Err(FormatError::DockerStream("stdin".into()))
    );
    assert_eq!(
        parse_docker_json(br#"{"log":"x\n","stream":"stdout","time":"yesterday"}"#),
        Err(FormatError::DockerTime("yesterday".into()))
    );
    for bad in [
        &br#"{"log":"x\n","stream":"std"#[..],
        b"{nope}",
        br#"{"log":1,"stream":"stdout","time":"2024-01-02T03:04:05Z"}"#,
        b"{\"log\":\"\xff\"}",
    ] {
        let err = parse_docker_json(bad).expect_err("invalid JSON");
        assert!(matches!(err, FormatError::DockerJson(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("Docker json-file line: invalid JSON: "),
            "{err}"
        );
    }
    assert_eq!(parse_docker_json(b"  "), Err(FormatError::Empty));
}

#[test]
fn auto_detects_the_format() {
    let d = parse_auto(br#"{"log":"a\n","stream":"stdout","time":"2024-01-02T03:04:05.123Z"}"#)
        .expect("docker");
    let c = parse_auto(b"2024-01-02T03:04:05.123Z stdout F a").expect("cri");
    assert_eq!(
        d,
        ContainerLine {
            message: Cow::Borrowed(&b"a"[..]),
            ..c.clone()
        }
    );
    assert_eq!((c.timestamp_ms, &c.message[..]), (T, &b"a"[..]));
    assert_eq!(parse_auto(b""), Err(FormatError::Empty));
    assert!(matches!(parse_auto(b"{"), Err(FormatError::DockerJson(_))));
}

fn info(ns: &str, pod: &str, uid: &str, container: &str) -> Option<PodInfo> {
    Some(PodInfo {
        namespace: ns.into(),
        pod: pod.into(),
        pod_uid: uid.into(),
        container: container.into(),
    })
}

#[test]
fn namespace_globs_keep_or_refuse_a_pods_files() {
    let pods = |ns: &str| PathBuf::from(format!("/var/log/pods/{ns}_web-0_u1/nginx/0.log"));
    let link = |ns: &str| {
        PathBuf::from(format!(
            "/var/log/containers/web-0_{ns}_nginx-{}.log",
            "a".repeat(64)
        ))
    };
    let s = |v: &[&str]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>();
    let exclude = NamespaceFilter::new(&[], &s(&["kube-*", "monitoring"])).expect("globs");
    for (ns, kept) in [
        ("kube-system", false),
        ("kube-public", false),
        ("monitoring", false),
        ("default", true),
        ("my-kube-app", true),
    ] {
        assert_eq!(exclude.admits(&pods(ns)), kept, "{ns}");
        assert_eq!(exclude.admits(&link(ns)), kept, "{ns} (containers link)");
    }
    assert!(
        exclude.admits(Path::new("/var/log/app.log")),
        "no namespace"
    );
    let include = NamespaceFilter::new(&s(&["team-*"]), &s(&["team-b"])).expect("globs");
    assert!(include.admits(&pods("team-a")));
    assert!(!include.admits(&pods("team-b")), "exclude wins");
    assert!(!include.admits(&pods("default")));
    assert!(
        !include.admits(Path::new("/var/log/app.log")),
        "cannot be shown to be included"
    );
    assert!(NamespaceFilter::default().admits(Path::new("/var/log/app.log")));
    assert_eq!(
        NamespaceFilter::new(&[], &s(&["[a"]))
            .expect_err("bad glob")
            .0,
        "[a"
    );
}

#[test]
fn pod_info_from_pods_directory() {
    let uid = "0f1c2d3e-4a5b-6c7d-8e9f-001122334455";
    let want = info("kube-system", "coredns-5d78c9869d-abcde", uid, "coredns");
    for file in [
        "0.log",
        "12.log",
        "0.log.20240102-030405",
        "0.log.20240102-030405.gz",
    ] {
        let path =
            format!("/var/log/pods/kube-system_coredns-5d78c9869d-abcde_{uid}/coredns/{file}");
        assert_eq!(pod_info_from_path(Path::new(&path)), want, "{path}");
    }
    // Any root, relative too.
    let tmp = PathBuf::from("/tmp/.tmpXyZ/pods/default_web-0_abc123/nginx/3.log");
    assert_eq!(
        pod_info_from_path(&tmp),
        info("default", "web-0", "abc123", "nginx")
    );
    assert_eq!(
        pod_info_from_path(Path::new("default_web-0_u/c/0.log")),
        info("default", "web-0", "u", "c")
    );
}

#[test]
fn pod_info_from_containers_symlink_name() {
    let id = "4f2a".repeat(16);
    let path = format!("/var/log/containers/coredns-5d78c9869d-abcde_kube-system_coredns-{id}.log");
    assert_eq!(
        pod_info_from_path(Path::new(&path)),
        info("kube-system", "coredns-5d78c9869d-abcde", "", "coredns")
    );
    // A container name with dashes: the id is taken from the end.
    let path = format!("/x/web-0_default_log-forwarder-{id}.log");
    assert_eq!(
        pod_info_from_path(Path::new(&path)),
        info("default", "web-0", "", "log-forwarder")
    );
}

#[test]
fn pod_info_rejects_other_paths() {
    let id = "ab".repeat(32);
    for path in [
        "/var/log/syslog".to_string(),
        "/var/log/app/server.log".to_string(),
        "/var/log/pods/default_web-0_uid/nginx/current.log".to_string(),
        "/var/log/pods/default_web-0_uid/nginx/0.logs".to_string(),
        "/var/log/pods/default_web-0_uid/nginx/0.txt".to_string(),
        "/var/log/pods/default_web-0/nginx/0.log".to_string(),
        "/var/log/pods/default_web_0_uid/nginx/0.log".to_string(),
        "/var/log/pods/_web-0_uid/nginx/0.log".to_string(),
        "0.log".to_string(),
        "/0.log".to_string(),
        format!("/var/log/containers/web-0_default_nginx-{}.log", &id[..63]),
        format!(
            "/var/log/containers/web-0_default_nginx-{}zz.log",
            &id[..62]
        ),
        format!("/var/log/containers/web-0_default_nginx_x-{id}.log"),
        format!("/var/log/containers/web-0_nginx-{id}.log"),
        format!("/var/log/containers/web-0_default_nginx{id}.log"),
        // The 64-byte split would fall inside "é": no panic, no match.
        format!("/var/log/containers/é{}.log", &id[..63]),
    ] {
        assert_eq!(pod_info_from_path(Path::new(&path)), None, "{path}");
    }
}

fn line(ts: i64, stream: Stream, partial: bool, msg: &str) -> ContainerLine<'_> {
    ContainerLine {
        timestamp_ms: ts,
        stream,
        partial,
        message: Cow::Borrowed(msg.as_bytes()),
    }
}

/// A joined record as (stream, timestamp, message, end offset, parts).
fn summary(j: Option<Joined>) -> Option<(Stream, i64, Vec<u8>, u64, usize)> {
    j.map(|j| {
        (
            j.stream,
            j.timestamp_ms,
            j.message.to_vec(),
            j.end_offset,
            j.parts,
        )
    })
}

/// Nothing is held back: no position bound, nothing to flush.
fn assert_holds_nothing(j: &mut PartialJoiner) {
    assert_eq!(j.held_from(), None);
    assert!(j.flush().is_empty());
}

#[test]
fn joiner_passes_full_lines_through() {
    let mut j = PartialJoiner::new(100);
    let out = j
        .push(line(5, Stream::Stdout, false, "hello"), 0, 40)
        .expect("full");
    assert_eq!(
        out,
        Joined {
            timestamp_ms: 5,
            stream: Stream::Stdout,
            message: Bytes::from_static(b"hello"),
            end_offset: 40,
            truncated_bytes: 0,
            parts: 1
        }
    );
    assert_holds_nothing(&mut j);
}

/// `push_from` gives what `push` gives, a full line's message as a slice of the line read
/// (same memory), and still joins partial lines and caps long ones.
#[test]
fn joiner_push_from_slices_full_lines_and_joins_the_rest() {
    let src = Bytes::from_static(b"2024-01-02T03:04:05.123Z stdout F hello");
    let mut j = PartialJoiner::new(100);
    let out = j
        .push_from(&src, parse_cri(&src).expect("cri"), 0, 40)
        .expect("full");
    assert_eq!(out.message, Bytes::from_static(b"hello"));
    assert_eq!((out.timestamp_ms, out.parts, out.end_offset), (T, 1, 40));
    assert_eq!(out.message.as_ptr(), src[34..].as_ptr());
    assert_holds_nothing(&mut j);

    let p = Bytes::from_static(b"2024-01-02T03:04:05.123Z stdout P hel");
    let f = Bytes::from_static(b"2024-01-02T03:04:06.000Z stdout F lo");
    assert!(j
        .push_from(&p, parse_cri(&p).expect("cri"), 40, 78)
        .is_none());
    let out = j
        .push_from(&f, parse_cri(&f).expect("cri"), 78, 115)
        .expect("joined");
    assert_eq!(
        (&out.message[..], out.parts, out.timestamp_ms),
        (&b"hello"[..], 2, T)
    );

    let mut capped = PartialJoiner::new(3);
    let out = capped
        .push_from(&src, parse_cri(&src).expect("cri"), 0, 40)
        .expect("full");
    assert_eq!((&out.message[..], out.truncated_bytes), (&b"hel"[..], 2));
}

#[test]
fn joiner_joins_partials_per_stream_and_guards_positions() {
    let mut j = PartialJoiner::new(100);
    assert_eq!(j.push(line(1, Stream::Stdout, true, "a1 "), 100, 110), None);
    assert_eq!(j.held_from(), Some(100));
    assert_eq!(j.push(line(2, Stream::Stderr, true, "b1 "), 110, 120), None);
    assert_eq!(j.push(line(3, Stream::Stdout, true, "a2 "), 120, 130), None);
    // The oldest held first part bounds the position.
    assert_eq!(j.held_from(), Some(100));
    let a = j.push(line(4, Stream::Stdout, false, "a3"), 130, 140);
    assert_eq!(
        summary(a),
        Some((Stream::Stdout, 1, b"a1 a2 a3".to_vec(), 140, 3))
    );
    // stdout is done; the stderr part from 110 is still held.
    assert_eq!(j.held_from(), Some(110));
    let b = j.push(line(5, Stream::Stderr, false, "b2"), 140, 150);
    assert_eq!(
        summary(b),
        Some((Stream::Stderr, 2, b"b1 b2".to_vec(), 150, 2))
    );
    assert_eq!(j.held_from(), None);
}

#[test]
fn joiner_flush_emits_oldest_first() {
    let mut j = PartialJoiner::new(100);
    j.push(line(1, Stream::Stderr, true, "err"), 0, 10);
    j.push(line(2, Stream::Stdout, true, "out"), 10, 20);
    j.push(line(3, Stream::Stderr, true, "+"), 20, 30);
    let out = j.flush();
    let got: Vec<_> = out
        .iter()
        .map(|o| (o.stream, &o.message[..], o.end_offset, o.parts))
        .collect();
    assert_eq!(
        got,
        [
            (Stream::Stderr, &b"err+"[..], 30, 2),
            (Stream::Stdout, &b"out"[..], 20, 1)
        ]
    );
    assert_holds_nothing(&mut j);
}

#[test]
fn joiner_caps_at_max_bytes_and_counts_the_rest() {
    let mut j = PartialJoiner::new(8);
    assert_eq!(j.push(line(1, Stream::Stdout, true, "12345"), 0, 10), None);
    assert_eq!(j.push(line(1, Stream::Stdout, true, "67890"), 10, 20), None);
    assert_eq!(j.push(line(1, Stream::Stdout, true, "abc"), 20, 30), None);
    let out = j
        .push(line(1, Stream::Stdout, false, "de"), 30, 40)
        .expect("full");
    assert_eq!(
        (
            &out.message[..],
            out.truncated_bytes,
            out.parts,
            out.end_offset
        ),
        (&b"12345678"[..], 2 + 3 + 2, 4, 40)
    );
    // A single full line over the limit is cut too, owned or borrowed.
    let out = j
        .push(line(1, Stream::Stdout, false, "0123456789"), 40, 50)
        .expect("full");
    assert_eq!(
        (&out.message[..], out.truncated_bytes),
        (&b"01234567"[..], 2)
    );
    let owned = ContainerLine {
        message: Cow::Owned(b"0123456789".to_vec()),
        ..line(1, Stream::Stderr, false, "")
    };
    let out = j.push(owned, 50, 60).expect("full");
    assert_eq!(
        (&out.message[..], out.truncated_bytes),
        (&b"01234567"[..], 2)
    );
    // max_bytes 0 keeps nothing and still accounts for everything.
    let mut j = PartialJoiner::new(0);
    let out = j
        .push(line(1, Stream::Stdout, false, "abc"), 0, 4)
        .expect("full");
    assert_eq!((&out.message[..], out.truncated_bytes), (&b""[..], 3));
}

#[test]
fn joiner_with_parsed_cri_lines() {
    let text = "2024-01-02T03:04:05.123Z stdout P hel\n\
                2024-01-02T03:04:06.000Z stderr F oops\n\
                2024-01-02T03:04:07.000Z stdout F lo\n";
    let mut j = PartialJoiner::new(1024);
    let mut out = Vec::new();
    let mut offset = 0u64;
    for l in text.split_inclusive('\n') {
        let end = offset + l.len() as u64;
        if let Some(joined) = j.push(parse_auto(l.as_bytes()).expect("valid"), offset, end) {
            out.push(joined);
        }
        offset = end;
    }
    let got: Vec<_> = out
        .iter()
        .map(|o| (o.stream, o.timestamp_ms, &o.message[..]))
        .collect();
    assert_eq!(
        got,
        [
            (Stream::Stderr, T + 877, &b"oops"[..]),
            (Stream::Stdout, T, &b"hello"[..])
        ]
    );
    assert_eq!(out[1].end_offset, text.len() as u64);
}
