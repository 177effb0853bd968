//! Convolution stack followed by dense layers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    ModelError, StepOutput, TrainModel, activate, dense_inputs, dense_inputs_of, supervised_output,
};
use crate::data::{Dataset, Inputs};
use kiln_proto::spec::{Activation, ConvSpec};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CnnConfig {
    /// `[channels, height, width]` of one image.
    pub input: [usize; 3],
    pub conv: Vec<ConvSpec>,
    pub hidden: Vec<usize>,
    pub outputs: usize,
    pub activation: Activation,
    pub dropout: f64,
    /// Width of the flattened feature map entering the dense layers (derived).
    pub flat: usize,
}

impl CnnConfig {
    /// Check that every convolution and pool leaves a non-empty feature map.
    pub fn new(
        input: [usize; 3],
        conv: &[ConvSpec],
        hidden: &[usize],
        outputs: usize,
        activation: Activation,
        dropout: f64,
    ) -> Result<Self, ModelError> {
        let [mut channels, mut h, mut w] = input;
        for (i, c) in conv.iter().enumerate() {
            let grow = 2 * c.padding + 1;
            if h + grow <= c.kernel || w + grow <= c.kernel {
                return Err(ModelError::Shape {
                    field: format!("model.conv[{i}].kernel"),
                    message: format!(
                        "a {k}×{k} kernel does not fit the {h}×{w} feature map",
                        k = c.kernel
                    ),
                });
            }
            h = h + grow - c.kernel;
            w = w + grow - c.kernel;
            if h / c.pool == 0 || w / c.pool == 0 {
                return Err(ModelError::Shape {
                    field: format!("model.conv[{i}].pool"),
                    message: format!(
                        "pooling {p}×{p} empties the {h}×{w} feature map",
                        p = c.pool
                    ),
                });
            }
            h /= c.pool;
            w /= c.pool;
            channels = c.channels;
        }
        Ok(CnnConfig {
            input,
            conv: conv.to_vec(),
            hidden: hidden.to_vec(),
            outputs,
            activation,
            dropout,
            flat: channels * h * w,
        })
    }
}

/// `[conv → activation → pool?]* → flatten → [dense → activation → dropout]* → dense`.
#[derive(Module, Debug)]
pub struct Cnn {
    convs: Vec<Conv2d>,
    pools: Vec<MaxPool2d>,
    dense: Vec<Linear>,
    output: Linear,
    dropout: Dropout,
    #[module(skip)]
    pooled: Vec<bool>,
    #[module(skip)]
    input: [usize; 3],
    #[module(skip)]
    activation: Activation,
}

impl Cnn {
    /// # Shapes
    /// - input: `[batch, channels, height, width]`
    /// - output: `[batch, outputs]`
    pub fn forward(&self, mut x: Tensor<4>) -> Tensor<2> {
        let mut pools = self.pools.iter();
        for (conv, &pooled) in self.convs.iter().zip(&self.pooled) {
            x = activate(self.activation, conv.forward(x)); // [batch, c_i, h_i, w_i]
            if pooled && let Some(pool) = pools.next() {
                x = pool.forward(x);
            }
        }
        let mut x: Tensor<2> = x.flatten(1, 3); // [batch, flat]
        for layer in &self.dense {
            x = self
                .dropout
                .forward(activate(self.activation, layer.forward(x)));
        }
        self.output.forward(x)
    }
}

impl TrainModel for Cnn {
    type Config = CnnConfig;

    fn init(c: &CnnConfig, device: &Device) -> Self {
        let mut channels = c.input[0];
        let mut convs = Vec::new();
        let mut pools = Vec::new();
        for spec in &c.conv {
            let p = spec.padding;
            convs.push(
                Conv2dConfig::new([channels, spec.channels], [spec.kernel, spec.kernel])
                    .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
                    .init(device),
            );
            if spec.pool > 1 {
                pools.push(MaxPool2dConfig::new([spec.pool, spec.pool]).init());
            }
            channels = spec.channels;
        }
        let mut width = c.flat;
        let dense = c
            .hidden
            .iter()
            .map(|&h| {
                let layer = LinearConfig::new(width, h).init(device);
                width = h;
                layer
            })
            .collect();
        Cnn {
            convs,
            pools,
            dense,
            output: LinearConfig::new(width, c.outputs).init(device),
            dropout: DropoutConfig::new(c.dropout).init(),
            pooled: c.conv.iter().map(|s| s.pool > 1).collect(),
            input: c.input,
            activation: c.activation,
        }
    }

    fn logits(&self, inputs: &Inputs, device: &Device) -> Tensor<2> {
        let (x, _) = dense_inputs_of(inputs, device);
        let [n, _] = x.dims();
        let [c, h, w] = self.input;
        self.forward(x.reshape([n, c, h, w]))
    }

    fn forward_batch(&self, batch: &Dataset, device: &Device) -> StepOutput {
        let (x, _) = dense_inputs(batch, device);
        let [n, _] = x.dims();
        let [c, h, w] = self.input;
        supervised_output(
            self.forward(x.reshape([n, c, h, w])),
            &batch.targets,
            device,
        )
    }
}
