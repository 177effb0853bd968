//! `kiln train` from the command line.

use std::fs;

use crate::support::{kiln, read_jsonl, repo_root, run, stderr, train_w1};

#[test]
fn train_writes_a_complete_run_folder_and_resumes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("run");
    train_w1(&out, 12);
    for file in [
        "spec.toml",
        "model.json",
        "data.json",
        "metrics.jsonl",
        "model.bpk",
        "model.safetensors",
        "summary.json",
    ] {
        assert!(
            out.join(file).is_file(),
            "{file} missing from the run folder"
        );
    }
    let metrics = read_jsonl(&out.join("metrics.jsonl"));
    let train: Vec<_> = metrics.iter().filter(|m| m["split"] == "train").collect();
    assert_eq!(
        train.len(),
        2,
        "log_every = 10 over 12 steps: steps 10 and 12"
    );
    assert!(
        metrics
            .iter()
            .all(|m| m["step"].is_u64() && m["loss"].is_f64())
    );
    let test = metrics
        .iter()
        .find(|m| m["split"] == "test")
        .expect("a test metric at the end");
    assert!(test["accuracy"].as_f64().expect("accuracy") > 0.3, "{test}");
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 12);
    assert_eq!(summary["outcome"], "completed");
    // The safetensors file is real: a header length and a JSON header naming the weights.
    let st = fs::read(out.join("model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&st[8..8 + header_len]).expect("utf-8 header");
    assert!(header.contains("weight"), "{header}");
    // A final checkpoint was written (checkpoint_every is set): resume continues from step 12.
    let o = run(kiln()
        .args([
            "train",
            "examples/mnist-mlp.toml",
            "--max-steps",
            "20",
            "--resume",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "resume failed: {}", stderr(&o));
    assert!(stderr(&o).contains("(step 12)"), "{}", stderr(&o));
    let metrics = read_jsonl(&out.join("metrics.jsonl"));
    let steps: Vec<u64> = metrics
        .iter()
        .filter(|m| m["split"] == "train")
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        vec![10, 12, 20],
        "the resumed run appends from step 13 on"
    );
}

#[test]
fn bad_spec_is_rejected_with_every_field_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("bad.toml");
    fs::write(
        &spec,
        "name = \"x\"\n[model]\nkind = \"mlp\"\ndropout = 2.0\n[dataset]\nkind = \"synthetic\"\n[training]\nbatch_size = 0\n",
    )
    .unwrap();
    let o = run(kiln()
        .arg("train")
        .arg(&spec)
        .arg("--out")
        .arg(dir.path().join("run")));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("model.dropout") && err.contains("training.batch_size"),
        "{err}"
    );
    assert!(
        !dir.path().join("run").exists(),
        "nothing written for an invalid spec"
    );

    let o = run(kiln().args(["train", "examples/mnist-mlp.toml", "--device", "tpu"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("allowed: auto, cpu, wgpu, cuda, webgpu"),
        "{}",
        stderr(&o)
    );
}

/// Outside the scripts XDG_RUNTIME_DIR may be unset; wgpu's adapter search (`auto`) must not
/// make Mesa print "error: XDG_RUNTIME_DIR is invalid or not set" as if Kiln had failed.
#[test]
fn auto_device_prints_no_runtime_dir_error_without_xdg_runtime_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let o = run(kiln()
        .args([
            "train",
            "examples/synthetic.toml",
            "--device",
            "auto",
            "--max-steps",
            "2",
            "--out",
        ])
        .arg(dir.path().join("run"))
        .env_remove("XDG_RUNTIME_DIR"));
    assert!(o.status.success(), "kiln train failed: {}", stderr(&o));
    assert!(!stderr(&o).contains("XDG_RUNTIME_DIR"), "{}", stderr(&o));
}

#[test]
fn bad_data_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("mnist");
    fs::create_dir(&data).unwrap();
    let labels = fs::read(repo_root().join("data/mnist/train-labels-idx1-ubyte.gz")).unwrap();
    fs::write(data.join("train-labels-idx1-ubyte.gz"), labels).unwrap();
    fs::write(
        data.join("train-images-idx3-ubyte"),
        [0u8, 0, 8, 3, 0, 0, 0, 5, 0, 0, 0, 28, 0, 0, 0, 28, 1, 2, 3],
    )
    .unwrap();
    let o = run(kiln()
        .args(["train", "examples/mnist-mlp.toml", "--data-dir"])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("run")));
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("train-images-idx3-ubyte") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn charlm_example_trains() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run(kiln()
        .args([
            "train",
            "examples/charlm.toml",
            "--max-steps",
            "30",
            "--device",
            "cpu",
            "--out",
        ])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = read_jsonl(&out.join("metrics.jsonl"));
    let train = train_losses(&metrics);
    assert!(
        train.last().unwrap() < &(train[0] * 0.8),
        "charlm loss falls: {train:?}"
    );
    assert!(
        metrics.iter().any(|m| m["split"] == "val"),
        "validation on held-out text"
    );
    // The count printed is the loop's: windows of `context + 1` characters (context 64,
    // validation_fraction 0.1 in the example), not the one "example" of raw text.
    let text = fs::read_to_string(repo_root().join("data/text/kiln-stories.txt")).unwrap();
    let chars = text.chars().count();
    let valid_chars = (chars as f64 * 0.1) as usize;
    let windows = |n: usize| (n - 1) / 64;
    let (train, valid) = (windows(chars - valid_chars), windows(valid_chars));
    assert!(train > 1, "{train}");
    let expected = format!("| {train} training examples, {valid} validation |");
    assert!(
        stderr(&o).contains(&expected),
        "want {expected:?} in {}",
        stderr(&o)
    );
}

/// What `kiln devices --json` found for `kind`: `(available, detail)`.
fn probe(kind: &str) -> (bool, String) {
    let o = run(kiln().args(["devices", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let found: serde_json::Value = serde_json::from_slice(&o.stdout).expect("devices JSON");
    let d = found
        .as_array()
        .expect("a list")
        .iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("{kind} is not listed: {found}"));
    (
        d["available"].as_bool().expect("available"),
        d["detail"].as_str().expect("detail").to_string(),
    )
}

#[test]
fn devices_lists_every_kind_and_the_cpu_always_works() {
    assert_eq!(probe("cpu"), (true, "cpu (burn flex)".to_string()));
    let (cuda, detail) = probe("cuda");
    if !cfg!(feature = "cuda") {
        assert!(!cuda && detail.contains("--features cuda"), "{detail}");
    }
    let table = run(kiln().arg("devices"));
    assert!(table.status.success(), "{}", stderr(&table));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("cpu   yes cpu (burn flex)\n"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

/// wgpu where an adapter exists. Whether one exists is decided up front by the explicit probe
/// (`kiln devices`), never by how a training run failed: where the probe finds an adapter,
/// training on it must work. `KILN_REQUIRE_WGPU=1` (set by scripts/test, which installs Mesa's
/// software Vulkan) turns "no adapter" into a failure instead of a skip.
#[test]
fn wgpu_device_trains_where_an_adapter_exists() {
    let (available, detail) = probe("wgpu");
    if !available {
        assert!(
            std::env::var_os("KILN_REQUIRE_WGPU").is_none(),
            "KILN_REQUIRE_WGPU is set, but the probe found no wgpu adapter: {detail}"
        );
        eprintln!(
            "SKIPPED wgpu_device_trains_where_an_adapter_exists: the probe found no wgpu adapter ({detail})"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = run(kiln()
        .args([
            "train",
            "examples/mnist-mlp.toml",
            "--device",
            "wgpu",
            "--max-steps",
            "10",
            "--out",
        ])
        .arg(&out)
        .env("CUBECL_AUTOTUNE_LEVEL", "minimal"));
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["device"], "wgpu");
    let metrics = read_jsonl(&out.join("metrics.jsonl"));
    let train = train_losses(&metrics);
    assert!(train.iter().all(|l| l.is_finite()), "{train:?}");
}

/// The `loss` of every training metric, in order.
fn train_losses(metrics: &[serde_json::Value]) -> Vec<f64> {
    metrics
        .iter()
        .filter(|m| m["split"] == "train")
        .map(|m| m["loss"].as_f64().expect("loss is a number"))
        .collect()
}
