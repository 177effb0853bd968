//! One job on one OS thread: resolve the device, load data, train with the core, report.
//!
//! The thread talks to the async side only through a channel of `kiln_proto`'s
//! [`JobEvent`]s, which the driver hands to the protocol state machine; it never touches the
//! socket. The final model's files (burnpack, safetensors, config, summary) are made here, so
//! the state machine only sees bytes.

use std::path::Path;
use std::thread::JoinHandle;

use kiln_proto::protocol::{AttemptOutcome, AttemptRef, LogLine};
use kiln_proto::spec::{DatasetSpec, DeviceRequest, JobSpec};
use kiln_proto::worker_session::{Artifact, JobEvent};
use kiln_train::data::{self, FsSource};
use kiln_train::device::{self, DeviceError};
use kiln_train::model::ModelConfig;
use kiln_train::train::{
    self, CancelToken, Checkpoint, CheckpointError, Outcome, TrainError, TrainEvent, TrainRun,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

/// Why a job failed on this worker, and whether another attempt can end differently. The
/// training core classifies its own errors ([`TrainError::is_retryable`]); what fails around
/// it is classified here.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    retryable: bool,
}

impl From<TrainError> for Failure {
    fn from(e: TrainError) -> Self {
        Failure {
            retryable: e.is_retryable(),
            message: e.to_string(),
        }
    }
}

impl From<data::DataError> for Failure {
    fn from(e: data::DataError) -> Self {
        TrainError::from(e).into()
    }
}

impl From<DeviceError> for Failure {
    /// The worker offered a device it cannot open: this machine's problem, not the job's.
    fn from(e: DeviceError) -> Self {
        Failure {
            message: e.to_string(),
            retryable: true,
        }
    }
}

impl From<CheckpointError> for Failure {
    /// Another attempt resumes from the same (newest) checkpoint and fails the same way.
    fn from(e: CheckpointError) -> Self {
        Failure {
            message: format!("the checkpoint to resume from cannot be read: {e}"),
            retryable: false,
        }
    }
}

impl Failure {
    /// The training thread panicked: a bug or a device fault, which another attempt may not
    /// meet, unless the device ran out of memory (Burn panics on some allocation failures).
    fn panicked(payload: &(dyn std::any::Any + Send)) -> Self {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "no message".to_string());
        match TrainError::device("the training thread panicked", &what) {
            oom @ TrainError::OutOfMemory(_) => oom.into(),
            _ => Failure {
                message: format!("the training thread panicked: {what}"),
                retryable: true,
            },
        }
    }

    fn finished(self) -> JobEvent {
        JobEvent::Finished {
            outcome: AttemptOutcome::Failed,
            error: Some(self.message),
            retryable: Some(self.retryable),
            steps: 0,
            artifacts: Vec::new(),
            ts_ms: now_ms(),
        }
    }
}

pub(crate) struct RunningJob {
    pub attempt: AttemptRef,
    pub cancel: CancelToken,
    pub thread: JoinHandle<()>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn log(text: String) -> JobEvent {
    JobEvent::Log(LogLine {
        ts_ms: now_ms(),
        text,
    })
}

/// The device a job gets on this worker: the job's explicit request, else the worker's.
fn device_for(spec: &JobSpec, worker_device: DeviceRequest) -> DeviceRequest {
    match spec.device {
        DeviceRequest::Auto => worker_device,
        other => other,
    }
}

/// Relative dataset paths are resolved against the worker's data root.
fn resolve_dataset(spec: &mut JobSpec, root: &Path) {
    if let Some(path) = spec.dataset.path()
        && Path::new(path).is_relative()
        && !matches!(spec.dataset, DatasetSpec::Synthetic { .. })
    {
        let joined = root.join(path).to_string_lossy().into_owned();
        spec.dataset.set_path(joined);
    }
}

pub(crate) fn spawn(
    attempt: AttemptRef,
    mut spec: JobSpec,
    resume: Option<Vec<u8>>,
    worker_device: DeviceRequest,
    data_root: &Path,
    tx: UnboundedSender<(AttemptRef, JobEvent)>,
) -> std::io::Result<RunningJob> {
    resolve_dataset(&mut spec, data_root);
    let cancel = CancelToken::default();
    let token = cancel.clone();
    let thread = std::thread::Builder::new()
        .name(format!("job-{}-{}", attempt.job_id, attempt.attempt))
        .spawn(move || {
            let send = |e: JobEvent| {
                let _ = tx.send((attempt, e));
            };
            let run =
                std::panic::AssertUnwindSafe(|| run_job(spec, resume, worker_device, token, &send));
            let finished = match std::panic::catch_unwind(run) {
                Ok(Ok(f)) => f,
                Ok(Err(failure)) => failure.finished(),
                Err(payload) => Failure::panicked(payload.as_ref()).finished(),
            };
            send(finished);
        })?;
    Ok(RunningJob {
        attempt,
        cancel,
        thread,
    })
}

fn run_job(
    spec: JobSpec,
    resume: Option<Vec<u8>>,
    worker_device: DeviceRequest,
    cancel: CancelToken,
    send: &dyn Fn(JobEvent),
) -> Result<JobEvent, Failure> {
    let resume = match resume {
        Some(bytes) => {
            let ckpt = Checkpoint::decode(&bytes)?;
            send(log(format!(
                "resuming from the checkpoint at step {}",
                ckpt.state.step
            )));
            Some(ckpt)
        }
        None => None,
    };
    let resolved = device::resolve(device_for(&spec, worker_device))?;
    send(log(format!(
        "loading dataset {}",
        spec.dataset.path().unwrap_or("(synthetic)")
    )));
    let splits = data::load(&spec.dataset, spec.seed, &FsSource)?;
    send(log(format!(
        "training {} on {} ({} training examples)",
        spec.model.kind(),
        resolved.description,
        splits.train.len()
    )));
    let description = resolved.kind.as_str().to_string();
    let mut on_event = |event: TrainEvent| match event {
        TrainEvent::Started {
            total_steps,
            start_step,
            parameters,
            ..
        } => {
            send(log(format!(
                "model has {parameters} parameters; steps {start_step}..{total_steps}"
            )));
            send(JobEvent::Started {
                device: description.clone(),
                total_steps,
                start_step,
            });
        }
        TrainEvent::Metric(m) => send(JobEvent::Metric(m)),
        TrainEvent::Checkpoint(c) => send(JobEvent::Checkpoint {
            step: c.state.step,
            bytes: c.encode(),
        }),
    };
    let mut run = TrainRun::new(spec.clone(), splits, resolved.device.clone(), &mut on_event);
    run.resume = resume;
    run.cancel = cancel;
    let summary = pollster::block_on(train::train(run))?;
    let outcome = match summary.outcome {
        Outcome::Completed => AttemptOutcome::Succeeded,
        Outcome::Cancelled => AttemptOutcome::Cancelled,
    };
    let report = summary.report(&spec.name, resolved.kind.as_str());
    let model = summary.weights.map(|w| (summary.model.clone(), w));
    Ok(JobEvent::Finished {
        outcome,
        error: None,
        retryable: None,
        steps: summary.steps,
        artifacts: artifacts(model, &report),
        ts_ms: now_ms(),
    })
}

/// The files a finished job leaves: the final weights (burnpack and safetensors) with the
/// config to re-create the model, and the summary.
fn artifacts(model: Option<(ModelConfig, Vec<u8>)>, summary: &serde_json::Value) -> Vec<Artifact> {
    let mut files = Vec::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        files.push(Artifact {
            name: name.to_string(),
            bytes,
        })
    };
    if let Some((config, weights)) = model {
        match train::export_safetensors(&config, &weights) {
            Ok(bytes) => add("model.safetensors", bytes),
            Err(e) => warn!("safetensors export failed: {e}"),
        }
        add("model.bpk", weights);
        if let Ok(json) = serde_json::to_vec_pretty(&config) {
            add("model.json", json);
        }
    }
    if let Ok(json) = serde_json::to_vec_pretty(summary) {
        add("summary.json", json);
    }
    files
}
