//! Bounding and full disks: `Block`, `DropOldest`, a real 1 MiB tmpfs
//! (ENOSPC) and `RLIMIT_FSIZE` in a child process (EFBIG); notifications and
//! statistics.

mod common;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::process::Command;
use std::task::{Context, Poll, Waker};

use common::*;
use logferry_spool::{FullPolicy, Spool, SpoolConfig, SpoolError};

/// True if `notify` currently holds a permit (without waiting).
fn has_permit(notify: &tokio::sync::Notify) -> bool {
    let fut = pin!(notify.notified());
    let mut cx = Context::from_waker(Waker::noop());
    matches!(fut.poll(&mut cx), Poll::Ready(()))
}

/// A 16 KiB spool of 4 KiB segments: a few hundred 500-byte records fill it.
fn sixteen_kib(full_policy: FullPolicy) -> SpoolConfig {
    SpoolConfig {
        max_bytes: 16 * 1024,
        segment_bytes: 4 * 1024,
        full_policy,
        ..small_cfg()
    }
}

fn segment_bytes_on_disk(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn block_policy_reports_full_then_recovers_after_acks() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), sixteen_kib(FullPolicy::Block));
    let data = s.data_notify();
    let space = s.space_notify();
    let mut n = 0u64;
    let err = loop {
        match s.append(&payload(n + 1)) {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SpoolError::Full { .. }), "{err}");
    assert!(err.is_full());
    assert!(n > 50);
    assert!(has_permit(&data));
    let st = s.stats();
    assert!(st.bytes_on_disk <= 16 * 1024);
    assert_eq!(st.bytes_on_disk, segment_bytes_on_disk(dir.path()));
    assert_eq!(st.records_pending, n);
    assert_eq!(st.dropped_records, 0);
    // A second attempt is still refused and changes nothing.
    assert!(s.append(&payload(n + 1)).unwrap_err().is_full());
    assert_eq!(s.stats().bytes_on_disk, st.bytes_on_disk);

    let got = drain(&s);
    assert_eq!(got.len() as u64, n);
    let _ = has_permit(&space); // clear any earlier permit
    for r in got.iter().rev() {
        s.ack(r.id); // reverse order: watermark moves only at the very end
    }
    assert!(
        has_permit(&space),
        "acks that free segments notify the writer"
    );
    let o = s.append(b"after").unwrap();
    assert_eq!(o.first_id, n + 1);
    // The background checkpoint deletes the acknowledged segments.
    let t = std::time::Instant::now();
    while s.stats().bytes_on_disk >= 8 * 1024 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            s.stats()
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(s.stats().persisted_watermark, n + 1);
}

/// The active segment is never deleted: one that may fill more than half the bound could
/// leave a spool full for good with every record delivered, so such a configuration is refused
/// before anything is written.
#[test]
fn segments_over_half_the_bound_are_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = |segment_bytes| SpoolConfig {
        max_bytes: 16 * 1024,
        segment_bytes,
        ..small_cfg()
    };
    match Spool::open(dir.path().join("s"), cfg(8 * 1024 + 1)) {
        Err(SpoolError::InvalidConfig(why)) => assert!(why.contains("segment_bytes"), "{why}"),
        other => panic!(
            "a segment over half the bound was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    assert!(
        !dir.path().join("s").exists(),
        "refused, yet created on disk"
    );
    // Half the bound opens, and batches of half the bound keep fitting as they are delivered.
    let (s, _) = open(&dir.path().join("s"), cfg(8 * 1024));
    let half = vec![vec![7u8; 1024 - 28]; 8];
    for _ in 0..4 {
        s.append_batch(&half).unwrap();
        let ids: Vec<u64> = drain(&s).iter().map(|r| r.id).collect();
        s.ack_many(&ids);
    }
}

#[test]
fn batch_larger_than_bound_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SpoolConfig {
        max_bytes: 1000,
        segment_bytes: 500,
        max_record_bytes: 600,
        ..small_cfg()
    };
    let (s, _) = open(dir.path(), cfg);
    assert!(matches!(
        s.append(&[0u8; 601]),
        Err(SpoolError::RecordTooLarge { len: 601, max: 600 })
    ));
    assert!(matches!(
        s.append_batch(&[[0u8; 500], [0u8; 500]]),
        Err(SpoolError::BatchTooLarge { .. })
    ));
    s.append(&[1u8; 500]).unwrap();
}

#[test]
fn drop_oldest_discards_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), sixteen_kib(FullPolicy::DropOldest));
    // Read and ack the first 30 so that drops of acked records are not counted.
    for i in 1..=30 {
        s.append(&payload(i)).unwrap();
    }
    for r in drain(&s) {
        s.ack(r.id);
    }
    let mut dropped = 0;
    for i in 31..=1000 {
        let o = s.append(&payload(i)).unwrap();
        dropped += o.dropped_records;
        assert!(s.stats().bytes_on_disk <= 16 * 1024);
    }
    let st = s.stats();
    assert!(dropped > 500, "{dropped}");
    assert_eq!(st.dropped_records, dropped);
    assert!(st.dropped_segments > 0);
    assert_eq!(st.records_pending, 970 - dropped);
    let got = drain(&s);
    assert_eq!(got.len() as u64, 970 - dropped);
    // What survives is the newest suffix, in order, intact.
    let seqs: Vec<u64> = got.iter().map(|r| seq_of(&r.payload)).collect();
    assert_eq!(seqs.last(), Some(&1000));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    for r in &got {
        assert_eq!(r.payload.as_ref(), payload(seq_of(&r.payload)).as_slice());
    }
    // Crash and recover: same suffix comes back.
    drop(s);
    let (s, ev) = open(dir.path(), small_cfg());
    assert!(ev.is_empty(), "{ev:?}");
    let again = drain(&s);
    assert_eq!(again.len(), got.len());
}

#[test]
fn stats_pending_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), small_cfg());
    assert_eq!(s.stats().oldest_pending_appended_ms, None);
    let before = logferry_time::now_ms() as u64;
    for i in 1..=100 {
        s.append(&payload(i)).unwrap();
    }
    let st = s.stats();
    assert_eq!(st.records_pending, 100);
    assert_eq!(st.records_unread, 100);
    let oldest = st.oldest_pending_appended_ms.unwrap();
    assert!(oldest + 1000 >= before && oldest <= logferry_time::now_ms() as u64);
    let got = s.next_batch(40, usize::MAX).unwrap();
    assert_eq!(got.len(), 40);
    assert_eq!(s.stats().records_unread, 60);
    s.ack(got[5].id);
    assert_eq!(s.stats().records_pending, 99);
    assert_eq!(s.stats().watermark, 1);
    for r in &got {
        s.ack(r.id);
    }
    let st = s.stats();
    assert_eq!(st.records_pending, 60);
    assert_eq!(st.watermark, 41);
    s.ack(1_000_000);
    assert_eq!(s.stats().invalid_acks, 1);
    // rewind re-delivers everything unacknowledged.
    s.rewind();
    let again = drain(&s);
    assert_eq!(again.first().map(|r| r.id), Some(41));
    assert_eq!(again.len(), 60);
}

struct Mount(PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn enospc_on_small_tmpfs() {
    let base = tempfile::tempdir().unwrap();
    let mnt = base.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status();
    if !matches!(mounted, Ok(s) if s.success()) {
        cwl_testkit::skipped("enospc_on_small_tmpfs", "cannot mount a tmpfs (not root?)");
        return;
    }
    let _mount = Mount(mnt.clone());
    let dir = mnt.join("spool");
    let cfg = SpoolConfig {
        segment_bytes: 128 * 1024,
        memory_tail_bytes: 0, // read back from the files themselves
        ..small_cfg()
    };
    let (s, _) = open(&dir, cfg.clone());
    let mut n = 0u64;
    let batch_from = |n: u64| -> Vec<Vec<u8>> {
        (n + 1..=n + 37)
            .map(|i| {
                let mut p = payload(i);
                p.resize(150, b'.');
                p
            })
            .collect()
    };
    let err = loop {
        match s.append_batch(&batch_from(n)) {
            Ok(o) => {
                assert_eq!(o.first_id, n + 1);
                n += 37;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(err, SpoolError::DiskFull { .. }), "{err}");
    assert!(err.is_full());
    assert!(n > 1000, "{n}");
    // The partial batch was truncated away.
    assert_eq!(s.stats().bytes_on_disk, segment_bytes_on_disk(&dir));
    for _ in 0..3 {
        assert!(s.append_batch(&batch_from(n)).unwrap_err().is_full());
    }
    assert_eq!(s.stats().bytes_on_disk, segment_bytes_on_disk(&dir));
    let got = drain(&s);
    assert_eq!(got.len() as u64, n);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.id, i as u64 + 1);
        assert_eq!(seq_of(&r.payload), r.id);
    }
    // Reopen while the disk is still full: clean, nothing lost.
    drop(s);
    let (s, ev) = open(&dir, cfg.clone());
    assert!(ev.is_empty(), "{ev:?}");
    let got = drain(&s);
    assert_eq!(got.len() as u64, n);
    // Free space by acknowledging; appends work again.
    for r in &got {
        s.ack(r.id);
    }
    s.flush().unwrap();
    for _ in 0..20 {
        s.append_batch(&vec![vec![1u8; 150]; 37]).unwrap();
    }
    let more = drain(&s);
    assert_eq!(more.len(), 20 * 37);
    assert_eq!(more[0].id, n + 1);
    s.close().unwrap();
    let (s, ev) = open(&dir, cfg);
    assert!(ev.is_empty(), "{ev:?}");
    assert_eq!(drain(&s).len(), 20 * 37);
}

const FSIZE_ENV: &str = "LOGFERRY_SPOOL_FSIZE_CHILD_DIR";
const FSIZE_LIMIT: u64 = 100_000;

/// Child side of `efbig_under_rlimit_fsize`; a no-op when run normally.
#[test]
fn zz_fsize_child_helper() {
    let Ok(dir) = std::env::var(FSIZE_ENV) else {
        return;
    };
    // SAFETY: plain libc calls on this process before any file is created.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: FSIZE_LIMIT as libc::rlim_t,
            rlim_max: FSIZE_LIMIT as libc::rlim_t,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    let cfg = SpoolConfig {
        segment_bytes: 1 << 20, // larger than the file size limit
        memory_tail_bytes: 0,
        ..small_cfg()
    };
    let (s, _) = open(Path::new(&dir), cfg);
    // A single batch that can never fit in one file: clean failure.
    let huge = vec![vec![9u8; 1000]; 120];
    for i in 1..=400u64 {
        s.append(&payload(i)).unwrap();
    }
    let err = s.append_batch(&huge).unwrap_err();
    assert!(matches!(err, SpoolError::DiskFull { .. }), "{err}");
    // Small appends keep working: the spool moves to a new segment when the
    // current one hits EFBIG.
    let mut i = 401u64;
    while segments(Path::new(&dir)).len() < 3 {
        s.append(&payload(i)).unwrap();
        i += 1;
    }
    for p in segments(Path::new(&dir)) {
        assert!(std::fs::metadata(&p).unwrap().len() <= FSIZE_LIMIT);
    }
    assert!(s.stats().io_errors >= 2);
    assert_eq!(
        s.stats().bytes_on_disk,
        segment_bytes_on_disk(Path::new(&dir))
    );
    let got = drain(&s);
    assert_eq!(got.len() as u64, i - 1);
    s.close().unwrap();
    println!("CHILD-OK {}", i - 1);
}

#[test]
fn efbig_under_rlimit_fsize() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "zz_fsize_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSIZE_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: u64 = stdout
        .lines()
        .find_map(|l| l.split("CHILD-OK ").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("child result line");
    let (s, ev) = open(dir.path(), small_cfg());
    assert!(ev.is_empty(), "{ev:?}");
    let got = drain(&s);
    assert_eq!(got.len() as u64, n);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.id, i as u64 + 1);
        assert_eq!(r.payload.as_ref(), payload(i as u64 + 1).as_slice());
    }
}
