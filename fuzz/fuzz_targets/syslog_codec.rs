//! The `syslog_codec` target. Its body and invariants:
//! `crates/logferry-fuzz-targets/src/syslog_codec.rs`, through which the workspace's tests replay
//! every input kept in `fuzz/regressions/` and `fuzz/corpus/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| logferry_fuzz_targets::syslog_codec::run(data));
