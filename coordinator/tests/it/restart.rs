//! Restarting the coordinator on the same data directory loses nothing.

use std::time::Duration;

use kiln_client::MetricQuery;
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{CloseReason, CoordinatorMessage, JobState, WorkerMessage};

use crate::support::{self, Next, expect_assign, send_json};

#[tokio::test]
async fn restart_keeps_jobs_and_reattaches_running_attempts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = Duration::from_millis(300);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");
    let done = support::submit(&client, "done").await;
    client.cancel(done.id).await.expect("cancel");
    let job = support::submit(&client, "long").await;
    let mut w = support::worker(&c, &token, "w", vec![]).await;
    let (attempt, _) = expect_assign(&mut w, hb).await;
    support::start_ok(&mut w, attempt, 10).await;
    let point = Metric {
        step: 3,
        epoch: 0.1,
        split: Split::Train,
        loss: 0.5,
        accuracy: None,
        lr: None,
        samples_per_sec: None,
    };
    send_json(
        &mut w,
        &WorkerMessage::Metrics {
            attempt,
            points: vec![point.clone()],
        },
    )
    .await;
    client
        .upload_artifact(job.id, "checkpoint-0000000003.ckpt", vec![3; 10])
        .await
        .expect("upload");
    // Wait until the metrics are in before restarting.
    while client
        .metrics(job.id, &MetricQuery::default())
        .await
        .expect("metrics")
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
    match support::next::<CoordinatorMessage>(&mut w, None).await {
        Next::Msg(CoordinatorMessage::Goodbye { reason }) => {
            assert_eq!(reason, CloseReason::ShuttingDown)
        }
        other => panic!("expected goodbye, got {other:?}"),
    }

    // Same data dir, new port; no admin token given: the stored one still works.
    let c = kiln_coordinator::Coordinator::start(kiln_coordinator::CoordinatorConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        data_dir: dir.path().to_path_buf(),
        database: kiln_coordinator::testing::database_for(dir.path())
            .await
            .expect("test database"),
        admin_token: None,
        heartbeat_interval: hb,
        ..Default::default()
    })
    .await
    .expect("restart");
    assert_eq!(c.new_admin_token(), None, "the admin token is kept");
    let client = support::admin(&c);
    assert_eq!(
        client.job(done.id).await.expect("job").state,
        JobState::Cancelled
    );
    let running = client.job(job.id).await.expect("job");
    assert_eq!(
        (running.state, running.step, running.total_steps),
        (JobState::Running, 3, 10)
    );
    let metrics = client
        .metrics(job.id, &MetricQuery::default())
        .await
        .expect("metrics");
    assert_eq!(
        metrics.iter().map(|p| p.metric.clone()).collect::<Vec<_>>(),
        vec![point]
    );
    assert_eq!(
        client
            .download_artifact(job.id, "checkpoint-0000000003.ckpt")
            .await
            .expect("download"),
        vec![3; 10]
    );
    assert!(!client.workers().await.expect("workers")[0].connected);

    // The worker comes back with its attempt: re-attached, not re-assigned.
    let mut w = support::worker(&c, &token, "w", vec![attempt]).await;
    // Longer than the lost timeout, heartbeating as a worker does.
    for _ in 0..8 {
        send_json(
            &mut w,
            &WorkerMessage::Heartbeat {
                running: vec![attempt],
            },
        )
        .await;
        tokio::time::sleep(hb / 2).await;
    }
    let still = client.job(job.id).await.expect("job");
    assert_eq!((still.state, still.attempts), (JobState::Running, 1));
    support::finish_ok(&mut w, attempt, 10).await;
    support::wait_state(&client, job.id, JobState::Succeeded).await;
    assert_eq!(client.attempts(job.id).await.expect("attempts").len(), 1);
    c.shutdown().await;
}

#[tokio::test]
async fn attempts_whose_worker_never_returns_are_lost_after_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hb = Duration::from_millis(100);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");
    let job = support::submit(&client, "orphan").await;
    let mut w = support::worker(&c, &token, "w", vec![]).await;
    expect_assign(&mut w, hb).await;
    c.shutdown().await;
    drop(w);
    let c = support::start(dir.path(), hb).await;
    let client = support::admin(&c);
    let job = support::wait_state(&client, job.id, JobState::Queued).await;
    assert_eq!(job.error.as_deref(), Some("worker lost"));
    c.shutdown().await;
}
