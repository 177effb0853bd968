//! Convolution stack followed by dense layers.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{
    ModelError, StepOutput, TrainModel, activate, cpu_ops, dense_inputs, dense_inputs_of,
    supervised_output,
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
        // On the CPU, Kiln's own convolution and pooling (`cpu_ops`); Burn's modules elsewhere.
        let on_flex = x.device() == Device::flex() && cpu_ops::takes(x.dtype());
        let mut pools = self.pools.iter();
        for (conv, &pooled) in self.convs.iter().zip(&self.pooled) {
            let pool = if pooled { pools.next() } else { None };
            let cpu_conv = match (on_flex, gemm_padding(conv), &conv.bias) {
                (true, Some(padding), Some(bias)) => Some((padding, bias)),
                _ => None,
            };
            // A ReLU with no pooling after it runs inside Kiln's convolution.
            let relu_in_conv =
                cpu_conv.is_some() && pool.is_none() && self.activation == Activation::Relu;
            x = match cpu_conv {
                Some((padding, bias)) => {
                    cpu_ops::conv2d(x, conv.weight.val(), bias.val(), padding, relu_in_conv)
                }
                None => conv.forward(x),
            }; // [batch, c_i, h_i, w_i]
            x = match (pool, self.activation) {
                (Some(pool), Activation::Relu) => match fused_window(pool) {
                    Some(window) if on_flex => cpu_ops::max_pool_relu(x, window),
                    // max(relu(x)) = relu(max(x)), values and gradients alike; a quarter of
                    // the work.
                    _ => activate(self.activation, pool.forward(x)),
                },
                (Some(pool), _) => pool.forward(activate(self.activation, x)),
                (None, _) if relu_in_conv => x,
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

/// The padding of a convolution that [`cpu_ops::conv2d`] computes (stride 1, no dilation, one
/// group, a square kernel, the same padding on every side), or `None`.
fn gemm_padding(conv: &Conv2d) -> Option<usize> {
    let [_, _, kh, kw] = conv.weight.dims();
    if conv.stride != [1, 1] || conv.dilation != [1, 1] || conv.groups != 1 || kh != kw {
        return None;
    }
    match conv.padding {
        PaddingConfig2d::Valid => Some(0),
        PaddingConfig2d::Explicit(t, l, b, r) if t == l && l == b && b == r => Some(t),
        _ => None,
    }
}

/// The window of a pooling that [`cpu_ops::max_pool_relu`] computes (square, stride = window,
/// no padding or dilation, floor), or `None`.
fn fused_window(pool: &MaxPool2d) -> Option<usize> {
    let [k, kw] = pool.kernel_size;
    let plain = pool.stride == [k, k]
        && pool.dilation == [1, 1]
        && !pool.ceil_mode
        && matches!(pool.padding, PaddingConfig2d::Valid);
    (plain && k == kw && k <= cpu_ops::MAX_POOL_WINDOW).then_some(k)
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
    use burn::tensor::Gradients;

    use super::*;

    fn max_difference<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// Burn's gradients of `x`, the weight and the bias against ours, for `Σ probe · f(x)`.
    fn assert_same_gradients(
        x: &Tensor<4>,
        params: &[Tensor<4>],
        ours: Tensor<4>,
        burns: Tensor<4>,
        what: &str,
    ) -> [Gradients; 2] {
        assert_eq!(ours.dims(), burns.dims(), "shape, {what}");
        assert!(
            max_difference(ours.clone(), burns.clone()) < 1e-5,
            "values, {what}"
        );
        // A random weighting of the outputs, so every gradient entry is exercised.
        let probe = Tensor::<4>::random(ours.dims(), Distribution::Default, &ours.device());
        let g_ours = (ours * probe.clone()).sum().backward();
        let g_burns = (burns * probe).sum().backward();
        for t in params.iter().chain([x]) {
            let (a, b) = (t.grad(&g_ours), t.grad(&g_burns));
            let (a, b) = (a.expect("our gradient"), b.expect("Burn's gradient"));
            assert!(max_difference(a, b) < 1e-4, "gradients, {what}");
        }
        [g_ours, g_burns]
    }

    #[test]
    fn cpu_conv_matches_burns_conv_values_and_gradients() {
        let device = Device::flex().autodiff();
        // (in, out, kernel, padding, size, batch): W2's layers, padding, a 1×1 kernel, a kernel
        // as large as the padded input, batches that are not a multiple of the chunk.
        for (c_in, c_out, kernel, padding, size, batch) in [
            (1, 8, 3, 0, 12, 2),
            (6, 10, 3, 0, 9, 9),
            (3, 5, 5, 2, 9, 5),
            (4, 6, 1, 0, 7, 3),
            (2, 3, 5, 1, 3, 1),
        ] {
            let what = format!("{c_in}→{c_out}, k {kernel}, pad {padding}, batch {batch}");
            let conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
                .with_padding(PaddingConfig2d::Explicit(
                    padding, padding, padding, padding,
                ))
                .init(&device);
            assert_eq!(gemm_padding(&conv), Some(padding));
            let x = Tensor::<4>::random([batch, c_in, size, size], Distribution::Default, &device)
                .require_grad();
            let (weight, bias) = (conv.weight.val(), conv.bias.as_ref().expect("a bias").val());
            for relu in [false, true] {
                let what = format!("{what}, relu {relu}");
                let ours = cpu_ops::conv2d(x.clone(), weight.clone(), bias.clone(), padding, relu);
                let mut burns = conv.forward(x.clone());
                if relu {
                    burns = activate(Activation::Relu, burns);
                }
                let [g_ours, g_burns] =
                    assert_same_gradients(&x, std::slice::from_ref(&weight), ours, burns, &what);
                let (a, b) = (bias.grad(&g_ours), bias.grad(&g_burns));
                let (a, b) = (a.expect("our bias gradient"), b.expect("Burn's"));
                assert!(max_difference(a, b) < 1e-4, "bias gradient, {what}");
            }
        }
    }

    #[test]
    fn cpu_conv_without_autodiff_and_without_an_input_gradient() {
        let conv = Conv2dConfig::new([3, 4], [3, 3]).init(&Device::flex());
        let x = Tensor::<4>::random([5, 3, 8, 8], Distribution::Default, &Device::flex());
        let bias = conv.bias.as_ref().expect("a bias").val();
        let ours = cpu_ops::conv2d(x.clone(), conv.weight.val(), bias.clone(), 0, false);
        assert!(max_difference(ours, conv.forward(x.clone())) < 1e-5);
        let ours = cpu_ops::conv2d(x.clone(), conv.weight.val(), bias, 0, true);
        let burns = activate(Activation::Relu, conv.forward(x));
        assert!(max_difference(ours, burns) < 1e-5);

        // The first layer: the data needs no gradient, the weight does.
        let device = Device::flex().autodiff();
        let conv = Conv2dConfig::new([1, 4], [3, 3]).init(&device);
        let x = Tensor::<4>::random([5, 1, 8, 8], Distribution::Default, &device);
        let bias = conv.bias.as_ref().expect("a bias").val();
        let weight = conv.weight.val();
        let ours = cpu_ops::conv2d(x.clone(), weight.clone(), bias, 0, true);
        let grads = ours.sum().backward();
        let burns = activate(Activation::Relu, conv.forward(x.clone()))
            .sum()
            .backward();
        assert!(x.grad(&grads).is_none());
        let (a, b) = (weight.grad(&grads), weight.grad(&burns));
        assert!(max_difference(a.expect("ours"), b.expect("Burn's")) < 1e-4);
    }

    #[test]
    fn cpu_pool_relu_matches_burns_pool_then_relu() {
        let device = Device::flex().autodiff();
        // (channels, height, width, window): W2's pool, odd sizes (the remainder is dropped)
        // for the 2×2 path and the general one, a window of one.
        for (c, h, w, window) in [(4, 8, 8, 2), (3, 7, 5, 2), (3, 7, 9, 3), (2, 5, 4, 1)] {
            let pool = MaxPool2dConfig::new([window, window]).init();
            assert_eq!(fused_window(&pool), Some(window));
            let x = Tensor::<4>::random([3, c, h, w], Distribution::Normal(0.0, 1.0), &device)
                .require_grad();
            let ours = cpu_ops::max_pool_relu(x.clone(), window);
            let burns = activate(Activation::Relu, pool.forward(x.clone()));
            let what = format!("{c}×{h}×{w}, window {window}");
            assert_same_gradients(&x, &[], ours, burns, &what);
        }
        let strided = MaxPool2dConfig::new([2, 2]).with_strides([1, 1]).init();
        assert_eq!(fused_window(&strided), None);
    }

    #[test]
    fn the_cpu_routes_apply_only_where_they_compute_the_same_thing() {
        let device = Device::flex();
        let conv = |config: Conv2dConfig| config.init(&device);
        let plain = Conv2dConfig::new([1, 2], [3, 3]);
        assert_eq!(gemm_padding(&conv(plain.clone())), Some(0));
        assert_eq!(gemm_padding(&conv(plain.clone().with_stride([2, 2]))), None);
        assert_eq!(
            gemm_padding(&conv(plain.clone().with_dilation([2, 2]))),
            None
        );
        assert_eq!(gemm_padding(&conv(Conv2dConfig::new([1, 2], [3, 2]))), None);
        assert_eq!(
            gemm_padding(&conv(
                plain.with_padding(PaddingConfig2d::Explicit(1, 0, 1, 0))
            )),
            None
        );
    }

    #[test]
    fn pooling_before_relu_is_the_same_model() {
        // W2's shape, small: the CPU route (`cpu_ops`' convolution and fused pool) against the
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
