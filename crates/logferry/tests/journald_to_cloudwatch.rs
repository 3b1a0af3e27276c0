//! End to end: a real systemd-journald -> the real logferry binary (`type = "journald"`) ->
//! (cwl-proxy ->) a real moto_server, read back.
//!
//! journald runs in a private mount namespace (`cwl_testkit::Journald`), so these tests need
//! root and `/lib/systemd/systemd-journald`; without them each test prints `SKIPPED: ...` and
//! passes. Every entry a test writes carries a unique `<tag> <index>` message prefix so that
//! loss and duplicates are counted exactly (journald's own entries, sync markers and the like
//! are shipped too and ignored by the counts).

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use cwl_testkit::journald::{journalctl, JournalSender, JOURNAL_REMOTE};
use cwl_testkit::Journald;
use support::*;

const GROUP: &str = "/journal/test";
const WAIT: Duration = Duration::from_secs(120);

/// A config with one journald source `j` reading `dir` and one sink `cw` writing to
/// `GROUP`/`node` in `format`.
fn config(dir: &str, endpoint: &str, source_extra: &str, format: &str) -> String {
    let lines = format!("directory = \"{dir}\"\n{source_extra}");
    let sink = cw_sink(&["j"], GROUP, "node", endpoint)
        .max_backoff("1s")
        .format(format);
    pipeline(&source("j", "journald", &lines), &sink)
}

fn dir_of(jd: &Journald) -> String {
    jd.log_dir().display().to_string()
}

/// A journald with `journald_conf` (None, the test skipped, where it cannot run) and a moto.
fn journald_and_moto(journald_conf: &str) -> Option<(Journald, Moto)> {
    let jd = Journald::start(journald_conf)?;
    Some((jd, Moto::start().expect("moto")))
}

/// logferry following `jd` from its first entry into moto, as `message` lines.
fn start_from_the_beginning(jd: &Journald, moto: &Moto) -> Logferry {
    Logferry::start(&config(
        &dir_of(jd),
        &moto.endpoint(),
        "start = \"beginning\"",
        "message",
    ))
}

/// Writes entries `range` tagged `tag`: identifiers, priorities and pids vary; the message is
/// `<tag> <index:06> ...`.
fn write_entries(s: &JournalSender, tag: &str, range: std::ops::Range<usize>) {
    for i in range {
        let ident = format!("app{}", i % 5);
        let prio = (i % 8).to_string();
        let pid = (1000 + i % 7).to_string();
        s.send(&[
            (
                "MESSAGE",
                format!("{tag} {i:06} payload {}", "x".repeat(i % 50)).as_bytes(),
            ),
            ("SYSLOG_IDENTIFIER", ident.as_bytes()),
            ("PRIORITY", prio.as_bytes()),
            ("SYSLOG_PID", pid.as_bytes()),
            ("SYSLOG_FACILITY", b"3"),
        ]);
    }
}

/// Index of a tagged message (`<tag> <index:06>...`), if it is one of `tag`'s.
/// `short` lines have the message after the `host ident[pid]: ` header, `json` ones in the
/// `message` member.
fn index_of(text: &str, tag: &str) -> Option<usize> {
    let msg = if text.starts_with(tag) {
        text
    } else if let Some(at) = text.find("\"message\":\"") {
        &text[at + 11..]
    } else {
        let at = text.find(": ")?;
        &text[at + 2..]
    };
    let rest = msg.strip_prefix(tag)?.strip_prefix(' ')?;
    rest.get(..6)?.parse().ok()
}

/// How many times each index of `tag` appears in `texts`.
fn counts<'a>(texts: impl IntoIterator<Item = &'a str>, tag: &str) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for t in texts {
        if let Some(i) = index_of(t, tag) {
            *m.entry(i).or_insert(0) += 1;
        }
    }
    m
}

/// Waits until the stream holds `n` distinct entries of `tag` and a read a second later
/// agrees (late duplicates show up); returns all event texts of the stream.
fn wait_tagged(
    endpoint: &str,
    stream: &str,
    tag: &str,
    n: usize,
    timeout: Duration,
) -> Vec<String> {
    let mut got: Vec<String> = Vec::new();
    let reached = wait_until(timeout, || {
        got = events(endpoint, GROUP, stream)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        if counts(got.iter().map(String::as_str), tag).len() < n {
            return false;
        }
        std::thread::sleep(Duration::from_secs(1));
        let again: Vec<String> = events(endpoint, GROUP, stream)
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        let stable = again.len() == got.len();
        got = again;
        stable
    });
    // A result thrown away (`let _ = wait_tagged(..)`) must still fail the test.
    assert!(
        reached,
        "{stream}: {} of {n} `{tag}` entries arrived within {timeout:?}",
        counts(got.iter().map(String::as_str), tag).len()
    );
    got
}

/// Asserts every index in `0..n` of `tag` appears exactly once.
fn assert_exactly_once(texts: &[String], tag: &str, n: usize, lf: &Logferry) {
    let c = counts(texts.iter().map(String::as_str), tag);
    let missing: Vec<usize> = (0..n).filter(|i| !c.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "{} of {n} `{tag}` entries lost (first {:?})\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        tail(&lf.log())
    );
    assert_none_twice(&c, &format!("`{tag}` entries"));
    assert_eq!(c.len(), n, "unexpected `{tag}` indexes");
}

fn tail(log: &str) -> &str {
    let mut start = log.len().saturating_sub(6000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    &log[start..]
}

fn cursor_file(lf: &Logferry) -> String {
    std::fs::read_to_string(lf.data_dir().join("journald/j.cursor")).expect("cursor file")
}

/// `journalctl -D dir --after-cursor=CURSOR -o cat` lines.
fn after_cursor(jd: &Journald, cursor: &str) -> Vec<String> {
    let out = Command::new("journalctl")
        .arg("-D")
        .arg(jd.log_dir())
        .args(["--no-pager", "-q", "-o", "cat"])
        .arg(format!("--after-cursor={}", cursor.trim()))
        .output()
        .expect("journalctl");
    assert!(
        out.status.success(),
        "journalctl rejected the cursor {cursor:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_log(lf: &Logferry, needle: &str, n: usize) {
    let ok = wait_until(Duration::from_secs(30), || {
        lf.log().matches(needle).count() >= n
    });
    assert!(ok, "logferry never logged {needle:?}:\n{}", lf.log());
}

#[test]
fn entries_reach_cloudwatch_once_as_short_and_json() {
    let Some((mut jd, moto)) = journald_and_moto("") else {
        return;
    };
    let proxy = proxy(&moto.endpoint());
    let dir = dir_of(&jd);
    // One source feeding two sinks: `short` and `json` lines of the same entries.
    let mut cfg = config(
        &dir,
        &proxy.endpoint(),
        "start = \"beginning\"\nfields = [\"BIG\"]",
        "short",
    );
    let json = cw_sink(&["j"], GROUP, "json", &proxy.endpoint()).named("cwjson");
    cfg.push_str(&format!("\n{}", json.format("json")));
    let n = 5000;
    let s = jd.sender();
    write_entries(&s, "plain", 0..n);
    // Specials: multi-line, binary (invalid UTF-8 and a NUL), a 6 KB message (compressed in
    // the file), and a 5 KB extra field.
    s.send(&[
        ("MESSAGE", b"special 000000 multi\nline two\nline three"),
        ("SYSLOG_IDENTIFIER", b"multi"),
    ]);
    s.send(&[
        ("MESSAGE", b"special 000001 binary \xff\xfe\x00 end"),
        ("SYSLOG_IDENTIFIER", b"binary"),
    ]);
    let long = format!("special 000002 long {}", "L".repeat(6000));
    s.send(&[("MESSAGE", long.as_bytes()), ("SYSLOG_IDENTIFIER", b"long")]);
    let big = "B".repeat(5000);
    s.send(&[
        ("MESSAGE", b"special 000003 big field"),
        ("SYSLOG_IDENTIFIER", b"bigfield"),
        ("BIG", big.as_bytes()),
    ]);
    jd.sync();
    let started = Instant::now();
    let lf = Logferry::start(&cfg);

    let short = wait_tagged(&moto.endpoint(), "node", "plain", n, WAIT);
    let json = wait_tagged(&moto.endpoint(), "json", "plain", n, WAIT);
    eprintln!(
        "{} entries in both formats in {:?}",
        n + 4,
        started.elapsed()
    );
    assert_exactly_once(&short, "plain", n, &lf);
    assert_exactly_once(&short, "special", 4, &lf);
    assert_eq!(short.len(), json.len(), "both sinks got the same entries");

    // `short` lines are what `journalctl -o short` prints (in UTC) for single-line entries.
    let out = Command::new("journalctl")
        .env("TZ", "UTC")
        .arg("-D")
        .arg(jd.log_dir())
        .args(["--no-pager", "-q", "-o", "short", "SYSLOG_IDENTIFIER=app3"])
        .output()
        .expect("journalctl");
    let expected: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(expected.len(), n / 5, "journalctl lists app3's entries");
    let shipped: std::collections::BTreeSet<&str> = short.iter().map(String::as_str).collect();
    for line in &expected {
        assert!(
            shipped.contains(line.as_str()),
            "journalctl's line not shipped as is: {line:?}\nsome shipped: {:?}",
            &short[..3]
        );
    }
    let host = logferry::sink::client::hostname();
    assert!(
        expected[0].contains(&format!(" {host} app3[")),
        "{}",
        expected[0]
    );
    // Multi-line and binary messages: whole, in one event, invalid bytes as U+FFFD.
    assert!(short
        .iter()
        .any(|t| t.contains(" multi[")
            && t.ends_with("]: special 000000 multi\nline two\nline three")));
    assert!(
        short.iter().any(|t| t.contains(" binary[")
            && t.ends_with("]: special 000001 binary \u{fffd}\u{fffd}\u{0} end")),
        "{:?}",
        short
            .iter()
            .filter(|t| t.contains(" binary:"))
            .collect::<Vec<_>>()
    );
    assert!(short
        .iter()
        .any(|t| t.contains(" long[") && t.ends_with(&format!("]: {long}"))));

    // json: identifier, pid, priority (severity + facility), hostname; extra field `big`.
    let parsed: Vec<serde_json::Value> = json
        .iter()
        .map(|m| serde_json::from_str(m).unwrap_or_else(|e| panic!("not json ({e}): {m}")))
        .collect();
    let one = parsed
        .iter()
        .find(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("plain 000011 "))
        })
        .expect("entry 11 in json");
    assert_eq!(one["identifier"], "app1", "{one}");
    // Like journalctl: the trusted `_PID` (this process) wins over `SYSLOG_PID`.
    assert_eq!(one["pid"], std::process::id().to_string().as_str(), "{one}");
    assert_eq!(one["severity"], "err", "priority 3: {one}");
    assert_eq!(one["facility"], "daemon", "facility 3: {one}");
    assert_eq!(one["hostname"], host.as_str(), "{one}");
    assert_eq!(one["source"], "j", "{one}");
    let bigv = parsed
        .iter()
        .find(|v| v["message"] == "special 000003 big field")
        .expect("big field entry");
    assert_eq!(bigv["big"], big.as_str(), "a 5 KB field is kept whole");
    let multi = parsed
        .iter()
        .find(|v| v["identifier"] == "multi")
        .expect("multi");
    assert_eq!(
        multi["message"],
        "special 000000 multi\nline two\nline three"
    );
    assert_no_violations(&proxy);
}

#[test]
fn sigterm_then_restart_sends_only_new_entries_and_cursor_agrees_with_journalctl() {
    let Some((mut jd, moto)) = journald_and_moto("") else {
        return;
    };
    let s = jd.sender();
    write_entries(&s, "first", 0..2000);
    jd.sync();
    let mut lf = start_from_the_beginning(&jd, &moto);
    let got = wait_tagged(&moto.endpoint(), "node", "first", 2000, WAIT);
    assert_exactly_once(&got, "first", 2000, &lf);
    assert!(lf.terminate().success(), "{}", lf.log());

    // The cursor is in systemd's format and points at the last entry: journalctl agrees.
    let cursor = cursor_file(&lf);
    assert!(cursor.starts_with("s="), "{cursor}");
    let after = after_cursor(&jd, &cursor);
    assert!(
        after.is_empty(),
        "journalctl lists entries after the saved cursor: {after:?}"
    );

    write_entries(&s, "second", 0..1500);
    jd.sync();
    let after = after_cursor(&jd, &cursor);
    let c = counts(after.iter().map(String::as_str), "second");
    assert_eq!(
        c.len(),
        1500,
        "journalctl --after-cursor lists the new entries"
    );
    assert!(
        after
            .iter()
            .all(|l| l.starts_with("second ") || l == "sync"),
        "only new entries after the cursor: {:?}",
        after.iter().find(|l| !l.starts_with("second "))
    );

    let metrics = respawn_with_metrics(&mut lf);
    let got = wait_tagged(&moto.endpoint(), "node", "second", 1500, WAIT);
    assert_exactly_once(&got, "second", 1500, &lf);
    assert_exactly_once(&got, "first", 2000, &lf);
    assert_nothing_reread(&metrics, tail(&lf.log()));
    assert!(lf.terminate().success(), "{}", lf.log());
    let cursor2 = cursor_file(&lf);
    assert_ne!(cursor, cursor2, "the cursor moved");
    assert!(after_cursor(&jd, &cursor2).is_empty());
}

#[test]
fn kill9_loop_while_writing_loses_nothing() {
    let Some((mut jd, moto)) = journald_and_moto("") else {
        return;
    };
    let mut lf = start_from_the_beginning(&jd, &moto);
    // A writer thread writes continuously (about 1,000 entries/s) while logferry is killed.
    let s = jd.sender();
    let writer = Writer::start(move |range| write_entries(&s, "k9", range));
    let mut rng_state = test_seed("journald kill -9") | 1; // xorshift needs a non-zero state
    let mut rand_ms = |lo: u64, hi: u64| {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        lo + rng_state % (hi - lo)
    };
    let kills = 7;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(rand_ms(700, 3500)));
        lf.kill9();
        std::thread::sleep(Duration::from_millis(rand_ms(0, 500)));
        lf.spawn(|_| {});
    }
    std::thread::sleep(Duration::from_secs(1));
    let n = writer.stop();
    jd.sync();
    let got = wait_tagged(&moto.endpoint(), "node", "k9", n, WAIT);
    let c = counts(got.iter().map(String::as_str), "k9");
    let lost = (0..n).filter(|i| !c.contains_key(i)).count();
    let dups: usize = c.values().map(|k| k - 1).sum();
    eprintln!(
        "kill -9 x{kills}: {n} entries written, {lost} lost, {dups} duplicates ({:.2}%)",
        dups as f64 * 100.0 / n as f64
    );
    assert_eq!(lost, 0, "entries lost\n{}", tail(&lf.log()));
    assert_eq!(c.len(), n);
    assert!(
        (dups as f64) < n as f64 * 0.05,
        "{dups} duplicates of {n} entries"
    );
}

#[test]
fn rotation_while_following_loses_and_repeats_nothing() {
    // 1 MiB files and room for 64 of them: several rotations while we follow, no vacuum (that
    // is the next test).
    let n = 12_000; // ~6 files' worth
    let Some((jd, moto, lf)) = follow_while_rotating("RuntimeMaxUse=64M", n) else {
        return;
    };
    let files = cwl_testkit::journald::journal_files(&jd.log_dir());
    assert!(files.len() >= 4, "journald rotated only into {files:?}");
    let got = wait_tagged(&moto.endpoint(), "node", "rot", n, WAIT);
    eprintln!("{n} entries across {} journal files", files.len());
    assert_exactly_once(&got, "rot", n, &lf);
}

/// A journald with `journald_conf` and 1 MiB files, logferry following it from the beginning
/// into moto, and `n` `rot` entries written (in bursts of 1,000, ~400 bytes each on disk).
fn follow_while_rotating(journald_conf: &str, n: usize) -> Option<(Journald, Moto, Logferry)> {
    let (mut jd, moto) = journald_and_moto(journald_conf)?;
    let lf = start_from_the_beginning(&jd, &moto);
    write_rotating(&jd.sender(), 0..n);
    jd.sync();
    Some((jd, moto, lf))
}

fn write_rotating(s: &JournalSender, range: std::ops::Range<usize>) {
    for i in range {
        s.send(&[
            (
                "MESSAGE",
                format!("rot {i:06} {}", "r".repeat(200 + i % 200)).as_bytes(),
            ),
            ("SYSLOG_IDENTIFIER", b"rotator"),
        ]);
        if i % 1000 == 999 {
            std::thread::sleep(Duration::from_millis(150));
        }
    }
}

#[test]
fn vacuum_while_following_repeats_nothing_and_misses_nothing_still_on_disk() {
    // 1 MiB files and at most 4 MiB kept: journald deletes the oldest archived files while
    // logferry follows. An entry deleted before logferry read it is journald's loss; what must
    // hold is that nothing is sent twice, nothing still on disk is missed, and the reader does
    // not stall on files that vanished under it.
    let n = 16_000;
    let Some((jd, moto, lf)) = follow_while_rotating("RuntimeMaxUse=4M", n) else {
        return;
    };
    let on_disk = String::from_utf8_lossy(&journalctl(&jd.log_dir(), &["-o", "cat"])).into_owned();
    let present = counts(on_disk.lines(), "rot");
    assert!(
        !present.contains_key(&0) && present.contains_key(&(n - 1)),
        "journald did not vacuum: {} of {n} entries still on disk",
        present.len()
    );
    let mut delivered = BTreeMap::new();
    let complete = wait_until(WAIT, || {
        let got: Vec<String> = events(&moto.endpoint(), GROUP, "node")
            .into_iter()
            .map(|(_, m)| m)
            .collect();
        delivered = counts(got.iter().map(String::as_str), "rot");
        present.keys().all(|i| delivered.contains_key(i))
    });
    let missed: Vec<&usize> = present
        .keys()
        .filter(|i| !delivered.contains_key(i))
        .collect();
    assert!(
        complete,
        "{} entries still on disk never arrived (first {:?})\n{}",
        missed.len(),
        &missed[..missed.len().min(10)],
        tail(&lf.log())
    );
    std::thread::sleep(Duration::from_secs(1));
    let got: Vec<String> = events(&moto.endpoint(), GROUP, "node")
        .into_iter()
        .map(|(_, m)| m)
        .collect();
    assert_none_twice(
        &counts(got.iter().map(String::as_str), "rot"),
        "`rot` entries",
    );
    eprintln!(
        "vacuum: {} of {n} entries left on disk, {} delivered",
        present.len(),
        delivered.len()
    );
}

#[test]
fn filters_keep_exactly_what_they_should_and_the_cursor_moves_past_the_rest() {
    let Some((mut jd, moto)) = journald_and_moto("") else {
        return;
    };
    let dir = dir_of(&jd);
    let ep = moto.endpoint();
    // One logferry, four sources, each to its own stream.
    let source = |name: &str, extra: &str| {
        let sink = cw_sink(&[name], GROUP, name, &ep).named(name);
        format!(
            "[sources.{name}]\ntype = \"journald\"\ndirectory = \"{dir}\"\nstart = \"beginning\"\n{extra}\n{}",
            sink.format("message")
        )
    };
    let cfg = format!(
        "data_dir = \"@DATA@\"\nshutdown_grace = \"20s\"\n{}{}{}{}",
        source("j", "identifiers = [\"app1\", \"app3\"]"),
        source("prio", "priority = \"warning\""),
        source(
            "matches",
            "matches = [[\"SYSLOG_IDENTIFIER=app2\", \"PRIORITY=2\"], [\"LF_KIND=special\"]]"
        ),
        source("none", "identifiers = [\"nobody\"]"),
    );
    let s = jd.sender();
    let n = 4000;
    write_entries(&s, "f", 0..n);
    s.send(&[("MESSAGE", b"f 999999 special"), ("LF_KIND", b"special")]);
    jd.sync();
    let mut lf = Logferry::start(&cfg);
    // identifiers app1/app3: i % 5 in {1, 3}
    let want_ident = (0..n).filter(|i| i % 5 == 1 || i % 5 == 3).count();
    // priority <= 4 (warning): i % 8 <= 4; entries without PRIORITY pass (journald's own
    // entries, the sync marker, the special one).
    let want_prio = (0..n).filter(|i| i % 8 <= 4).count();
    // (app2 and priority 2) or the special entry
    let want_match = (0..n).filter(|i| i % 5 == 2 && i % 8 == 2).count();
    let ident = wait_tagged(&ep, "j", "f", want_ident, WAIT);
    let prio = wait_tagged(&ep, "prio", "f", want_prio + 1, WAIT);
    let matched = wait_tagged(&ep, "matches", "f", want_match + 1, WAIT);
    let check = |texts: &[String], keep: &dyn Fn(usize) -> bool, special: bool, what: &str| {
        let c = counts(texts.iter().map(String::as_str), "f");
        let want: Vec<usize> = (0..n)
            .filter(|i| keep(*i))
            .chain(special.then_some(999_999))
            .collect();
        let have: Vec<usize> = c.keys().copied().collect();
        assert_eq!(have, want, "{what}: wrong entries kept");
        assert!(c.values().all(|k| *k == 1), "{what}: duplicates");
    };
    check(&ident, &|i| i % 5 == 1 || i % 5 == 3, false, "identifiers");
    check(&prio, &|i| i % 8 <= 4, true, "priority");
    check(&matched, &|i| i % 5 == 2 && i % 8 == 2, true, "matches");
    assert!(
        ident.iter().all(|t| t.starts_with("f ")),
        "only app1/app3 entries: {:?}",
        ident.iter().find(|t| !t.starts_with("f "))
    );
    assert!(events(&ep, GROUP, "none").is_empty());

    // The cursor of the source that kept nothing still moved to the end, and nothing is
    // sent again after a restart.
    assert!(lf.terminate().success(), "{}", lf.log());
    let none_cursor = std::fs::read_to_string(lf.data_dir().join("journald/none.cursor"))
        .expect("the filter-everything source saved a cursor");
    assert!(after_cursor(&jd, &none_cursor).is_empty(), "{none_cursor}");
    let streams = ["j", "prio", "matches"];
    let old_texts = |st: &str| {
        let mut v: Vec<String> = events(&ep, GROUP, st)
            .into_iter()
            .map(|(_, m)| m)
            .filter(|m| !m.starts_with("g ") && m != "sync")
            .collect();
        v.sort();
        v
    };
    let before: Vec<Vec<String>> = streams.iter().map(|st| old_texts(st)).collect();
    let metrics = respawn_with_metrics(&mut lf);
    write_entries(&s, "g", 0..100);
    jd.sync();
    let g = wait_tagged(&ep, "j", "g", 40, WAIT);
    let gc = counts(g.iter().map(String::as_str), "g");
    assert_eq!(gc.len(), 40, "new app1/app3 entries after the restart");
    assert!(gc.values().all(|k| *k == 1));
    wait_tagged(&ep, "prio", "g", 64, WAIT);
    std::thread::sleep(Duration::from_secs(2));
    for (st, b) in streams.iter().zip(&before) {
        assert_eq!(
            &old_texts(st),
            b,
            "stream {st}: entries from before the restart sent again"
        );
    }
    assert_nothing_reread(&metrics, tail(&lf.log()));
}

#[test]
fn unit_filters_and_json_unit_field_on_a_journal_remote_file() {
    if cwl_testkit::journald::skip("unit filters") {
        return;
    }
    if !std::path::Path::new(JOURNAL_REMOTE).exists() {
        cwl_testkit::skipped("unit filters", &format!("{JOURNAL_REMOTE} missing"));
        return;
    }
    // journald sets `_SYSTEMD_UNIT` from the sender's cgroup, which a test cannot fake; a
    // journal file written by systemd-journal-remote carries whatever the export says.
    let tmp = tempfile::tempdir().expect("tmp");
    let mut export = Vec::new();
    let n = 600;
    let base = logferry::event::now_ms() as u64 * 1000 - 60_000_000;
    for i in 0..n {
        let unit = ["a.service", "b.service", "c.service"][i % 3];
        export.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n\
                 _BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE=u {i:06} from {unit}\n\
                 _SYSTEMD_UNIT={unit}\nSYSLOG_IDENTIFIER=svc\n_PID=42\nPRIORITY=6\n\
                 _HOSTNAME=remote-host\n\n",
                base + i as u64,
                1_000_000 + i as u64
            )
            .as_bytes(),
        );
    }
    let jdir = remote_journal(tmp.path(), &export);
    let listed = journalctl(&jdir, &["-q", "-o", "cat", "_SYSTEMD_UNIT=b.service"]);
    assert_eq!(String::from_utf8_lossy(&listed).lines().count(), n / 3);

    let moto = Moto::start().expect("moto");
    let ep = moto.endpoint();
    let d = jdir.display().to_string();
    let mut cfg = config(&d, &ep, "start = \"beginning\"\nunits = [\"a.service\", \"b.service\"]\nexclude_units = [\"b.service\"]", "json");
    cfg = cfg.replace("log_stream = \"node\"", "log_stream = \"units\"");
    let mut lf = Logferry::start(&cfg);
    let got = wait_tagged(&ep, "units", "u", n / 3, WAIT);
    let parsed: Vec<serde_json::Value> = got
        .iter()
        .map(|m| serde_json::from_str(m).expect("json"))
        .collect();
    let msgs: Vec<String> = parsed
        .iter()
        .map(|v| v["message"].as_str().unwrap_or("").to_string())
        .collect();
    let c = counts(msgs.iter().map(String::as_str), "u");
    let want: Vec<usize> = (0..n).filter(|i| i % 3 == 0).collect();
    assert_eq!(
        c.keys().copied().collect::<Vec<_>>(),
        want,
        "only a.service"
    );
    assert!(c.values().all(|k| *k == 1));
    let v = &parsed[0];
    assert_eq!(v["unit"], "a.service", "{v}");
    assert_eq!(v["identifier"], "svc", "{v}");
    assert_eq!(v["pid"], "42", "{v}");
    assert_eq!(v["severity"], "info", "{v}");
    assert_eq!(v["hostname"], "remote-host", "{v}");
    // Restart: nothing again, once the new process has opened the journal at its cursor.
    assert!(lf.terminate().success());
    let metrics = respawn_with_metrics(&mut lf);
    wait_log(&lf, "journal opened", 2);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        events(&ep, GROUP, "units").len(),
        got.len(),
        "sent again after restart"
    );
    assert_nothing_reread(&metrics, tail(&lf.log()));
}

/// A backlog read to its end: the last partial request goes at once instead of waiting
/// `batch_timeout` for events the journal does not have (`SourceContext::caught_up`).
#[test]
fn the_end_of_a_backlog_goes_without_waiting_for_batch_timeout() {
    if cwl_testkit::journald::skip("end of a backlog") {
        return;
    }
    if !std::path::Path::new(JOURNAL_REMOTE).exists() {
        cwl_testkit::skipped("end of a backlog", &format!("{JOURNAL_REMOTE} missing"));
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    // More than CAUGHT_UP_AFTER entries, ten per millisecond, not a multiple of a request.
    let n = 12_345;
    let base = logferry::event::now_ms() as u64 * 1000 - 60_000_000;
    let mut export = Vec::new();
    for i in 0..n {
        export.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n\
                 _BOOT_ID=0123456789abcdef0123456789abcdef\nMESSAGE=b {i:06}\n\
                 SYSLOG_IDENTIFIER=svc\n_PID=42\nPRIORITY=6\n\n",
                base + i as u64 * 100,
                1_000_000 + i as u64
            )
            .as_bytes(),
        );
    }
    let jdir = remote_journal(tmp.path(), &export);

    let moto = Moto::start().expect("moto");
    let ep = moto.endpoint();
    let lines = format!("directory = \"{}\"\nstart = \"beginning\"", jdir.display());
    let sink = cw_sink(&["j"], GROUP, "backlog", &ep)
        .max_backoff("1s")
        .batch_timeout("300s")
        .format("message");
    let _lf = Logferry::start(&pipeline(&source("j", "journald", &lines), &sink));
    let got = wait_tagged(&ep, "backlog", "b", n, Duration::from_secs(90));
    let c = counts(got.iter().map(String::as_str), "b");
    assert!(c.values().all(|k| *k == 1), "duplicates");
}

#[test]
fn cloudwatch_outage_with_a_kill9_during_it_loses_nothing() {
    let Some((mut jd, moto)) = journald_and_moto("") else {
        return;
    };
    let proxy = proxy(&moto.endpoint());
    // Default start ("end"): only entries written after logferry started; nothing was
    // delivered when it is killed, so this also checks that a restart resumes from the first
    // start's position instead of the journal's end at the restart.
    let mut lf = Logferry::start(&config(&dir_of(&jd), &proxy.endpoint(), "", "message"));
    wait_log(&lf, "journal opened", 1);
    proxy
        .set_faults(&serde_json::json!({"outage": true}))
        .expect("faults");
    let s = jd.sender();
    let outage = Instant::now();
    write_entries(&s, "out", 0..1500);
    std::thread::sleep(Duration::from_secs(3));
    lf.kill9();
    write_entries(&s, "out", 1500..2500);
    lf.spawn(|_| {});
    wait_log(&lf, "journal opened", 2);
    write_entries(&s, "out", 2500..3000);
    jd.sync();
    let remaining = Duration::from_secs(10).saturating_sub(outage.elapsed());
    std::thread::sleep(remaining);
    assert!(
        events(&moto.endpoint(), GROUP, "node").is_empty(),
        "delivered during the outage?"
    );
    proxy.clear_faults().expect("clear");
    let got = wait_tagged(&moto.endpoint(), "node", "out", 3000, WAIT);
    let c = counts(got.iter().map(String::as_str), "out");
    let dups: usize = c.values().map(|k| k - 1).sum();
    eprintln!(
        "outage + kill -9: 3000 entries, {} arrived, {dups} duplicates",
        c.len()
    );
    assert_exactly_once(&got, "out", 3000, &lf);
    assert_no_violations(&proxy);
}

#[test]
fn bytes_that_are_not_utf8_in_fields_and_stream_names_are_shipped_not_fatal() {
    let Some((mut jd, moto)) = journald_and_moto("") else {
        return;
    };
    let source = format!(
        "[sources.j]\ntype = \"journald\"\ndirectory = \"{}\"\nstart = \"beginning\"\nfields = [\"EXTRA\"]",
        dir_of(&jd)
    );
    let sink = cw_sink(&["j"], GROUP, "{identifier}", &moto.endpoint()).format("json");
    let lf = Logferry::start(&pipeline(&source, &sink));
    let s = jd.sender();
    for i in 0..20 {
        s.send(&[
            ("MESSAGE", format!("bytes {i:06}").as_bytes()),
            // Invalid UTF-8 in the identifier (a stream name) and in an extra field.
            ("SYSLOG_IDENTIFIER", b"app\xff\xfe:x"),
            ("EXTRA", b"ok \xc3\x28 \x00 end"),
        ]);
    }
    s.send(&[
        ("MESSAGE", b"bytes 000020"),
        ("SYSLOG_IDENTIFIER", b"plain"),
    ]);
    jd.sync();
    let plain = wait_events(&moto.endpoint(), GROUP, "plain", 1, WAIT);
    assert_eq!(plain.len(), 1);
    // Invalid bytes become U+FFFD and the `:` CloudWatch refuses becomes `_`: one stream,
    // named predictably (journald's own entries go to streams of their own identifiers).
    let streams = cwl_testkit::client::list_streams(&moto.endpoint(), GROUP).expect("streams");
    let odd = "app\u{FFFD}\u{FFFD}_x";
    assert!(streams.iter().any(|s| s == odd), "{streams:?}");
    assert_eq!(
        streams.iter().filter(|s| s.starts_with("app")).count(),
        1,
        "{streams:?}"
    );
    let got = wait_events(&moto.endpoint(), GROUP, odd, 20, WAIT);
    let c = counts(got.iter().map(|(_, m)| m.as_str()), "bytes");
    assert_eq!(c.len(), 20, "{}", tail(&lf.log()));
    for (_, text) in &got {
        let v: serde_json::Value = serde_json::from_str(text).expect("valid JSON");
        // Extra fields are named in lower case in the JSON event.
        let extra = v["extra"]
            .as_str()
            .unwrap_or_else(|| panic!("EXTRA kept: {v}"));
        assert_eq!(
            extra, "ok \u{FFFD}( \u{0} end",
            "invalid bytes replaced, the rest kept"
        );
    }
}

/// A journal file in `dir/journal` written by systemd-journal-remote from `export` (journal
/// export format), as a remote host's journal arrives.
fn remote_journal(dir: &std::path::Path, export: &[u8]) -> std::path::PathBuf {
    let input = dir.join("in.export");
    std::fs::write(&input, export).expect("write export");
    let jdir = dir.join("journal");
    std::fs::create_dir_all(&jdir).expect("mkdir");
    run(Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}/remote.journal", jdir.display()))
        .arg(&input));
    jdir
}
