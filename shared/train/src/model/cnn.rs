//! Convolution stack followed by dense layers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::ops::PadMode;
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
        let on_flex = x.device() == Device::flex();
        let mut pools = self.pools.iter();
        for (i, (conv, &pooled)) in self.convs.iter().zip(&self.pooled).enumerate() {
            // The first convolution reads the data, which needs no gradient: on the CPU it is
            // faster as im2col + matmul (see `im2col_conv`); Burn's own conv2d everywhere else.
            x = match im2col_padding(conv) {
                Some(padding) if i == 0 && on_flex => im2col_conv(conv, x, padding),
                _ => conv.forward(x),
            }; // [batch, c_i, h_i, w_i]
            let pool = if pooled { pools.next() } else { None };
            x = match (pool, self.activation) {
                // max(relu(x)) = relu(max(x)), values and gradients alike; a quarter of the work.
                (Some(pool), Activation::Relu) => activate(self.activation, pool.forward(x)),
                (Some(pool), _) => pool.forward(activate(self.activation, x)),
                (None, _) => activate(self.activation, x),
            };
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

/// The padding of a convolution that [`im2col_conv`] can compute (stride 1, no dilation, one
/// group, the same padding on every side), or `None`.
fn im2col_padding(conv: &Conv2d) -> Option<usize> {
    if conv.stride != [1, 1] || conv.dilation != [1, 1] || conv.groups != 1 {
        return None;
    }
    match conv.padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => Some(t),
        _ => None,
    }
}

/// `conv` as im2col and one batched matrix product, for Burn's CPU backend (`flex`).
///
/// flex's own conv2d computes the weight gradient as a convolution whose kernel is the size of
/// the feature map. Here the columns are two `unfold` views of the input (no copy) made
/// contiguous in one copy, and the arithmetic, forward and weight gradient, is one batched GEMM.
/// Same values as `conv.forward` up to float summation order; the weight keeps Burn's
/// `[out, in, kh, kw]` layout, so checkpoints move between devices unchanged. Only where
/// [`im2col_padding`] allows.
///
/// Used for the first layer only, whose input (the data) needs no gradient. At W2's shapes on
/// two cores (`shared/train/examples/conv_routes.rs`, forward + backward): the first layer
/// (1 → 32 channels) takes 4 ms instead of Burn's 17. For the second (32 → 64, with an input
/// gradient) both im2col routes lose: Burn takes 104 ms, im2col from shifted slices 180 ms
/// (copies into the columns and back out), and from `unfold` 557 ms (autodiff's unfold
/// backward adds window by window).
fn im2col_conv(conv: &Conv2d, x: Tensor<4>, padding: usize) -> Tensor<4> {
    let x = if padding > 0 {
        x.pad(
            [(padding, padding), (padding, padding)],
            PadMode::Constant(0.0),
        )
    } else {
        x
    };
    let [n, c, h, w] = x.dims();
    let [o, _, kh, kw] = conv.weight.dims();
    let (oh, ow) = (h + 1 - kh, w + 1 - kw);
    let windows: Tensor<6> = x.unfold::<5, _>(2, kh, 1).unfold(3, kw, 1); // [n, c, oh, ow, kh, kw]
    // [batch, in·kh·kw, oh·ow], rows in the weight's (in, kh, kw) order.
    let columns: Tensor<3> = windows
        .permute([0, 1, 4, 5, 2, 3])
        .reshape([n, c * kh * kw, oh * ow]);
    let weight: Tensor<3> = conv.weight.val().reshape([1, o, c * kh * kw]);
    let mut y = weight.matmul(columns); // [batch, out, oh·ow]
    if let Some(bias) = &conv.bias {
        y = y + bias.val().reshape([1, o, 1]);
    }
    y.reshape([n, o, oh, ow])
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

#[cfg(test)]
mod tests {
    use burn::tensor::Distribution;

    use super::*;

    fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    #[test]
    fn im2col_conv_matches_burns_conv_values_and_gradients() {
        let device = Device::flex().autodiff();
        // (in, out, kernel, padding, size): W2's first layer, padding, a 1×1 kernel.
        for (c_in, c_out, kernel, padding, size) in
            [(1, 8, 3, 0, 12), (3, 5, 5, 2, 9), (4, 6, 1, 0, 7)]
        {
            let conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .init(&device);
            assert_eq!(im2col_padding(&conv), Some(padding));
            let x = Tensor::<4>::random([2, c_in, size, size], Distribution::Default, &device)
                .require_grad();
            let ours = im2col_conv(&conv, x.clone(), padding);
            let burns = conv.forward(x.clone());
            assert_eq!(ours.dims(), burns.dims(), "shape, kernel {kernel}");
            assert!(max_difference(ours.clone(), burns.clone()) < 1e-5);
            // A random weighting of the outputs, so every gradient entry is exercised.
            let probe = Tensor::<4>::random(ours.dims(), Distribution::Default, &device);
            let g_ours = (ours * probe.clone()).sum().backward();
            let g_burns = (burns * probe).sum().backward();
            let grad = |t: &Tensor<4>, g| t.grad(g).expect("a gradient");
            let weight = conv.weight.val();
            assert!(max_difference(grad(&weight, &g_ours), grad(&weight, &g_burns)) < 1e-4);
            assert!(max_difference(grad(&x, &g_ours), grad(&x, &g_burns)) < 1e-4);
            let bias = conv.bias.as_ref().expect("a bias").val();
            let db = |g| bias.grad(g).expect("a bias gradient");
            assert!(max_difference(db(&g_ours), db(&g_burns)) < 1e-4);
        }
    }

    #[test]
    fn im2col_applies_only_where_it_computes_the_same_thing() {
        let device = Device::flex();
        let conv = |config: Conv2dConfig| config.init(&device);
        let plain = Conv2dConfig::new([1, 2], [3, 3]);
        assert_eq!(im2col_padding(&conv(plain.clone())), Some(0));
        assert_eq!(
            im2col_padding(&conv(plain.clone().with_stride([2, 2]))),
            None
        );
        assert_eq!(
            im2col_padding(&conv(plain.clone().with_dilation([2, 2]))),
            None
        );
        assert_eq!(
            im2col_padding(&conv(
                plain.with_padding(PaddingConfig2d::Explicit(1, 0, 1, 0))
            )),
            None
        );
    }

    #[test]
    fn pooling_before_relu_is_the_same_model() {
        // W2's shape, small: the CPU route (im2col first layer, pool before ReLU) against the
        // plain composition of Burn's modules, on the same weights.
        let device = Device::flex().autodiff();
        let cfg = CnnConfig::new(
            [1, 10, 10],
            &[
                ConvSpec {
                    channels: 4,
                    kernel: 3,
                    padding: 0,
                    pool: 1,
                },
                ConvSpec {
                    channels: 6,
                    kernel: 3,
                    padding: 1,
                    pool: 2,
                },
            ],
            &[5],
            3,
            Activation::Relu,
            0.0,
        )
        .expect("fits");
        let model = Cnn::init(&cfg, &device);
        let x = Tensor::<4>::random([3, 1, 10, 10], Distribution::Default, &device);
        let ours = model.forward(x.clone());
        let mut plain = x;
        for (conv, &pooled) in model.convs.iter().zip(&model.pooled) {
            plain = activate(Activation::Relu, conv.forward(plain));
            if pooled {
                plain = model.pools[0].forward(plain);
            }
        }
        let mut plain: Tensor<2> = plain.flatten(1, 3);
        for layer in &model.dense {
            plain = activate(Activation::Relu, layer.forward(plain));
        }
        let plain = model.output.forward(plain);
        assert!(max_difference(ours.clone(), plain.clone()) < 1e-5);
        let g_ours = ours.sum().backward();
        let g_plain = plain.sum().backward();
        for conv in &model.convs {
            let w = conv.weight.val();
            let (a, b) = (w.grad(&g_ours), w.grad(&g_plain));
            assert!(max_difference(a.expect("grad"), b.expect("grad")) < 1e-4);
        }
    }
}
