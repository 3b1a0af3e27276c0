//! Test support: a real systemd-journald writing into a temporary directory (from
//! `cwl_testkit::journald`, shared with logferry's end-to-end tests), plus helpers to compare
//! our reader with journalctl.
//!
//! [`Journald::start`] returns `None`, after printing why, when journald cannot run here
//! (not root, no systemd-journald), and the test then skips.
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::process::{Command, Stdio};

use logferry_journal::{Entry, Journal};

pub use cwl_testkit::journald::{
    journal_files, journalctl_export, journald_unavailable, parse_export, skip, Exported, Journald,
    JOURNALD, JOURNAL_REMOTE,
};

/// Our reader's export output for every entry from the current position.
pub fn our_export(j: &mut Journal) -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = Entry::new();
    while j.next_entry_into(&mut e).expect("next_entry") {
        e.write_export(&mut out).unwrap();
    }
    out
}

/// Asserts two export streams are equal, explaining the first difference.
pub fn assert_same_export(ours: &[u8], theirs: &[u8], what: &str) {
    if ours == theirs {
        return;
    }
    let (a, b) = (parse_export(ours), parse_export(theirs));
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        if x != y {
            let show = |e: &Vec<(String, Vec<u8>)>| {
                e.iter()
                    .map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(&v[..v.len().min(80)])))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            panic!(
                "{what}: entry {i} differs\n ours:   {}\n theirs: {}",
                show(x),
                show(y)
            );
        }
    }
    panic!(
        "{what}: ours has {} entries, journalctl {} (bytes {} vs {})",
        a.len(),
        b.len(),
        ours.len(),
        theirs.len()
    );
}

/// Converts an export stream into a journal file with systemd-journal-remote, with the
/// given environment (e.g. SYSTEMD_JOURNAL_COMPACT=0) and extra arguments.
pub fn journal_remote(export: &[u8], out: &Path, env: &[(&str, &str)], args: &[&str]) {
    let input = out.with_extension("export");
    std::fs::write(&input, export).unwrap();
    let st = Command::new(JOURNAL_REMOTE)
        .envs(env.iter().copied())
        .arg(format!("--output={}", out.display()))
        .args(args)
        .arg(&input)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run systemd-journal-remote");
    assert!(st.success(), "systemd-journal-remote failed");
    std::fs::remove_file(&input).unwrap();
}

/// The header line of `journalctl --header` starting with `key`.
pub fn header_line(file: &Path, key: &str) -> String {
    let out = Command::new("journalctl")
        .arg("--file")
        .arg(file)
        .arg("--header")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(key))
        .unwrap_or_default()
        .to_string()
}

/// A mix of entries exercising the interesting field shapes: repeated fields, binary
/// values, empty values, UTF-8, and fields big enough to be compressed (>= 512 bytes).
pub fn send_variety(j: &Journald, tag: &str) {
    let big: Vec<u8> = (0..6000).map(|i| b'a' + (i % 26) as u8).collect();
    let huge: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8 | 1)
        .collect();
    j.send_message(&format!("{tag} plain"), &[("PRIORITY", b"6")]);
    j.send_message(
        &format!("{tag} repeated"),
        &[("FOO", b"a"), ("FOO", b"b"), ("FOO", b"a")],
    );
    j.send_message(
        &format!("{tag} binary"),
        &[("BIN", b"line1\nline2\0\xff\xfe")],
    );
    j.send_message(&format!("{tag} empty"), &[("EMPTY", b"")]);
    j.send_message(&format!("{tag} utf8 żółw ☃"), &[("CTRL", b"bell\x07")]);
    j.send_message(&format!("{tag} big"), &[("BIG", &big)]);
    j.send_message(&format!("{tag} huge-binary"), &[("HUGE", &huge)]);
    let long_msg = format!("{tag} long {}", "x".repeat(5000));
    j.send_message(&long_msg, &[]);
}
