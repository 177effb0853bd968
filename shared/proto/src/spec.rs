//! The job spec: everything needed to re-create a training run, in TOML or JSON.
//!
//! Parsing (`JobSpec::from_toml_str`, `JobSpec::from_json_str`) rejects unknown fields and wrong
//! types with serde's message (it names the field); `JobSpec::validate` then checks ranges and
//! combinations and reports *every* problem with its field path and what is allowed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A training job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Human name of the run; letters, digits, `-`, `_` and `.`.
    pub name: String,
    /// Seed for weight init, data order, dropout and the validation split.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Where to train.
    #[serde(default)]
    pub device: DeviceRequest,
    /// Scheduling priority on a coordinator (higher runs first).
    #[serde(default)]
    pub priority: i32,
    /// How many times a coordinator may start the job before it is marked failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    pub model: ModelSpec,
    pub dataset: DatasetSpec,
    #[serde(default)]
    pub optimizer: OptimizerSpec,
    #[serde(default)]
    pub schedule: ScheduleSpec,
    #[serde(default)]
    pub training: TrainingSpec,
    /// Data-parallel training over several workers (absent: one worker).
    #[serde(default, skip_serializing_if = "DistributedSpec::is_single")]
    pub distributed: DistributedSpec,
}

fn default_seed() -> u64 {
    42
}
fn default_max_attempts() -> u32 {
    3
}

/// Device a job asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceRequest {
    /// The best device the worker has (a GPU if there is one, else the CPU).
    #[default]
    Auto,
    /// Burn's pure-Rust CPU backend (`flex`).
    Cpu,
    /// wgpu: Vulkan, Metal or DX12 (WGSL shaders).
    Wgpu,
    /// NVIDIA CUDA (a `cuda` build of Kiln).
    Cuda,
    /// The browser's WebGPU (falls back to the CPU in the browser).
    Webgpu,
}

impl DeviceRequest {
    pub const ALLOWED: &'static str = "auto, cpu, wgpu, cuda, webgpu";

    pub fn as_str(self) -> &'static str {
        match self {
            DeviceRequest::Auto => "auto",
            DeviceRequest::Cpu => "cpu",
            DeviceRequest::Wgpu => "wgpu",
            DeviceRequest::Cuda => "cuda",
            DeviceRequest::Webgpu => "webgpu",
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for DeviceRequest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu),
            "cuda" => Ok(Self::Cuda),
            "webgpu" => Ok(Self::Webgpu),
            other => Err(format!(
                "unknown device `{other}`; allowed: {}",
                Self::ALLOWED
            )),
        }
    }
}

/// Which model of the zoo, and its shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ModelSpec {
    /// Multi-layer perceptron over flattened inputs.
    Mlp {
        /// Widths of the hidden layers, e.g. `[128]`.
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
        #[serde(default)]
        activation: Activation,
        #[serde(default)]
        dropout: f64,
    },
    /// Convolution stack, then dense layers.
    Cnn {
        /// Convolutions in order; each may be followed by a max-pool.
        conv: Vec<ConvSpec>,
        #[serde(default = "default_hidden")]
        hidden: Vec<usize>,
        #[serde(default)]
        activation: Activation,
        #[serde(default)]
        dropout: f64,
    },
    /// Small causal transformer over characters.
    Charlm {
        /// Context length in characters.
        #[serde(default = "default_context")]
        context: usize,
        #[serde(default = "default_d_model")]
        d_model: usize,
        #[serde(default = "default_heads")]
        heads: usize,
        #[serde(default = "default_layers")]
        layers: usize,
        /// Feed-forward width (default 4 × d_model).
        #[serde(default)]
        d_ff: Option<usize>,
        #[serde(default)]
        dropout: f64,
    },
}

fn default_hidden() -> Vec<usize> {
    vec![128]
}
fn default_context() -> usize {
    64
}
fn default_d_model() -> usize {
    64
}
fn default_heads() -> usize {
    4
}
fn default_layers() -> usize {
    2
}

impl ModelSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Mlp { .. } => "mlp",
            ModelSpec::Cnn { .. } => "cnn",
            ModelSpec::Charlm { .. } => "charlm",
        }
    }
}

/// One convolution of a `cnn`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvSpec {
    /// Output channels.
    pub channels: usize,
    /// Square kernel size.
    #[serde(default = "default_kernel")]
    pub kernel: usize,
    /// Zero padding on each side.
    #[serde(default)]
    pub padding: usize,
    /// Square max-pool after the activation (1 = none).
    #[serde(default = "one")]
    pub pool: usize,
}

fn default_kernel() -> usize {
    3
}
fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    #[default]
    Relu,
    Gelu,
    Tanh,
    Sigmoid,
}

/// Where the examples come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DatasetSpec {
    /// IDX files (MNIST, Fashion-MNIST): a directory with `train-images-idx3-ubyte[.gz]`,
    /// `train-labels-idx1-ubyte[.gz]` and optionally the `t10k-*` test pair.
    Idx {
        path: String,
        #[serde(default)]
        validation_fraction: f64,
        /// Use at most this many training examples (after loading, before the split).
        #[serde(default)]
        limit: Option<usize>,
    },
    /// A CSV file with a header; every column but the label must be numeric.
    Csv {
        path: String,
        label_column: String,
        #[serde(default)]
        task: CsvTask,
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f64,
    },
    /// A UTF-8 text file for `charlm`.
    Text {
        path: String,
        #[serde(default = "default_validation_fraction")]
        validation_fraction: f64,
    },
    /// Gaussian blobs, made from the seed: for tests and smoke runs.
    Synthetic {
        #[serde(default = "default_synthetic_examples")]
        examples: usize,
        #[serde(default = "default_synthetic_features")]
        features: usize,
        #[serde(default = "default_synthetic_classes")]
        classes: usize,
        #[serde(default)]
        validation_fraction: f64,
    },
}

fn default_validation_fraction() -> f64 {
    0.1
}
fn default_synthetic_examples() -> usize {
    1024
}
fn default_synthetic_features() -> usize {
    16
}
fn default_synthetic_classes() -> usize {
    4
}

impl DatasetSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            DatasetSpec::Idx { .. } => "idx",
            DatasetSpec::Csv { .. } => "csv",
            DatasetSpec::Text { .. } => "text",
            DatasetSpec::Synthetic { .. } => "synthetic",
        }
    }

    pub fn validation_fraction(&self) -> f64 {
        match self {
            DatasetSpec::Idx {
                validation_fraction,
                ..
            }
            | DatasetSpec::Csv {
                validation_fraction,
                ..
            }
            | DatasetSpec::Text {
                validation_fraction,
                ..
            }
            | DatasetSpec::Synthetic {
                validation_fraction,
                ..
            } => *validation_fraction,
        }
    }

    /// The file or directory the dataset reads, if any.
    pub fn path(&self) -> Option<&str> {
        match self {
            DatasetSpec::Idx { path, .. }
            | DatasetSpec::Csv { path, .. }
            | DatasetSpec::Text { path, .. } => Some(path),
            DatasetSpec::Synthetic { .. } => None,
        }
    }

    /// Replace the path (e.g. `kiln train --data-dir`).
    pub fn set_path(&mut self, new: String) {
        match self {
            DatasetSpec::Idx { path, .. }
            | DatasetSpec::Csv { path, .. }
            | DatasetSpec::Text { path, .. } => *path = new,
            DatasetSpec::Synthetic { .. } => {}
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CsvTask {
    #[default]
    Classification,
    Regression,
}

/// The optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerSpec {
    #[serde(default)]
    pub kind: OptimizerKind,
    /// Peak learning rate.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// L2 penalty (SGD, Adam) or decoupled decay (AdamW).
    #[serde(default)]
    pub weight_decay: f64,
    /// SGD momentum (0 = plain SGD).
    #[serde(default)]
    pub momentum: f64,
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    #[serde(default = "default_eps")]
    pub epsilon: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-7
}

impl Default for OptimizerSpec {
    fn default() -> Self {
        Self {
            kind: OptimizerKind::default(),
            lr: default_lr(),
            weight_decay: 0.0,
            momentum: 0.0,
            beta1: default_beta1(),
            beta2: default_beta2(),
            epsilon: default_eps(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    Sgd,
    #[default]
    Adam,
    Adamw,
}

impl OptimizerKind {
    /// The spec's spelling: `sgd`, `adam`, `adamw`.
    pub fn as_str(self) -> &'static str {
        match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Adamw => "adamw",
        }
    }
}

/// Learning-rate schedule over optimizer steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum ScheduleSpec {
    #[default]
    Constant,
    /// Multiply the rate by `gamma` every `step_size` steps.
    Step { step_size: u64, gamma: f64 },
    /// Linear warm-up to the peak, then cosine decay to `min_lr` at the last step.
    Cosine {
        #[serde(default)]
        warmup_steps: u64,
        #[serde(default)]
        min_lr: f64,
    },
}

/// Loop settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingSpec {
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Passes over the training split. The run ends at `epochs` or `max_steps`, the sooner.
    #[serde(default = "one_u32")]
    pub epochs: u32,
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// Evaluate on the validation split every N steps (and always at the end).
    #[serde(default)]
    pub eval_every: Option<u64>,
    /// Checkpoint every N steps (and always at the end).
    #[serde(default)]
    pub checkpoint_every: Option<u64>,
    /// Emit a training metric every N steps (the mean loss over them).
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    #[serde(default)]
    pub grad_clip: Option<GradClip>,
}

fn default_batch() -> usize {
    64
}
fn one_u32() -> u32 {
    1
}
fn default_log_every() -> u64 {
    10
}

impl Default for TrainingSpec {
    fn default() -> Self {
        Self {
            batch_size: default_batch(),
            epochs: 1,
            max_steps: None,
            eval_every: None,
            checkpoint_every: None,
            log_every: default_log_every(),
            grad_clip: None,
        }
    }
}

/// Most workers one job may train on.
pub const MAX_WORLD: u32 = 64;

/// Data-parallel training: `workers` ranks train one model, each on its shard of every epoch
/// with `training.batch_size` examples per step (the global batch is `workers ×
/// batch_size`). An attempt starts with at most `workers` and at least `min_workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedSpec {
    /// World size: how many workers train the job together (1: one worker, as without the
    /// section).
    #[serde(default = "one_u32")]
    pub workers: u32,
    /// Fewest workers an attempt may start with (elastic; default: `workers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_workers: Option<u32>,
    /// How the ranks keep one model.
    #[serde(default, skip_serializing_if = "SyncSpec::is_gradients")]
    pub sync: SyncSpec,
    /// After this many seconds in the queue, free workers are held for the job until its
    /// gang can form (before that, smaller jobs may take them).
    #[serde(default = "default_gang_wait_s")]
    pub gang_wait_s: u64,
}

fn default_gang_wait_s() -> u64 {
    60
}

impl Default for DistributedSpec {
    fn default() -> Self {
        DistributedSpec {
            workers: 1,
            min_workers: None,
            sync: SyncSpec::Gradients,
            gang_wait_s: default_gang_wait_s(),
        }
    }
}

impl DistributedSpec {
    /// One worker and nothing else set: what a spec without the section means.
    pub fn is_single(&self) -> bool {
        *self == DistributedSpec::default()
    }

    /// Fewest workers an attempt may start with.
    pub fn min(&self) -> u32 {
        self.min_workers.unwrap_or(self.workers)
    }

    /// For people (`kiln job`, the job page): "2 workers (at least 1) · batch 32 per rank =
    /// 64 global · sync gradients". `ranks` is the current attempt's world, if it has one; the
    /// global batch is counted at that world.
    pub fn describe(&self, batch: usize, ranks: Option<usize>) -> String {
        let world = ranks.filter(|&r| r > 0).unwrap_or(self.workers as usize);
        let attempt = match ranks {
            Some(r) if r > 0 && r != self.workers as usize => {
                format!(" (this attempt: {r} ranks)")
            }
            _ => String::new(),
        };
        format!(
            "{} workers (at least {}) · batch {batch} per rank = {} global · sync {}{attempt}",
            self.workers,
            self.min(),
            batch * world,
            self.sync
        )
    }
}

/// How the ranks of a data-parallel job keep one model.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncSpec {
    /// Sum the gradients of all ranks every step (all-reduce) and divide by the world size:
    /// every rank applies the same update and keeps bitwise-identical weights.
    #[default]
    Gradients,
    /// Local SGD: every rank steps on its own gradients and the parameters are averaged
    /// every `every` steps (for slow links). With `outer_lr` (default 1: the plain average)
    /// the ranks move from the last synchronised parameters by `outer_lr` times the mean of
    /// their moves: the ranks' updates add up rather than average (2 for two ranks is the
    /// sum, the linear-scaling rule's counterpart).
    #[serde(untagged)]
    Every {
        every: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outer_lr: Option<f64>,
    },
}

impl SyncSpec {
    pub fn is_gradients(&self) -> bool {
        *self == SyncSpec::Gradients
    }
}

impl fmt::Display for SyncSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SyncSpec::Gradients => f.write_str("gradients"),
            SyncSpec::Every {
                every,
                outer_lr: None,
            } => write!(f, "every {every} steps"),
            SyncSpec::Every {
                every,
                outer_lr: Some(lr),
            } => write!(f, "every {every} steps, outer lr {lr}"),
        }
    }
}

/// Gradient clipping, applied after the gradient hook and before the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum GradClip {
    /// Rescale each parameter's gradient to at most this L2 norm.
    Norm(f64),
    /// Clamp every gradient element to ±value.
    Value(f64),
}

/// One problem in a spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Dotted path, e.g. `training.batch_size` or `model.conv[1].kernel`.
    pub field: String,
    /// The offending value as written.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: got {}, allowed: {}",
            self.field, self.value, self.allowed
        )
    }
}

/// Why a spec was rejected.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("could not parse the job spec as {format}: {message}")]
    Parse {
        format: &'static str,
        message: String,
    },
    #[error("the job spec has {} problem(s):\n{}", .0.len(), format_errors(.0))]
    Invalid(Vec<FieldError>),
}

fn format_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl JobSpec {
    /// Parse TOML and validate.
    pub fn from_toml_str(text: &str) -> Result<Self, SpecError> {
        let spec: JobSpec = toml::from_str(text).map_err(|e| SpecError::Parse {
            format: "TOML",
            message: e.to_string(),
        })?;
        spec.validate().map_err(SpecError::Invalid)?;
        Ok(spec)
    }

    /// Parse JSON and validate.
    pub fn from_json_str(text: &str) -> Result<Self, SpecError> {
        let spec: JobSpec = serde_json::from_str(text).map_err(|e| SpecError::Parse {
            format: "JSON",
            message: e.to_string(),
        })?;
        spec.validate().map_err(SpecError::Invalid)?;
        Ok(spec)
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("a JobSpec always serializes to TOML")
    }

    /// Check every field; return all problems at once.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut v = Validator::default();
        v.check(
            "name",
            &self.name,
            !self.name.is_empty()
                && self.name.len() <= 64
                && self
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "1 to 64 characters from letters, digits, '-', '_' and '.'",
        );
        v.check(
            "max_attempts",
            self.max_attempts,
            (1..=100).contains(&self.max_attempts),
            "1 to 100",
        );
        self.validate_model(&mut v);
        self.validate_dataset(&mut v);
        self.validate_optimizer(&mut v);
        self.validate_schedule(&mut v);
        self.validate_training(&mut v);
        self.validate_distributed(&mut v);
        if v.errors.is_empty() {
            Ok(())
        } else {
            Err(v.errors)
        }
    }

    fn validate_model(&self, v: &mut Validator) {
        let check_dropout = |v: &mut Validator, dropout: f64| {
            v.check(
                "model.dropout",
                dropout,
                (0.0..1.0).contains(&dropout),
                "a probability in [0, 1)",
            )
        };
        let check_hidden = |v: &mut Validator, hidden: &[usize]| {
            v.check(
                "model.hidden",
                format!("{hidden:?}"),
                hidden.len() <= 16 && hidden.iter().all(|&h| (1..=65_536).contains(&h)),
                "at most 16 layers, each 1 to 65536 wide",
            )
        };
        match &self.model {
            ModelSpec::Mlp {
                hidden, dropout, ..
            } => {
                check_hidden(v, hidden);
                check_dropout(v, *dropout);
            }
            ModelSpec::Cnn {
                conv,
                hidden,
                dropout,
                ..
            } => {
                v.check(
                    "model.conv",
                    format!("{} layers", conv.len()),
                    (1..=16).contains(&conv.len()),
                    "1 to 16 convolutions",
                );
                for (i, c) in conv.iter().enumerate() {
                    v.check(
                        &format!("model.conv[{i}].channels"),
                        c.channels,
                        (1..=4096).contains(&c.channels),
                        "1 to 4096",
                    );
                    v.check(
                        &format!("model.conv[{i}].kernel"),
                        c.kernel,
                        (1..=15).contains(&c.kernel),
                        "1 to 15",
                    );
                    v.check(
                        &format!("model.conv[{i}].padding"),
                        c.padding,
                        c.padding < c.kernel.max(1),
                        "less than the kernel size",
                    );
                    v.check(
                        &format!("model.conv[{i}].pool"),
                        c.pool,
                        (1..=8).contains(&c.pool),
                        "1 (no pooling) to 8",
                    );
                }
                check_hidden(v, hidden);
                check_dropout(v, *dropout);
            }
            ModelSpec::Charlm {
                context,
                d_model,
                heads,
                layers,
                d_ff,
                dropout,
            } => {
                v.check(
                    "model.context",
                    context,
                    (2..=4096).contains(context),
                    "2 to 4096",
                );
                v.check(
                    "model.d_model",
                    d_model,
                    (8..=4096).contains(d_model),
                    "8 to 4096",
                );
                v.check(
                    "model.heads",
                    heads,
                    *heads >= 1 && *heads <= 64 && d_model % heads == 0,
                    "1 to 64, dividing model.d_model",
                );
                v.check("model.layers", layers, (1..=48).contains(layers), "1 to 48");
                if let Some(d_ff) = d_ff {
                    v.check(
                        "model.d_ff",
                        d_ff,
                        (1..=65_536).contains(d_ff),
                        "1 to 65536",
                    );
                }
                check_dropout(v, *dropout);
            }
        }
        let text = matches!(self.dataset, DatasetSpec::Text { .. });
        let charlm = matches!(self.model, ModelSpec::Charlm { .. });
        if text != charlm {
            v.push(
                "dataset.kind",
                self.dataset.kind(),
                if charlm {
                    "text (model charlm reads characters)"
                } else {
                    "idx, csv or synthetic (model text needs model.kind = charlm)"
                },
            );
        }
        if matches!(self.model, ModelSpec::Cnn { .. })
            && !matches!(self.dataset, DatasetSpec::Idx { .. })
        {
            v.push(
                "dataset.kind",
                self.dataset.kind(),
                "idx (a cnn needs images)",
            );
        }
    }

    fn validate_dataset(&self, v: &mut Validator) {
        let vf = self.dataset.validation_fraction();
        v.check(
            "dataset.validation_fraction",
            vf,
            (0.0..=0.5).contains(&vf),
            "0 to 0.5",
        );
        if let Some(path) = self.dataset.path() {
            v.check(
                "dataset.path",
                format!("{path:?}"),
                !path.trim().is_empty(),
                "a non-empty path",
            );
            v.check(
                "dataset.path",
                format!("{path:?}"),
                crate::dataset::DatasetRef::parse(path).is_ok(),
                "a path on the worker, `kiln:NAME` (a stored dataset; names: letters, digits, \
                 '.', '_', '-') or `kiln:sha256:<64 hex digits>`",
            );
        }
        match &self.dataset {
            DatasetSpec::Idx {
                limit: Some(limit), ..
            } => v.check("dataset.limit", limit, *limit >= 1, "at least 1"),
            DatasetSpec::Csv { label_column, .. } => v.check(
                "dataset.label_column",
                format!("{label_column:?}"),
                !label_column.is_empty(),
                "a column name",
            ),
            DatasetSpec::Synthetic {
                examples,
                features,
                classes,
                ..
            } => {
                v.check(
                    "dataset.examples",
                    examples,
                    (2..=10_000_000).contains(examples),
                    "2 to 10000000",
                );
                v.check(
                    "dataset.features",
                    features,
                    (1..=100_000).contains(features),
                    "1 to 100000",
                );
                v.check(
                    "dataset.classes",
                    classes,
                    (2..=10_000).contains(classes),
                    "2 to 10000",
                );
            }
            _ => {}
        }
    }

    fn validate_optimizer(&self, v: &mut Validator) {
        let o = &self.optimizer;
        v.check(
            "optimizer.lr",
            o.lr,
            o.lr.is_finite() && o.lr > 0.0 && o.lr <= 10.0,
            "greater than 0, at most 10",
        );
        v.check(
            "optimizer.weight_decay",
            o.weight_decay,
            o.weight_decay.is_finite() && (0.0..1.0).contains(&o.weight_decay),
            "0 to 1 (exclusive)",
        );
        v.check(
            "optimizer.momentum",
            o.momentum,
            (0.0..1.0).contains(&o.momentum),
            "0 to 1 (exclusive)",
        );
        if o.momentum != 0.0 && o.kind != OptimizerKind::Sgd {
            v.push(
                "optimizer.momentum",
                o.momentum,
                "0 unless optimizer.kind = sgd (Adam's momentum is beta1)",
            );
        }
        v.check(
            "optimizer.beta1",
            o.beta1,
            (0.0..1.0).contains(&o.beta1),
            "0 to 1 (exclusive)",
        );
        v.check(
            "optimizer.beta2",
            o.beta2,
            (0.0..1.0).contains(&o.beta2),
            "0 to 1 (exclusive)",
        );
        v.check(
            "optimizer.epsilon",
            o.epsilon,
            o.epsilon > 0.0 && o.epsilon < 1.0,
            "greater than 0, less than 1",
        );
    }

    fn validate_schedule(&self, v: &mut Validator) {
        match &self.schedule {
            ScheduleSpec::Constant => {}
            ScheduleSpec::Step { step_size, gamma } => {
                v.check(
                    "schedule.step_size",
                    step_size,
                    *step_size >= 1,
                    "at least 1",
                );
                v.check(
                    "schedule.gamma",
                    gamma,
                    *gamma > 0.0 && *gamma <= 1.0,
                    "greater than 0, at most 1",
                );
            }
            ScheduleSpec::Cosine { min_lr, .. } => v.check(
                "schedule.min_lr",
                min_lr,
                *min_lr >= 0.0 && *min_lr <= self.optimizer.lr,
                "0 to optimizer.lr",
            ),
        }
    }

    fn validate_distributed(&self, v: &mut Validator) {
        let d = &self.distributed;
        v.check(
            "distributed.workers",
            d.workers,
            (1..=MAX_WORLD).contains(&d.workers),
            &format!("1 to {MAX_WORLD}"),
        );
        if let Some(min) = d.min_workers {
            v.check(
                "distributed.min_workers",
                min,
                min >= 1 && min <= d.workers,
                &format!("1 to distributed.workers ({})", d.workers),
            );
        }
        if let SyncSpec::Every { every, outer_lr } = d.sync {
            v.check(
                "distributed.sync.every",
                every,
                (1..=1_000_000).contains(&every),
                "1 to 1000000 steps",
            );
            if let Some(lr) = outer_lr {
                v.check(
                    "distributed.sync.outer_lr",
                    lr,
                    lr.is_finite() && lr > 0.0 && lr <= 64.0,
                    "greater than 0, at most 64",
                );
            }
        }
        v.check(
            "distributed.gang_wait_s",
            d.gang_wait_s,
            d.gang_wait_s <= 7 * 24 * 3600,
            "0 to 604800 (a week)",
        );
    }

    fn validate_training(&self, v: &mut Validator) {
        let t = &self.training;
        v.check(
            "training.batch_size",
            t.batch_size,
            (1..=65_536).contains(&t.batch_size),
            "1 to 65536",
        );
        v.check(
            "training.epochs",
            t.epochs,
            (1..=100_000).contains(&t.epochs),
            "1 to 100000",
        );
        if let Some(max) = t.max_steps {
            v.check("training.max_steps", max, max >= 1, "at least 1");
        }
        for (field, value) in [
            ("training.eval_every", t.eval_every),
            ("training.checkpoint_every", t.checkpoint_every),
        ] {
            if let Some(n) = value {
                v.check(field, n, n >= 1, "at least 1 (leave it out to disable)");
            }
        }
        v.check(
            "training.log_every",
            t.log_every,
            t.log_every >= 1,
            "at least 1",
        );
        match t.grad_clip {
            Some(GradClip::Norm(x)) => v.check(
                "training.grad_clip.norm",
                x,
                x.is_finite() && x > 0.0,
                "greater than 0",
            ),
            Some(GradClip::Value(x)) => v.check(
                "training.grad_clip.value",
                x,
                x.is_finite() && x > 0.0,
                "greater than 0",
            ),
            None => {}
        }
    }
}

#[derive(Default)]
struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    fn check(&mut self, field: &str, value: impl fmt::Display, ok: bool, allowed: &str) {
        if !ok {
            self.push(field, value, allowed);
        }
    }

    fn push(&mut self, field: &str, value: impl fmt::Display, allowed: &str) {
        self.errors.push(FieldError {
            field: field.to_string(),
            value: value.to_string(),
            allowed: allowed.to_string(),
        });
    }
}

#[cfg(test)]
mod tests;
