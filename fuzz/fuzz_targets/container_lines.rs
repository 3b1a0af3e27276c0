//! The `container_lines` target. Its body and invariants:
//! `crates/logferry-fuzz-targets/src/container_lines.rs`, through which the workspace's tests replay
//! every input kept in `fuzz/regressions/` and `fuzz/corpus/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logferry_fuzz_targets::container_lines::run(data));
