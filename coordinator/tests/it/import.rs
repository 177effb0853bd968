//! `POST /api/jobs/import`: a run trained elsewhere (the playground's tab) saved as a job, or
//! continued on a worker from its checkpoint — and bad imports that store nothing.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;

use kiln_client::{Client, ClientError};
use kiln_proto::artifact::checkpoint_name;
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{ImportRun, JobState};

use crate::support::{self, ADMIN, MAX_ARTIFACT};

const HB: Duration = Duration::from_secs(2);

fn metric(step: u64, loss: f64) -> Metric {
    Metric {
        step,
        epoch: step as f64 / 10.0,
        split: Split::Train,
        loss,
        accuracy: None,
        lr: Some(0.01),
        samples_per_sec: Some(900.0),
    }
}

fn run(state: JobState, step: u64) -> ImportRun {
    ImportRun {
        spec: support::spec("from-the-tab"),
        tags: vec!["playground".into()],
        state,
        step,
        total_steps: 40,
        trained_on: "Chrome tab (cpu)".into(),
        started_ms: 1_700_000_000_000,
        finished_ms: 1_700_000_060_000,
        metrics: (1..=step).map(|s| metric(s, 2.0 / s as f64)).collect(),
    }
}

fn files(step: u64) -> Vec<(String, Vec<u8>)> {
    vec![
        ("model.bpk".into(), vec![7u8; 1000]),
        ("model.json".into(), br#"{"kind":"mlp"}"#.to_vec()),
        (checkpoint_name(step), vec![9u8; 3000]),
    ]
}

fn status(e: &ClientError) -> StatusCode {
    e.status()
        .unwrap_or_else(|| panic!("not an API error: {e}"))
}

/// Nothing is left half-received in the artifact folder.
fn no_staging_left(dir: &Path) {
    let root = dir.join("artifacts");
    let Ok(entries) = std::fs::read_dir(&root) else {
        return;
    };
    for entry in entries {
        let name = entry.expect("entry").file_name();
        assert!(
            !name.to_string_lossy().starts_with(".import-"),
            "{name:?} is left in {}",
            root.display()
        );
    }
}

#[tokio::test]
async fn a_saved_run_is_a_job_with_its_metrics_files_and_share_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);

    let job = client
        .import_run(&run(JobState::Succeeded, 40), files(40))
        .await
        .expect("import");
    assert_eq!(job.state, JobState::Succeeded);
    assert_eq!((job.step, job.total_steps, job.attempts), (40, 40, 1));
    assert_eq!(job.tags, vec!["playground".to_string()]);
    assert_eq!(job.finished_ms, Some(1_700_000_060_000));

    let listed = client.jobs(&Default::default()).await.expect("list");
    assert_eq!(listed.jobs.first().map(|j| j.id), Some(job.id));

    let metrics = client
        .metrics(job.id, &Default::default())
        .await
        .expect("metrics");
    assert_eq!(metrics.len(), 40);
    assert!(metrics.iter().all(|p| p.attempt == 1));
    assert_eq!(metrics.last().map(|p| p.metric.loss), Some(2.0 / 40.0));

    let attempts = client.attempts(job.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].worker_id, "Chrome tab (cpu)");
    assert_eq!(attempts[0].state, JobState::Succeeded);

    let names = support::artifact_names(&client, job.id).await;
    assert_eq!(
        names,
        vec![checkpoint_name(40), "model.bpk".into(), "model.json".into()]
    );
    let model = client
        .download_artifact(job.id, "model.bpk")
        .await
        .expect("download");
    assert_eq!(model, vec![7u8; 1000]);

    // Shared like any run.
    let share = client
        .create_share(job.id, &Default::default())
        .await
        .expect("share");
    let public = Client::new(&c.url(), None).expect("url");
    let shared = public.shared_run(&share.token).await.expect("shared run");
    assert_eq!(shared.job.id, job.id);
    no_staging_left(dir.path());
}

#[tokio::test]
async fn a_run_continued_on_a_worker_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);

    let job = client
        .import_run(&run(JobState::Queued, 25), files(25))
        .await
        .expect("import");
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.attempts, 1);

    let mut ws = support::worker(&c, ADMIN, "w-continue", vec![]).await;
    let (attempt, resume) = support::expect_assign(&mut ws, HB).await;
    assert_eq!(attempt.job_id, job.id);
    assert_eq!(attempt.attempt, 2, "attempt 1 was the tab's");
    assert_eq!(resume.as_deref(), Some(checkpoint_name(25).as_str()));
    let checkpoint = client
        .download_artifact(job.id, &checkpoint_name(25))
        .await
        .expect("the checkpoint");
    assert_eq!(checkpoint, vec![9u8; 3000]);

    let attempts = client.attempts(job.id).await.expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].state, JobState::Cancelled, "the tab stopped");
    assert_eq!(attempts[1].worker_id, "w-continue");
    assert_eq!(attempts[1].resumed_from_step, Some(25));
    support::finish_ok(&mut ws, attempt, 40).await;
    let done = support::wait_state(&client, job.id, JobState::Succeeded).await;
    assert_eq!(done.step, 40);
}

#[tokio::test]
async fn bad_imports_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = support::start(dir.path(), HB).await;
    let client = support::admin(&c);

    // Continuing needs a checkpoint.
    let no_ckpt = files(25).into_iter().take(2).collect();
    let e = client
        .import_run(&run(JobState::Queued, 25), no_ckpt)
        .await
        .expect_err("queued without a checkpoint");
    assert_eq!(status(&e), StatusCode::BAD_REQUEST);
    assert!(e.to_string().contains("state"), "{e}");

    // A state an import cannot have.
    let e = client
        .import_run(&run(JobState::Running, 25), files(25))
        .await
        .expect_err("running");
    assert!(e.to_string().contains("succeeded or cancelled"), "{e}");

    // A checkpoint from after the run's last step; metrics past it.
    let mut late = files(25);
    late[2].0 = checkpoint_name(30);
    let e = client
        .import_run(&run(JobState::Succeeded, 25), late)
        .await
        .expect_err("late checkpoint");
    assert!(e.to_string().contains("checkpoint-"), "{e}");
    let mut r = run(JobState::Succeeded, 25);
    r.metrics.push(metric(26, 0.1));
    let e = client
        .import_run(&r, files(25))
        .await
        .expect_err("late metric");
    assert!(e.to_string().contains("metrics[25].step"), "{e}");

    // An invalid spec names its field; so does a blank machine.
    let mut r = run(JobState::Succeeded, 25);
    r.spec.training.batch_size = 0;
    let e = client
        .import_run(&r, files(25))
        .await
        .expect_err("bad batch size");
    assert!(e.to_string().contains("training.batch_size"), "{e}");
    let mut r = run(JobState::Succeeded, 25);
    r.trained_on = " ".into();
    let e = client.import_run(&r, files(25)).await.expect_err("blank");
    assert!(e.to_string().contains("trained_on"), "{e}");

    // File names follow the artifact rules; a name comes once; a file over the limit.
    let e = client
        .import_run(
            &run(JobState::Succeeded, 25),
            vec![("../escape".into(), vec![1])],
        )
        .await
        .expect_err("bad name");
    assert_eq!(status(&e), StatusCode::BAD_REQUEST);
    let e = client
        .import_run(
            &run(JobState::Succeeded, 25),
            vec![("a.bin".into(), vec![1]), ("a.bin".into(), vec![2])],
        )
        .await
        .expect_err("twice");
    assert!(e.to_string().contains("twice"), "{e}");
    let e = client
        .import_run(
            &run(JobState::Succeeded, 25),
            vec![("model.bpk".into(), vec![0; MAX_ARTIFACT + 1])],
        )
        .await
        .expect_err("too large");
    assert_eq!(status(&e), StatusCode::PAYLOAD_TOO_LARGE);

    // Not multipart at all, or files before the run.
    let url = format!("{}/api/jobs/import", c.url());
    let (code, text) =
        crate::api::raw(&url, reqwest::Method::POST, Some(ADMIN), b"{}".to_vec()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(text.contains("multipart/form-data"), "{text}");
    let form = reqwest::multipart::Form::new()
        .part("model.bpk", reqwest::multipart::Part::bytes(vec![1, 2]))
        .text("run", "{}");
    let resp = reqwest::Client::new()
        .post(&url)
        .bearer_auth(ADMIN)
        .multipart(form)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(
        resp.text()
            .await
            .expect("body")
            .contains("first part must be `run`")
    );

    // Without the admin token.
    let anonymous = Client::new(&c.url(), None).expect("url");
    let e = anonymous
        .import_run(&run(JobState::Succeeded, 25), files(25))
        .await
        .expect_err("no token");
    assert_eq!(status(&e), StatusCode::UNAUTHORIZED);

    let page = client.jobs(&Default::default()).await.expect("list");
    assert_eq!(page.total, 0, "nothing was stored");
    no_staging_left(dir.path());
    // And the server carries on.
    client
        .import_run(&run(JobState::Succeeded, 25), files(25))
        .await
        .expect("a good import after the bad ones");
}
