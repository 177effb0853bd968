//! Load and soak test of a running `kiln serve` (see `scripts/bench-load`, which starts one on
//! SQLite and one on PostgreSQL): bounded in count and time, loopback only.
//!
//! ```text
//! load_coordinator URL ADMIN_TOKEN WORKER_TOKEN SERVER_PID [SECONDS]   # at most SECONDS (900)
//! ```
//!
//! - submits `JOBS` (1,000) jobs at once, all queued;
//! - `WORKERS` (10) fake workers speak the worker protocol over real WebSockets: each takes a
//!   job, reports it started, streams a `Metrics` frame of `POINTS_PER_BATCH` points every
//!   `BATCH_EVERY` for `BATCHES_PER_JOB` frames, finishes it and takes the next, heart-beating
//!   as a real worker does;
//! - `CLIENTS` (100) `/ws/events` clients subscribe to every job they see start, like job pages;
//! - `SERVER_PID`'s resident memory is sampled every 10 s.
//!
//! 1,000 jobs of 6 s on 10 workers: a soak of about 10 minutes. Runs until every job finished
//! or SECONDS (default 900) passed, then checks:
//! - no metric lost: every point a worker sent is in the store (`GET …/metrics`, per job);
//! - no event lost: each client's points of a job are consecutive from its first one (a
//!   subscription starts mid-job; a gap after it is a loss), and no client was dropped;
//! - event latency: worker send → client receive (each first point's loss carries its send
//!   time), p50 / p99 / max over every delivery;
//! - memory: resident set at the first sample after warm-up vs the last.
//!
//! Prints `load <name> <value> <unit>` lines on stdout; exits non-zero if a check fails.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use kiln_client::{Client, JobFilter, MetricQuery};
use kiln_proto::JobSpec;
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{
    AttemptOutcome, AttemptRef, Capabilities, ClientMessage, CoordinatorMessage, JobId, JobState,
    PROTOCOL_VERSION, ServerEvent, SubmitJob, WorkerMessage,
};
use kiln_proto::spec::DeviceRequest;

const JOBS: usize = 1000;
const WORKERS: usize = 10;
const CLIENTS: usize = 100;
const POINTS_PER_BATCH: u64 = 10;
const BATCH_EVERY: Duration = Duration::from_millis(100);
const BATCHES_PER_JOB: u64 = 60;
const HEARTBEAT: Duration = Duration::from_secs(1);
const MEMORY_EVERY: Duration = Duration::from_secs(10);
/// Memory samples before this are warm-up (caches, the first jobs' connections).
const WARM_UP: Duration = Duration::from_secs(60);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Everything the tasks report, shared.
#[derive(Default)]
struct Tally {
    /// Points sent, per job.
    sent: Mutex<HashMap<JobId, u64>>,
    jobs_done: AtomicUsize,
    /// Milliseconds from send to receipt, every delivery of a batch's first point.
    latencies_ms: std::sync::Mutex<Vec<f64>>,
    deliveries: AtomicU64,
    gaps: AtomicU64,
    clients_dropped: AtomicUsize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, admin, worker_token, pid, rest @ ..] = args.as_slice() else {
        bail!("usage: load_coordinator URL ADMIN_TOKEN WORKER_TOKEN SERVER_PID [SECONDS]");
    };
    let pid: u32 = pid.parse().context("SERVER_PID")?;
    let seconds: u64 = match rest.first() {
        Some(s) => s.parse().context("SECONDS")?,
        None => 900,
    };
    let client = Client::new(url, Some(admin.clone()))?;
    let start = Instant::now();
    let tally = Arc::new(Tally::default());

    // Clients first: they see every job start.
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let ws = connect(&client, "/ws/events", admin).await?;
        clients.push(tokio::spawn(events_client(ws, start, tally.clone(), i)));
    }

    let t0 = Instant::now();
    let spec = JobSpec::from_json_str(
        r#"{"name":"load","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"},"device":"cpu"}"#,
    )?;
    let mut ids = Vec::with_capacity(JOBS);
    for _ in 0..JOBS {
        let job = SubmitJob {
            spec: spec.clone(),
            group: Some("load".into()),
            tags: Vec::new(),
        };
        ids.push(client.submit(&job).await?.id);
    }
    println!(
        "load submit_{JOBS}_jobs {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    let deadline = start + Duration::from_secs(seconds);
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let ws = connect(&client, "/ws/worker", worker_token).await?;
        workers.push(tokio::spawn(fake_worker(
            ws,
            w,
            start,
            deadline,
            tally.clone(),
        )));
    }

    // Memory, until the workers are done.
    let mut rss: Vec<(f64, u64)> = Vec::new();
    let mut tick = tokio::time::interval(MEMORY_EVERY);
    while !workers.iter().all(|w| w.is_finished()) {
        tick.tick().await;
        let kb = resident_kb(pid)?;
        let at = start.elapsed().as_secs_f64();
        eprintln!(
            "  {at:5.0} s  rss {:7.1} MB  jobs done {:4}  deliveries {}",
            kb as f64 / 1024.0,
            tally.jobs_done.load(Ordering::Relaxed),
            tally.deliveries.load(Ordering::Relaxed)
        );
        rss.push((at, kb));
    }
    for w in workers {
        w.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the last events arrive, then stop the clients.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for c in &clients {
        c.abort();
    }

    // No metric lost: the store has every point sent.
    let sent = tally.sent.lock().await.clone();
    let mut lost = 0u64;
    let mut total = 0u64;
    for (job, n) in &sent {
        let query = MetricQuery {
            max_points: Some(100_000),
            ..MetricQuery::default()
        };
        let stored = client.metrics(*job, &query).await?;
        total += n;
        lost += n.saturating_sub(stored.len() as u64);
        ensure!(
            stored.len() as u64 <= *n,
            "job {job}: {} points stored, {n} sent",
            stored.len()
        );
    }
    let done = tally.jobs_done.load(Ordering::Relaxed);
    let filter = JobFilter {
        state: Some(JobState::Succeeded),
        limit: Some(1),
        ..JobFilter::default()
    };
    let succeeded = client.jobs(&filter).await?.total;
    let mut latencies = lock(&tally.latencies_ms).clone();
    let deliveries = tally.deliveries.load(Ordering::Relaxed);
    let gaps = tally.gaps.load(Ordering::Relaxed);
    let dropped = tally.clients_dropped.load(Ordering::Relaxed);

    println!("load duration {elapsed:.0} s");
    println!("load jobs_finished {done} of {JOBS} ({succeeded} succeeded in the store)");
    println!("load points_sent {total}");
    println!("load points_lost {lost}");
    println!(
        "load event_deliveries {deliveries} ({:.0}/s)",
        deliveries as f64 / elapsed
    );
    println!("load event_gaps {gaps}");
    println!("load clients_dropped {dropped} of {CLIENTS}");
    if !latencies.is_empty() {
        for (name, q) in [("p50", 0.5), ("p99", 0.99), ("max", 1.0)] {
            println!(
                "load event_latency_{name} {:.1} ms",
                percentile(&mut latencies, q)
            );
        }
    }
    let after_warm_up: Vec<&(f64, u64)> = rss
        .iter()
        .filter(|(at, _)| *at >= WARM_UP.as_secs_f64())
        .collect();
    if let (Some(first), Some(last)) = (after_warm_up.first(), after_warm_up.last()) {
        println!(
            "load rss_after_warm_up {:.1} MB at {:.0} s, last {:.1} MB at {:.0} s",
            first.1 as f64 / 1024.0,
            first.0,
            last.1 as f64 / 1024.0,
            last.0
        );
    }
    if let Some(peak) = rss.iter().map(|r| r.1).max() {
        println!("load rss_peak {:.1} MB", peak as f64 / 1024.0);
    }
    ensure!(lost == 0, "{lost} metric points lost");
    ensure!(gaps == 0, "{gaps} gaps in the clients' event streams");
    ensure!(dropped == 0, "{dropped} events clients dropped");
    Ok(())
}

async fn connect(client: &Client, path: &str, token: &str) -> anyhow::Result<Ws> {
    let mut req = client.ws_url(path).into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (ws, _) = tokio_tungstenite::connect_async_with_config(req, None, true).await?;
    Ok(ws)
}

/// A worker: takes jobs until none is left (or the deadline), streaming metrics for each.
async fn fake_worker(
    mut ws: Ws,
    index: usize,
    start: Instant,
    deadline: Instant,
    tally: Arc<Tally>,
) -> anyhow::Result<()> {
    let hello = WorkerMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_id: format!("load-{index}"),
        name: format!("load {index}"),
        capabilities: Capabilities {
            devices: vec![DeviceRequest::Cpu],
            device_names: vec!["cpu".into()],
            memory_mb: 1024,
            cores: 2,
            kiln_version: "load".into(),
            peer_addr: None,
            browser: false,
            control: false,
        },
        running: vec![],
    };
    send_json(&mut ws, &hello).await?;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut running: Option<(AttemptRef, u64)> = None;
    let mut batch = tokio::time::interval(BATCH_EVERY);
    loop {
        let all_done = tally.jobs_done.load(Ordering::Relaxed) >= JOBS;
        if running.is_none() && (all_done || Instant::now() >= deadline) {
            return Ok(());
        }
        tokio::select! {
            _ = heartbeat.tick() => {
                let running = running.iter().map(|(a, _)| *a).collect();
                send_json(&mut ws, &WorkerMessage::Heartbeat { running }).await?;
            }
            _ = batch.tick(), if running.is_some() => {
                let Some((attempt, sent)) = running.as_mut() else { continue };
                let at_us = start.elapsed().as_micros() as f64;
                let points: Vec<Metric> = (0..POINTS_PER_BATCH)
                    .map(|i| point(*sent * POINTS_PER_BATCH + i, at_us))
                    .collect();
                send_json(&mut ws, &WorkerMessage::Metrics { attempt: *attempt, points }).await?;
                *sent += 1;
                *tally.sent.lock().await.entry(attempt.job_id).or_default() += POINTS_PER_BATCH;
                if *sent == BATCHES_PER_JOB || Instant::now() >= deadline {
                    let finished = WorkerMessage::Finished {
                        attempt: *attempt,
                        outcome: AttemptOutcome::Succeeded,
                        error: None,
                        steps: *sent * POINTS_PER_BATCH,
                        retryable: None,
                    };
                    send_json(&mut ws, &finished).await?;
                    tally.jobs_done.fetch_add(1, Ordering::Relaxed);
                    running = None;
                }
            }
            frame = ws.next() => match frame {
                Some(Ok(Message::Text(text))) => {
                    match serde_json::from_str::<CoordinatorMessage>(&text)? {
                        CoordinatorMessage::Assign { attempt, .. } => {
                            ensure!(running.is_none(), "worker {index} assigned {attempt:?} while busy");
                            let started = WorkerMessage::Started {
                                attempt,
                                device: "cpu".into(),
                                total_steps: BATCHES_PER_JOB * POINTS_PER_BATCH,
                                start_step: 0,
                            };
                            send_json(&mut ws, &started).await?;
                            running = Some((attempt, 0));
                        }
                        CoordinatorMessage::Cancel { .. } => bail!("worker {index}: unexpected cancel"),
                        _ => {}
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("worker {index}: closed: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => bail!("worker {index}: socket ended"),
            },
        }
    }
}

/// Point `step` of a job; its loss is the send time in µs since the start (for latency).
fn point(step: u64, at_us: f64) -> Metric {
    Metric {
        step,
        epoch: step as f64 / 100.0,
        split: Split::Train,
        loss: at_us,
        accuracy: Some(0.5),
        lr: Some(1e-3),
        samples_per_sec: Some(1000.0),
    }
}

/// An events client: subscribes to each job it sees running, checks each job's points come
/// in order without a gap, and records latencies.
async fn events_client(
    mut ws: Ws,
    start: Instant,
    tally: Arc<Tally>,
    index: usize,
) -> anyhow::Result<()> {
    let hello = ClientMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
    };
    send_json(&mut ws, &hello).await?;
    // The next step expected, per subscribed job.
    let mut next: HashMap<JobId, Option<u64>> = HashMap::new();
    loop {
        let frame = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                eprintln!("  client {index} was dropped");
                tally.clients_dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                eprintln!("  client {index}: {e}");
                tally.clients_dropped.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
        };
        match serde_json::from_str::<ServerEvent>(&frame)? {
            ServerEvent::Job { job }
                if job.state == JobState::Running && !next.contains_key(&job.id) =>
            {
                next.entry(job.id).or_insert(None);
                send_json(&mut ws, &ClientMessage::Subscribe { job_id: job.id }).await?;
            }
            ServerEvent::Job { job }
                if job.state.is_terminal() && next.remove(&job.id).is_some() =>
            {
                send_json(&mut ws, &ClientMessage::Unsubscribe { job_id: job.id }).await?;
            }
            ServerEvent::Metrics { job_id, points } => {
                let now_us = start.elapsed().as_micros() as f64;
                if let Some(expected) = next.get_mut(&job_id) {
                    for p in &points {
                        if expected.is_some_and(|e| p.metric.step != e) {
                            tally.gaps.fetch_add(1, Ordering::Relaxed);
                        }
                        *expected = Some(p.metric.step + 1);
                    }
                    if let Some(p) = points.first() {
                        lock(&tally.latencies_ms).push((now_us - p.metric.loss) / 1e3);
                        tally.deliveries.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            _ => {}
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resident memory of `pid` in kB (Linux: `/proc/PID/status`).
fn resident_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the server (pid {pid}) is gone"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .context("no VmRSS line")
}

async fn send_json<T: serde::Serialize>(ws: &mut Ws, msg: &T) -> anyhow::Result<()> {
    ws.send(Message::Text(serde_json::to_string(msg)?.into()))
        .await?;
    Ok(())
}

/// Nearest-rank percentile (`q` in 0..=1) of `v`, sorting it.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
