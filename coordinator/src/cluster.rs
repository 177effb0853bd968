//! Several coordinators on one PostgreSQL database.
//!
//! Workers and dashboards may connect to any `kiln serve` that shares the database. Each
//! process is a *node* (a random id per start). What they share:
//! - **the database**: jobs, attempts, metrics, tokens, and which node holds each worker's
//!   socket (`workers.node`); every node writes its heartbeat (`coordinators`);
//! - **a bus** (PostgreSQL LISTEN/NOTIFY, channel `kiln_bus`): every event a node publishes
//!   (job and worker changes, metrics, logs) reaches the `/ws/events` clients of every node,
//!   and a message for a worker (assign, cancel, control) reaches the node that holds its
//!   socket. Messages from one node arrive in the order it sent them;
//! - **the scheduling lease** (`store::cluster::Lease`, a session advisory lock): exactly one
//!   node schedules and judges lost workers at a time; when it dies, PostgreSQL drops its
//!   connection and another node takes the lease at its next tick (half a heartbeat
//!   interval);
//! - **artifacts and datasets**: a data directory both can reach (a shared volume).
//!
//! Every node watches its own workers' sockets (a silent one is disconnected there); the
//! scheduling node also disconnects the workers of nodes that stopped writing their heartbeat.
//! On SQLite there is one node and none of this runs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use kiln_proto::protocol::{CloseReason, CoordinatorMessage, ServerEvent};

use crate::registry::Outbound;
use crate::state::AppState;
use crate::store::cluster::{Lease, bus_listener};

/// What one node tells the others.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "built once and serialized at once; boxing would only add an allocation"
)]
pub enum BusMessage {
    /// For every node's `/ws/events` clients.
    Event { event: ServerEvent },
    /// For the worker's socket, on whichever node holds it.
    ToWorker {
        worker_id: String,
        message: CoordinatorMessage,
    },
    /// The worker connected to the sending node: a socket of it left elsewhere is stale.
    Superseded { worker_id: String },
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    message: BusMessage,
}

/// This node's part in a cluster of coordinators (see the module docs).
pub struct Cluster {
    url: String,
    addr: String,
    started_ms: i64,
    outbox: mpsc::UnboundedSender<BusMessage>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<BusMessage>>>,
    lease: tokio::sync::Mutex<Lease>,
    leader: AtomicBool,
    /// When [`Cluster::tick`] last wrote the heartbeat.
    last_tick: Mutex<Option<Instant>>,
}

impl Cluster {
    /// `url`: the PostgreSQL database; `addr`: where this node listens (shown in
    /// `coordinators`).
    pub fn new(url: &str, addr: &str) -> Cluster {
        let (outbox, inbox) = mpsc::unbounded_channel();
        Cluster {
            url: url.to_string(),
            addr: addr.to_string(),
            started_ms: crate::store::now_ms(),
            outbox,
            inbox: Mutex::new(Some(inbox)),
            lease: tokio::sync::Mutex::new(Lease::new(url)),
            leader: AtomicBool::new(false),
            last_tick: Mutex::new(None),
        }
    }

    /// Queue a message for the other nodes (sent in order by [`spawn`]'s sender task).
    pub fn send(&self, message: BusMessage) {
        let _ = self.outbox.send(message);
    }

    /// Whether this node held the scheduling lease at its last [`Cluster::tick`].
    pub fn leads(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// Whether `period` passed since the last [`Cluster::tick`] (then the caller ticks).
    pub fn due(&self, period: Duration) -> bool {
        let mut last = self.last_tick.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < period) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }

    /// Write this node's heartbeat and check or take the scheduling lease. Returns whether
    /// this node schedules now.
    pub async fn tick(&self, state: &AppState) -> bool {
        if let Err(e) = state
            .store
            .node_heartbeat(&state.node, &self.addr, self.started_ms)
            .await
        {
            warn!(error = %e, "cannot write this coordinator's heartbeat");
        }
        let leads = self.lease.lock().await.hold().await;
        self.leader.store(leads, Ordering::Relaxed);
        leads
    }

    /// A graceful stop: give the lease back and leave the node list.
    pub async fn stop(&self, state: &AppState) {
        self.leader.store(false, Ordering::Relaxed);
        self.lease.lock().await.release().await;
        if let Err(e) = state.store.forget_node(&state.node).await {
            warn!(error = %e, "cannot remove this coordinator from the node list");
        }
    }
}

/// Start the bus: a sender task (this node's messages, in order) and a listener task (the
/// other nodes'). Both end when the coordinator shuts down. Fails if the listener cannot
/// connect.
pub async fn spawn(state: &AppState) -> anyhow::Result<()> {
    let Some(cluster) = &state.cluster else {
        return Ok(());
    };
    let mut listener = bus_listener(&cluster.url).await?;
    let mut inbox = cluster
        .inbox
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .ok_or_else(|| anyhow::anyhow!("the bus was started twice"))?;
    let sender = state.clone();
    tokio::spawn(async move {
        let mut shutdown = std::pin::pin!(crate::state::shutting_down(sender.shutdown.clone()));
        loop {
            let message = tokio::select! {
                m = inbox.recv() => match m { Some(m) => m, None => break },
                _ = &mut shutdown => break,
            };
            let envelope = Envelope {
                from: sender.node.clone(),
                message,
            };
            let payload = match serde_json::to_string(&envelope) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "cannot encode a bus message");
                    continue;
                }
            };
            if let Err(e) = sender.store.notify_bus(&payload).await {
                warn!(error = %e, "cannot send a message to the other coordinators");
            }
        }
    });
    let receiver = state.clone();
    tokio::spawn(async move {
        let mut shutdown = std::pin::pin!(crate::state::shutting_down(receiver.shutdown.clone()));
        loop {
            let notification = tokio::select! {
                n = listener.recv() => n,
                _ = &mut shutdown => break,
            };
            match notification {
                Ok(n) => receive(&receiver, n.payload()).await,
                Err(e) => {
                    // PgListener reconnects at the next recv; what was sent meanwhile is lost.
                    warn!(error = %e, "the bus listener lost its connection; reconnecting");
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
            }
        }
    });
    Ok(())
}

async fn receive(state: &AppState, payload: &str) {
    let stored;
    let text = match payload.strip_prefix('@') {
        Some(id) => {
            let Ok(id) = id.parse::<i64>() else {
                warn!(payload, "a bus notification names no stored message");
                return;
            };
            match state.store.bus_payload(id).await {
                Ok(Some(p)) => {
                    stored = p;
                    stored.as_str()
                }
                Ok(None) => {
                    warn!(id, "a stored bus message was swept before it was read");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "cannot read a stored bus message");
                    return;
                }
            }
        }
        None => payload,
    };
    let envelope: Envelope = match serde_json::from_str(text) {
        Ok(e) => e,
        Err(e) => {
            warn!(error = %e, "cannot parse a bus message (another coordinator version?)");
            return;
        }
    };
    if envelope.from == state.node {
        return;
    }
    deliver(state, envelope.message);
}

/// Act on another node's message here.
fn deliver(state: &AppState, message: BusMessage) {
    match message {
        BusMessage::Event { event } => {
            let wake = match &event {
                ServerEvent::Job { .. } => true,
                ServerEvent::Worker { worker } => {
                    if worker.draining {
                        state.workers.set_draining(&worker.id);
                    }
                    true
                }
                _ => false,
            };
            let _ = state.events.send(event);
            if wake {
                state.wake.notify_one();
            }
        }
        BusMessage::ToWorker { worker_id, message } => {
            if !state.send_here(&worker_id, message) {
                debug!(%worker_id, "a message for a worker that is not connected here");
            }
        }
        BusMessage::Superseded { worker_id } => {
            state
                .workers
                .send(&worker_id, Outbound::Close(CloseReason::Superseded));
        }
    }
}
