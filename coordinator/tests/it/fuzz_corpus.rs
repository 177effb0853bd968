//! Replays the committed corpus of the fuzz target `dataset_preview` on stable, so CI checks
//! every input the fuzzer ever kept. The check is the target's own (`fuzz/src/dataset.rs`),
//! run on the coordinator's preview code.

#[path = "../../../fuzz/src/dataset.rs"]
mod checks;
#[path = "../../src/dataset/preview.rs"]
mod preview;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

#[test]
fn dataset_preview() {
    replay::replay("dataset_preview", checks::dataset_preview);
}
