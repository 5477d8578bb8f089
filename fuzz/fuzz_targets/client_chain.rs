//! Fuzz target `client_chain`: see `aop_fuzz::client_chain` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::client_chain(data));
