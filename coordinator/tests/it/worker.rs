//! Fake workers and event clients over real WebSockets.

use std::time::Duration;

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use kiln_client::{Client, MetricQuery};
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{
    AttemptOutcome, AttemptRef, ClientMessage, CloseReason, CoordinatorMessage, JobState, LogLine,
    PROTOCOL_VERSION, ServerEvent, WorkerMessage,
};

use crate::support::{self, ADMIN, MAX_FRAME, Next, connect, expect_assign, recv, send_json};

fn metric(step: u64, split: Split, loss: f64) -> Metric {
    Metric {
        step,
        epoch: step as f64 / 100.0,
        split,
        loss,
        accuracy: Some(0.5),
        lr: Some(0.01),
        samples_per_sec: None,
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[tokio::test]
async fn a_job_runs_on_a_fake_worker() {
    let dir = tmp();
    let hb = Duration::from_millis(500);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");
    let worker_client = Client::new(&c.url(), Some(token.clone()))
        .expect("url")
        .as_worker("w1");

    let mut events = connect(&c, "/ws/events", ADMIN).await;
    send_json(
        &mut events,
        &ClientMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await;
    assert!(matches!(
        support::next::<ServerEvent>(&mut events, None).await,
        Next::Msg(ServerEvent::Welcome { .. })
    ));

    let job = support::submit(&client, "flow").await;
    let mut ws = support::worker(&c, &token, "w1", vec![]).await;
    let (attempt, resume) = expect_assign(&mut ws, hb).await;
    assert_eq!(
        attempt,
        AttemptRef {
            job_id: job.id,
            attempt: 1
        }
    );
    assert_eq!(resume, None);
    send_json(&mut events, &ClientMessage::Subscribe { job_id: job.id }).await;
    let running = support::wait_state(&client, job.id, JobState::Running).await;
    assert_eq!(running.worker_id.as_deref(), Some("w1"));

    support::start_ok(&mut ws, attempt, 4).await;
    let points: Vec<Metric> = (1..=4)
        .map(|s| metric(s, Split::Train, 1.0 / s as f64))
        .chain([metric(4, Split::Val, 0.3)])
        .collect();
    send_json(
        &mut ws,
        &WorkerMessage::Metrics {
            attempt,
            points: points.clone(),
        },
    )
    .await;
    send_json(
        &mut ws,
        &WorkerMessage::Logs {
            attempt,
            lines: vec![LogLine {
                ts_ms: 1,
                text: "hello".into(),
            }],
        },
    )
    .await;
    let ckpt = kiln_proto::artifact::checkpoint_name(4);
    worker_client
        .upload_artifact(job.id, &ckpt, b"ckpt".to_vec())
        .await
        .expect("upload");
    send_json(
        &mut ws,
        &WorkerMessage::Checkpoint {
            attempt,
            step: 4,
            artifact: ckpt.clone(),
        },
    )
    .await;
    support::finish_ok(&mut ws, attempt, 4).await;

    let done = support::wait_state(&client, job.id, JobState::Succeeded).await;
    assert_eq!((done.step, done.total_steps), (4, 4));
    assert!(done.finished_ms.is_some());
    let stored = client
        .metrics(job.id, &MetricQuery::default())
        .await
        .expect("metrics");
    assert_eq!(
        stored.iter().map(|p| p.metric.clone()).collect::<Vec<_>>(),
        {
            let mut sorted = points.clone();
            sorted.sort_by_key(|m| m.step);
            sorted
        }
    );
    let val = client
        .metrics(
            job.id,
            &MetricQuery {
                split: Some(Split::Val),
                ..Default::default()
            },
        )
        .await
        .expect("metrics");
    assert_eq!(val.len(), 1);
    let ranged = client
        .metrics(
            job.id,
            &MetricQuery {
                from_step: Some(2),
                to_step: Some(3),
                ..Default::default()
            },
        )
        .await
        .expect("metrics");
    assert_eq!(
        ranged.iter().map(|p| p.metric.step).collect::<Vec<_>>(),
        vec![2, 3]
    );
    let logs = client.logs(job.id, 0, None).await.expect("logs");
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].line.text, "hello");
    assert!(
        client
            .logs(job.id, logs[0].seq, None)
            .await
            .expect("logs")
            .is_empty()
    );
    let attempts = client.attempts(job.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].state, JobState::Succeeded);
    assert_eq!(
        client
            .download_artifact(job.id, &ckpt)
            .await
            .expect("download"),
        b"ckpt"
    );

    // The events client saw the job change and the subscribed metrics.
    let (mut saw_job, mut saw_metrics, mut saw_logs) = (false, false, false);
    while !(saw_job && saw_metrics && saw_logs) {
        match support::next::<ServerEvent>(&mut events, None).await {
            Next::Msg(ServerEvent::Job { job: j })
                if j.id == job.id && j.state == JobState::Succeeded =>
            {
                saw_job = true
            }
            Next::Msg(ServerEvent::Metrics { job_id, points }) if job_id == job.id => {
                assert_eq!(points.len(), 5);
                saw_metrics = true;
            }
            Next::Msg(ServerEvent::Logs { job_id, .. }) if job_id == job.id => saw_logs = true,
            Next::Msg(_) => {}
            Next::Close(f) => panic!("events closed: {f:?}"),
        }
    }
    let workers = client.workers().await.expect("workers");
    assert_eq!(workers.len(), 1);
    assert!(workers[0].connected && workers[0].running.is_none());
    c.shutdown().await;
    // Shutdown says goodbye to workers.
    match support::next::<CoordinatorMessage>(&mut ws, None).await {
        Next::Msg(CoordinatorMessage::Goodbye { reason }) => {
            assert_eq!(reason, CloseReason::ShuttingDown)
        }
        other => panic!("expected goodbye, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_hellos_and_frames_are_refused() {
    let dir = tmp();
    let c = support::start(dir.path(), Duration::from_secs(2)).await;
    let token = c.create_worker_token("fake").await.expect("token");

    // Wrong protocol version: Goodbye, then close 4001 with the reason as JSON.
    let mut ws = connect(&c, "/ws/worker", &token).await;
    let mut hello = serde_json::to_value(support::hello("w1", vec![])).expect("json");
    hello["protocol_version"] = 99.into();
    ws.send(Message::Text(hello.to_string().into()))
        .await
        .expect("send");
    let expected = CloseReason::ProtocolVersion {
        expected: PROTOCOL_VERSION,
        got: 99,
    };
    match recv(&mut ws, None).await {
        CoordinatorMessage::Goodbye { reason } => assert_eq!(reason, expected),
        other => panic!("expected goodbye, got {other:?}"),
    }
    match support::next::<CoordinatorMessage>(&mut ws, None).await {
        Next::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::from(4001));
            let reason: CloseReason = serde_json::from_str(&frame.reason).expect("reason json");
            assert_eq!(reason, expected);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Not a hello first: 4002.
    let mut ws = connect(&c, "/ws/worker", &token).await;
    send_json(&mut ws, &WorkerMessage::Heartbeat { running: vec![] }).await;
    assert!(matches!(
        recv(&mut ws, None).await,
        CoordinatorMessage::Goodbye {
            reason: CloseReason::BadMessage { .. }
        }
    ));
    match support::next::<CoordinatorMessage>(&mut ws, None).await {
        Next::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::from(4002)),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // An oversized frame closes that socket; the server carries on.
    let mut ws = support::worker(&c, &token, "w2", vec![]).await;
    let _ = ws
        .send(Message::Text("x".repeat(MAX_FRAME + 1).into()))
        .await;
    loop {
        match support::next::<serde_json::Value>(&mut ws, None).await {
            Next::Close(Some(frame)) => {
                assert_eq!(frame.code, CloseCode::Size, "{frame:?}");
                break;
            }
            Next::Close(None) => break,
            Next::Msg(_) => {}
        }
    }
    support::worker(&c, &token, "w3", vec![]).await;
    assert!(support::admin(&c).health().await.is_ok());

    // Events need an admin token.
    let err = tokio_tungstenite::connect_async(format!(
        "{}/ws/events",
        c.url().replacen("http", "ws", 1)
    ))
    .await;
    assert!(err.is_err(), "no token must be refused");
    c.shutdown().await;
}

#[tokio::test]
async fn a_silent_worker_is_lost_and_the_job_resumes_elsewhere() {
    let dir = tmp();
    let hb = Duration::from_millis(100);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");
    let job = support::submit(&client, "lost").await;

    let mut a = support::worker(&c, &token, "a", vec![]).await;
    let (attempt, _) = expect_assign(&mut a, hb).await;
    support::start_ok(&mut a, attempt, 100).await;
    send_json(
        &mut a,
        &WorkerMessage::Metrics {
            attempt,
            points: vec![metric(10, Split::Train, 1.0)],
        },
    )
    .await;
    let ckpt = kiln_proto::artifact::checkpoint_name(10);
    client
        .upload_artifact(job.id, &kiln_proto::artifact::checkpoint_name(5), vec![5])
        .await
        .expect("upload");
    client
        .upload_artifact(job.id, &ckpt, vec![10])
        .await
        .expect("upload");
    send_json(
        &mut a,
        &WorkerMessage::Checkpoint {
            attempt,
            step: 10,
            artifact: ckpt.clone(),
        },
    )
    .await;
    // Step 15's upload lands but `a` never announces it (as if killed in between): the
    // metrics before it may be lost with `a`, so it is not resumed from.
    client
        .upload_artifact(job.id, &kiln_proto::artifact::checkpoint_name(15), vec![15])
        .await
        .expect("upload");
    // Worker `a` now goes silent: no heartbeats.
    let requeued = support::wait_state(&client, job.id, JobState::Queued).await;
    assert_eq!(requeued.error.as_deref(), Some("worker lost"));
    assert_eq!(requeued.attempts, 1);

    let mut b = support::worker(&c, &token, "b", vec![]).await;
    let (attempt2, resume) = expect_assign(&mut b, hb).await;
    assert_eq!(
        attempt2,
        AttemptRef {
            job_id: job.id,
            attempt: 2
        }
    );
    assert_eq!(resume.as_deref(), Some(ckpt.as_str()));
    send_json(
        &mut b,
        &WorkerMessage::Metrics {
            attempt: attempt2,
            points: vec![metric(11, Split::Train, 0.9)],
        },
    )
    .await;
    // Late messages of the lost attempt are ignored.
    let _ = a
        .send(Message::Text(
            serde_json::to_string(&WorkerMessage::Metrics {
                attempt,
                points: vec![metric(99, Split::Train, 9.0)],
            })
            .expect("json")
            .into(),
        ))
        .await;
    send_json(
        &mut b,
        &WorkerMessage::Finished {
            attempt: attempt2,
            outcome: AttemptOutcome::Succeeded,
            error: None,
            steps: 20,
            retryable: None,
        },
    )
    .await;
    support::wait_state(&client, job.id, JobState::Succeeded).await;
    let attempts = client.attempts(job.id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.state).collect::<Vec<_>>(),
        vec![JobState::Failed, JobState::Succeeded]
    );
    assert_eq!(attempts[1].resumed_from_step, Some(10));
    let steps: Vec<u64> = client
        .metrics(job.id, &MetricQuery::default())
        .await
        .expect("metrics")
        .iter()
        .map(|p| p.metric.step)
        .collect();
    assert_eq!(
        steps,
        vec![10, 11],
        "earlier attempts' metrics are kept; late ones dropped"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn cancel_retry_and_drain() {
    let dir = tmp();
    let hb = Duration::from_millis(300);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");

    // Queued: cancelled at once; terminal: 409; retry re-queues with more attempts.
    let queued = support::submit(&client, "queued").await;
    assert_eq!(
        client.cancel(queued.id).await.expect("cancel").state,
        JobState::Cancelled
    );
    let err = client.cancel(queued.id).await.expect_err("409");
    assert_eq!(err.status(), Some(reqwest::StatusCode::CONFLICT));
    let retried = client.retry(queued.id).await.expect("retry");
    assert_eq!((retried.state, retried.max_attempts), (JobState::Queued, 3));
    assert_eq!(
        client.retry(queued.id).await.expect_err("409").status(),
        Some(reqwest::StatusCode::CONFLICT)
    );
    client.cancel(queued.id).await.expect("cancel");

    // Running: the worker is told; the job ends when it reports.
    let job = support::submit(&client, "running").await;
    let mut w = support::worker(&c, &token, "w", vec![]).await;
    let (attempt, _) = expect_assign(&mut w, hb).await;
    assert_eq!(attempt.job_id, job.id);
    let pending = client.cancel(job.id).await.expect("cancel");
    assert_eq!(pending.state, JobState::Running);
    match recv(&mut w, Some(hb)).await {
        CoordinatorMessage::Cancel { attempt: a } => assert_eq!(a, attempt),
        other => panic!("expected cancel, got {other:?}"),
    }
    send_json(
        &mut w,
        &WorkerMessage::Finished {
            attempt,
            outcome: AttemptOutcome::Cancelled,
            error: None,
            steps: 3,
            retryable: None,
        },
    )
    .await;
    support::wait_state(&client, job.id, JobState::Cancelled).await;

    // Drained: keeps its connection, gets no new job; another worker takes it.
    let drained = client.drain("w").await.expect("drain");
    assert!(drained.draining);
    assert_eq!(
        client.drain("nobody").await.expect_err("404").status(),
        Some(reqwest::StatusCode::NOT_FOUND)
    );
    let next = support::submit(&client, "after-drain").await;
    let mut other = support::worker(&c, &token, "other", vec![]).await;
    let (a2, _) = expect_assign(&mut other, hb).await;
    assert_eq!(a2.job_id, next.id);
    // The drained worker got nothing (only heartbeats went out meanwhile).
    send_json(&mut w, &WorkerMessage::Heartbeat { running: vec![] }).await;
    let job = client.job(next.id).await.expect("job");
    assert_eq!(job.worker_id.as_deref(), Some("other"));

    // A device nobody offers stays queued.
    let mut spec = support::spec("cuda-only");
    spec.device = kiln_proto::spec::DeviceRequest::Cuda;
    let web = client
        .submit(&kiln_proto::protocol::SubmitJob {
            spec,
            group: None,
            tags: Vec::new(),
        })
        .await
        .expect("submit");
    send_json(
        &mut other,
        &WorkerMessage::Finished {
            attempt: a2,
            outcome: AttemptOutcome::Succeeded,
            error: None,
            steps: 1,
            retryable: None,
        },
    )
    .await;
    support::wait_state(&client, next.id, JobState::Succeeded).await;
    tokio::time::sleep(hb).await;
    assert_eq!(
        client.job(web.id).await.expect("job").state,
        JobState::Queued
    );
    c.shutdown().await;
}

#[tokio::test]
async fn many_metrics_are_downsampled() {
    let dir = tmp();
    let hb = Duration::from_millis(500);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");
    let job = support::submit(&client, "many").await;
    let mut w = support::worker(&c, &token, "w", vec![]).await;
    let (attempt, _) = expect_assign(&mut w, hb).await;
    // 250 points a message stay under the 64 KiB frame limit of the tests.
    for chunk in 0..40u64 {
        let points = (0..250)
            .map(|i| metric(chunk * 250 + i, Split::Train, 1.0))
            .collect();
        send_json(&mut w, &WorkerMessage::Metrics { attempt, points }).await;
    }
    support::finish_ok(&mut w, attempt, 10_000).await;
    support::wait_state(&client, job.id, JobState::Succeeded).await;
    let all = client
        .metrics(
            job.id,
            &MetricQuery {
                max_points: Some(100_000),
                ..Default::default()
            },
        )
        .await
        .expect("metrics");
    assert_eq!(all.len(), 10_000);
    let few = client
        .metrics(
            job.id,
            &MetricQuery {
                max_points: Some(100),
                ..Default::default()
            },
        )
        .await
        .expect("metrics");
    assert!(few.len() <= 100 && few.len() >= 50, "{}", few.len());
    assert_eq!(few.first().map(|p| p.metric.step), Some(0));
    assert_eq!(few.last().map(|p| p.metric.step), Some(9_999));
    let default = client
        .metrics(job.id, &MetricQuery::default())
        .await
        .expect("metrics");
    assert!(default.len() <= 2000);
    let err = client
        .metrics(
            job.id,
            &MetricQuery {
                max_points: Some(1),
                ..Default::default()
            },
        )
        .await
        .expect_err("400");
    assert!(err.to_string().contains("max_points"), "{err}");
    c.shutdown().await;
}

/// A worker that says a failure is final (bad data, a diverging loss) fails the job at once;
/// one that says nothing (older than the field) gets today's behaviour: the job is re-queued.
#[tokio::test]
async fn a_final_failure_is_not_retried_and_an_unclassified_one_is() {
    let dir = tmp();
    let hb = Duration::from_millis(500);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");
    let mut ws = support::worker(&c, &token, "w1", vec![]).await;

    let job = support::submit(&client, "final").await;
    assert!(job.max_attempts > 1, "{job:?}");
    let (attempt, _) = expect_assign(&mut ws, hb).await;
    assert_eq!(attempt.job_id, job.id);
    let why = "the loss became NaN at step 37: lower optimizer.lr or set training.grad_clip";
    send_json(
        &mut ws,
        &WorkerMessage::Finished {
            attempt,
            outcome: AttemptOutcome::Failed,
            error: Some(why.into()),
            steps: 37,
            retryable: Some(false),
        },
    )
    .await;
    let failed = support::wait_state(&client, job.id, JobState::Failed).await;
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.error, Some(format!("not retried: {why}")));

    let job = support::submit(&client, "older-worker").await;
    let (attempt, _) = expect_assign(&mut ws, hb).await;
    assert_eq!(attempt.job_id, job.id);
    let old = r#"{"type":"finished","job_id":JOB,"attempt":1,"outcome":"failed","error":"boom","steps":0}"#
        .replace("JOB", &job.id.to_string());
    ws.send(Message::Text(old.into())).await.expect("send");
    let (again, _) = expect_assign(&mut ws, hb).await;
    assert_eq!(
        again,
        AttemptRef {
            job_id: job.id,
            attempt: 2
        },
        "re-queued and assigned again"
    );
}
