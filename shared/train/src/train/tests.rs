use std::sync::{Arc, Barrier, Mutex};

use burn::tensor::Device;

use super::*;
use crate::data::{FsSource, MemorySource, load};
use kiln_proto::protocol::LrChange;
use kiln_proto::spec::JobSpec;

fn spec(extra_training: &str, model: &str) -> JobSpec {
    let text = format!(
        r#"
name = "unit"
seed = 3
[model]
{model}
[dataset]
kind = "synthetic"
examples = 256
features = 8
classes = 3
validation_fraction = 0.25
[optimizer]
kind = "adam"
lr = 0.01
[training]
batch_size = 16
log_every = 1
{extra_training}
"#
    );
    JobSpec::from_toml_str(&text).expect("test spec is valid")
}

use crate::serial;

const MLP: &str = "kind = \"mlp\"\nhidden = [16]";

struct Recorded {
    summary: TrainSummary,
    metrics: Vec<Metric>,
    checkpoints: Vec<Checkpoint>,
}

fn run_with(
    spec: &JobSpec,
    resume: Option<Checkpoint>,
    max_steps: Option<u64>,
    cancel_after: Option<u64>,
) -> Recorded {
    run_as(spec, resume, max_steps, cancel_after, Replica::default())
}

/// [`run_with`] as one replica of several (without a hook: it trains its shard alone).
fn run_as(
    spec: &JobSpec,
    resume: Option<Checkpoint>,
    max_steps: Option<u64>,
    cancel_after: Option<u64>,
    replica: Replica,
) -> Recorded {
    let _serial = serial();
    // Synthetic data reads no files; the committed MNIST subset is read from the repository.
    let data = load(&spec.dataset, spec.seed, &FsSource).expect("the test data");
    let mut metrics = Vec::new();
    let mut checkpoints = Vec::new();
    let cancel = CancelToken::default();
    let cancel2 = cancel.clone();
    let mut on_event = |e: TrainEvent| match e {
        TrainEvent::Metric(m) => {
            if m.split == Split::Train && cancel_after.is_some_and(|n| m.step >= n) {
                cancel2.cancel();
            }
            metrics.push(m)
        }
        TrainEvent::Checkpoint(c) => checkpoints.push(*c),
        TrainEvent::Started { .. }
        | TrainEvent::RankRates { .. }
        | TrainEvent::Note(_)
        | TrainEvent::Controlled { .. } => {}
    };
    let mut run = TrainRun::new(spec.clone(), data, Device::flex(), &mut on_event);
    run.resume = resume;
    run.max_steps = max_steps;
    run.cancel = cancel;
    run.replica = replica;
    let summary = pollster::block_on(train(run)).expect("training runs");
    Recorded {
        summary,
        metrics,
        checkpoints,
    }
}

/// Every parameter value of a run's final model, in parameter order.
fn param_values(summary: &TrainSummary) -> Vec<f32> {
    use burn::module::{ModuleVisitor, Param};
    use burn::tensor::Tensor;
    struct Values(Vec<f32>);
    impl ModuleVisitor for Values {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.extend(
                param
                    .val()
                    .into_data()
                    .try_to_vec::<f32>()
                    .expect("f32 weights"),
            );
        }
    }
    let weights = summary.weights.as_ref().expect("final weights");
    let mut values = Values(Vec::new());
    match &summary.model {
        ModelConfig::Mlp(config) => load_weights(Mlp::init(config, &Device::flex()), weights)
            .expect("weights load")
            .visit(&mut values),
        ModelConfig::Cnn(config) => load_weights(Cnn::init(config, &Device::flex()), weights)
            .expect("weights load")
            .visit(&mut values),
        other => panic!("an MLP or a CNN expected, not {other:?}"),
    }
    assert!(!values.0.is_empty());
    values.0
}

/// The checkpoint `run` stored at `step`.
fn checkpoint_at(run: &Recorded, step: u64) -> Checkpoint {
    run.checkpoints
        .iter()
        .find(|c| c.state.step == step)
        .unwrap_or_else(|| panic!("a checkpoint at step {step}"))
        .clone()
}

fn train_losses(metrics: &[Metric]) -> Vec<(u64, f64)> {
    metrics
        .iter()
        .filter(|m| m.split == Split::Train)
        .map(|m| (m.step, m.loss))
        .collect()
}

#[test]
fn mlp_learns_blobs() {
    let r = run_with(&spec("epochs = 3", MLP), None, None, None);
    let losses = train_losses(&r.metrics);
    assert_eq!(r.summary.outcome, Outcome::Completed);
    assert_eq!(
        r.summary.steps,
        3 * 12,
        "192 training examples / 16 = 12 steps per epoch"
    );
    let first = losses[0].1;
    let last = losses.last().expect("losses").1;
    assert!(last < first * 0.5, "loss fell from {first} to {last}");
    let val = r.summary.last_val.expect("validation metric");
    assert!(val.accuracy.expect("accuracy") > 0.8, "{val:?}");
}

/// 10 steps with a checkpoint at 7, resumed from it up to 20, against 20 steps uninterrupted:
/// the same losses from step 8 on and the same final weights, bit for bit. Returns the
/// uninterrupted run's training losses.
fn assert_resume_is_bit_exact(s: &JobSpec, what: &str) -> Vec<(u64, f64)> {
    let full = run_with(s, None, Some(20), None);
    let first = run_with(s, None, Some(10), None);
    let ckpt = checkpoint_at(&first, 7);
    // Through the byte format, as it would travel.
    let ckpt = Checkpoint::decode(&ckpt.encode()).expect("round trip");
    let resumed = run_with(s, Some(ckpt), Some(20), None);
    let full_losses = train_losses(&full.metrics);
    let resumed_losses = train_losses(&resumed.metrics);
    assert_eq!(resumed_losses.first().map(|l| l.0), Some(8));
    assert_eq!(&full_losses[7..], &resumed_losses[..], "model: {what}");
    // Parameter ids are random per process, so compare the values, not the bytes.
    assert_eq!(
        param_values(&full.summary),
        param_values(&resumed.summary),
        "final weights, model: {what}"
    );
    full_losses
}

/// N steps, checkpoint, resume, N more steps == 2N steps uninterrupted, bit for bit, also with
/// dropout and across an epoch boundary (12 steps per epoch).
#[test]
fn resume_is_bit_exact() {
    for model in [MLP, "kind = \"mlp\"\nhidden = [16, 16]\ndropout = 0.3"] {
        assert_resume_is_bit_exact(&spec("epochs = 4\ncheckpoint_every = 7", model), model);
    }
}

#[test]
fn cnn_resume_is_bit_exact_on_the_cpu() {
    // W2's layers, smaller, on the committed MNIST subset: Kiln's own convolution and fused
    // pooling (`model::cpu_ops`) with their hand-written backward passes, dropout too.
    let text = format!(
        r#"
name = "unit-cnn"
seed = 5
[model]
kind = "cnn"
conv = [{{ channels = 4, kernel = 3 }}, {{ channels = 6, kernel = 3, padding = 1, pool = 2 }}]
hidden = [16]
dropout = 0.2
[dataset]
kind = "idx"
path = "{}/../../data/mnist"
limit = 240
validation_fraction = 0.0
[optimizer]
kind = "adam"
lr = 0.005
[training]
batch_size = 16
epochs = 2
log_every = 1
checkpoint_every = 7
"#,
        env!("CARGO_MANIFEST_DIR")
    );
    let s = JobSpec::from_toml_str(&text).expect("test spec is valid");
    let losses = assert_resume_is_bit_exact(&s, "cnn");
    // It learned: the loss fell.
    let (first_loss, last_loss) = (losses[0].1, losses[losses.len() - 1].1);
    assert!(last_loss < first_loss, "loss {first_loss} → {last_loss}");
}

/// Resume `s` from `ckpt` up to `max_steps`: the run's notes and metrics.
fn resume_with_notes(s: &JobSpec, ckpt: Checkpoint, max_steps: u64) -> (Vec<String>, Vec<Metric>) {
    let _serial = serial();
    let data = load(&s.dataset, s.seed, &MemorySource::default()).expect("synthetic data");
    let mut notes = Vec::new();
    let mut metrics = Vec::new();
    let mut on_event = |e: TrainEvent| match e {
        TrainEvent::Note(n) => notes.push(n),
        TrainEvent::Metric(m) => metrics.push(m),
        _ => {}
    };
    let mut run = TrainRun::new(s.clone(), data, Device::flex(), &mut on_event);
    run.resume = Some(ckpt);
    run.max_steps = Some(max_steps);
    pollster::block_on(train(run)).expect("resumes");
    (notes, metrics)
}

/// A checkpoint without optimizer state (what a WebGPU tab writes: Burn cannot read the state
/// there) resumes with a fresh optimizer: at its step, from its weights, without a loss spike,
/// and the run's log says so.
#[test]
fn a_checkpoint_without_optimizer_state_resumes_with_a_fresh_optimizer() {
    let s = spec("epochs = 4\ncheckpoint_every = 7", MLP);
    let first = run_with(&s, None, Some(10), None);
    let mut ckpt = checkpoint_at(&first, 7);
    ckpt.optimizer.clear();
    let ckpt = Checkpoint::decode(&ckpt.encode()).expect("an empty section round-trips");
    let (notes, metrics) = resume_with_notes(&s, ckpt, 20);
    let losses = train_losses(&metrics);
    assert_eq!(losses.first().map(|l| l.0), Some(8), "goes on at its step");
    let before = train_losses(&first.metrics)
        .iter()
        .find(|l| l.0 == 7)
        .map(|l| l.1)
        .expect("loss at step 7");
    assert!(
        losses[0].1 < before * 2.0,
        "loss jumped: {before} → {}",
        losses[0].1
    );
    assert!(
        notes.iter().any(|n| n.contains("no optimizer state")),
        "{notes:?}"
    );
}

/// A fork may train on with another optimizer: the checkpoint's Adam state does not fit SGD,
/// so the optimizer starts afresh from the weights (and says so) instead of failing.
#[test]
fn a_resume_with_another_optimizer_kind_starts_it_afresh() {
    let s = spec("epochs = 4\ncheckpoint_every = 7", MLP);
    assert_eq!(s.optimizer.kind, kiln_proto::spec::OptimizerKind::Adam);
    let first = run_with(&s, None, Some(10), None);
    let ckpt = checkpoint_at(&first, 7);
    let mut sgd = s.clone();
    sgd.optimizer.kind = kiln_proto::spec::OptimizerKind::Sgd;
    sgd.optimizer.momentum = 0.9;
    let (notes, metrics) = resume_with_notes(&sgd, ckpt, 12);
    assert_eq!(train_losses(&metrics).first().map(|l| l.0), Some(8));
    assert!(
        notes
            .iter()
            .any(|n| n.contains("written by adam and this run uses sgd")),
        "{notes:?}"
    );
}

/// A checkpoint says how much of the epoch all ranks consumed, so a run resumed at another
/// world size goes on from there: 192 examples, batch 16, 2 epochs; at world 2 a step takes
/// 32 examples, at world 1 16. Either way the run ends after exactly 2 × 192 examples.
#[test]
fn a_checkpoint_resumes_at_another_world_size_where_the_epoch_stands() {
    let s = spec("epochs = 2\ncheckpoint_every = 4", MLP);
    let two = |rank| Replica { rank, world: 2 };
    for (from, to, resumed_steps) in [
        // 4 steps × 32 = 128 consumed; 64 left = 4 steps at world 1, then 12.
        (two(0), Replica::default(), 4 + 12),
        // 4 steps × 16 = 64 consumed; 128 left = 4 steps of 2 × 16 at world 2, then 6.
        (Replica::default(), two(1), 4 + 6),
    ] {
        let first = run_as(&s, None, Some(4), None, from);
        let ckpt = first
            .checkpoints
            .iter()
            .find(|c| c.state.step == 4)
            .expect("checkpoint at step 4");
        let per_step = 16 * from.world as u64;
        assert_eq!(ckpt.state.samples_in_epoch, Some(4 * per_step), "{from:?}");
        assert_eq!((ckpt.state.epoch, ckpt.state.world), (0, from.world));
        let ckpt = Checkpoint::decode(&ckpt.encode()).expect("round trip");
        let resumed = run_as(&s, Some(ckpt), None, None, to);
        assert_eq!(
            resumed.summary.steps,
            4 + resumed_steps,
            "{from:?} → {to:?}"
        );
        assert_eq!(resumed.summary.samples, 2 * 192, "{from:?} → {to:?}");
        let first_resumed = train_losses(&resumed.metrics)[0].0;
        assert_eq!(first_resumed, 5);
        let last = resumed.checkpoints.last().expect("final checkpoint");
        assert_eq!(
            (last.state.epoch, last.state.samples_in_epoch),
            (1, Some(192)),
            "{from:?} → {to:?}"
        );
    }
}

/// A format-1 checkpoint (no `samples_in_epoch`) still loads and resumes exactly as its
/// format-2 twin: the position is derived from the steps taken in the epoch.
#[test]
fn a_format_1_checkpoint_resumes_like_format_2() {
    let s = spec("epochs = 2\ncheckpoint_every = 5", MLP);
    let first = run_with(&s, None, Some(5), None);
    let ckpt = first.checkpoints[0].clone();
    assert_eq!(ckpt.state.samples_in_epoch, Some(5 * 16));
    let mut old = ckpt.clone();
    old.state.samples_in_epoch = None;
    let mut bytes = old.encode();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let old = Checkpoint::decode(&bytes).expect("format 1 loads");
    assert_eq!(old.state.samples_in_epoch, None);
    assert_eq!(old.state.samples_in_epoch(192), 5 * 16);
    let from_new = run_with(&s, Some(ckpt), Some(15), None);
    let from_old = run_with(&s, Some(old), Some(15), None);
    assert_eq!(
        train_losses(&from_new.metrics),
        train_losses(&from_old.metrics)
    );
    assert_eq!(
        param_values(&from_new.summary),
        param_values(&from_old.summary)
    );
}

/// Replicas draw their dropout masks from seed + rank; rank 0's are the run alone's.
#[test]
fn dropout_is_seeded_per_rank() {
    let s = spec("epochs = 1", "kind = \"mlp\"\nhidden = [16]\ndropout = 0.3");
    assert_eq!(step_seed(s.seed, 2), step_seed(s.seed.wrapping_add(0), 2));
    assert_ne!(step_seed(s.seed, 2), step_seed(s.seed.wrapping_add(1), 2));
}

#[test]
fn too_few_examples_for_the_world_is_an_error() {
    let s = spec("", MLP);
    let data = load(&s.dataset, s.seed, &MemorySource::default()).expect("data");
    let _serial = serial();
    for replica in [
        Replica { rank: 2, world: 2 },
        Replica {
            rank: 0,
            world: 1000,
        },
    ] {
        let mut sink = |_e: TrainEvent| {};
        let mut run = TrainRun::new(s.clone(), data.clone(), Device::flex(), &mut sink);
        run.replica = replica;
        let err = pollster::block_on(train(run)).unwrap_err();
        assert!(matches!(err, TrainError::Shard { .. }), "{err:?}");
        assert!(!err.is_retryable());
    }
}

#[test]
fn cancel_stops_between_steps_and_leaves_a_checkpoint() {
    let s = spec("epochs = 50\ncheckpoint_every = 1000", MLP);
    let r = run_with(&s, None, None, Some(5));
    assert_eq!(r.summary.outcome, Outcome::Cancelled);
    assert_eq!(r.summary.steps, 5);
    let last = r.checkpoints.last().expect("a final checkpoint on cancel");
    assert_eq!(last.state.step, 5);
}

#[test]
fn checkpoint_decode_rejects_garbage() {
    let r = run_with(&spec("checkpoint_every = 5", MLP), None, Some(5), None);
    let bytes = r.checkpoints[0].encode();
    assert!(matches!(
        Checkpoint::decode(b"nope"),
        Err(CheckpointError::Magic)
    ));
    let mut wrong_version = bytes.clone();
    wrong_version[8] = 9;
    assert!(matches!(
        Checkpoint::decode(&wrong_version),
        Err(CheckpointError::Version { found: 9 })
    ));
    let err = Checkpoint::decode(&bytes[..bytes.len() - 3]).unwrap_err();
    assert!(
        matches!(
            err,
            CheckpointError::Truncated {
                section: "optimizer",
                ..
            }
        ),
        "{err}"
    );
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        Checkpoint::decode(&trailing),
        Err(CheckpointError::Trailing(1))
    ));
    // Counts no run reaches (the loop's arithmetic on them overflowed: found by fuzzing).
    let mut huge = r.checkpoints[0].clone();
    huge.state.step = u64::MAX;
    let err = Checkpoint::decode(&huge.encode()).unwrap_err();
    assert!(
        matches!(&err, CheckpointError::State(why) if why.contains("`step` is 18446744073709551615")),
        "{err}"
    );
    let mut huge = r.checkpoints[0].clone();
    huge.state.epoch = 1 << 60;
    assert!(matches!(
        Checkpoint::decode(&huge.encode()),
        Err(CheckpointError::State(why)) if why.contains("`epoch`")
    ));
}

#[test]
fn checkpoint_state_floats_round_trip_exactly() {
    // Without serde_json's `float_roundtrip`, this schedule position came back 1 ULP off
    // (…744e-10): found by fuzzing. A resume must continue from exactly where the run was.
    let r = run_with(&spec("checkpoint_every = 5", MLP), None, Some(5), None);
    for at in [
        -6.984922831104743e-10,
        0.1,
        1.0 / 3.0,
        12345.678901234567,
        f64::MIN_POSITIVE,
    ] {
        let mut ckpt = r.checkpoints[0].clone();
        ckpt.state.schedule_step = Some(at);
        let back = Checkpoint::decode(&ckpt.encode()).expect("decodes");
        assert_eq!(
            back.state.schedule_step.map(f64::to_bits),
            Some(at.to_bits()),
            "{at:e} came back as {:e}",
            back.state.schedule_step.unwrap_or(f64::NAN)
        );
    }
}

#[test]
fn optimizer_state_of_another_rank_is_refused_not_a_panic() {
    // Burn 0.22 builds a parameter's optimizer state at the rank its `{id}.__rank` scalar gives
    // and panics when the state's tensors have another, or on a rank over 8: found by fuzzing
    // (`train_checkpoint_decode`, one byte of the optimizer section changed).
    let s = spec("checkpoint_every = 5", MLP);
    let r = run_with(&s, None, Some(5), None);
    let optimizer = &r.checkpoints[0].optimizer;
    let fresh = || build_optimizer(&s.optimizer, s.training.grad_clip);
    assert!(load_optimizer(fresh(), optimizer.clone()).is_ok());
    for (rank, why) in [(4u64, "has rank"), (9, "is 9, more than 8")] {
        let reader =
            burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(optimizer.clone()))
                .expect("a burnpack");
        let (scalars, metadata) = (reader.scalars().clone(), reader.metadata().clone());
        let mut writer = burn_pack::Writer::new(reader.into_tensors().expect("its tensors"));
        let mut changed = false;
        for (key, value) in &scalars {
            let value = if key.ends_with(".__rank") && !changed {
                changed = true;
                burn_pack::Scalar::from(rank)
            } else {
                *value
            };
            writer = writer.with_scalar(key, value);
        }
        assert!(changed, "the record has rank scalars: {scalars:?}");
        for (key, value) in &metadata {
            writer = writer.with_metadata(key, value);
        }
        let edited = writer.into_bytes().expect("writes").to_vec();
        let Err(err) = load_optimizer(fresh(), edited) else {
            panic!("an optimizer record with a rank {rank} scalar was loaded");
        };
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn resume_with_another_model_is_refused() {
    let r = run_with(&spec("checkpoint_every = 5", MLP), None, Some(5), None);
    let other = spec("", "kind = \"mlp\"\nhidden = [8]");
    let data = load(&other.dataset, other.seed, &MemorySource::default()).expect("data");
    let mut sink = |_e: TrainEvent| {};
    let mut run = TrainRun::new(other, data, Device::flex(), &mut sink);
    run.resume = Some(r.checkpoints[0].clone());
    let err = pollster::block_on(train(run)).unwrap_err();
    assert!(
        err.to_string().contains("model configuration differs"),
        "{err}"
    );
}

/// In-process all-reduce over threads: every replica contributes its gradient, all get the mean.
struct ThreadAllReduce {
    world: usize,
    barrier: Arc<Barrier>,
    sum: Arc<Mutex<Vec<f32>>>,
    weights: Arc<Mutex<Option<Vec<u8>>>>,
    rank: usize,
    calls: usize,
}

impl ThreadAllReduce {
    fn mean(&mut self, grads: &mut [f32]) {
        self.calls += 1;
        {
            let mut sum = self.sum.lock().expect("lock");
            if sum.is_empty() {
                sum.resize(grads.len(), 0.0);
            }
            for (s, g) in sum.iter_mut().zip(grads.iter()) {
                *s += *g;
            }
        }
        self.barrier.wait(); // everyone added
        {
            let sum = self.sum.lock().expect("lock");
            for (g, s) in grads.iter_mut().zip(sum.iter()) {
                *g = *s / self.world as f32;
            }
        }
        if self.barrier.wait().is_leader() {
            self.sum.lock().expect("lock").clear();
        }
        self.barrier.wait(); // cleared before the next step adds
    }
}

/// The hook's futures block on a thread barrier: fine here, where every replica has its own
/// thread and executor (a real collective awaits its peers instead).
impl GradientHook for ThreadAllReduce {
    fn sync_weights(&mut self, replica: Replica, weights: Vec<u8>) -> HookFuture<'_, Vec<u8>> {
        Box::pin(async move {
            assert_eq!(
                replica,
                Replica {
                    rank: self.rank,
                    world: self.world
                }
            );
            if replica.rank == 0 {
                *self.weights.lock().expect("lock") = Some(weights);
            }
            self.barrier.wait();
            let w = self
                .weights
                .lock()
                .expect("lock")
                .clone()
                .expect("rank 0 wrote");
            Ok(w)
        })
    }

    fn on_gradients<'a>(
        &'a mut self,
        replica: Replica,
        _step: u64,
        grads: &'a mut [f32],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            assert_eq!(
                replica,
                Replica {
                    rank: self.rank,
                    world: self.world
                }
            );
            self.mean(grads);
            Ok(())
        })
    }
}

#[test]
fn gradient_hook_keeps_two_replicas_identical() {
    let _serial = serial();
    let world = 2;
    let barrier = Arc::new(Barrier::new(world));
    let sum = Arc::new(Mutex::new(Vec::new()));
    let weights = Arc::new(Mutex::new(None));
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let mut hook = ThreadAllReduce {
                world,
                barrier: barrier.clone(),
                sum: sum.clone(),
                weights: weights.clone(),
                rank,
                calls: 0,
            };
            // Different seeds, so without the weight sync the replicas would start apart.
            let mut s = spec("epochs = 2", MLP);
            s.seed = 3 + rank as u64;
            std::thread::spawn(move || {
                let data = load(&s.dataset, 3, &MemorySource::default()).expect("data");
                let mut losses = Vec::new();
                let mut on_event = |e: TrainEvent| {
                    if let TrainEvent::Metric(m) = e {
                        losses.push(m)
                    }
                };
                let mut run = TrainRun::new(s, data, Device::flex(), &mut on_event);
                run.hook = Some(&mut hook);
                run.replica = Replica { rank, world };
                let summary = pollster::block_on(train(run)).expect("replica trains");
                (summary, hook.calls, losses)
            })
        })
        .collect();
    let results: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("replica thread"))
        .collect();
    let (a, calls_a, losses_a) = &results[0];
    let (b, calls_b, losses_b) = &results[1];
    // 192 examples / (16 × 2) = 6 steps per epoch.
    assert_eq!((a.steps, b.steps), (12, 12));
    assert_eq!((*calls_a, *calls_b), (12, 12), "the hook ran on every step");
    assert!(a.weights.is_some());
    assert_eq!(
        a.weights, b.weights,
        "replicas must end with identical weights"
    );
    // They saw different shards, so their local losses differ: the hook did the syncing.
    assert_ne!(train_losses(losses_a), train_losses(losses_b));
}

/// Whether another attempt can help is decided where the error is born: what depends only on
/// the job (data, spec, shapes, divergence, memory) is final; the device and the network are not.
#[test]
fn errors_say_whether_a_retry_can_help() {
    let cases: Vec<(TrainError, bool)> = vec![
        (
            TrainError::Data(data::DataError::Csv {
                path: "t.csv".into(),
                message: "line 3: bad".into(),
            }),
            false,
        ),
        (
            TrainError::Model(ModelError::Shape {
                field: "model.conv[0].kernel".into(),
                message: "too large".into(),
            }),
            false,
        ),
        (TrainError::EmptyTrain, false),
        (TrainError::Diverged(f64::NAN, 37), false),
        (TrainError::Resume("weights do not fit".into()), false),
        (
            TrainError::device(
                "reading the loss",
                "An out-of-memory error happened during launch\nCaused by:\n  buffer",
            ),
            false,
        ),
        (
            TrainError::device(
                "optimizer state",
                "out of device memory allocating 1024 bytes",
            ),
            false,
        ),
        (
            TrainError::device("reading the loss", "The device is poisoned"),
            true,
        ),
        (TrainError::Hook(HookError("peer 2 went away".into())), true),
    ];
    for (error, retryable) in cases {
        assert_eq!(error.is_retryable(), retryable, "{error:?}");
    }
    let oom = TrainError::device(
        "reading the loss",
        "out of device memory allocating 8 bytes",
    );
    assert!(matches!(oom, TrainError::OutOfMemory(_)), "{oom:?}");
    assert!(oom.to_string().contains("training.batch_size"), "{oom}");
}

/// A loss that overflows fails the run with `Diverged` (final: not retried), naming the step.
#[test]
fn a_loss_that_is_not_finite_fails_the_run_as_diverged() {
    // Regression targets of 1e20: the squared error overflows f32 at the first step.
    let csv = "x,y\n1,1e20\n2,-1e20\n3,1e20\n4,-1e20\n5,1e20\n6,-1e20\n7,1e20\n8,-1e20\n";
    let spec = JobSpec::from_toml_str(
        r#"
name = "diverges"
[model]
kind = "mlp"
hidden = [4]
[dataset]
kind = "csv"
path = "d.csv"
label_column = "y"
task = "regression"
validation_fraction = 0.25
[training]
batch_size = 2
log_every = 1
max_steps = 3
"#,
    )
    .expect("test spec is valid");
    let source = MemorySource::default().with("d.csv", csv.as_bytes().to_vec());
    let data = load(&spec.dataset, spec.seed, &source).expect("csv loads");
    let _serial = serial();
    let mut sink = |_e: TrainEvent| {};
    let run = TrainRun::new(spec, data, Device::flex(), &mut sink);
    let err = pollster::block_on(train(run)).expect_err("the loss overflows");
    assert!(matches!(err, TrainError::Diverged(_, 1)), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("at step 1"), "{err}");
}

#[test]
fn weights_read_asynchronously_are_the_same_burnpack() {
    // The browser's path (one async read, rebuilt on the CPU) must give the bytes the
    // synchronous record gives: they load into the same model either way.
    let s = spec("max_steps = 1", "kind = \"mlp\"\nhidden = [16, 4]");
    let _serial = serial();
    let data = load(&s.dataset, s.seed, &MemorySource::default()).expect("synthetic data");
    let Ok(ModelConfig::Mlp(config)) = ModelConfig::new(&s.model, &data.info) else {
        panic!("an mlp config");
    };
    // As in the loop: an autodiff device, whose parameters require gradients.
    let device = Device::flex().autodiff();
    let model = Mlp::init(&config, &device);
    let sync = weights_of(&model).expect("sync weights");
    let async_ = pollster::block_on(weights_async(&model)).expect("async weights");
    assert_eq!(sync, async_);
}

#[test]
fn between_steps_is_awaited_after_every_step_and_a_final_checkpoint_can_be_asked_for() {
    let s = spec("max_steps = 5", MLP);
    let _serial = serial();
    let data = load(&s.dataset, s.seed, &MemorySource::default()).expect("synthetic data");
    let mut checkpoints = Vec::new();
    let mut on_event = |e: TrainEvent| {
        if let TrainEvent::Checkpoint(c) = e {
            checkpoints.push(c.state.step);
        }
    };
    let calls = std::rc::Rc::new(std::cell::Cell::new(0));
    let counter = calls.clone();
    let mut pause = move || -> BetweenSteps {
        counter.set(counter.get() + 1);
        Box::pin(async {})
    };
    let mut run = TrainRun::new(s.clone(), data, Device::flex(), &mut on_event);
    run.between_steps = Some(&mut pause);
    run.final_checkpoint = true;
    let summary = pollster::block_on(train(run)).expect("trains");
    assert_eq!(summary.steps, 5);
    assert_eq!(calls.get(), 5);
    assert_eq!(checkpoints, vec![5], "one checkpoint, at the end");
}

/// A run with live control; `on_metric(step, control)` may request actions. Records the
/// `Controlled` events too.
fn run_controlled(
    spec: &JobSpec,
    resume: Option<Checkpoint>,
    control: LiveControl,
    mut on_metric: impl FnMut(u64, &LiveControl),
) -> (Recorded, Vec<(u64, ControlAction)>) {
    let _serial = serial();
    // Synthetic data reads no files; the committed MNIST subset is read from the repository.
    let data = load(&spec.dataset, spec.seed, &FsSource).expect("the test data");
    let mut metrics = Vec::new();
    let mut checkpoints = Vec::new();
    let mut controlled = Vec::new();
    let handle = control.clone();
    let mut on_event = |e: TrainEvent| match e {
        TrainEvent::Metric(m) => {
            if m.split == Split::Train {
                on_metric(m.step, &handle);
            }
            metrics.push(m)
        }
        TrainEvent::Checkpoint(c) => checkpoints.push(*c),
        TrainEvent::Controlled { step, control } => {
            if control == ControlAction::Pause {
                // Resumed from another thread while the loop waits (a real wake-up, as when
                // the worker's socket task resumes it).
                let handle = handle.clone();
                std::thread::spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    handle.request(ControlAction::Resume);
                });
            }
            controlled.push((step, control))
        }
        _ => {}
    };
    let mut run = TrainRun::new(spec.clone(), data, Device::flex(), &mut on_event);
    run.resume = resume;
    run.control = Some(control);
    let summary = pollster::block_on(train(run)).expect("training runs");
    (
        Recorded {
            summary,
            metrics,
            checkpoints,
        },
        controlled,
    )
}

/// Pause holds the loop between two steps; resume goes on as if there had been no pause.
#[test]
fn a_paused_and_resumed_run_takes_the_same_steps_as_an_uninterrupted_one() {
    let s = spec(
        "epochs = 2",
        "kind = \"mlp\"\nhidden = [16, 16]\ndropout = 0.3",
    );
    let full = run_with(&s, None, None, None);
    let (paused, controlled) = run_controlled(&s, None, LiveControl::default(), |step, c| {
        if step == 5 || step == 13 {
            c.request(ControlAction::Pause);
        }
    });
    assert_eq!(
        controlled,
        vec![
            (5, ControlAction::Pause),
            (5, ControlAction::Resume),
            (13, ControlAction::Pause),
            (13, ControlAction::Resume)
        ]
    );
    assert_eq!(train_losses(&full.metrics), train_losses(&paused.metrics));
    assert_eq!(param_values(&full.summary), param_values(&paused.summary));
}

/// A paused run still stops on a cancel (the cancel interrupts its wait).
#[test]
fn a_paused_run_can_be_cancelled() {
    let s = spec("epochs = 2", MLP);
    let control = LiveControl::new(Vec::new(), vec![ControlAction::Pause]);
    let _serial = serial();
    let data = load(&s.dataset, s.seed, &MemorySource::default()).expect("synthetic data");
    let cancel = CancelToken::default();
    let (c2, k2) = (control.clone(), cancel.clone());
    let mut seen = Vec::new();
    let mut on_event = |e: TrainEvent| {
        if let TrainEvent::Controlled { step, control } = e {
            seen.push((step, control));
            let (c2, k2) = (c2.clone(), k2.clone());
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                k2.cancel();
                c2.interrupt();
            });
        }
    };
    let mut run = TrainRun::new(s.clone(), data, Device::flex(), &mut on_event);
    run.control = Some(control);
    run.cancel = cancel;
    let summary = pollster::block_on(train(run)).expect("training runs");
    assert_eq!(
        seen,
        vec![(0, ControlAction::Pause)],
        "paused before the first step"
    );
    assert_eq!((summary.outcome, summary.steps), (Outcome::Cancelled, 0));
}

/// A learning rate set live trains the steps after its step; an attempt that resumes from an
/// earlier checkpoint makes the same change at the same step and ends bit-identical.
#[test]
fn a_live_learning_rate_applies_after_its_step_and_replays_on_resume() {
    let s = spec("epochs = 2\ncheckpoint_every = 6", MLP);
    let (live, controlled) = run_controlled(&s, None, LiveControl::default(), |step, c| {
        if step == 9 {
            c.request(ControlAction::SetLr { lr: 0.002 });
        }
    });
    assert_eq!(controlled, vec![(9, ControlAction::SetLr { lr: 0.002 })]);
    for m in live.metrics.iter().filter(|m| m.split == Split::Train) {
        let want = if m.step <= 9 { 0.01 } else { 0.002 };
        assert_eq!(m.lr, Some(want), "lr at step {}", m.step);
    }
    let ckpt = checkpoint_at(&live, 6);
    let replay = LiveControl::new(vec![LrChange { step: 9, lr: 0.002 }], Vec::new());
    let (resumed, none) = run_controlled(&s, Some(ckpt), replay, |_, _| {});
    assert!(
        none.is_empty(),
        "a replayed change is no new event: {none:?}"
    );
    assert_eq!(
        &train_losses(&live.metrics)[6..],
        &train_losses(&resumed.metrics)[..]
    );
    assert_eq!(param_values(&live.summary), param_values(&resumed.summary));
}

/// Checkpoint now: a checkpoint of the step it was asked at, also where the spec asks for none.
#[test]
fn a_checkpoint_can_be_asked_for_between_steps() {
    let s = spec("epochs = 1", MLP);
    let (r, controlled) = run_controlled(&s, None, LiveControl::default(), |step, c| {
        if step == 4 {
            c.request(ControlAction::Checkpoint);
        }
    });
    assert_eq!(controlled, vec![(4, ControlAction::Checkpoint)]);
    let steps: Vec<u64> = r.checkpoints.iter().map(|c| c.state.step).collect();
    assert_eq!(steps, vec![4]);
    // It resumes like any other checkpoint.
    let resumed = run_with(&s, r.checkpoints.into_iter().next(), None, None);
    assert_eq!(
        &train_losses(&r.metrics)[4..],
        &train_losses(&resumed.metrics)[..]
    );
}
