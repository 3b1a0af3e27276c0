//! Corrupt and truncated files: no panic, no hang, errors reported, other files still read.
//!
//! Journal files come from systemd-journal-remote fed with a synthetic export stream
//! (no root needed), in the default layout (compact, keyed hash, zstd) and the legacy one.
//! Every damaged file is read next to an intact file with different entries, whose
//! entries must all come out.

mod support;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use logferry_journal::{Entry, Journal};
use support::*;

const BOOT: &str = "0123456789abcdef0123456789abcdef";

fn synthetic_export(tag: &str, n: usize, t0: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = t0 + i as u64 * 1000;
        out.extend_from_slice(
            format!(
                "__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID={BOOT}\n\
                 MESSAGE={tag} message {i}\nTAG={tag}\nPRIORITY={}\n",
                t - t0 + 1,
                i % 8
            )
            .as_bytes(),
        );
        if i % 7 == 0 {
            // Compressed (>= 512 bytes) and varied so every entry has its own DATA object.
            let big: String = (0..1500)
                .map(|k| char::from(b'a' + ((k * i + k / 3) % 26) as u8))
                .collect();
            out.extend_from_slice(format!("BIG={big}\n").as_bytes());
        }
        if i % 5 == 0 {
            let bin = [b'x', b'\n', 0, 0xff, i as u8];
            out.extend_from_slice(b"BIN\n");
            out.extend_from_slice(&(bin.len() as u64).to_le_bytes());
            out.extend_from_slice(&bin);
            out.push(b'\n');
        }
        out.push(b'\n');
    }
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    /// (layout name, victim file bytes, intact file path, entries in intact file)
    cases: Vec<(String, Vec<u8>, PathBuf, usize)>,
    work: PathBuf,
}

fn fixture() -> Option<Fixture> {
    if !Path::new(JOURNAL_REMOTE).exists() {
        eprintln!("SKIPPED: {JOURNAL_REMOTE} missing (apt-get install systemd-journal-remote)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut cases = Vec::new();
    let legacy: &[(&str, &str)] = &[
        ("SYSTEMD_JOURNAL_COMPACT", "0"),
        ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
    ];
    for (name, env) in [("default", &[][..]), ("legacy", legacy)] {
        let [victim, good] = [
            ("victim", 300, 1_700_000_000_000_000),
            ("good", 120, 1_700_000_000_000_500),
        ]
        .map(|(role, entries, first_us)| {
            let path = dir.path().join(format!("{name}-{role}.journal"));
            journal_remote(&synthetic_export(role, entries, first_us), &path, env, &[]);
            path
        });
        cases.push((name.to_string(), std::fs::read(&victim).unwrap(), good, 120));
    }
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    Some(Fixture {
        _dir: dir,
        cases,
        work,
    })
}

/// Reads everything from `files` on a watchdog thread; returns (entries per TAG, errors).
fn read_all(files: Vec<PathBuf>) -> (usize, usize, usize) {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut j = Journal::open_files(&files).unwrap();
        let (mut good, mut victim) = (0, 0);
        let mut e = Entry::new();
        let mut n = 0;
        while j.next_entry_into(&mut e).unwrap() {
            n += 1;
            assert!(n < 100_000, "runaway iteration");
            match e.field("TAG") {
                Some(b"good") => good += 1,
                Some(b"victim") => victim += 1,
                _ => {}
            }
            // Touch every field, as a shipper would.
            for (name, value) in e.fields() {
                std::hint::black_box((name.len(), value.len()));
            }
        }
        // A second pass after refresh and a seek must also terminate.
        j.refresh().unwrap();
        j.seek_realtime(1_700_000_000_100_000);
        while j.next_entry_into(&mut e).unwrap() {}
        j.seek_after_cursor(&e.cursor());
        while j.next_entry_into(&mut e).unwrap() {}
        j.seek_tail();
        let _ = j.next_entry().unwrap();
        let _ = tx.send((good, victim, j.file_error_count() as usize));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(r) => r,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("reader hung"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("reader panicked"),
    }
}

#[test]
fn truncated_files_never_panic_and_others_are_read() {
    let Some(fx) = fixture() else { return };
    for (name, bytes, good, n_good) in &fx.cases {
        let len = bytes.len();
        let mut cuts: Vec<usize> = (0..160).map(|k| k * len / 160).collect();
        cuts.extend([1, 7, 8, 100, 207, 208, 263, 264, 272, len - 1, len - 8]);
        // The used part of the file: the zero-filled preallocated tail holds nothing.
        let tail = u64::from_le_bytes(bytes[136..144].try_into().unwrap()) as usize;
        let used = tail + 16;
        let (mut errors_seen, mut cuts_in_use) = (0, 0);
        for cut in cuts {
            let p = fx.work.join(format!("{name}-cut.journal"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let (g, v, errs) = read_all(vec![p, good.clone()]);
            assert_eq!(
                g, *n_good,
                "{name} cut at {cut}: intact file not fully read"
            );
            assert!(v <= 300);
            if cut < used {
                cuts_in_use += 1;
                errors_seen += usize::from(errs > 0);
            }
        }
        assert!(
            errors_seen * 10 >= cuts_in_use * 9,
            "{name}: only {errors_seen} of {cuts_in_use} truncations were reported"
        );
    }
}

/// xorshift, so the test is reproducible without a rand dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn flipped_bytes_never_panic_or_hang() {
    let Some(fx) = fixture() else { return };
    let mut rng = Rng(0x9e3779b97f4a7c15);
    for (name, bytes, good, n_good) in &fx.cases {
        let used = {
            // Flip inside the used part of the file (header + objects), not the zeroed
            // preallocated tail where a flip changes nothing.
            let tail = u64::from_le_bytes(bytes[136..144].try_into().unwrap()) as usize;
            (tail + 4096).min(bytes.len())
        };
        for round in 0..400 {
            let mut d = bytes.clone();
            let flips = 1 + rng.below(12);
            for _ in 0..flips {
                let at = if rng.below(4) == 0 {
                    rng.below(272)
                } else {
                    rng.below(used)
                };
                d[at] ^= 1 << rng.below(8);
                if rng.below(3) == 0 {
                    d[at] = rng.next() as u8;
                }
            }
            let p = fx.work.join(format!("{name}-flip.journal"));
            std::fs::write(&p, &d).unwrap();
            let (g, _, _) = read_all(vec![p, good.clone()]);
            assert_eq!(
                g, *n_good,
                "{name} round {round}: intact file not fully read"
            );
        }
    }
}

fn patch(bytes: &[u8], f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut d = bytes.to_vec();
    f(&mut d);
    d
}

fn put_u64(d: &mut [u8], off: usize, v: u64) {
    d[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn crafted_damage_is_reported() {
    let Some(fx) = fixture() else { return };
    let (_, bytes, good, n_good) = &fx.cases[0];
    let ea = u64::from_le_bytes(bytes[176..184].try_into().unwrap());
    // What each damage must lead to. Every case also reads the intact file whole.
    enum Outcome {
        /// The file is reported with an error naming it and containing this text.
        Error(&'static str),
        /// A header field logferry does not trust: every entry is read, no error.
        ReadWhole,
        /// Nothing to read yet, and not an error.
        Nothing,
    }
    // The undamaged victim's entry count, for `ReadWhole`.
    let intact = fx.work.join("intact-victim.journal");
    std::fs::write(&intact, bytes).unwrap();
    let (_, n_victim, errors) = read_all(vec![intact]);
    assert!(
        n_victim > 0 && errors == 0,
        "undamaged victim: {n_victim} entries, {errors} errors"
    );
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "unknown incompatible flag",
            patch(bytes, |d| d[12] |= 0x40),
            Outcome::Error("unsupported incompatible flags 0x40"),
        ),
        (
            "bad signature",
            patch(bytes, |d| d[0] = b'X'),
            Outcome::Error("bad signature"),
        ),
        (
            "huge header",
            patch(bytes, |d| put_u64(d, 88, u64::MAX - 7)),
            Outcome::Error("header_size"),
        ),
        (
            "entry array chain loops",
            // First array's next pointer back to itself.
            patch(bytes, |d| put_u64(d, ea as usize + 16, ea)),
            Outcome::Error("chain"),
        ),
        // n_entries and arena_size are bounded by the entry arrays and the file's size.
        (
            "huge n_entries",
            patch(bytes, |d| put_u64(d, 152, u64::MAX)),
            Outcome::ReadWhole,
        ),
        (
            "huge arena",
            patch(bytes, |d| put_u64(d, 96, u64::MAX)),
            Outcome::ReadWhole,
        ),
        // journald creates files empty and sizes them a moment later: skipped, not an error.
        ("zero-size file", Vec::new(), Outcome::Nothing),
    ];
    for (what, data, outcome) in cases {
        let p = fx.work.join("crafted.journal");
        std::fs::write(&p, &data).unwrap();
        let (g, victim, _) = read_all(vec![p.clone(), good.clone()]);
        assert_eq!(g, *n_good, "{what}: intact file not fully read");
        let mut j = Journal::open_files(&[p.clone(), good.clone()]).unwrap();
        while j.next_entry().unwrap().is_some() {}
        let errs: Vec<String> = j.file_errors().iter().map(|e| e.to_string()).collect();
        match outcome {
            Outcome::Error(expect) => assert!(
                errs.iter()
                    .any(|e| e.contains(expect) && e.contains("crafted.journal")),
                "{what}: expected an error containing {expect:?}, got {errs:?}"
            ),
            Outcome::ReadWhole => {
                assert!(errs.is_empty(), "{what}: {errs:?}");
                assert_eq!(victim, n_victim, "{what}: entries lost");
            }
            Outcome::Nothing => {
                assert!(errs.is_empty(), "{what}: {errs:?}");
                assert_eq!(victim, 0, "{what}");
            }
        }
    }
}

#[test]
fn oversized_fields_are_dropped_not_allocated() {
    let Some(fx) = fixture() else { return };
    let (_, bytes, _, _) = &fx.cases[0];
    let p = fx.work.join("limit.journal");
    std::fs::write(&p, bytes).unwrap();
    let mut j = Journal::open_files(&[p]).unwrap();
    j.set_max_field_size(1000);
    let mut n = 0;
    while let Some(e) = j.next_entry().unwrap() {
        n += 1;
        assert!(e.field("BIG").is_none());
        assert!(e.field("MESSAGE").is_some());
    }
    assert_eq!(n, 300);
    assert_eq!(j.file_error_count(), 300_usize.div_ceil(7) as u64);
}
