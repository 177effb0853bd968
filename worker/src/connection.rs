//! The tokio driver of the worker's protocol: it owns the socket, the timers, the job thread,
//! uploads and the resume download, and hands everything that happens to
//! [`kiln_proto::worker_session::WorkerSession`], which decides what to send and do (hello,
//! heartbeats, the outbox, metric batches, upload-then-notify, refusals, cancels, fatal close
//! reasons, reconnect backoff). Uploads and the resume download run on their own tasks, so
//! the socket loop keeps heartbeating while they take their time; a job keeps running while
//! the socket is down and its messages wait in the session's outbox.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use kiln_client::Client;
use kiln_proto::protocol::{AttemptRef, Capabilities, CoordinatorMessage};
use kiln_proto::spec::DeviceRequest;
use kiln_proto::worker_session::{
    Action, Artifact, Fatal, Input, JobEvent, SessionConfig, WorkerSession,
};
use kiln_train::train::LiveControl;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::{Instrument, info, info_span, warn};

use crate::WorkerConfig;
use crate::datasets::DatasetCache;
use crate::executor::{self, RunningJob};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;
type Dial = Pin<Box<dyn Future<Output = Result<Socket, String>> + Send>>;

/// Why the worker stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator refused this worker (protocol version, superseded).
    #[error(transparent)]
    Refused(#[from] Fatal),
    #[error("bad server URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("--peer-addr {addr:?}: {message}")]
    PeerAddr { addr: String, message: String },
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
        peer_addr: None,
        browser: false,
        control: true,
    }
}

/// The address this machine reaches `server` from (no packet is sent: a UDP socket is only
/// pointed at it, and the OS picks the route). Async: resolving the name may take a while.
async fn local_ip_toward(server: &str) -> Option<std::net::IpAddr> {
    let (with_port, _) = crate::relay::authority(server)?;
    let target = tokio::net::lookup_host(with_port).await.ok()?.next()?;
    let bind = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    };
    let socket = tokio::net::UdpSocket::bind(bind).await.ok()?;
    socket.connect(target).await.ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Bind the listener data-parallel peers dial, and the address to advertise for it.
async fn peer_listener(
    config: &WorkerConfig,
) -> Result<(tokio::net::TcpListener, String), WorkerError> {
    let bad = |message: String| WorkerError::PeerAddr {
        addr: config.peer_addr.clone().unwrap_or_default(),
        message,
    };
    let toward = local_ip_toward(&config.server).await;
    let toward_or_loopback = toward.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    // An IP:PORT, or a HOST:PORT resolved here (and advertised as given, so that the peers
    // resolve the name themselves).
    let (bind, name): (std::net::SocketAddr, Option<&str>) = match &config.peer_addr {
        Some(text) => match text.parse() {
            Ok(addr) => (addr, None),
            Err(_) => {
                let mut found = tokio::net::lookup_host(text.as_str()).await.map_err(|e| {
                    bad(format!(
                        "neither IP:PORT nor a HOST:PORT that resolves: {e}"
                    ))
                })?;
                let addr = found
                    .next()
                    .ok_or_else(|| bad("the host name resolves to no address".into()))?;
                (addr, Some(text.as_str()))
            }
        },
        None => (std::net::SocketAddr::new(toward_or_loopback, 0), None),
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| bad(format!("cannot listen there: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| bad(format!("cannot read the bound address: {e}")))?;
    let advertised = match name {
        Some(name) if local.port() == bind.port() => name.to_string(),
        // Port 0 with a name: the name and the port the OS chose.
        Some(name) => match name.rsplit_once(':') {
            Some((host, _)) => format!("{host}:{}", local.port()),
            None => name.to_string(),
        },
        None if local.ip().is_unspecified() => {
            std::net::SocketAddr::new(toward_or_loopback, local.port()).to_string()
        }
        None => local.to_string(),
    };
    Ok((listener, advertised))
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
    let mut capabilities = capabilities(config.device);
    let (listener, peer_addr) = peer_listener(&config).await?;
    capabilities.peer_addr = Some(peer_addr);
    info!(devices = ?capabilities.devices, peer_addr = ?capabilities.peer_addr, "worker starting");
    let peer_listener = Some(std::sync::Arc::new(listener));
    // Artifact requests say which worker they are for: a worker token acts only for its
    // workers' attempts.
    let client = Client::new(&config.server, Some(config.token.clone()))
        .map_err(|e| WorkerError::Url {
            url: config.server.clone(),
            message: e.to_string(),
        })?
        .as_worker(&config.worker_id);
    let (events_tx, events) = unbounded_channel();
    let (results_tx, results) = unbounded_channel();
    let (uploads, upload_rx) = unbounded_channel();
    tokio::spawn(uploader(client.clone(), upload_rx, results_tx.clone()).in_current_span());
    let session = WorkerSession::new(SessionConfig {
        worker_id: config.worker_id.clone(),
        name: config.name.clone(),
        capabilities,
        max_backoff_ms: u64::try_from(config.max_backoff.as_millis()).unwrap_or(u64::MAX),
        seed: seed(),
    });
    let datasets = DatasetCache::new(config.cache_dir.clone(), config.cache_max_bytes);
    let mut driver = Driver {
        peer_listener,
        datasets,
        loaded: Default::default(),
        config,
        url,
        client,
        session,
        clock: Instant::now(),
        job: None,
        download: None,
        events_tx,
        events,
        results_tx,
        results,
        uploads,
        dialing: None,
        sink: None,
        stream: None,
    };
    driver.run(shutdown).await
}

/// Any value will do: it only spreads the reconnects of many workers.
fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ u64::from(std::process::id()).rotate_left(32)
}

/// Artifacts to store for an attempt, as [`Action::Upload`] `id`.
struct Upload {
    id: u64,
    attempt: AttemptRef,
    artifacts: Vec<Artifact>,
}

/// Uploads in order, one batch after the other, and reports each batch as an input.
async fn uploader(
    client: Client,
    mut jobs: UnboundedReceiver<Upload>,
    done: UnboundedSender<Input>,
) {
    while let Some(job) = jobs.recv().await {
        let mut ok = true;
        for artifact in job.artifacts {
            ok &= upload(&client, job.attempt, &artifact.name, artifact.bytes).await;
        }
        let input = if ok {
            Input::Uploaded { id: job.id }
        } else {
            Input::UploadFailed { id: job.id }
        };
        let _ = done.send(input);
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

struct Driver {
    config: WorkerConfig,
    /// Where data-parallel peers connect (shared with the job threads).
    peer_listener: Option<std::sync::Arc<tokio::net::TcpListener>>,
    url: String,
    /// For the resume and dataset downloads.
    client: Client,
    datasets: DatasetCache,
    /// The last job's stored dataset, loaded (see `executor::load_stored`).
    loaded: std::sync::Arc<std::sync::Mutex<Option<executor::Loaded>>>,
    session: WorkerSession,
    /// Time zero of the session's milliseconds.
    clock: Instant,
    job: Option<RunningJob>,
    download: Option<(AttemptRef, tokio::task::JoinHandle<()>)>,
    events_tx: UnboundedSender<(AttemptRef, JobEvent)>,
    /// The job thread's events.
    events: UnboundedReceiver<(AttemptRef, JobEvent)>,
    results_tx: UnboundedSender<Input>,
    /// Upload and download results.
    results: UnboundedReceiver<Input>,
    uploads: UnboundedSender<Upload>,
    dialing: Option<Dial>,
    sink: Option<SplitSink<Socket, Message>>,
    stream: Option<SplitStream<Socket>>,
}

impl Driver {
    async fn run(&mut self, shutdown: impl Future<Output = ()>) -> Result<(), WorkerError> {
        tokio::pin!(shutdown);
        loop {
            self.perform()?;
            self.transmit().await;
            if self.session.has_actions() {
                continue;
            }
            let deadline = self
                .session
                .poll_timeout()
                .map(|ms| self.clock + Duration::from_millis(ms));
            tokio::select! {
                dialed = poll_option(&mut self.dialing) => {
                    self.dialing = None;
                    match dialed {
                        Ok(socket) => {
                            let (sink, stream) = socket.split();
                            self.sink = Some(sink);
                            self.stream = Some(stream);
                            self.input(Input::Connected);
                        }
                        Err(e) => {
                            warn!("cannot connect to {}: {e}", self.url);
                            self.input(Input::ConnectFailed);
                            self.log_reconnect();
                        }
                    }
                }
                frame = next_frame(&mut self.stream) => self.frame(frame),
                Some((attempt, event)) = self.events.recv() => self.job_event(attempt, event),
                Some(input) = self.results.recv() => {
                    if let Input::ResumeDownloaded { attempt, .. } | Input::ResumeFailed { attempt, .. } = &input
                        && self.download.as_ref().is_some_and(|(a, _)| a == attempt)
                    {
                        self.download = None;
                    }
                    self.input(input);
                }
                () = sleep_until(deadline) => self.input(Input::Tick),
                () = &mut shutdown => {
                    if let Some(job) = &self.job {
                        job.stop();
                    }
                    if let Some((_, download)) = &self.download {
                        download.abort();
                    }
                    return Ok(());
                }
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn input(&mut self, input: Input) {
        let now = self.now_ms();
        self.session.handle(now, input);
    }

    /// Does what the session asks for.
    fn perform(&mut self) -> Result<(), WorkerError> {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Connect => self.dialing = Some(self.dial()?),
                Action::StartJob {
                    attempt,
                    spec,
                    resume,
                    group,
                    lr_changes,
                    controls,
                } => {
                    info!(
                        job_id = attempt.job_id,
                        attempt = attempt.attempt,
                        "assigned {}",
                        spec.name
                    );
                    let ctx = executor::JobContext {
                        worker_device: self.config.device,
                        data_root: self.config.data_root.clone(),
                        datasets: self.datasets.clone(),
                        client: self.client.clone(),
                        runtime: tokio::runtime::Handle::current(),
                        loaded: self.loaded.clone(),
                        peer_listener: self.peer_listener.clone(),
                        coordinator: crate::ddp::Coordinator {
                            server: self.config.server.clone(),
                            token: self.config.token.clone(),
                            worker_id: self.config.worker_id.clone(),
                        },
                    };
                    let events = self.events_tx.clone();
                    let control = LiveControl::new(lr_changes, controls);
                    match executor::spawn(attempt, spec, resume, group, control, ctx, events) {
                        Ok(job) => self.job = Some(job),
                        Err(e) => self.input(Input::StartFailed {
                            attempt,
                            error: format!("cannot start the job thread: {e}"),
                        }),
                    }
                }
                Action::CancelJob { attempt } => {
                    if let Some(job) = &self.job
                        && job.attempt == attempt
                    {
                        info!(job_id = attempt.job_id, "cancel requested");
                        job.stop();
                    }
                }
                Action::ControlJob { attempt, control } => {
                    if let Some(job) = &self.job
                        && job.attempt == attempt
                    {
                        info!(job_id = attempt.job_id, "control: {}", control.describe());
                        job.control.request(control);
                    }
                }
                Action::DownloadResume { attempt, artifact } => {
                    info!(
                        job_id = attempt.job_id,
                        attempt = attempt.attempt,
                        "downloading {artifact} to resume from"
                    );
                    let client = self.client.clone();
                    let results = self.results_tx.clone();
                    let task = async move {
                        let fetch = || client.download_artifact(attempt.job_id, &artifact);
                        let input = match fetch
                            .retry(ExponentialBuilder::default().with_max_times(5))
                            .await
                        {
                            Ok(bytes) => Input::ResumeDownloaded { attempt, bytes },
                            Err(e) => Input::ResumeFailed {
                                attempt,
                                error: e.to_string(),
                            },
                        };
                        let _ = results.send(input);
                    };
                    let handle = tokio::spawn(task.in_current_span());
                    self.download = Some((attempt, handle));
                }
                Action::AbortDownload { attempt } => {
                    if let Some((a, download)) = &self.download
                        && *a == attempt
                    {
                        info!(job_id = attempt.job_id, "cancelled before it started");
                        download.abort();
                        self.download = None;
                    }
                }
                Action::Upload {
                    id,
                    attempt,
                    artifacts,
                } => {
                    let _ = self.uploads.send(Upload {
                        id,
                        attempt,
                        artifacts,
                    });
                }
                Action::Warn(message) => warn!("{message}"),
                Action::Fatal(fatal) => return Err(fatal.into()),
            }
        }
        Ok(())
    }

    fn dial(&self) -> Result<Dial, WorkerError> {
        let mut request =
            self.url
                .as_str()
                .into_client_request()
                .map_err(|e| WorkerError::Url {
                    url: self.url.clone(),
                    message: e.to_string(),
                })?;
        let bearer = format!("Bearer {}", self.config.token);
        if let Ok(value) = bearer.parse() {
            request.headers_mut().insert("authorization", value);
        }
        Ok(Box::pin(async move {
            // TCP_NODELAY: metric batches are small and latency-sensitive.
            tokio_tungstenite::connect_async_with_config(request, None, true)
                .await
                .map(|(socket, _)| socket)
                .map_err(|e| e.to_string())
        }))
    }

    /// Writes what the session has to send; a failed write drops the socket and keeps the
    /// message for the next one.
    async fn transmit(&mut self) {
        let Some(sink) = self.sink.as_mut() else {
            return;
        };
        while let Some(msg) = self.session.poll_transmit() {
            let written = match serde_json::to_string(msg) {
                Ok(text) => sink.send(Message::text(text)).await.is_ok(),
                Err(e) => {
                    warn!("dropping a message that does not serialize: {e}");
                    true
                }
            };
            let now = u64::try_from(self.clock.elapsed().as_millis()).unwrap_or(u64::MAX);
            if written {
                self.session.handle(now, Input::Sent);
            } else {
                self.link_down(None);
                return;
            }
        }
    }

    fn frame(&mut self, frame: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>) {
        match frame {
            Some(Ok(Message::Text(text))) => {
                match serde_json::from_str::<CoordinatorMessage>(&text) {
                    Ok(msg) => {
                        let was_connected = self.session.is_connected();
                        self.input(Input::Frame(msg));
                        if !was_connected && self.session.is_connected() {
                            info!("connected to {}", self.url);
                        }
                    }
                    Err(e) => warn!("ignoring a message that does not parse: {e}"),
                }
            }
            Some(Ok(Message::Close(frame))) => {
                let reason = frame.and_then(|f| serde_json::from_str(&f.reason).ok());
                self.link_down(reason);
            }
            Some(Ok(_)) => {}
            None | Some(Err(_)) => self.link_down(None),
        }
    }

    /// The socket is gone.
    fn link_down(&mut self, reason: Option<kiln_proto::protocol::CloseReason>) {
        self.sink = None;
        self.stream = None;
        self.input(Input::Disconnected { reason });
        self.log_reconnect();
    }

    fn log_reconnect(&self) {
        if let Some(at) = self.session.poll_timeout() {
            let wait = Duration::from_millis(at.saturating_sub(self.now_ms()));
            warn!(?wait, "disconnected from the coordinator; reconnecting");
        }
    }

    fn job_event(&mut self, attempt: AttemptRef, event: JobEvent) {
        if matches!(event, JobEvent::Finished { .. })
            && self.job.as_ref().is_some_and(|j| j.attempt == attempt)
            && let Some(job) = self.job.take()
        {
            // The thread has sent its last event; joining is immediate.
            let _ = job.thread.join();
        }
        self.input(Input::Job { attempt, event });
    }
}

/// The output of an optional future; never, without one.
async fn poll_option<F: Future + Unpin>(future: &mut Option<F>) -> F::Output {
    match future {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn next_frame(
    stream: &mut Option<SplitStream<Socket>>,
) -> Option<Result<Message, tokio_tungstenite::tungstenite::Error>> {
    match stream {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
