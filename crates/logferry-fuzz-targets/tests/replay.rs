//! Every input kept under `fuzz/regressions/TARGET/` (a crash that was fixed) and
//! `fuzz/corpus/TARGET/` (seeds and what the fuzzer found covering new code) is run through
//! its target as an ordinary test, on the stable toolchain, in every `cargo test`: a fix that
//! is undone fails here, naming the input.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use logferry_fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/KIND/TARGET/`, sorted; none when the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join(kind).join(target);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| e.expect("read fuzz dir entry").path())
            .filter(|p| p.is_file())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    files.sort();
    files
}

/// Runs every input of `kind` for `target`; returns how many ran. Panics naming each input
/// whose run panicked.
fn replay(kind: &str, target: &str) -> usize {
    let run = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .unwrap_or_else(|| panic!("no target {target}"));
    let files = inputs(kind, target);
    let failed: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            catch_unwind(AssertUnwindSafe(|| run(&data)))
                .is_err()
                .then(|| path.display().to_string())
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs in fuzz/{kind}/{target} fail (the panic of each is printed above):\n  {}",
        failed.len(),
        files.len(),
        failed.join("\n  ")
    );
    files.len()
}

/// Every directory under `fuzz/regressions/` and `fuzz/corpus/` is a target this crate knows:
/// an input kept for a target that is not replayed guards nothing.
#[test]
fn every_kept_input_belongs_to_a_replayed_target() {
    for kind in ["regressions", "corpus"] {
        for entry in std::fs::read_dir(fuzz_dir().join(kind)).expect("fuzz dir") {
            let name = entry.expect("entry").file_name();
            let name = name.to_string_lossy();
            assert!(
                TARGETS.iter().any(|(t, _)| *t == name),
                "fuzz/{kind}/{name} is not a target of logferry-fuzz-targets"
            );
        }
    }
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {$(
        #[test]
        fn $target() {
            let target = stringify!($target);
            let fixed = replay("regressions", target);
            let corpus = replay("corpus", target);
            // The seeds at least: an empty corpus would make this test pass by replaying nothing.
            assert!(corpus > 0, "fuzz/corpus/{target} is empty");
            eprintln!("{target}: {fixed} regression inputs and {corpus} corpus inputs replayed");
        }
    )*};
}

replay_tests!(
    cloudwatch_batcher,
    config_parser,
    container_lines,
    journal_file,
    spool_recovery,
    syslog_codec,
);
