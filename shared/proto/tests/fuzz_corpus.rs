//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) of kiln-proto's fuzz targets on
//! stable, so CI checks every input the fuzzers ever kept without nightly or libFuzzer.
//!
//! The checks are the fuzz targets' own (`fuzz/src/lib.rs`, included here as a module): each
//! parses the input and asserts its properties (round trips, validity); none may panic.

#[path = "../../../fuzz/src/lib.rs"]
mod checks;

#[path = "../../../fuzz/src/replay.rs"]
mod replay;

use replay::replay;

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
