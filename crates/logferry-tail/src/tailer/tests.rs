//! The tailer against real files in a temporary directory: rotation, truncation, deletion,
//! resuming, inotify and polling.

use super::*;
use std::fs::{self, OpenOptions};
use std::io::Write;

use crate::identity::fingerprint;

const PATIENCE: Duration = Duration::from_secs(5);

fn opts(dir: &Path, pattern: &str) -> TailerOptions {
    TailerOptions {
        include: vec![format!("{}/{pattern}", dir.display())],
        rotate_wait: Duration::from_millis(200),
        // Long: these tests must pass on inotify alone unless they say otherwise.
        rescan_interval: Duration::from_secs(3600),
        ..TailerOptions::default()
    }
}

fn append(path: &Path, data: &[u8]) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(data).expect("append");
}

/// Everything read and noticed so far.
#[derive(Default)]
struct Seen {
    lines: Vec<Line>,
    notices: Vec<Notice>,
}

impl Seen {
    fn texts(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }
    fn texts_of(&self, file: FileId) -> Vec<String> {
        self.lines
            .iter()
            .filter(|l| l.file == file)
            .map(|l| String::from_utf8_lossy(&l.bytes).into_owned())
            .collect()
    }
    fn closed(&self, file: FileId) -> Option<CloseReason> {
        self.notices.iter().find_map(|n| match n {
            Notice::Closed { file: f, reason } if *f == file => Some(*reason),
            _ => None,
        })
    }
    fn opened(&self) -> Vec<(FileId, PathBuf, u64)> {
        self.notices
            .iter()
            .filter_map(|n| match n {
                Notice::Opened {
                    file, path, offset, ..
                } => Some((*file, path.to_path_buf(), *offset)),
                _ => None,
            })
            .collect()
    }
    fn id_of(&self, path: &Path) -> FileId {
        self.opened()
            .into_iter()
            .rev()
            .find(|(_, p, _)| p == path)
            .map(|(id, _, _)| id)
            .unwrap_or_else(|| panic!("{} not opened: {:?}", path.display(), self.notices))
    }
}

/// Reads (and waits) until `done` holds or PATIENCE runs out; checks that `Opened` always
/// precedes a file's lines.
fn pump(t: &mut Tailer, seen: &mut Seen, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut lines = Vec::new();
        t.read(&mut lines, 1000);
        t.drain_notices(&mut seen.notices);
        for l in &lines {
            assert!(
                seen.opened().iter().any(|(id, _, _)| *id == l.file),
                "line of file {} before its Opened notice",
                l.file
            );
        }
        seen.lines.extend(lines);
        if done(seen) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "gave up; lines {:?}, notices {:?}",
            seen.texts(),
            seen.notices
        );
        t.wait(Duration::from_millis(20));
    }
}

fn n_lines(n: usize) -> impl Fn(&Seen) -> bool {
    move |s| s.lines.len() >= n
}

/// Reads for a while and checks nothing more arrives.
fn settle(t: &mut Tailer, seen: &mut Seen, for_: Duration) {
    let deadline = Instant::now() + for_;
    while Instant::now() < deadline {
        t.read(&mut seen.lines, 1000);
        t.drain_notices(&mut seen.notices);
        t.wait(Duration::from_millis(20));
    }
}

#[test]
fn reads_existing_and_appended_lines_with_exact_end_offsets() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"one\ntwo\r\n");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    append(&p, b"three\n");
    pump(&mut t, &mut seen, n_lines(3));
    assert_eq!(seen.texts(), ["one", "two", "three"]);
    let ends: Vec<u64> = seen.lines.iter().map(|l| l.end_offset).collect();
    assert_eq!(ends, [4, 9, 15]);
    assert_eq!(seen.opened(), [(0, p.clone(), 0)]);
    assert_eq!(t.open_files(), 1);
    assert_eq!(t.path(0).as_deref(), Some(p.as_path()));
}

#[test]
fn bad_include_pattern_is_an_error_naming_it() {
    let err = Tailer::new(
        TailerOptions {
            include: vec!["/var/log/[oops".into()],
            ..TailerOptions::default()
        },
        vec![],
    )
    .expect_err("bad pattern");
    assert!(err.to_string().contains("/var/log/[oops"), "{err}");
}

#[test]
fn start_at_end_applies_only_to_files_present_at_the_first_scan() {
    let d = tempfile::tempdir().expect("tempdir");
    let old = d.path().join("old.log");
    append(&old, b"history\n");
    let mut o = opts(d.path(), "*.log");
    o.start_at_end = true;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let new = d.path().join("new.log");
    append(&new, b"fresh\n");
    append(&old, b"appended\n");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    let mut texts = seen.texts();
    texts.sort();
    assert_eq!(texts, ["appended", "fresh"]);
    let old_id = seen.id_of(&old);
    assert!(seen.opened().contains(&(old_id, old, 8)));
}

#[test]
fn resumes_from_a_saved_position_without_duplicates() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"a\nb\nc\n");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(3));
    // Only "a" and "b" were delivered.
    let pos = t
        .position(seen.lines[1].file, seen.lines[1].end_offset)
        .expect("pos");
    assert_eq!(pos.offset, 4);
    drop(t);
    append(&p, b"d\n");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![pos]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    settle(&mut t, &mut seen, Duration::from_millis(100));
    assert_eq!(seen.texts(), ["c", "d"]);
    assert_eq!(seen.opened()[0].2, 4);
}

#[test]
fn saved_key_with_other_content_is_a_different_file_read_from_zero() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"new content\nsecond\n");
    let meta = fs::metadata(&p).expect("stat");
    // As if the saved file was deleted and its inode number reused by this one.
    let saved = SavedPosition {
        path: p.clone(),
        key: FileKey::of(&meta),
        fingerprint: Fingerprint {
            len: 11,
            crc: crc32c::crc32c(b"old content"),
        },
        offset: 12,
    };
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved.clone()]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    assert_eq!(seen.texts(), ["new content", "second"]);
    assert!(seen.notices.contains(&Notice::Missing { saved }));
}

#[test]
fn saved_file_shorter_than_its_fingerprint_is_a_different_file() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"ab\n");
    let meta = fs::metadata(&p).expect("stat");
    let saved = SavedPosition {
        path: p.clone(),
        key: FileKey::of(&meta),
        fingerprint: Fingerprint { len: 100, crc: 1 },
        offset: 1,
    };
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    assert_eq!(seen.texts(), ["ab"]);
}

#[test]
fn saved_offset_past_the_end_means_truncated_while_stopped() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"first line\n");
    let f = File::open(&p).expect("open");
    let saved = SavedPosition {
        path: p.clone(),
        key: FileKey::of(&f.metadata().expect("stat")),
        fingerprint: fingerprint(&f, 256).expect("fp"),
        offset: 500,
    };
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    assert_eq!(seen.texts(), ["first line"]);
    assert_eq!(seen.opened()[0].2, 0);
    assert!(seen
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Truncated { at: 500, .. })));
}

#[test]
fn file_rotated_away_while_stopped_is_finished_then_closed() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"read before stop\nunread 1\n");
    let mut t = Tailer::new(opts(d.path(), "app.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    let pos = t
        .position(seen.lines[0].file, seen.lines[0].end_offset)
        .expect("pos");
    drop(t);
    // While stopped: the writer appends, logrotate renames, the writer reopens.
    append(&p, b"unread 2\npartial");
    fs::rename(&p, d.path().join("app.log.1")).expect("rename");
    append(&p, b"new file\n");
    let mut t = Tailer::new(opts(d.path(), "app.log"), vec![pos]).expect("tailer");
    let mut seen = Seen::default();
    let rotated = d.path().join("app.log.1");
    pump(&mut t, &mut seen, |s| {
        s.opened().iter().any(|(_, p, _)| *p == rotated) && s.closed(s.id_of(&rotated)).is_some()
    });
    let old = seen.id_of(&rotated);
    let new = seen.id_of(&p);
    assert_eq!(seen.texts_of(old), ["unread 1", "unread 2", "partial"]);
    assert_eq!(seen.texts_of(new), ["new file"]);
    assert_eq!(seen.closed(old), Some(CloseReason::RotatedAway));
    assert!(seen.opened().contains(&(old, rotated, 17)));
    assert!(!seen
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Missing { .. })));
    assert_eq!(t.open_files(), 1);
}

#[test]
fn file_deleted_while_stopped_is_reported_missing() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"x\n");
    let f = File::open(&p).expect("open");
    let saved = SavedPosition {
        path: p.clone(),
        key: FileKey::of(&f.metadata().expect("stat")),
        fingerprint: fingerprint(&f, 256).expect("fp"),
        offset: 0,
    };
    drop(f);
    fs::remove_file(&p).expect("rm");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![saved.clone()]).expect("tailer");
    let mut notices = Vec::new();
    t.drain_notices(&mut notices);
    assert_eq!(notices, [Notice::Missing { saved }]);
}

#[test]
fn rename_rotation_while_running_loses_and_repeats_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    let mut writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .expect("create");
    writeln!(writer, "before 1").expect("write");
    let mut t = Tailer::new(opts(d.path(), "app.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    let old = seen.lines[0].file;
    let rotated = d.path().join("app.log.1");
    fs::rename(&p, &rotated).expect("rename");
    // The writer has not reopened yet: it still appends to the renamed file.
    writeln!(writer, "late 1").expect("write");
    let mut new_writer = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .expect("create new");
    writeln!(new_writer, "new 1").expect("write");
    pump(&mut t, &mut seen, n_lines(3));
    writeln!(writer, "late 2").expect("write");
    writeln!(new_writer, "new 2").expect("write");
    drop(writer);
    pump(&mut t, &mut seen, |s| s.closed(old).is_some());
    let new = seen.id_of(&p);
    assert_eq!(seen.texts_of(old), ["before 1", "late 1", "late 2"]);
    assert_eq!(seen.texts_of(new), ["new 1", "new 2"]);
    assert_eq!(seen.closed(old), Some(CloseReason::RotatedAway));
    assert_eq!(seen.opened().last().map(|o| o.2), Some(0));
    // Closed files still answer for their position until forgotten.
    assert!(t.position(old, 9).is_some());
    t.forget(old);
    assert!(t.position(old, 9).is_none());
    assert_eq!(t.open_files(), 1);
}

#[test]
fn rename_to_another_matched_name_keeps_tailing_under_the_new_path() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"one\n");
    let mut t = Tailer::new(opts(d.path(), "app.log*"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    let id = seen.lines[0].file;
    let rotated = d.path().join("app.log.1");
    fs::rename(&p, &rotated).expect("rename");
    settle(&mut t, &mut seen, Duration::from_millis(400));
    assert_eq!(t.path(id).as_deref(), Some(rotated.as_path()));
    append(&rotated, b"two\n");
    pump(&mut t, &mut seen, n_lines(2));
    settle(&mut t, &mut seen, Duration::from_millis(400));
    assert_eq!(seen.texts(), ["one", "two"]);
    assert_eq!(seen.closed(id), None, "{:?}", seen.notices);
}

#[test]
fn copytruncate_is_detected_and_the_file_read_again_from_zero() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"first\nsecond\n");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    // logrotate copytruncate: the copy is not matched; the original is truncated in place.
    fs::copy(&p, d.path().join("app.log.1")).expect("copy");
    OpenOptions::new()
        .write(true)
        .open(&p)
        .expect("open")
        .set_len(0)
        .expect("truncate");
    append(&p, b"after\n");
    pump(&mut t, &mut seen, n_lines(3));
    assert_eq!(seen.texts(), ["first", "second", "after"]);
    assert_eq!(seen.lines[2].end_offset, 6);
    assert!(seen
        .notices
        .iter()
        .any(|n| matches!(n, Notice::Truncated { at: 13, .. })));
    assert_eq!(t.position(0, 6).map(|s| s.fingerprint.len), Some(6));
}

#[test]
fn truncation_rewritten_past_the_offset_is_caught_by_the_fingerprint_at_rescan() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"aaaa\n");
    let mut o = opts(d.path(), "*.log");
    o.rescan_interval = Duration::ZERO;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    // Truncated and rewritten longer than what was read before the tailer looks again.
    fs::write(&p, b"bbbbbbbbbb\ncc\n").expect("rewrite");
    pump(&mut t, &mut seen, n_lines(3));
    assert_eq!(seen.texts(), ["aaaa", "bbbbbbbbbb", "cc"]);
}

#[test]
fn deleted_file_is_read_to_its_end_and_its_descriptor_closed() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"one\n");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    let id = seen.lines[0].file;
    // Counted by target, so tests running in parallel threads do not disturb the count.
    let fds_into = |dir: &Path| {
        fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .flatten()
            .filter(|e| fs::read_link(e.path()).is_ok_and(|t| t.starts_with(dir)))
            .count()
    };
    assert_eq!(fds_into(d.path()), 1);
    append(&p, b"two\nlast words");
    fs::remove_file(&p).expect("rm");
    pump(&mut t, &mut seen, |s| s.closed(id).is_some());
    assert_eq!(seen.texts(), ["one", "two", "last words"]);
    assert_eq!(seen.lines[2].end_offset, 18);
    assert_eq!(seen.closed(id), Some(CloseReason::Deleted));
    assert_eq!(fds_into(d.path()), 0);
    assert_eq!(t.open_files(), 0);
}

#[test]
fn rotated_file_deleted_by_compression_is_closed_at_once_not_after_rotate_wait() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"one\n");
    let mut o = opts(d.path(), "app.log");
    o.rotate_wait = Duration::from_secs(3600);
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    let old = seen.lines[0].file;
    let rotated = d.path().join("app.log.1");
    fs::rename(&p, &rotated).expect("rename");
    append(&p, b"new\n");
    append(&rotated, b"two\n");
    pump(&mut t, &mut seen, n_lines(3));
    // logrotate's delaycompress/compress: gzip writes app.log.1.gz and unlinks app.log.1.
    fs::remove_file(&rotated).expect("rm");
    pump(&mut t, &mut seen, |s| s.closed(old).is_some());
    assert_eq!(seen.closed(old), Some(CloseReason::Deleted));
    assert_eq!(seen.texts_of(old), ["one", "two"]);
    assert_eq!(t.open_files(), 1);
}

#[test]
fn unterminated_line_waits_for_its_newline() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"done\nhalf");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    settle(&mut t, &mut seen, Duration::from_millis(100));
    assert_eq!(seen.texts(), ["done"]);
    append(&p, b" and half\n");
    pump(&mut t, &mut seen, n_lines(2));
    assert_eq!(seen.texts(), ["done", "half and half"]);
    assert_eq!(seen.lines[1].end_offset, 19);
}

#[test]
fn long_line_is_truncated_with_exact_offset_and_reading_goes_on() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    let mut content = vec![b'x'; 300_000];
    content.extend_from_slice(b"\nnext\n");
    append(&p, &content);
    let mut o = opts(d.path(), "*.log");
    o.max_line_bytes = 1000;
    o.read_buffer_bytes = 4096;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    assert_eq!(seen.lines[0].bytes.len(), 1000);
    assert_eq!(seen.lines[0].truncated_bytes, 299_000);
    assert_eq!(seen.lines[0].end_offset, 300_001);
    assert_eq!(seen.texts()[1], "next");
    assert_eq!(seen.lines[1].end_offset, 300_006);
}

#[test]
fn fingerprint_grows_with_the_file_up_to_fingerprint_bytes() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    fs::write(&p, b"").expect("create");
    let mut o = opts(d.path(), "*.log");
    o.fingerprint_bytes = 16;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    settle(&mut t, &mut seen, Duration::from_millis(50));
    assert_eq!(t.position(0, 0).map(|s| s.fingerprint.len), Some(0));
    append(&p, b"0123456789\n");
    pump(&mut t, &mut seen, n_lines(1));
    assert_eq!(t.position(0, 11).map(|s| s.fingerprint.len), Some(11));
    append(&p, b"abcdefghij\n");
    pump(&mut t, &mut seen, n_lines(2));
    let fp = t.position(0, 22).expect("pos").fingerprint;
    assert_eq!(fp.len, 16);
    assert_eq!(fp.crc, crc32c::crc32c(b"0123456789\nabcde"));
}

#[test]
fn latin1_and_utf16_files_are_decoded_with_byte_offsets() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("latin.log");
    append(&p, b"caf\xe9\n");
    let mut o = opts(d.path(), "latin.log");
    o.encoding = encoding_rs::WINDOWS_1252;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    assert_eq!(seen.texts(), ["café"]);
    assert_eq!(seen.lines[0].end_offset, 5);

    let p = d.path().join("wide.log");
    let mut bytes = vec![0xff, 0xfe];
    for u in "héllo\r\nwörld\n".encode_utf16() {
        bytes.extend(u.to_le_bytes());
    }
    append(&p, &bytes);
    let mut o = opts(d.path(), "wide.log");
    o.encoding = encoding_rs::UTF_16LE;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(2));
    assert_eq!(seen.texts(), ["héllo", "wörld"]);
    assert_eq!(seen.lines[0].end_offset, 2 + 14);
    assert_eq!(seen.lines[1].end_offset, bytes.len() as u64);
}

#[test]
fn compressed_and_special_files_are_skipped_with_a_notice() {
    let d = tempfile::tempdir().expect("tempdir");
    append(
        &d.path().join("a.log.1.gz"),
        &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3],
    );
    append(
        &d.path().join("a.log.2.zst"),
        &[0x28, 0xb5, 0x2f, 0xfd, 0, 0],
    );
    append(&d.path().join("a.log"), b"text\n");
    let mut t = Tailer::new(opts(d.path(), "a.log*"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    // logrotate's gzip creates the file empty, then writes it.
    let gz = d.path().join("a.log.3.gz");
    fs::write(&gz, b"").expect("create");
    pump(&mut t, &mut seen, |s| s.opened().iter().any(|o| o.1 == gz));
    append(&gz, &[0x1f, 0x8b, 8, 0, b'\n', 0, 0]);
    pump(&mut t, &mut seen, |s| {
        s.notices
            .iter()
            .filter(|n| matches!(n, Notice::Skipped { .. }))
            .count()
            == 3
    });
    settle(&mut t, &mut seen, Duration::from_millis(200));
    assert_eq!(seen.texts(), ["text"]);
    let skipped: Vec<(String, String)> = seen
        .notices
        .iter()
        .filter_map(|n| match n {
            Notice::Skipped { path, reason } => Some((
                path.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                reason.clone(),
            )),
            _ => None,
        })
        .collect();
    assert!(skipped.contains(&("a.log.1.gz".into(), "gzip-compressed".into())));
    assert!(skipped.contains(&("a.log.2.zst".into(), "zstd-compressed".into())));
    assert!(skipped.contains(&("a.log.3.gz".into(), "gzip-compressed".into())));
    assert_eq!(t.open_files(), 1);
}

#[test]
fn excluded_files_are_not_read() {
    let d = tempfile::tempdir().expect("tempdir");
    append(&d.path().join("keep.log"), b"kept\n");
    append(&d.path().join("debug.log"), b"dropped\n");
    let mut o = opts(d.path(), "*.log");
    o.exclude = vec!["*/debug.*".into()];
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    settle(&mut t, &mut seen, Duration::from_millis(100));
    assert_eq!(seen.texts(), ["kept"]);
}

#[test]
fn files_of_a_filtered_namespace_are_never_opened() {
    let d = tempfile::tempdir().expect("tempdir");
    for ns in ["default", "kube-system"] {
        let dir = d.path().join(format!("pods/{ns}_web-0_u1/c"));
        fs::create_dir_all(&dir).expect("mkdir");
        append(&dir.join("0.log"), format!("from {ns}\n").as_bytes());
    }
    let mut o = opts(d.path(), "pods/*/*/*.log");
    o.namespaces = crate::container::NamespaceFilter::new(&[], &["kube-*".into()]).expect("glob");
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    settle(&mut t, &mut seen, Duration::from_millis(100));
    assert_eq!(seen.texts(), ["from default"]);
    let opened: Vec<PathBuf> = seen.opened().into_iter().map(|(_, p, _)| p).collect();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert!(
        opened[0].to_string_lossy().contains("/default_"),
        "{opened:?}"
    );
    assert_eq!(t.open_files(), 1);
}

#[test]
fn new_directory_and_file_are_found_through_inotify_alone() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut t = Tailer::new(opts(d.path(), "pods/*/*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    settle(&mut t, &mut seen, Duration::from_millis(50));
    // `pods` does not exist yet; the tailer watches its parent. rescan_interval is an hour.
    let dir = d.path().join("pods/one");
    fs::create_dir_all(&dir).expect("mkdir");
    append(&dir.join("c.log"), b"hello\n");
    pump(&mut t, &mut seen, n_lines(1));
    append(&dir.join("c.log"), b"again\n");
    pump(&mut t, &mut seen, n_lines(2));
    assert_eq!(seen.texts(), ["hello", "again"]);
}

#[test]
fn symlinked_files_are_followed_and_their_writes_noticed() {
    let d = tempfile::tempdir().expect("tempdir");
    let target_dir = d.path().join("pods/p1");
    fs::create_dir_all(&target_dir).expect("mkdir");
    fs::create_dir_all(d.path().join("containers")).expect("mkdir");
    let target = target_dir.join("0.log");
    append(&target, b"one\n");
    let link = d.path().join("containers/p1.log");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let mut t = Tailer::new(opts(d.path(), "containers/*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    append(&target, b"two\n");
    pump(&mut t, &mut seen, n_lines(2));
    assert_eq!(seen.texts(), ["one", "two"]);
    assert_eq!(seen.opened()[0].1, link);
}

#[test]
fn reading_is_fair_across_files() {
    let d = tempfile::tempdir().expect("tempdir");
    append(
        &d.path().join("big.log"),
        "line\n".repeat(100_000).as_bytes(),
    );
    append(&d.path().join("small.log"), b"small\n");
    let mut o = opts(d.path(), "*.log");
    o.read_buffer_bytes = 4096;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let mut out = Vec::new();
    // The small file's line comes within the first two turns (a turn being READS_PER_TURN
    // reads of 4,096 bytes, 819 lines each), not after 100,000 lines.
    let two_turns = 2 * READS_PER_TURN as usize * 4096 / 5;
    t.read(&mut out, two_turns);
    assert!(out.iter().any(|l| &l.bytes[..] == b"small"));
    assert!(out.len() <= two_turns);
    let mut seen = Seen {
        lines: out,
        notices: Vec::new(),
    };
    pump(&mut t, &mut seen, n_lines(100_001));
    settle(&mut t, &mut seen, Duration::from_millis(50));
    assert_eq!(seen.lines.len(), 100_001);
}

#[test]
fn a_turn_is_several_reads_and_goes_on_past_the_callers_limit() {
    let d = tempfile::tempdir().expect("tempdir");
    append(&d.path().join("a.log"), "a\n".repeat(50_000).as_bytes());
    append(&d.path().join("b.log"), "b\n".repeat(50_000).as_bytes());
    let mut o = opts(d.path(), "*.log");
    o.read_buffer_bytes = 4096;
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    // Read 1,000 lines at a time, as a source fills its chunks.
    let mut out = Vec::new();
    while out.len() < 100_000 {
        if t.read(&mut out, 1000) == 0 {
            break;
        }
    }
    assert_eq!(out.len(), 100_000);
    // Runs of one file's lines: a whole turn each (2,048 lines a read; a turn that ends with
    // lines of its last read still buffered, because `out` was full, leaves them to the next
    // one), the last one of each file what is left.
    let mut runs: Vec<(Vec<u8>, usize)> = Vec::new();
    for l in &out {
        match runs.last_mut() {
            Some((text, n)) if *text == l.bytes[..] => *n += 1,
            _ => runs.push((l.bytes.to_vec(), 1)),
        }
    }
    let read = 2048;
    let turn = READS_PER_TURN as usize * read;
    let lens: Vec<usize> = runs.iter().map(|r| r.1).collect();
    assert!(
        lens[..lens.len() - 2]
            .iter()
            .all(|&n| n > turn - read && n < turn + read),
        "{lens:?}"
    );
    assert!(
        lens.len() <= 2 * 50_000usize.div_ceil(turn - read),
        "{lens:?}"
    );
}

#[test]
fn without_inotify_files_are_polled() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("app.log");
    append(&p, b"one\n");
    let mut o = opts(d.path(), "*.log");
    o.rescan_interval = Duration::from_millis(100);
    let mut t = Tailer::with_inotify(o, vec![], false).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    assert!(
        matches!(seen.notices[0], Notice::Error { .. }),
        "{:?}",
        seen.notices
    );
    append(&p, b"two\n");
    append(&d.path().join("other.log"), b"three\n");
    pump(&mut t, &mut seen, n_lines(3));
    let mut texts = seen.texts();
    texts.sort();
    assert_eq!(texts, ["one", "three", "two"]);
}

#[test]
fn non_regular_files_are_skipped() {
    let d = tempfile::tempdir().expect("tempdir");
    let fifo = d.path().join("pipe.log");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut notices = Vec::new();
    t.drain_notices(&mut notices);
    assert_eq!(
        notices,
        [Notice::Skipped {
            path: Arc::from(fifo.as_path()),
            reason: "not a regular file".into()
        }]
    );
    assert_eq!(t.open_files(), 0);
}

#[test]
fn close_all_closes_everything_without_flushing_partial_lines() {
    let d = tempfile::tempdir().expect("tempdir");
    append(&d.path().join("a.log"), b"a\npartial");
    let mut t = Tailer::new(opts(d.path(), "*.log"), vec![]).expect("tailer");
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(1));
    t.close_all();
    t.drain_notices(&mut seen.notices);
    assert_eq!(seen.closed(0), Some(CloseReason::Shutdown));
    assert_eq!(t.read(&mut seen.lines, 10), 0);
    assert_eq!(t.position(0, 2).map(|p| p.offset), Some(2));
}

#[test]
fn a_file_over_its_rate_is_paused_not_cut_while_others_are_read() {
    let d = tempfile::tempdir().expect("tempdir");
    // 10 bytes a line: 2,000 bytes at 1,000 B/s is one second's burst, then a second more.
    append(
        &d.path().join("loud.log"),
        "loud-line\n".repeat(200).as_bytes(),
    );
    let mut o = opts(d.path(), "*.log");
    o.read_buffer_bytes = 4096;
    o.max_file_bytes_per_second = Some(1000);
    let mut t = Tailer::new(o, vec![]).expect("tailer");
    let start = Instant::now();
    let mut seen = Seen::default();
    pump(&mut t, &mut seen, n_lines(100));
    assert_eq!(t.rate_pauses(), 1, "paused once its burst was read");
    // A quiet file written while the loud one is paused is read at once.
    append(&d.path().join("quiet.log"), b"quiet\n");
    pump(&mut t, &mut seen, |s| {
        s.texts().contains(&"quiet".to_string())
    });
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    pump(&mut t, &mut seen, n_lines(201));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(2),
        "2,000 bytes at 1,000 B/s with a one-second burst took {took:?}"
    );
    settle(&mut t, &mut seen, Duration::from_millis(50));
    assert_eq!(seen.lines.len(), 201, "nothing lost, nothing repeated");
    assert!(t.rate_pauses() >= 2);
}
