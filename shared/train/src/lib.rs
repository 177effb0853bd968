//! kiln-train: Kiln's training core, on Burn.
//!
//! - [`data`]: datasets (IDX, CSV, text, synthetic), splits and data order.
//! - [`model`]: the model zoo (`mlp`, `cnn`, `charlm`).
//! - [`train`]: the training loop, checkpoints and the gradient hook.
//! - [`driver`] (native): one run of a spec from device and data to final files, reported to
//!   a [`driver::RunSink`] (the CLI's run folder, a worker's protocol events).
//! - [`device`]: turning a [`kiln_proto::spec::DeviceRequest`] into a Burn device.
//!
//! The job spec and the metric types it consumes and produces live in `kiln-proto`.
//! This crate compiles for native targets and for `wasm32-unknown-unknown`; it knows nothing
//! about tokio, axum, sqlx or the file system beyond [`data::FsSource`].

pub mod data;
pub mod device;
#[cfg(not(target_arch = "wasm32"))]
pub mod driver;
pub mod model;
pub mod predict;
pub mod train;

/// Burn's CPU backend keeps one process-wide RNG: unit tests that train take turns, so that
/// runs meant to be reproducible do not interleave their draws.
#[cfg(test)]
pub(crate) fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
