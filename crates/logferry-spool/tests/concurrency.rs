//! Concurrent append/read/ack from three threads, simulated crashes (drop
//! without close) and a real `kill -9` of a child process appending in a loop.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use logferry_spool::{FsyncPolicy, Spool, SpoolConfig};

fn three_threads(cfg: SpoolConfig, total: u64, seed: u64) {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = open(dir.path(), cfg);
    let spool = Arc::new(spool);
    let (tx, rx) = mpsc::sync_channel::<Vec<u64>>(64);
    let done_writing = Arc::new(AtomicBool::new(false));

    let writer = {
        let spool = Arc::clone(&spool);
        let done = Arc::clone(&done_writing);
        std::thread::spawn(move || {
            let mut rng = Rng(seed);
            let mut n = 1u64;
            while n <= total {
                let k = (1 + rng.below(64)).min(total - n + 1);
                let batch: Vec<Vec<u8>> = (n..n + k).map(payload).collect();
                loop {
                    match spool.append_batch(&batch) {
                        Ok(o) => {
                            assert_eq!(o.count as u64, k);
                            break;
                        }
                        Err(e) if e.is_full() => std::thread::sleep(Duration::from_micros(200)),
                        Err(e) => panic!("append: {e}"),
                    }
                }
                n += k;
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let reader = {
        let spool = Arc::clone(&spool);
        let done = Arc::clone(&done_writing);
        std::thread::spawn(move || {
            let mut seen = vec![false; total as usize + 1];
            let mut last_id = 0u64;
            let mut count = 0u64;
            loop {
                let batch = spool.next_batch(500, 32 * 1024).expect("next_batch");
                if batch.is_empty() {
                    if done.load(Ordering::SeqCst) && count == total {
                        break;
                    }
                    std::thread::yield_now();
                    continue;
                }
                let mut ids = Vec::with_capacity(batch.len());
                for r in batch {
                    assert!(r.id > last_id, "ids out of order: {} after {last_id}", r.id);
                    last_id = r.id;
                    let seq = seq_of(&r.payload);
                    assert_eq!(r.payload.as_ref(), payload(seq).as_slice());
                    assert!(!seen[seq as usize], "record {seq} delivered twice");
                    seen[seq as usize] = true;
                    count += 1;
                    ids.push(r.id);
                }
                tx.send(ids).unwrap();
            }
            assert!(seen[1..].iter().all(|s| *s));
        })
    };
    let acker = {
        let spool = Arc::clone(&spool);
        std::thread::spawn(move || {
            let mut rng = Rng(seed ^ 0xABCD);
            let mut pending: Vec<u64> = Vec::new();
            let mut acked = 0u64;
            // Records held back are acked once no batch comes for a while, as a sink finishes
            // what it holds: acking only when the reader hands over more deadlocked the test
            // (3 hangs in 200 runs) once the writer was Full and everything had been read, the
            // held records pinning the watermark.
            loop {
                let ids = match rx.recv_timeout(Duration::from_millis(20)) {
                    Ok(ids) => ids,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        spool.ack_many(&pending);
                        acked += pending.len() as u64;
                        pending.clear();
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                };
                pending.extend(ids);
                // Ack a random subset, in random order; hold the rest back.
                rng.shuffle(&mut pending);
                let keep = rng.below(pending.len() as u64 / 2 + 1) as usize;
                let now: Vec<u64> = pending.drain(keep..).collect();
                if rng.below(2) == 0 {
                    spool.ack_many(&now);
                } else {
                    for id in &now {
                        spool.ack(*id);
                    }
                }
                acked += now.len() as u64;
            }
            rng.shuffle(&mut pending);
            spool.ack_many(&pending);
            acked + pending.len() as u64
        })
    };
    writer.join().unwrap();
    reader.join().unwrap();
    assert_eq!(acker.join().unwrap(), total);
    let st = spool.stats();
    assert_eq!(st.records_pending, 0, "{st:?}");
    assert_eq!(st.records_unread, 0);
    assert_eq!(st.watermark, total + 1);
    assert_eq!(st.oldest_pending_appended_ms, None);
    spool.flush().unwrap();
    let st = spool.stats();
    assert_eq!(
        st.segments,
        1,
        "acknowledged segments are deleted: {st:?} {:?}",
        segments(dir.path())
    );
    assert_eq!(segments(dir.path()).len(), 1);
    let spool = Arc::try_unwrap(spool).ok().unwrap();
    spool.close().unwrap();
    let (spool, ev) = open(dir.path(), small_cfg());
    assert!(ev.is_empty());
    assert!(
        drain(&spool).is_empty(),
        "nothing redelivered after clean close"
    );
}

#[test]
fn three_threads_exactly_once_memory_tail() {
    three_threads(
        SpoolConfig {
            segment_bytes: 64 * 1024,
            ..small_cfg()
        },
        200_000,
        1,
    );
}

#[test]
fn three_threads_exactly_once_disk_reads_bounded() {
    // No memory tail: every read goes to the segment files. A small bound
    // makes the writer hit Full and wait for acks.
    three_threads(
        SpoolConfig {
            segment_bytes: 16 * 1024,
            max_bytes: 256 * 1024,
            memory_tail_bytes: 0,
            fsync: FsyncPolicy::Interval(Duration::from_millis(5)),
            ..small_cfg()
        },
        100_000,
        2,
    );
}

#[test]
fn three_threads_exactly_once_small_memory_tail() {
    three_threads(
        SpoolConfig {
            segment_bytes: 32 * 1024,
            memory_tail_bytes: 8 * 1024,
            ..small_cfg()
        },
        100_000,
        3,
    );
}

#[test]
fn crash_by_drop_redelivers_unacked() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let mut next_seq = 1u64;
    let mut acked = BTreeSet::new();
    let mut floor = 0u64; // watermark at the last flush: never redelivered
    for round in 0..6 {
        let (s, ev) = open(dir.path(), small_cfg());
        assert!(ev.iter().all(|e| !e.is_data_loss()), "{ev:?}");
        let got = drain(&s);
        // At-least-once: every appended, unacked record comes back, in order.
        let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        let delivered: BTreeSet<u64> = got.iter().map(|r| seq_of(&r.payload)).collect();
        for seq in 1..next_seq {
            if !acked.contains(&seq) {
                assert!(
                    delivered.contains(&seq),
                    "round {round}: unacked {seq} lost"
                );
            }
        }
        assert!(
            got.iter().all(|r| r.id >= floor),
            "round {round}: record below the checkpointed watermark {floor} reappeared"
        );
        // Ack a random subset (out of order).
        let mut to_ack: Vec<(u64, u64)> = got
            .iter()
            .map(|r| (r.id, seq_of(&r.payload)))
            .filter(|_| rng.below(3) != 0)
            .collect();
        rng.shuffle(&mut to_ack);
        for (id, seq) in &to_ack {
            s.ack(*id);
            acked.insert(*seq);
        }
        if round % 2 == 0 {
            s.flush().unwrap();
            floor = s.stats().watermark;
            assert_eq!(s.stats().persisted_watermark, floor);
        }
        for _ in 0..rng.below(300) {
            s.append(&payload(next_seq)).unwrap();
            next_seq += 1;
        }
        // Crash: no close, no final checkpoint.
        drop(s);
    }
}

const CHILD_ENV: &str = "LOGFERRY_SPOOL_KILL_CHILD_DIR";

/// Child side of `kill9_child_appending_in_a_loop`; a no-op when run normally.
/// Appends `rec-N` records forever, printing `appended N` after each append
/// returns and `ack N` *before* acknowledging records up to N.
#[test]
fn zz_kill9_child_helper() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let cfg = SpoolConfig {
        segment_bytes: 64 * 1024,
        max_bytes: 4 << 20,
        ..small_cfg()
    };
    let (spool, _) = Spool::open(&dir, cfg).expect("child open");
    let spool = Arc::new(spool);
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    {
        let spool = Arc::clone(&spool);
        let out = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut rng = Rng(99);
            loop {
                let batch = spool.next_batch(100, 1 << 20).expect("child read");
                if batch.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let max_seq = batch.iter().map(|r| seq_of(&r.payload)).max().unwrap_or(0);
                {
                    let mut o = out.lock().unwrap();
                    writeln!(o, "ack {max_seq}").unwrap();
                    o.flush().unwrap();
                }
                let mut ids: Vec<u64> = batch.iter().map(|r| r.id).collect();
                rng.shuffle(&mut ids);
                for id in ids {
                    spool.ack(id);
                }
                std::thread::sleep(Duration::from_millis(2)); // a slow sink
            }
        });
    }
    let mut n = 1u64;
    loop {
        let batch: Vec<Vec<u8>> = (n..n + 50).map(payload).collect();
        match spool.append_batch(&batch) {
            Ok(_) => {
                n += 50;
                let mut o = out.lock().unwrap();
                writeln!(o, "appended {}", n - 1).unwrap();
                o.flush().unwrap();
            }
            Err(e) if e.is_full() => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("child append: {e}"),
        }
    }
}

#[test]
fn kill9_child_appending_in_a_loop() {
    let exe = std::env::current_exe().unwrap();
    // Rounds in which some appended record was not yet acknowledged, so recovery had something
    // to prove; a run where every round was fully acknowledged would have checked no loss.
    let mut rounds_with_unacked = 0;
    for (round, delay_ms) in [150u64, 400, 900].into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "zz_kill9_child_helper",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        let pump = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        let mut appended = 0u64;
        let mut ack_intent = 0u64;
        let mut record = |line: &str| {
            if let Some(v) = line.strip_prefix("appended ") {
                appended = appended.max(v.parse().unwrap());
            } else if let Some(v) = line.strip_prefix("ack ") {
                ack_intent = ack_intent.max(v.parse().unwrap());
            }
        };
        while start.elapsed() < Duration::from_millis(delay_ms) {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(10)) {
                record(&line);
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        pump.join().unwrap();
        for line in rx.try_iter() {
            record(&line);
        }
        assert!(appended > 0, "round {round}: child appended nothing");

        let (s, ev) = open(dir.path(), small_cfg());
        assert!(ev.iter().all(|e| !e.is_data_loss()), "{ev:?}");
        let got = drain(&s);
        let seqs: Vec<u64> = got.iter().map(|r| seq_of(&r.payload)).collect();
        // Recovered records are a gap-free, ordered run of the sequence...
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "round {round}: gap"
        );
        assert!(got.windows(2).all(|w| w[1].id > w[0].id));
        // ...containing every record appended and not (possibly) acked.
        if appended > ack_intent {
            rounds_with_unacked += 1;
            let first = *seqs.first().expect("unacked records lost");
            let last = *seqs.last().unwrap();
            assert!(
                first <= ack_intent + 1,
                "round {round}: lost {first} > {ack_intent}+1"
            );
            assert!(
                last >= appended,
                "round {round}: last {last} < appended {appended}"
            );
        }
        eprintln!(
            "kill -9 round {round}: appended>={appended}, ack intent<={ack_intent}, recovered {} records",
            got.len()
        );
    }
    assert!(
        rounds_with_unacked > 0,
        "every round was fully acknowledged when killed: no loss was checked"
    );
}
