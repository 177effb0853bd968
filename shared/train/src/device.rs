//! From a job's [`DeviceRequest`] to a Burn [`Device`].
//!
//! Burn registers a wgpu runtime once per process and refuses a second registration, so devices
//! are initialised once and kept in a process-wide table.

use burn::tensor::Device;
#[cfg(all(not(target_arch = "wasm32"), feature = "wgpu"))]
use burn::tensor::DeviceKind;

use kiln_proto::spec::DeviceRequest;

/// A device ready to train on.
#[derive(Debug, Clone)]
pub struct ResolvedDevice {
    pub device: Device,
    /// What it is: `cpu`, `wgpu`, `cuda` or `webgpu` (never `auto`).
    pub kind: DeviceRequest,
    /// For people: which backend and adapter.
    pub description: String,
}

#[derive(Debug, thiserror::Error)]
#[error("device {requested}: {message}")]
pub struct DeviceError {
    pub requested: DeviceRequest,
    pub message: String,
}

#[cfg(any(not(target_arch = "wasm32"), feature = "webgpu"))]
static DEVICES: std::sync::Mutex<Vec<(DeviceRequest, ResolvedDevice)>> =
    std::sync::Mutex::new(Vec::new());

#[cfg(any(not(target_arch = "wasm32"), feature = "webgpu"))]
fn cached(kind: DeviceRequest) -> Option<ResolvedDevice> {
    DEVICES
        .lock()
        .ok()?
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, d)| d.clone())
}

#[cfg(any(not(target_arch = "wasm32"), feature = "webgpu"))]
fn remember(kind: DeviceRequest, device: ResolvedDevice) -> ResolvedDevice {
    if let Ok(mut table) = DEVICES.lock() {
        table.push((kind, device.clone()));
    }
    device
}

fn cpu() -> ResolvedDevice {
    keep_freed_memory();
    ResolvedDevice {
        device: Device::flex(),
        kind: DeviceRequest::Cpu,
        description: "cpu (burn flex)".to_string(),
    }
}

/// Make glibc's malloc keep freed memory for reuse instead of handing it back to the kernel.
///
/// Burn's CPU backend frees and allocates buffers of hundreds of kilobytes to tens of megabytes
/// every step. By default glibc returns them (`munmap`, or trimming the heap's top) and the next
/// step faults them back in page by page: W2 spent about a fifth of its wall time in the
/// kernel, and trained about 1.4× faster with these two settings (BENCHMARKS.md, "Where W2's
/// time went"). Freed memory stays with the process, up to its peak use. Called when the CPU
/// device is first resolved; idempotent; a no-op where the C library is not glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(
        unsafe_code,
        reason = "mallopt is a C call with plain integer arguments"
    )]
    // SAFETY: mallopt only changes two of malloc's tuning parameters; glibc takes its own lock.
    unsafe {
        // Allocations below 32 MiB (glibc's largest allowed threshold) come from the heap...
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // ...and up to 1 GiB of free memory at its top stays mapped.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Resolve a request on a native worker.
#[cfg(not(target_arch = "wasm32"))]
pub fn resolve(requested: DeviceRequest) -> Result<ResolvedDevice, DeviceError> {
    if let Some(d) = cached(requested) {
        return Ok(d);
    }
    let err = |message: String| DeviceError { requested, message };
    let resolved = match requested {
        DeviceRequest::Cpu => cpu(),
        DeviceRequest::Wgpu => wgpu_any().map_err(err)?,
        DeviceRequest::Cuda => cuda().map_err(err)?,
        DeviceRequest::Webgpu => {
            return Err(err(
                "webgpu is the browser's device; native workers offer cpu, wgpu or cuda"
                    .to_string(),
            ));
        }
        // The first real GPU wins; a software adapter (lavapipe) is slower than the CPU backend.
        DeviceRequest::Auto => cuda().or_else(|_| wgpu_gpu()).unwrap_or_else(|_| cpu()),
    };
    Ok(remember(requested, resolved))
}

/// One kind of device this build can train on, as found by [`probe`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DeviceProbe {
    pub kind: DeviceRequest,
    pub available: bool,
    /// The device found (backend and adapter), or why there is none.
    pub detail: String,
}

/// Try every native device kind once: `kiln devices`, and the explicit gate of the GPU tests.
/// Initialises what it finds (kept for this process, like [`resolve`]).
#[cfg(not(target_arch = "wasm32"))]
pub fn probe() -> Vec<DeviceProbe> {
    [DeviceRequest::Cpu, DeviceRequest::Wgpu, DeviceRequest::Cuda]
        .into_iter()
        .map(
            |kind| match resolve(kind).map(|d| (smoke_test(&d.device), d)) {
                Ok((Ok(()), d)) => DeviceProbe {
                    kind,
                    available: true,
                    detail: d.description,
                },
                Ok((Err(e), d)) => DeviceProbe {
                    kind,
                    available: false,
                    detail: format!("{} opened, but a kernel on it failed: {e}", d.description),
                },
                Err(e) => DeviceProbe {
                    kind,
                    available: false,
                    detail: e.message,
                },
            },
        )
        .collect()
}

/// A device counts as usable once a kernel ran on it and gave the right answer (opening an
/// adapter alone proves little).
#[cfg(not(target_arch = "wasm32"))]
fn smoke_test(device: &Device) -> Result<(), String> {
    use burn::tensor::{Tensor, TensorData};
    let t = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.5], [3]), device);
    let sum =
        pollster::block_on(t.sum().into_scalar_async::<f32>()).map_err(|e| format!("{e:?}"))?;
    if sum == 6.5 {
        Ok(())
    } else {
        Err(format!("1 + 2 + 3.5 gave {sum}"))
    }
}

/// Any wgpu adapter, software ones included (`device = "wgpu"` asks for exactly that).
#[cfg(all(not(target_arch = "wasm32"), feature = "wgpu"))]
fn wgpu_any() -> Result<ResolvedDevice, String> {
    wgpu(None)
}

/// A real GPU through wgpu (for `auto`): discrete first, then integrated.
#[cfg(all(not(target_arch = "wasm32"), feature = "wgpu"))]
fn wgpu_gpu() -> Result<ResolvedDevice, String> {
    wgpu(Some(DeviceKind::DiscreteGpu(0))).or_else(|_| wgpu(Some(DeviceKind::IntegratedGpu(0))))
}

/// Without the `wgpu` feature there is no adapter to look for; say how to get one.
#[cfg(all(not(target_arch = "wasm32"), not(feature = "wgpu")))]
fn wgpu_any() -> Result<ResolvedDevice, String> {
    Err(
        "this kiln was built without the wgpu backend (rebuild with `--features wgpu`, \
         e.g. `KILN_FEATURES=wgpu scripts/up`)"
            .to_string(),
    )
}

#[cfg(all(not(target_arch = "wasm32"), not(feature = "wgpu")))]
fn wgpu_gpu() -> Result<ResolvedDevice, String> {
    wgpu_any()
}

#[cfg(all(not(target_arch = "wasm32"), feature = "wgpu"))]
fn wgpu(kind: Option<DeviceKind>) -> Result<ResolvedDevice, String> {
    let mut options = Device::wgpu_options();
    if let Some(kind) = kind {
        options = options.device_kind(kind);
    }
    let device = options
        .init()
        .map_err(|e| format!("no usable wgpu adapter: {e}"))?;
    Ok(ResolvedDevice {
        description: format!("wgpu ({device:?})"),
        device,
        kind: DeviceRequest::Wgpu,
    })
}

#[cfg(not(target_arch = "wasm32"))]
fn cuda() -> Result<ResolvedDevice, String> {
    #[cfg(feature = "cuda")]
    {
        use burn::tensor::DeviceType;
        let devices = Device::enumerate(DeviceType::Cuda).into_vec();
        match devices.into_iter().next() {
            Some(device) => Ok(ResolvedDevice {
                description: format!("cuda ({device:?})"),
                device,
                kind: DeviceRequest::Cuda,
            }),
            None => Err("no CUDA device found".to_string()),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(
            "this kiln was built without CUDA (rebuild with `--features cuda`, \
             e.g. `KILN_FEATURES=cuda scripts/up`)"
                .to_string(),
        )
    }
}

/// Resolve a request in the browser: WebGPU when asked for (or `auto`), compiled in (feature
/// `webgpu`) and available, else the CPU backend, which always works. `no_gpu`: why the
/// caller already knows WebGPU is out (said in the description).
#[cfg(target_arch = "wasm32")]
pub async fn resolve_browser(requested: DeviceRequest, no_gpu: Option<&str>) -> ResolvedDevice {
    let wasm_cpu = |why: String| ResolvedDevice {
        description: format!("cpu (burn flex in wasm, one thread): {why}"),
        ..cpu()
    };
    if matches!(requested, DeviceRequest::Cpu) {
        return wasm_cpu("the CPU was asked for".to_string());
    }
    if let Some(why) = no_gpu {
        return wasm_cpu(why.to_string());
    }
    #[cfg(feature = "webgpu")]
    {
        use burn::tensor::wgpu::WgpuBackend;
        if let Some(d) = cached(DeviceRequest::Webgpu) {
            return d;
        }
        match Device::wgpu_options()
            .graphics_api(WgpuBackend::WebGpu)
            .init_async()
            .await
        {
            Ok(device) => remember(
                DeviceRequest::Webgpu,
                ResolvedDevice {
                    description: "webgpu (the browser's GPU adapter)".to_string(),
                    device,
                    kind: DeviceRequest::Webgpu,
                },
            ),
            Err(e) => wasm_cpu(format!("this browser gave no WebGPU adapter ({e:?})")),
        }
    }
    #[cfg(not(feature = "webgpu"))]
    wasm_cpu("this trainer module is the CPU build".to_string())
}
