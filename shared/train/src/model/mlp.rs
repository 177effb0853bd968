//! Multi-layer perceptron.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{StepOutput, TrainModel, activate, dense_inputs, dense_inputs_of, supervised_output};
use crate::data::{Dataset, Inputs};
use kiln_proto::spec::Activation;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    /// Flattened input width (784 for MNIST).
    pub input: usize,
    pub hidden: Vec<usize>,
    /// Classes, or 1 for regression.
    pub outputs: usize,
    pub activation: Activation,
    pub dropout: f64,
    pub regression: bool,
}

/// `input → hidden[0] → … → outputs`, activation and dropout after every hidden layer.
#[derive(Module, Debug)]
pub struct Mlp {
    hidden: Vec<Linear>,
    output: Linear,
    dropout: Dropout,
    #[module(skip)]
    activation: Activation,
}

impl Mlp {
    /// # Shapes
    /// - input: `[batch, input]`
    /// - output: `[batch, outputs]`
    pub fn forward(&self, mut x: Tensor<2>) -> Tensor<2> {
        for layer in &self.hidden {
            x = self
                .dropout
                .forward(activate(self.activation, layer.forward(x)));
        }
        self.output.forward(x)
    }
}

impl TrainModel for Mlp {
    type Config = MlpConfig;

    fn init(c: &MlpConfig, device: &Device) -> Self {
        let mut width = c.input;
        let hidden = c
            .hidden
            .iter()
            .map(|&h| {
                let layer = LinearConfig::new(width, h).init(device);
                width = h;
                layer
            })
            .collect();
        Mlp {
            hidden,
            output: LinearConfig::new(width, c.outputs).init(device),
            dropout: DropoutConfig::new(c.dropout).init(),
            activation: c.activation,
        }
    }

    fn forward_batch(&self, batch: &Dataset, device: &Device) -> StepOutput {
        let (x, _) = dense_inputs(batch, device);
        supervised_output(self.forward(x), &batch.targets, device)
    }

    fn logits(&self, inputs: &Inputs, device: &Device) -> Tensor<2> {
        self.forward(dense_inputs_of(inputs, device).0)
    }
}
