//! `/ws/worker`: one socket per worker process.
//!
//! Hello → (re-attach running attempts) → Welcome → messages until the socket closes, the
//! worker is superseded or lost, or the coordinator shuts down. Each message that changes a
//! job is one store transaction; events fan out to `/ws/events` clients.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span, warn};

use kiln_proto::protocol::{
    AttemptOutcome, AttemptRef, Capabilities, CloseReason, CoordinatorMessage, MetricPoint,
    PROTOCOL_VERSION, ServerEvent, WorkerMessage,
};

use super::{ReadEnd, end_reason, goodbye, next_text, read_hello, send_json};
use crate::auth::Caller;
use crate::registry::Outbound;
use crate::state::AppState;

/// Job progress events from metrics are sent at most this often per worker.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

#[utoipa::path(
    get,
    path = "/ws/worker",
    tag = "websocket",
    description = "WebSocket for workers (worker or admin token). First frame: WorkerMessage::Hello.",
    responses((status = 101, description = "Switching to the worker protocol"),
        (status = 400, content_type = "text/plain", body = String,
            description = "Not a WebSocket upgrade (axum's WebSocketUpgrade rejection)"),
        (status = 426, content_type = "text/plain", body = String,
            description = "The connection cannot be upgraded")),
    security(("bearer" = []))
)]
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    ws: WebSocketUpgrade,
) -> Response {
    let max = state.config.max_frame_bytes;
    let caller = caller.map(|Extension(c)| c);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            serve(state, sink, stream, caller)
        })
}

fn goodbye_json(reason: &CloseReason) -> String {
    serde_json::to_string(&CoordinatorMessage::Goodbye {
        reason: reason.clone(),
    })
    .unwrap_or_default()
}

struct Hello {
    worker_id: String,
    name: String,
    capabilities: Capabilities,
    running: Vec<AttemptRef>,
}

fn parse_hello(text: &str) -> Result<Hello, CloseReason> {
    match serde_json::from_str::<WorkerMessage>(text) {
        Ok(WorkerMessage::Hello {
            worker_id,
            name,
            capabilities,
            running,
            ..
        }) if !worker_id.is_empty() => Ok(Hello {
            worker_id,
            name,
            capabilities,
            running,
        }),
        Ok(WorkerMessage::Hello { .. }) => Err(CloseReason::BadMessage {
            message: "the hello's `worker_id` is empty".into(),
        }),
        Ok(_) => Err(CloseReason::BadMessage {
            message: "the first frame must be a hello".into(),
        }),
        Err(e) => Err(CloseReason::BadMessage {
            message: format!("bad hello: {e}"),
        }),
    }
}

/// Serve one worker connection until it ends. `caller`: the token it connected with (none in
/// tests that drive the protocol directly).
pub async fn serve<S, R, E>(state: AppState, mut sink: S, mut stream: R, caller: Option<Caller>)
where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: std::error::Error + Send + 'static,
{
    let max_frame = state.config.max_frame_bytes;
    let hello = match read_hello(&mut stream, max_frame)
        .await
        .and_then(|text| parse_hello(&text).map_err(Some))
    {
        Ok(hello) => hello,
        Err(reason) => {
            if let Some(reason) = reason {
                info!(?reason, "refusing a worker connection");
                goodbye(&mut sink, goodbye_json(&reason), &reason).await;
            }
            return;
        }
    };
    if let Some(bound) = caller.as_ref().and_then(|c| c.token.worker_id.as_deref())
        && bound != hello.worker_id
    {
        let reason = CloseReason::BadMessage {
            message: format!(
                "this worker token is bound to worker `{bound}`; the hello says `{}`",
                hello.worker_id
            ),
        };
        info!(?reason, "refusing a worker connection");
        goodbye(&mut sink, goodbye_json(&reason), &reason).await;
        return;
    }
    let span = info_span!("worker", worker_id = %hello.worker_id);
    session(state, sink, stream, hello, caller)
        .instrument(span)
        .await;
}

async fn session<S, R, E>(
    state: AppState,
    mut sink: S,
    mut stream: R,
    hello: Hello,
    caller: Option<Caller>,
) where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: std::error::Error + Send + 'static,
{
    let id = hello.worker_id.clone();
    let keep_draining = !hello.running.is_empty();
    let worker = match state
        .store
        .connect_worker(&id, &hello.name, &hello.capabilities, keep_draining)
        .await
    {
        Ok(w) => w,
        Err(e) => {
            warn!(error = %e, "cannot record the worker; closing");
            return;
        }
    };
    // Its artifacts are checked against the token it connected with.
    if let Some(caller) = &caller
        && let Err(e) = state.store.set_worker_token(&id, caller.token.id).await
    {
        warn!(error = %e, "cannot record the worker's token; closing");
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (conn_id, old) = state.workers.connect(
        &id,
        hello.capabilities.clone(),
        worker.draining,
        hello.running.clone(),
        tx,
    );
    if let Some(old) = old {
        info!("a new connection supersedes the old one");
        let _ = old.send(Outbound::Close(CloseReason::Superseded));
    }
    info!(name = %hello.name, running = hello.running.len(), "worker connected");
    if let Err(e) = reattach(&state, &id, &hello.running).await {
        warn!(error = %e, "cannot re-attach running attempts");
    }
    // Only now may the scheduler pick it: an attempt assigned before the reconcile would
    // look like one this hello left out, and be failed.
    state.workers.set_ready(&id, conn_id);
    if let Err(e) = state.store.worker_ready(&id, &state.node).await {
        warn!(error = %e, "cannot record the worker's coordinator");
    }
    if let Some(cluster) = &state.cluster {
        // A socket of it left on another coordinator is stale now.
        cluster.send(crate::cluster::BusMessage::Superseded {
            worker_id: id.clone(),
        });
    }
    let welcome = CoordinatorMessage::Welcome {
        protocol_version: PROTOCOL_VERSION,
        worker_id: id.clone(),
        heartbeat_interval_ms: u64::try_from(state.config.heartbeat_interval.as_millis())
            .unwrap_or(u64::MAX),
    };
    if send_json(&mut sink, &welcome).await {
        state.publish_worker(&id).await;
        let mut conn = Conn {
            state: &state,
            id: &id,
            conn_id,
            last_progress: None,
            mine: HashMap::new(),
        };
        conn.run(&mut sink, &mut stream, &mut rx).await;
    }
    if state.workers.disconnect(&id, conn_id) {
        info!("worker disconnected");
        if let Err(e) = state.store.worker_disconnected(&id, &state.node).await {
            warn!(error = %e, "cannot record the disconnect");
        }
        state.publish_worker(&id).await;
    }
}

/// After a hello: attempts the worker still runs stay attached; attempts the database gives
/// this worker but it no longer runs have failed; attempts it runs that are no longer current
/// (declared lost meanwhile) are cancelled on the worker.
async fn reattach(state: &AppState, id: &str, running: &[AttemptRef]) -> anyhow::Result<()> {
    let claimed: HashSet<AttemptRef> = running.iter().copied().collect();
    let mut attached = HashSet::new();
    for r in state.store.running_attempts().await? {
        if r.worker_id != id {
            continue;
        }
        if claimed.contains(&r.attempt) {
            info!(
                job_id = r.attempt.job_id,
                attempt = r.attempt.attempt,
                "re-attached"
            );
            attached.insert(r.attempt);
        } else if let Some(job) = state
            .store
            .finish_attempt(
                r.attempt,
                AttemptOutcome::Failed,
                Some("worker lost (it reconnected without this attempt)"),
                None,
                true,
            )
            .await?
        {
            state.job_changed(&job);
            let ranks = state.store.attempt_workers(r.attempt).await?;
            crate::scheduler::stop_other_ranks(state, r.attempt, &ranks, id).await;
        }
    }
    for attempt in claimed.difference(&attached) {
        info!(
            job_id = attempt.job_id,
            "cancelling an attempt that is no longer current"
        );
        state.workers.send(
            id,
            Outbound::Message(CoordinatorMessage::Cancel { attempt: *attempt }),
        );
    }
    Ok(())
}

struct Conn<'a> {
    state: &'a AppState,
    id: &'a str,
    conn_id: u64,
    last_progress: Option<Instant>,
    /// Attempts asked about: whether this worker is one of their ranks.
    mine: HashMap<AttemptRef, bool>,
}

impl Conn<'_> {
    async fn run<S, R, E>(
        &mut self,
        sink: &mut S,
        stream: &mut R,
        rx: &mut mpsc::UnboundedReceiver<Outbound>,
    ) where
        S: Sink<Message> + Unpin + Send,
        R: Stream<Item = Result<Message, E>> + Unpin + Send,
        E: std::error::Error + Send + 'static,
    {
        let mut shutdown = std::pin::pin!(crate::state::shutting_down(self.state.shutdown.clone()));
        let max_frame = self.state.config.max_frame_bytes;
        loop {
            let state: &AppState = self.state;
            let registry = &state.workers;
            let (id, conn_id) = (self.id, self.conn_id);
            tokio::select! {
                frame = next_text(stream, || registry.touch(id, conn_id)) => match frame {
                    Ok(text) => {
                        registry.set_handling(id, conn_id, true);
                        let handled = self.handle(&text).await;
                        registry.set_handling(id, conn_id, false);
                        if let Err(reason) = handled {
                            warn!(?reason, "closing the worker's socket");
                            goodbye(sink, goodbye_json(&reason), &reason).await;
                            return;
                        }
                    }
                    Err(end) => {
                        if let ReadEnd::Error(e) = &end {
                            debug!(error = %e, "worker socket error");
                        }
                        if let Some(reason) = end_reason(end, max_frame) {
                            warn!(?reason, "closing the worker's socket");
                            goodbye(sink, goodbye_json(&reason), &reason).await;
                        }
                        return;
                    }
                },
                out = rx.recv() => match out {
                    Some(Outbound::Message(msg)) => {
                        if !send_json(sink, &msg).await {
                            return;
                        }
                    }
                    Some(Outbound::Close(reason)) => {
                        goodbye(sink, goodbye_json(&reason), &reason).await;
                        return;
                    }
                    // Dropped by the registry: the worker missed its heartbeats.
                    None => {
                        let _ = sink.close().await;
                        return;
                    }
                },
                _ = &mut shutdown => {
                    let reason = CloseReason::ShuttingDown;
                    goodbye(sink, goodbye_json(&reason), &reason).await;
                    return;
                }
            }
        }
    }

    /// Handle one message; `Err` closes the socket with that reason.
    async fn handle(&mut self, text: &str) -> Result<(), CloseReason> {
        let msg: WorkerMessage =
            serde_json::from_str(text).map_err(|e| CloseReason::BadMessage {
                message: format!("cannot parse the message: {e}"),
            })?;
        // A worker speaks only for the attempts it is a rank of (the job's current attempt is
        // checked by each handler): another worker's job is not its to report on.
        let attempt = match &msg {
            WorkerMessage::Started { attempt, .. }
            | WorkerMessage::Metrics { attempt, .. }
            | WorkerMessage::Logs { attempt, .. }
            | WorkerMessage::Checkpoint { attempt, .. }
            | WorkerMessage::Controlled { attempt, .. }
            | WorkerMessage::Finished { attempt, .. } => Some(*attempt),
            WorkerMessage::Hello { .. } | WorkerMessage::Heartbeat { .. } => None,
        };
        if let Some(attempt) = attempt {
            match self.is_mine(attempt).await {
                Ok(true) => {}
                Ok(false) => {
                    warn!(
                        job_id = attempt.job_id,
                        attempt = attempt.attempt,
                        "a message about an attempt this worker does not run; ignored"
                    );
                    return Ok(());
                }
                Err(e) => {
                    warn!(error = format!("{e:#}"), "cannot check a message's attempt");
                    return Ok(());
                }
            }
        }
        let result = match msg {
            WorkerMessage::Hello { .. } => {
                return Err(CloseReason::BadMessage {
                    message: "hello may only be the first frame".into(),
                });
            }
            WorkerMessage::Heartbeat { running } => {
                if self
                    .state
                    .workers
                    .set_running(self.id, self.conn_id, running)
                {
                    self.state.wake.notify_one();
                }
                self.state
                    .store
                    .touch_worker(self.id)
                    .await
                    .map_err(Into::into)
            }
            WorkerMessage::Started {
                attempt,
                device,
                total_steps,
                start_step,
            } => {
                info!(job_id = attempt.job_id, attempt = attempt.attempt, %device, total_steps, start_step, "started");
                self.started(attempt, total_steps, start_step).await
            }
            WorkerMessage::Metrics { attempt, points } => self.metrics(attempt, points).await,
            WorkerMessage::Logs { attempt, lines } => {
                match self.state.store.insert_logs(attempt, &lines).await {
                    Ok(true) => {
                        self.state.publish(ServerEvent::Logs {
                            job_id: attempt.job_id,
                            lines,
                        });
                        Ok(())
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
            WorkerMessage::Checkpoint {
                attempt,
                step,
                artifact,
            } => match self
                .state
                .store
                .announce_checkpoint(attempt.job_id, &artifact)
                .await
            {
                Ok(true) => {
                    info!(job_id = attempt.job_id, step, %artifact, "checkpoint");
                    Ok(())
                }
                Ok(false) => {
                    warn!(job_id = attempt.job_id, step, %artifact, "announced a checkpoint that is not stored");
                    Ok(())
                }
                Err(e) => Err(e.into()),
            },
            WorkerMessage::Controlled {
                attempt,
                step,
                control,
            } => match self.state.store.controlled(attempt, step, control).await {
                Ok(Some((job, line))) => {
                    info!(
                        job_id = attempt.job_id,
                        step,
                        "controlled: {}",
                        control.describe()
                    );
                    self.state.publish(ServerEvent::Logs {
                        job_id: attempt.job_id,
                        lines: vec![line],
                    });
                    self.state.job_changed(&job);
                    Ok(())
                }
                Ok(None) => Ok(()),
                Err(e) => Err(e.into()),
            },
            WorkerMessage::Finished {
                attempt,
                outcome,
                error,
                steps,
                retryable,
            } => {
                // Workers older than the field say nothing: retried, as before.
                let retryable = retryable.unwrap_or(true);
                self.finished(attempt, outcome, error, steps, retryable)
                    .await
            }
        };
        if let Err(e) = result {
            // The store failed, not the worker: log and keep the connection.
            warn!(error = format!("{e:#}"), "cannot handle a worker message");
        }
        Ok(())
    }

    async fn is_mine(&mut self, attempt: AttemptRef) -> anyhow::Result<bool> {
        if let Some(&mine) = self.mine.get(&attempt) {
            return Ok(mine);
        }
        let ranks = self.state.store.attempt_workers(attempt).await?;
        let mine = ranks.iter().any(|w| w == self.id);
        // Ranks are fixed once an attempt exists; an unknown attempt is asked again.
        if !ranks.is_empty() {
            self.mine.insert(attempt, mine);
        }
        Ok(mine)
    }

    async fn started(&self, attempt: AttemptRef, total: u64, start: u64) -> anyhow::Result<()> {
        // Rank 0 speaks for the attempt: a later rank's start must not set the job's step
        // back while rank 0's metrics already moved it on.
        let ranks = self.state.store.attempt_workers(attempt).await?;
        if ranks.len() > 1 && ranks.first().map(String::as_str) != Some(self.id) {
            return Ok(());
        }
        if let Some(job) = self
            .state
            .store
            .start_attempt(attempt, total, start)
            .await?
        {
            self.state.job_changed(&job);
        }
        Ok(())
    }

    async fn metrics(
        &mut self,
        attempt: AttemptRef,
        points: Vec<kiln_proto::metric::Metric>,
    ) -> anyhow::Result<()> {
        if !self.state.store.insert_metrics(attempt, &points).await? {
            debug!(
                job_id = attempt.job_id,
                "metrics of an attempt that is not current"
            );
            return Ok(());
        }
        self.state
            .telemetry
            .metric_points
            .inc_by(points.len() as u64);
        if self.state.has_listeners() {
            let points = points
                .into_iter()
                .map(|metric| MetricPoint {
                    attempt: attempt.attempt,
                    metric,
                })
                .collect();
            self.state.publish(ServerEvent::Metrics {
                job_id: attempt.job_id,
                points,
            });
            if self
                .last_progress
                .is_none_or(|t| t.elapsed() >= PROGRESS_EVERY)
            {
                self.last_progress = Some(Instant::now());
                let job = self.state.store.job(attempt.job_id).await?;
                self.state.publish(ServerEvent::Job { job });
            }
        }
        Ok(())
    }

    async fn finished(
        &self,
        attempt: AttemptRef,
        outcome: AttemptOutcome,
        error: Option<String>,
        steps: u64,
        retryable: bool,
    ) -> anyhow::Result<()> {
        self.state.workers.finished(self.id, self.conn_id, attempt);
        let ranks = self.state.store.attempt_workers(attempt).await?;
        let rank = ranks.iter().position(|w| w == self.id).unwrap_or(0);
        if rank > 0 && outcome != AttemptOutcome::Failed {
            // Rank 0 speaks for the attempt; another rank's end only frees its worker.
            debug!(job_id = attempt.job_id, rank, ?outcome, "rank finished");
            self.state.wake.notify_one();
            self.state.publish_worker(self.id).await;
            return Ok(());
        }
        let error = match error {
            Some(e) if ranks.len() > 1 => {
                Some(format!("rank {rank} ({}) of {}: {e}", self.id, ranks.len()))
            }
            other => other,
        };
        // Only rank 0's step count is the job's.
        let steps = (rank == 0).then_some(steps);
        let job = self
            .state
            .store
            .finish_attempt(attempt, outcome, error.as_deref(), steps, retryable)
            .await?;
        match job {
            Some(job) => {
                info!(
                    job_id = job.id,
                    attempt = attempt.attempt,
                    rank,
                    ?outcome,
                    state = job.state.as_str(),
                    "finished"
                );
                self.state.job_changed(&job);
                crate::scheduler::stop_other_ranks(self.state, attempt, &ranks, self.id).await;
                self.state.publish_worker(self.id).await;
            }
            None => {
                debug!(
                    job_id = attempt.job_id,
                    "finish of an attempt that is not current"
                );
                // The worker may be free now.
                self.state.wake.notify_one();
            }
        }
        Ok(())
    }
}
