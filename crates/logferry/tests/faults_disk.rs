//! A disk that fills up under a running logferry, for real: a small tmpfs (`support::disk`)
//! holds the state that fails to save, filled until every write gets ENOSPC, then freed.
//! CloudWatch is moto behind `cwl-proxy`. What must hold: no saved position (file
//! checkpoint, spool acknowledgement) moves past data that is not safe, a clear error is
//! logged once and counted, and once the disk has room again logferry saves what it owes on
//! its own, with nothing lost and nothing sent twice.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::disk::SmallDisk;
use support::*;

const WAIT: Duration = Duration::from_secs(120);
const GROUP: &str = "/faults/disk";

fn append(path: &Path, tag: &str, range: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    let text: String = range.map(|i| format!("{tag} {i:03}\n")).collect();
    f.write_all(text.as_bytes()).expect("append");
}

/// The offset the checkpoint holds for its one file, if it holds one.
fn saved_offset(checkpoint: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(checkpoint).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the checkpoint is not whole JSON ({e}): {text}"));
    v["files"][0]["offset"].as_u64()
}

/// The line logferry logged with `needle`, asserted to be one (an error per episode, not per
/// attempt) and at ERROR level.
fn the_one_error(lf: &Logferry, needle: &str) -> String {
    let text = lf.log();
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
    assert_eq!(
        errors.len(),
        1,
        "one error per episode, not per attempt\n{text}"
    );
    assert!(errors[0].contains("\"level\":\"ERROR\""), "{}", errors[0]);
    errors[0].to_string()
}

#[test]
fn a_full_data_dir_holds_the_file_checkpoint_back_and_it_is_saved_once_there_is_room() {
    let Some(disk) = SmallDisk::mount("a_full_data_dir_holds_the_checkpoint_back", "1m") else {
        return;
    };
    let (moto, proxy) = moto_behind_proxy();
    let input = tempfile::tempdir().expect("tempdir");
    let log = input.path().join("app.log");
    append(&log, "before", 0..100);
    let data_dir = disk.path().join("data");
    let checkpoint = data_dir.join("file/f.json");
    let sink = cw_sink(&["f"], GROUP, "s", &proxy.endpoint())
        .format("message")
        .max_backoff("1s");
    let config = pipeline(
        &format!(
            "[sources.f]\ntype = \"file\"\ninclude = [\"{}\"]\nrescan_interval = \"500ms\"\n",
            log.display()
        ),
        &sink,
    )
    .replace("@DATA@", &data_dir.display().to_string());
    let metrics = format!("127.0.0.1:{}", free_port());
    let m = metrics.clone();
    let with_metrics = move |cmd: &mut std::process::Command| {
        cmd.env("LOGFERRY_METRICS_ADDRESS", &m);
    };
    let mut lf = Logferry::start_with(&config, with_metrics.clone());
    wait_events(&moto.endpoint(), GROUP, "s", 100, WAIT);
    let size = |p: &Path| std::fs::metadata(p).expect("stat").len();
    let before = size(&log);
    let saved = wait_until(WAIT, || saved_offset(&checkpoint) == Some(before));
    assert!(saved, "checkpoint never reached {before}\n{}", lf.log());

    disk.fill();
    append(&log, "during", 0..100);
    // Delivery goes on: only the position cannot be saved.
    wait_events(&moto.endpoint(), GROUP, "s", 200, WAIT);
    let failures = || metric(&metrics, "logferry_source_state_save_failures_total", &[]);
    let failing = wait_until(WAIT, || failures() >= Some(3.0));
    assert!(failing, "no failed save counted\n{}", lf.log());
    // The saved position is whole and behind: where it was before the disk filled.
    assert_eq!(saved_offset(&checkpoint), Some(before), "{}", lf.log());
    let error = the_one_error(&lf, "cannot save the file positions");
    assert!(error.contains("No space left"), "{error}");

    // Room again: the position is saved without waiting for new input.
    disk.free();
    let after = size(&log);
    let caught_up = wait_until(WAIT, || saved_offset(&checkpoint) == Some(after));
    assert!(caught_up, "the checkpoint stayed behind\n{}", lf.log());
    assert!(lf.log().contains("the file positions can be saved again"));

    // A kill -9 now sends nothing again: the position saved after the disk recovered holds.
    lf.kill9();
    lf.spawn(with_metrics);
    append(&log, "after", 0..50);
    let got = wait_events(&moto.endpoint(), GROUP, "s", 250, WAIT);
    let counts = tally(&got);
    assert_eq!(counts.len(), 250, "lost lines\n{}", lf.log());
    // Lines read again would have been sent before the new ones (one file, read in order).
    assert_eq!(got.len(), 250, "sent again after the restart\n{}", lf.log());
    assert_no_violations(&proxy);
}

#[test]
fn a_dead_letter_file_on_a_full_disk_holds_the_spool_and_is_written_once_there_is_room() {
    let Some(disk) = SmallDisk::mount("a_full_dead_letter_disk_holds_the_spool", "1m") else {
        return;
    };
    let (moto, proxy) = moto_behind_proxy();
    let port = free_port();
    let dead_letter = disk.path().join("dl/cw.jsonl");
    let sink = cw_sink(&["s"], GROUP, "s", &proxy.endpoint())
        .format("message")
        .max_backoff("500ms")
        .string("dead_letter_path", &dead_letter.display().to_string());
    let config = pipeline(
        &format!("[sources.s]\ntype = \"syslog\"\naddress = \"tcp://127.0.0.1:{port}\"\n"),
        &sink,
    );
    let (lf, metrics) = start_with_metrics(&config);
    lf.wait_listening(1);
    disk.fill();

    // 20 lines CloudWatch would refuse (twenty days old) among 100 fine ones.
    let old = rfc3339(now_ms() - 20 * 86_400_000);
    let lines: String = (0..120)
        .map(|i| {
            if i % 6 == 0 {
                format!("<14>1 {old} h a - - - old {i:03}\n")
            } else {
                format!("<14>1 - h a - - - fine {i:03}\n")
            }
        })
        .collect();
    tcp_send(port, lines.as_bytes());
    wait_events(&moto.endpoint(), GROUP, "s", 100, WAIT);
    let failures = || {
        metric(
            &metrics,
            "logferry_sink_dead_letter_write_failures_total",
            &[],
        )
    };
    let failing = wait_until(WAIT, || failures() >= Some(3.0));
    assert!(failing, "no failed dead-letter write counted\n{}", lf.log());
    // The rejected records are not safe anywhere yet: the spool keeps them.
    let pending = || metric(&metrics, "logferry_spool_records_pending", &[]);
    assert!(
        pending() >= Some(20.0),
        "the spool let go of records whose dead letters were not written: {:?}",
        pending()
    );
    assert_eq!(
        metric(&metrics, "logferry_sink_events_dead_lettered_total", &[]),
        Some(0.0)
    );
    the_one_error(&lf, "cannot write the dead-letter file");

    // Room again: written on the next try, acknowledged, the spool empties; no restart.
    disk.free();
    let emptied = wait_until(WAIT, || pending() == Some(0.0));
    assert!(
        emptied,
        "the spool still holds {:?}\n{}",
        pending(),
        lf.log()
    );
    let written: Vec<serde_json::Value> = std::fs::read_to_string(&dead_letter)
        .expect("dead-letter file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
        .collect();
    let mut messages: Vec<&str> = written
        .iter()
        .map(|v| v["message"].as_str().unwrap_or(""))
        .collect();
    messages.sort_unstable();
    let expected: Vec<String> = (0..120).step_by(6).map(|i| format!("old {i:03}")).collect();
    assert_eq!(messages, expected, "each rejected line written once");
    assert_eq!(
        metric(&metrics, "logferry_sink_events_dead_lettered_total", &[]),
        Some(20.0)
    );
    assert!(lf
        .log()
        .contains("the dead-letter file can be written again"));
    let got = events(&moto.endpoint(), GROUP, "s");
    assert_eq!(
        (tally(&got).len(), got.len()),
        (100, 100),
        "lost or repeated"
    );
}
