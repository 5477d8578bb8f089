//! Fuzz target `acceptor`: see `aop_fuzz::acceptor` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::acceptor(data));
