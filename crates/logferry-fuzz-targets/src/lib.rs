//! The bodies of the fuzz targets in `fuzz/`, one module each, as plain functions
//! (`run(data)` panics when an invariant breaks; each module's doc states its input layout and
//! invariants).
//!
//! Why a crate of their own: cargo-fuzz builds `fuzz/` with libFuzzer and sanitizer flags, a
//! separate workspace that a stable `cargo test --workspace` never compiles, so a target could
//! rot unnoticed and an input that once crashed a parser was guarded only when someone ran
//! `scripts/fuzz.sh regressions`. Here the bodies are part of the workspace: clippy sees them,
//! and `tests/replay.rs` runs every input kept in `fuzz/regressions/` (each a crash that was
//! fixed) and `fuzz/corpus/` through them as ordinary tests. `fuzz/fuzz_targets/*.rs` are
//! one-line wrappers around these functions.

pub mod cloudwatch_batcher;
pub mod config_parser;
pub mod container_lines;
pub mod journal_file;
pub mod spool_recovery;
pub mod syslog_codec;

/// A target's body: one input, a panic when an invariant breaks.
pub type Body = fn(&[u8]);

/// The targets, by the name of their directory under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: [(&str, Body); 6] = [
    ("cloudwatch_batcher", cloudwatch_batcher::run),
    ("config_parser", config_parser::run),
    ("container_lines", container_lines::run),
    ("journal_file", journal_file::run),
    ("spool_recovery", spool_recovery::run),
    ("syslog_codec", syslog_codec::run),
];
