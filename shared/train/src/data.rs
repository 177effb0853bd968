//! Datasets: IDX (MNIST, Fashion-MNIST), CSV tabular, plain text for `charlm`, synthetic blobs.
//!
//! Everything is loaded into memory as a [`Dataset`] of host buffers; the training loop gathers
//! batches from it by index. Loading reads bytes through a [`DataSource`], so the same code runs
//! natively (files) and in the browser (bytes the page fetched). Splits and shuffles are
//! deterministic functions of the job's seed.

mod csv;
mod idx;
mod synthetic;
mod text;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use kiln_proto::spec::{CsvTask, DatasetSpec, ModelSpec};

pub use idx::{IdxArray, parse_idx};
/// What a model needs to know about its data; `data.json` of a run (the contract's, so a page
/// can read it without Burn).
pub use kiln_proto::dataset::{DataInfo, Standardisation, Task};

/// Why data could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset file {path} not found (looked for: {tried})")]
    NotFound { path: String, tried: String },
    #[error("could not read {path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a valid IDX file: {message}")]
    Idx { path: String, message: String },
    #[error("{path}: {message}")]
    Csv { path: String, message: String },
    #[error("{path}: {message}")]
    Text { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Where dataset bytes come from: files natively, an in-memory map in the browser.
pub trait DataSource {
    /// The bytes at `path`, `Ok(None)` if there is nothing there.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, DataError>;
}

/// Reads files from the local file system.
#[cfg(not(target_arch = "wasm32"))]
#[derive(Debug, Default, Clone, Copy)]
pub struct FsSource;

#[cfg(not(target_arch = "wasm32"))]
impl DataSource for FsSource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, DataError> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(DataError::Io {
                path: path.to_string(),
                message: e.to_string(),
            }),
        }
    }
}

/// Files held in memory (browser, tests).
#[derive(Debug, Default, Clone)]
pub struct MemorySource {
    pub files: std::collections::HashMap<String, Vec<u8>>,
}

impl MemorySource {
    pub fn with(mut self, path: &str, bytes: Vec<u8>) -> Self {
        self.files.insert(path.to_string(), bytes);
        self
    }
}

impl DataSource for MemorySource {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, DataError> {
        Ok(self.files.get(path).cloned())
    }
}

/// Per-example inputs, stored contiguously.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    /// Float features; `shape` is one example's shape (`[784]`, `[1, 28, 28]`).
    Dense { values: Vec<f32>, shape: Vec<usize> },
    /// Token ids, `len` per example.
    Tokens { values: Vec<u32>, len: usize },
}

/// Per-example targets.
#[derive(Debug, Clone, PartialEq)]
pub enum Targets {
    /// One class index per example.
    Class(Vec<u32>),
    /// One real value per example.
    Value(Vec<f32>),
    /// Next-token ids, `len` per example.
    Tokens { values: Vec<u32>, len: usize },
}

/// A set of examples in host memory. A batch is a `Dataset` too.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub inputs: Inputs,
    pub targets: Targets,
}

impl Dataset {
    /// SHA-256 over the examples (shape, values and targets, little-endian): equal on two
    /// machines exactly when they would train on the same data.
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        let words = |h: &mut Sha256, tag: &[u8], words: &mut dyn Iterator<Item = u32>| {
            h.update(tag);
            let mut buf = Vec::with_capacity(4096);
            for w in words {
                buf.extend_from_slice(&w.to_le_bytes());
                if buf.len() >= 4096 {
                    h.update(&buf);
                    buf.clear();
                }
            }
            h.update(&buf);
        };
        match &self.inputs {
            Inputs::Dense { values, shape } => {
                words(&mut h, b"dense", &mut shape.iter().map(|&d| d as u32));
                words(&mut h, b"values", &mut values.iter().map(|v| v.to_bits()));
            }
            Inputs::Tokens { values, len } => {
                words(&mut h, b"tokens", &mut std::iter::once(*len as u32));
                words(&mut h, b"values", &mut values.iter().copied());
            }
        }
        match &self.targets {
            Targets::Class(v) => words(&mut h, b"class", &mut v.iter().copied()),
            Targets::Value(v) => words(&mut h, b"value", &mut v.iter().map(|x| x.to_bits())),
            Targets::Tokens { values, len } => {
                words(&mut h, b"next", &mut std::iter::once(*len as u32));
                words(&mut h, b"values", &mut values.iter().copied());
            }
        }
        h.finalize().into()
    }

    pub fn len(&self) -> usize {
        match &self.targets {
            Targets::Class(v) => v.len(),
            Targets::Value(v) => v.len(),
            Targets::Tokens { values, len } => values.len() / len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The examples at `indices`, in that order.
    pub fn gather(&self, indices: &[usize]) -> Dataset {
        fn rows<T: Copy>(values: &[T], width: usize, indices: &[usize]) -> Vec<T> {
            let mut out = Vec::with_capacity(indices.len() * width);
            for &i in indices {
                out.extend_from_slice(&values[i * width..(i + 1) * width]);
            }
            out
        }
        let inputs = match &self.inputs {
            Inputs::Dense { values, shape } => Inputs::Dense {
                values: rows(values, shape.iter().product(), indices),
                shape: shape.clone(),
            },
            Inputs::Tokens { values, len } => Inputs::Tokens {
                values: rows(values, *len, indices),
                len: *len,
            },
        };
        let targets = match &self.targets {
            Targets::Class(v) => Targets::Class(rows(v, 1, indices)),
            Targets::Value(v) => Targets::Value(rows(v, 1, indices)),
            Targets::Tokens { values, len } => Targets::Tokens {
                values: rows(values, *len, indices),
                len: *len,
            },
        };
        Dataset { inputs, targets }
    }

    fn take(&self, range: std::ops::Range<usize>) -> Dataset {
        self.gather(&range.collect::<Vec<_>>())
    }
}

/// Train, validation and (if the dataset has one) test splits.
#[derive(Debug, Clone)]
pub struct Splits {
    pub train: Dataset,
    pub valid: Option<Dataset>,
    pub test: Option<Dataset>,
    pub info: DataInfo,
}

/// Salt so the split permutation differs from the epoch permutations.
const SPLIT_SALT: u64 = 0x5EED_5917;

/// Load the dataset a spec names, split it, all determined by `seed`.
pub fn load(spec: &DatasetSpec, seed: u64, source: &dyn DataSource) -> Result<Splits, DataError> {
    let (all, test, info, contiguous) = match spec {
        DatasetSpec::Idx { path, limit, .. } => {
            let (mut train, test) = idx::load_dir(source, path)?;
            if let Some(limit) = limit {
                train = train.take(0..(*limit).min(train.len()));
            }
            let info = DataInfo {
                input_shape: match &train.inputs {
                    Inputs::Dense { shape, .. } => shape.clone(),
                    Inputs::Tokens { len, .. } => vec![*len],
                },
                outputs: 10.max(idx::max_class(&train) + 1),
                task: Task::Classification,
                labels: vec![],
                columns: vec![],
                standardise: None,
            };
            (train, test, info, false)
        }
        DatasetSpec::Csv {
            path,
            label_column,
            task,
            ..
        } => {
            let (data, info) = csv::load(source, path, label_column, *task)?;
            (data, None, info, false)
        }
        DatasetSpec::Text { path, .. } => {
            // Token windows are cut later, once the model's context length is known: here the
            // whole text is one "example" of tokens.
            let (data, info) = text::load(source, path)?;
            (data, None, info, true)
        }
        DatasetSpec::Synthetic {
            examples,
            features,
            classes,
            ..
        } => {
            let data = synthetic::blobs(*examples, *features, *classes, seed);
            let info = DataInfo {
                input_shape: vec![*features],
                outputs: *classes,
                task: Task::Classification,
                labels: vec![],
                columns: vec![],
                standardise: None,
            };
            (data, None, info, false)
        }
    };
    let fraction = spec.validation_fraction();
    if contiguous {
        return Ok(Splits {
            train: all,
            valid: None,
            test,
            info,
        });
    }
    let n = all.len();
    let n_valid = ((n as f64) * fraction).round() as usize;
    if n_valid == 0 {
        return Ok(Splits {
            train: all,
            valid: None,
            test,
            info,
        });
    }
    if n_valid >= n {
        return Err(DataError::Invalid(format!(
            "dataset.validation_fraction = {fraction} leaves no training examples out of {n}"
        )));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ SPLIT_SALT));
    let valid = all.gather(&order[..n_valid]);
    let mut rest = order[n_valid..].to_vec();
    rest.sort_unstable();
    let train = all.gather(&rest);
    Ok(Splits {
        train,
        valid: Some(valid),
        test,
        info,
    })
}

/// Load the dataset a spec names already shaped for its model: [`load`], then, for `charlm`,
/// the text cut into `context + 1` windows ([`text_windows`]), so the training split's length is
/// the number of examples the loop will see.
pub fn load_for_model(
    dataset: &DatasetSpec,
    model: &ModelSpec,
    seed: u64,
    source: &dyn DataSource,
) -> Result<Splits, DataError> {
    let splits = load(dataset, seed, source)?;
    match model {
        ModelSpec::Charlm { context, .. } => {
            text_windows(splits, *context, dataset.validation_fraction())
        }
        _ => Ok(splits),
    }
}

/// Cut a text loaded by [`load`] into windows of `context + 1` characters: inputs are the first
/// `context`, targets the next character at every position. The last `fraction` of the text is
/// held out for validation.
pub fn text_windows(splits: Splits, context: usize, fraction: f64) -> Result<Splits, DataError> {
    let Inputs::Tokens { values, .. } = &splits.train.inputs else {
        return Ok(splits);
    };
    text::windows(values, context, fraction).map(|(train, valid)| Splits {
        train,
        valid,
        test: None,
        info: DataInfo {
            input_shape: vec![context],
            ..splits.info
        },
    })
}

/// The order in which epoch `epoch` visits the training examples.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mix = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(mix));
    order
}

/// Steps left in an epoch of `n` examples once `consumed` of its order are taken, when each
/// of `world` replicas takes up to `batch` a step (see [`replica_batch`]).
pub fn steps_left_in_epoch(n: usize, consumed: usize, batch: usize, world: usize) -> usize {
    (n.saturating_sub(consumed) / world.max(1)).div_ceil(batch.max(1))
}

/// The examples replica `rank` of `world` trains on in the next step of an epoch, and how many
/// of the epoch's `order` that step consumes on all replicas together.
///
/// The sharding rule: every replica computes the epoch's order from the shared seed; a step
/// takes the next `batch × world` examples of it, and rank `r` takes every `world`-th of them
/// starting at the `r`-th (strided). The last step of the epoch takes all that is left, so
/// the shards of one epoch partition it, their sizes differ by at most one, and every replica
/// takes the same number of steps ([`steps_left_in_epoch`]: a later collective never waits
/// for a replica that ran out). A last batch is short or one longer than `batch`. Only a tail
/// shorter than `world` (after a resume at a larger world) has nothing for some rank: it is
/// skipped. What the steps consumed is always a prefix of the order, so a count of examples
/// consumed says where the epoch stands for any world size. With `world` 1 this is plain
/// batches in order, the last one short.
pub fn replica_batch(
    order: &[usize],
    consumed: usize,
    batch: usize,
    rank: usize,
    world: usize,
) -> (Vec<usize>, usize) {
    let world = world.max(1);
    let consumed = consumed.min(order.len());
    let rest = order.len() - consumed;
    let taken = match steps_left_in_epoch(order.len(), consumed, batch, world) {
        0 => 0,
        1 => rest,
        _ => batch * world,
    };
    let indices = order[consumed..consumed + taken]
        .iter()
        .skip(rank)
        .step_by(world)
        .copied()
        .collect();
    (indices, taken)
}

/// Resolve an IDX / CSV spec task for display.
pub fn task_of(spec: &DatasetSpec) -> Task {
    match spec {
        DatasetSpec::Csv {
            task: CsvTask::Regression,
            ..
        } => Task::Regression,
        DatasetSpec::Text { .. } => Task::Language,
        _ => Task::Classification,
    }
}

#[cfg(test)]
mod tests;
