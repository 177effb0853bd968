//! The worker's side of `/ws/worker`: connect, hello, heartbeats, assignments, and the stream
//! of messages from the running job. Reconnects with exponential backoff; a job keeps running
//! while the socket is down and its messages wait in an outbox.

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use futures_util::{SinkExt, StreamExt};
use kiln_client::Client;
use kiln_proto::metric::Metric;
use kiln_proto::protocol::{
    AttemptRef, Capabilities, CloseReason, CoordinatorMessage, PROTOCOL_VERSION, WorkerMessage,
};
use kiln_proto::spec::DeviceRequest;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tracing::{Instrument, info, info_span, warn};

use crate::WorkerConfig;
use crate::executor::{self, ExecEvent, RunningJob, log_line};

/// Metrics are flushed at least this often while a job runs.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// Why the worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(
        "the coordinator speaks protocol {expected}, this worker {got}: upgrade the older side"
    )]
    ProtocolVersion { expected: u32, got: u32 },
    #[error("another worker connected with the same id ({0})")]
    Superseded(String),
    #[error("bad server URL {url:?}: {message}")]
    Url { url: String, message: String },
}

struct State {
    config: WorkerConfig,
    client: Client,
    capabilities: Capabilities,
    running: Option<RunningJob>,
    /// Messages not yet written to a socket.
    outbox: VecDeque<WorkerMessage>,
    /// Metrics waiting for the next flush.
    pending: Vec<Metric>,
    events: UnboundedReceiver<(AttemptRef, ExecEvent)>,
    events_tx: tokio::sync::mpsc::UnboundedSender<(AttemptRef, ExecEvent)>,
    /// Uploads run on their own task, in order, so the socket loop keeps heartbeating.
    uploads: UnboundedSender<Upload>,
    /// Messages whose uploads are done, and attempts whose last message went out.
    delivered: UnboundedReceiver<Delivery>,
}

/// Files to upload for an attempt, then a message to send once they are stored.
struct Upload {
    attempt: AttemptRef,
    files: Vec<(String, Vec<u8>)>,
    then: WorkerMessage,
    /// The attempt's last message: the job slot frees when it is delivered.
    last: bool,
}

enum Delivery {
    Message(WorkerMessage),
    /// The attempt's last message: queue it and free the job slot in one step, so a new
    /// assignment can never find the worker still busy.
    Last(AttemptRef, WorkerMessage),
}

fn ws_url(server: &str) -> Result<String, WorkerError> {
    let trimmed = server.trim_end_matches('/');
    let rest = if let Some(r) = trimmed.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = trimmed.strip_prefix("https://") {
        format!("wss://{r}")
    } else if trimmed.starts_with("ws://") || trimmed.starts_with("wss://") {
        trimmed.to_string()
    } else {
        return Err(WorkerError::Url {
            url: server.to_string(),
            message: "expected http://, https://, ws:// or wss://".to_string(),
        });
    };
    Ok(format!("{rest}/ws/worker"))
}

/// What this machine offers.
pub fn capabilities(device: DeviceRequest) -> Capabilities {
    let resolved = kiln_train::device::resolve(device);
    let (devices, device_names) = match resolved {
        Ok(d) if d.kind != DeviceRequest::Cpu => (
            vec![d.kind, DeviceRequest::Cpu],
            vec![d.description, "cpu".to_string()],
        ),
        _ => (
            vec![DeviceRequest::Cpu],
            vec!["cpu (burn flex)".to_string()],
        ),
    };
    Capabilities {
        devices,
        device_names,
        memory_mb: memory_mb(),
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn memory_mb() -> u64 {
    // /proc/meminfo where there is one; 0 (unknown) elsewhere.
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// Run a worker until `shutdown` resolves or a fatal error (protocol mismatch, superseded).
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let span = info_span!("worker", worker_id = %config.worker_id);
    run_worker(config, shutdown).instrument(span).await
}

async fn run_worker(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let url = ws_url(&config.server)?;
    let capabilities = capabilities(config.device);
    info!(devices = ?capabilities.devices, "worker starting");
    let (events_tx, events) = unbounded_channel();
    let (uploads, upload_rx) = unbounded_channel();
    let (deliver_tx, delivered) = unbounded_channel();
    let uploader_client =
        Client::new(&config.server, Some(config.token.clone())).map_err(|e| WorkerError::Url {
            url: config.server.clone(),
            message: e.to_string(),
        })?;
    tokio::spawn(uploader(uploader_client, upload_rx, deliver_tx).in_current_span());
    let mut state = State {
        client: Client::new(&config.server, Some(config.token.clone())).map_err(|e| {
            WorkerError::Url {
                url: config.server.clone(),
                message: e.to_string(),
            }
        })?,
        config,
        capabilities,
        running: None,
        outbox: VecDeque::new(),
        pending: Vec::new(),
        events,
        events_tx,
        uploads,
        delivered,
    };
    tokio::pin!(shutdown);
    let max_backoff = state.config.max_backoff;
    let mut backoff = new_backoff(max_backoff);
    loop {
        let result = tokio::select! {
            r = session(&mut state, &url) => r,
            () = &mut shutdown => {
                if let Some(job) = &state.running {
                    job.cancel.cancel();
                }
                return Ok(());
            }
        };
        match result {
            Ok(Connected::Yes) => backoff = new_backoff(max_backoff),
            Ok(Connected::No) => {}
            Err(fatal) => return Err(fatal),
        }
        let wait = backoff.next().unwrap_or(max_backoff);
        warn!(?wait, "disconnected from the coordinator; reconnecting");
        // Keep the job's events flowing into the outbox while we wait.
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                () = &mut shutdown => return Ok(()),
                Some((attempt, event)) = state.events.recv() => {
                    handle_exec_event(&mut state, attempt, event);
                }
                Some(delivery) = state.delivered.recv() => deliver(&mut state, delivery),
            }
        }
    }
}

fn deliver(state: &mut State, delivery: Delivery) {
    match delivery {
        Delivery::Message(msg) => state.outbox.push_back(msg),
        Delivery::Last(attempt, msg) => {
            if state.running.as_ref().is_some_and(|j| j.attempt == attempt)
                && let Some(job) = state.running.take()
            {
                // The thread has sent its last event; joining is immediate.
                let _ = job.thread.join();
            }
            state.outbox.push_back(msg);
        }
    }
}

/// Uploads files in order and hands back the message to send after each batch.
async fn uploader(
    client: Client,
    mut jobs: UnboundedReceiver<Upload>,
    done: UnboundedSender<Delivery>,
) {
    while let Some(job) = jobs.recv().await {
        let mut ok = true;
        for (name, bytes) in job.files {
            ok &= upload(&client, job.attempt, &name, bytes).await;
        }
        // A checkpoint notice only for a stored checkpoint; a finish notice always.
        let delivery = if job.last {
            Delivery::Last(job.attempt, job.then)
        } else if ok {
            Delivery::Message(job.then)
        } else {
            continue;
        };
        let _ = done.send(delivery);
    }
}

fn new_backoff(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
        .build()
}

enum Connected {
    Yes,
    No,
}

/// One connection, from dial to drop.
async fn session(state: &mut State, url: &str) -> Result<Connected, WorkerError> {
    let mut request = url.into_client_request().map_err(|e| WorkerError::Url {
        url: url.to_string(),
        message: e.to_string(),
    })?;
    let bearer = format!("Bearer {}", state.config.token);
    if let Ok(value) = bearer.parse() {
        request.headers_mut().insert("authorization", value);
    }
    // TCP_NODELAY: metric batches are small and latency-sensitive.
    let socket = match tokio_tungstenite::connect_async_with_config(request, None, true).await {
        Ok((socket, _)) => socket,
        Err(e) => {
            warn!("cannot connect to {url}: {e}");
            return Ok(Connected::No);
        }
    };
    let (mut sink, mut stream) = socket.split();
    let hello = WorkerMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_id: state.config.worker_id.clone(),
        name: state.config.name.clone(),
        capabilities: state.capabilities.clone(),
        running: state.running.iter().map(|j| j.attempt).collect(),
    };
    if send(&mut sink, &hello).await.is_err() {
        return Ok(Connected::No);
    }
    let heartbeat = loop {
        match stream.next().await {
            Some(Ok(Message::Text(text))) => match serde_json::from_str(&text) {
                Ok(CoordinatorMessage::Welcome {
                    heartbeat_interval_ms,
                    ..
                }) => break Duration::from_millis(heartbeat_interval_ms.max(10)),
                Ok(CoordinatorMessage::Goodbye { reason }) => return Err(fatal(reason, state)),
                _ => continue,
            },
            Some(Ok(Message::Close(frame))) => {
                if let Some(reason) = frame.and_then(|f| serde_json::from_str(&f.reason).ok()) {
                    return Err(fatal(reason, state));
                }
                return Ok(Connected::No);
            }
            Some(Ok(_)) => continue,
            _ => return Ok(Connected::No),
        }
    };
    info!("connected to {url}");
    let mut heartbeat_tick = tokio::time::interval(heartbeat);
    let mut flush_tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        // Drain the outbox first; a failed write keeps the message for the next connection.
        while let Some(msg) = state.outbox.front() {
            if send(&mut sink, msg).await.is_err() {
                return Ok(Connected::Yes);
            }
            state.outbox.pop_front();
        }
        tokio::select! {
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<CoordinatorMessage>(&text) {
                    Ok(msg) => handle_coordinator_message(state, msg).await?,
                    Err(e) => warn!("ignoring a message that does not parse: {e}"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return Ok(Connected::Yes),
                Some(Ok(_)) => {}
            },
            Some((attempt, event)) = state.events.recv() => {
                handle_exec_event(state, attempt, event);
            }
            Some(delivery) = state.delivered.recv() => deliver(state, delivery),
            _ = flush_tick.tick() => flush_metrics(state),
            _ = heartbeat_tick.tick() => {
                let running = state.running.iter().map(|j| j.attempt).collect();
                state.outbox.push_back(WorkerMessage::Heartbeat { running });
            }
        }
    }
}

fn fatal(reason: CloseReason, state: &State) -> WorkerError {
    match reason {
        CloseReason::ProtocolVersion { expected, got } => {
            WorkerError::ProtocolVersion { expected, got }
        }
        other => WorkerError::Superseded(format!("{} ({other:?})", state.config.worker_id)),
    }
}

async fn send<S>(sink: &mut S, msg: &WorkerMessage) -> Result<(), ()>
where
    S: futures_util::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(msg).map_err(|_| ())?;
    sink.send(Message::text(text)).await.map_err(|_| ())
}

fn flush_metrics(state: &mut State) {
    if state.pending.is_empty() {
        return;
    }
    let Some(job) = &state.running else {
        state.pending.clear();
        return;
    };
    let points = std::mem::take(&mut state.pending);
    state.outbox.push_back(WorkerMessage::Metrics {
        attempt: job.attempt,
        points,
    });
}

async fn handle_coordinator_message(
    state: &mut State,
    msg: CoordinatorMessage,
) -> Result<(), WorkerError> {
    match msg {
        CoordinatorMessage::Assign {
            attempt,
            spec,
            resume,
        } => {
            if let Some(job) = &state.running {
                if job.attempt == attempt {
                    return Ok(()); // already running it (re-sent after a reconnect)
                }
                warn!(?attempt, running = ?job.attempt, "assigned a job while busy; refusing");
                // Say what runs first, so the coordinator does not pick this worker again
                // until it is free.
                state.outbox.push_back(WorkerMessage::Heartbeat {
                    running: vec![job.attempt],
                });
                state.outbox.push_back(WorkerMessage::Finished {
                    attempt,
                    outcome: kiln_proto::protocol::AttemptOutcome::Failed,
                    error: Some("worker is busy with another job".to_string()),
                    steps: 0,
                    retryable: Some(true),
                });
                return Ok(());
            }
            info!(
                job_id = attempt.job_id,
                attempt = attempt.attempt,
                "assigned {}",
                spec.name
            );
            let resume_bytes = match &resume {
                Some(name) => {
                    let fetch = || state.client.download_artifact(attempt.job_id, name);
                    match fetch
                        .retry(ExponentialBuilder::default().with_max_times(5))
                        .await
                    {
                        Ok(bytes) => Some(bytes),
                        Err(e) => {
                            state.outbox.push_back(WorkerMessage::Finished {
                                attempt,
                                outcome: kiln_proto::protocol::AttemptOutcome::Failed,
                                error: Some(format!("cannot download checkpoint {name}: {e}")),
                                steps: 0,
                                retryable: Some(true),
                            });
                            return Ok(());
                        }
                    }
                }
                None => None,
            };
            match executor::spawn(
                attempt,
                spec,
                resume_bytes,
                state.config.device,
                &state.config.data_root,
                state.events_tx.clone(),
            ) {
                Ok(job) => state.running = Some(job),
                Err(e) => state.outbox.push_back(WorkerMessage::Finished {
                    attempt,
                    outcome: kiln_proto::protocol::AttemptOutcome::Failed,
                    error: Some(format!("cannot start the job thread: {e}")),
                    steps: 0,
                    retryable: Some(true),
                }),
            }
        }
        CoordinatorMessage::Cancel { attempt } => {
            if let Some(job) = &state.running
                && job.attempt.job_id == attempt.job_id
            {
                info!(job_id = attempt.job_id, "cancel requested");
                job.cancel.cancel();
            }
        }
        CoordinatorMessage::Goodbye { reason } => match reason {
            CloseReason::ShuttingDown | CloseReason::BadMessage { .. } => {}
            other => return Err(fatal(other, state)),
        },
        CoordinatorMessage::Welcome { .. } => {}
    }
    Ok(())
}

fn handle_exec_event(state: &mut State, attempt: AttemptRef, event: ExecEvent) {
    match event {
        ExecEvent::Started {
            device,
            total_steps,
            start_step,
        } => state.outbox.push_back(WorkerMessage::Started {
            attempt,
            device,
            total_steps,
            start_step,
        }),
        ExecEvent::Metric(m) => state.pending.push(m),
        ExecEvent::Log(text) => state.outbox.push_back(WorkerMessage::Logs {
            attempt,
            lines: vec![log_line(text)],
        }),
        ExecEvent::Checkpoint { step, bytes } => {
            // Metrics up to the checkpoint go out first, so none before it can be lost.
            flush_metrics(state);
            let name = kiln_proto::artifact::checkpoint_name(step);
            let _ = state.uploads.send(Upload {
                attempt,
                files: vec![(name.clone(), bytes)],
                then: WorkerMessage::Checkpoint {
                    attempt,
                    step,
                    artifact: name,
                },
                last: false,
            });
        }
        ExecEvent::Finished {
            outcome,
            error,
            retryable,
            steps,
            model,
            summary,
        } => {
            flush_metrics(state);
            if let Some(error) = &error {
                state.outbox.push_back(WorkerMessage::Logs {
                    attempt,
                    lines: vec![log_line(format!("error: {error}"))],
                });
            }
            let mut files = Vec::new();
            if let Some((config, weights)) = model {
                match kiln_train::train::export_safetensors(&config, &weights) {
                    Ok(bytes) => files.push(("model.safetensors".to_string(), bytes)),
                    Err(e) => warn!("safetensors export failed: {e}"),
                }
                files.push(("model.bpk".to_string(), weights));
                if let Ok(json) = serde_json::to_vec_pretty(&config) {
                    files.push(("model.json".to_string(), json));
                }
            }
            if let Some(summary) = summary
                && let Ok(json) = serde_json::to_vec_pretty(&summary)
            {
                files.push(("summary.json".to_string(), json));
            }
            let _ = state.uploads.send(Upload {
                attempt,
                files,
                then: WorkerMessage::Finished {
                    attempt,
                    outcome,
                    error,
                    steps,
                    retryable,
                },
                last: true,
            });
        }
    }
}

/// Upload with retries (the coordinator may be restarting). Returns whether it succeeded.
async fn upload(client: &Client, attempt: AttemptRef, name: &str, bytes: Vec<u8>) -> bool {
    let put = || client.upload_artifact(attempt.job_id, name, bytes.clone());
    let policy = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(12);
    match put.retry(policy).await {
        Ok(_) => true,
        Err(e) => {
            warn!(job_id = attempt.job_id, "upload of {name} failed: {e}");
            false
        }
    }
}
