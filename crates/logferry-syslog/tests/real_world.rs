//! Table of real-world syslog lines (and captures from util-linux `logger`) with the fields
//! each must parse into.

use bytes::{Bytes, BytesMut};
use logferry_syslog::{datagram_frame, parse, Format, Framer, Framing, Message, ParseOptions};

/// 2026-11-25T16:20:39Z, the "now" of every row unless stated otherwise.
const NOW: i64 = 1_795_623_639_000;
const OPTS: ParseOptions = ParseOptions {
    now_unix_ms: NOW,
    local_utc_offset_secs: 0,
};

#[derive(Debug, Default, PartialEq)]
struct Expect {
    format: Option<Format>,
    priority: Option<u8>,
    ts: Option<i64>,
    host: Option<&'static str>,
    app: Option<&'static str>,
    procid: Option<&'static str>,
    msgid: Option<&'static str>,
    sd: Option<&'static str>,
    msg: &'static [u8],
}

/// Comparable view: format, priority, timestamp, the five string fields, message.
type Fields = (
    Format,
    Option<u8>,
    Option<i64>,
    [Option<String>; 5],
    Vec<u8>,
);

fn actual(m: &Message<'_>) -> Fields {
    let own = |s: Option<&str>| s.map(str::to_owned);
    (
        m.format,
        m.priority,
        m.timestamp_unix_ms,
        [
            own(m.hostname),
            own(m.app_name),
            own(m.procid),
            own(m.msgid),
            own(m.structured_data),
        ],
        m.message.to_vec(),
    )
}

fn expected(e: &Expect) -> Fields {
    let own = |s: Option<&str>| s.map(str::to_owned);
    (
        e.format.unwrap_or(Format::Raw),
        e.priority,
        e.ts,
        [
            own(e.host),
            own(e.app),
            own(e.procid),
            own(e.msgid),
            own(e.sd),
        ],
        e.msg.to_vec(),
    )
}

/// An RFC 3164 line with priority `priority` and a timestamp that reads as [`NOW`]: the
/// fields most rows below share.
fn rfc3164_now(priority: u8) -> Expect {
    Expect {
        format: Some(Format::Rfc3164),
        priority: Some(priority),
        ts: Some(NOW),
        ..Expect::default()
    }
}

/// RFC 5424 section 6.5's `evntslog` examples: one header, then `sd` and `msg`.
fn evntslog(sd: &'static str, msg: &'static [u8]) -> Expect {
    Expect {
        format: Some(Format::Rfc5424),
        priority: Some(165),
        ts: Some(1_065_910_455_003),
        host: Some("mymachine.example.com"),
        app: Some("evntslog"),
        msgid: Some("ID47"),
        sd: Some(sd),
        msg,
        ..Expect::default()
    }
}

/// A line with nothing recognisable: all of it is the message.
fn raw(line: &'static [u8]) -> (&'static [u8], Expect) {
    let e = Expect {
        msg: line,
        ..Expect::default()
    };
    (line, e)
}

/// A line with a priority and nothing else recognisable before `msg`.
fn priority_only(line: &'static [u8], priority: u8, msg: &'static [u8]) -> (&'static [u8], Expect) {
    let e = Expect {
        priority: Some(priority),
        msg,
        ..Expect::default()
    };
    (line, e)
}

fn table() -> Vec<(&'static [u8], Expect)> {
    use Format::*;
    // `host app: x` after a well-formed but impossible timestamp.
    let impossible_timestamp = || Expect {
        ts: None,
        host: Some("host"),
        app: Some("app"),
        msg: b"x",
        ..rfc3164_now(13)
    };
    vec![
        // RFC 5424 section 6.5 examples.
        (
            b"<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - \xEF\xBB\xBF'su root' failed for lonvick on /dev/pts/8",
            Expect {
                format: Some(Rfc5424),
                priority: Some(34),
                ts: Some(1_065_910_455_003),
                host: Some("mymachine.example.com"),
                app: Some("su"),
                msgid: Some("ID47"),
                msg: b"'su root' failed for lonvick on /dev/pts/8",
                ..Expect::default()
            },
        ),
        (
            b"<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
            Expect {
                format: Some(Rfc5424),
                priority: Some(165),
                ts: Some(1_061_727_255_000),
                host: Some("192.0.2.1"),
                app: Some("myproc"),
                procid: Some("8710"),
                msg: b"%% It's time to make the do-nuts.",
                ..Expect::default()
            },
        ),
        (
            b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] \xEF\xBB\xBFAn application event log entry...",
            evntslog("[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"]", b"An application event log entry..."),
        ),
        (
            b"<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]",
            evntslog("[exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"][examplePriority@32473 class=\"high\"]", b""),
        ),
        // SD with every escape, a `]` and a `[` inside values, and a message that looks like SD.
        (
            br#"<13>1 2026-11-25T16:20:39Z host app - - [x@1 a="q\"]\\" b="\]" c="[x"] msg [not sd]"#,
            Expect {
                format: Some(Rfc5424),
                priority: Some(13),
                ts: Some(NOW),
                host: Some("host"),
                app: Some("app"),
                sd: Some(r#"[x@1 a="q\"]\\" b="\]" c="[x"]"#),
                msg: b"msg [not sd]",
                ..Expect::default()
            },
        ),
        // IPv6 hostname and a zone offset.
        (
            b"<14>1 2026-11-25T16:20:39+01:00 fe80::1 app 1 - - hello",
            Expect {
                format: Some(Rfc5424),
                priority: Some(14),
                ts: Some(1_795_620_039_000),
                host: Some("fe80::1"),
                app: Some("app"),
                procid: Some("1"),
                msg: b"hello",
                ..Expect::default()
            },
        ),
        // Empty MSG after the separating space; everything nil.
        (
            b"<14>1 2026-11-25T16:20:39Z h a p m - ",
            Expect {
                format: Some(Rfc5424),
                priority: Some(14),
                ts: Some(NOW),
                host: Some("h"),
                app: Some("a"),
                procid: Some("p"),
                msgid: Some("m"),
                msg: b"",
                ..Expect::default()
            },
        ),
        (
            b"<13>1 - - - - - -",
            Expect {
                format: Some(Rfc5424),
                priority: Some(13),
                msg: b"",
                ..Expect::default()
            },
        ),
        // logger --rfc3164 over TCP.
        (
            b"<11>Nov 25 16:20:39 vm legacy: bsd style message",
            Expect {
                host: Some("vm"),
                app: Some("legacy"),
                msg: b"bsd style message",
                ..rfc3164_now(11)
            },
        ),
        // journalctl -o short | ncat: no PRI.
        (
            b"Nov 25 16:20:39 node-1 kubelet[2174]: I1125 16:20:39.123456    2174 kubelet.go:123] text",
            Expect {
                format: Some(Rfc3164),
                ts: Some(NOW),
                host: Some("node-1"),
                app: Some("kubelet"),
                procid: Some("2174"),
                msg: b"I1125 16:20:39.123456    2174 kubelet.go:123] text",
                ..Expect::default()
            },
        ),
        // Space-padded day and a message starting with `[`.
        (
            b"Nov  5 06:01:02 node-1 kernel: [    0.000000] Linux version 6.1.0",
            Expect {
                format: Some(Rfc3164),
                ts: Some(1_793_858_462_000),
                host: Some("node-1"),
                app: Some("kernel"),
                msg: b"[    0.000000] Linux version 6.1.0",
                ..Expect::default()
            },
        ),
        // journalctl -o short-iso and -o short-precise.
        (
            b"2026-11-25T17:20:39+0100 node-1 cron[5]: (root) CMD (run-parts /etc/cron.hourly)",
            Expect {
                format: Some(Rfc3164),
                ts: Some(NOW),
                host: Some("node-1"),
                app: Some("cron"),
                procid: Some("5"),
                msg: b"(root) CMD (run-parts /etc/cron.hourly)",
                ..Expect::default()
            },
        ),
        (
            b"Nov 25 16:20:39.123456 node-1 systemd[1]: Started session-5.scope.",
            Expect {
                format: Some(Rfc3164),
                ts: Some(1_795_623_639_123),
                host: Some("node-1"),
                app: Some("systemd"),
                procid: Some("1"),
                msg: b"Started session-5.scope.",
                ..Expect::default()
            },
        ),
        // Missing hostname: glibc syslog() to /dev/log, and a bare `app:`.
        (
            b"<30>Nov 25 16:20:39 systemd[1]: Started Session 5 of user root.",
            Expect {
                app: Some("systemd"),
                procid: Some("1"),
                msg: b"Started Session 5 of user root.",
                ..rfc3164_now(30)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 app: msg",
            Expect {
                app: Some("app"),
                msg: b"msg",
                ..rfc3164_now(13)
            },
        ),
        // tag[pid] without a colon, with and without hostname.
        (
            b"<13>Nov 25 16:20:39 app[77] msg without colon",
            Expect {
                app: Some("app"),
                procid: Some("77"),
                msg: b"msg without colon",
                ..rfc3164_now(13)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 host app[77] msg without colon",
            Expect {
                host: Some("host"),
                app: Some("app"),
                procid: Some("77"),
                msg: b"msg without colon",
                ..rfc3164_now(13)
            },
        ),
        // rsyslog RSYSLOG_ForwardFormat / high-precision file format.
        (
            b"<30>2026-11-25T16:20:39.123456+00:00 node-1 sshd[991]: Accepted publickey for core",
            Expect {
                format: Some(Rfc3164),
                priority: Some(30),
                ts: Some(1_795_623_639_123),
                host: Some("node-1"),
                app: Some("sshd"),
                procid: Some("991"),
                msg: b"Accepted publickey for core",
                ..Expect::default()
            },
        ),
        (
            b"2026-11-25T16:20:39.123456+02:00 node-1 sshd[991]: msg",
            Expect {
                format: Some(Rfc3164),
                ts: Some(1_795_616_439_123),
                host: Some("node-1"),
                app: Some("sshd"),
                procid: Some("991"),
                msg: b"msg",
                ..Expect::default()
            },
        ),
        // Explicit year after the day.
        (
            b"<13>Nov 25 2025 16:20:39 host tag: m",
            Expect {
                format: Some(Rfc3164),
                priority: Some(13),
                ts: Some(1_764_087_639_000),
                host: Some("host"),
                app: Some("tag"),
                msg: b"m",
                ..Expect::default()
            },
        ),
        // IPv6 hostnames in BSD position.
        (
            b"<13>Nov 25 16:20:39 ::1 app: msg",
            Expect {
                host: Some("::1"),
                app: Some("app"),
                msg: b"msg",
                ..rfc3164_now(13)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 fe80::1 app[3]: msg",
            Expect {
                host: Some("fe80::1"),
                app: Some("app"),
                procid: Some("3"),
                msg: b"msg",
                ..rfc3164_now(13)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 2001:db8::5 app: msg",
            Expect {
                host: Some("2001:db8::5"),
                app: Some("app"),
                msg: b"msg",
                ..rfc3164_now(13)
            },
        ),
        // Messages starting with `[`: after a tag, and with no tag at all.
        (
            b"<13>Nov 25 16:20:39 host app: [WARN] something",
            Expect {
                host: Some("host"),
                app: Some("app"),
                msg: b"[WARN] something",
                ..rfc3164_now(13)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 host [12345.678] raw kernel text",
            Expect {
                host: Some("host"),
                msg: b"[12345.678] raw kernel text",
                ..rfc3164_now(13)
            },
        ),
        (
            b"<6>Nov 25 16:20:39 [12345.678] raw kernel text",
            Expect {
                msg: b"[12345.678] raw kernel text",
                ..rfc3164_now(6)
            },
        ),
        // Cisco IOS: sequence number, `*` for an unsynchronised clock, colon after the time.
        (
            b"<189>52: *Nov 24 18:46:11.123: %SYS-5-CONFIG_I: Configured from console by vty0 (10.0.0.1)",
            Expect {
                format: Some(Rfc3164),
                priority: Some(189),
                ts: Some(1_795_545_971_123),
                app: Some("%SYS-5-CONFIG_I"),
                msg: b"Configured from console by vty0 (10.0.0.1)",
                ..Expect::default()
            },
        ),
        (
            b"<187>Nov 25 16:20:39 switch01 %LINK-3-UPDOWN: Interface GigabitEthernet0/1, changed state to down",
            Expect {
                host: Some("switch01"),
                app: Some("%LINK-3-UPDOWN"),
                msg: b"Interface GigabitEthernet0/1, changed state to down",
                ..rfc3164_now(187)
            },
        ),
        // Tags with slashes, BOM after the tag, empty pid, a hostname with nothing after it.
        (
            b"<22>Nov 25 16:20:39 mx1 postfix/smtpd[1234]: connect from unknown[10.0.0.9]",
            Expect {
                host: Some("mx1"),
                app: Some("postfix/smtpd"),
                procid: Some("1234"),
                msg: b"connect from unknown[10.0.0.9]",
                ..rfc3164_now(22)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 host app[]: \xEF\xBB\xBFhi",
            Expect {
                host: Some("host"),
                app: Some("app"),
                msg: b"hi",
                ..rfc3164_now(13)
            },
        ),
        (
            b"<13>Nov 25 16:20:39 host",
            Expect {
                host: Some("host"),
                msg: b"",
                ..rfc3164_now(13)
            },
        ),
        // No tag: the word after the host starts the message (colon inside, not at the end).
        (
            b"<13>Nov 25 16:20:39 host app:msg rest",
            Expect {
                host: Some("host"),
                msg: b"app:msg rest",
                ..rfc3164_now(13)
            },
        ),
        // Header with a PRI and a tag but no timestamp.
        (
            b"<14>myapp[42]: started",
            Expect {
                format: Some(Rfc3164),
                priority: Some(14),
                app: Some("myapp"),
                procid: Some("42"),
                msg: b"started",
                ..Expect::default()
            },
        ),
        // Well-formed but impossible timestamps: recognised, reported as absent.
        (b"<13>Feb 30 16:20:39 host app: x", impossible_timestamp()),
        (b"<13>Nov 25 25:20:39 host app: x", impossible_timestamp()),
        // Invalid UTF-8 in a header field: that field is None, the rest survives.
        (
            b"<13>Nov 25 16:20:39 h\xffst app: x\xfe",
            Expect {
                app: Some("app"),
                msg: b"x\xfe",
                ..rfc3164_now(13)
            },
        ),
        // Raw: nothing recognisable.
        raw(b"hello world"),
        raw(b"-- Boot 3f2a6c0e9b0d4f7f8e1c2d3b4a5f6e7d --"),
        priority_only(b"<13>hello world", 13, b"hello world"),
        raw(b"<999>Nov 25 16:20:39 host app: x"),
        raw(b"<abc>x"),
        raw(b"app: looks like a tag but has no PRI or timestamp"),
        priority_only(b"<13>1 not a 5424 header", 13, b"1 not a 5424 header"),
        raw(b""),
    ]
}

#[test]
fn real_world_table() {
    let mut failures = Vec::new();
    for (line, expect) in table() {
        let got = actual(&parse(line, &OPTS));
        if got != expected(&expect) {
            failures.push(format!(
                "{}\n   got: {got:?}\n  want: {:?}",
                String::from_utf8_lossy(line),
                expected(&expect)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn year_inference_across_new_year() {
    // Received 10 s into 2027: a Dec 31 line is from 2026, a Jan 1 line from 2027.
    let opts = ParseOptions {
        now_unix_ms: 1_798_761_610_000,
        local_utc_offset_secs: 0,
    };
    let m = parse(b"<13>Dec 31 23:59:59 host app: x", &opts);
    assert_eq!(m.timestamp_unix_ms, Some(1_798_761_599_000));
    let m = parse(b"<13>Jan  1 00:00:10 host app: x", &opts);
    assert_eq!(m.timestamp_unix_ms, Some(1_798_761_610_000));
}

#[test]
fn zoneless_timestamps_use_the_local_offset() {
    // Senders at UTC+03:00.
    let opts = ParseOptions {
        now_unix_ms: NOW,
        local_utc_offset_secs: 3 * 3600,
    };
    let m = parse(b"<13>Nov 25 16:20:39 host app: x", &opts);
    assert_eq!(m.timestamp_unix_ms, Some(1_795_612_839_000));
    let m = parse(b"2026-11-25T16:20:39 host app: x", &opts);
    assert_eq!(m.timestamp_unix_ms, Some(1_795_612_839_000));
    // An explicit zone wins over the local offset.
    let m = parse(b"<13>1 2026-11-25T16:20:39Z h a - - -", &opts);
    assert_eq!(m.timestamp_unix_ms, Some(NOW));
}

#[test]
fn sd_iteration_unescapes_values() {
    let m = parse(
        br#"<13>1 - h a - - [meta@32473 q="say \"hi\" [x\] c:\\dir" n="2"][timeQuality tzKnown="1"] m"#,
        &OPTS,
    );
    // Every parameter of every element, as (element, name, unescaped value).
    let values: Vec<_> = m
        .sd_elements()
        .flat_map(|e| {
            e.params()
                .map(move |p| (e.id, p.name, p.value().into_owned()))
        })
        .collect();
    assert_eq!(
        values,
        [
            ("meta@32473", "q", r#"say "hi" [x] c:\dir"#.to_owned()),
            ("meta@32473", "n", "2".to_owned()),
            ("timeQuality", "tzKnown", "1".to_owned()),
        ]
    );
    assert_eq!(m.message, b"m");
}

/// Captured with `ncat -l -k 127.0.0.1 PORT > logger-tcp-stream.bin` while running, in order:
/// `logger --rfc5424 --octet-count --tcp -t myapp -p local4.notice --msgid ID47 ...`,
/// `logger --rfc5424 --tcp -t myapp --id=4242 ...` (newline framing),
/// `logger --rfc3164 --tcp -t legacy -p user.err ...`,
/// `logger --rfc5424 --octet-count --tcp -t sdtest --sd-id meta@32473 --sd-param ...`,
/// `logger --rfc5424=notq,notime,nohost --octet-count --tcp -t bare ...` (util-linux 2.38.1).
#[test]
fn logger_tcp_capture() {
    let stream = include_bytes!("fixtures/logger-tcp-stream.bin");
    let mut framer = Framer::default();
    let mut buf = BytesMut::from(&stream[..]);
    let mut frames = Vec::new();
    while let Some(f) = framer.decode(&mut buf) {
        frames.push(f);
    }
    frames.extend(framer.decode_eof(&mut buf));
    let framings: Vec<_> = frames.iter().map(|f| f.framing).collect();
    assert_eq!(
        framings,
        [
            Framing::OctetCounted,
            Framing::NewlineDelimited,
            Framing::NewlineDelimited,
            Framing::OctetCounted,
            Framing::OctetCounted
        ]
    );
    let opts = ParseOptions {
        now_unix_ms: 1_795_634_940_000,
        local_utc_offset_secs: 0,
    };
    let msgs: Vec<_> = frames.iter().map(|f| parse(&f.data, &opts)).collect();

    assert_eq!(msgs[0].format, Format::Rfc5424);
    assert_eq!(msgs[0].priority, Some(165));
    assert_eq!(msgs[0].timestamp_unix_ms, Some(1_795_634_938_489));
    assert_eq!(msgs[0].hostname, Some("vm"));
    assert_eq!(msgs[0].app_name, Some("myapp"));
    assert_eq!(msgs[0].procid, None);
    assert_eq!(msgs[0].msgid, Some("ID47"));
    assert_eq!(
        msgs[0].structured_data,
        Some(r#"[timeQuality tzKnown="1" isSynced="0"]"#)
    );
    assert_eq!(msgs[0].message, b"octet counted 5424 message");

    assert_eq!(msgs[1].procid, Some("4242"));
    assert_eq!(msgs[1].message, b"newline framed 5424 message");

    assert_eq!(msgs[2].format, Format::Rfc3164);
    assert_eq!(msgs[2].priority, Some(11));
    assert_eq!(msgs[2].app_name, Some("legacy"));
    assert_eq!(msgs[2].message, b"bsd style message");

    let sd: Vec<_> = msgs[3].sd_elements().map(|e| e.id).collect();
    assert_eq!(sd, ["timeQuality", "meta@32473"]);
    assert_eq!(msgs[3].message, b"with structured data");

    assert_eq!(msgs[4].timestamp_unix_ms, None);
    assert_eq!(msgs[4].hostname, None);
    assert_eq!(msgs[4].app_name, Some("bare"));
    assert_eq!(msgs[4].message, b"no time no host");
}

/// Captured with `ncat -u -l` from `logger --rfc3164 -d -t udpapp -p daemon.warning ...` and
/// `logger --rfc5424 -d -t udpapp --id=77 ...`.
#[test]
fn logger_udp_captures() {
    let opts = ParseOptions {
        now_unix_ms: 1_795_634_940_000,
        local_utc_offset_secs: 0,
    };
    let f = datagram_frame(
        Bytes::from_static(include_bytes!("fixtures/logger-udp-3164.bin")),
        1024,
    );
    let m = parse(&f.data, &opts);
    assert_eq!(m.format, Format::Rfc3164);
    assert_eq!((m.facility(), m.severity()), (Some(3), Some(4)));
    assert_eq!(m.timestamp_unix_ms, Some(1_795_634_943_000));
    assert_eq!(m.app_name, Some("udpapp"));
    assert_eq!(m.message, b"udp bsd datagram");

    let f = datagram_frame(
        Bytes::from_static(include_bytes!("fixtures/logger-udp-5424.bin")),
        1024,
    );
    let m = parse(&f.data, &opts);
    assert_eq!(m.format, Format::Rfc5424);
    assert_eq!(m.procid, Some("77"));
    assert_eq!(m.message, b"udp 5424 datagram");
}
