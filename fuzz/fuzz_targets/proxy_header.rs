//! Fuzz target `proxy_header`: see `aop_fuzz::proxy_header` (fuzz/src/lib.rs) for what it
//! checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::proxy_header(data));
