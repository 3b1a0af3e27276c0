//! journald file reader on untrusted files.
//!
//! Input layout: `[journal file bytes][cursor text][n]` where `n` (last byte) is the length of
//! the cursor text. The file bytes are written to `system.journal` in a temp dir and opened
//! with `Journal::open_files`.
//!
//! Invariants:
//! * no panic, no hang: reading stops within a bound set by the file size;
//! * reading from the head twice gives the same entries (same cursors);
//! * after `seek_tail` of a file nobody writes, there is no entry;
//! * after `seek_after_cursor` the cursor's own entry does not come back first, and in a file
//!   whose seqnums strictly increase, resuming after entry i returns exactly entries i+1..;
//! * a cursor that parses prints back to text that parses to the same cursor.

use std::path::PathBuf;
use std::sync::OnceLock;

use logferry_journal::{Cursor, Entry, Journal};

fn work_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("logferry-fuzz-journal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    })
}

/// Reads every entry from the current position; returns their cursors.
fn read_all(j: &mut Journal, cap: usize) -> Vec<Cursor> {
    let mut e = Entry::new();
    let mut out = Vec::new();
    while j.next_entry_into(&mut e).expect("next_entry_into") {
        // Touch what a caller touches.
        let _ = e.field("MESSAGE");
        let _ = e.fields_bytes().count();
        let mut sink = Vec::new();
        e.write_export(&mut sink).expect("export to memory");
        out.push(e.cursor());
        assert!(
            out.len() <= cap,
            "more than {cap} entries from a file this small: a loop?"
        );
    }
    out
}

/// One input; panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Some((&n, rest)) = data.split_last() else {
        return;
    };
    let n = usize::from(n).min(rest.len());
    let (file, cursor_text) = rest.split_at(rest.len() - n);

    let cursor = std::str::from_utf8(cursor_text)
        .ok()
        .and_then(|s| s.parse::<Cursor>().ok());
    if let Some(c) = &cursor {
        let again: Cursor = c.to_string().parse().expect("printed cursor parses");
        assert_eq!(&again, c, "cursor round trip");
    }

    let path = work_dir().join("system.journal");
    std::fs::write(&path, file).expect("write journal file");
    let mut j = Journal::open_files(&[path]).expect("open_files never fails on a bad file");
    // Entries are at least 64 bytes apart (header + one item) in a well-formed file; allow
    // generously more for files that point at the same entry from several places.
    let cap = 64 + file.len();

    let first = read_all(&mut j, cap);
    j.seek_head();
    let second = read_all(&mut j, cap);
    assert_eq!(first, second, "reading from the head twice differs");

    j.seek_tail();
    let mut e = Entry::new();
    assert!(
        !j.next_entry_into(&mut e).expect("next after tail"),
        "an entry after seek_tail on a static file"
    );

    if let Some(c) = &cursor {
        j.seek_after_cursor(c);
        let after = read_all(&mut j, cap);
        if let Some(a) = after.first() {
            assert_ne!(
                a, c,
                "seek_after_cursor returned the cursor's own entry first"
            );
        }
    }
    // In a file whose seqnums strictly increase, resuming after entry i gives exactly the
    // entries after it.
    let increasing = first.windows(2).all(|w| w[0].seqnum < w[1].seqnum);
    for (i, c) in first.iter().enumerate().take(8) {
        j.seek_after_cursor(c);
        let after = read_all(&mut j, cap);
        if increasing {
            assert_eq!(
                after,
                first[i + 1..],
                "resuming after entry {i} of {}",
                first.len()
            );
        }
    }
    let _ = j.files();
    let _ = j.file_errors();
    j.seek_realtime(first.first().and_then(|c| c.realtime).unwrap_or(0));
    let _ = read_all(&mut j, cap);
}
