//! Differential tests: our reader against `journalctl -o export` on files written by a real
//! systemd-journald (and converted by systemd-journal-remote to the other layouts).
//! Equality is byte for byte on the export stream, which covers every field, binary values,
//! field order, `__CURSOR`, both timestamps, `_BOOT_ID` and the merge order across files.

mod support;

use std::path::{Path, PathBuf};

use logferry_journal::{Cursor, Entry, Journal};
use support::*;

/// Entries enough to rotate 1 MiB files several times.
fn send_bulk(j: &Journald, tag: &str, n: usize) {
    for i in 0..n {
        let msg = format!("{tag} bulk entry {i} {}", "y".repeat(i % 200));
        let seq = i.to_string();
        j.send_message(&msg, &[("SEQ", seq.as_bytes()), ("TAG", tag.as_bytes())]);
    }
}

/// The variety of entries, then `bulk` more, all tagged `tag`; returns once journald has
/// written them to its files.
fn send_and_sync(j: &mut Journald, tag: &str, bulk: usize) {
    send_variety(j, tag);
    send_bulk(j, tag, bulk);
    j.sync();
}

/// A journald (None when it cannot run here) with [`send_and_sync`] done.
fn started_with(tag: &str, bulk: usize) -> Option<Journald> {
    let mut jd = Journald::start("")?;
    send_and_sync(&mut jd, tag, bulk);
    Some(jd)
}

fn export_of_dir(dir: &Path) -> Vec<u8> {
    let mut j = Journal::open_dirs(&[dir.to_path_buf()]).unwrap();
    let out = our_export(&mut j);
    assert!(j.file_errors().is_empty(), "errors: {:?}", j.file_errors());
    out
}

fn entries_of_dir(dir: &Path) -> Vec<Entry> {
    let mut j = Journal::open_dirs(&[dir.to_path_buf()]).unwrap();
    let mut v = Vec::new();
    while let Some(e) = j.next_entry().unwrap() {
        v.push(e);
    }
    v
}

#[test]
fn journald_files_match_journalctl_including_rotation() {
    let Some(mut jd) = Journald::start("") else {
        return;
    };
    send_variety(&jd, "first");
    send_bulk(&jd, "rot", 7000);
    send_variety(&jd, "last");
    jd.sync();
    let files = journal_files(&jd.log_dir());
    assert!(files.len() >= 3, "expected rotation, got {files:?}");
    assert!(header_line(&files[files.len() - 1], "Incompatible flags").contains("COMPACT"));

    // While journald is running (files ONLINE) ...
    let ours = export_of_dir(&jd.log_dir());
    let theirs = journalctl_export(&jd.log_dir(), &[]);
    assert_same_export(&ours, &theirs, "online files");
    // ... and after a clean stop (files OFFLINE / ARCHIVED).
    jd.stop();
    let ours = export_of_dir(&jd.log_dir());
    let theirs = journalctl_export(&jd.log_dir(), &[]);
    assert_same_export(&ours, &theirs, "offline files");

    // Field-level checks through the API, not just the export text.
    let entries = entries_of_dir(&jd.log_dir());
    let find = |m: &str| {
        entries
            .iter()
            .find(|e| e.field("MESSAGE") == Some(m.as_bytes()))
            .unwrap_or_else(|| panic!("{m} missing"))
    };
    let rep = find("first repeated");
    assert_eq!(
        rep.field_values("FOO").collect::<Vec<_>>(),
        vec![&b"a"[..], b"b"]
    );
    let bin = find("first binary");
    assert_eq!(bin.field("BIN"), Some(&b"line1\nline2\0\xff\xfe"[..]));
    let big = find("first big");
    assert_eq!(big.field("BIG").unwrap().len(), 6000);
    assert_eq!(
        find("first huge-binary").field("HUGE").unwrap().len(),
        100_000
    );
    assert_eq!(find("first empty").field("EMPTY"), Some(&b""[..]));
    // Releasing the mapped pages between entries changes nothing that is read, and the
    // fields seen as bytes are the fields seen as text.
    let mut j = Journal::open_dirs(&[jd.log_dir()]).unwrap();
    let mut e = logferry_journal::Entry::new();
    let mut released = Vec::new();
    let mut n = 0;
    while j.next_entry_into(&mut e).unwrap() {
        e.write_export(&mut released).unwrap();
        assert!(e
            .fields()
            .zip(e.fields_bytes())
            .all(|((n1, v1), (n2, v2))| n1.as_bytes() == n2 && v1 == v2));
        n += 1;
        if n % 97 == 0 {
            j.release_memory();
        }
    }
    assert_same_export(&released, &theirs, "with release_memory");
    let seqs: Vec<u64> = entries.iter().map(|e| e.seqnum).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "seqnums not increasing"
    );
}

#[test]
fn dirty_journal_files_after_crash_are_read() {
    let Some(mut jd) = started_with("before-crash", 1500) else {
        return;
    };
    jd.kill9();
    jd.start_again();
    send_and_sync(&mut jd, "after-crash", 1500);
    jd.stop();
    let files = journal_files(&jd.log_dir());
    assert!(
        files
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".journal~")),
        "no .journal~ file: {files:?}"
    );
    let ours = export_of_dir(&jd.log_dir());
    let theirs = journalctl_export(&jd.log_dir(), &[]);
    assert_same_export(&ours, &theirs, "with .journal~");
    let text = String::from_utf8_lossy(&ours);
    assert!(text.contains("MESSAGE=before-crash plain"));
    assert!(text.contains("MESSAGE=after-crash plain"));

    // Resuming from cursors in either seqnum space agrees with journalctl --after-cursor.
    let entries = entries_of_dir(&jd.log_dir());
    for k in [
        0,
        1,
        700,
        entries.len() / 2,
        entries.len() - 2,
        entries.len() - 1,
    ] {
        check_after_cursor(&jd.log_dir(), &entries[k].cursor());
    }
}

fn check_after_cursor(dir: &Path, cursor: &Cursor) {
    let mut j = Journal::open_dirs(&[dir.to_path_buf()]).unwrap();
    j.seek_after_cursor(cursor);
    let ours = our_export(&mut j);
    let theirs = journalctl_export(dir, &[&format!("--after-cursor={cursor}")]);
    assert_same_export(&ours, &theirs, &format!("after cursor {cursor}"));
}

#[test]
fn cursors_resume_like_journalctl_even_when_vacuumed() {
    let Some(mut jd) = started_with("cur", 6000) else {
        return;
    };
    jd.stop();
    let dir = jd.log_dir();
    let entries = entries_of_dir(&dir);
    let n = entries.len();
    // Our cursors are journalctl's cursors.
    let theirs = parse_export(&journalctl_export(&dir, &[]));
    assert_eq!(theirs.len(), n);
    for (e, t) in entries.iter().zip(&theirs).step_by(997) {
        assert_eq!(e.cursor().to_string().as_bytes(), &t[0].1[..]);
        let parsed: Cursor = String::from_utf8_lossy(&t[0].1).parse().unwrap();
        assert_eq!(parsed, e.cursor());
    }
    for k in [0, 1, 2, n / 3, n / 2, n - 2, n - 1] {
        check_after_cursor(&dir, &entries[k].cursor());
    }
    // After the last entry: nothing, and later entries would follow.
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir)).unwrap();
    j.seek_after_cursor(&entries[n - 1].cursor());
    assert!(j.next_entry().unwrap().is_none());

    // Vacuum: remove the oldest archived file, then resume from a cursor inside it.
    let files = journal_files(&dir);
    let oldest = files
        .iter()
        .filter(|f| f.to_string_lossy().contains('@'))
        .min_by_key(|f| f.to_string_lossy().to_string())
        .expect("an archived file")
        .clone();
    let in_oldest = {
        let mut j = Journal::open_files(std::slice::from_ref(&oldest)).unwrap();
        let mut v = Vec::new();
        while let Some(e) = j.next_entry().unwrap() {
            v.push(e);
        }
        v
    };
    let victim = &in_oldest[in_oldest.len() / 2];
    std::fs::remove_file(&oldest).unwrap();
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir)).unwrap();
    j.seek_after_cursor(&victim.cursor());
    let first = j.next_entry().unwrap().unwrap();
    // Nothing between the vacuumed cursor and the first remaining entry is skipped ...
    assert_eq!(first.seqnum, in_oldest.last().unwrap().seqnum + 1);
    // ... whereas journalctl --after-cursor blindly skips one entry when the cursor's
    // entry is gone (sd_journal_next_skip(2) without sd_journal_test_cursor): we match it
    // from the second entry on and return one entry more.
    let rest = our_export(&mut j);
    let theirs = journalctl_export(&dir, &[&format!("--after-cursor={}", victim.cursor())]);
    assert_same_export(&rest, &theirs, "after vacuumed cursor");

    // Time seek agrees with journalctl --since.
    let remaining = entries_of_dir(&dir);
    let t = remaining[remaining.len() / 2].realtime_usec;
    let mut j = Journal::open_dirs(std::slice::from_ref(&dir)).unwrap();
    j.seek_realtime(t);
    let ours = our_export(&mut j);
    let since = format!("--since=@{}.{:06}", t / 1_000_000, t % 1_000_000);
    let theirs = journalctl_export(&dir, &[&since]);
    assert_same_export(&ours, &theirs, "seek_realtime");
}

/// (name, environment, journal-remote arguments, expected incompatible flags)
type Layout<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a str);

/// Converts journald's output to the other layouts with systemd-journal-remote and checks
/// the header flags we mean to test are really there.
#[test]
fn other_layouts_match_journalctl() {
    let Some(mut jd) = Journald::start("") else {
        return;
    };
    if !Path::new(JOURNAL_REMOTE).exists() {
        cwl_testkit::skipped(
            "other_layouts_match_journalctl",
            &format!("{JOURNAL_REMOTE} missing (apt-get install systemd-journal-remote)"),
        );
        return;
    }
    send_and_sync(&mut jd, "layout", 300);
    jd.stop();
    let export = journalctl_export(&jd.log_dir(), &[]);
    let work = tempfile::tempdir().unwrap();
    let cases: [Layout; 4] = [
        ("default", &[], &[], "COMPRESSED-ZSTD KEYED-HASH COMPACT"),
        (
            "legacy",
            &[
                ("SYSTEMD_JOURNAL_COMPACT", "0"),
                ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
            ],
            &["--compress=no"],
            "",
        ),
        (
            "zstd-keyed-regular",
            &[("SYSTEMD_JOURNAL_COMPACT", "0")],
            &[],
            "COMPRESSED-ZSTD KEYED-HASH",
        ),
        (
            "zstd-jenkins-regular",
            &[
                ("SYSTEMD_JOURNAL_COMPACT", "0"),
                ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
            ],
            &[],
            "COMPRESSED-ZSTD",
        ),
    ];
    for (name, env, args, flags) in cases {
        let dir = work.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("remote.journal");
        journal_remote(&export, &file, env, args);
        let line = header_line(&file, "Incompatible flags");
        let want = format!("Incompatible flags: {flags}");
        assert_eq!(line.trim_end(), want.trim_end(), "{name}");
        let ours = export_of_dir(&dir);
        let theirs = journalctl_export(&dir, &[]);
        assert_same_export(&ours, &theirs, name);
        assert!(parse_export(&ours).len() > 300);
    }
    lz4_and_xz(&export, work.path());

    // Mixed seqnum spaces: journald's files plus a journal-remote copy (own seqnum_id, same
    // boot and timestamps, different xor_hash because of the keyed hash) merge like
    // journalctl merges them, cursors included.
    let mixed = work.path().join("mixed");
    std::fs::create_dir(&mixed).unwrap();
    for f in journal_files(&jd.log_dir()) {
        std::fs::copy(&f, mixed.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        work.path().join("legacy/remote.journal"),
        mixed.join("remote.journal"),
    )
    .unwrap();
    let ours = export_of_dir(&mixed);
    assert_same_export(
        &ours,
        &journalctl_export(&mixed, &[]),
        "mixed seqnum spaces",
    );
    let entries = entries_of_dir(&mixed);
    for k in [0, 3, entries.len() / 2, entries.len() - 1] {
        check_after_cursor(&mixed, &entries[k].cursor());
    }

    // Exact copies of a file (same seqnum_id and seqnums): every entry once.
    let dup = work.path().join("dup");
    std::fs::create_dir(&dup).unwrap();
    let src = work.path().join("default/remote.journal");
    std::fs::copy(&src, dup.join("a.journal")).unwrap();
    std::fs::copy(&src, dup.join("b.journal")).unwrap();
    let ours = export_of_dir(&dup);
    assert_same_export(&ours, &journalctl_export(&dup, &[]), "duplicate files");
    let single = export_of_dir(&work.path().join("default"));
    assert_eq!(ours, single, "duplicates were not merged");
}

/// journald 252 here only writes zstd; LZ4 and XZ payloads are produced by recompressing
/// the big DATA objects of an uncompressed file in place (object shrunk, flag set, header
/// flag set), which journalctl then reads with libsystemd's own decoders.
fn lz4_and_xz(export: &[u8], work: &Path) {
    for (name, flag, incompat, compact) in [("lz4", 2u8, 2u32, false), ("xz", 1u8, 1u32, true)] {
        let dir = work.join(name);
        std::fs::create_dir(&dir).unwrap();
        let file = dir.join("remote.journal");
        let env: &[(&str, &str)] = if compact {
            &[]
        } else {
            &[
                ("SYSTEMD_JOURNAL_COMPACT", "0"),
                ("SYSTEMD_JOURNAL_KEYED_HASH", "0"),
            ]
        };
        journal_remote(export, &file, env, &["--compress=no"]);
        let n = recompress(&file, flag, incompat, compact);
        assert!(n >= 3, "{name}: only {n} objects recompressed");
        let line = header_line(&file, "Incompatible flags");
        assert!(line.contains(&name.to_uppercase()), "{name}: {line}");
        let ours = export_of_dir(&dir);
        let theirs = journalctl_export(&dir, &[]);
        assert_same_export(&ours, &theirs, name);
        assert!(String::from_utf8_lossy(&ours).contains(&"x".repeat(5000)));
    }
}

fn xz_cli(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("xz")
        .args(["--format=xz", "--check=none", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("xz(1) is needed for the XZ test (apt-get install xz-utils)");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn recompress(file: &PathBuf, flag: u8, incompat: u32, compact: bool) -> usize {
    let mut d = std::fs::read(file).unwrap();
    let u64_at = |d: &[u8], o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap());
    let header_size = u64_at(&d, 88) as usize;
    let tail = u64_at(&d, 136) as usize;
    let payload_at = if compact { 72 } else { 64 };
    let mut off = header_size;
    let mut done = 0;
    while off <= tail {
        let size = u64_at(&d, off + 8) as usize;
        assert!(size >= 16);
        if d[off] == 1 && d[off + 1] == 0 && size - payload_at >= 512 {
            let payload = d[off + payload_at..off + size].to_vec();
            let packed = if flag == 2 {
                let mut v = (payload.len() as u64).to_le_bytes().to_vec();
                v.extend(lz4_flex::block::compress(&payload));
                v
            } else {
                // lzma-rs only encodes literals; xz(1) compresses like journald's liblzma
                // (journald uses no integrity check, as here).
                xz_cli(&payload)
            };
            if packed.len() < payload.len() {
                d[off + payload_at..off + payload_at + packed.len()].copy_from_slice(&packed);
                d[off + 1] = flag;
                let new_size = (payload_at + packed.len()) as u64;
                d[off + 8..off + 16].copy_from_slice(&new_size.to_le_bytes());
                done += 1;
            }
        }
        off += size.div_ceil(8) * 8;
    }
    let flags = u32::from_le_bytes(d[12..16].try_into().unwrap()) | incompat;
    d[12..16].copy_from_slice(&flags.to_le_bytes());
    std::fs::write(file, d).unwrap();
    done
}
