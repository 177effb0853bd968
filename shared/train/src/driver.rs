//! One run of a job spec from start to final files, for `kiln train` and for workers.
//!
//! [`run`] resolves the device, loads the data already shaped for the model (text cut into
//! windows), resumes from a checkpoint, trains and makes the final model's files
//! ([`final_files`]) on the caller's thread. What happens meanwhile goes to a [`RunSink`]: the
//! CLI's run folder and progress bar, or the worker's protocol events.
//! Native only: it blocks on the async loop (`pollster`) and reads the dataset from files; a
//! browser drives [`crate::train::train`] itself.

use kiln_proto::metric::Metric;
use kiln_proto::protocol::ControlAction;
use kiln_proto::spec::{DeviceRequest, JobSpec};

use crate::data::{self, DataError, FsSource, Splits};
use crate::device::{self, DeviceError};
use crate::model::ModelConfig;
use crate::train::{
    self, CancelToken, Checkpoint, GradientHook, LiveControl, Replica, TrainError, TrainEvent,
    TrainRun, TrainSummary,
};

/// How to run a spec, beyond the spec itself.
#[derive(Default)]
pub struct RunOptions {
    /// The device to train on instead of the spec's `device`.
    pub device: Option<DeviceRequest>,
    /// Stop after this many steps in total (overrides the spec when smaller).
    pub max_steps: Option<u64>,
    /// The checkpoint to resume from (decoded by the caller, who knows where it came from).
    pub resume: Option<Checkpoint>,
    pub cancel: CancelToken,
    /// The spec's data, already loaded and shaped by [`data::load_for_model`] (a worker keeps
    /// the last job's data in memory); `None`: loaded here from `spec.dataset`.
    pub data: Option<Splits>,
    /// This run's rank among the replicas of a data-parallel run (rank 0 of 1 alone).
    pub replica: Replica,
    /// What keeps the replicas one model (their all-reduce); `None` alone.
    pub hook: Option<Box<dyn GradientHook>>,
    /// Live control (pause, resume, checkpoint now, learning rate); `None`: none.
    pub control: Option<LiveControl>,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("device", &self.device)
            .field("max_steps", &self.max_steps)
            .field("resume", &self.resume.as_ref().map(|c| c.state.step))
            .field("data", &self.data.as_ref().map(|d| d.train.len()))
            .field("replica", &self.replica)
            .field("hook", &self.hook.is_some())
            .field("control", &self.control.is_some())
            .finish()
    }
}

/// What a run is about to do, once the device, the data and the model are ready.
#[derive(Debug, Clone)]
pub struct RunStarted {
    /// `cpu`, `wgpu`, `cuda` (never `auto`).
    pub device_kind: DeviceRequest,
    /// For people: which backend and adapter.
    pub device_description: String,
    /// Examples in the training split, as the loop sees them (text: windows).
    pub train_examples: usize,
    pub valid_examples: Option<usize>,
    pub total_steps: u64,
    pub start_step: u64,
    pub parameters: usize,
    pub model: ModelConfig,
}

/// One file of a finished run (`model.bpk`, `model.safetensors`, `model.json`, `summary.json`).
#[derive(Debug, Clone)]
pub struct RunFile {
    pub name: &'static str,
    pub bytes: Vec<u8>,
}

/// How a run ended: the loop's summary and the files made from it.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub summary: TrainSummary,
    pub device_kind: DeviceRequest,
    pub files: Vec<RunFile>,
}

/// Where a run's events go. Called on the run's thread, in order.
pub trait RunSink {
    /// A line about what the run is doing ("loading dataset …").
    fn log(&mut self, line: &str);
    /// The model is built; the loop is about to start.
    fn started(&mut self, started: &RunStarted);
    fn metric(&mut self, metric: &Metric);
    /// An encoded checkpoint (every `training.checkpoint_every` steps, and at the end).
    fn checkpoint(&mut self, step: u64, bytes: Vec<u8>);
    /// Of a data-parallel run: every replica's own samples per second, rank order.
    fn rank_rates(&mut self, step: u64, samples_per_sec: &[f64]) {
        let _ = (step, samples_per_sec);
    }
    /// A live control took effect after `step` steps.
    fn controlled(&mut self, step: u64, control: ControlAction) {
        let _ = (step, control);
    }
    /// Something went wrong that does not fail the run (a final file could not be made).
    fn warning(&mut self, text: &str);
    /// The run is over (completed or cancelled); `report.files` are the final files.
    fn finished(&mut self, report: &RunReport);
}

/// Why a run failed. The training core's errors stay typed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The device cannot be opened on this machine.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// The dataset cannot be read or shaped for the model.
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Train(#[from] TrainError),
}

impl RunError {
    /// Whether another attempt can end differently: a device this machine offered but cannot
    /// open is the machine's problem; data errors never change; the core decides its own.
    pub fn is_retryable(&self) -> bool {
        match self {
            RunError::Device(_) => true,
            RunError::Data(_) => false,
            RunError::Train(e) => e.is_retryable(),
        }
    }
}

/// Run `spec` to the end (or to a cancel) and report through `sink`.
pub fn run(
    spec: &JobSpec,
    options: RunOptions,
    sink: &mut dyn RunSink,
) -> Result<RunReport, RunError> {
    let RunOptions {
        device: device_override,
        max_steps,
        resume,
        cancel,
        data: loaded,
        replica,
        mut hook,
        control,
    } = options;
    if let Some(ckpt) = &resume {
        sink.log(&format!(
            "resuming from the checkpoint at step {}",
            ckpt.state.step
        ));
    }
    let resolved = device::resolve(device_override.unwrap_or(spec.device))?;
    let splits = match loaded {
        // The caller says where it came from.
        Some(splits) => splits,
        None => {
            sink.log(&format!(
                "loading dataset {}",
                spec.dataset.path().unwrap_or("(synthetic)")
            ));
            data::load_for_model(&spec.dataset, &spec.model, spec.seed, &FsSource)?
        }
    };
    let train_examples = splits.train.len();
    let valid_examples = splits.valid.as_ref().map(|v| v.len());
    sink.log(&format!(
        "training {} on {} ({} training examples)",
        spec.model.kind(),
        resolved.description,
        train_examples
    ));

    let mut on_event = |event: TrainEvent| match event {
        TrainEvent::Started {
            total_steps,
            start_step,
            parameters,
            model,
        } => sink.started(&RunStarted {
            device_kind: resolved.kind,
            device_description: resolved.description.clone(),
            train_examples,
            valid_examples,
            total_steps,
            start_step,
            parameters,
            model,
        }),
        TrainEvent::Metric(m) => sink.metric(&m),
        TrainEvent::Checkpoint(c) => sink.checkpoint(c.state.step, c.encode()),
        TrainEvent::RankRates {
            step,
            samples_per_sec,
        } => sink.rank_rates(step, &samples_per_sec),
        TrainEvent::Note(line) => sink.log(&line),
        TrainEvent::Controlled { step, control } => sink.controlled(step, control),
    };
    let mut run = TrainRun::new(spec.clone(), splits, resolved.device.clone(), &mut on_event);
    run.resume = resume;
    run.cancel = cancel;
    run.max_steps = max_steps;
    run.replica = replica;
    run.control = control;
    run.hook = hook.as_deref_mut().map(|h| h as &mut dyn GradientHook);
    let summary = pollster::block_on(train::train(run))?;

    let (files, warnings) = final_files(&summary, &spec.name, resolved.kind);
    for w in &warnings {
        sink.warning(w);
    }
    let report = RunReport {
        summary,
        device_kind: resolved.kind,
        files,
    };
    sink.finished(&report);
    Ok(report)
}

/// The files a finished run leaves, the same for `kiln train` and workers: the final weights
/// (`model.bpk`, `model.safetensors`) with the config to re-create the model (`model.json`)
/// and what running it on new inputs needs of its data (`data.json`),
/// where the loop produced weights, and `summary.json`. A file that cannot be made is left out
/// and named in the warnings.
pub fn final_files(
    summary: &TrainSummary,
    name: &str,
    device: DeviceRequest,
) -> (Vec<RunFile>, Vec<String>) {
    let mut files = Vec::new();
    let mut warnings = Vec::new();
    let mut add = |name: &'static str, bytes: Vec<u8>| files.push(RunFile { name, bytes });
    if let Some(weights) = &summary.weights {
        match train::export_safetensors(&summary.model, weights) {
            Ok(bytes) => add("model.safetensors", bytes),
            Err(e) => warnings.push(format!("safetensors export failed: {e}")),
        }
        add("model.bpk", weights.clone());
        match serde_json::to_vec_pretty(&summary.model) {
            Ok(json) => add("model.json", json),
            Err(e) => warnings.push(format!("model.json: {e}")),
        }
        match serde_json::to_vec_pretty(&summary.data) {
            Ok(json) => add("data.json", json),
            Err(e) => warnings.push(format!("data.json: {e}")),
        }
    }
    match serde_json::to_vec_pretty(&summary.report(name, device.as_str())) {
        Ok(json) => add("summary.json", json),
        Err(e) => warnings.push(format!("summary.json: {e}")),
    }
    (files, warnings)
}
