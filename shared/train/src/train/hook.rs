//! The gradient hook: between backward and the optimizer step, the loop hands all gradients,
//! flattened into one buffer in parameter order, to a hook that may replace them. Distributed
//! data-parallel training plugs its all-reduce in here.

use std::future::Future;
use std::pin::Pin;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

/// Why a hook failed (a lost peer, say). The loop stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("gradient hook failed: {0}")]
pub struct HookError(pub String);

/// Which replica this loop is: `rank` in `0..world`. Alone: rank 0 of world 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replica {
    pub rank: usize,
    pub world: usize,
}

impl Default for Replica {
    fn default() -> Self {
        Replica { rank: 0, world: 1 }
    }
}

/// What a hook's call returns: a future, boxed so that the loop can hold the hook as
/// `&mut dyn GradientHook`. No `Send` bound: in a browser it runs under `spawn_local`.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, HookError>> + 'a>>;

/// Called by the training loop of every replica. Both calls are async so that a collective
/// can wait for its peers (over a socket natively, over a message channel in a browser)
/// without a thread and without blocking.
pub trait GradientHook {
    /// Called once before the first step of a fresh run with this replica's weights
    /// (burnpack bytes); returns the weights all replicas must start from (say, rank 0's).
    /// The default keeps them.
    fn sync_weights(&mut self, replica: Replica, weights: Vec<u8>) -> HookFuture<'_, Vec<u8>> {
        let _ = replica;
        Box::pin(async move { Ok(weights) })
    }

    /// Called after backward with every gradient, flattened in parameter order; replace them
    /// in place (e.g. with their mean over all replicas).
    fn on_gradients<'a>(
        &'a mut self,
        replica: Replica,
        step: u64,
        gradients: &'a mut [f32],
    ) -> HookFuture<'a, ()>;

    /// Local SGD (`distributed.sync = { every = H }`): called every H steps (and after the last
    /// step) with this replica's parameters, flattened in parameter order; replace them in
    /// place (with their mean over all replicas). The default keeps them.
    fn on_parameters<'a>(
        &'a mut self,
        replica: Replica,
        step: u64,
        parameters: &'a mut [f32],
    ) -> HookFuture<'a, ()> {
        let _ = (replica, step, parameters);
        Box::pin(async { Ok(()) })
    }

    /// Before training: fail unless every replica holds the same `digest` of `what` (the
    /// training data), naming the replicas that differ. The default (alone) passes.
    fn check_same<'a>(
        &'a mut self,
        replica: Replica,
        what: &'a str,
        digest: [u8; 32],
    ) -> HookFuture<'a, ()> {
        let _ = (replica, what, digest);
        Box::pin(async { Ok(()) })
    }

    /// Replace `values` by their element-wise sum over all replicas: training metrics and
    /// sharded evaluation, so that rank 0 reports global figures. Every replica calls it at the
    /// same points. The default (alone) keeps them.
    fn reduce_sum<'a>(&'a mut self, replica: Replica, values: &'a mut [f64]) -> HookFuture<'a, ()> {
        let _ = (replica, values);
        Box::pin(async { Ok(()) })
    }
}

/// Sum `values` over the replicas through `hook`, if there is one and more than one replica.
pub(crate) async fn reduce_sum(
    hook: &mut Option<&mut dyn GradientHook>,
    replica: Replica,
    values: &mut [f64],
) -> Result<(), HookError> {
    match hook {
        Some(hook) if replica.world > 1 => hook.reduce_sum(replica, values).await,
        _ => Ok(()),
    }
}

/// Gradients taken out of a `GradientsParams`, flattened to one buffer.
pub(crate) struct FlatGradients {
    pub values: Vec<f32>,
    layout: Vec<(ParamId, Vec<usize>)>,
    device: Option<Device>,
}

struct Collect<'a> {
    grads: &'a mut GradientsParams,
    parts: Vec<Tensor<1>>,
    layout: Vec<(ParamId, Vec<usize>)>,
    device: Option<Device>,
}

impl ModuleVisitor for Collect<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(grad) = self.grads.remove::<D>(param.id) {
            let shape = grad.dims().to_vec();
            let n: usize = shape.iter().product();
            self.device.get_or_insert_with(|| grad.device());
            self.parts.push(grad.reshape([n]));
            self.layout.push((param.id, shape));
        }
    }
}

struct Restore<'a> {
    grads: &'a mut GradientsParams,
    values: &'a [f32],
    device: &'a Device,
    layout: &'a [(ParamId, Vec<usize>)],
    next: usize,
    offset: usize,
}

impl ModuleVisitor for Restore<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some((id, shape)) = self.layout.get(self.next) else {
            return;
        };
        if *id != param.id {
            return;
        }
        self.next += 1;
        let n: usize = shape.iter().product();
        // One tensor per parameter, made from its part of the host buffer: slices of one
        // big tensor would leave the optimizer working on strided views.
        let Some(values) = self.values.get(self.offset..self.offset + n) else {
            return;
        };
        self.offset += n;
        let grad =
            Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape.clone()), self.device);
        self.grads.register::<D>(param.id, grad);
    }
}

/// Take every gradient of `model` out of `grads` into one host buffer (one device read).
pub(crate) async fn flatten<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
) -> Result<FlatGradients, HookError> {
    let mut collect = Collect {
        grads,
        parts: Vec::new(),
        layout: Vec::new(),
        device: None,
    };
    model.visit(&mut collect);
    let Collect {
        parts,
        layout,
        device,
        ..
    } = collect;
    let values = if parts.is_empty() {
        Vec::new()
    } else {
        Tensor::cat(parts, 0)
            .into_data_async()
            .await
            .map_err(|e| HookError(format!("reading gradients: {e:?}")))?
            .try_into_vec::<f32>()
            .map_err(|e| HookError(format!("reading gradients: {e:?}")))?
    };
    Ok(FlatGradients {
        values,
        layout,
        device,
    })
}

/// Put (possibly replaced) flat gradients back into `grads`.
pub(crate) fn unflatten<M: Module>(model: &M, grads: &mut GradientsParams, flat: FlatGradients) {
    let Some(device) = flat.device else {
        return;
    };
    let mut restore = Restore {
        grads,
        values: &flat.values,
        device: &device,
        layout: &flat.layout,
        next: 0,
        offset: 0,
    };
    model.visit(&mut restore);
}

/// Every float parameter of a module, one host buffer in visit order.
struct CollectParams {
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for CollectParams {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        let n: usize = value.dims().iter().product();
        self.parts.push(value.detach().reshape([n]));
    }
}

/// Read every float parameter of `model` into one host buffer (one device read).
pub(crate) async fn flatten_params<M: Module>(model: &M) -> Result<Vec<f32>, HookError> {
    let mut collect = CollectParams { parts: Vec::new() };
    model.visit(&mut collect);
    if collect.parts.is_empty() {
        return Ok(Vec::new());
    }
    Tensor::cat(collect.parts, 0)
        .into_data_async()
        .await
        .map_err(|e| HookError(format!("reading parameters: {e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| HookError(format!("reading parameters: {e:?}")))
}

/// Put a buffer from [`flatten_params`] (possibly replaced) back into the parameters, keeping
/// their ids (the optimizer's state stays attached) and whether they require gradients.
struct LoadParams<'a> {
    flat: &'a [f32],
    offset: usize,
    /// Where the new tensors go; `None`: where each parameter is.
    device: Option<&'a Device>,
}

impl ModuleMapper for LoadParams<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (flat, offset, device) = (self.flat, &mut self.offset, self.device);
        param.map(|tensor| {
            let shape = tensor.dims();
            let n: usize = shape.iter().product();
            let Some(values) = flat.get(*offset..*offset + n) else {
                return tensor;
            };
            *offset += n;
            let target = device.cloned().unwrap_or_else(|| tensor.device());
            // A copy onto a device without autodiff (to save it) tracks no gradients.
            let grad = tensor.is_require_grad() && target.is_autodiff();
            let fresh =
                Tensor::<D>::from_data(TensorData::new(values.to_vec(), shape.to_vec()), &target);
            if grad { fresh.require_grad() } else { fresh }
        })
    }
}

pub(crate) fn load_params<M: Module>(model: M, flat: &[f32]) -> M {
    model.map(&mut LoadParams {
        flat,
        offset: 0,
        device: None,
    })
}

/// [`load_params`] into a copy of `model` on `device` (the same parameter ids, so records and
/// optimizer state still match). Reads nothing from the model's own device.
pub(crate) fn params_on<M: Module>(model: &M, flat: &[f32], device: &Device) -> M {
    model.clone().map(&mut LoadParams {
        flat,
        offset: 0,
        device: Some(device),
    })
}
