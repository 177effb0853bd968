//! Time W2's layers on the CPU backend, op by op, forward and backward, through Burn's modules
//! and through the alternatives Kiln could use instead. Medians of REPS runs, in milliseconds.
//!   scripts/build && /var/tmp/kiln-target/release/examples/conv_routes
//! (scripts/build, not `cargo run -p kiln-train`: that resolves Burn's features differently and
//! compiles it again.)
//! RAYON_NUM_THREADS=1 for the one-thread figures.

use std::time::Instant;

use burn::tensor::activation::relu;
use burn::tensor::module::{conv2d, max_pool2d};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Tensor};
use kiln_train::model::cpu_ops;

const REPS: usize = 15;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(device: &Device, mut f: impl FnMut()) -> f64 {
    f();
    let _ = device.sync();
    median(
        (0..REPS)
            .map(|_| {
                let t = Instant::now();
                f();
                let _ = device.sync();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    )
}

fn burn_conv(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    conv2d(x, w, Some(b), ConvOptions::new([1, 1], [0, 0], [1, 1], 1))
}

/// im2col from kh·kw shifted slices, then one batched matmul.
fn slice_conv(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [n, c, h, wd] = x.dims();
    let [o, _, kh, kw] = w.dims();
    let (oh, ow) = (h - kh + 1, wd - kw + 1);
    let mut cols = Vec::with_capacity(kh * kw);
    for i in 0..kh {
        for j in 0..kw {
            cols.push(x.clone().slice([0..n, 0..c, i..i + oh, j..j + ow]));
        }
    }
    let col: Tensor<3> = Tensor::stack::<5>(cols, 2).reshape([n, c * kh * kw, oh * ow]);
    let wm: Tensor<3> = w.reshape([1, o, c * kh * kw]);
    (wm.matmul(col) + b.reshape([1, o, 1])).reshape([n, o, oh, ow])
}

/// im2col from two zero-copy `unfold` views, one permuting copy, then one batched matmul.
fn unfold_conv(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    let [n, c, h, wd] = x.dims();
    let [o, _, kh, kw] = w.dims();
    let (oh, ow) = (h - kh + 1, wd - kw + 1);
    let windows: Tensor<6> = x.unfold::<5, _>(2, kh, 1).unfold(3, kw, 1); // [n, c, oh, ow, kh, kw]
    let col: Tensor<3> = windows
        .permute([0, 1, 4, 5, 2, 3])
        .reshape([n, c * kh * kw, oh * ow]);
    let wm: Tensor<3> = w.reshape([1, o, c * kh * kw]);
    (wm.matmul(col) + b.reshape([1, o, 1])).reshape([n, o, oh, ow])
}

/// Kiln's convolution for the CPU (`model::cpu_ops`): per image, im2col + one GEMM, with a
/// hand-written backward.
fn kiln_conv(x: Tensor<4>, w: Tensor<4>, b: Tensor<1>) -> Tensor<4> {
    cpu_ops::conv2d(x, w, b, 0, false)
}

fn burn_pool(x: Tensor<4>) -> Tensor<4> {
    relu(max_pool2d(x, MaxPoolOptions::new([2, 2])))
}

fn reshape_pool(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let x: Tensor<6> = x.reshape([n, c, h / 2, 2, w / 2, 2]);
    relu(x.max_dim(5).max_dim(3).reshape([n, c, h / 2, w / 2]))
}

/// Kiln's fused max-pool + ReLU for the CPU.
fn kiln_pool(x: Tensor<4>) -> Tensor<4> {
    cpu_ops::max_pool_relu(x, 2)
}

fn main() {
    kiln_train::device::keep_freed_memory(); // as the `kiln` binary does
    let plain = Device::flex();
    let ad = Device::flex().autodiff();
    println!("op                         forward_ms  fwd+bwd_ms");
    // (name, batch, c_in, c_out, size, input needs a gradient)
    for (name, n, c, o, s, x_grad) in [
        ("conv1 1→32 28²", 64, 1, 32, 28, false),
        ("conv2 32→64 26²", 64, 32, 64, 26, true),
    ] {
        type Route = fn(Tensor<4>, Tensor<4>, Tensor<1>) -> Tensor<4>;
        for (route, f) in [
            ("burn", burn_conv as Route),
            ("slices+mm", slice_conv),
            ("unfold+mm", unfold_conv),
            ("kiln", kiln_conv),
        ] {
            let mk = |d: &Device| {
                (
                    Tensor::<4>::random([n, c, s, s], Distribution::Default, d),
                    Tensor::<4>::random([o, c, 3, 3], Distribution::Default, d),
                    Tensor::<1>::random([o], Distribution::Default, d),
                )
            };
            let (x, w, b) = mk(&plain);
            let fwd = time(&plain, || {
                let _ = f(x.clone(), w.clone(), b.clone());
            });
            let (x, w, b) = mk(&ad);
            let both = time(&ad, || {
                let x = if x_grad {
                    x.clone().require_grad()
                } else {
                    x.clone()
                };
                let y = f(x, w.clone().require_grad(), b.clone().require_grad());
                let _ = y.sum().backward();
            });
            println!("{name:<16} {route:<10} {fwd:>9.2} {both:>11.2}");
        }
    }
    for (route, f) in [
        ("burn", burn_pool as fn(Tensor<4>) -> Tensor<4>),
        ("reshape+max_dim", reshape_pool),
        ("kiln", kiln_pool),
    ] {
        // Half the inputs negative, as before a ReLU.
        let x = Tensor::<4>::random([64, 64, 24, 24], Distribution::Normal(0.0, 1.0), &plain);
        let fwd = time(&plain, || {
            let _ = f(x.clone());
        });
        let x = Tensor::<4>::random([64, 64, 24, 24], Distribution::Normal(0.0, 1.0), &ad);
        let both = time(&ad, || {
            let _ = f(x.clone().require_grad()).sum().backward();
        });
        println!("pool+relu 2×2 64×24² {route:<15} {fwd:>6.2} {both:>11.2}");
    }
    // Check the routes agree.
    let x = Tensor::<4>::random([4, 32, 26, 26], Distribution::Default, &plain);
    let w = Tensor::<4>::random([64, 32, 3, 3], Distribution::Default, &plain);
    let b = Tensor::<1>::random([64], Distribution::Default, &plain);
    let differ = |a: Tensor<4>, b: Tensor<4>| (a - b).abs().max().into_scalar::<f32>();
    let slices = differ(
        burn_conv(x.clone(), w.clone(), b.clone()),
        slice_conv(x.clone(), w.clone(), b.clone()),
    );
    let kiln = differ(
        burn_conv(x.clone(), w.clone(), b.clone()),
        kiln_conv(x, w, b),
    );
    let y = Tensor::<4>::random([4, 64, 24, 24], Distribution::Normal(0.0, 1.0), &plain);
    let pools = differ(burn_pool(y.clone()), reshape_pool(y.clone()));
    let kiln_pools = differ(burn_pool(y.clone()), kiln_pool(y));
    println!(
        "max |burn - slices| = {slices:e}, |burn - kiln| = {kiln:e}; pools differ by {pools:e} \
         and {kiln_pools:e}"
    );
}
