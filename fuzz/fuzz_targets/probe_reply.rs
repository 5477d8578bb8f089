//! Fuzz target `probe_reply`: see `aop_fuzz::probe_reply` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::probe_reply(data));
