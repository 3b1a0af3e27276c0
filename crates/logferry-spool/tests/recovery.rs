//! Recovery against real damaged files: torn tails at every byte offset,
//! flipped bits in middle records, arbitrary bytes as segment/checkpoint.

mod common;

use std::fs::{self, OpenOptions};
use std::path::Path;

use common::*;
use logferry_spool::format::{parse_segment_file_name, HEADER_LEN};
use logferry_spool::{RecoveryEvent, Spool, SpoolConfig};
use proptest::prelude::*;

fn big_segments() -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 1 << 20,
        ..small_cfg()
    }
}

/// A new spool in `dir` (nothing to recover) holding records `1..=n` of [`payload`].
fn spool_holding(dir: &Path, n: u64) -> Spool {
    let (s, ev) = open(dir, big_segments());
    assert!(ev.is_empty(), "{ev:?}");
    for i in 1..=n {
        s.append(&payload(i)).unwrap();
    }
    s
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn torn_last_record_at_every_offset() {
    let base = tempfile::tempdir().unwrap();
    let orig = base.path().join("orig");
    let n = 10u64;
    spool_holding(&orig, n).close().unwrap();
    let segs = segments(&orig);
    assert_eq!(segs.len(), 1);
    let seg_name = segs[0].file_name().unwrap().to_owned();
    let full_len = fs::metadata(&segs[0]).unwrap().len();
    let last_start = full_len - (HEADER_LEN + payload(n).len()) as u64;

    for cut in last_start..full_len {
        let dir = base.path().join(format!("cut{cut}"));
        copy_dir(&orig, &dir);
        let f = OpenOptions::new()
            .write(true)
            .open(dir.join(&seg_name))
            .unwrap();
        f.set_len(cut).unwrap();
        drop(f);

        let (s, ev) = open(&dir, big_segments());
        if cut > last_start {
            assert!(
                matches!(ev.as_slice(), [RecoveryEvent::TornTail { records_kept: 9, valid_len, removed_bytes, .. }]
                    if *valid_len == last_start && *removed_bytes == cut - last_start),
                "cut {cut}: {ev:?}"
            );
        } else {
            assert!(ev.is_empty(), "cut {cut}: {ev:?}");
        }
        assert!(files_with_suffix(&dir, ".corrupt").is_empty());
        let got = drain(&s);
        let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
        assert_eq!(ids, (1..n).collect::<Vec<_>>(), "cut {cut}");
        for r in &got {
            assert_eq!(r.payload.as_ref(), payload(r.id).as_slice());
        }
        // Appends continue with the next id, right after the intact data.
        let o = s.append(b"after-1").unwrap();
        assert_eq!(o.first_id, n);
        s.append(b"after-2").unwrap();
        let more = drain(&s);
        assert_eq!(more.len(), 2);
        assert_eq!(more[0].payload.as_ref(), b"after-1");
        drop(s);
        let (s, ev) = open(&dir, big_segments());
        assert!(ev.is_empty(), "{ev:?}");
        let all = drain(&s);
        assert_eq!(all.len() as u64, n + 1);
        assert_eq!(all[n as usize].payload.as_ref(), b"after-2");
        drop(s);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn zero_filled_tail_is_torn_not_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    spool_holding(dir.path(), 5).close().unwrap();
    let seg = segments(dir.path()).remove(0);
    let len = fs::metadata(&seg).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len + 3000)
        .unwrap();
    let (s, ev) = open(dir.path(), big_segments());
    assert!(
        matches!(
            ev.as_slice(),
            [RecoveryEvent::TornTail {
                removed_bytes: 3000,
                ..
            }]
        ),
        "{ev:?}"
    );
    assert_eq!(drain(&s).len(), 5);
}

/// Builds a spool with two segments: ids 1..=20 and 21..=30. Returns the
/// byte range of record 10 in the first segment.
fn two_segment_spool(dir: &Path) -> (std::ops::Range<u64>, Vec<std::path::PathBuf>) {
    let (s, _) = open(dir, big_segments());
    let mut start = 0;
    let mut off = 0u64;
    for i in 1..=20u64 {
        if i == 10 {
            start = off;
        }
        s.append(&payload(i)).unwrap();
        off += (HEADER_LEN + payload(i).len()) as u64;
    }
    drop(s);
    // Force a second segment by reopening with a tiny segment size.
    let (s, _) = open(
        dir,
        SpoolConfig {
            segment_bytes: 1,
            ..big_segments()
        },
    );
    s.append_batch(&(21..=30).map(payload).collect::<Vec<_>>())
        .unwrap();
    s.close().unwrap();
    let segs = segments(dir);
    assert_eq!(segs.len(), 2);
    (start..start + (HEADER_LEN + payload(10).len()) as u64, segs)
}

fn flip_bit(path: &Path, bit: u64) {
    let mut b = fs::read(path).unwrap();
    b[(bit / 8) as usize] ^= 1 << (bit % 8);
    fs::write(path, b).unwrap();
}

fn check_quarantine(
    dir: &Path,
    seg: &Path,
    orig_len: u64,
    expect_ids: &[u64],
    last_lost: Option<u64>,
) {
    let (s, ev) = open(dir, big_segments());
    assert_eq!(ev.len(), 1, "{ev:?}");
    match &ev[0] {
        RecoveryEvent::Quarantined {
            segment,
            moved_to,
            records_kept,
            first_lost_id,
            last_lost_id,
            ..
        } => {
            assert_eq!(segment, seg);
            assert_eq!(*records_kept, 9);
            assert_eq!(*first_lost_id, 10);
            assert_eq!(*last_lost_id, last_lost);
            // The damaged file is kept whole, never deleted.
            assert_eq!(fs::metadata(moved_to).unwrap().len(), orig_len);
            assert!(moved_to.to_string_lossy().ends_with(".corrupt"));
            assert!(ev[0].is_data_loss());
            assert!(!ev[0].to_string().is_empty());
        }
        other => panic!("unexpected {other:?}"),
    }
    let got = drain(&s);
    let ids: Vec<u64> = got.iter().map(|r| r.id).collect();
    assert_eq!(ids, expect_ids);
    for r in &got {
        assert_eq!(r.payload.as_ref(), payload(r.id).as_slice());
    }
    // Still usable: append, read, ack, flush, reopen cleanly.
    let o = s.append(b"after").unwrap();
    let more = drain(&s);
    assert_eq!(more.len(), 1);
    assert_eq!(more[0].id, o.first_id);
    for r in got.iter().chain(more.iter()) {
        s.ack(r.id);
    }
    s.close().unwrap();
    let (s, ev) = open(dir, big_segments());
    assert!(ev.is_empty(), "{ev:?}");
    assert!(drain(&s).is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// A flipped bit anywhere in record 10 of a non-last segment.
    #[test]
    fn bit_flip_in_middle_record_quarantines(frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let (range, segs) = two_segment_spool(dir.path());
        let bits = (range.end - range.start) * 8;
        let bit = range.start * 8 + ((bits as f64 * frac) as u64).min(bits - 1);
        let orig_len = fs::metadata(&segs[0]).unwrap().len();
        flip_bit(&segs[0], bit);
        let mut expect: Vec<u64> = (1..10).collect();
        expect.extend(21..=30);
        check_quarantine(dir.path(), &segs[0], orig_len, &expect, Some(20));
    }

    /// A flipped bit in a middle record of the last (active) segment.
    #[test]
    fn bit_flip_in_last_segment_quarantines(frac in 0.0f64..1.0) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _) = open(dir.path(), big_segments());
        let mut start = 0;
        for i in 1..=20u64 {
            if i == 10 {
                start = fs::metadata(&segments(dir.path())[0]).map(|m| m.len()).unwrap_or(0);
            }
            s.append(&payload(i)).unwrap();
        }
        s.close().unwrap();
        let seg = segments(dir.path()).remove(0);
        let bits = (HEADER_LEN + payload(10).len()) as u64 * 8;
        let bit = start * 8 + ((bits as f64 * frac) as u64).min(bits - 1);
        let orig_len = fs::metadata(&seg).unwrap().len();
        flip_bit(&seg, bit);
        let expect: Vec<u64> = (1..10).collect();
        check_quarantine(dir.path(), &seg, orig_len, &expect, None);
    }

    /// Arbitrary bytes as a segment (after some valid records or alone) and
    /// as the checkpoint: recovery never panics, the spool stays usable.
    #[test]
    fn arbitrary_bytes_never_panic(
        valid in 0u64..5,
        garbage in proptest::collection::vec(any::<u8>(), 0..3000),
        ckpt in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        second in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..500)),
    ) {
        let dir = tempfile::tempdir().unwrap();
        if valid > 0 {
            spool_holding(dir.path(), valid).close().unwrap();
        }
        let seg = dir.path().join("00000000000000000001.seg");
        let mut bytes = fs::read(&seg).unwrap_or_default();
        bytes.extend_from_slice(&garbage);
        fs::write(&seg, &bytes).unwrap();
        if let Some(second) = &second {
            fs::write(dir.path().join("00000000000000000100.seg"), second).unwrap();
        }
        if let Some(c) = &ckpt {
            fs::write(dir.path().join("ack.ckpt"), c).unwrap();
        }
        let (s, _events) = open(dir.path(), big_segments());
        let got = drain(&s);
        let mut prev = 0;
        for r in &got {
            prop_assert!(r.id > prev);
            prev = r.id;
        }
        // With a valid (absent) checkpoint, the valid records survive.
        if ckpt.is_none() {
            prop_assert!(got.len() as u64 >= valid);
            for (i, r) in got.iter().take(valid as usize).enumerate() {
                prop_assert_eq!(r.id, i as u64 + 1);
                let want = payload(i as u64 + 1);
                prop_assert_eq!(r.payload.as_ref(), want.as_slice());
            }
        }
        let o = s.append(b"x").unwrap();
        prop_assert!(o.first_id > prev);
        let more = drain(&s);
        prop_assert_eq!(more.len(), 1);
        drop(s);
        // Second open sees a clean spool.
        let (_s, ev) = open(dir.path(), big_segments());
        prop_assert!(ev.iter().all(|e| !e.is_data_loss()), "{:?}", ev);
    }
}

#[test]
fn invalid_checkpoint_redelivers_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = spool_holding(dir.path(), 5);
        for r in drain(&s).iter().take(3) {
            s.ack(r.id);
        }
        s.close().unwrap();
    }
    let (s, ev) = open(dir.path(), big_segments());
    assert!(ev.is_empty());
    assert_eq!(drain(&s).first().map(|r| r.id), Some(4));
    drop(s);
    fs::write(dir.path().join("ack.ckpt"), b"garbage").unwrap();
    let (s, ev) = open(dir.path(), big_segments());
    assert!(matches!(
        ev.as_slice(),
        [RecoveryEvent::CheckpointInvalid { .. }]
    ));
    assert_eq!(drain(&s).len(), 5);
}

#[test]
fn second_open_is_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, _) = open(dir.path(), small_cfg());
    match logferry_spool::Spool::open(dir.path(), small_cfg()) {
        Err(logferry_spool::SpoolError::Locked { .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
}

#[test]
fn segment_names_are_first_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = open(dir.path(), small_cfg());
    for i in 1..=200 {
        s.append(&payload(i)).unwrap();
    }
    let segs = segments(dir.path());
    assert!(segs.len() > 3);
    let (s2, _) = (s, ());
    let all = drain(&s2);
    let firsts: Vec<u64> = segs
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            parse_segment_file_name(&name).unwrap()
        })
        .collect();
    assert_eq!(firsts[0], 1);
    for f in firsts {
        assert!(all.iter().any(|r| r.id == f));
    }
}
