//! Fuzz target `pem_der`: see `aop_fuzz::pem_der` (fuzz/src/lib.rs) for what it checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aop_fuzz::pem_der(data));
