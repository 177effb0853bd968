//! `AppState`: what every handler and task shares.

use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast, watch};

use kiln_proto::protocol::{Capabilities, CoordinatorMessage, JobInfo, ServerEvent, WorkerInfo};

use crate::CoordinatorConfig;
use crate::artifact::ArtifactDir;
use crate::cluster::{BusMessage, Cluster};
use crate::dataset::DatasetDir;
use crate::registry::{Outbound, Registry};
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
    /// This coordinator process (random per start): `workers.node` names it.
    pub node: String,
    /// The other coordinators on the same PostgreSQL database (`None` on SQLite).
    pub cluster: Option<Cluster>,
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
        Self::with_cluster(config, store, shutdown, None)
    }

    /// As [`AppState::new`], as a node of `cluster` (PostgreSQL).
    pub fn with_cluster(
        config: CoordinatorConfig,
        store: Store,
        shutdown: watch::Receiver<bool>,
        cluster: Option<Cluster>,
    ) -> Self {
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
            node: format!("{}-{:08x}", std::process::id(), rand::random::<u32>()),
            cluster,
        }))
    }

    /// A worker is lost after this long without a frame.
    pub fn lost_timeout(&self) -> Duration {
        self.config.heartbeat_interval * 3
    }

    /// Send an event to this coordinator's `/ws/events` clients and to the other
    /// coordinators' (through the cluster's bus).
    pub fn publish(&self, event: ServerEvent) {
        if let Some(cluster) = &self.cluster {
            cluster.send(BusMessage::Event {
                event: event.clone(),
            });
        }
        let _ = self.events.send(event);
    }

    /// Whether anyone listens to events (here, or possibly on another coordinator).
    pub fn has_listeners(&self) -> bool {
        self.cluster.is_some() || self.events.receiver_count() > 0
    }

    /// Tell clients about a job change; wake the scheduler when the queue may have moved.
    pub fn job_changed(&self, job: &JobInfo) {
        self.publish(ServerEvent::Job { job: job.clone() });
        self.wake.notify_one();
    }

    pub fn worker_changed(&self, worker: &WorkerInfo) {
        self.publish(ServerEvent::Worker {
            worker: worker.clone(),
        });
        self.wake.notify_one();
    }

    /// Whether this coordinator schedules: always on SQLite; on PostgreSQL, the one that
    /// holds the scheduling lease.
    pub fn schedules(&self) -> bool {
        self.cluster.as_ref().is_none_or(Cluster::leads)
    }

    /// Send `message` to worker `id`, over its socket here or through the coordinator that
    /// holds it. `false` if it is connected to no coordinator.
    pub async fn send_to_worker(&self, id: &str, message: CoordinatorMessage) -> bool {
        if let Some(cluster) = &self.cluster
            && self.workers.capabilities(id).is_none()
        {
            return match self.store.worker(id).await {
                Ok(w) if w.connected => {
                    cluster.send(BusMessage::ToWorker {
                        worker_id: id.to_string(),
                        message,
                    });
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    tracing::warn!(worker_id = id, error = %e, "cannot read worker");
                    false
                }
            };
        }
        self.send_here(id, message)
    }

    /// Send `message` over worker `id`'s socket on this coordinator (an Assign also marks the
    /// attempt as run by it). `false` if it is not connected here.
    pub fn send_here(&self, id: &str, message: CoordinatorMessage) -> bool {
        let assigned = match &message {
            CoordinatorMessage::Assign { attempt, .. } => Some(*attempt),
            _ => None,
        };
        let sent = self.workers.send(id, Outbound::Message(message));
        if sent && let Some(attempt) = assigned {
            self.workers.assigned(id, attempt);
        }
        sent
    }

    /// A connected worker's capabilities, wherever it is connected (`None` if nowhere).
    pub async fn worker_capabilities(&self, id: &str) -> Option<Capabilities> {
        if let Some(caps) = self.workers.capabilities(id) {
            return Some(caps);
        }
        self.cluster.as_ref()?;
        match self.store.worker(id).await {
            Ok(w) if w.connected => Some(w.capabilities),
            _ => None,
        }
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
