//! See `fuzz/src/dataset.rs` for what this target feeds and checks.
#![no_main]

#[path = "../src/dataset.rs"]
mod checks;
#[path = "../../coordinator/src/dataset/preview.rs"]
mod preview;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::dataset_preview(data));
