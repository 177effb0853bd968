//! Messages between a page and the in-browser trainer (`kiln-trainer`, a wasm module running in
//! a dedicated Web Worker, so training never freezes the page).
//!
//! Each message travels as `postMessage({ json, bytes })`: `json` is one of these enums as
//! JSON text, `bytes` the binary parts it announces, in order, as transferred `ArrayBuffer`s
//! (dataset files, a checkpoint, final weights: JSON would triple their size).

use serde::{Deserialize, Serialize};

use crate::dataset::DatasetKind;
use crate::metric::Metric;
use crate::protocol::JobId;
use crate::spec::{DeviceRequest, JobSpec};

/// The most dataset bytes a tab trains on (the page refuses a larger file before reading
/// it; a tab's wasm memory is at most 4 GiB, and the data is held twice while it loads).
pub const MAX_DATASET_BYTES: u64 = 256 * 1024 * 1024;

/// The most bytes a tab may need to train a model: a tab's wasm memory is at most 4 GiB, and
/// the data and the browser's own share come out of it too.
pub const MAX_TRAINING_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Bytes a model of `parameters` takes to train with Adam: weights, gradients and two moment
/// estimates, in f32 (activations come on top).
pub fn training_bytes(parameters: u64) -> u64 {
    parameters.saturating_mul(16)
}

/// The page asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToTrainer {
    /// Train `spec`. The message's binary parts are the dataset's files, `files[i]` at the
    /// path `files[i]` (what `spec.dataset.path` names), then the checkpoint to resume from
    /// when `resume` is set.
    Train {
        spec: Box<JobSpec>,
        files: Vec<String>,
        device: DeviceRequest,
        #[serde(default)]
        resume: bool,
        /// Set by the trainer's Web Worker when it loaded the CPU module for a `webgpu` or
        /// `auto` run: why (no `navigator.gpu`, no adapter).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        no_gpu: Option<String>,
    },
    /// Stop between steps; the run ends `cancelled` with a checkpoint to resume from.
    Stop,
    /// "Lend this tab": connect to the coordinator at `server` (its HTTP origin) as a worker
    /// with `token`, and run the `webgpu` jobs it assigns until `unlend`.
    Lend {
        server: String,
        token: String,
        /// Stable for the tab (kept in its `sessionStorage`), so a reconnect re-attaches.
        worker_id: String,
        name: String,
        /// As for `train`: set by the Web Worker when it loaded the CPU module.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        no_gpu: Option<String>,
    },
    /// Run a trained model: `model` is its `model.json`; the binary parts are its weights
    /// (`model.bpk`), then the input (see [`PredictInput`]). The trainer keeps the model built
    /// under `key` (the run), so the next call with that key skips building it.
    Predict {
        model: serde_json::Value,
        key: String,
        input: PredictInput,
    },
    /// Stop lending: a running job is cancelled (it ends as cancelled on the coordinator) and
    /// the socket closes.
    Unlend,
}

/// The trainer tells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromTrainer {
    /// The module is loaded and waits for a `train`.
    Ready,
    /// The device the run trains on, and why that one (a missing WebGPU adapter, say).
    Device {
        kind: DeviceRequest,
        description: String,
    },
    /// The data is loaded and the model built.
    Started {
        total_steps: u64,
        start_step: u64,
        parameters: usize,
        train_examples: usize,
    },
    Metric {
        metric: Metric,
    },
    /// The run ended. Binary parts: the final weights (burnpack) when `weights`, then the
    /// checkpoint (model, optimizer state and loop state) when `checkpoint`.
    Finished {
        /// `completed` or `cancelled`.
        outcome: String,
        steps: u64,
        /// The run's `summary.json`, as `kiln train` and workers write it.
        summary: serde_json::Value,
        /// The model's configuration (`model.json`): what the weights need to be run.
        model: serde_json::Value,
        /// What running the model on new inputs needs of its data (`data.json`: a language
        /// model's vocabulary, a CSV's columns, classes and standardisation).
        #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
        data: serde_json::Value,
        weights: bool,
        checkpoint: bool,
    },
    /// The run failed; nothing more comes for it.
    Failed {
        error: String,
    },
    /// A prediction's outputs: a binary part of `rows × outputs` little-endian f32 logits;
    /// `labels` the true classes where the input had them (a test split); `ms` the time the
    /// model took (not the messages).
    Predicted {
        rows: usize,
        outputs: usize,
        labels: Vec<u32>,
        ms: f64,
    },
    /// How lending goes: whether the coordinator welcomed the tab, the job it runs and its
    /// step, and the last thing worth saying (a reconnect, an upload, the device).
    Lending {
        connected: bool,
        job: Option<JobId>,
        step: Option<u64>,
        note: String,
        /// Lending ended (unlend, or a fatal refusal named in `note`).
        stopped: bool,
    },
}

/// What to predict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PredictInput {
    /// `rows` examples of `shape` (e.g. `[1, 28, 28]` for an image), as little-endian f32 in
    /// the second binary part.
    Rows { rows: usize, shape: Vec<usize> },
    /// The test images of an IDX dataset, its tar archive as the coordinator stores it in the
    /// second binary part.
    IdxTest,
}

/// Class probabilities from one row of logits.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exp.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    exp.iter().map(|e| e / sum).collect()
}

/// Little-endian f32 bytes, as the messages carry floats.
pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The floats of [`f32_bytes`] (a trailing partial value is ignored).
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// How a stored dataset is handed to the trainer: the name its bytes go under, and the
/// `dataset.path` that finds them then. An IDX dataset is the coordinator's tar archive of the
/// folder, which the trainer unpacks into `data/`.
pub fn stored_layout(kind: DatasetKind) -> (&'static str, &'static str) {
    match kind {
        DatasetKind::Idx => ("data.tar", "data"),
        DatasetKind::Csv => ("data.csv", "data.csv"),
        DatasetKind::Text => ("data.txt", "data.txt"),
    }
}

impl ToTrainer {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

impl FromTrainer {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_keep_their_shape() {
        let spec = JobSpec::from_toml_str(
            "name = \"p\"\n[model]\nkind = \"mlp\"\n[dataset]\nkind = \"csv\"\npath = \"d.csv\"\nlabel_column = \"y\"\n",
        )
        .expect("spec");
        let train = ToTrainer::Train {
            spec: Box::new(spec),
            files: vec!["d.csv".into()],
            device: DeviceRequest::Webgpu,
            resume: false,
            no_gpu: None,
        };
        let json = train.to_json();
        assert!(json.starts_with(r#"{"type":"train","spec":{"#), "{json}");
        assert!(json.contains(r#""files":["d.csv"],"device":"webgpu","resume":false"#));
        assert_eq!(serde_json::from_str::<ToTrainer>(&json).ok(), Some(train));
        assert_eq!(ToTrainer::Stop.to_json(), r#"{"type":"stop"}"#);
        let done = FromTrainer::Finished {
            outcome: "cancelled".into(),
            steps: 7,
            summary: serde_json::json!({"steps": 7}),
            model: serde_json::json!({"kind": "mlp"}),
            data: serde_json::Value::Null,
            weights: true,
            checkpoint: true,
        };
        assert_eq!(
            done.to_json(),
            r#"{"type":"finished","outcome":"cancelled","steps":7,"summary":{"steps":7},"model":{"kind":"mlp"},"weights":true,"checkpoint":true}"#
        );
        assert_eq!(
            serde_json::from_str::<FromTrainer>(&done.to_json()).ok(),
            Some(done)
        );
    }
}
