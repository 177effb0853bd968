//! See `fuzz/src/train.rs` (`checkpoint_decode`) for what this target feeds and checks.
#![no_main]

#[path = "../src/train.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::checkpoint_decode(data));
