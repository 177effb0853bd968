//! Adam with one fused pass per parameter on the CPU backend.
//!
//! Burn's `Adam` updates a parameter in about fourteen tensor operations (six scalar products,
//! a square, a root, a division, sums), each a pass over the tensor into a new buffer: on
//! `flex` that was ≈ 28% of a W1 step (BENCHMARKS.md, "Fourth round"). [`FusedAdam`] computes
//! the same update in one pass per parameter, in place where the tensors are not shared, split
//! across the rayon pool for large tensors. Every element's arithmetic is Burn's, operation for
//! operation and in the same order (Rust does not contract to fused multiply-adds), so the
//! results are bit-identical to Burn's `Adam` (a test), whatever the thread count.
//!
//! The optimizer state is Burn's own `AdamState`: checkpoints written by either load into the
//! other. Other devices, the first step (no moments yet) and anything but `f32` take Burn's
//! `Adam` itself.

use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{DType, Device, Tensor};
use burn_flex::FlexTensor;

use crate::model::cpu_ops::{owned, plain, values, values_mut};
#[cfg(not(target_arch = "wasm32"))]
use rayon::prelude::*;

/// Elements per parallel task: below two of these (2 MB of parameters) a tensor is updated on
/// the calling thread. Waking the pool's threads costs more than it saves on smaller tensors: at
/// 16 Ki elements per task W1's step was 25% slower than on one thread (BENCHMARKS.md).
#[cfg(not(target_arch = "wasm32"))]
const TASK: usize = 1 << 18;

/// The per-step constants of one Adam update, as Burn's `Adam` computes them in `f32`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    pub beta_1: f32,
    pub beta_2: f32,
    /// `sqrt(1 − β₂ᵗ) / (1 − β₁ᵗ)`.
    pub factor: f32,
    /// `ε · sqrt(1 − β₂ᵗ)`.
    pub epsilon: f32,
    pub lr: f32,
    /// L2 penalty added to the gradient (`weight_decay`), if any.
    pub penalty: Option<f32>,
}

/// The fused update as a Burn backend extension (the CPU backend only).
#[backend_extension(Flex)]
pub trait AdamOps: Backend {
    /// One Adam step of `param` with `grad`: the new parameter and moments.
    fn adam_update(
        param: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        moment_1: FloatTensor<Self>,
        moment_2: FloatTensor<Self>,
        step: AdamStep,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

impl AdamOps for Flex {
    fn adam_update(
        param: FlexTensor,
        grad: FlexTensor,
        moment_1: FlexTensor,
        moment_2: FlexTensor,
        step: AdamStep,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (mut param, mut moment_1, mut moment_2) =
            (owned(param), owned(moment_1), owned(moment_2));
        let grad = plain(grad);
        update(
            values_mut(&mut param),
            values_mut(&mut moment_1),
            values_mut(&mut moment_2),
            values(&grad),
            &step,
        );
        (param, moment_1, moment_2)
    }
}

/// The update over slices of equal length, in parallel chunks where the tensor is large.
fn update(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamStep) {
    #[cfg(not(target_arch = "wasm32"))]
    if p.len() >= 2 * TASK {
        p.par_chunks_mut(TASK)
            .zip(m.par_chunks_mut(TASK))
            .zip(v.par_chunks_mut(TASK))
            .zip(g.par_chunks(TASK))
            .for_each(|(((p, m), v), g)| update_serial(p, m, v, g, s));
        return;
    }
    update_serial(p, m, v, g, s);
}

/// [`update_portable`] compiled for the widest vectors the CPU has. Each lane's arithmetic is
/// the same IEEE operation at any width, so the result does not depend on which runs.
fn update_serial(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamStep) {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F, checked just above.
            #[allow(unsafe_code)]
            return unsafe { update_avx512(p, m, v, g, s) };
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            #[allow(unsafe_code)]
            return unsafe { update_avx2(p, m, v, g, s) };
        }
    }
    update_portable(p, m, v, g, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn update_avx512(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamStep) {
    update_portable(p, m, v, g, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn update_avx2(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamStep) {
    update_portable(p, m, v, g, s)
}

/// Burn's `Adam::step` for one element, operation by operation:
/// `g ← p·λ + g` (with a penalty), `m ← m·β₁ + g·(1 − β₁)`, `v ← v·β₂ + (g·g)·(1 − β₂)`,
/// `p ← p − ((m·factor) / (√v + ε')) · lr`.
#[inline(always)]
fn update_portable(p: &mut [f32], m: &mut [f32], v: &mut [f32], g: &[f32], s: &AdamStep) {
    let (b1, b2, f1, f2) = (s.beta_1, s.beta_2, 1.0 - s.beta_1, 1.0 - s.beta_2);
    let (factor, eps, lr) = (s.factor, s.epsilon, s.lr);
    let each = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
        *m = *m * b1 + g * f1;
        *v = *v * b2 + (g * g) * f2;
        *p -= ((*m * factor) / (v.sqrt() + eps)) * lr;
    };
    let items = p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g);
    match s.penalty {
        None => items.for_each(|(((p, m), v), &g)| each(p, m, v, g)),
        Some(penalty) => items.for_each(|(((p, m), v), &g)| {
            let g = *p * penalty + g;
            each(p, m, v, g)
        }),
    }
}

/// Adam (Burn's state, Burn's arithmetic) with the update fused on the CPU backend.
#[derive(Clone)]
pub struct FusedAdam {
    burn: Adam,
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    penalty: Option<f32>,
}

impl FusedAdam {
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, penalty: Option<f32>) -> Self {
        let burn = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(penalty.map(WeightDecayConfig::new))
            .build();
        Self {
            burn,
            beta_1,
            beta_2,
            epsilon,
            penalty,
        }
    }

    /// The constants of the update that takes the moments to step `time`, as Burn computes them.
    fn constants(&self, time: usize, lr: LearningRate) -> AdamStep {
        let t = time as i32;
        let correction = (1.0 - self.beta_2.powi(t)).sqrt();
        AdamStep {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            factor: correction / (1.0 - self.beta_1.powi(t)),
            epsilon: self.epsilon * correction,
            lr: lr as f32,
            penalty: self.penalty,
        }
    }
}

/// Whether the fused update takes these tensors: `f32` on the CPU backend, moments without
/// AMSGrad's maximum (Kiln never turns it on).
fn fuses<const D: usize>(tensor: &Tensor<D>, grad: &Tensor<D>, state: &AdamState<D>) -> bool {
    let m = &state.momentum;
    tensor.device() == Device::flex()
        && m.max_moment_2.is_none()
        && [tensor, grad, &m.moment_1, &m.moment_2]
            .iter()
            .all(|t| t.dtype() == DType::F32 && t.shape() == tensor.shape())
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let state = match state {
            Some(state) if fuses(&tensor, &grad, &state) => state,
            other => return self.burn.step(lr, tensor, grad, other),
        };
        let time = state.momentum.time + 1;
        let (param, moment_1, moment_2) = <Dispatch as AdamOps>::adam_update(
            tensor.into_dispatch(),
            grad.into_dispatch(),
            state.momentum.moment_1.into_dispatch(),
            state.momentum.moment_2.into_dispatch(),
            self.constants(time, lr),
        );
        let momentum = AdaptiveMomentumState::new(
            time,
            Tensor::from_dispatch(moment_1),
            Tensor::from_dispatch(moment_2),
        );
        (Tensor::from_dispatch(param), Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Adam::to_device(state, device)
    }
}

#[cfg(test)]
mod tests;
