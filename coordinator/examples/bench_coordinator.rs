//! Coordinator benchmark: a real `Coordinator` (temp data dir, port 0) in this process, fake
//! workers and an events client over real TCP WebSockets.
//!
//! ```text
//! CARGO_TARGET_DIR=/var/tmp/kiln-coord-target \
//!     cargo run -j1 --release -p kiln-coordinator --example bench_coordinator
//! ```
//!
//! Prints one line per measurement on stdout, `coordinator <name> <value> <unit>`, and a short
//! summary on stderr:
//! - `metric_ingest_batch{1000,100}`: points/s from the first `Metrics` frame sent until the
//!   store has committed them all (the `metric_points_ingested` counter, which is bumped only
//!   after a batch's transaction commits); median of 3 runs, a fresh job each run.
//! - `submit_to_assign_{p50,p95}`: `POST /api/jobs` sent → the idle worker receives `Assign`.
//! - `metric_to_client_{p50,p99}`: the worker sends a `Metrics` frame → a subscribed
//!   `/ws/events` client receives it as `ServerEvent::Metrics`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use kiln_client::Client;
use kiln_coordinator::{Coordinator, CoordinatorConfig};
use kiln_proto::JobSpec;
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{
    AttemptOutcome, AttemptRef, Capabilities, ClientMessage, CoordinatorMessage, JobId, JobState,
    PROTOCOL_VERSION, ServerEvent, SubmitJob, WorkerMessage,
};
use kiln_proto::spec::DeviceRequest;

const ADMIN: &str = "bench-admin-token";
/// Points per ingest run.
const INGEST_POINTS: u64 = 200_000;
const INGEST_RUNS: usize = 3;
const ASSIGN_JOBS: usize = 50;
const FANOUT_BATCHES: usize = 500;
const FANOUT_INTERVAL: Duration = Duration::from_millis(20);
/// Points per batch in the fan-out test (a worker flushing every 100 ms sends a handful).
const FANOUT_POINTS: u64 = 10;
/// Give up waiting for anything after this long.
const WAIT: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("cannot create a temp dir")?;
    let coordinator = Coordinator::start(CoordinatorConfig {
        addr: "127.0.0.1:0".parse()?,
        data_dir: dir.path().to_path_buf(),
        admin_token: Some(ADMIN.into()),
        // Long enough that the fake workers never need to heartbeat.
        heartbeat_interval: Duration::from_secs(60),
        ..CoordinatorConfig::default()
    })
    .await?;
    let bench = Bench {
        client: Client::new(&coordinator.url(), Some(ADMIN.into()))?,
        worker_token: coordinator.create_worker_token("bench").await?,
        c: &coordinator,
    };
    let mut worker = bench.worker("bench-worker").await?;

    for batch in [1000, 100] {
        let mut rates = Vec::new();
        for run in 0..INGEST_RUNS {
            let rate = bench.metric_ingest(&mut worker, batch, run).await?;
            eprintln!("  ingest batch={batch} run {}: {rate:.0} points/s", run + 1);
            rates.push(rate);
        }
        let median = percentile(&mut rates, 0.5);
        println!("coordinator metric_ingest_batch{batch} {median:.0} points/s");
        eprintln!(
            "metric_ingest: {INGEST_POINTS} points in batches of {batch}: median {median:.0} points/s (goal >= 50000)"
        );
    }

    let mut ms = bench.submit_to_assign(&mut worker).await?;
    let (p50, p95) = (percentile(&mut ms, 0.5), percentile(&mut ms, 0.95));
    println!("coordinator submit_to_assign_p50 {p50:.2} ms");
    println!("coordinator submit_to_assign_p95 {p95:.2} ms");
    eprintln!("submit_to_assign: {ASSIGN_JOBS} jobs: p50 {p50:.2} ms, p95 {p95:.2} ms");

    let mut ms = bench.metric_to_client(&mut worker).await?;
    let (p50, p99) = (percentile(&mut ms, 0.5), percentile(&mut ms, 0.99));
    println!("coordinator metric_to_client_p50 {p50:.2} ms");
    println!("coordinator metric_to_client_p99 {p99:.2} ms");
    eprintln!(
        "metric_to_client: {FANOUT_BATCHES} batches every {FANOUT_INTERVAL:?}: p50 {p50:.2} ms, p99 {p99:.2} ms"
    );

    drop(worker);
    coordinator.shutdown().await;
    Ok(())
}

struct Bench<'a> {
    c: &'a Coordinator,
    client: Client,
    worker_token: String,
}

impl Bench<'_> {
    /// Connect a fake CPU worker: hello, then expect Welcome.
    async fn worker(&self, id: &str) -> anyhow::Result<Ws> {
        let mut ws = self.connect("/ws/worker", &self.worker_token).await?;
        let hello = WorkerMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_id: id.into(),
            name: format!("bench {id}"),
            capabilities: Capabilities {
                devices: vec![DeviceRequest::Cpu],
                device_names: vec!["cpu".into()],
                memory_mb: 1024,
                cores: 2,
                kiln_version: "bench".into(),
                peer_addr: None,
                browser: false,
                control: false,
            },
            running: vec![],
        };
        send_json(&mut ws, &hello).await?;
        match recv_json(&mut ws).await? {
            CoordinatorMessage::Welcome { .. } => Ok(ws),
            other => bail!("expected welcome, got {other:?}"),
        }
    }

    async fn connect(&self, path: &str, token: &str) -> anyhow::Result<Ws> {
        let mut req = self.client.ws_url(path).into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        // `true`: TCP_NODELAY, as a real worker or dashboard should set.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
        Ok(ws)
    }

    fn submit(&self, name: &str) -> impl Future<Output = anyhow::Result<JobId>> + 'static {
        let client = self.client.clone();
        let spec = JobSpec::from_json_str(&format!(
            r#"{{"name":"{name}","model":{{"kind":"mlp"}},"dataset":{{"kind":"synthetic"}}}}"#
        ));
        async move {
            let job = SubmitJob {
                spec: spec?,
                group: None,
                tags: Vec::new(),
            };
            Ok(client.submit(&job).await?.id)
        }
    }

    /// Submit a job, expect its Assign on `worker`, report Started.
    async fn start_job(&self, worker: &mut Ws, name: &str) -> anyhow::Result<AttemptRef> {
        let id = self.submit(name).await?;
        let attempt = expect_assign(worker).await?;
        anyhow::ensure!(attempt.job_id == id, "assigned {attempt:?}, not job {id}");
        send_json(worker, &started(attempt)).await?;
        Ok(attempt)
    }

    /// Report the attempt succeeded and wait until the store says so (the worker is free).
    async fn finish_job(&self, worker: &mut Ws, attempt: AttemptRef) -> anyhow::Result<()> {
        let finished = WorkerMessage::Finished {
            attempt,
            outcome: AttemptOutcome::Succeeded,
            error: None,
            steps: 0,
            retryable: None,
        };
        send_json(worker, &finished).await?;
        let deadline = Instant::now() + WAIT;
        while self.client.job(attempt.job_id).await?.state != JobState::Succeeded {
            anyhow::ensure!(Instant::now() < deadline, "job {attempt:?} never finished");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(())
    }

    /// One ingest run: points/s for `INGEST_POINTS` points in batches of `batch`.
    async fn metric_ingest(&self, worker: &mut Ws, batch: u64, run: usize) -> anyhow::Result<f64> {
        let attempt = self
            .start_job(worker, &format!("ingest-{batch}-{run}"))
            .await?;
        // Serialize before the clock starts: the coordinator's work is what is measured.
        let frames: Vec<String> = (0..INGEST_POINTS / batch)
            .map(|b| {
                let points = (b * batch..(b + 1) * batch).map(metric).collect();
                serde_json::to_string(&WorkerMessage::Metrics { attempt, points })
            })
            .collect::<Result<_, _>>()?;
        let counter = &self.c.state().telemetry.metric_points;
        let target = counter.get() + INGEST_POINTS;

        let t0 = Instant::now();
        for frame in frames {
            worker.feed(Message::Text(frame.into())).await?;
        }
        worker.flush().await?;
        while counter.get() < target {
            anyhow::ensure!(t0.elapsed() < WAIT, "ingest stalled at {}", counter.get());
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
        let secs = t0.elapsed().as_secs_f64();

        // The job's step is advanced in the same transactions: a cheap cross-check.
        let job = self.client.job(attempt.job_id).await?;
        anyhow::ensure!(job.step == INGEST_POINTS - 1, "job step is {}", job.step);
        self.finish_job(worker, attempt).await?;
        Ok(INGEST_POINTS as f64 / secs)
    }

    /// Milliseconds from each submit to its Assign on the idle `worker`.
    async fn submit_to_assign(&self, worker: &mut Ws) -> anyhow::Result<Vec<f64>> {
        let mut ms = Vec::with_capacity(ASSIGN_JOBS);
        for i in 0..ASSIGN_JOBS {
            // The POST runs concurrently: the Assign may arrive before its HTTP answer.
            let t0 = Instant::now();
            let submit = tokio::spawn(self.submit(&format!("assign-{i}")));
            let attempt = expect_assign(worker).await?;
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
            let id = submit.await??;
            anyhow::ensure!(attempt.job_id == id, "assigned {attempt:?}, not job {id}");
            send_json(worker, &started(attempt)).await?;
            self.finish_job(worker, attempt).await?;
        }
        Ok(ms)
    }

    /// Milliseconds from the worker sending a Metrics batch to an events client receiving it.
    async fn metric_to_client(&self, worker: &mut Ws) -> anyhow::Result<Vec<f64>> {
        let attempt = self.start_job(worker, "fanout").await?;
        let mut events = self.connect("/ws/events", ADMIN).await?;
        let hello = ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        };
        send_json(&mut events, &hello).await?;
        match recv_json(&mut events).await? {
            ServerEvent::Welcome { .. } => {}
            other => bail!("expected welcome, got {other:?}"),
        }
        let subscribe = ClientMessage::Subscribe {
            job_id: attempt.job_id,
        };
        send_json(&mut events, &subscribe).await?;

        // Batch `seq` carries `seq` in its first point's loss; `sent[seq]` is when it left.
        // The subscription is applied asynchronously, so send warm-up batches (seq = -1,
        // not measured) until one comes through.
        let batch = |seq: f64| WorkerMessage::Metrics {
            attempt,
            points: (0..FANOUT_POINTS)
                .map(|i| Metric {
                    loss: seq,
                    ..metric(i)
                })
                .collect(),
        };
        'warm: loop {
            send_json(worker, &batch(-1.0)).await?;
            let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
            while let Ok(event) = tokio::time::timeout_at(deadline, recv_json(&mut events)).await {
                if let ServerEvent::Metrics { .. } = event? {
                    break 'warm;
                }
            }
        }

        let mut sent: Vec<Instant> = Vec::with_capacity(FANOUT_BATCHES);
        let mut ms: Vec<f64> = Vec::with_capacity(FANOUT_BATCHES);
        let mut tick = tokio::time::interval(FANOUT_INTERVAL);
        let deadline = tokio::time::Instant::now() + WAIT;
        while ms.len() < FANOUT_BATCHES {
            tokio::select! {
                _ = tick.tick(), if sent.len() < FANOUT_BATCHES => {
                    let msg = serde_json::to_string(&batch(sent.len() as f64))?;
                    sent.push(Instant::now());
                    worker.send(Message::Text(msg.into())).await?;
                }
                event = recv_json::<ServerEvent>(&mut events) => {
                    if let ServerEvent::Metrics { job_id, points } = event?
                        && job_id == attempt.job_id
                        && let Some(p) = points.first()
                        && p.metric.loss >= 0.0
                    {
                        let at = sent[p.metric.loss as usize];
                        ms.push(at.elapsed().as_secs_f64() * 1e3);
                    }
                }
                _ = tokio::time::sleep_until(deadline) => {
                    bail!("only {} of {FANOUT_BATCHES} batches reached the client", ms.len())
                }
            }
        }
        self.finish_job(worker, attempt).await?;
        Ok(ms)
    }
}

/// A realistic training point at `step`.
fn metric(step: u64) -> Metric {
    Metric {
        step,
        epoch: step as f64 / 1000.0,
        split: if step % 10 == 9 {
            Split::Val
        } else {
            Split::Train
        },
        loss: 2.0 / (1.0 + step as f64).sqrt(),
        accuracy: Some(0.9),
        lr: Some(1e-3),
        samples_per_sec: Some(12345.6),
    }
}

fn started(attempt: AttemptRef) -> WorkerMessage {
    WorkerMessage::Started {
        attempt,
        device: "cpu".into(),
        total_steps: INGEST_POINTS,
        start_step: 0,
    }
}

async fn send_json<T: serde::Serialize>(ws: &mut Ws, msg: &T) -> anyhow::Result<()> {
    ws.send(Message::Text(serde_json::to_string(msg)?.into()))
        .await?;
    Ok(())
}

/// The next text frame as `T` (other frames skipped), within `WAIT`.
async fn recv_json<T: serde::de::DeserializeOwned>(ws: &mut Ws) -> anyhow::Result<T> {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .context("nothing arrived in time")?;
        match frame {
            Some(Ok(Message::Text(text))) => return Ok(serde_json::from_str(&text)?),
            Some(Ok(Message::Close(frame))) => bail!("socket closed: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("socket ended"),
        }
    }
}

async fn expect_assign(ws: &mut Ws) -> anyhow::Result<AttemptRef> {
    match recv_json(ws).await? {
        CoordinatorMessage::Assign { attempt, .. } => Ok(attempt),
        other => bail!("expected assign, got {other:?}"),
    }
}

/// Nearest-rank percentile (`q` in 0..=1) of `v`, sorting it.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
