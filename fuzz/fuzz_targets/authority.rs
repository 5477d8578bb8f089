//! Fuzz target `authority`: see `aop_fuzz::authority` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::authority(data));
