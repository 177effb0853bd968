//! kiln-proto: the contract every part of Kiln agrees on.
//!
//! - [`spec`]: the job spec (TOML/JSON) and its validation.
//! - [`protocol`]: every wire type (REST bodies, WebSocket messages, `PROTOCOL_VERSION`).
//! - [`artifact`]: artifact names (the upload rule, checkpoint names).
//! - [`metric`]: metrics as they travel (`metrics.jsonl`, the wire, the store).
//! - [`sweep`]: grid sweeps over spec fields.
//! - [`fmt`]: human-readable values (ages) for the CLI and the dashboard.
//! - [`downsample`]: LTTB for metric charts (the coordinator's range queries, the dashboard).
//! - [`trainer`]: the page ⇄ in-browser trainer messages (a dedicated Web Worker).
//! - [`worker_session`]: the worker's protocol logic as a state machine without I/O (driven by
//!   tokio in `kiln worker`, later by a browser tab).
//!
//! No Burn, no tokio, no I/O: this crate compiles for native targets and for
//! `wasm32-unknown-unknown`, so the coordinator, the dashboard bundle, workers and the CLI
//! share it without pulling in the training core.

pub mod artifact;
pub mod dataset;
pub mod downsample;
pub mod fmt;
pub mod metric;
pub mod protocol;
pub mod spec;
pub mod sweep;
pub mod token;
pub mod trainer;
pub mod worker_session;

pub use spec::JobSpec;
