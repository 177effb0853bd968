use burn::tensor::{Device, Int, Tensor};

use super::*;
use kiln_proto::spec::ConvSpec;

fn conv(channels: usize, kernel: usize, pool: usize) -> ConvSpec {
    ConvSpec {
        channels,
        kernel,
        padding: 0,
        pool,
    }
}

#[test]
fn mlp_shapes() {
    let device = Device::flex();
    let cfg = MlpConfig {
        input: 12,
        hidden: vec![8, 4],
        outputs: 3,
        activation: Activation::Gelu,
        dropout: 0.0,
        regression: false,
    };
    let model = Mlp::init(&cfg, &device);
    assert_eq!(
        model.forward(Tensor::zeros([5, 12], &device)).dims(),
        [5, 3]
    );
    assert_eq!(model.num_params(), 12 * 8 + 8 + 8 * 4 + 4 + 4 * 3 + 3);
}

#[test]
fn cnn_w2_shape_is_expressible() {
    // W2: conv 3×3 1→32, conv 3×3 32→64, max-pool 2×2, dense 128, dense 10.
    let cfg = CnnConfig::new(
        [1, 28, 28],
        &[conv(32, 3, 1), conv(64, 3, 2)],
        &[128],
        10,
        Activation::Relu,
        0.0,
    )
    .expect("W2 fits MNIST");
    assert_eq!(cfg.flat, 64 * 12 * 12);
    let device = Device::flex();
    let model = Cnn::init(&cfg, &device);
    assert_eq!(
        model.forward(Tensor::zeros([2, 1, 28, 28], &device)).dims(),
        [2, 10]
    );
}

#[test]
fn cnn_that_shrinks_to_nothing_is_an_error_naming_the_layer() {
    let err = CnnConfig::new(
        [1, 8, 8],
        &[conv(4, 3, 2), conv(4, 3, 2)],
        &[],
        10,
        Activation::Relu,
        0.0,
    )
    .expect_err("8 → 6 → 3 → 1 → 0");
    assert!(err.to_string().starts_with("model.conv[1].pool"), "{err}");
    let err = CnnConfig::new([1, 4, 4], &[conv(4, 7, 1)], &[], 10, Activation::Relu, 0.0)
        .expect_err("kernel larger than the image");
    assert!(err.to_string().starts_with("model.conv[0].kernel"), "{err}");
}

#[test]
fn charlm_shapes() {
    let device = Device::flex();
    let cfg = CharLmConfig {
        vocab: 11,
        context: 8,
        d_model: 16,
        heads: 2,
        layers: 1,
        d_ff: 32,
        dropout: 0.0,
    };
    let model = CharLm::init(&cfg, &device);
    let tokens = Tensor::<2, Int>::zeros([3, 8], &device);
    assert_eq!(model.forward(tokens).dims(), [3, 8, 11]);
}

#[test]
fn parameters_are_known_before_the_model_is_built() {
    let device = Device::flex();
    let mlp = MlpConfig {
        input: 784,
        hidden: vec![128, 64],
        outputs: 10,
        activation: Activation::Relu,
        dropout: 0.0,
        regression: false,
    };
    let cnn = CnnConfig::new(
        [1, 28, 28],
        &[conv(32, 3, 1), conv(64, 3, 2)],
        &[128],
        10,
        Activation::Relu,
        0.0,
    )
    .expect("W2");
    let charlm = CharLmConfig {
        vocab: 37,
        context: 16,
        d_model: 24,
        heads: 2,
        layers: 2,
        d_ff: 40,
        dropout: 0.0,
    };
    let built = [
        (
            ModelConfig::Mlp(mlp.clone()),
            Mlp::init(&mlp, &device).num_params(),
        ),
        (
            ModelConfig::Cnn(cnn.clone()),
            Cnn::init(&cnn, &device).num_params(),
        ),
        (
            ModelConfig::Charlm(charlm.clone()),
            CharLm::init(&charlm, &device).num_params(),
        ),
    ];
    for (config, params) in built {
        assert_eq!(config.parameters(), params as u64, "{config:?}");
    }
    // Counted in u64: a model whose size overflows a 32-bit usize (wasm32) is still counted.
    let huge = ModelConfig::Mlp(MlpConfig {
        hidden: vec![65_536, 65_536],
        ..mlp
    });
    assert_eq!(huge.parameters(), 4_347_133_962);
}
