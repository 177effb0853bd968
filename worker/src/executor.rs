//! One job on one OS thread: the training core's run driver ([`driver::run`]), its events
//! turned into `kiln_proto`'s [`JobEvent`]s.
//!
//! The thread talks to the async side only through a channel of [`JobEvent`]s, which the
//! connection hands to the protocol state machine; it never touches the socket. The final
//! model's files (burnpack, safetensors, config, summary) are made by the driver on this
//! thread, so the state machine only sees bytes.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kiln_client::Client;
use kiln_proto::dataset::{DatasetKind, DatasetRef};
use kiln_proto::metric::Metric;
use kiln_proto::protocol::{AttemptOutcome, AttemptRef, ControlAction, Group, LogLine};
use kiln_proto::spec::{DatasetSpec, DeviceRequest, JobSpec};
use kiln_proto::worker_session::{Artifact, JobEvent};
use kiln_train::data::{self, Inputs, Splits};
use kiln_train::driver::{self, RunError, RunOptions, RunReport, RunSink, RunStarted};
use kiln_train::train::{
    CancelToken, Checkpoint, CheckpointError, GradientHook, LiveControl, Outcome, Replica,
    TrainError, weights_sha256,
};
use tokio::sync::mpsc::UnboundedSender;
use tracing::warn;

use crate::datasets::{CacheError, DatasetCache};
use crate::ddp::RingHook;

/// What every job on this worker shares.
#[derive(Clone)]
pub(crate) struct JobContext {
    /// The worker's device, for specs that say `auto`.
    pub worker_device: DeviceRequest,
    /// Base of relative dataset paths.
    pub data_root: PathBuf,
    /// Stored datasets (`kiln:sha256:…`), fetched from the coordinator.
    pub datasets: DatasetCache,
    pub client: Client,
    /// Runs the dataset download for the job's thread.
    pub runtime: tokio::runtime::Handle,
    /// The last job's stored dataset, loaded: the next job on the same digest (a sweep, a
    /// retry) starts without reading and decoding it again.
    pub loaded: Arc<Mutex<Option<Loaded>>>,
    /// Where this worker's data-parallel peers connect (`None`: no peers, one-worker jobs
    /// only).
    pub peer_listener: Option<Arc<tokio::net::TcpListener>>,
    /// For ring links relayed through the coordinator.
    pub coordinator: crate::ddp::Coordinator,
}

/// Data loaded for a stored dataset, and what it was loaded for.
pub(crate) struct Loaded {
    key: String,
    splits: Splits,
}

/// Loaded data larger than this is not kept in memory between jobs.
const KEEP_LOADED_BYTES: usize = 1 << 30;

/// What decides the loaded data of a stored dataset: its bytes (digest, in the path), how the
/// spec reads them, the seed (the split) and the shaping for the model (charlm's windows).
fn loaded_key(spec: &JobSpec) -> Option<String> {
    let Some(Ok(DatasetRef::Pinned(digest))) = DatasetRef::of(&spec.dataset) else {
        return None;
    };
    let reading = serde_json::to_string(&spec.dataset).ok()?;
    let shaping = match &spec.model {
        kiln_proto::spec::ModelSpec::Charlm { context, .. } => *context,
        _ => 0,
    };
    Some(format!("{digest}|{reading}|{}|{shaping}", spec.seed))
}

fn approx_bytes(splits: &Splits) -> usize {
    let inputs = |d: &kiln_train::data::Dataset| match &d.inputs {
        Inputs::Dense { values, .. } => values.len() * 4,
        Inputs::Tokens { values, .. } => values.len() * 4,
    };
    inputs(&splits.train)
        + splits.valid.as_ref().map_or(0, inputs)
        + splits.test.as_ref().map_or(0, inputs)
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

impl From<RunError> for Failure {
    /// The driver classifies: a device the worker offered but cannot open is this machine's
    /// problem, not the job's; data errors never change; the core decides its own.
    fn from(e: RunError) -> Self {
        Failure {
            retryable: e.is_retryable(),
            message: e.to_string(),
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

impl From<CacheError> for Failure {
    fn from(e: CacheError) -> Self {
        Failure {
            retryable: e.is_retryable(),
            message: e.to_string(),
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
    /// Pause, resume, checkpoint now, learning rate; a cancel also interrupts a pause.
    pub control: LiveControl,
    pub thread: JoinHandle<()>,
}

impl RunningJob {
    /// Stop between two steps, also from a pause.
    pub fn stop(&self) {
        self.cancel.cancel();
        self.control.interrupt();
    }
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

/// Point the spec's dataset at a file on this machine: a stored dataset (`kiln:sha256:…`)
/// from the cache, downloaded if needed; a relative path under the data root. `Ok(false)`:
/// cancelled while downloading.
fn place_dataset(
    spec: &mut JobSpec,
    ctx: &JobContext,
    cancel: &CancelToken,
    send: &dyn Fn(JobEvent),
) -> Result<bool, Failure> {
    let fixed = |message: String| Failure {
        message,
        retryable: false,
    };
    match DatasetRef::of(&spec.dataset) {
        None | Some(Ok(DatasetRef::Local(_))) => {
            resolve_dataset(spec, &ctx.data_root);
            Ok(true)
        }
        Some(Err(e)) => Err(fixed(format!("dataset.path: {e}"))),
        Some(Ok(DatasetRef::Named(name))) => Err(fixed(format!(
            "dataset.path `kiln:{name}` reached the worker without being pinned to a digest \
             (the coordinator pins it at submission)"
        ))),
        Some(Ok(DatasetRef::Pinned(digest))) => {
            let Some(kind) = DatasetKind::of(&spec.dataset) else {
                return Err(fixed("a synthetic dataset has no path".into()));
            };
            let got = ctx.datasets.get(
                &ctx.runtime,
                &ctx.client,
                &digest,
                kind,
                cancel,
                &mut |line| send(log(line)),
            );
            match got {
                Ok((path, _)) => {
                    spec.dataset.set_path(path.to_string_lossy().into_owned());
                    Ok(true)
                }
                Err(CacheError::Cancelled) => Ok(false),
                Err(e) => Err(e.into()),
            }
        }
    }
}

pub(crate) fn spawn(
    attempt: AttemptRef,
    spec: JobSpec,
    resume: Option<Vec<u8>>,
    group: Option<Group>,
    control: LiveControl,
    ctx: JobContext,
    tx: UnboundedSender<(AttemptRef, JobEvent)>,
) -> std::io::Result<RunningJob> {
    let cancel = CancelToken::default();
    let token = cancel.clone();
    let job_control = control.clone();
    let thread = std::thread::Builder::new()
        .name(format!("job-{}-{}", attempt.job_id, attempt.attempt))
        .spawn(move || {
            let send = |e: JobEvent| {
                let _ = tx.send((attempt, e));
            };
            let log_tx = tx.clone();
            let run = std::panic::AssertUnwindSafe(|| {
                run_job(
                    attempt,
                    spec,
                    resume,
                    group,
                    job_control,
                    &ctx,
                    token,
                    &send,
                    log_tx,
                )
            });
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
        control,
        thread,
    })
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the job thread's inputs, each used once"
)]
fn run_job(
    attempt: AttemptRef,
    mut spec: JobSpec,
    resume: Option<Vec<u8>>,
    group: Option<Group>,
    control: LiveControl,
    ctx: &JobContext,
    cancel: CancelToken,
    send: &dyn Fn(JobEvent),
    log_tx: UnboundedSender<(AttemptRef, JobEvent)>,
) -> Result<JobEvent, Failure> {
    // A data-parallel rank: its place in the ring, and the hook that keeps it one model with
    // the others.
    let (replica, hook) = match group.as_ref().filter(|g| g.world > 1) {
        None => (Replica::default(), None),
        Some(group) => {
            let Some(listener) = ctx.peer_listener.clone() else {
                return Err(Failure {
                    message: "this worker has no peer listener for data-parallel training".into(),
                    retryable: true,
                });
            };
            let rank = group.rank;
            let log_line = move |text: String| {
                let _ = log_tx.send((attempt, log(text)));
            };
            let hook = RingHook::new(
                ctx.runtime.clone(),
                listener,
                ctx.coordinator.clone(),
                attempt,
                group,
                cancel.clone(),
                Box::new(log_line),
            )
            .map_err(|message| Failure {
                message,
                retryable: false,
            })?;
            let replica = Replica {
                rank: rank as usize,
                world: group.world as usize,
            };
            (replica, Some(Box::new(hook) as Box<dyn GradientHook>))
        }
    };
    let key = loaded_key(&spec);
    if !place_dataset(&mut spec, ctx, &cancel, send)? {
        return Ok(JobEvent::Finished {
            outcome: AttemptOutcome::Cancelled,
            error: None,
            retryable: None,
            steps: 0,
            artifacts: Vec::new(),
            ts_ms: now_ms(),
        });
    }
    let resume = resume.map(|bytes| Checkpoint::decode(&bytes)).transpose()?;
    let data = match key {
        Some(key) => Some(load_stored(&spec, key, ctx, send)?),
        None => None,
    };
    let options = RunOptions {
        device: Some(device_for(&spec, ctx.worker_device)),
        max_steps: None,
        resume,
        cancel,
        data,
        replica,
        hook,
        control: Some(control),
    };
    let report = driver::run(
        &spec,
        options,
        &mut Events {
            send,
            rank: replica.rank,
            world: replica.world,
            batch: spec.training.batch_size,
            rates_logged: None,
        },
    )?;
    let outcome = match report.summary.outcome {
        Outcome::Completed => AttemptOutcome::Succeeded,
        Outcome::Cancelled => AttemptOutcome::Cancelled,
    };
    if replica.world > 1
        && let Some(weights) = &report.summary.weights
    {
        send(log(format!(
            "rank {} of {}: final weights sha256 {}",
            replica.rank,
            replica.world,
            weights_sha256(weights)
        )));
    }
    // Rank 0 writes the run's files; the other ranks' weights are the same bits.
    let artifacts = if replica.rank == 0 {
        report
            .files
            .into_iter()
            .map(|f| Artifact {
                name: f.name.to_string(),
                bytes: f.bytes,
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(JobEvent::Finished {
        outcome,
        error: None,
        retryable: None,
        steps: report.summary.steps,
        artifacts,
        ts_ms: now_ms(),
    })
}

/// A stored dataset's loaded data: the last job's, if it was loaded for the same key, else
/// loaded now (and kept for the next job if not too large).
fn load_stored(
    spec: &JobSpec,
    key: String,
    ctx: &JobContext,
    send: &dyn Fn(JobEvent),
) -> Result<Splits, Failure> {
    if let Ok(slot) = ctx.loaded.lock()
        && let Some(loaded) = slot.as_ref()
        && loaded.key == key
    {
        send(log(
            "dataset already in memory (loaded for the previous job on the same data)".into(),
        ));
        return Ok(loaded.splits.clone());
    }
    send(log(format!(
        "loading dataset {}",
        spec.dataset.path().unwrap_or_default()
    )));
    let splits = data::load_for_model(&spec.dataset, &spec.model, spec.seed, &data::FsSource)
        .map_err(|e| Failure::from(RunError::from(e)))?;
    if let Ok(mut slot) = ctx.loaded.lock() {
        // Drop the old data before keeping the new.
        *slot = None;
        if approx_bytes(&splits) <= KEEP_LOADED_BYTES {
            *slot = Some(Loaded {
                key,
                splits: splits.clone(),
            });
        }
    }
    Ok(splits)
}

/// The driver's events as the protocol's [`JobEvent`]s. The finish notice is made by
/// [`run_job`] from the driver's report, with the final files as artifacts. Of a data-parallel
/// run, rank 0 speaks for the job (metrics, checkpoints); the others only log.
struct Events<'a> {
    send: &'a dyn Fn(JobEvent),
    rank: usize,
    world: usize,
    /// Examples per rank and step (`training.batch_size`).
    batch: usize,
    /// When the ranks' rates were last logged (at most every [`RANK_RATES_EVERY`]).
    rates_logged: Option<std::time::Instant>,
}

/// How often rank 0 logs every rank's samples per second.
const RANK_RATES_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl RunSink for Events<'_> {
    fn log(&mut self, line: &str) {
        let line = match self.rank {
            0 => line.to_string(),
            rank => format!("rank {rank}: {line}"),
        };
        (self.send)(log(line));
    }

    fn started(&mut self, s: &RunStarted) {
        self.log(&format!(
            "model has {} parameters; steps {}..{}",
            s.parameters, s.start_step, s.total_steps
        ));
        if self.world > 1 && self.rank == 0 {
            // How an epoch is shared (see `data::replica_batch`): every rank takes the same
            // number of steps, the last one of an epoch whatever is left, so none is dropped.
            let steps =
                kiln_train::data::steps_left_in_epoch(s.train_examples, 0, self.batch, self.world);
            self.log(&format!(
                "{} training examples an epoch over {} ranks: {steps} steps of up to {} per \
                 rank ({} global); no example is dropped",
                s.train_examples,
                self.world,
                self.batch,
                self.batch * self.world
            ));
        }
        (self.send)(JobEvent::Started {
            device: s.device_kind.as_str().to_string(),
            total_steps: s.total_steps,
            start_step: s.start_step,
        });
    }

    fn metric(&mut self, metric: &Metric) {
        if self.rank == 0 {
            (self.send)(JobEvent::Metric(metric.clone()));
        }
    }

    fn checkpoint(&mut self, step: u64, bytes: Vec<u8>) {
        if self.rank == 0 {
            (self.send)(JobEvent::Checkpoint { step, bytes });
        }
    }

    fn rank_rates(&mut self, step: u64, samples_per_sec: &[f64]) {
        if self.rank != 0
            || self
                .rates_logged
                .is_some_and(|t| t.elapsed() < RANK_RATES_EVERY)
        {
            return;
        }
        self.rates_logged = Some(std::time::Instant::now());
        let rates: Vec<String> = samples_per_sec
            .iter()
            .enumerate()
            .map(|(rank, rate)| format!("rank {rank} {rate:.0}"))
            .collect();
        self.log(&format!(
            "samples/s by rank at step {step}: {}",
            rates.join(", ")
        ));
    }

    fn controlled(&mut self, step: u64, control: ControlAction) {
        if self.rank == 0 {
            (self.send)(JobEvent::Controlled { step, control });
        }
    }

    fn warning(&mut self, text: &str) {
        warn!("{text}");
    }

    fn finished(&mut self, _report: &RunReport) {}
}
