//! Convolution and max-pooling for Burn's CPU backend (`flex`), with hand-written backward
//! passes, registered through Burn's backend-extension mechanism.
//!
//! Burn's flex computes a convolution's weight gradient as a second convolution whose kernel is
//! the whole feature map, and its input gradient as a transposed convolution; at W2's shapes that
//! was ≈ 100 of ≈ 140 ms a training step (BENCHMARKS.md, "Where W2's time went"). Here, per image
//! of the batch:
//!
//! - forward: `y = W · cols + b`, with `cols` the image's im2col matrix `[c·k², oh·ow]` and the
//!   weight read as `[o, c·k²]` (Burn's `[o, c, k, k]` layout, so checkpoints do not change);
//! - weight gradient: `dW += dy · colsᵀ`, the columns rebuilt from the input rather than kept
//!   (42 MB for W2's second layer);
//! - input gradient: `dx = col2im(Wᵀ · dy)`.
//!
//! Each product is one single-threaded `gemm` call on one image; images run in parallel on the
//! rayon pool Burn's flex already uses. The weight gradient is summed per fixed chunk of
//! [`CHUNK`] images and then over chunks in order, so the result does not depend on the number
//! of threads or on scheduling: `resume_is_bit_exact` holds.
//!
//! Max-pooling (window = stride, as `MaxPool2dConfig::new` makes it) is fused with the ReLU
//! that follows it; the forward keeps one byte per output: the window position of the maximum,
//! or [`DEAD`] where the ReLU cut it, so the backward is one scatter.
//!
//! Values equal Burn's up to float summation order; `cnn::tests` compare both, gradients too.

use std::cell::RefCell;
use std::fmt;
use std::mem::MaybeUninit;
use std::sync::Arc;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::FlexTensor;
#[cfg(not(target_arch = "wasm32"))]
use rayon::prelude::*;

/// Images per partial sum of a weight gradient (see the module docs).
const CHUNK: usize = 4;
/// Elements per parallel task of the ReLU's backward mask.
const RELU_TASK: usize = 1 << 16;
/// A pooled output the ReLU set to zero: no gradient flows back through it.
const DEAD: u8 = u8::MAX;
/// The largest pooling window [`max_pool_relu`] takes: positions in a window must fit a byte
/// below [`DEAD`].
pub const MAX_POOL_WINDOW: usize = 15;

/// Kiln's CPU operations, dispatched by Burn to flex (plain and autodiff); other backends keep
/// Burn's own modules (`cnn.rs` only calls these on flex).
#[backend_extension(Flex, Autodiff)]
pub trait CpuOps: Backend {
    /// 2-D convolution: stride 1, no dilation, one group, `padding` zeros on every side; with
    /// `relu`, the ReLU of it.
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
        relu: bool,
    ) -> FloatTensor<Self>;

    /// `relu(max_pool(x))` with a `window × window` window and the same stride.
    fn max_pool_relu(x: FloatTensor<Self>, window: usize) -> FloatTensor<Self>;
}

/// [`CpuOps::conv2d_gemm`] on Burn tensors: `x` `[n, c, h, w]`, `weight` `[o, c, k, k]`, `bias`
/// `[o]`, all `f32` on flex (plain or autodiff); `relu` applies a ReLU to the output.
pub fn conv2d(
    x: Tensor<4>,
    weight: Tensor<4>,
    bias: Tensor<1>,
    padding: usize,
    relu: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuOps>::conv2d_gemm(
        x.into_dispatch(),
        weight.into_dispatch(),
        bias.into_dispatch(),
        padding,
        relu,
    ))
}

/// [`CpuOps::max_pool_relu`] on a Burn tensor `[n, c, h, w]`, `f32` on flex; `window` at most
/// [`MAX_POOL_WINDOW`].
pub fn max_pool_relu(x: Tensor<4>, window: usize) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as CpuOps>::max_pool_relu(
        x.into_dispatch(),
        window,
    ))
}

/// Whether [`conv2d`] and [`max_pool_relu`] can take a tensor of this type.
pub fn takes(dtype: DType) -> bool {
    dtype == DType::F32
}

// ---------------------------------------------------------------------------------------------
// Burn glue.

fn dims4(t: &FlexTensor) -> [usize; 4] {
    let shape = t.layout().shape();
    assert_eq!(shape.num_dims(), 4, "cpu_ops: a 4-D tensor");
    [shape[0], shape[1], shape[2], shape[3]]
}

/// The tensor's `f32` values, copied only if its layout is not already plain.
pub(crate) fn plain(t: FlexTensor) -> FlexTensor {
    assert_eq!(t.dtype(), DType::F32, "cpu_ops: f32 tensors only");
    if t.as_slice::<f32>().is_some() {
        t
    } else {
        t.to_contiguous()
    }
}

pub(crate) fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("cpu_ops: `plain` made the tensor contiguous")
}

/// `t` itself where it alone holds its buffer and its `f32` values lie plainly from the buffer's
/// start; else a copy that does. Its values can then be changed in place ([`values_mut`]).
pub(crate) fn owned(mut t: FlexTensor) -> FlexTensor {
    let n = t.layout().shape().num_elements();
    if t.dtype() == DType::F32
        && t.layout().contiguous_offsets() == Some((0, n))
        && t.try_storage_mut::<f32>().is_some()
    {
        return t;
    }
    let copy = plain(t);
    let shape = copy.layout().shape().clone();
    FlexTensor::from_data(TensorData::new(values(&copy).to_vec(), shape))
}

/// The values of a tensor [`owned`] returned, to change in place.
pub(crate) fn values_mut(t: &mut FlexTensor) -> &mut [f32] {
    let n = t.layout().shape().num_elements();
    let values = t
        .try_storage_mut::<f32>()
        .expect("cpu_ops: `owned` made the buffer unshared");
    &mut values[..n]
}

fn tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

fn conv_dims(x: &FlexTensor, weight: &FlexTensor, padding: usize) -> ConvDims {
    let [batch, channels, height, width] = dims4(x);
    let [out, in_channels, kernel, kernel_w] = dims4(weight);
    assert_eq!(
        in_channels, channels,
        "conv2d_gemm: weight and input channels"
    );
    assert_eq!(kernel, kernel_w, "conv2d_gemm: a square kernel");
    let dims = ConvDims {
        batch,
        channels,
        height,
        width,
        out,
        kernel,
        padding,
    };
    assert!(
        height + 2 * padding >= kernel && width + 2 * padding >= kernel,
        "conv2d_gemm: the kernel fits the padded input"
    );
    dims
}

impl CpuOps for Flex {
    fn conv2d_gemm(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        padding: usize,
        relu: bool,
    ) -> FlexTensor {
        let (x, weight, bias) = (plain(x), plain(weight), plain(bias));
        let dims = conv_dims(&x, &weight, padding);
        let y = conv_forward(&dims, values(&x), values(&weight), values(&bias), relu);
        tensor(y, dims.output_shape())
    }

    fn max_pool_relu(x: FlexTensor, window: usize) -> FlexTensor {
        let x = plain(x);
        let dims = PoolDims::new(dims4(&x), window);
        let (y, _) = pool_relu_forward(&dims, values(&x));
        tensor(y, dims.output_shape())
    }
}

/// What the convolution's backward keeps: the input and weight it read and, with a ReLU, the
/// output it gave (shared, not copied).
#[derive(Clone, Debug)]
struct ConvState {
    x: FlexTensor,
    weight: FlexTensor,
    padding: usize,
    relu_output: Option<FlexTensor>,
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<ConvState, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node, weight_node, bias_node] = ops.parents;
        let ConvState {
            x,
            weight,
            padding,
            relu_output,
        } = ops.state;
        let mut dy = plain(grads.consume::<Flex>(&ops.node));
        if let Some(y) = relu_output {
            dy = relu_backward(dy, &plain(y));
        }
        let dims = conv_dims(&x, &weight, padding);
        let g = conv_backward(
            &dims,
            values(&x),
            values(&weight),
            values(&dy),
            x_node.is_some(),
        );
        if let (Some(node), Some(dx)) = (x_node, g.x) {
            grads.register::<Flex>(node.id, tensor(dx, dims.input_shape()));
        }
        if let Some(node) = weight_node {
            grads.register::<Flex>(node.id, tensor(g.weight, dims.weight_shape()));
        }
        if let Some(node) = bias_node {
            let bias = FlexTensor::from_data(TensorData::new(g.bias, [dims.out]));
            grads.register::<Flex>(node.id, bias);
        }
    }
}

/// The window position of each pooled output's maximum ([`DEAD`] where the ReLU cut it).
#[derive(Clone)]
struct Argmax(Arc<Vec<u8>>);

impl fmt::Debug for Argmax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Argmax({} outputs)", self.0.len())
    }
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = (PoolDims, Argmax);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [x_node] = ops.parents;
        let dy = plain(grads.consume::<Flex>(&ops.node));
        let (dims, argmax) = ops.state;
        if let Some(node) = x_node {
            let dx = pool_relu_backward(&dims, &argmax.0, values(&dy));
            grads.register::<Flex>(node.id, tensor(dx, dims.input_shape()));
        }
    }
}

impl<C: CheckpointStrategy> CpuOps for Autodiff<Flex, C> {
    fn conv2d_gemm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        padding: usize,
        relu: bool,
    ) -> FloatTensor<Self> {
        match ConvBackward
            .prepare::<C>([x.node(), weight.node(), bias.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let (x, weight) = (plain(x.into_primitive()), plain(weight.into_primitive()));
                let y = Flex::conv2d_gemm(
                    x.clone(),
                    weight.clone(),
                    bias.into_primitive(),
                    padding,
                    relu,
                );
                let relu_output = relu.then(|| y.clone());
                let state = ConvState {
                    x,
                    weight,
                    padding,
                    relu_output,
                };
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(Flex::conv2d_gemm(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
                padding,
                relu,
            )),
        }
    }

    fn max_pool_relu(x: FloatTensor<Self>, window: usize) -> FloatTensor<Self> {
        match PoolBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = plain(x.into_primitive());
                let dims = PoolDims::new(dims4(&x), window);
                let (y, argmax) = pool_relu_forward(&dims, values(&x));
                let y = tensor(y, dims.output_shape());
                prep.finish((dims, Argmax(Arc::new(argmax))), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(Flex::max_pool_relu(x.into_primitive(), window))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels on plain slices (row-major, contiguous).

/// A convolution's shapes: input `[batch, channels, height, width]`, weight
/// `[out, channels, kernel, kernel]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ConvDims {
    pub batch: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub out: usize,
    pub kernel: usize,
    pub padding: usize,
}

impl ConvDims {
    fn out_height(&self) -> usize {
        self.height + 2 * self.padding + 1 - self.kernel
    }

    fn out_width(&self) -> usize {
        self.width + 2 * self.padding + 1 - self.kernel
    }

    /// Rows of an im2col matrix: `channels · kernel²`.
    fn rows(&self) -> usize {
        self.channels * self.kernel * self.kernel
    }

    /// Output pixels of one image: columns of an im2col matrix.
    fn pixels(&self) -> usize {
        self.out_height() * self.out_width()
    }

    fn image(&self) -> usize {
        self.channels * self.height * self.width
    }

    fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.channels, self.height, self.width]
    }

    fn weight_shape(&self) -> [usize; 4] {
        [self.out, self.channels, self.kernel, self.kernel]
    }

    fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out, self.out_height(), self.out_width()]
    }
}

/// For kernel column `kx`: the output columns `lo..hi` that read inside the image (the rest
/// read padding), and the input column that output column `lo` reads.
fn column_span(d: &ConvDims, kx: usize) -> (usize, usize, usize) {
    let ow = d.out_width();
    // Output column `ox` reads input column `ox + kx - padding`.
    let lo = d.padding.saturating_sub(kx).min(ow);
    let hi = (d.width + d.padding).saturating_sub(kx).min(ow).max(lo);
    (lo, hi, lo + kx - d.padding.min(lo + kx))
}

/// The im2col matrix `[channels·k², oh·ow]` of one image `[channels, height, width]`.
fn im2col(d: &ConvDims, image: &[f32], cols: &mut [f32]) {
    let (oh, ow, k, p) = (d.out_height(), d.out_width(), d.kernel, d.padding);
    let mut rows = cols.chunks_exact_mut(oh * ow);
    for plane in image.chunks_exact(d.height * d.width) {
        for ky in 0..k {
            for kx in 0..k {
                let row = rows.next().expect("cols holds channels·k² rows");
                let (lo, hi, from) = column_span(d, kx);
                for (oy, out) in row.chunks_exact_mut(ow).enumerate() {
                    let iy = oy + ky;
                    if iy < p || iy >= d.height + p {
                        out.fill(0.0);
                        continue;
                    }
                    let line = &plane[(iy - p) * d.width..][..d.width];
                    out[..lo].fill(0.0);
                    out[lo..hi].copy_from_slice(&line[from..from + hi - lo]);
                    out[hi..].fill(0.0);
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds each column entry back onto the input pixel it was read from.
fn col2im(d: &ConvDims, cols: &[f32], image: &mut [f32]) {
    let (oh, ow, k, p) = (d.out_height(), d.out_width(), d.kernel, d.padding);
    let mut rows = cols.chunks_exact(oh * ow);
    for plane in image.chunks_exact_mut(d.height * d.width) {
        for ky in 0..k {
            for kx in 0..k {
                let row = rows.next().expect("cols holds channels·k² rows");
                let (lo, hi, from) = column_span(d, kx);
                for (oy, out) in row.chunks_exact(ow).enumerate() {
                    let iy = oy + ky;
                    if iy < p || iy >= d.height + p {
                        continue;
                    }
                    let line = &mut plane[(iy - p) * d.width..][..d.width];
                    for (dst, src) in line[from..from + hi - lo].iter_mut().zip(&out[lo..hi]) {
                        *dst += src;
                    }
                }
            }
        }
    }
}

/// A row-major matrix operand of [`matmul`]: `rows × cols` stored with the given strides.
#[derive(Clone, Copy)]
struct Operand<'a> {
    values: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// `values` as a row-major `_ × cols` matrix.
    fn rows(values: &'a [f32], cols: usize) -> Self {
        Operand {
            values,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of `values` read as a row-major `_ × cols` matrix.
    fn transposed(values: &'a [f32], cols: usize) -> Self {
        Operand {
            values,
            row_stride: 1,
            col_stride: cols,
        }
    }

    fn covers(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.values.len()
    }
}

/// `dst [m × n] = (accumulate ? dst : 0) + lhs [m × k] · rhs [k × n]`, on the calling thread.
fn matmul(dst: &mut [f32], accumulate: bool, lhs: Operand, rhs: Operand, [m, n, k]: [usize; 3]) {
    assert!(dst.len() == m * n && lhs.covers(m, k) && rhs.covers(k, n));
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let stride = |s: usize| isize::try_from(s).expect("a stride fits isize");
    #[allow(unsafe_code)]
    // SAFETY: the assert above keeps every index gemm reads or writes inside the three slices
    // (`covers`: the last element of each operand is in bounds; strides are non-negative); `dst`
    // is a unique borrow and does not alias `lhs` or `rhs`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            stride(n),
            accumulate,
            lhs.values.as_ptr(),
            stride(lhs.col_stride),
            stride(lhs.row_stride),
            rhs.values.as_ptr(),
            stride(rhs.col_stride),
            stride(rhs.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Runs `f(i, chunk)` on each `size`-long chunk of `data`, in parallel where there are threads.
fn each_chunk<T: Send>(data: &mut [T], size: usize, f: impl Fn(usize, &mut [T]) + Sync + Send) {
    #[cfg(not(target_arch = "wasm32"))]
    data.par_chunks_mut(size)
        .enumerate()
        .for_each(|(i, c)| f(i, c));
    #[cfg(target_arch = "wasm32")]
    data.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
}

/// `f(i)` for `i` in `0..count`, in parallel where there are threads; results in order.
fn map_range<R: Send>(count: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    #[cfg(not(target_arch = "wasm32"))]
    return (0..count).into_par_iter().map(f).collect();
    #[cfg(target_arch = "wasm32")]
    return (0..count).map(f).collect();
}

/// Runs `f(i, a_chunk, b_chunk)` on matching chunks of `a` and `b`, in parallel where there are
/// threads.
fn each_chunk_pair<A: Send, B: Send>(
    (a, a_size): (&mut [A], usize),
    (b, b_size): (&mut [B], usize),
    f: impl Fn(usize, &mut [A], &mut [B]) + Sync + Send,
) {
    #[cfg(not(target_arch = "wasm32"))]
    a.par_chunks_mut(a_size)
        .zip(b.par_chunks_mut(b_size))
        .enumerate()
        .for_each(|(i, (a, b))| f(i, a, b));
    #[cfg(target_arch = "wasm32")]
    a.chunks_mut(a_size)
        .zip(b.chunks_mut(b_size))
        .enumerate()
        .for_each(|(i, (a, b))| f(i, a, b));
}

/// A vector of `len` floats built in `size`-long chunks (the last may be shorter), in parallel
/// where there are threads: each task zeroes its own chunk, then `f(i, chunk)` fills it. Large
/// outputs are not zeroed by one serial `memset` on the calling thread while the pool waits
/// (`vec![0.0; len]`: ≈ 4% of a W2 step, BENCHMARKS.md). Empty outputs (`len` or `size` 0) are
/// an empty vector, `f` not called.
fn zeroed_in_tasks(
    len: usize,
    size: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    filled_in_tasks(len, size, (size, |_| 0.0), f)
}

/// [`zeroed_in_tasks`], with each chunk's `row`-long rows (the last may be shorter) starting at
/// `value(r)` for row `r` instead of zero: the convolution's output starts at its bias, written
/// once rather than over zeros.
fn filled_in_tasks(
    len: usize,
    size: usize,
    (row, value): (usize, impl Fn(usize) -> f32 + Sync + Send),
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    if len == 0 || size == 0 {
        return Vec::new();
    }
    let mut values = Vec::with_capacity(len);
    each_chunk(&mut values.spare_capacity_mut()[..len], size, |i, chunk| {
        for (r, slots) in chunk.chunks_mut(row.max(1)).enumerate() {
            let v = value(r);
            for slot in slots {
                slot.write(v);
            }
        }
        // SAFETY: every element of `chunk` was initialised just above (its rows cover it), and
        // `MaybeUninit<f32>` has `f32`'s layout.
        #[allow(unsafe_code)]
        let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) };
        f(i, chunk);
    });
    // SAFETY: `each_chunk` handed every chunk of the first `len` elements to a task, and each
    // task initialised all of its chunk before `f` ran (a panic in a task never gets here).
    #[allow(unsafe_code)]
    unsafe {
        values.set_len(len)
    };
    values
}

/// `f` on a scratch buffer of `len` floats (contents unspecified) kept per thread, so the im2col
/// matrices of a step are not allocated and zeroed image by image. A thread keeps the largest
/// it was asked for (W2: 0.66 MB).
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local!(static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) });
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => {
            if buffer.len() < len {
                buffer.resize(len, 0.0);
            }
            f(&mut buffer[..len])
        }
        // Only if `f` itself came back here; it does not.
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// The sum of `values` in eight interleaved lanes (vectorised; a fixed order all the same).
fn lane_sum(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let mut chunks = values.chunks_exact(8);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `dy` where the ReLU's output `y` is positive (or NaN), else zero, as Burn's ReLU backward;
/// in `dy`'s buffer where nothing else holds it.
fn relu_backward(dy: FlexTensor, y: &FlexTensor) -> FlexTensor {
    let y = values(y);
    let mut dy = owned(dy);
    each_chunk(values_mut(&mut dy), RELU_TASK, |i, dy| {
        // A select, not a branch, so it vectorises.
        for (g, &y) in dy.iter_mut().zip(&y[i * RELU_TASK..]) {
            *g = if y <= 0.0 { 0.0 } else { *g };
        }
    });
    dy
}

/// The convolution's output `[batch, out, oh, ow]`, through a ReLU with `relu`.
pub(crate) fn conv_forward(
    d: &ConvDims,
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    relu: bool,
) -> Vec<f32> {
    assert_eq!(x.len(), d.batch * d.image());
    assert_eq!(weight.len(), d.out * d.rows());
    assert_eq!(bias.len(), d.out);
    let (rows, pixels) = (d.rows(), d.pixels());
    let bias_rows = (pixels, |r: usize| bias[r]);
    filled_in_tasks(
        d.batch * d.out * pixels,
        d.out * pixels,
        bias_rows,
        |i, y| {
            with_scratch(rows * pixels, |cols| {
                im2col(d, &x[i * d.image()..][..d.image()], cols);
                let [lhs, rhs] = [Operand::rows(weight, rows), Operand::rows(cols, pixels)];
                matmul(y, true, lhs, rhs, [d.out, pixels, rows]);
            });
            if relu {
                // Burn's ReLU: zero where `y ≤ 0`; a NaN passes. A select, not a branch, so it
                // vectorises.
                for v in y.iter_mut() {
                    *v = if *v <= 0.0 { 0.0 } else { *v };
                }
            }
        },
    )
}

/// The convolution's gradients.
pub(crate) struct ConvGrads {
    /// `[batch, channels, height, width]`, when asked for.
    pub x: Option<Vec<f32>>,
    /// `[out, channels, kernel, kernel]`.
    pub weight: Vec<f32>,
    /// `[out]`.
    pub bias: Vec<f32>,
}

/// Gradients of the convolution for the output gradient `dy` `[batch, out, oh, ow]`.
pub(crate) fn conv_backward(
    d: &ConvDims,
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    input_grad: bool,
) -> ConvGrads {
    assert_eq!(x.len(), d.batch * d.image());
    assert_eq!(weight.len(), d.out * d.rows());
    assert_eq!(dy.len(), d.batch * d.out * d.pixels());
    let (rows, pixels, out) = (d.rows(), d.pixels(), d.out);
    let image_dy = out * pixels;

    // Per chunk of images, in order: (the weight gradient transposed, bias gradient).
    let partials = map_range(d.batch.div_ceil(CHUNK), |chunk| {
        let mut dw_t = vec![0.0; rows * out];
        let mut db = vec![0.0; out];
        let images = chunk * CHUNK..(d.batch).min((chunk + 1) * CHUNK);
        with_scratch(rows * pixels, |cols| {
            for (j, n) in images.enumerate() {
                let dy = &dy[n * image_dy..][..image_dy];
                im2col(d, &x[n * d.image()..][..d.image()], cols);
                // dWᵀ [rows × out] += cols [rows × pixels] · dyᵀ [pixels × out]. Transposed,
                // gemm reads `cols` in place and packs only `dy`; for `dW` itself it packs
                // `cols` across its rows, a strided gather (1.4× the time at W2's shapes).
                let [lhs, rhs] = [Operand::rows(cols, pixels), Operand::transposed(dy, pixels)];
                matmul(&mut dw_t, j > 0, lhs, rhs, [rows, out, pixels]);
                for (b, row) in db.iter_mut().zip(dy.chunks_exact(pixels.max(1))) {
                    *b += lane_sum(row);
                }
            }
        });
        (dw_t, db)
    });
    let mut partials = partials.into_iter();
    let (mut dw_t, mut db) = partials
        .next()
        .unwrap_or_else(|| (vec![0.0; rows * out], vec![0.0; out]));
    for (w, b) in partials {
        dw_t.iter_mut().zip(&w).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
    }
    let mut dw = vec![0.0; out * rows];
    for (r, values) in dw_t.chunks_exact(out.max(1)).enumerate() {
        for (o, &v) in values.iter().enumerate() {
            dw[o * rows + r] = v;
        }
    }

    let dx = input_grad.then(|| {
        zeroed_in_tasks(d.batch * d.image(), d.image(), |n, dx| {
            with_scratch(rows * pixels, |dcols| {
                // dcols [rows × pixels] = Wᵀ [rows × out] · dy [out × pixels]
                let dy = &dy[n * image_dy..][..image_dy];
                let [lhs, rhs] = [Operand::transposed(weight, rows), Operand::rows(dy, pixels)];
                matmul(dcols, false, lhs, rhs, [rows, pixels, out]);
                col2im(d, dcols, dx);
            });
        })
    });
    ConvGrads {
        x: dx,
        weight: dw,
        bias: db,
    }
}

/// A pooling's shapes: input `[batch, channels, height, width]`, a `window × window` window with
/// the same stride; outputs `height / window × width / window` (the remainder is dropped).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct PoolDims {
    input: [usize; 4],
    window: usize,
}

impl PoolDims {
    pub(crate) fn new(input: [usize; 4], window: usize) -> Self {
        assert!(
            (1..=MAX_POOL_WINDOW).contains(&window),
            "max_pool_relu: window {window} is not in 1..={MAX_POOL_WINDOW}"
        );
        PoolDims { input, window }
    }

    fn input_shape(&self) -> [usize; 4] {
        self.input
    }

    fn output_shape(&self) -> [usize; 4] {
        let [n, c, h, w] = self.input;
        [n, c, h / self.window, w / self.window]
    }
}

/// `relu(max_pool(x))` and, per output, the window position of the maximum ([`DEAD`] where the
/// output is zero). The first maximum wins a tie.
pub(crate) fn pool_relu_forward(d: &PoolDims, x: &[f32]) -> (Vec<f32>, Vec<u8>) {
    let [n, c, h, w] = d.input;
    let [_, _, oh, ow] = d.output_shape();
    let k = d.window;
    assert_eq!(x.len(), n * c * h * w);
    let mut y = vec![0.0; n * c * oh * ow];
    let mut argmax = vec![DEAD; y.len()];
    if y.is_empty() {
        return (y, argmax);
    }
    // One image per task.
    each_chunk_pair(
        (&mut y, c * oh * ow),
        (&mut argmax, c * oh * ow),
        |i, y, argmax| {
            let image = &x[i * c * h * w..][..c * h * w];
            let outputs = y.chunks_exact_mut(ow).zip(argmax.chunks_exact_mut(ow));
            for (row, (y, argmax)) in outputs.enumerate() {
                // Output row `row` of plane `row / oh` reads input rows `oy·k .. oy·k + k`.
                let (plane, oy) = (row / oh, row % oh);
                let top = &image[plane * h * w + oy * k * w..][..k * w];
                if k == 2 {
                    pool_row_2x2(top.split_at(w), y, argmax);
                    continue;
                }
                for (ox, (y, a)) in y.iter_mut().zip(argmax.iter_mut()).enumerate() {
                    let mut best = f32::NEG_INFINITY;
                    let mut at = DEAD;
                    for (ky, line) in top.chunks_exact(w).enumerate() {
                        for (kx, &v) in line[ox * k..][..k].iter().enumerate() {
                            // Branch-free: the comparison picks, it does not jump.
                            let better = v > best;
                            best = if better { v } else { best };
                            // k ≤ MAX_POOL_WINDOW: the position fits below DEAD.
                            at = if better { (ky * k + kx) as u8 } else { at };
                        }
                    }
                    (*y, *a) = if best > 0.0 { (best, at) } else { (0.0, DEAD) };
                }
            }
        },
    );
    (y, argmax)
}

/// One output row of [`pool_relu_forward`] for a 2×2 window (W2's): the same choice, without
/// indexing, so the compiler keeps it in registers.
fn pool_row_2x2((upper, lower): (&[f32], &[f32]), y: &mut [f32], argmax: &mut [u8]) {
    let windows = upper.chunks_exact(2).zip(lower.chunks_exact(2));
    for ((y, a), (u, l)) in y.iter_mut().zip(argmax.iter_mut()).zip(windows) {
        let (mut best, mut at) = (u[0], 0);
        for (v, position) in [(u[1], 1), (l[0], 2), (l[1], 3)] {
            let better = v > best;
            best = if better { v } else { best };
            at = if better { position } else { at };
        }
        (*y, *a) = if best > 0.0 { (best, at) } else { (0.0, DEAD) };
    }
}

/// The input gradient of [`pool_relu_forward`] for the output gradient `dy`.
pub(crate) fn pool_relu_backward(d: &PoolDims, argmax: &[u8], dy: &[f32]) -> Vec<f32> {
    let [n, c, h, w] = d.input;
    let [_, _, oh, ow] = d.output_shape();
    let k = d.window;
    assert_eq!(dy.len(), n * c * oh * ow);
    assert_eq!(argmax.len(), dy.len());
    if dy.is_empty() {
        // Nothing was pooled (an input smaller than the window): no gradient flows back.
        return vec![0.0; n * c * h * w];
    }
    // One image per task.
    zeroed_in_tasks(n * c * h * w, c * h * w, |i, image| {
        let outputs = i * c * oh * ow..(i + 1) * c * oh * ow;
        let rows = argmax[outputs.clone()]
            .chunks_exact(ow)
            .zip(dy[outputs].chunks_exact(ow));
        for (row, (argmax, dy)) in rows.enumerate() {
            let (plane, oy) = (row / oh, row % oh);
            let top = &mut image[plane * h * w + oy * k * w..][..k * w];
            if k == 2 {
                pool_row_2x2_backward(argmax, dy, top.split_at_mut(w));
                continue;
            }
            for (ox, (&a, &g)) in argmax.iter().zip(dy).enumerate() {
                if a != DEAD {
                    let (ky, kx) = (usize::from(a) / k, usize::from(a) % k);
                    top[ky * w + ox * k + kx] = g;
                }
            }
        }
    })
}

/// One output row of [`pool_relu_backward`] for a 2×2 window: every position of each window
/// written, the gradient where the maximum was and zero elsewhere, by selects rather than a
/// branch on the (unpredictable) maximum's position.
fn pool_row_2x2_backward(argmax: &[u8], dy: &[f32], (upper, lower): (&mut [f32], &mut [f32])) {
    let windows = upper.chunks_exact_mut(2).zip(lower.chunks_exact_mut(2));
    for ((&a, &g), (u, l)) in argmax.iter().zip(dy).zip(windows) {
        let at = |position: u8| if a == position { g } else { 0.0 };
        (u[0], u[1], l[0], l[1]) = (at(0), at(1), at(2), at(3));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values in [-1, 1) from a fixed seed, without Burn.
    fn noise(len: usize, seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn results_do_not_depend_on_the_number_of_threads() {
        // 11 images: chunks of 4, 4 and 3, spread differently over 1, 2 and 3 threads.
        let d = ConvDims {
            batch: 11,
            channels: 3,
            height: 9,
            width: 8,
            out: 5,
            kernel: 3,
            padding: 1,
        };
        let x = noise(d.batch * d.image(), 1);
        let weight = noise(d.out * d.rows(), 2);
        let bias = noise(d.out, 3);
        let dy = noise(d.batch * d.out * d.pixels(), 4);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a thread pool");
            pool.install(|| {
                let y = conv_forward(&d, &x, &weight, &bias, false);
                let g = conv_backward(&d, &x, &weight, &dy, true);
                (y, g.x, g.weight, g.bias)
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert!(one == run(threads), "bit-identical with {threads} threads");
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> = <x, col2im(c)> for every x and c: the input gradient's foundation,
        // with padding wider than a kernel's reach on one side.
        for (kernel, padding) in [(3, 0), (3, 1), (5, 2), (2, 3)] {
            let d = ConvDims {
                batch: 1,
                channels: 2,
                height: 5,
                width: 4,
                out: 1,
                kernel,
                padding,
            };
            let x = noise(d.image(), 5);
            let c = noise(d.rows() * d.pixels(), 6);
            let mut cols = vec![f32::NAN; c.len()];
            im2col(&d, &x, &mut cols);
            let mut back = vec![0.0; x.len()];
            col2im(&d, &c, &mut back);
            let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| a * b).sum::<f32>();
            let (left, right) = (dot(&cols, &c), dot(&x, &back));
            assert!(
                (left - right).abs() < 1e-4,
                "k {kernel}, pad {padding}: {left} vs {right}"
            );
        }
    }
}
