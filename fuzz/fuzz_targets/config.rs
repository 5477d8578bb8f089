//! Fuzz target `config`: see `aop_fuzz::config` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::config(data));
