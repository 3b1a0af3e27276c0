//! The `config_parser` target. Its body and invariants:
//! `crates/logferry-fuzz-targets/src/config_parser.rs`, through which the workspace's tests replay
//! every input kept in `fuzz/regressions/` and `fuzz/corpus/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logferry_fuzz_targets::config_parser::run(data));
