//! See `fuzz/src/train.rs` (`csv`) for what this target feeds and checks.
#![no_main]

#[path = "../src/train.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::csv(data));
