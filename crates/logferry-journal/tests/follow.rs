//! Follow mode against a live journald: every entry written while we follow arrives, once
//! and in order, across rotation (1 MiB files), a crash and restart (`.journal~`) and
//! vacuuming.

mod support;

use std::time::{Duration, Instant};

use logferry_journal::{Entry, Journal};
use support::*;

fn send_seq(jd: &Journald, tag: &str, range: std::ops::Range<usize>, pause_every: usize) {
    for i in range {
        let msg = format!("{tag} follow {i} {}", "z".repeat(i % 100));
        let seq = i.to_string();
        jd.send_message(&msg, &[("SEQ", seq.as_bytes()), ("TAG", tag.as_bytes())]);
        if pause_every > 0 && i % pause_every == 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Follows until `n` entries tagged `tag` arrived (or the deadline), returning their SEQs.
fn follow(j: &mut Journal, tag: &str, n: usize, deadline: Duration) -> Vec<usize> {
    let end = Instant::now() + deadline;
    let mut seqs = Vec::new();
    let mut e = Entry::new();
    while seqs.len() < n && Instant::now() < end {
        while j.next_entry_into(&mut e).unwrap() {
            if e.field("TAG") == Some(tag.as_bytes()) {
                let s = std::str::from_utf8(e.field("SEQ").unwrap()).unwrap();
                seqs.push(s.parse().unwrap());
            }
        }
        j.wait(Duration::from_millis(500)).unwrap();
    }
    seqs
}

#[test]
fn follows_across_rotation_and_crash() {
    let Some(jd) = Journald::start("") else {
        return;
    };
    let dir = jd.log_dir();
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir)).unwrap();
    j.seek_tail();
    let n = 8000;
    let writer = std::thread::spawn(move || {
        let mut jd = jd;
        send_seq(&jd, "f", 0..n / 2, 50);
        // Let journald write what it has queued before killing it, or those datagrams
        // die with it (that loss is journald's, not the reader's).
        jd.sync();
        jd.kill9();
        std::thread::sleep(Duration::from_millis(300));
        jd.start_again();
        send_seq(&jd, "f", n / 2..n, 50);
        jd.sync();
        jd
    });
    let seqs = follow(&mut j, "f", n, Duration::from_secs(120));
    let jd = writer.join().unwrap();
    // More than n is an entry delivered twice (the loop reads all that is there), fewer a loss.
    assert_eq!(seqs.len(), n, "entries missing or delivered twice");
    assert!(
        seqs.iter().enumerate().all(|(i, &s)| i == s),
        "entries out of order or duplicated"
    );
    let files = journal_files(&jd.log_dir());
    assert!(files.len() >= 4, "no rotation happened: {files:?}");
    assert!(files.iter().any(|f| f.to_string_lossy().ends_with('~')));
    assert!(j.file_errors().is_empty(), "{:?}", j.file_errors());
    // Nothing of ours comes again: what the reader still yields, before and after a wait
    // (journald may add entries of its own, so the wait itself may wake), holds no `f` entry.
    // A reader that re-read a rotated or crashed-over file would repeat them here.
    let t = Instant::now();
    let mut after = follow(&mut j, "f", usize::MAX, Duration::from_millis(400));
    after.extend(follow(&mut j, "f", usize::MAX, Duration::from_millis(400)));
    assert_eq!(after, Vec::<usize>::new(), "entries delivered twice");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "waiting without news must time out"
    );
}

#[test]
fn files_vacuumed_by_journald_while_following() {
    // Small total size: journald deletes archived files while we follow.
    let Some(jd) = Journald::start("RuntimeMaxUse=4M\nRuntimeKeepFree=0") else {
        return;
    };
    let mut j = Journal::open_dirs(&[jd.log_dir()]).unwrap();
    j.seek_tail();
    let n = 15000;
    let writer = std::thread::spawn(move || {
        let mut jd = jd;
        send_seq(&jd, "v", 0..n, 20);
        jd.sync();
        jd
    });
    let seqs = follow(&mut j, "v", n, Duration::from_secs(120));
    let jd = writer.join().unwrap();
    if seqs.len() != n {
        let mut gaps = Vec::new();
        let mut expect = 0;
        for &s in &seqs {
            if s != expect {
                gaps.push((expect, s));
            }
            expect = s + 1;
        }
        panic!(
            "missing {} entries, gaps {gaps:?}, errors {:?}, files {:?}",
            n - seqs.len(),
            j.file_errors(),
            j.files()
        );
    }
    assert!(seqs.iter().enumerate().all(|(i, &s)| i == s));
    // journald really deleted files we had been reading.
    let mut left = Journal::open_dirs(&[jd.log_dir()]).unwrap();
    let mut on_disk = 0;
    while let Some(e) = left.next_entry().unwrap() {
        on_disk += usize::from(e.field("TAG") == Some(b"v"));
    }
    assert!(
        on_disk < n / 2,
        "journald did not vacuum ({on_disk} entries left)"
    );
}

#[test]
fn deleted_files_are_read_to_their_end() {
    let Some(mut jd) = Journald::start("") else {
        return;
    };
    send_seq(&jd, "d", 0..6000, 0);
    jd.sync();
    let dir = jd.log_dir();
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir)).unwrap();
    let mut e = Entry::new();
    let mut seqs = Vec::new();
    let take = |j: &mut Journal, e: &mut Entry, seqs: &mut Vec<usize>, max: usize| {
        let mut k = 0;
        while k < max && j.next_entry_into(e).unwrap() {
            if e.field("TAG") == Some(b"d") {
                seqs.push(
                    std::str::from_utf8(e.field("SEQ").unwrap())
                        .unwrap()
                        .parse()
                        .unwrap(),
                );
            }
            k += 1;
        }
    };
    take(&mut j, &mut e, &mut seqs, 100);
    // "Vacuum" every archived file before we have read them.
    let archived: Vec<_> = journal_files(&dir)
        .into_iter()
        .filter(|f| f.to_string_lossy().contains('@'))
        .collect();
    assert!(archived.len() >= 2);
    for f in &archived {
        std::fs::remove_file(f).unwrap();
    }
    j.refresh().unwrap();
    assert!(j.files().iter().any(|f| f.removed));
    take(&mut j, &mut e, &mut seqs, usize::MAX);
    assert_eq!(seqs, (0..6000).collect::<Vec<_>>());
    j.refresh().unwrap();
    assert_eq!(j.files().len(), 1, "finished deleted files are dropped");
    jd.stop();
}
