//! kiln-shared: what every part of Kiln agrees on.
//!
//! - [`spec`]: the job spec (TOML/JSON) and its validation.
//! - [`sweep`]: grid sweeps over spec fields.
//! - [`data`]: datasets (IDX, CSV, text, synthetic), splits and data order.
//! - [`model`]: the model zoo (`mlp`, `cnn`, `charlm`).
//! - [`train`]: the training loop, checkpoints and the gradient hook.
//! - [`fmt`]: human-readable values (ages) for the CLI and the dashboard.
//! - [`downsample`]: LTTB for metric charts (the coordinator's range queries, the dashboard).
//! - [`device`]: turning a [`spec::DeviceRequest`] into a Burn device.
//!
//! This crate compiles for native targets and for `wasm32-unknown-unknown`; it knows nothing
//! about tokio, axum, sqlx or the file system beyond [`data::FsSource`].

#[cfg(feature = "train")]
pub mod data;
#[cfg(feature = "train")]
pub mod device;
pub mod downsample;
pub mod fmt;
pub mod metric;
#[cfg(feature = "train")]
pub mod model;
pub mod protocol;
pub mod spec;
pub mod sweep;
#[cfg(feature = "train")]
pub mod train;

pub use spec::JobSpec;
