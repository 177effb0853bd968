//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) of kiln-proto's fuzz targets on
//! stable, so CI checks every input the fuzzers ever kept without nightly or libFuzzer.
//!
//! The checks are the fuzz targets' own (`fuzz/src/lib.rs`, included here as a module): each
//! parses the input and asserts its properties (round trips, validity); none may panic.

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
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

#[test]
fn protocol_worker() {
    replay("protocol_worker", checks::protocol);
}

#[test]
fn spec_toml() {
    replay("spec_toml", checks::spec_toml);
}

#[test]
fn spec_json() {
    replay("spec_json", checks::spec_json);
}

#[test]
fn proto_strings() {
    replay("proto_strings", checks::strings);
}

#[test]
fn sweep_grid() {
    replay("sweep_grid", checks::sweep_grid);
}

#[test]
fn worker_session() {
    replay("worker_session", checks::worker_session);
}
