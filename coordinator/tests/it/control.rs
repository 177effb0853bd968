//! Live control (pause, resume, checkpoint now, a new learning rate) and forks, with fake
//! workers over real WebSockets: what the coordinator asks, stores and refuses.

use std::time::Duration;

use reqwest::StatusCode;

use kiln_client::{Client, ClientError};
use kiln_proto::artifact::checkpoint_name;
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{
    AttemptRef, ControlAction, CoordinatorMessage, ForkJob, ForkOrigin, JobId, JobInfo, JobState,
    LrChange, PROTOCOL_VERSION, WorkerMessage,
};
use kiln_proto::spec::{DeviceRequest, FieldError, ModelSpec};

use crate::support::{self, Ws, recv, send_json};

const HB: Duration = Duration::from_millis(300);

/// A worker that takes live control (`Capabilities::control`), as the native worker does.
async fn control_worker(c: &kiln_coordinator::Coordinator, token: &str, id: &str) -> Ws {
    let mut ws = support::connect(c, "/ws/worker", token).await;
    let mut capabilities = support::caps(vec![DeviceRequest::Cpu]);
    capabilities.control = true;
    send_json(
        &mut ws,
        &WorkerMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_id: id.into(),
            name: format!("fake {id}"),
            capabilities,
            running: vec![],
        },
    )
    .await;
    match recv(&mut ws, None).await {
        CoordinatorMessage::Welcome { .. } => ws,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// The next Assign: its attempt, resume, paused and live learning rates.
async fn assign(ws: &mut Ws) -> (AttemptRef, Option<String>, bool, Vec<LrChange>) {
    match recv(ws, Some(HB)).await {
        CoordinatorMessage::Assign {
            attempt,
            resume,
            paused,
            lr_changes,
            ..
        } => (attempt, resume, paused, lr_changes),
        other => panic!("expected assign, got {other:?}"),
    }
}

async fn expect_control(ws: &mut Ws, attempt: AttemptRef, want: ControlAction) {
    match recv(ws, Some(HB)).await {
        CoordinatorMessage::Control {
            attempt: a,
            control,
        } => assert_eq!((a, control), (attempt, want)),
        other => panic!("expected control {want:?}, got {other:?}"),
    }
}

fn api_error(err: &ClientError) -> (Option<StatusCode>, String, Vec<FieldError>) {
    match err {
        ClientError::Api {
            status,
            message,
            fields,
        } => (Some(*status), message.clone(), fields.clone()),
        other => (None, other.to_string(), Vec::new()),
    }
}

async fn conflict(result: Result<JobInfo, ClientError>, says: &str) {
    let err = result.expect_err("refused");
    let (status, message, _) = api_error(&err);
    assert_eq!(status, Some(StatusCode::CONFLICT), "{message}");
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

/// One problem, on `field`.
fn bad_field(result: Result<JobInfo, ClientError>, field: &str) -> FieldError {
    let err = result.expect_err("refused");
    let (status, message, fields) = api_error(&err);
    assert_eq!(status, Some(StatusCode::BAD_REQUEST), "{message}");
    assert_eq!(fields.len(), 1, "{fields:?}");
    assert_eq!(fields[0].field, field, "{fields:?}");
    fields[0].clone()
}

async fn wait_job(client: &Client, id: JobId, what: &str, ok: impl Fn(&JobInfo) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let job = client.job(id).await.expect("job");
        if ok(&job) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never {what}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn log_texts(client: &Client, id: JobId) -> Vec<String> {
    client
        .logs(id, 0, None)
        .await
        .expect("logs")
        .into_iter()
        .map(|l| l.line.text)
        .collect()
}

async fn wait_log(client: &Client, id: JobId, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let texts = log_texts(client, id).await;
        if texts.iter().any(|t| t == text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id}'s log never said {text:?}: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metrics(attempt: AttemptRef, steps: std::ops::RangeInclusive<u64>) -> WorkerMessage {
    WorkerMessage::Metrics {
        attempt,
        points: steps
            .map(|step| Metric {
                step,
                epoch: 0.0,
                split: Split::Train,
                loss: 1.0 / step as f64,
                accuracy: None,
                lr: Some(0.01),
                samples_per_sec: None,
            })
            .collect(),
    }
}

#[tokio::test]
async fn control_reaches_the_worker_and_forks_resume_from_a_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);
    let token = c.create_worker_token("fake").await.expect("token");

    // A queued job is paused: it will start paused. Checkpoint and a new rate wait for a run;
    // a rate out of range names its field.
    let a = support::submit(&client, "a").await;
    let paused = client
        .control(a.id, ControlAction::Pause)
        .await
        .expect("pause");
    assert!(paused.paused && paused.state == JobState::Queued);
    conflict(
        client.control(a.id, ControlAction::Checkpoint).await,
        "is queued",
    )
    .await;
    let f = bad_field(
        client.control(a.id, ControlAction::SetLr { lr: 0.0 }).await,
        "lr",
    );
    assert_eq!(f.value, "0");
    let err = client
        .control(a.id + 100, ControlAction::Pause)
        .await
        .expect_err("no such job");
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));

    // A worker without live control does not get the paused job (it could not hold it), so
    // the job submitted after it goes first.
    let mut plain = support::worker(&c, &token, "plain", vec![]).await;
    let d = support::submit(&client, "d").await;
    let (d_attempt, _, d_paused, _) = assign(&mut plain).await;
    assert_eq!((d_attempt.job_id, d_paused), (d.id, false));
    support::wait_state(&client, d.id, JobState::Running).await;
    conflict(
        client.control(d.id, ControlAction::Pause).await,
        "cannot take live control",
    )
    .await;

    // A worker that takes control gets it, paused.
    let mut w = control_worker(&c, &token, "w").await;
    let (attempt, resume, start_paused, lrs) = assign(&mut w).await;
    assert_eq!(attempt.job_id, a.id);
    assert_eq!((resume, start_paused, lrs), (None, true, vec![]));
    support::wait_state(&client, a.id, JobState::Running).await;
    support::start_ok(&mut w, attempt, 10).await;
    // Metrics come every `log_every` steps: the last one here is step 2.
    send_json(&mut w, &metrics(attempt, 1..=2)).await;

    // A new learning rate: asked of the worker; once it says it took effect after step 3,
    // the job keeps it (for a resume) and its log says so.
    let asked = client
        .control(a.id, ControlAction::SetLr { lr: 0.5 })
        .await
        .expect("set lr");
    assert!(asked.lr_changes.is_empty(), "kept only once it took effect");
    expect_control(&mut w, attempt, ControlAction::SetLr { lr: 0.5 }).await;
    send_json(
        &mut w,
        &WorkerMessage::Controlled {
            attempt,
            step: 3,
            control: ControlAction::SetLr { lr: 0.5 },
        },
    )
    .await;
    wait_log(&client, a.id, "learning rate 0.5 from step 4").await;
    let changed = client.job(a.id).await.expect("job");
    assert_eq!(changed.lr_changes, vec![LrChange { step: 3, lr: 0.5 }]);
    assert_eq!(
        changed.step, 3,
        "the step the worker reported, past the last metric"
    );

    let resumed = client
        .control(a.id, ControlAction::Resume)
        .await
        .expect("resume");
    assert!(!resumed.paused && resumed.state == JobState::Running);
    expect_control(&mut w, attempt, ControlAction::Resume).await;
    send_json(
        &mut w,
        &WorkerMessage::Controlled {
            attempt,
            step: 3,
            control: ControlAction::Resume,
        },
    )
    .await;
    wait_log(&client, a.id, "resumed after step 3").await;

    // Nothing to fork from yet.
    conflict(
        client.fork(a.id, &ForkJob::default()).await,
        "has no checkpoint",
    )
    .await;

    // A checkpoint now: the worker writes one after step 5 and announces it.
    client
        .control(a.id, ControlAction::Checkpoint)
        .await
        .expect("checkpoint");
    expect_control(&mut w, attempt, ControlAction::Checkpoint).await;
    send_json(&mut w, &metrics(attempt, 4..=5)).await;
    let ckpt = checkpoint_name(5);
    Client::new(&c.url(), Some(token.clone()))
        .expect("url")
        .as_worker("w")
        .upload_artifact(a.id, &ckpt, b"weights after five".to_vec())
        .await
        .expect("upload");
    send_json(
        &mut w,
        &WorkerMessage::Checkpoint {
            attempt,
            step: 5,
            artifact: ckpt.clone(),
        },
    )
    .await;
    send_json(
        &mut w,
        &WorkerMessage::Controlled {
            attempt,
            step: 5,
            control: ControlAction::Checkpoint,
        },
    )
    .await;
    wait_log(&client, a.id, "checkpoint at step 5, as asked").await;

    // Forks: the step must be a checkpoint's, the model and dataset the job's, and there
    // must be steps left to train.
    let f = bad_field(
        client
            .fork(
                a.id,
                &ForkJob {
                    step: Some(4),
                    ..ForkJob::default()
                },
            )
            .await,
        "step",
    );
    assert_eq!(f.value, "4");
    assert!(f.allowed.contains('5'), "{f:?}");
    let mut short = a.spec.clone();
    short.training.max_steps = Some(5);
    let f = bad_field(
        client
            .fork(
                a.id,
                &ForkJob {
                    spec: Some(short),
                    ..ForkJob::default()
                },
            )
            .await,
        "training.max_steps",
    );
    assert!(f.allowed.contains("step 5"), "{f:?}");
    let mut other_model = a.spec.clone();
    other_model.model =
        serde_json::from_str::<ModelSpec>(r#"{"kind":"mlp","hidden":[7]}"#).expect("model");
    bad_field(
        client
            .fork(
                a.id,
                &ForkJob {
                    spec: Some(other_model),
                    ..ForkJob::default()
                },
            )
            .await,
        "model",
    );

    // The same spec: the live rate set before step 5 comes along.
    let same = client
        .fork(
            a.id,
            &ForkJob {
                tags: vec!["fork".into()],
                ..ForkJob::default()
            },
        )
        .await
        .expect("fork");
    assert_eq!(same.state, JobState::Queued);
    assert_eq!(
        same.forked_from,
        Some(ForkOrigin {
            job_id: a.id,
            step: 5
        })
    );
    assert_eq!(same.step, 5);
    assert_eq!(same.tags, vec!["fork".to_string()]);
    assert_eq!(same.lr_changes, vec![LrChange { step: 3, lr: 0.5 }]);
    assert_eq!(
        client
            .download_artifact(same.id, &ckpt)
            .await
            .expect("the fork's own copy"),
        b"weights after five"
    );
    // Another learning rate: the job's live ones do not apply.
    let mut faster = a.spec.clone();
    faster.optimizer.lr = 0.1;
    let other = client
        .fork(
            a.id,
            &ForkJob {
                step: Some(5),
                spec: Some(faster),
                tags: Vec::new(),
            },
        )
        .await
        .expect("fork");
    assert!(other.lr_changes.is_empty(), "{other:?}");
    assert_eq!(other.spec.optimizer.lr, 0.1);

    // The first job finishes; the fork with live rates needs a worker that takes control and
    // resumes from its copy of the checkpoint, replaying the rate.
    support::finish_ok(&mut w, attempt, 10).await;
    support::wait_state(&client, a.id, JobState::Succeeded).await;
    conflict(
        client.control(a.id, ControlAction::Resume).await,
        "only a queued or running job",
    )
    .await;
    let (fork_attempt, resume, start_paused, lrs) = assign(&mut w).await;
    assert_eq!(fork_attempt.job_id, same.id);
    assert_eq!(resume.as_deref(), Some(ckpt.as_str()));
    assert_eq!(
        (start_paused, lrs),
        (false, vec![LrChange { step: 3, lr: 0.5 }])
    );
    let attempts = client.attempts(same.id).await.expect("attempts");
    assert_eq!(attempts[0].resumed_from_step, Some(5));

    // The other fork has no live rates: the plain worker takes it once it is free.
    support::finish_ok(&mut plain, d_attempt, 10).await;
    let (other_attempt, resume, _, lrs) = assign(&mut plain).await;
    assert_eq!(other_attempt.job_id, other.id);
    assert_eq!((resume.as_deref(), lrs), (Some(ckpt.as_str()), vec![]));

    // A job without checkpoints has nothing to fork.
    wait_job(&client, d.id, "succeeded", |j| {
        j.state == JobState::Succeeded
    })
    .await;
    conflict(
        client.fork(d.id, &ForkJob::default()).await,
        "has no checkpoint",
    )
    .await;
    // A paused job that ends is no longer paused (a retry does not start held).
    let e = support::submit(&client, "e").await;
    assert!(
        client
            .control(e.id, ControlAction::Pause)
            .await
            .expect("pause")
            .paused
    );
    let cancelled = client.cancel(e.id).await.expect("cancel");
    assert_eq!(
        (cancelled.state, cancelled.paused),
        (JobState::Cancelled, false)
    );
    c.shutdown().await;
}
