//! The socket handlers driven through channels instead of sockets.

use std::time::Duration;

use axum::extract::ws::Message;
use futures_channel::mpsc;
use futures_util::StreamExt;
use tokio::sync::watch;

use kiln_proto::protocol::{
    Capabilities, ClientMessage, CloseReason, CoordinatorMessage, PROTOCOL_VERSION, ServerEvent,
    WorkerMessage,
};

use super::*;
use crate::CoordinatorConfig;
use crate::state::AppState;

type In = mpsc::UnboundedSender<Result<Message, std::io::Error>>;
type Out = mpsc::UnboundedReceiver<Message>;

async fn state(dir: &std::path::Path) -> (AppState, watch::Sender<bool>) {
    let store = crate::testing::store(dir).await.expect("store opens");
    let (tx, rx) = watch::channel(false);
    let config = CoordinatorConfig {
        data_dir: dir.to_path_buf(),
        max_frame_bytes: 1024,
        ..Default::default()
    };
    (AppState::new(config, store, rx), tx)
}

fn pipes() -> (
    In,
    mpsc::UnboundedReceiver<Result<Message, std::io::Error>>,
    mpsc::UnboundedSender<Message>,
    Out,
) {
    let (in_tx, in_rx) = mpsc::unbounded();
    let (out_tx, out_rx) = mpsc::unbounded();
    (in_tx, in_rx, out_tx, out_rx)
}

fn text<T: serde::Serialize>(msg: &T) -> Result<Message, std::io::Error> {
    Ok(Message::Text(
        serde_json::to_string(msg).expect("serializes").into(),
    ))
}

async fn next_out(out: &mut Out) -> Message {
    tokio::time::timeout(Duration::from_secs(5), out.next())
        .await
        .expect("a frame in time")
        .expect("the handler sent a frame")
}

fn capabilities() -> Capabilities {
    Capabilities {
        devices: vec![kiln_proto::spec::DeviceRequest::Cpu],
        device_names: vec![],
        memory_mb: 1,
        cores: 1,
        kiln_version: "t".into(),
        peer_addr: None,
        browser: false,
        control: false,
    }
}

fn hello(id: &str) -> WorkerMessage {
    hello_running(id, vec![])
}

/// A hello from a worker that still runs `running`.
fn hello_running(id: &str, running: Vec<kiln_proto::protocol::AttemptRef>) -> WorkerMessage {
    WorkerMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_id: id.into(),
        name: id.into(),
        capabilities: capabilities(),
        running,
    }
}

/// A job whose attempt 1 is held by worker `id` (as if assigned to an earlier connection).
async fn job_held_by(
    state: &AppState,
    id: &str,
) -> (
    kiln_proto::protocol::JobInfo,
    kiln_proto::protocol::AttemptRef,
) {
    state
        .store
        .connect_worker(id, id, &capabilities(), false)
        .await
        .expect("worker row");
    let job = state
        .store
        .insert_job(&job_spec(), None, &[])
        .await
        .expect("insert");
    let attempt = state
        .store
        .assign(job.id, id)
        .await
        .expect("assign")
        .expect("assigned")
        .attempt;
    (job, attempt)
}

fn job_spec() -> kiln_proto::JobSpec {
    kiln_proto::JobSpec::from_json_str(
        r#"{"name":"j","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"}}"#,
    )
    .expect("valid spec")
}

#[tokio::test]
async fn worker_bad_first_frame_gets_goodbye_and_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, _keep) = state(dir.path()).await;
    let (in_tx, in_rx, out_tx, mut out) = pipes();
    in_tx
        .unbounded_send(Ok(Message::Text("not json".into())))
        .expect("send");
    worker::serve(state, out_tx, in_rx, None).await;
    match next_out(&mut out).await {
        Message::Text(t) => {
            let msg: CoordinatorMessage = serde_json::from_str(&t).expect("json");
            assert!(
                matches!(
                    msg,
                    CoordinatorMessage::Goodbye {
                        reason: CloseReason::BadMessage { .. }
                    }
                ),
                "{msg:?}"
            );
        }
        other => panic!("expected goodbye, got {other:?}"),
    }
    match next_out(&mut out).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, 4002),
        other => panic!("expected close, got {other:?}"),
    }
}

/// The same JSON as a binary frame (some WebSocket clients send it that way).
fn binary<T: serde::Serialize>(msg: &T) -> Result<Message, std::io::Error> {
    Ok(Message::Binary(
        serde_json::to_vec(msg).expect("serializes").into(),
    ))
}

/// A worker's hello, heartbeat and a second hello (a protocol error, so the socket closes and
/// the answers end), each framed by `frame`; what the coordinator sent back.
async fn worker_conversation(
    frame: fn(&WorkerMessage) -> Result<Message, std::io::Error>,
) -> Vec<Message> {
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, _keep) = state(dir.path()).await;
    let (in_tx, in_rx, out_tx, out) = pipes();
    for msg in [
        hello("w"),
        WorkerMessage::Heartbeat { running: vec![] },
        hello("w"),
    ] {
        in_tx.unbounded_send(frame(&msg)).expect("send");
    }
    worker::serve(state, out_tx, in_rx, None).await;
    out.collect().await
}

#[tokio::test]
async fn binary_frames_with_json_are_read_like_text_frames() {
    let as_text = worker_conversation(text).await;
    assert_eq!(as_text.len(), 3, "welcome, goodbye, close: {as_text:?}");
    assert!(
        matches!(&as_text[0], Message::Text(t) if t.contains("welcome")),
        "{as_text:?}"
    );
    // The heartbeat was accepted: what ends the socket is the second hello.
    assert!(
        matches!(&as_text[1], Message::Text(t) if t.contains("hello may only be the first frame")),
        "{as_text:?}"
    );
    assert_eq!(worker_conversation(binary).await, as_text);

    // `/ws/events` too.
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, _keep) = state(dir.path()).await;
    let (in_tx, in_rx, out_tx, mut out) = pipes();
    in_tx
        .unbounded_send(binary(&ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        }))
        .expect("send");
    let task = tokio::spawn(events::serve(state, out_tx, in_rx));
    match next_out(&mut out).await {
        Message::Text(t) => assert!(t.contains("welcome"), "{t}"),
        other => panic!("expected welcome, got {other:?}"),
    }
    drop(in_tx);
    task.await.expect("ends");
}

#[tokio::test]
async fn binary_frames_that_are_not_utf8_or_not_json_are_refused() {
    for (frame, expected) in [
        (
            vec![0xff, 0xfe, b'{'],
            "a binary frame must hold UTF-8 JSON",
        ),
        (b"not json".to_vec(), "the first frame must be a JSON hello"),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let (state, _keep) = state(dir.path()).await;
        let (in_tx, in_rx, out_tx, out) = pipes();
        in_tx
            .unbounded_send(Ok(Message::Binary(frame.into())))
            .expect("send");
        worker::serve(state, out_tx, in_rx, None).await;
        let answers: Vec<Message> = out.collect().await;
        match answers.as_slice() {
            [Message::Text(goodbye), Message::Close(Some(close))] => {
                assert!(goodbye.contains(expected), "{goodbye}");
                assert_eq!(close.code, 4002);
            }
            other => panic!("expected goodbye and close, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn worker_is_superseded_by_a_second_connection_and_says_goodbye_on_shutdown() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, shutdown) = state(dir.path()).await;
    let (in1, rx1, tx1, mut out1) = pipes();
    in1.unbounded_send(text(&hello("w"))).expect("send");
    let first = tokio::spawn(worker::serve(state.clone(), tx1, rx1, None));
    assert!(
        matches!(next_out(&mut out1).await, Message::Text(_)),
        "welcome"
    );

    let (in2, rx2, tx2, mut out2) = pipes();
    in2.unbounded_send(text(&hello("w"))).expect("send");
    let second = tokio::spawn(worker::serve(state.clone(), tx2, rx2, None));
    assert!(
        matches!(next_out(&mut out2).await, Message::Text(_)),
        "welcome"
    );
    match next_out(&mut out1).await {
        Message::Text(t) => assert!(t.contains("superseded"), "{t}"),
        other => panic!("expected goodbye, got {other:?}"),
    }
    first.await.expect("first ends");
    assert_eq!(state.workers.connected_count(), 1);

    shutdown.send(true).expect("shutdown");
    match next_out(&mut out2).await {
        Message::Text(t) => assert!(t.contains("shutting_down"), "{t}"),
        other => panic!("expected goodbye, got {other:?}"),
    }
    second.await.expect("second ends");
    drop((in1, in2));
}

#[tokio::test]
async fn events_client_gets_welcome_then_filtered_events() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, _keep) = state(dir.path()).await;
    let (in_tx, in_rx, out_tx, mut out) = pipes();
    in_tx
        .unbounded_send(text(&ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        }))
        .expect("send");
    let task = tokio::spawn(events::serve(state.clone(), out_tx, in_rx));
    match next_out(&mut out).await {
        Message::Text(t) => assert!(t.contains("welcome"), "{t}"),
        other => panic!("expected welcome, got {other:?}"),
    }
    // Not subscribed: logs of job 1 are filtered out; subscribed: they arrive.
    state
        .events
        .send(ServerEvent::Logs {
            job_id: 1,
            lines: vec![],
        })
        .expect("a receiver");
    in_tx
        .unbounded_send(text(&ClientMessage::Subscribe { job_id: 2 }))
        .expect("send");
    tokio::time::sleep(Duration::from_millis(50)).await;
    state
        .events
        .send(ServerEvent::Logs {
            job_id: 2,
            lines: vec![],
        })
        .expect("a receiver");
    match next_out(&mut out).await {
        Message::Text(t) => assert!(t.contains("\"job_id\":2"), "{t}"),
        other => panic!("expected logs, got {other:?}"),
    }
    // A second hello is a protocol error.
    in_tx
        .unbounded_send(text(&ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        }))
        .expect("send");
    assert!(matches!(next_out(&mut out).await, Message::Text(t) if t.contains("bad_message")));
    task.await.expect("ends");
}

#[test]
fn close_frames_fit_a_control_frame() {
    for reason in [
        CloseReason::BadMessage {
            message: "x".repeat(500),
        },
        CloseReason::ProtocolVersion {
            expected: 1,
            got: 2,
        },
        CloseReason::FrameTooLarge { max_bytes: 1 << 40 },
    ] {
        match close_frame(&reason) {
            Message::Close(Some(frame)) => {
                assert_eq!(frame.code, reason.code());
                assert!(frame.reason.len() <= 123, "{}", frame.reason.len());
                let parsed: CloseReason = serde_json::from_str(&frame.reason).expect("json");
                assert_eq!(
                    std::mem::discriminant(&parsed),
                    std::mem::discriminant(&reason)
                );
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn hello_checks() {
    let check = |text: &str, expected: Option<CloseReason>| {
        assert_eq!(check_hello(text).err(), expected, "{text}");
    };
    check(r#"{"type":"hello","protocol_version":1}"#, None);
    check(
        r#"{"type":"hello","protocol_version":7}"#,
        Some(CloseReason::ProtocolVersion {
            expected: PROTOCOL_VERSION,
            got: 7,
        }),
    );
    assert!(matches!(
        check_hello(r#"{"type":"heartbeat"}"#),
        Err(CloseReason::BadMessage { .. })
    ));
    assert!(matches!(
        check_hello(r#"{"type":"hello"}"#),
        Err(CloseReason::BadMessage { .. })
    ));
    assert!(matches!(
        check_hello("[1"),
        Err(CloseReason::BadMessage { .. })
    ));
}

/// A worker becomes a scheduling candidate only once its hello is reconciled with the attempts
/// the database gives it. Before, the connection was registered first: the scheduler could
/// assign a job in that gap, and the reconcile then failed the fresh attempt as "reconnected
/// without this attempt" (seen in CI, where the job was re-sent to the same busy worker until
/// its attempts ran out). Here each worker reconnects without the attempt it held, while a
/// task checks, over and over, that no candidate still has an unreconciled attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_a_candidate_only_after_its_hello_is_reconciled() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    let dir = tempfile::tempdir().expect("temp dir");
    let (state, _keep) = state(dir.path()).await;
    const WORKERS: usize = 24;
    for i in 0..WORKERS {
        // An attempt held by an earlier connection of w{i}.
        job_held_by(&state, &format!("w{i}")).await;
    }
    let (stop, checks, violations) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(std::sync::Mutex::new(Vec::new())),
    );
    let watcher = tokio::spawn({
        let (state, stop, checks, violations) = (
            state.clone(),
            stop.clone(),
            checks.clone(),
            violations.clone(),
        );
        async move {
            while !stop.load(Ordering::Relaxed) {
                let candidates = state.workers.candidates();
                if candidates.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let running = state.store.running_attempts().await.expect("read");
                for c in &candidates {
                    if let Some(r) = running.iter().find(|r| r.worker_id == c.id) {
                        violations.lock().expect("lock").push(r.attempt);
                    }
                }
                checks.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    let mut connections = Vec::new();
    for i in 0..WORKERS {
        let (in_tx, in_rx, out_tx, mut out) = pipes();
        in_tx
            .unbounded_send(text(&hello(&format!("w{i}"))))
            .expect("send");
        let task = tokio::spawn(worker::serve(state.clone(), out_tx, in_rx, None));
        match next_out(&mut out).await {
            Message::Text(t) => assert!(t.contains("welcome"), "{t}"),
            other => panic!("expected welcome, got {other:?}"),
        }
        connections.push((in_tx, out, task));
    }
    stop.store(true, Ordering::Relaxed);
    watcher.await.expect("watcher ends");
    assert!(checks.load(Ordering::Relaxed) > 0, "the watcher never ran");
    let violations = violations.lock().expect("lock").clone();
    assert!(
        violations.is_empty(),
        "workers were candidates while still holding attempts their hello did not claim: \
         {violations:?}"
    );
    // And the reconcile did its job: every old attempt ended.
    assert!(
        state
            .store
            .running_attempts()
            .await
            .expect("read")
            .is_empty()
    );
    drop(connections);
}

/// A worker cut off long enough for its attempt to be declared lost comes back still running
/// it: it gets a cancel, and no new job until it says it is free (before, the new job was
/// refused as "busy" and that refusal used up one of the job's attempts).
#[tokio::test]
async fn a_worker_still_running_a_lost_attempt_gets_no_job_until_it_is_free() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (state, _keep) = state(dir.path()).await;
    let (job, lost) = job_held_by(&state, "w").await;
    state
        .store
        .finish_attempt(
            lost,
            kiln_proto::protocol::AttemptOutcome::Failed,
            Some("worker lost"),
            None,
            true,
        )
        .await
        .expect("declared lost")
        .expect("current");

    let (in_tx, in_rx, out_tx, mut out) = pipes();
    in_tx
        .unbounded_send(text(&hello_running("w", vec![lost])))
        .expect("send");
    let task = tokio::spawn(worker::serve(state.clone(), out_tx, in_rx, None));
    let mut next_msg = async || match next_out(&mut out).await {
        Message::Text(t) => serde_json::from_str::<CoordinatorMessage>(&t).expect("json"),
        other => panic!("expected a message, got {other:?}"),
    };
    assert!(matches!(
        next_msg().await,
        CoordinatorMessage::Welcome { .. }
    ));
    assert_eq!(
        next_msg().await,
        CoordinatorMessage::Cancel { attempt: lost }
    );
    crate::scheduler::pass(&state).await.expect("pass");
    assert_eq!(
        state.store.job(job.id).await.expect("job").state,
        kiln_proto::protocol::JobState::Queued,
        "the requeued job went to a worker still busy with its lost attempt"
    );

    // The lost attempt stops; the worker is free and gets the job again.
    in_tx
        .unbounded_send(text(&WorkerMessage::Finished {
            attempt: lost,
            outcome: kiln_proto::protocol::AttemptOutcome::Cancelled,
            error: None,
            steps: 0,
            retryable: None,
        }))
        .expect("send");
    let assigned = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            crate::scheduler::pass(&state).await.expect("pass");
            let job = state.store.job(job.id).await.expect("job");
            if job.state == kiln_proto::protocol::JobState::Running {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("assigned once free");
    assert_eq!(assigned.attempts, 2, "{assigned:?}");
    match next_msg().await {
        CoordinatorMessage::Assign { attempt, .. } => assert_eq!(attempt.attempt, 2),
        other => panic!("expected the assignment, got {other:?}"),
    }
    drop(in_tx);
    task.await.expect("ends");
}
