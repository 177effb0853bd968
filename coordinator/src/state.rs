//! `AppState`: what every handler and task shares.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast, watch};

use kiln_proto::protocol::{JobInfo, ServerEvent, WorkerInfo};

use crate::CoordinatorConfig;
use crate::artifact::ArtifactDir;
use crate::dataset::DatasetDir;
use crate::registry::Registry;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Events buffered per `/ws/events` client before it counts as lagging and is dropped.
const EVENT_BUFFER: usize = 4096;

/// Shared state; cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub config: CoordinatorConfig,
    pub store: Store,
    pub artifacts: ArtifactDir,
    pub datasets: DatasetDir,
    pub workers: Registry,
    /// Relayed ring links waiting for their other side.
    pub relay: Arc<crate::relay::Relay>,
    pub telemetry: Telemetry,
    /// Fan-out to `/ws/events` clients.
    pub events: broadcast::Sender<ServerEvent>,
    /// Wakes the scheduler.
    pub wake: Notify,
    /// Flips to `true` once when the coordinator shuts down.
    pub shutdown: watch::Receiver<bool>,
    /// When this coordinator started (the grace period for attempts left running).
    pub started: Instant,
    /// Bad bearer tokens by client address (`auth::require_token`).
    pub bad_tokens: crate::auth::BadTokens,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// `config.data_dir` must already be absolute and exist.
    pub fn new(config: CoordinatorConfig, store: Store, shutdown: watch::Receiver<bool>) -> Self {
        let artifacts = ArtifactDir::new(config.data_dir.join("artifacts"));
        let datasets = DatasetDir::new(config.data_dir.join("datasets"));
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        AppState(Arc::new(Shared {
            config,
            store,
            artifacts,
            datasets,
            workers: Registry::default(),
            relay: Arc::default(),
            telemetry: Telemetry::default(),
            events,
            wake: Notify::new(),
            shutdown,
            started: Instant::now(),
            bad_tokens: crate::auth::BadTokens::default(),
        }))
    }

    /// A worker is lost after this long without a frame.
    pub fn lost_timeout(&self) -> Duration {
        self.config.heartbeat_interval * 3
    }

    /// Tell clients about a job change; wake the scheduler when the queue may have moved.
    pub fn job_changed(&self, job: &JobInfo) {
        let _ = self.events.send(ServerEvent::Job { job: job.clone() });
        self.wake.notify_one();
    }

    pub fn worker_changed(&self, worker: &WorkerInfo) {
        let _ = self.events.send(ServerEvent::Worker {
            worker: worker.clone(),
        });
        self.wake.notify_one();
    }

    /// Publish a worker's current row, logging (not failing) if it cannot be read.
    pub async fn publish_worker(&self, id: &str) {
        match self.store.worker(id).await {
            Ok(w) => self.worker_changed(&w),
            Err(e) => tracing::warn!(worker_id = id, error = %e, "cannot read worker"),
        }
    }
}

/// Resolves once the coordinator shuts down (holds no lock across awaits, unlike
/// `watch::Receiver::wait_for`'s guard).
pub async fn shutting_down(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|down| *down).await;
}
