//! See `kiln_fuzz::sweep_grid` (fuzz/src/lib.rs) for what this target feeds and checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kiln_fuzz::sweep_grid(data));
