//! The checks behind the training core's fuzz targets (`idx`, `csv`, `text`, `checkpoint`,
//! `checkpoint_decode`): a dataset file or a checkpoint from raw bytes, through the code a
//! worker runs on them, and the properties what it accepts must have. None may panic on any
//! input.
//!
//! Like `lib.rs` for kiln-proto, this file is included twice: by the fuzz targets (nightly,
//! libFuzzer) and by `shared/train/tests/fuzz_corpus.rs` (stable, in CI), which replays the
//! committed corpora. So it uses only kiln-train and what kiln-train depends on (burn,
//! kiln-proto, pollster).

use std::sync::OnceLock;

use burn::optim::GradientsParams;
use burn::tensor::Device;
use kiln_proto::spec::{CsvTask, DatasetSpec, JobSpec};
use kiln_train::data::{self, DataInfo, Dataset, Inputs, MemorySource, Splits, Targets, Task};
use kiln_train::model::{Mlp, ModelConfig, TrainModel};
use kiln_train::train::{
    Checkpoint, TrainEvent, TrainRun, TrainState, build_optimizer, load_optimizer, load_weights,
    train,
};

/// The examples of `d` and what they hold, checked against each other and `info`.
fn check_dataset(d: &Dataset, info: &DataInfo) {
    let n = d.len();
    match &d.inputs {
        Inputs::Dense { values, shape } => {
            let width: usize = shape.iter().product();
            assert!(width > 0, "an example of no values: shape {shape:?}");
            assert_eq!(
                values.len(),
                n * width,
                "values for {n} examples of {shape:?}"
            );
            assert!(
                values.iter().all(|v| v.is_finite()),
                "a value that is not finite"
            );
            assert_eq!(shape, &info.input_shape, "the shape info gives");
        }
        Inputs::Tokens { values, len } => {
            assert!(*len > 0);
            assert_eq!(values.len(), n * len);
            assert!(
                values.iter().all(|&t| (t as usize) < info.outputs),
                "a token out of vocabulary"
            );
        }
    }
    match &d.targets {
        Targets::Class(c) => {
            assert_eq!(c.len(), n);
            assert!(
                c.iter().all(|&c| (c as usize) < info.outputs),
                "a class out of range"
            );
        }
        Targets::Value(v) => {
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|v| v.is_finite()));
        }
        Targets::Tokens { values, len } => {
            assert_eq!(values.len(), n * len);
            assert!(values.iter().all(|&t| (t as usize) < info.outputs));
        }
    }
    // Digests and gathers are what the loop does with every dataset.
    let _ = d.digest();
    if n > 0 {
        assert_eq!(d.gather(&[n - 1, 0]).len(), 2);
    }
}

fn check_splits(s: &Splits) {
    assert!(s.info.outputs > 0, "no outputs: {:?}", s.info);
    for d in [Some(&s.train), s.valid.as_ref(), s.test.as_ref()]
        .into_iter()
        .flatten()
    {
        check_dataset(d, &s.info);
    }
}

/// `load` must accept or refuse with an error that names the file; never panic.
fn loaded(spec: &DatasetSpec, source: &MemorySource) -> Option<Splits> {
    match data::load(spec, 7, source) {
        Ok(splits) => {
            check_splits(&splits);
            Some(splits)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// Target `idx`: an MNIST-style directory. The first two bytes (big-endian) say where the rest
/// is cut into the images and the labels file; the third, bit 0, whether the same pair is the
/// test pair too, and bit 1 whether the images file is the gzipped name.
pub fn idx(data: &[u8]) {
    let [a, b, flags, rest @ ..] = data else {
        return;
    };
    let cut = usize::from(u16::from_be_bytes([*a, *b])).min(rest.len());
    let (images, labels) = rest.split_at(cut);
    let images_name = if flags & 2 != 0 {
        "d/train-images-idx3-ubyte.gz"
    } else {
        "d/train-images-idx3-ubyte"
    };
    let mut source = MemorySource::default()
        .with(images_name, images.to_vec())
        .with("d/train-labels-idx1-ubyte", labels.to_vec());
    if flags & 1 != 0 {
        source = source
            .with("d/t10k-images-idx3-ubyte", images.to_vec())
            .with("d/t10k-labels-idx1-ubyte", labels.to_vec());
    }
    let spec = DatasetSpec::Idx {
        path: "d".to_string(),
        validation_fraction: 0.25,
        limit: None,
    };
    if let Some(splits) = loaded(&spec, &source) {
        assert_eq!(splits.info.task, Task::Classification);
        assert_eq!(splits.test.is_some(), flags & 1 != 0);
    }
}

/// Target `csv`: a CSV file whose label column is `label`; the first byte's bit 0 picks the
/// task (classification or regression).
pub fn csv(data: &[u8]) {
    let [flags, rest @ ..] = data else {
        return;
    };
    let task = if flags & 1 == 0 {
        CsvTask::Classification
    } else {
        CsvTask::Regression
    };
    let source = MemorySource::default().with("t.csv", rest.to_vec());
    let spec = DatasetSpec::Csv {
        path: "t.csv".to_string(),
        label_column: "label".to_string(),
        task,
        validation_fraction: 0.25,
    };
    if let Some(splits) = loaded(&spec, &source) {
        let info = &splits.info;
        let width = info.input_shape.iter().product::<usize>();
        assert_eq!(info.columns.len(), width, "a name per feature column");
        let st = info.standardise.as_ref().expect("CSV data is standardised");
        assert_eq!((st.mean.len(), st.std.len()), (width, width));
        assert!(st.std.iter().all(|s| *s > 0.0 && s.is_finite()), "{st:?}");
        match task {
            CsvTask::Classification => assert_eq!(info.labels.len(), info.outputs),
            CsvTask::Regression => assert_eq!(info.outputs, 1),
        }
    }
}

/// Target `text`: a text file for `charlm`, cut into windows of a context (1 to 16
/// characters, from the first byte) as a worker does.
pub fn text(data: &[u8]) {
    let [context, rest @ ..] = data else {
        return;
    };
    let context = 1 + usize::from(context % 16);
    let source = MemorySource::default().with("t.txt", rest.to_vec());
    let spec = DatasetSpec::Text {
        path: "t.txt".to_string(),
        validation_fraction: 0.25,
    };
    let Some(splits) = loaded(&spec, &source) else {
        return;
    };
    assert_eq!(
        splits.info.labels.len(),
        splits.info.outputs,
        "the vocabulary"
    );
    if let Ok(windows) = data::text_windows(splits, context, 0.25) {
        assert_eq!(windows.info.input_shape, vec![context]);
        assert!(!windows.train.is_empty());
        check_splits(&windows);
    }
}

/// The job every checkpoint input is resumed into: a small MLP on synthetic blobs, 4 steps an
/// epoch, Adam (which keeps state), a checkpoint after every step.
fn resume_spec() -> JobSpec {
    JobSpec::from_toml_str(
        r#"
name = "fuzz"
seed = 5
[model]
kind = "mlp"
hidden = [4]
[dataset]
kind = "synthetic"
examples = 32
features = 3
classes = 2
[optimizer]
kind = "adam"
lr = 0.01
[training]
batch_size = 8
epochs = 2
log_every = 1
checkpoint_every = 1
"#,
    )
    .expect("the fuzz spec is valid")
}

fn resume_data(spec: &JobSpec) -> Splits {
    data::load(&spec.dataset, spec.seed, &MemorySource::default()).expect("synthetic data")
}

/// Train `spec` (from `resume` if given) for at most `max_steps`: its checkpoints, or the error.
fn run(
    spec: &JobSpec,
    resume: Option<Checkpoint>,
    max_steps: u64,
) -> Result<Vec<Checkpoint>, String> {
    let mut checkpoints = Vec::new();
    let mut on_event = |e: TrainEvent| {
        if let TrainEvent::Checkpoint(c) = e {
            checkpoints.push(*c);
        }
    };
    let mut run = TrainRun::new(
        spec.clone(),
        resume_data(spec),
        Device::flex(),
        &mut on_event,
    );
    run.resume = resume;
    run.max_steps = Some(max_steps);
    pollster::block_on(train(run)).map_err(|e| e.to_string())?;
    Ok(checkpoints)
}

/// A real checkpoint of [`resume_spec`] after 3 steps (made once per process): what the
/// structured modes below start from.
fn valid_checkpoint() -> &'static Checkpoint {
    static VALID: OnceLock<Checkpoint> = OnceLock::new();
    VALID.get_or_init(|| {
        let mut checkpoints = run(&resume_spec(), None, 3).expect("the fuzz spec trains");
        checkpoints.pop().expect("a checkpoint after every step")
    })
}

/// `base` with bytes overwritten: `edits` is read as (u16 big-endian offset, value) triples;
/// an offset past the end truncates there instead.
fn patched(base: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_be_bytes([edit[0], edit[1]]));
        match out.get_mut(at) {
            Some(byte) => *byte = edit[2],
            None => out.truncate(usize::from(edit[2]) * out.len() / 255),
        }
    }
    out
}

/// Target `checkpoint`: a checkpoint file as a worker gets it for a resume, decoded and resumed
/// into [`resume_spec`] for at most 2 more steps. The first byte picks what the rest is:
/// 0: the whole file; 1: the loop state's numbers (u64 big-endian each: step, epoch,
/// batch_in_epoch, samples, rank, world, samples_in_epoch, schedule_world; then an f64
/// schedule_step) over a real checkpoint's; 2, 3, 4: edits (see [`patched`]) of a real
/// checkpoint's model weights, optimizer state, or whole file.
pub fn checkpoint(data: &[u8]) {
    let Some(ckpt) = decoded(data) else {
        return;
    };
    let step = ckpt.state.step;
    match run(&resume_spec(), Some(ckpt), step.saturating_add(2)) {
        // A resumed run goes on from the checkpoint's step, never back.
        Ok(checkpoints) => {
            if let Some(last) = checkpoints.last() {
                assert!(last.state.step >= step, "{} after {step}", last.state.step);
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
}

/// Target `checkpoint_decode`: the inputs of [`checkpoint`], through what a resume does before
/// its loop, then one optimizer step on a fixed batch; none of the rest of a run. A whole resume
/// runs about 50 times a second under ASAN: this target reaches 10⁶ executions.
pub fn checkpoint_decode(data: &[u8]) {
    let Some(ckpt) = decoded(data) else {
        return;
    };
    let spec = resume_spec();
    let ModelConfig::Mlp(config) = &valid_checkpoint().state.model else {
        panic!("the fuzz spec trains an MLP");
    };
    let device = Device::flex().autodiff();
    let model = match load_weights(Mlp::init(config, &device), &ckpt.model) {
        Ok(model) => model,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    let optim = build_optimizer(&spec.optimizer, spec.training.grad_clip);
    let mut optim = match load_optimizer(optim, ckpt.optimizer) {
        Ok(optim) => optim,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    // The state loaded must fit the parameters it is applied to.
    let out = model.forward_batch(fixed_batch(), &device);
    assert_eq!(out.loss.dims(), [1]);
    let grads = GradientsParams::from_grads(out.loss.backward(), &model);
    let _ = optim.step(spec.optimizer.lr, model, grads);
}

/// The first batch of [`resume_spec`]'s training data.
fn fixed_batch() -> &'static Dataset {
    static BATCH: OnceLock<Dataset> = OnceLock::new();
    BATCH.get_or_init(|| {
        resume_data(&resume_spec())
            .train
            .gather(&[0, 1, 2, 3, 4, 5, 6, 7])
    })
}

/// The checkpoint a [`checkpoint`] input makes, if it decodes; what decodes must round-trip.
fn decoded(data: &[u8]) -> Option<Checkpoint> {
    let [mode, rest @ ..] = data else {
        return None;
    };
    let bytes = match mode % 5 {
        0 => rest.to_vec(),
        1 => {
            let mut c = valid_checkpoint().clone();
            set_numbers(&mut c.state, rest);
            c.encode()
        }
        2 => {
            let mut c = valid_checkpoint().clone();
            c.model = patched(&c.model, rest);
            c.encode()
        }
        3 => {
            let mut c = valid_checkpoint().clone();
            c.optimizer = patched(&c.optimizer, rest);
            c.encode()
        }
        _ => patched(&valid_checkpoint().encode(), rest),
    };
    let ckpt = Checkpoint::decode(&bytes).ok()?;
    // What decodes encodes to a file that decodes to the same checkpoint.
    assert_eq!(
        Checkpoint::decode(&ckpt.encode()).ok().as_ref(),
        Some(&ckpt),
        "a decoded checkpoint round-trips"
    );
    Some(ckpt)
}

fn set_numbers(state: &mut TrainState, bytes: &[u8]) {
    let mut words = bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("chunks of 8")));
    let mut next = |field: &mut u64| {
        if let Some(w) = words.next() {
            *field = w;
        }
    };
    next(&mut state.step);
    next(&mut state.epoch);
    next(&mut state.batch_in_epoch);
    next(&mut state.samples);
    let (mut rank, mut world) = (state.rank as u64, state.world as u64);
    next(&mut rank);
    next(&mut world);
    (state.rank, state.world) = (rank as usize, world as usize);
    let mut in_epoch = state.samples_in_epoch.unwrap_or(0);
    next(&mut in_epoch);
    state.samples_in_epoch = Some(in_epoch);
    let mut schedule_world = state.schedule_world.unwrap_or(1) as u64;
    next(&mut schedule_world);
    state.schedule_world = Some(schedule_world as usize);
    let mut schedule_step = state.schedule_step.unwrap_or(0.0).to_bits();
    next(&mut schedule_step);
    // JSON has no NaN or infinity: a checkpoint cannot carry them.
    state.schedule_step = Some(f64::from_bits(schedule_step)).filter(|s| s.is_finite());
}
