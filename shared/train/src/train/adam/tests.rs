use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Bytes, Distribution, Tensor, TensorData};

use super::*;

fn bits<const D: usize>(t: &Tensor<D>) -> Vec<u32> {
    t.to_data()
        .try_into_vec::<f32>()
        .expect("f32 values")
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn random<const D: usize>(shape: [usize; D]) -> Tensor<D> {
    Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Device::flex())
}

/// Steps `burn` and `fused` side by side from the same parameter, with the same gradients and
/// changing learning rates, and compares parameter and moments bit for bit after each step.
fn assert_bit_identical<const D: usize>(shape: [usize; D], penalty: Option<f32>) {
    let burn = FusedAdam::new(0.9, 0.999, 1e-8, penalty).burn;
    let fused = FusedAdam::new(0.9, 0.999, 1e-8, penalty);
    let start = random(shape);
    let (mut p_burn, mut p_fused) = (start.clone(), start);
    let (mut s_burn, mut s_fused) = (None, None);
    for step in 0..5 {
        let grad = random(shape);
        let lr = 1e-3 * (1.0 + step as f64 / 3.0);
        (p_burn, s_burn) = burn.step(lr, p_burn, grad.clone(), s_burn);
        (p_fused, s_fused) = fused.step(lr, p_fused, grad, s_fused);
        let what = format!("{shape:?}, penalty {penalty:?}, step {step}");
        assert_eq!(bits(&p_burn), bits(&p_fused), "parameter, {what}");
        let (b, f): (&AdamState<D>, &AdamState<D>) =
            (s_burn.as_ref().unwrap(), s_fused.as_ref().unwrap());
        assert_eq!(b.momentum.time, f.momentum.time, "time, {what}");
        let (b, f) = (&b.momentum, &f.momentum);
        assert_eq!(bits(&b.moment_1), bits(&f.moment_1), "first moment, {what}");
        assert_eq!(
            bits(&b.moment_2),
            bits(&f.moment_2),
            "second moment, {what}"
        );
    }
}

#[test]
fn fused_adam_is_burns_adam_bit_for_bit() {
    for penalty in [None, Some(0.05)] {
        // Below the parallel threshold, above it (uneven last chunk), and a bias.
        assert_bit_identical([37, 19], penalty);
        assert_bit_identical([301, 250], penalty);
        assert_bit_identical([10], penalty);
    }
}

#[test]
fn a_shared_parameter_or_moment_is_not_changed_in_place() {
    let fused = FusedAdam::new(0.9, 0.999, 1e-8, None);
    let p = random([40_000]);
    let (p, state) = fused.step(1e-3, p, random([40_000]), None);
    let state = state.unwrap();
    let (kept_p, kept_m) = (p.clone(), state.momentum.moment_1.clone());
    let (before_p, before_m) = (bits(&kept_p), bits(&kept_m));
    let (next, state) = fused.step(1e-3, p, random([40_000]), Some(state));
    assert_eq!(
        bits(&kept_p),
        before_p,
        "the parameter's other holder saw the update"
    );
    assert_eq!(
        bits(&kept_m),
        before_m,
        "the moment's other holder saw the update"
    );
    assert_ne!(bits(&next), before_p, "the step changed nothing");
    assert_ne!(bits(&state.unwrap().momentum.moment_1), before_m);
}

#[test]
fn the_update_is_in_place_where_nothing_else_holds_the_tensors() {
    let flex = |v: f32| FlexTensor::from_data(TensorData::new(vec![v; 1000], [1000]));
    let (p, m, v) = (flex(1.0), flex(0.1), flex(0.2));
    let before = [p.bytes().as_ptr(), m.bytes().as_ptr(), v.bytes().as_ptr()];
    let step = FusedAdam::new(0.9, 0.999, 1e-8, None).constants(2, 1e-3);
    let (p, m, v) = Flex::adam_update(p, flex(0.5), m, v, step);
    let after = [p.bytes().as_ptr(), m.bytes().as_ptr(), v.bytes().as_ptr()];
    assert_eq!(after, before, "the update allocated new buffers");
    assert!(p.as_slice::<f32>().unwrap().iter().all(|&x| x < 1.0));
}

fn linear_grads(model: &Linear, x: &Tensor<2>) -> GradientsParams {
    let loss = model.forward(x.clone()).powi_scalar(2).mean();
    GradientsParams::from_grads(loss.backward(), model)
}

/// Burn's `Adam` and `FusedAdam` write the same optimizer record, and each loads the other's:
/// checkpoints from before this optimizer resume with it, and the other way round.
#[test]
fn optimizer_records_are_burns() {
    let device = Device::flex().autodiff();
    let x = Tensor::<2>::random([8, 300], Distribution::Default, &device);
    let start = LinearConfig::new(300, 200).init(&device);
    let mut burn = AdamConfig::new().with_epsilon(1e-8).init();
    let mut fused = ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-8, None));
    let (mut a, mut b) = (start.clone(), start);
    for _ in 0..3 {
        a = burn.step(1e-2, a.clone(), linear_grads(&a, &x));
        b = fused.step(1e-2, b.clone(), linear_grads(&b, &x));
    }
    // The same tensors under the same names (their order follows a hash map's), the same scalars.
    let contents = |optim: &ModuleOptimizer| {
        let bytes = optim.into_bytes().unwrap().to_vec();
        let reader =
            burn_pack::Reader::from_bytes(burn_pack::Bytes::from_bytes_vec(bytes)).unwrap();
        let scalars = format!("{:?}", reader.scalars());
        let mut tensors: Vec<_> = (reader.into_tensors().unwrap().into_iter())
            .map(|t| {
                let (name, _, shape, id, data) = t.into_parts().unwrap();
                (name, shape.to_vec(), id, data.to_vec())
            })
            .collect();
        tensors.sort();
        (tensors, scalars)
    };
    let (in_burn, in_fused) = (contents(&burn), contents(&fused));
    assert_eq!(in_burn.0.len(), 4, "two moments for each of two parameters");
    assert!(in_burn == in_fused, "the records differ");
    let (burn_record, fused_record) = (burn.into_bytes().unwrap(), fused.into_bytes().unwrap());
    assert_eq!(bits(&a.weight.val()), bits(&b.weight.val()));

    // Swap the records and go on: each optimizer continues where the other stopped.
    let mut burn = AdamConfig::new()
        .with_epsilon(1e-8)
        .init()
        .from_bytes(Bytes::from_bytes_vec(fused_record.to_vec()))
        .unwrap();
    let mut fused = ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-8, None))
        .from_bytes(Bytes::from_bytes_vec(burn_record.to_vec()))
        .unwrap();
    for _ in 0..2 {
        a = burn.step(1e-2, a.clone(), linear_grads(&a, &x));
        b = fused.step(1e-2, b.clone(), linear_grads(&b, &x));
    }
    assert_eq!(bits(&a.weight.val()), bits(&b.weight.val()));
    assert_eq!(bits(&a.bias.unwrap().val()), bits(&b.bias.unwrap().val()));
}
