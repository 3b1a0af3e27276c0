//! Spool recovery from arbitrary segment and checkpoint files, then normal use.
//!
//! Input layout: `[flags][params][acks][appends][segment bytes...][ckpt: 20 bytes if flags&1]`.
//! * flags bit 0: the last 20 bytes are written as `ack.ckpt`;
//! * flags bit 1: fix the CRCs of every record header/payload in the segment before writing
//!   it (so the fuzzer gets past the checksums and explores lengths, ids and layout);
//! * flags bit 2: fix the checkpoint's magic and CRC (so its watermark is believed);
//! * params: `next_batch` limits and the segment size; acks: which records to acknowledge;
//!   appends: how many records to append after the first read.
//!
//! Invariants:
//! * `open` of a directory holding any segment/checkpoint bytes succeeds (recovery repairs or
//!   quarantines; it does not fail) and nothing panics;
//! * records come in strictly increasing id order, never below a valid checkpoint's
//!   watermark, and each payload recovered from the file is bytes that were in the file;
//! * appended records come back next, with fresh increasing ids and the same payloads;
//! * after `close` and reopen, every record is one that was readable (or appended) before,
//!   with the same payload, and every record that was not acknowledged is delivered again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crc32c::crc32c;
use logferry_spool::format::{
    decode_checkpoint, CHECKPOINT_FILE, CHECKPOINT_LEN, CHECKPOINT_MAGIC, HEADER_LEN, MAX_FIRST_ID,
};
use logferry_spool::{FsyncPolicy, FullPolicy, Spool, SpoolConfig};

const MAX_RECORD: u32 = 4096;

fn work_dir() -> PathBuf {
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    base.join(format!("logferry-fuzz-spool-{}", std::process::id()))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// Recomputes the payload and header CRCs of every record whose header fits in `seg`.
fn fix_crcs(seg: &mut [u8]) {
    let mut pos = 0usize;
    while pos + HEADER_LEN <= seg.len() {
        let len = le_u32(seg, pos) as usize;
        let start = pos + HEADER_LEN;
        if let Some(payload) = seg.get(start..start.saturating_add(len)) {
            let crc = crc32c(payload);
            seg[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
        }
        let hcrc = crc32c(&seg[pos..pos + 24]);
        seg[pos + 24..pos + 28].copy_from_slice(&hcrc.to_le_bytes());
        pos = start.saturating_add(len);
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn config(params: u8) -> SpoolConfig {
    SpoolConfig {
        max_bytes: 1 << 20,
        segment_bytes: 64 << (params >> 6),
        fsync: FsyncPolicy::Interval(Duration::from_secs(3600)),
        full_policy: FullPolicy::Block,
        checkpoint_interval: Duration::from_secs(3600),
        max_record_bytes: MAX_RECORD,
        memory_tail_bytes: if params & 0x20 != 0 { 0 } else { 4096 },
    }
}

/// Reads everything available; checks order. Returns id -> payload.
fn read_all(spool: &Spool, params: u8, what: &str) -> Vec<(u64, Vec<u8>)> {
    let max_records = 1 + usize::from(params & 7);
    let max_bytes = 1 + (usize::from((params >> 3) & 3) << 8);
    let mut out: Vec<(u64, Vec<u8>)> = Vec::new();
    for _ in 0..100_000 {
        let batch = spool
            .next_batch(max_records, max_bytes)
            .expect("next_batch");
        if batch.is_empty() {
            return out;
        }
        assert!(
            batch.len() <= max_records,
            "{what}: batch of {} > {max_records}",
            batch.len()
        );
        for r in batch {
            if let Some((last, _)) = out.last() {
                assert!(r.id > *last, "{what}: id {} after {last}", r.id);
            }
            assert!(r.id >= 1, "{what}: id 0");
            out.push((r.id, r.payload.to_vec()));
        }
    }
    panic!("{what}: next_batch never runs dry");
}

/// One input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let (flags, params, ack_mask, appends) = (data[0], data[1], data[2], data[3]);
    let mut body = &data[4..];
    let mut ckpt: Option<Vec<u8>> = None;
    if flags & 1 != 0 && body.len() >= CHECKPOINT_LEN {
        let (seg, c) = body.split_at(body.len() - CHECKPOINT_LEN);
        let mut c = c.to_vec();
        if flags & 4 != 0 {
            c[0..8].copy_from_slice(&CHECKPOINT_MAGIC);
            let crc = crc32c(&c[0..16]);
            c[16..20].copy_from_slice(&crc.to_le_bytes());
        }
        ckpt = Some(c);
        body = seg;
    }
    let mut seg = body.to_vec();
    if flags & 2 != 0 {
        fix_crcs(&mut seg);
    }

    let dir = work_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("00000000000000000001.seg"), &seg).expect("write segment");
    let watermark = match &ckpt {
        Some(c) => {
            std::fs::write(dir.join(CHECKPOINT_FILE), c).expect("write checkpoint");
            decode_checkpoint(c).ok()
        }
        None => None,
    };

    // A checkpoint whose watermark is >= MAX_FIRST_ID is rejected by recovery (it used to be
    // believed and new records were lost on reopen: regressions/spool_recovery/...).
    let watermark = watermark.filter(|&w| w < MAX_FIRST_ID);

    let cfg = config(params);
    let (spool, _events) = Spool::open(&dir, cfg.clone()).expect("open after arbitrary files");
    let first = read_all(&spool, params, "first read");
    for (id, payload) in &first {
        if let Some(w) = watermark {
            assert!(*id >= w, "record {id} below the checkpoint watermark {w}");
        }
        assert!(payload.len() <= MAX_RECORD as usize);
        assert!(
            contains(&seg, payload),
            "record {id}'s payload was not in the file"
        );
    }

    // Acknowledge some of what was read.
    let mut known: BTreeMap<u64, (Vec<u8>, bool)> = BTreeMap::new();
    for (i, (id, payload)) in first.iter().enumerate() {
        let acked = ack_mask >> (i % 8) & 1 != 0;
        if acked {
            spool.ack(*id);
        }
        known.insert(*id, (payload.clone(), acked));
    }

    // Append a few records and read them back.
    let n_new = usize::from(appends % 5);
    let new: Vec<Vec<u8>> = (0..n_new)
        .map(|i| {
            let mut p = format!("appended-{i}-").into_bytes();
            p.extend(std::iter::repeat_n(appends, usize::from(appends >> 2)));
            p
        })
        .collect();
    if !new.is_empty() {
        let out = spool.append_batch(&new).expect("append_batch");
        assert_eq!(out.count, new.len());
        if let Some((last, _)) = first.last() {
            assert!(
                out.first_id > *last,
                "appended id {} <= read id {last}",
                out.first_id
            );
        }
        let back = read_all(&spool, params, "appended read");
        let got: Vec<(u64, Vec<u8>)> = back;
        let want: Vec<(u64, Vec<u8>)> = new
            .iter()
            .enumerate()
            .map(|(i, p)| (out.first_id + i as u64, p.clone()))
            .collect();
        assert_eq!(got, want, "appended records read back differently");
        for (i, (id, p)) in want.into_iter().enumerate() {
            let acked = ack_mask >> ((i + 3) % 8) & 1 != 0;
            if acked {
                spool.ack(id);
            }
            known.insert(id, (p, acked));
        }
    }
    spool.close().expect("close");

    let (spool, _events) = Spool::open(&dir, cfg).expect("reopen");
    let again = read_all(&spool, params, "reopened read");
    let mut seen = std::collections::BTreeSet::new();
    for (id, payload) in &again {
        match known.get(id) {
            Some((p, _)) => assert_eq!(p, payload, "record {id} changed across reopen"),
            None => panic!("record {id} appeared only after reopen: {payload:?}"),
        }
        seen.insert(*id);
    }
    for (id, (_, acked)) in &known {
        assert!(
            *acked || seen.contains(id),
            "unacknowledged record {id} lost across close/reopen"
        );
    }
    drop(spool);
}
