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
use kiln_train::device;
use kiln_train::model::ModelConfig;
use kiln_train::train::{self, CancelToken, Checkpoint, Outcome, TrainEvent, TrainRun};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

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
            let finished = match run_job(spec, resume, worker_device, token, &send) {
                Ok(f) => f,
                Err(error) => JobEvent::Finished {
                    outcome: AttemptOutcome::Failed,
                    error: Some(error),
                    steps: 0,
                    artifacts: Vec::new(),
                    ts_ms: now_ms(),
                },
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
) -> Result<JobEvent, String> {
    let resume = match resume {
        Some(bytes) => {
            let ckpt = Checkpoint::decode(&bytes).map_err(|e| format!("checkpoint: {e}"))?;
            send(log(format!(
                "resuming from the checkpoint at step {}",
                ckpt.state.step
            )));
            Some(ckpt)
        }
        None => None,
    };
    let resolved = device::resolve(device_for(&spec, worker_device)).map_err(|e| e.to_string())?;
    send(log(format!(
        "loading dataset {}",
        spec.dataset.path().unwrap_or("(synthetic)")
    )));
    let splits = data::load(&spec.dataset, spec.seed, &FsSource).map_err(|e| e.to_string())?;
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
    let summary = pollster::block_on(train::train(run)).map_err(|e| e.to_string())?;
    let outcome = match summary.outcome {
        Outcome::Completed => AttemptOutcome::Succeeded,
        Outcome::Cancelled => AttemptOutcome::Cancelled,
    };
    let report = summary.report(&spec.name, resolved.kind.as_str());
    let model = summary.weights.map(|w| (summary.model.clone(), w));
    Ok(JobEvent::Finished {
        outcome,
        error: None,
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
