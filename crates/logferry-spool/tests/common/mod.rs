//! Shared helpers for the integration tests (real files, real faults).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use logferry_spool::{Record, Spool, SpoolConfig};

/// Small segments so rotation, deletion and multi-segment reads are exercised.
pub fn small_cfg() -> SpoolConfig {
    SpoolConfig {
        segment_bytes: 4096,
        checkpoint_interval: Duration::from_millis(20),
        ..SpoolConfig::default()
    }
}

pub fn open(dir: &Path, cfg: SpoolConfig) -> (Spool, Vec<logferry_spool::RecoveryEvent>) {
    match Spool::open(dir, cfg) {
        Ok(x) => x,
        Err(e) => panic!("open {}: {e}", dir.display()),
    }
}

/// Reads everything currently available.
pub fn drain(spool: &Spool) -> Vec<Record> {
    let mut all = Vec::new();
    loop {
        let b = spool.next_batch(997, 64 * 1024).expect("next_batch");
        if b.is_empty() {
            return all;
        }
        all.extend(b);
    }
}

pub fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_suffix(dir, ".seg")
}

/// Deterministic payload for sequence number `n` with a size varying 1..=200.
pub fn payload(n: u64) -> Vec<u8> {
    let len = 1 + (n.wrapping_mul(2654435761) % 200) as usize;
    let mut v = format!("rec-{n}:").into_bytes();
    while v.len() < len {
        v.push(b'a' + (v.len() % 26) as u8);
    }
    v
}

/// Parses the sequence number back out of a `payload`.
pub fn seq_of(p: &[u8]) -> u64 {
    let s = std::str::from_utf8(p).expect("utf8");
    let rest = s.strip_prefix("rec-").expect("prefix");
    let end = rest.find(':').expect("colon");
    rest[..end].parse().expect("number")
}

/// xorshift64* for reproducible randomness without extra dependencies.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}
