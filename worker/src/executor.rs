//! One job on one OS thread: resolve the device, load data, train with the core, report.
//!
//! The thread talks to the async side only through a channel of [`ExecEvent`]s; it never
//! touches the socket.

use std::path::Path;
use std::thread::JoinHandle;

use kiln_proto::metric::Metric;
use kiln_proto::protocol::{AttemptOutcome, AttemptRef, LogLine};
use kiln_proto::spec::{DatasetSpec, DeviceRequest, JobSpec};
use kiln_train::data::{self, FsSource};
use kiln_train::device::{self, DeviceError};
use kiln_train::model::ModelConfig;
use kiln_train::train::{
    self, CancelToken, Checkpoint, CheckpointError, Outcome, TrainError, TrainEvent, TrainRun,
};
use tokio::sync::mpsc::UnboundedSender;

/// What a running job reports.
#[derive(Debug)]
pub(crate) enum ExecEvent {
    Started {
        device: String,
        total_steps: u64,
        start_step: u64,
    },
    Metric(Metric),
    Log(String),
    Checkpoint {
        step: u64,
        bytes: Vec<u8>,
    },
    Finished {
        outcome: AttemptOutcome,
        error: Option<String>,
        /// For a failure: whether another attempt can end differently (see [`Failure`]).
        retryable: Option<bool>,
        steps: u64,
        /// Final weights and the config to re-create the model (for the safetensors export).
        model: Option<(ModelConfig, Vec<u8>)>,
        summary: Option<serde_json::Value>,
    },
}

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

    fn finished(self) -> ExecEvent {
        ExecEvent::Finished {
            outcome: AttemptOutcome::Failed,
            error: Some(self.message),
            retryable: Some(self.retryable),
            steps: 0,
            model: None,
            summary: None,
        }
    }
}

pub(crate) struct RunningJob {
    pub attempt: AttemptRef,
    pub cancel: CancelToken,
    pub thread: JoinHandle<()>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub(crate) fn log_line(text: String) -> LogLine {
    LogLine {
        ts_ms: now_ms(),
        text,
    }
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
    tx: UnboundedSender<(AttemptRef, ExecEvent)>,
) -> std::io::Result<RunningJob> {
    resolve_dataset(&mut spec, data_root);
    let cancel = CancelToken::default();
    let token = cancel.clone();
    let thread = std::thread::Builder::new()
        .name(format!("job-{}-{}", attempt.job_id, attempt.attempt))
        .spawn(move || {
            let send = |e: ExecEvent| {
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
    send: &dyn Fn(ExecEvent),
) -> Result<ExecEvent, Failure> {
    let resume = match resume {
        Some(bytes) => {
            let ckpt = Checkpoint::decode(&bytes)?;
            send(ExecEvent::Log(format!(
                "resuming from the checkpoint at step {}",
                ckpt.state.step
            )));
            Some(ckpt)
        }
        None => None,
    };
    let resolved = device::resolve(device_for(&spec, worker_device))?;
    send(ExecEvent::Log(format!(
        "loading dataset {}",
        spec.dataset.path().unwrap_or("(synthetic)")
    )));
    let splits = data::load(&spec.dataset, spec.seed, &FsSource)?;
    send(ExecEvent::Log(format!(
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
            send(ExecEvent::Log(format!(
                "model has {parameters} parameters; steps {start_step}..{total_steps}"
            )));
            send(ExecEvent::Started {
                device: description.clone(),
                total_steps,
                start_step,
            });
        }
        TrainEvent::Metric(m) => send(ExecEvent::Metric(m)),
        TrainEvent::Checkpoint(c) => send(ExecEvent::Checkpoint {
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
    Ok(ExecEvent::Finished {
        outcome,
        error: None,
        retryable: None,
        steps: summary.steps,
        model: summary.weights.map(|w| (summary.model.clone(), w)),
        summary: Some(report),
    })
}
