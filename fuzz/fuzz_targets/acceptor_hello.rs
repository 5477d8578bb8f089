//! Fuzz target `acceptor_hello`: see `aop_fuzz::acceptor_hello` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::acceptor_hello(data));
