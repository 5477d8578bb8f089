//! Fuzz target `manifest`: see `aop_fuzz::manifest` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::manifest(data));
