//! Two `kiln serve` processes on one PostgreSQL database (`kiln_coordinator::cluster`): real
//! processes, real sockets, a real PostgreSQL server (the suite's second pass, under
//! `scripts/with-postgres`).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use kiln_proto::metric::Split;
use kiln_proto::protocol::{ClientMessage, JobId, JobState, PROTOCOL_VERSION, ServerEvent};

use crate::cluster::{Cluster, Proc, TOKEN, plain, spec};

/// Wait until `proc` logged a line containing `what`.
fn wait_for_line(proc: &Proc, what: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !proc.lines().iter().any(|l| plain(l).contains(what)) {
        assert!(
            Instant::now() < deadline,
            "{} never logged `{what}`",
            proc.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn schedules(proc: &Proc) -> bool {
    proc.lines()
        .iter()
        .any(|l| plain(l).contains("this coordinator schedules now"))
}

type Events =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A dashboard's `/ws/events` socket on coordinator `c`, past its welcome.
async fn events(c: &Cluster) -> Events {
    let url = format!("{}/ws/events", c.url.replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().expect("ws url");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {TOKEN}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("events socket");
    send(
        &mut ws,
        &ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await;
    ws
}

async fn send(ws: &mut Events, msg: &ClientMessage) {
    let text = serde_json::to_string(msg).expect("json");
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// Read events until `pred` holds for one (or panic after `secs`).
async fn wait_event(ws: &mut Events, secs: u64, what: &str, pred: impl Fn(&ServerEvent) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no event {what} within {secs} s"))
            .expect("the events socket stays open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            let event: ServerEvent = serde_json::from_str(&text).expect("an event");
            if pred(&event) {
                return;
            }
        }
    }
}

#[test]
fn two_coordinators_on_one_postgres_share_jobs_events_and_scheduling() {
    if std::env::var(kiln_coordinator::testing::POSTGRES_ENV).is_err() {
        println!(
            "skipped: two coordinators share a PostgreSQL database, and {} is not set (scripts/test \
             runs this suite again under scripts/with-postgres)",
            kiln_coordinator::testing::POSTGRES_ENV
        );
        return;
    }
    // One database and one data directory (artifacts) for both.
    let dir = tempfile::tempdir().unwrap();
    let mut a = Cluster::start(dir.path());
    wait_for_line(&a.coordinator, "this coordinator schedules now", 10);
    let mut b = Cluster::start(dir.path());

    // A schedules a job submitted to it onto the only worker, which is connected to B; a
    // dashboard on A sees the job run and its metrics live.
    b.add_worker("wb");
    a.wait_workers(1);
    let mut dashboard = a.rt.block_on(events(&a));
    let first = a.submit(&spec("via-a-on-b", 400, 200));
    a.rt.block_on(async {
        send(
            &mut dashboard,
            &ClientMessage::Subscribe { job_id: first.id },
        )
        .await;
        wait_event(&mut dashboard, 60, "job running on wb", |e| {
            matches!(e, ServerEvent::Job { job } if job.id == first.id
                && job.state == JobState::Running && job.worker_id.as_deref() == Some("wb"))
        })
        .await;
        wait_event(&mut dashboard, 60, "metrics of the job on B", |e| {
            matches!(e, ServerEvent::Metrics { job_id, points } if *job_id == first.id
                && !points.is_empty())
        })
        .await;
    });
    let done = a.wait_job(first.id, 120, "the end", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.worker_id.as_deref(), Some("wb"));
    // Its model, uploaded through B, is there for A too.
    assert!(a.artifacts(first.id).contains(&"model.bpk".to_string()));
    assert!(
        !schedules(&b.coordinator),
        "B scheduled while A held the lease"
    );

    // A worker on each: jobs submitted to either run, one on each worker.
    a.add_worker("wa");
    a.wait_workers(2);
    let both = [
        b.submit(&spec("via-b", 400, 200)),
        a.submit(&spec("via-a", 400, 200)),
    ];
    let mut used = BTreeSet::new();
    for job in &both {
        let done = b.wait_job(job.id, 120, "the end", |j| j.state.is_terminal());
        assert_eq!(done.state, JobState::Succeeded, "{done:?}");
        used.insert(done.worker_id.clone().unwrap_or_default());
    }
    assert_eq!(used, BTreeSet::from(["wa".to_string(), "wb".to_string()]));

    // SIGKILL the scheduling coordinator: B takes over and schedules the next job within 10 s.
    a.coordinator.kill();
    let killed = Instant::now();
    let next = b.submit(&spec("after-a-died", 100, 50));
    let running = b.wait_job(next.id, 10, "running within 10 s of the kill", |j| {
        j.state != JobState::Queued
    });
    let took = killed.elapsed();
    assert_eq!(running.worker_id.as_deref(), Some("wb"), "{running:?}");
    assert!(
        schedules(&b.coordinator),
        "B never logged that it schedules"
    );
    println!("scheduled by B {took:?} after A was killed");
    let done = b.wait_job(next.id, 120, "the end", |j| j.state.is_terminal());
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");

    // Nothing lost: every job's metrics are whole, read through B.
    let ids: Vec<JobId> = [first.id, both[0].id, both[1].id, next.id].to_vec();
    for (id, steps) in ids.into_iter().zip([400u64, 400, 400, 100]) {
        let train: Vec<u64> = b
            .metrics(id)
            .into_iter()
            .filter(|p| p.metric.split == Split::Train)
            .map(|p| p.metric.step)
            .collect();
        assert!(
            train.first().is_some_and(|&s| s <= 5) && train.last().is_some_and(|&s| s + 5 >= steps),
            "job {id}: train points from the start to the end: {train:?}"
        );
        assert!(
            train.windows(2).all(|w| w[1] == w[0] + 5),
            "job {id}: a train point every 5 steps, none missing: {train:?}"
        );
    }
    // A's worker is disconnected once its coordinator is gone.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let workers = b.rt.block_on(b.client().workers()).expect("workers");
        if workers.iter().any(|w| w.id == "wa" && !w.connected) {
            break;
        }
        assert!(Instant::now() < deadline, "wa still connected: {workers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
