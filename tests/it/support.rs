//! Helpers: run the `kiln` binary from the repository root, capture its output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn kiln() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.current_dir(repo_root());
    cmd.env("BURN_DEVICE", "flex");
    cmd
}

/// Run and return the output; print it so a failing test shows what happened.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("kiln binary runs");
    eprintln!(
        "$ {:?}\n--- stdout\n{}\n--- stderr\n{}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `kiln train examples/mnist-mlp.toml --max-steps STEPS --out OUT` (W1 on the committed
/// subset), which must succeed.
pub fn train_w1(out: &Path, steps: u64) {
    let o = run(kiln()
        .args(["train", "examples/mnist-mlp.toml", "--max-steps"])
        .arg(steps.to_string())
        .arg("--out")
        .arg(out));
    assert!(o.status.success(), "kiln train failed: {}", stderr(&o));
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn read_jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}
