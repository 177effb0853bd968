//! The model zoo: `mlp`, `cnn` and `charlm`. Each is a Burn `Module` with a serde config that is
//! saved beside every checkpoint, so a run can be re-created from its artifacts alone.
//!
//! Models know nothing about devices beyond the `Device` they are given: the same code runs on
//! the CPU (`flex`), wgpu, CUDA and WebGPU in the browser.

mod charlm;
mod cnn;
pub mod cpu_ops;
mod mlp;

use burn::module::Module;
use burn::nn::loss::{CrossEntropyLossConfig, MseLoss, Reduction};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

pub use charlm::{CharLm, CharLmConfig};
pub use cnn::{Cnn, CnnConfig};
pub use mlp::{Mlp, MlpConfig};

use crate::data::{DataInfo, Dataset, Inputs, Targets, Task};
use kiln_proto::spec::{Activation, ModelSpec};

/// Why a model could not be built for the data.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{field}: {message}")]
    Shape { field: String, message: String },
    #[error("model {model} cannot read {what}")]
    Mismatch { model: &'static str, what: String },
}

/// A model's complete configuration: the spec's shape plus what the data decided (input shape,
/// number of outputs). Serialized next to checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelConfig {
    Mlp(MlpConfig),
    Cnn(CnnConfig),
    Charlm(CharLmConfig),
}

impl ModelConfig {
    /// Resolve a spec against the data it will train on.
    pub fn new(spec: &ModelSpec, info: &DataInfo) -> Result<Self, ModelError> {
        let regression = info.task == Task::Regression;
        Ok(match spec {
            ModelSpec::Mlp {
                hidden,
                activation,
                dropout,
            } => ModelConfig::Mlp(MlpConfig {
                input: info.input_shape.iter().product(),
                hidden: hidden.clone(),
                outputs: info.outputs,
                activation: *activation,
                dropout: *dropout,
                regression,
            }),
            ModelSpec::Cnn {
                conv,
                hidden,
                activation,
                dropout,
            } => {
                let [c, h, w] = info.input_shape[..] else {
                    return Err(ModelError::Mismatch {
                        model: "cnn",
                        what: format!(
                            "inputs of shape {:?}: it needs images [channels, height, width]",
                            info.input_shape
                        ),
                    });
                };
                ModelConfig::Cnn(CnnConfig::new(
                    [c, h, w],
                    conv,
                    hidden,
                    info.outputs,
                    *activation,
                    *dropout,
                )?)
            }
            ModelSpec::Charlm {
                context,
                d_model,
                heads,
                layers,
                d_ff,
                dropout,
            } => {
                if info.task != Task::Language {
                    return Err(ModelError::Mismatch {
                        model: "charlm",
                        what: "non-text data".to_string(),
                    });
                }
                ModelConfig::Charlm(CharLmConfig {
                    vocab: info.outputs,
                    context: *context,
                    d_model: *d_model,
                    heads: *heads,
                    layers: *layers,
                    d_ff: d_ff.unwrap_or(4 * d_model),
                    dropout: *dropout,
                })
            }
        })
    }

    /// The number of trainable values the model has, from its configuration alone (before
    /// building it: a tab checks it fits before allocating). Equals the built model's
    /// `num_params()`.
    pub fn parameters(&self) -> u64 {
        // In u64 throughout: a model too large for wasm32's usize is what this is asked about.
        let dense = |widths: &[usize]| -> u64 {
            widths
                .windows(2)
                .map(|w| w[0] as u64 * w[1] as u64 + w[1] as u64)
                .sum()
        };
        match self {
            ModelConfig::Mlp(c) => {
                let widths: Vec<usize> = std::iter::once(c.input)
                    .chain(c.hidden.iter().copied())
                    .chain(std::iter::once(c.outputs))
                    .collect();
                dense(&widths)
            }
            ModelConfig::Cnn(c) => {
                let mut channels = c.input[0];
                let mut total = 0u64;
                for conv in &c.conv {
                    let (cin, cout, k) =
                        (channels as u64, conv.channels as u64, conv.kernel as u64);
                    total += cin * cout * k * k + cout;
                    channels = conv.channels;
                }
                let widths: Vec<usize> = std::iter::once(c.flat)
                    .chain(c.hidden.iter().copied())
                    .chain(std::iter::once(c.outputs))
                    .collect();
                total + dense(&widths)
            }
            ModelConfig::Charlm(c) => {
                let d = c.d_model as u64;
                let ff = c.d_ff as u64;
                // Attention (four d × d projections with biases), the feed-forward pair, two
                // layer norms per layer.
                let layer = 4 * (d * d + d) + (d * ff + ff) + (ff * d + d) + 4 * d;
                (c.vocab as u64 + c.context as u64) * d
                    + c.layers as u64 * layer
                    + 2 * d
                    + (d * c.vocab as u64 + c.vocab as u64)
            }
        }
    }

    /// Whether the forward pass draws random numbers (dropout), so the loop reseeds per step.
    pub fn uses_rng(&self) -> bool {
        match self {
            ModelConfig::Mlp(c) => c.dropout > 0.0,
            ModelConfig::Cnn(c) => c.dropout > 0.0,
            ModelConfig::Charlm(c) => c.dropout > 0.0,
        }
    }
}

/// Loss, and for classification the number of correct predictions, of one batch.
pub struct StepOutput {
    /// Mean loss over the batch, shape `[1]`.
    pub loss: Tensor<1>,
    /// Correct predictions, shape `[1]` (classification and language models).
    pub correct: Option<Tensor<1, Int>>,
    /// Number of predictions `correct` counts (examples, or tokens for `charlm`).
    pub predictions: usize,
}

/// What the training loop needs from a model.
pub trait TrainModel: Module + 'static {
    type Config: Clone;
    fn init(config: &Self::Config, device: &Device) -> Self;
    /// Forward pass and loss on a host batch, moved to `device`.
    fn forward_batch(&self, batch: &Dataset, device: &Device) -> StepOutput;
    /// Raw outputs for host inputs, `[examples, outputs]`: class logits, the regression value,
    /// or for `charlm` the next character's logits after each window.
    fn logits(&self, inputs: &Inputs, device: &Device) -> Tensor<2>;
}

pub(crate) fn activate<const D: usize>(activation: Activation, x: Tensor<D>) -> Tensor<D> {
    use burn::tensor::activation as act;
    match activation {
        Activation::Relu => act::relu(x),
        Activation::Gelu => act::gelu(x),
        Activation::Tanh => x.tanh(),
        Activation::Sigmoid => act::sigmoid(x),
    }
}

/// `[batch, features]` float inputs of a dense batch (any per-example shape, flattened).
pub(crate) fn dense_inputs(batch: &Dataset, device: &Device) -> (Tensor<2>, Vec<usize>) {
    dense_inputs_of(&batch.inputs, device)
}

/// [`dense_inputs`] of host inputs.
pub(crate) fn dense_inputs_of(inputs: &Inputs, device: &Device) -> (Tensor<2>, Vec<usize>) {
    match inputs {
        Inputs::Dense { values, shape } => {
            let width: usize = shape.iter().product();
            let n = values.len() / width.max(1);
            (
                Tensor::from_data(TensorData::new(values.clone(), [n, width]), device),
                shape.clone(),
            )
        }
        Inputs::Tokens { values, len } => {
            let n = values.len() / len;
            let floats = values.iter().map(|&v| v as f32).collect::<Vec<_>>();
            (
                Tensor::from_data(TensorData::new(floats, [n, *len]), device),
                vec![*len],
            )
        }
    }
}

/// Classification or regression loss for `[batch, outputs]` predictions.
pub(crate) fn supervised_output(
    output: Tensor<2>,
    targets: &Targets,
    device: &Device,
) -> StepOutput {
    let [n, _] = output.dims();
    match targets {
        Targets::Class(labels) => {
            let labels: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
            let targets = Tensor::<1, Int>::from_data(TensorData::new(labels, [n]), device);
            let loss = CrossEntropyLossConfig::new()
                .init(device)
                .forward(output.clone(), targets.clone());
            let predicted = output.argmax(1).reshape([n]);
            let correct = predicted.equal(targets).int().sum();
            StepOutput {
                loss,
                correct: Some(correct),
                predictions: n,
            }
        }
        Targets::Value(values) => {
            let targets = Tensor::<2>::from_data(TensorData::new(values.clone(), [n, 1]), device);
            let loss = MseLoss::new().forward(output, targets, Reduction::Mean);
            StepOutput {
                loss,
                correct: None,
                predictions: n,
            }
        }
        Targets::Tokens { .. } => {
            unreachable!("token targets go to charlm, checked by ModelConfig::new")
        }
    }
}

#[cfg(test)]
mod tests;
