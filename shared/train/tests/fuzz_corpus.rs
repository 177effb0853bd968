//! Replays the committed fuzz corpora of the training core's fuzz targets (`idx`, `csv`,
//! `text`, `checkpoint`, `checkpoint_decode`) on stable, so CI checks every input the fuzzers
//! ever kept without nightly or libFuzzer. The checks are the targets' own (`fuzz/src/train.rs`, included here).

#[path = "../../../fuzz/src/train.rs"]
mod checks;
#[path = "../../../fuzz/src/replay.rs"]
mod replay;

use replay::replay;

#[test]
fn idx() {
    replay("train_idx", checks::idx);
}

#[test]
fn csv() {
    replay("train_csv", checks::csv);
}

#[test]
fn text() {
    replay("train_text", checks::text);
}

#[test]
fn checkpoint() {
    replay("train_checkpoint", checks::checkpoint);
}

#[test]
fn checkpoint_decode() {
    // Its inputs are `checkpoint`'s: each corpus goes through both checks.
    replay("train_checkpoint_decode", checks::checkpoint_decode);
    replay("train_checkpoint", checks::checkpoint_decode);
}
