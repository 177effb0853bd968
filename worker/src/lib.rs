//! kiln-worker: a machine that trains.
//!
//! A worker dials out to a coordinator over WebSocket (so it works behind NAT), says what it
//! can run, and runs the jobs it is assigned, one at a time, each on its own OS thread with the
//! training core from kiln-train. Metrics are batched and flushed at least every 100 ms;
//! checkpoints and the final model are uploaded as artifacts over HTTP. When the connection
//! drops the job keeps training; the worker reconnects with backoff, re-announces the running
//! attempt and sends what it buffered.
//!
//! - `connection`: the tokio driver of `kiln_proto::worker_session` (socket, timers, uploads,
//!   the resume download); the protocol's decisions are the session's.
//! - `executor`: one job on one thread: data, resume, training, the final model's files.
//! - `datasets`: the cache of stored datasets (`kiln:sha256:…`), fetched by digest.
//! - `collective`: ring all-reduce and broadcast between the ranks of a data-parallel attempt,
//!   over TCP.
//! - `ddp`: the training core's gradient hook on that ring (one rank of a data-parallel job).
//! - `relay`: a ring link through the coordinator, for ranks that cannot reach each other.

pub mod collective;
mod connection;
pub mod datasets;
mod ddp;
mod executor;
mod relay;

use std::path::PathBuf;
use std::time::Duration;

use kiln_proto::spec::DeviceRequest;

pub use connection::run;

/// How a worker is set up (`kiln worker` flags, or `kiln up`).
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator base URL, `http(s)://host:port`.
    pub server: String,
    pub token: String,
    /// Which device to train on (`auto` picks the best one).
    pub device: DeviceRequest,
    /// Stable id; reconnects with the same id re-attach the running job.
    pub worker_id: String,
    /// Shown in the dashboard.
    pub name: String,
    /// Base directory for relative dataset paths in job specs.
    pub data_root: PathBuf,
    /// Where stored datasets are cached (default: the user's cache dir, `kiln/datasets`).
    pub cache_dir: PathBuf,
    /// The cache's size limit; the least recently used datasets go first.
    pub cache_max_bytes: u64,
    /// Longest wait between reconnect attempts.
    pub max_backoff: Duration,
    /// Where to accept data-parallel peers, `IP:PORT` or `HOST:PORT` (a name is advertised as
    /// given). `None`: any port, on the address this machine reaches the coordinator from. A
    /// host of `0.0.0.0` listens everywhere and advertises that address with the given port.
    pub peer_addr: Option<String>,
}

/// Default size limit of the dataset cache: 20 GB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 20_000_000_000;

/// `<user cache dir>/kiln/datasets` (e.g. `~/.cache/kiln/datasets`).
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(|| PathBuf::from(".kiln-cache"))
        .join("kiln")
        .join("datasets")
}

impl WorkerConfig {
    pub fn new(server: impl Into<String>, token: impl Into<String>) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_string());
        // Unique enough between restarts on one host: the clock and the process id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let suffix = nanos ^ std::process::id().rotate_left(16);
        WorkerConfig {
            server: server.into(),
            token: token.into(),
            device: DeviceRequest::Auto,
            worker_id: format!("{host}-{suffix:08x}"),
            name: host,
            data_root: PathBuf::from("."),
            cache_dir: default_cache_dir(),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            max_backoff: Duration::from_secs(10),
            peer_addr: None,
        }
    }
}
