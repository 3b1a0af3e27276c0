//! Prints a journal in export format, like `journalctl -D DIR -o export` (or `--file`):
//! a manual differential check and a debugging aid.
//!
//! Usage: `export [--file] PATH...` (directories by default, files with `--file`), with
//! `--after-cursor=CURSOR` to resume and `--show-errors` to list per-file problems on stderr.

use std::io::Write;
use std::path::PathBuf;

use logferry_journal::{Cursor, Entry, Journal};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut files = false;
    let mut show_errors = false;
    let mut after: Option<Cursor> = None;
    let mut paths = Vec::new();
    for a in std::env::args().skip(1) {
        if a == "--file" {
            files = true;
        } else if a == "--show-errors" {
            show_errors = true;
        } else if let Some(c) = a.strip_prefix("--after-cursor=") {
            after = Some(c.parse()?);
        } else {
            paths.push(PathBuf::from(a));
        }
    }
    let mut j = if files {
        Journal::open_files(&paths)?
    } else {
        Journal::open_dirs(&paths)?
    };
    if let Some(c) = &after {
        j.seek_after_cursor(c);
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut e = Entry::new();
    while j.next_entry_into(&mut e)? {
        e.write_export(&mut out)?;
    }
    out.flush()?;
    if show_errors {
        for err in j.file_errors() {
            eprintln!("{err}");
        }
    }
    Ok(())
}
