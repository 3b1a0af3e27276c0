//! The background thread of an idle spool sleeps (a spool runs on every node, so its idle cost
//! is multiplied by the fleet), and work given to a sleeping thread still becomes durable
//! without a flush.

mod common;

use std::time::{Duration, Instant};

use common::*;
use logferry_spool::Spool;

/// Context switches (voluntary and not) of this process's thread named `name`.
fn switches_of_thread(name: &str) -> u64 {
    let mut total = 0;
    let mut found = false;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let task = task.expect("task").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        found = true;
        let status = std::fs::read_to_string(task.join("status")).expect("status");
        for line in status.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                total += v.trim().parse::<u64>().expect("a count");
            }
        }
    }
    assert!(found, "no thread named {name}");
    total
}

/// Waits until the persisted watermark reaches `w`, without flushing.
fn persisted_within(spool: &Spool, w: u64, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if spool.stats().persisted_watermark >= w {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn an_idle_spool_sleeps_and_wakes_for_appends_and_acks() {
    let dir = tempfile::tempdir().expect("tmp");
    // A 10 ms checkpoint interval, as logferry's syslog spool uses: a ticking thread would
    // switch about 100 times a second.
    let cfg = logferry_spool::SpoolConfig {
        checkpoint_interval: Duration::from_millis(10),
        ..small_cfg()
    };
    let (spool, _) = open(dir.path(), cfg);
    let thread = "logferry-spool-"; // "logferry-spool-sync", cut to 15 bytes by the kernel

    for round in 0..3 {
        // Work for a sleeping thread: an append (fsync due); once that is done and the thread
        // asleep again, acks (a watermark to save).
        spool
            .append(format!("record {round}").as_bytes())
            .expect("append");
        std::thread::sleep(Duration::from_millis(100));
        let got = drain(&spool);
        for r in &got {
            spool.ack(r.id);
        }
        let w = spool.stats().watermark;
        assert!(
            persisted_within(&spool, w, Duration::from_secs(5)),
            "round {round}: watermark {w} never persisted without a flush (persisted {})",
            spool.stats().persisted_watermark
        );
        // Then nothing: the thread must go back to sleep for good.
        std::thread::sleep(Duration::from_millis(100));
        let before = switches_of_thread(thread);
        std::thread::sleep(Duration::from_secs(1));
        let during = switches_of_thread(thread) - before;
        assert!(
            during <= 2,
            "round {round}: the idle spool's thread woke {during} times in a second"
        );
    }
    drop(spool);
    // Dropping stops the sleeping thread (the test would hang on its join otherwise).
}
