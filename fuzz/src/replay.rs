//! Replays a committed fuzz corpus (`fuzz/corpus/<target>/`) through its target's check on
//! stable: included by the corpus tests of kiln-proto and kiln-train, so CI checks every input
//! the fuzzers ever kept without nightly or libFuzzer.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

/// Every file of `target`'s corpus through `check`; fails naming each input that panicked.
pub fn replay(target: &str, check: fn(&[u8])) {
    // The crate replaying is somewhere inside the repository that holds `fuzz/`.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("fuzz/corpus"))
        .find(|corpus| corpus.is_dir())
        .expect("the crate is inside the Kiln repository, beside fuzz/")
        .join(target);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is missing: {e}", dir.display()))
        .map(|entry| entry.expect("a readable corpus entry").path())
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "the corpus {} is empty", dir.display());
    let mut failed = Vec::new();
    for path in &entries {
        let data = std::fs::read(path).expect("a readable corpus file");
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs failed (their panics are printed above):\n{}",
        failed.len(),
        entries.len(),
        failed.join("\n")
    );
}
