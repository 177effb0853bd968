//! See `kiln_fuzz::spec_toml` (fuzz/src/lib.rs) for what this target feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::spec_toml(data));
