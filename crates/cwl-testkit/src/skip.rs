//! A test that cannot run here must never look like one that passed.
//!
//! Outside CI (a developer without root, say) a test that lacks what it needs returns early
//! after [`skipped`] has said so on stderr and appended a line to `$LOGFERRY_SKIP_LOG`, which
//! `scripts/test.sh` counts and prints at the end. Under CI (`CI` set, as `.ci/run` has it)
//! the same call panics: the suite there must run every test, so a missing tool or privilege
//! is an install step to fix, not a quiet `ok`.

use std::io::Write;

/// Records that `test` cannot run here because of `why`: panics under CI, otherwise prints
/// `SKIPPED <test>: <why>`, appends it to `$LOGFERRY_SKIP_LOG` and returns `true` so the
/// caller can `return`.
pub fn skipped(test: &str, why: &str) -> bool {
    let line = format!("SKIPPED {test}: {why}");
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{line} (CI must run every test: install what it needs in .ci/run)");
    }
    eprintln!("{line}");
    if let Some(path) = std::env::var_os("LOGFERRY_SKIP_LOG") {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
    true
}
