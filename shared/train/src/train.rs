//! The training core: one loop for every model, device and platform.
//!
//! The loop is `async` and reads tensors only through the async APIs, so the same code runs on
//! a worker thread (driven by a trivial executor) and in a browser tab on WebGPU (driven by
//! `spawn_local`). It never touches a socket or a file: it reports through [`TrainEvent`]s,
//! stops when its [`CancelToken`] is set, and hands gradients to an optional [`GradientHook`].

mod adam;
mod checkpoint;
mod control;
mod hook;
mod schedule;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{
    AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Int, Tensor};
use web_time::Instant;

use adam::FusedAdam;
pub use checkpoint::{CHECKPOINT_FORMAT, Checkpoint, CheckpointError, TrainState};
pub use control::LiveControl;
pub use hook::{GradientHook, HookError, HookFuture, Replica};
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::ControlAction;
pub use schedule::{ScheduleClock, learning_rate};

use crate::data::{self, Dataset, Splits};
use crate::model::{CharLm, Cnn, Mlp, ModelConfig, ModelError, TrainModel};
use kiln_proto::spec::{GradClip, JobSpec, OptimizerKind, OptimizerSpec};

/// What the loop reports while it runs.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    /// The model is built and the loop is about to take `total_steps` steps (from `start_step`).
    Started {
        total_steps: u64,
        start_step: u64,
        parameters: usize,
        model: ModelConfig,
    },
    Metric(Metric),
    /// A checkpoint to store (every `training.checkpoint_every` steps, and at the end).
    Checkpoint(Box<Checkpoint>),
    /// Of several replicas, with every training metric: each replica's own samples per second
    /// since the last one, rank order (a slow rank shows here).
    RankRates {
        step: u64,
        samples_per_sec: Vec<f64>,
    },
    /// A line for the run's log (e.g. that a checkpoint carries no optimizer state).
    Note(String),
    /// A [`LiveControl`] request took effect after `step` steps (a checkpoint it asked for is
    /// reported just before).
    Controlled {
        step: u64,
        control: ControlAction,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed,
    Cancelled,
}

/// The result of [`train`].
#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub outcome: Outcome,
    pub steps: u64,
    pub samples: u64,
    pub model: ModelConfig,
    /// Final weights as burnpack bytes; `None` when the platform cannot read them synchronously
    /// (WebGPU) and no checkpoint was asked for.
    pub weights: Option<Vec<u8>>,
    pub last_train: Option<Metric>,
    pub last_val: Option<Metric>,
    pub test: Option<Metric>,
    /// Samples per second over the whole loop (training steps only, evaluation excluded).
    pub train_samples_per_sec: f64,
    /// How many replicas trained (1 alone).
    pub world: usize,
    /// Of several replicas: seconds this one spent keeping them one model.
    pub sync: Option<SyncTimes>,
    /// What the model needs to know about its data to be run on new inputs (`data.json`):
    /// the vocabulary of a language model, a CSV's columns, classes and standardisation.
    pub data: data::DataInfo,
}

/// Where a replica's synchronisation time went (seconds over the whole run).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct SyncTimes {
    /// Reading gradients (or parameters) off the device into one host buffer.
    pub flatten: f64,
    /// The hook: the all-reduce with the other replicas (network and waiting for them).
    pub exchange: f64,
    /// Putting the result back on the device.
    pub unflatten: f64,
    /// How many times.
    pub rounds: u64,
}

/// SHA-256 of weights (burnpack bytes), lowercase hex: equal on every rank of a data-parallel
/// run.
pub fn weights_sha256(weights: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(weights)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl TrainSummary {
    /// The run's summary as written to `summary.json` (by `kiln train` and by workers).
    pub fn report(&self, name: &str, device: &str) -> serde_json::Value {
        serde_json::json!({
            "name": name,
            "outcome": match self.outcome {
                Outcome::Completed => "completed",
                Outcome::Cancelled => "cancelled",
            },
            "device": device,
            "steps": self.steps,
            "samples": self.samples,
            "world": self.world,
            "sync_seconds": self.sync,
            // Every rank of a data-parallel run ends with these same bytes.
            "weights_sha256": self.weights.as_deref().map(weights_sha256),
            "train_samples_per_sec": self.train_samples_per_sec,
            "train": self.last_train,
            "val": self.last_val,
            "test": self.test,
        })
    }
}

/// Why training stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Data(#[from] data::DataError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Hook(#[from] HookError),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error("device error: {0}")]
    Device(String),
    #[error("the training split is empty after the split (dataset.validation_fraction too large?)")]
    EmptyTrain,
    #[error("cannot shard {examples} training examples over {world} replicas (rank {rank})")]
    Shard {
        examples: usize,
        rank: usize,
        world: usize,
    },
    #[error("the loss became {0} at step {1}: lower optimizer.lr or set training.grad_clip")]
    Diverged(f64, u64),
    #[error("the device ran out of memory ({0}): lower training.batch_size or the model's size")]
    OutOfMemory(String),
}

impl TrainError {
    /// Whether another attempt of the same job (on this or another machine) can end
    /// differently. Data, model shapes, the spec, a divergence and the memory a model needs
    /// are the same every time; a device fault or a failed gradient exchange are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            TrainError::Data(_)
            | TrainError::Model(_)
            | TrainError::Resume(_)
            | TrainError::EmptyTrain
            | TrainError::Shard { .. }
            | TrainError::Diverged(..)
            | TrainError::OutOfMemory(_) => false,
            TrainError::Hook(_) | TrainError::Device(_) => true,
        }
    }

    /// A failed device operation (`context`: what was being done). Burn passes cubecl's
    /// out-of-memory error on only as text (`ExecutionError::WithContext`), so this is the one
    /// place that reads a device error's message to tell it apart.
    pub fn device(context: &str, error: &str) -> TrainError {
        let message = format!("{context}: {error}");
        let lower = message.to_ascii_lowercase();
        if [
            "out-of-memory",
            "out of memory",
            "out of device memory",
            "outofmemory",
        ]
        .iter()
        .any(|needle| lower.contains(needle))
        {
            TrainError::OutOfMemory(message)
        } else {
            TrainError::Device(message)
        }
    }
}

/// Set to stop a run between steps.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything a run needs.
pub struct TrainRun<'a> {
    pub spec: JobSpec,
    /// Data shaped for the model (see [`data::load_for_model`]: text already cut into windows).
    pub data: Splits,
    /// The device to train on; autodiff is enabled by the loop.
    pub device: Device,
    pub resume: Option<Checkpoint>,
    pub cancel: CancelToken,
    pub hook: Option<&'a mut dyn GradientHook>,
    pub on_event: &'a mut dyn FnMut(TrainEvent),
    /// This replica's rank and the number of replicas: which shard of each epoch it trains on
    /// (`data::replica_batch`) and its dropout seed (seed + rank). Rank 0 of 1 alone.
    pub replica: Replica,
    /// Stop after this many steps in total (overrides the spec when smaller).
    pub max_steps: Option<u64>,
    /// Awaited after every step. A browser passes one that yields to its event loop now and
    /// then: on the CPU in wasm every read completes at once, so without it the loop would
    /// never let a stop message (or anything else) in.
    pub between_steps: Option<&'a mut dyn FnMut() -> BetweenSteps>,
    /// Also store a checkpoint at the end (completed or cancelled) when the spec asks for
    /// none: the in-browser trainer keeps it to resume after a stop.
    pub final_checkpoint: bool,
    /// Pause, resume, checkpoint now, a new learning rate: looked at between steps. A cancel
    /// of a paused run must also [`LiveControl::interrupt`] it.
    pub control: Option<LiveControl>,
}

/// What [`TrainRun::between_steps`] returns.
pub type BetweenSteps = Pin<Box<dyn Future<Output = ()>>>;

impl<'a> TrainRun<'a> {
    pub fn new(
        spec: JobSpec,
        data: Splits,
        device: Device,
        on_event: &'a mut dyn FnMut(TrainEvent),
    ) -> Self {
        TrainRun {
            spec,
            data,
            device,
            resume: None,
            cancel: CancelToken::default(),
            hook: None,
            on_event,
            replica: Replica::default(),
            max_steps: None,
            between_steps: None,
            final_checkpoint: false,
            control: None,
        }
    }
}

/// Train a model as the run's spec says. Returns when the run completes, is cancelled, or fails.
pub async fn train(run: TrainRun<'_>) -> Result<TrainSummary, TrainError> {
    let config = ModelConfig::new(&run.spec.model, &run.data.info)?;
    if let Some(ckpt) = &run.resume
        && ckpt.state.model != config
    {
        return Err(TrainError::Resume(
            "the checkpoint's model configuration differs from this job's".to_string(),
        ));
    }
    match config.clone() {
        ModelConfig::Mlp(c) => Loop::<Mlp>::run(run, config, c).await,
        ModelConfig::Cnn(c) => Loop::<Cnn>::run(run, config, c).await,
        ModelConfig::Charlm(c) => Loop::<CharLm>::run(run, config, c).await,
    }
}

/// Why the optimizer state a checkpoint holds (written under `was`) does not fit `now`'s
/// optimizer, if it does not: another kind, or SGD with momentum turned on or off. Rates,
/// betas, epsilon and weight decay hold no state of their own.
fn optimizer_changed(was: &OptimizerSpec, now: &OptimizerSpec) -> Option<String> {
    if was.kind != now.kind {
        return Some(format!(
            "{} and this run uses {}",
            was.kind.as_str(),
            now.kind.as_str()
        ));
    }
    if (was.momentum > 0.0) != (now.momentum > 0.0) {
        return Some(format!(
            "SGD with momentum {} and this run uses momentum {}",
            was.momentum, now.momentum
        ));
    }
    None
}

/// Build the optimizer a spec asks for.
pub fn build_optimizer(o: &OptimizerSpec, clip: Option<GradClip>) -> ModuleOptimizer {
    let clip = clip.map(|c| match c {
        GradClip::Norm(x) => GradientClippingConfig::Norm(x as f32),
        GradClip::Value(x) => GradientClippingConfig::Value(x as f32),
    });
    let decay = (o.weight_decay > 0.0).then(|| WeightDecayConfig::new(o.weight_decay as f32));
    match o.kind {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((o.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(o.momentum)
                    .with_dampening(0.0)
            }))
            .with_weight_decay(decay)
            .with_gradient_clipping(clip)
            .init(),
        OptimizerKind::Adam => {
            let adam = FusedAdam::new(
                o.beta1 as f32,
                o.beta2 as f32,
                o.epsilon as f32,
                decay.map(|d| d.penalty),
            );
            match clip {
                Some(clip) => ModuleOptimizer::from(adam).with_grad_clipping(clip.init()),
                None => ModuleOptimizer::from(adam),
            }
        }
        OptimizerKind::Adamw => AdamWConfig::new()
            .with_beta_1(o.beta1 as f32)
            .with_beta_2(o.beta2 as f32)
            .with_epsilon(o.epsilon as f32)
            .with_weight_decay(o.weight_decay as f32)
            .with_grad_clipping(clip)
            .init(),
    }
}

/// Burnpack bytes of a module's weights (a synchronous read: not on WebGPU).
pub fn weights_of<M: Module>(model: &M) -> Result<Vec<u8>, TrainError> {
    model
        .clone()
        .into_record()
        .into_bytes()
        .map(|b| b.to_vec())
        .map_err(|e| TrainError::device("serializing weights", &format!("{e:?}")))
}

/// Burnpack bytes of a model's weights, read with one asynchronous device read (safe on
/// WebGPU, where [`weights_of`] panics): the values are copied into a CPU (`flex`) copy of the
/// model with the same parameter names and ids, whose record is the same burnpack.
pub async fn weights_async<M: Module>(model: &M) -> Result<Vec<u8>, TrainError> {
    let flat = hook::flatten_params(model)
        .await
        .map_err(|e| TrainError::device("reading weights", &e.0))?;
    weights_of(&hook::params_on(model, &flat, &Device::flex()))
}

/// Whether tensors on `device` can be read synchronously (every native device, and the CPU
/// backend in wasm; not WebGPU).
fn reads_synchronously(device: &Device) -> bool {
    !cfg!(target_arch = "wasm32") || device.clone().without_autodiff() == Device::flex()
}

/// Load burnpack bytes into a module built from the same config.
pub fn load_weights<M: Module>(model: M, bytes: &[u8]) -> Result<M, TrainError> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(|e| TrainError::Resume(format!("weights are not a valid burnpack: {e:?}")))?;
    model
        .try_load_record(record)
        .map_err(|e| TrainError::Resume(format!("weights do not fit the model: {e:?}")))
}

/// Load a checkpoint's optimizer state (burnpack) into `optim`; an error, never a panic, for
/// state that is not a valid record.
pub fn load_optimizer(
    optim: ModuleOptimizer,
    bytes: Vec<u8>,
) -> Result<ModuleOptimizer, TrainError> {
    check_optimizer_record(&bytes)?;
    optim
        .from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| TrainError::Resume(format!("optimizer state: {e:?}")))
}

/// What Burn 0.22's optimizer loading assumes of a record but does not check, where
/// `ModuleOptimizer::load_record` panics instead: every tensor names its parameter, and a
/// parameter's state tensors all have the rank its `{id}.__rank` scalar gives, at most 8. A
/// corrupt checkpoint must get an error, not a crash (both found by fuzzing: `fuzz/src/train.rs`).
fn check_optimizer_record(bytes: &[u8]) -> Result<(), TrainError> {
    /// The highest rank Burn 0.22's optimizers dispatch on.
    const MAX_RANK: usize = 8;
    let bad = |e: burn_pack::Error| {
        TrainError::Resume(format!("optimizer state is not a valid burnpack: {e:?}"))
    };
    let corrupt =
        |what: String| TrainError::Resume(format!("optimizer state: {what} (the file is corrupt)"));
    let reader = burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(bytes.to_vec()))
        .map_err(bad)?;
    // Each parameter's rank, as Burn reads it: its `__rank` scalar, else its first tensor's.
    let mut ranks = std::collections::BTreeMap::new();
    for (name, value) in reader.scalars() {
        if let Some(id) = name.strip_suffix(".__rank")
            && let (Ok(id), Ok(rank)) = (id.parse::<u64>(), usize::try_from(*value))
        {
            if rank > MAX_RANK {
                return Err(corrupt(format!("`{name}` is {rank}, more than {MAX_RANK}")));
            }
            ranks.insert(id, rank);
        }
    }
    for tensor in reader.into_tensors().map_err(bad)? {
        let (name, _, shape, param_id, _) = tensor.into_parts().map_err(bad)?;
        let Some(id) = param_id else {
            return Err(corrupt(format!("tensor `{name}` names no parameter")));
        };
        let rank = *ranks.entry(id).or_insert(shape.num_dims());
        if shape.num_dims() != rank {
            return Err(corrupt(format!(
                "tensor `{name}` has rank {}, its parameter's state rank {rank}",
                shape.num_dims()
            )));
        }
    }
    Ok(())
}

/// Running sums of detached per-step values, read only when a metric is due.
struct Accumulator {
    loss: Option<Tensor<1>>,
    correct: Option<Tensor<1, Int>>,
    steps: u64,
    predictions: u64,
    samples: u64,
    since: Instant,
}

impl Accumulator {
    fn new() -> Self {
        Accumulator {
            loss: None,
            correct: None,
            steps: 0,
            predictions: 0,
            samples: 0,
            since: Instant::now(),
        }
    }

    fn add(
        &mut self,
        loss: Tensor<1>,
        correct: Option<Tensor<1, Int>>,
        predictions: usize,
        samples: usize,
    ) {
        self.loss = Some(match self.loss.take() {
            Some(acc) => acc + loss,
            None => loss,
        });
        if let Some(c) = correct {
            self.correct = Some(match self.correct.take() {
                Some(acc) => acc + c,
                None => c,
            });
        }
        self.steps += 1;
        self.predictions += predictions as u64;
        self.samples += samples as u64;
    }

    /// Mean loss and accuracy since the last read, and samples per second; resets. Of
    /// several replicas: over all of them (the loss is the mean of every replica's step
    /// losses, the accuracy over all their predictions, the rate their sum).
    async fn read(
        &mut self,
        hook: &mut Option<&mut dyn GradientHook>,
        replica: Replica,
    ) -> Result<(f64, Option<f64>, f64, Vec<f64>), TrainError> {
        let secs = self.since.elapsed().as_secs_f64().max(1e-9);
        let loss_sum = match self.loss.take() {
            Some(t) => read_f64(t).await?,
            None => f64::NAN,
        };
        let (correct, has_correct) = match self.correct.take() {
            Some(t) => (read_i64(t).await? as f64, true),
            None => (0.0, false),
        };
        // Sums, then one slot per replica for its own rate (the others leave theirs at 0).
        let rate = self.samples as f64 / secs;
        let mut sums = vec![
            loss_sum,
            self.steps as f64,
            correct,
            self.predictions as f64,
            rate,
        ];
        let world = if hook.is_some() {
            replica.world.max(1)
        } else {
            1
        };
        if world > 1 {
            sums.extend(std::iter::repeat_n(0.0, world));
            sums[5 + replica.rank] = rate;
        }
        hook::reduce_sum(hook, replica, &mut sums).await?;
        let (loss_sum, steps, correct, predictions, rate) =
            (sums[0], sums[1], sums[2], sums[3], sums[4]);
        let loss = loss_sum / steps.max(1.0);
        let accuracy = has_correct.then(|| correct / predictions.max(1.0));
        *self = Accumulator::new();
        Ok((loss, accuracy, rate, sums.split_off(5)))
    }
}

async fn read_f64(t: Tensor<1>) -> Result<f64, TrainError> {
    t.into_scalar_async::<f32>()
        .await
        .map(f64::from)
        .map_err(|e| TrainError::device("reading the loss", &format!("{e:?}")))
}

async fn read_i64(t: Tensor<1, Int>) -> Result<i64, TrainError> {
    t.into_scalar_async::<i64>()
        .await
        .map_err(|e| TrainError::device("reading the correct count", &format!("{e:?}")))
}

/// Batches of `batch` examples in order, for evaluation.
/// Loss and accuracy over `data`. Of several replicas, each evaluates its contiguous shard
/// and the sums are reduced, so every replica gets the figures of the whole set.
async fn evaluate<M: TrainModel>(
    model: &M,
    data: &Dataset,
    batch: usize,
    device: &Device,
    hook: &mut Option<&mut dyn GradientHook>,
    replica: Replica,
) -> Result<(f64, Option<f64>), TrainError> {
    let model = model.valid();
    let device = device.clone().without_autodiff();
    let mut acc = Accumulator::new();
    let n = data.len();
    let world = if hook.is_some() {
        replica.world.max(1)
    } else {
        1
    };
    let rank = if world > 1 { replica.rank } else { 0 };
    let (mut start, stop) = (n * rank / world, n * (rank + 1) / world);
    let mut weighted_loss = 0.0;
    while start < stop {
        let end = (start + batch).min(stop);
        let indices: Vec<usize> = (start..end).collect();
        let out = model.forward_batch(&data.gather(&indices), &device);
        // Weight each batch's mean loss by its size so a short last batch counts fairly.
        weighted_loss += read_f64(out.loss).await? * (end - start) as f64;
        if let Some(c) = out.correct {
            acc.correct = Some(match acc.correct.take() {
                Some(a) => a + c,
                None => c,
            });
        }
        acc.predictions += out.predictions as u64;
        start = end;
    }
    // Whether there is an accuracy depends on the targets, not on the shard (which may be
    // empty when there are fewer examples than replicas).
    let has_correct = !matches!(data.targets, data::Targets::Value(_));
    let correct = match acc.correct.take() {
        Some(t) => read_i64(t).await? as f64,
        None => 0.0,
    };
    let mut sums = [weighted_loss, correct, acc.predictions as f64];
    hook::reduce_sum(hook, replica, &mut sums).await?;
    let [weighted_loss, correct, predictions] = sums;
    let accuracy = has_correct.then(|| correct / predictions.max(1.0));
    Ok((weighted_loss / n.max(1) as f64, accuracy))
}

/// A per-step seed for dropout, so a resumed run draws the same masks. Replicas pass
/// seed + rank, so they draw different masks.
fn step_seed(seed: u64, step: u64) -> u64 {
    let mut x = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^ (x >> 33)
}

struct Loop<M>(std::marker::PhantomData<M>);

impl<M: TrainModel> Loop<M> {
    async fn run(
        run: TrainRun<'_>,
        config: ModelConfig,
        model_config: M::Config,
    ) -> Result<TrainSummary, TrainError> {
        let TrainRun {
            spec,
            data,
            device,
            resume,
            cancel,
            mut hook,
            on_event,
            replica,
            max_steps,
            mut between_steps,
            final_checkpoint,
            control,
        } = run;
        // Saving reads tensors synchronously (Burn's records): not on WebGPU, where only the
        // final weights are read, asynchronously (`weights_async`).
        let sync_reads = reads_synchronously(&device);
        let device = device.autodiff();
        let train_data = &data.train;
        let n = train_data.len();
        let batch = spec.training.batch_size;
        let Replica { rank, world } = replica;
        if n == 0 {
            return Err(TrainError::EmptyTrain);
        }
        // Every replica takes the same number of steps per epoch; the last batch of an epoch
        // holds what is left (short alone, as Keras and PyTorch do). See `data::replica_batch`.
        let steps_per_epoch = data::steps_left_in_epoch(n, 0, batch, world) as u64;
        if world == 0 || rank >= world || steps_per_epoch == 0 {
            return Err(TrainError::Shard {
                examples: n,
                rank,
                world,
            });
        }

        // Every replica must shard the same examples.
        if world > 1
            && let Some(hook) = hook.as_deref_mut()
        {
            hook.check_same(replica, "training data", train_data.digest())
                .await?;
        }

        device.seed(spec.seed);
        let mut model = M::init(&model_config, &device);
        let mut optim = build_optimizer(&spec.optimizer, spec.training.grad_clip);
        let (mut step, mut epoch, mut batch_in_epoch, mut samples) = (0u64, 0u64, 0u64, 0u64);
        // Examples of this epoch's order consumed by all replicas together.
        let mut consumed = 0usize;
        let mut clock_from = (0.0, world);
        if let Some(ckpt) = resume {
            model = load_weights(model, &ckpt.model)?;
            if ckpt.optimizer.is_empty() {
                on_event(TrainEvent::Note(format!(
                    "the checkpoint of step {} has no optimizer state (it was written on WebGPU, \
                     which Burn cannot read it from): the optimizer starts afresh from its weights",
                    ckpt.state.step
                )));
            } else if let Some(why) = optimizer_changed(&ckpt.state.spec.optimizer, &spec.optimizer)
            {
                // A fork may train on with another optimizer: its state would not fit.
                on_event(TrainEvent::Note(format!(
                    "the checkpoint of step {} was written by {why}: the optimizer starts afresh \
                     from its weights",
                    ckpt.state.step
                )));
            } else {
                optim = load_optimizer(optim, ckpt.optimizer)?;
            }
            let s = ckpt.state;
            // The schedule's clock: where the run was, in steps of the world it started at.
            clock_from = (
                s.schedule_step.unwrap_or(s.step as f64),
                s.schedule_world.unwrap_or(s.world),
            );
            consumed = s.samples_in_epoch(n).min(n as u64) as usize;
            (step, epoch, batch_in_epoch, samples) = (s.step, s.epoch, s.batch_in_epoch, s.samples);
            if s.world != world {
                // Steps of this epoch taken by another world say nothing about this one's.
                batch_in_epoch = 0;
            }
        } else if let Some(hook) = hook.as_deref_mut() {
            let weights = hook.sync_weights(replica, weights_of(&model)?).await?;
            model = load_weights(model, &weights)?;
        }
        // What is left of the current epoch (at this world size), then whole epochs.
        let epochs = spec.training.epochs as u64;
        let mut total_steps = step;
        if epoch < epochs {
            // Saturating: a resumed state's counts are checked (`TrainState::check`), but an
            // overflow here must never be what stops a run.
            total_steps = total_steps.saturating_add(
                (data::steps_left_in_epoch(n, consumed, batch, world) as u64)
                    .saturating_add(steps_per_epoch.saturating_mul(epochs - epoch - 1)),
            );
        }
        for limit in [spec.training.max_steps, max_steps].into_iter().flatten() {
            total_steps = total_steps.min(limit);
        }

        let mut clock = ScheduleClock::new(clock_from.0, clock_from.1, world, step, total_steps);

        on_event(TrainEvent::Started {
            total_steps,
            start_step: step,
            parameters: model.num_params(),
            model: config.clone(),
        });

        let uses_rng = config.uses_rng();
        // Parameter averaging every H steps instead of a gradient all-reduce every step.
        let (local_sgd, outer_lr) = match spec.distributed.sync {
            kiln_proto::spec::SyncSpec::Every { every, outer_lr } if world > 1 => {
                (Some(every.max(1)), outer_lr.unwrap_or(1.0) as f32)
            }
            _ => (None, 1.0),
        };
        // The parameters at the last synchronisation (the same on every rank), from which an
        // outer learning rate other than 1 scales the ranks' mean move.
        let mut anchor = match (local_sgd, hook.is_some()) {
            (Some(_), true) if outer_lr != 1.0 => Some(hook::flatten_params(&model).await?),
            _ => None,
        };
        let log_every = spec.training.log_every;
        let epoch_at = |step: u64| step as f64 / steps_per_epoch as f64;
        let mut order = data::epoch_order(n, spec.seed, epoch);
        let mut acc = Accumulator::new();
        let mut last_train = None;
        let mut last_val = None;
        let mut outcome = Outcome::Completed;
        let mut train_secs = 0.0f64;
        let mut sync = SyncTimes::default();
        let mut train_samples = 0u64;
        let state_at =
            |step, epoch, batch_in_epoch, samples, consumed: usize, clock: &ScheduleClock| {
                TrainState {
                    spec: spec.clone(),
                    model: config.clone(),
                    step,
                    epoch,
                    batch_in_epoch,
                    samples,
                    rank,
                    world,
                    samples_in_epoch: Some(consumed as u64),
                    schedule_step: Some(clock.at),
                    schedule_world: Some(clock.started_world),
                }
            };
        let checkpoint = |model: &M,
                          optim: &ModuleOptimizer,
                          step,
                          epoch,
                          batch_in_epoch,
                          samples,
                          consumed: usize,
                          clock: &ScheduleClock|
         -> Result<Checkpoint, TrainError> {
            Ok(Checkpoint {
                state: state_at(step, epoch, batch_in_epoch, samples, consumed, clock),
                model: weights_of(model)?,
                optimizer: optim
                    .into_bytes()
                    .map(|b| b.to_vec())
                    .map_err(|e| TrainError::device("optimizer state", &format!("{e:?}")))?,
            })
        };

        while step < total_steps {
            if let Some(control) = &control {
                let mut paused = false;
                let mut held = false;
                let t = Instant::now();
                loop {
                    for action in control.take() {
                        match action {
                            ControlAction::Pause if !paused => paused = true,
                            ControlAction::Resume if paused => paused = false,
                            ControlAction::Pause | ControlAction::Resume => continue,
                            ControlAction::SetLr { lr } => control.record_lr(step, lr),
                            ControlAction::Checkpoint if sync_reads => {
                                let c = checkpoint(
                                    &model,
                                    &optim,
                                    step,
                                    epoch,
                                    batch_in_epoch,
                                    samples,
                                    consumed,
                                    &clock,
                                )?;
                                on_event(TrainEvent::Checkpoint(Box::new(c)));
                                held = true;
                            }
                            ControlAction::Checkpoint => {
                                on_event(TrainEvent::Note(format!(
                                    "no checkpoint at step {step}: Burn cannot read a model's \
                                     state synchronously on WebGPU"
                                )));
                                continue;
                            }
                        }
                        on_event(TrainEvent::Controlled {
                            step,
                            control: action,
                        });
                    }
                    if !paused || cancel.is_cancelled() {
                        break;
                    }
                    held = true;
                    control.wait().await;
                }
                if held {
                    // The rate since the last metric leaves out the pause or the checkpoint.
                    acc.since += t.elapsed();
                }
            }
            if cancel.is_cancelled() {
                outcome = Outcome::Cancelled;
                break;
            }
            if data::steps_left_in_epoch(n, consumed, batch, world) == 0 {
                epoch += 1;
                batch_in_epoch = 0;
                consumed = 0;
                order = data::epoch_order(n, spec.seed, epoch);
            }
            let started = Instant::now();
            let (indices, taken) = data::replica_batch(&order, consumed, batch, rank, world);
            let local = indices.len();
            let host_batch = train_data.gather(&indices);
            if uses_rng {
                device.seed(step_seed(spec.seed.wrapping_add(rank as u64), step));
            }
            let base_lr = control
                .as_ref()
                .map_or(spec.optimizer.lr, |c| c.lr_at(step, spec.optimizer.lr));
            let lr = clock.learning_rate(&spec.schedule, base_lr);
            let out = model.forward_batch(&host_batch, &device);
            let mut grads = GradientsParams::from_grads(out.loss.backward(), &model);
            if let Some(hook) = hook.as_deref_mut()
                && local_sgd.is_none()
            {
                let t = Instant::now();
                let mut flat = hook::flatten(&model, &mut grads).await?;
                sync.flatten += t.elapsed().as_secs_f64();
                let t = Instant::now();
                hook.on_gradients(replica, step, &mut flat.values).await?;
                sync.exchange += t.elapsed().as_secs_f64();
                let t = Instant::now();
                hook::unflatten(&model, &mut grads, flat);
                sync.unflatten += t.elapsed().as_secs_f64();
                sync.rounds += 1;
            }
            model = optim.step(lr, model, grads);
            // Local SGD: every H steps (and after the last), the replicas average parameters.
            if let (Some(every), Some(hook)) = (local_sgd, hook.as_deref_mut())
                && ((step + 1) % every == 0 || step + 1 == total_steps)
            {
                let t = Instant::now();
                let mut params = hook::flatten_params(&model).await?;
                sync.flatten += t.elapsed().as_secs_f64();
                let t = Instant::now();
                hook.on_parameters(replica, step + 1, &mut params).await?;
                sync.exchange += t.elapsed().as_secs_f64();
                let t = Instant::now();
                if let Some(anchor) = anchor.as_mut() {
                    // anchor + outer_lr × (mean − anchor), then the new anchor.
                    for (p, a) in params.iter_mut().zip(anchor.iter_mut()) {
                        *p = *a + outer_lr * (*p - *a);
                        *a = *p;
                    }
                }
                model = hook::load_params(model, &params);
                sync.unflatten += t.elapsed().as_secs_f64();
                sync.rounds += 1;
            }
            // This replica's examples: `read` sums the replicas' rates.
            acc.add(out.loss.detach(), out.correct, out.predictions, local);
            step += 1;
            clock.tick();
            batch_in_epoch += 1;
            consumed += taken;
            samples += taken as u64;
            train_samples += taken as u64;
            train_secs += started.elapsed().as_secs_f64();
            if let Some(pause) = between_steps.as_mut() {
                pause().await;
            }

            if step % log_every == 0 || step == total_steps {
                let (loss, accuracy, rate, rank_rates) = acc.read(&mut hook, replica).await?;
                if !loss.is_finite() {
                    return Err(TrainError::Diverged(loss, step));
                }
                let metric = Metric {
                    step,
                    epoch: epoch_at(step),
                    split: Split::Train,
                    loss,
                    accuracy,
                    lr: Some(lr),
                    samples_per_sec: Some(rate),
                };
                last_train = Some(metric.clone());
                on_event(TrainEvent::Metric(metric));
                if !rank_rates.is_empty() {
                    on_event(TrainEvent::RankRates {
                        step,
                        samples_per_sec: rank_rates,
                    });
                }
            }
            let eval_due = spec.training.eval_every.is_some_and(|k| step % k == 0);
            if eval_due
                && step < total_steps
                && let Some(valid) = &data.valid
            {
                let metric = eval_metric(
                    &model,
                    valid,
                    batch,
                    &device,
                    step,
                    epoch_at(step),
                    Split::Val,
                    &mut hook,
                    replica,
                )
                .await?;
                last_val = Some(metric.clone());
                on_event(TrainEvent::Metric(metric));
                acc.since = Instant::now();
            }
            let ckpt_due = spec
                .training
                .checkpoint_every
                .is_some_and(|k| step % k == 0);
            if ckpt_due && step < total_steps && sync_reads {
                let c = checkpoint(
                    &model,
                    &optim,
                    step,
                    epoch,
                    batch_in_epoch,
                    samples,
                    consumed,
                    &clock,
                )?;
                on_event(TrainEvent::Checkpoint(Box::new(c)));
                acc.since = Instant::now();
            }
        }

        let mut test = None;
        if outcome == Outcome::Completed {
            for (split, set) in [(Split::Val, &data.valid), (Split::Test, &data.test)] {
                let Some(set) = set else { continue };
                let metric = eval_metric(
                    &model,
                    set,
                    batch,
                    &device,
                    step,
                    epoch_at(step),
                    split,
                    &mut hook,
                    replica,
                )
                .await?;
                on_event(TrainEvent::Metric(metric.clone()));
                match split {
                    Split::Test => test = Some(metric),
                    _ => last_val = Some(metric),
                }
            }
        }
        // A final checkpoint (also on cancel, so a cancelled run can be resumed) where the
        // caller asked for checkpoints; its weights double as the final model.
        let mut weights = None;
        let wants_checkpoint = spec.training.checkpoint_every.is_some() || final_checkpoint;
        if sync_reads
            && (wants_checkpoint || outcome == Outcome::Completed && !cfg!(target_arch = "wasm32"))
        {
            let c = checkpoint(
                &model,
                &optim,
                step,
                epoch,
                batch_in_epoch,
                samples,
                consumed,
                &clock,
            )?;
            weights = Some(c.model.clone());
            if wants_checkpoint {
                on_event(TrainEvent::Checkpoint(Box::new(c)));
            }
        } else if cfg!(target_arch = "wasm32") {
            // In a browser the final weights are always wanted (to run the model in the page,
            // to save the run); read asynchronously, they are safe on WebGPU too.
            let w = weights_async(&model).await?;
            if wants_checkpoint {
                // WebGPU: Burn reads optimizer state only synchronously, which WebGPU cannot
                // do, so the checkpoint keeps the weights and where the loop stands, and a
                // resume starts the optimizer afresh (an empty optimizer section).
                on_event(TrainEvent::Note(format!(
                    "checkpoint at step {step} without optimizer state (WebGPU: Burn cannot read \
                     it); a resume starts the optimizer afresh"
                )));
                on_event(TrainEvent::Checkpoint(Box::new(Checkpoint {
                    state: state_at(step, epoch, batch_in_epoch, samples, consumed, &clock),
                    model: w.clone(),
                    optimizer: Vec::new(),
                })));
            }
            weights = Some(w);
        }
        Ok(TrainSummary {
            outcome,
            steps: step,
            samples,
            model: config,
            weights,
            last_train,
            last_val,
            test,
            train_samples_per_sec: train_samples as f64 / train_secs.max(1e-9),
            world,
            sync: (world > 1 && hook.is_some()).then_some(sync),
            data: data.info.clone(),
        })
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "the loop's state at one evaluation; a struct would only rename it"
)]
async fn eval_metric<M: TrainModel>(
    model: &M,
    data: &Dataset,
    batch: usize,
    device: &Device,
    step: u64,
    epoch: f64,
    split: Split,
    hook: &mut Option<&mut dyn GradientHook>,
    replica: Replica,
) -> Result<Metric, TrainError> {
    let (loss, accuracy) = evaluate(model, data, batch, device, hook, replica).await?;
    Ok(Metric {
        step,
        epoch,
        split,
        loss,
        accuracy,
        lr: None,
        samples_per_sec: None,
    })
}

#[cfg(test)]
mod tests;

/// Re-create a model from its config and burnpack weights and write it as safetensors.
#[cfg(not(target_arch = "wasm32"))]
pub fn export_safetensors(config: &ModelConfig, weights: &[u8]) -> Result<Vec<u8>, TrainError> {
    fn export<M: TrainModel>(c: &M::Config, weights: &[u8]) -> Result<Vec<u8>, TrainError> {
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        let model = load_weights(M::init(c, &Device::flex()), weights)?;
        let mut store = SafetensorsStore::from_bytes(None);
        model
            .save_into(&mut store)
            .map_err(|e| TrainError::Device(format!("safetensors export: {e:?}")))?;
        store
            .get_bytes()
            .map_err(|e| TrainError::Device(format!("safetensors export: {e:?}")))
    }
    match config {
        ModelConfig::Mlp(c) => export::<Mlp>(c, weights),
        ModelConfig::Cnn(c) => export::<Cnn>(c, weights),
        ModelConfig::Charlm(c) => export::<CharLm>(c, weights),
    }
}
