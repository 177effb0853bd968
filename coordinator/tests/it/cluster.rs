//! Two coordinators on one PostgreSQL database (`kiln_coordinator::cluster`), in one process
//! but each with its own sockets, bus listener and scheduling lease. Runs in the suite's
//! PostgreSQL pass (`scripts/with-postgres`); on SQLite it says it was skipped.

use std::time::Duration;

use kiln_coordinator::Coordinator;
use kiln_proto::protocol::{
    ClientMessage, CoordinatorMessage, JobState, LogLine, PROTOCOL_VERSION, ServerEvent,
    WorkerMessage,
};

use crate::support::{self, ADMIN, Next, connect, expect_assign, send_json};

async fn until(what: &str, secs: u64, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The next event on a `/ws/events` socket that `pred` accepts.
async fn event(ws: &mut support::Ws, pred: impl Fn(&ServerEvent) -> bool) -> ServerEvent {
    loop {
        match support::next::<ServerEvent>(ws, None).await {
            Next::Msg(e) if pred(&e) => return e,
            Next::Msg(_) => {}
            Next::Close(frame) => panic!("events socket closed: {frame:?}"),
        }
    }
}

fn schedules(c: &Coordinator) -> bool {
    c.state().schedules()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_coordinators_pass_events_and_worker_messages_through_the_database() {
    if std::env::var(kiln_coordinator::testing::POSTGRES_ENV).is_err() {
        println!(
            "skipped: two coordinators share a PostgreSQL database, and {} is not set",
            kiln_coordinator::testing::POSTGRES_ENV
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = Duration::from_millis(200);
    let a = support::start(dir.path(), hb).await;
    until("A takes the scheduling lease", 5, || schedules(&a)).await;
    let b = support::start(dir.path(), hb).await;

    let mut events = connect(&a, "/ws/events", ADMIN).await;
    send_json(
        &mut events,
        &ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await;
    event(&mut events, |e| matches!(e, ServerEvent::Welcome { .. })).await;

    // A worker on B gets a job submitted to B, assigned by A (which schedules).
    let mut w = support::worker(&b, ADMIN, "wb", Vec::new()).await;
    let job = support::submit(&support::admin(&b), "across").await;
    send_json(&mut events, &ClientMessage::Subscribe { job_id: job.id }).await;
    let (attempt, _) = expect_assign(&mut w, hb).await;
    assert_eq!(attempt.job_id, job.id);
    assert!(!schedules(&b), "B schedules while A holds the lease");
    support::start_ok(&mut w, attempt, 10).await;
    // A's dashboard sees it start on wb, and a log batch longer than a NOTIFY payload (it
    // travels as a stored bus message) arrives whole.
    event(&mut events, |e| {
        matches!(e, ServerEvent::Job { job: j } if j.id == job.id
            && j.worker_id.as_deref() == Some("wb") && j.state == JobState::Running)
    })
    .await;
    let lines: Vec<LogLine> = (0..200)
        .map(|i| LogLine {
            ts_ms: 1_700_000_000_000 + i,
            text: format!("line {i:03} of a log batch longer than one NOTIFY payload"),
        })
        .collect();
    let bytes: usize = lines.iter().map(|l| l.text.len()).sum();
    assert!(bytes > 8000, "{bytes} bytes");
    send_json(
        &mut w,
        &WorkerMessage::Logs {
            attempt,
            lines: lines.clone(),
        },
    )
    .await;
    let got = event(&mut events, |e| matches!(e, ServerEvent::Logs { .. })).await;
    assert_eq!(
        got,
        ServerEvent::Logs {
            job_id: job.id,
            lines
        }
    );

    // A cancel on A reaches the worker on B.
    support::admin(&a).cancel(job.id).await.expect("cancel");
    match support::recv(&mut w, Some(hb)).await {
        CoordinatorMessage::Cancel { attempt: a } => assert_eq!(a, attempt),
        other => panic!("expected cancel, got {other:?}"),
    }

    // A stops: B takes the lease at its next tick (half a heartbeat interval).
    a.shutdown().await;
    until("B takes the lease once A stopped", 2, || schedules(&b)).await;
    b.shutdown().await;
}
