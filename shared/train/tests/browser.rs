//! The training core inside a browser: headless Chromium runs this wasm module, trains the
//! `mlp` (and the `cnn`, on the CPU) on the committed MNIST subset and checks that the loss
//! falls — on Burn's CPU backend and on WebGPU (Chromium's SwiftShader adapter in CI; built with `--features
//! webgpu`, as scripts/test does).
#![cfg(target_arch = "wasm32")]

use kiln_proto::metric::Split;
use kiln_proto::spec::{DeviceRequest, JobSpec};
use kiln_train::data::{self, MemorySource};
use kiln_train::device::resolve_browser;
use kiln_train::train::{TrainEvent, TrainRun, train};
use wasm_bindgen_test::{console_log, wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

fn mnist_subset() -> MemorySource {
    MemorySource::default()
        .with(
            "mnist/train-images-idx3-ubyte.gz",
            include_bytes!("../../../data/mnist/train-images-idx3-ubyte.gz").to_vec(),
        )
        .with(
            "mnist/train-labels-idx1-ubyte.gz",
            include_bytes!("../../../data/mnist/train-labels-idx1-ubyte.gz").to_vec(),
        )
}

const MLP: &str = "kind = \"mlp\"\nhidden = [64]";

async fn train_in_browser(
    request: DeviceRequest,
    model: &str,
    steps: u64,
) -> (DeviceRequest, Vec<f64>) {
    let spec = JobSpec::from_toml_str(&format!(
        r#"
name = "browser"
seed = 1
device = "{request}"
[model]
{model}
[dataset]
kind = "idx"
path = "mnist"
[optimizer]
lr = 3e-3
[training]
batch_size = 32
max_steps = {steps}
log_every = 1
"#
    ))
    .expect("valid spec");
    let data = data::load(&spec.dataset, spec.seed, &mnist_subset()).expect("subset loads");
    let device = resolve_browser(request, None).await;
    let mut losses = Vec::new();
    let mut on_event = |e: TrainEvent| {
        if let TrainEvent::Metric(m) = e
            && m.split == Split::Train
        {
            losses.push(m.loss);
        }
    };
    let summary = train(TrainRun::new(
        spec,
        data,
        device.device.clone(),
        &mut on_event,
    ))
    .await
    .expect("trains in the browser");
    assert_eq!(summary.steps, steps);
    console_log!("{}: losses {:?}", device.description, losses);
    (device.kind, losses)
}

fn assert_falls(losses: &[f64]) {
    let k = (losses.len() / 4).max(1);
    let head: f64 = losses[..k].iter().sum::<f64>() / k as f64;
    let tail: f64 = losses[losses.len() - k..].iter().sum::<f64>() / k as f64;
    assert!(
        tail < head * 0.8,
        "loss should fall: first {k} mean {head}, last {k} mean {tail}: {losses:?}"
    );
}

#[wasm_bindgen_test]
async fn mlp_trains_on_the_cpu_backend_in_the_browser() {
    let (kind, losses) = train_in_browser(DeviceRequest::Cpu, MLP, 40).await;
    assert_eq!(kind, DeviceRequest::Cpu);
    assert_falls(&losses);
}

/// The CNN on the CPU runs Kiln's own convolution and pooling (`model::cpu_ops`), which in
/// wasm32 go without threads.
#[wasm_bindgen_test]
async fn cnn_trains_on_the_cpu_backend_in_the_browser() {
    let cnn = "kind = \"cnn\"\nconv = [{ channels = 8, kernel = 3, pool = 2 }]\nhidden = [32]";
    let (kind, losses) = train_in_browser(DeviceRequest::Cpu, cnn, 40).await;
    assert_eq!(kind, DeviceRequest::Cpu);
    assert_falls(&losses);
}

#[cfg(feature = "webgpu")]
#[wasm_bindgen_test]
async fn mlp_trains_on_webgpu_in_the_browser() {
    let (kind, losses) = train_in_browser(DeviceRequest::Webgpu, MLP, 16).await;
    assert_eq!(
        kind,
        DeviceRequest::Webgpu,
        "WebGPU adapter expected (Chromium runs with --enable-unsafe-webgpu)"
    );
    assert_falls(&losses);
}
