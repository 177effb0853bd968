//! Store transitions on a real SQLite file.

use kiln_proto::JobSpec;
use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{AttemptOutcome, AttemptRank, JobState};

use super::*;

fn spec(max_attempts: u32) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"name":"s","max_attempts":{max_attempts},"model":{{"kind":"mlp"}},"dataset":{{"kind":"synthetic"}}}}"#
    ))
    .expect("valid spec")
}

/// A worker with no devices: what the store keeps of a worker's hello.
fn caps() -> kiln_proto::protocol::Capabilities {
    kiln_proto::protocol::Capabilities {
        devices: vec![],
        device_names: vec![],
        memory_mb: 1,
        cores: 1,
        kiln_version: "t".into(),
        peer_addr: None,
        browser: false,
        control: false,
    }
}

async fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = crate::testing::store(dir.path()).await.expect("opens");
    (dir, store)
}

#[tokio::test]
async fn a_database_url_that_is_not_postgres_is_refused_naming_the_flag() {
    let err = Store::connect("mysql://kiln:secret@db.example/kiln")
        .await
        .expect_err("not postgres");
    let msg = err.to_string();
    assert!(
        msg.contains("--database") && msg.contains("postgres://"),
        "{msg}"
    );
    assert!(!msg.contains("secret"), "the password is hidden: {msg}");
    // Nothing listens on port 1: the error names the server, not the password.
    let err = Store::connect("postgres://kiln:secret@127.0.0.1:1/kiln")
        .await
        .expect_err("unreachable");
    let msg = err.to_string();
    assert!(msg.contains("cannot connect to the database"), "{msg}");
    assert!(
        msg.contains("127.0.0.1:1") && !msg.contains("secret"),
        "{msg}"
    );
}

#[test]
fn database_urls_are_shown_without_their_password() {
    assert_eq!(
        super::redact("postgres://kiln:hunter2@db:5432/kiln?sslmode=require"),
        "postgres://kiln:***@db:5432/kiln?sslmode=require"
    );
    assert_eq!(super::redact("postgres://db/kiln"), "postgres://db/kiln");
    assert_eq!(super::redact("not a url"), "(not a URL)");
}

#[tokio::test]
async fn relative_paths_are_refused() {
    let err = Store::open(std::path::Path::new("relative/dir"))
        .await
        .expect_err("relative");
    assert!(err.to_string().contains("absolute"), "{err}");
}

#[tokio::test]
async fn failures_requeue_until_max_attempts_then_retry_adds_more() {
    let (_dir, store) = store().await;
    let job = store.insert_job(&spec(2), None, &[]).await.expect("insert");
    for (n, expected) in [(1, JobState::Queued), (2, JobState::Failed)] {
        let a = store
            .assign(job.id, "w")
            .await
            .expect("assign")
            .expect("queued");
        assert_eq!(a.attempt.attempt, n);
        assert!(store.is_current(a.attempt).await.expect("query"));
        let after = store
            .finish_attempt(
                a.attempt,
                AttemptOutcome::Failed,
                Some("boom"),
                Some(5),
                true,
            )
            .await
            .expect("finish")
            .expect("current");
        assert_eq!(after.state, expected);
        assert_eq!(after.error.as_deref(), Some("boom"));
        // A second report of the same attempt changes nothing.
        assert!(
            store
                .finish_attempt(a.attempt, AttemptOutcome::Succeeded, None, None, true)
                .await
                .expect("finish")
                .is_none()
        );
    }
    let retried = store.retry_job(job.id).await.expect("retry");
    assert_eq!(
        (retried.state, retried.max_attempts, retried.error),
        (JobState::Queued, 4, None)
    );
    assert!(matches!(
        store.retry_job(job.id).await,
        Err(StoreError::Conflict(_))
    ));
    let attempts = store.attempts(job.id).await.expect("attempts");
    assert_eq!(attempts.len(), 2);
}

/// Invalid data, a diverging loss, out of memory: the same on every attempt, so the job fails
/// at once even with attempts left, and its error says why it was not retried.
#[tokio::test]
async fn a_failure_that_is_not_retryable_fails_the_job_with_attempts_left() {
    let (_dir, store) = store().await;
    let job = store.insert_job(&spec(3), None, &[]).await.expect("insert");
    let a = store
        .assign(job.id, "w")
        .await
        .expect("assign")
        .expect("queued");
    let why = "the loss became NaN at step 37: lower optimizer.lr or set training.grad_clip";
    let after = store
        .finish_attempt(
            a.attempt,
            AttemptOutcome::Failed,
            Some(why),
            Some(37),
            false,
        )
        .await
        .expect("finish")
        .expect("current");
    assert_eq!(
        (after.state, after.attempts, after.max_attempts),
        (JobState::Failed, 1, 3)
    );
    assert_eq!(after.error, Some(format!("not retried: {why}")));
    assert!(after.finished_ms.is_some());
    let attempts = store.attempts(job.id).await.expect("attempts");
    assert_eq!(attempts.len(), 1);
    assert_eq!(
        attempts[0].error.as_deref(),
        Some(why),
        "the attempt keeps the cause"
    );
    // Nothing to assign: it is not queued.
    assert!(store.assign(job.id, "w").await.expect("assign").is_none());
    // A person may still retry it (after fixing the data, say).
    let retried = store.retry_job(job.id).await.expect("retry");
    assert_eq!((retried.state, retried.error), (JobState::Queued, None));
}

#[tokio::test]
async fn cancel_requested_wins_over_requeue_and_resume_picks_the_newest_announced_checkpoint() {
    let (_dir, store) = store().await;
    let job = store
        .insert_job(&spec(3), Some("g"), &[])
        .await
        .expect("insert");
    let a = store
        .assign(job.id, "w")
        .await
        .expect("assign")
        .expect("queued");
    assert_eq!(a.resume, None);
    for step in [9, 10, 2, 12] {
        store
            .upsert_artifact(job.id, &kiln_proto::artifact::checkpoint_name(step), 1)
            .await
            .expect("artifact");
    }
    // Step 12's worker died before it announced the checkpoint: not resumed from.
    for step in [9, 10, 2] {
        assert!(
            store
                .announce_checkpoint(job.id, &kiln_proto::artifact::checkpoint_name(step))
                .await
                .expect("announce")
        );
    }
    assert!(
        !store
            .announce_checkpoint(job.id, "checkpoint-0000000099.ckpt")
            .await
            .expect("announce"),
        "an unstored checkpoint"
    );
    store
        .upsert_artifact(job.id, "checkpoint-x.ckpt", 1)
        .await
        .expect("artifact");
    assert!(matches!(
        store.cancel_job(job.id).await,
        Ok(CancelOutcome::Requested { .. })
    ));
    let after = store
        .finish_attempt(
            a.attempt,
            AttemptOutcome::Failed,
            Some("interrupted"),
            None,
            true,
        )
        .await
        .expect("finish")
        .expect("current");
    assert_eq!(after.state, JobState::Cancelled);
    store.retry_job(job.id).await.expect("retry");
    let b = store
        .assign(job.id, "w2")
        .await
        .expect("assign")
        .expect("queued");
    assert_eq!(b.resume.as_deref(), Some("checkpoint-0000000010.ckpt"));
    assert_eq!(b.job.step, 10);
    assert_eq!(
        store.attempts(job.id).await.expect("attempts")[1].resumed_from_step,
        Some(10)
    );
}

#[tokio::test]
async fn metrics_of_stale_attempts_are_dropped_and_batches_are_large() {
    let (_dir, store) = store().await;
    let job = store.insert_job(&spec(3), None, &[]).await.expect("insert");
    let a = store
        .assign(job.id, "w")
        .await
        .expect("assign")
        .expect("queued");
    let points: Vec<Metric> = (0..2_345)
        .map(|s| Metric {
            step: s,
            epoch: 0.0,
            split: if s % 10 == 0 {
                Split::Val
            } else {
                Split::Train
            },
            loss: if s == 7 { f64::NAN } else { 1.0 },
            accuracy: None,
            lr: Some(0.1),
            samples_per_sec: None,
        })
        .collect();
    assert!(
        store
            .insert_metrics(a.attempt, &points)
            .await
            .expect("insert")
    );
    let stored = store
        .metrics(job.id, MetricRange::default())
        .await
        .expect("query");
    assert_eq!(stored.len(), points.len());
    assert!(stored[7].metric.loss.is_nan(), "NaN comes back as NaN");
    assert_eq!(store.job(job.id).await.expect("job").step, 2_344);
    let val = MetricRange {
        split: Some(Split::Val),
        from_step: Some(100),
        to_step: Some(200),
    };
    assert_eq!(store.metrics(job.id, val).await.expect("query").len(), 11);
    store
        .finish_attempt(a.attempt, AttemptOutcome::Failed, None, None, true)
        .await
        .expect("finish");
    assert!(
        !store
            .insert_metrics(a.attempt, &points[..1])
            .await
            .expect("insert")
    );
    assert!(!store.insert_logs(a.attempt, &[]).await.expect("insert"));
}

#[tokio::test]
async fn tokens_and_workers() {
    let (_dir, store) = store().await;
    assert!(!store.has_admin_token().await.expect("query"));
    use kiln_proto::token::TokenScope;
    let scope = |hash: &'static str| {
        let store = store.clone();
        async move {
            store
                .token_by_hash(hash)
                .await
                .expect("query")
                .map(|t| t.info.scope)
        }
    };
    // A new bootstrap admin token replaces the earlier one; tokens made otherwise stay.
    store
        .put_bootstrap("h1", TokenScope::Admin)
        .await
        .expect("put");
    store
        .put_bootstrap("hw1", TokenScope::Worker)
        .await
        .expect("put");
    let other_admin = store
        .create_token("h4", TokenScope::Admin, "ops", None, None)
        .await
        .expect("create");
    store
        .put_bootstrap("h2", TokenScope::Admin)
        .await
        .expect("put");
    store
        .put_bootstrap("hw2", TokenScope::Worker)
        .await
        .expect("put");
    let worker = store
        .create_token("h3", TokenScope::Worker, "w", None, Some("w"))
        .await
        .expect("create");
    assert_eq!(scope("h1").await, None, "replaced");
    assert_eq!(scope("hw1").await, None, "replaced");
    assert_eq!(scope("hw2").await, Some(TokenScope::Worker));
    assert_eq!(scope("h2").await, Some(TokenScope::Admin));
    assert_eq!(scope("h4").await, Some(TokenScope::Admin));
    assert_eq!(scope("h3").await, Some(TokenScope::Worker));
    assert_eq!(worker.worker_id.as_deref(), Some("w"));
    // Expiry is the store's to tell; revoking deletes.
    let past = store
        .create_token("h5", TokenScope::Read, "old", Some(1), None)
        .await
        .expect("create");
    assert!(
        store
            .token_by_hash("h5")
            .await
            .expect("q")
            .expect("row")
            .expired
    );
    assert!(
        !store
            .token_by_hash("h2")
            .await
            .expect("q")
            .expect("row")
            .expired
    );
    let listed: Vec<i64> = store
        .tokens()
        .await
        .expect("list")
        .iter()
        .map(|t| t.id)
        .collect();
    assert!(
        listed.contains(&other_admin.id) && listed.contains(&past.id),
        "{listed:?}"
    );
    assert_eq!(
        store.revoke_token(past.id).await.expect("revoke").name,
        "old"
    );
    // Admin tokens go, but not the last one.
    assert_eq!(
        store
            .revoke_token(other_admin.id)
            .await
            .expect("revoke")
            .name,
        "ops"
    );
    let last = store
        .tokens()
        .await
        .expect("list")
        .into_iter()
        .find(|t| t.scope == TokenScope::Admin)
        .expect("the bootstrap admin");
    assert!(matches!(
        store.revoke_token(last.id).await,
        Err(StoreError::Conflict(m)) if m.contains("last admin token")
    ));
    assert_eq!(scope("h2").await, Some(TokenScope::Admin));
    assert_eq!(scope("h5").await, None);
    assert!(matches!(
        store.revoke_token(past.id).await,
        Err(StoreError::NotFound(_))
    ));
    let caps = caps();
    let w = store
        .connect_worker("w", "box", &caps, false)
        .await
        .expect("connect");
    // Connected once its hello is reconciled on a coordinator, not before.
    assert!(!w.connected && !w.draining);
    store.worker_ready("w", "node-1").await.expect("ready");
    assert!(store.worker("w").await.expect("worker").connected);
    assert_eq!(
        store.worker_nodes().await.expect("nodes"),
        vec![("w".to_string(), Some("node-1".to_string()))]
    );
    // A disconnect seen on another coordinator does not undo it; one on its own does.
    assert!(
        store
            .worker_disconnected("w", "node-2")
            .await
            .expect("elsewhere")
            .connected
    );
    assert!(
        !store
            .worker_disconnected("w", "node-1")
            .await
            .expect("its own")
            .connected
    );
    assert!(store.drain_worker("w").await.expect("drain").draining);
    assert!(
        store
            .connect_worker("w", "box", &caps, true)
            .await
            .expect("connect")
            .draining
    );
    assert!(
        !store
            .connect_worker("w", "box", &caps, false)
            .await
            .expect("connect")
            .draining
    );
    store.disconnect_all_workers().await.expect("disconnect");
    assert!(!store.workers().await.expect("workers")[0].connected);
    assert!(matches!(
        store.drain_worker("nobody").await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn share_links_resolve_until_revoked_and_go_with_their_job() {
    let (_dir, store) = store().await;
    let job = store.insert_job(&spec(1), None, &[]).await.expect("insert");
    let a = store
        .create_share(job.id, "hash-a", "aaaaaa", false)
        .await
        .expect("create");
    let b = store
        .create_share(job.id, "hash-b", "bbbbbb", true)
        .await
        .expect("create");
    assert_eq!(
        (a.job_id, a.hint.as_str(), a.revoked_ms),
        (job.id, "aaaaaa", None)
    );
    assert!(matches!(
        store
            .create_share(job.id + 1, "hash-c", "cccccc", false)
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(
        matches!(
            store.create_share(job.id, "hash-a", "aaaaaa", false).await,
            Err(StoreError::Db(_))
        ),
        "token hashes are unique"
    );
    assert_eq!(
        store.shared_job("hash-a").await.expect("query"),
        Some((job.id, false))
    );
    assert_eq!(
        store.shared_job("hash-b").await.expect("query"),
        Some((job.id, true)),
        "b shares the data"
    );
    assert!(b.with_data && !a.with_data);
    assert_eq!(store.shared_job("nope").await.expect("query"), None);
    let listed = store.shares(job.id).await.expect("list");
    assert_eq!(listed, vec![b.clone(), a.clone()], "newest first");

    let revoked = store.revoke_share(a.id).await.expect("revoke");
    let at = revoked.revoked_ms.expect("revoked");
    let again = store.revoke_share(a.id).await.expect("revoke again");
    assert_eq!(again.revoked_ms, Some(at));
    assert_eq!(store.shared_job("hash-a").await.expect("query"), None);
    assert_eq!(
        store.shared_job("hash-b").await.expect("query"),
        Some((job.id, true))
    );
    assert!(matches!(
        store.revoke_share(b.id + 100).await,
        Err(StoreError::NotFound(_))
    ));

    // Jobs are never deleted through the API; if one is, its links go with it.
    sqlx::query("DELETE FROM jobs WHERE id = $1")
        .bind(job.id)
        .execute(&store.pool)
        .await
        .expect("delete");
    assert_eq!(store.shared_job("hash-b").await.expect("query"), None);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM shares")
        .fetch_one(&store.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn notes_and_tags_are_kept_and_tags_filter_the_list() {
    use kiln_proto::protocol::{JobPage, JobPatch};

    let (_dir, store) = store().await;
    let a = store.insert_job(&spec(1), None, &[]).await.expect("insert");
    let b = store.insert_job(&spec(1), None, &[]).await.expect("insert");
    assert!(a.notes.is_empty() && a.tags.is_empty());

    let tagged = store
        .annotate_job(
            a.id,
            &JobPatch {
                notes: Some("first try".into()),
                tags: Some(vec!["baseline".into(), "mlp".into()]),
            },
        )
        .await
        .expect("annotate");
    assert_eq!(tagged.notes, "first try");
    assert_eq!(tagged.tags, ["baseline", "mlp"]);
    // Only what the patch names changes.
    let notes_only = store
        .annotate_job(
            a.id,
            &JobPatch {
                notes: Some("second look".into()),
                tags: None,
            },
        )
        .await
        .expect("annotate");
    assert_eq!(notes_only.tags, ["baseline", "mlp"]);
    assert_eq!(store.job(a.id).await.expect("job"), notes_only);
    store
        .annotate_job(
            b.id,
            &JobPatch {
                notes: None,
                tags: Some(vec!["mlp".into()]),
            },
        )
        .await
        .expect("annotate");

    let with_tag = |tag: &str| JobFilter {
        tag: Some(tag.into()),
        limit: 50,
        ..JobFilter::default()
    };
    let ids = |page: JobPage| page.jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.jobs(&with_tag("mlp")).await.expect("list")),
        [b.id, a.id]
    );
    let baseline = store.jobs(&with_tag("baseline")).await.expect("list");
    assert_eq!((ids(baseline.clone()), baseline.total), (vec![a.id], 1));
    // Whole tags only: no prefix or substring matches.
    assert!(
        store
            .jobs(&with_tag("base"))
            .await
            .expect("list")
            .jobs
            .is_empty()
    );
    assert!(matches!(
        store.annotate_job(b.id + 100, &JobPatch::default()).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn every_change_takes_a_higher_revision_from_one_counter() {
    let (dir, store) = store().await;
    let caps = caps();
    let w0 = store
        .connect_worker("w", "box", &caps, false)
        .await
        .expect("connect");
    let queued = store.insert_job(&spec(2), None, &[]).await.expect("insert");
    assert!(
        queued.revision > w0.revision,
        "one counter for jobs and workers"
    );

    // Each transition of the job: a strictly higher revision, and the list's snapshot
    // revision is at least every revision it shows.
    let a = store
        .assign(queued.id, "w")
        .await
        .expect("assign")
        .expect("queued");
    assert!(a.job.revision > queued.revision);
    // The worker's `running` comes from the job row: its revision moved with the job.
    let w1 = store.worker("w").await.expect("worker");
    assert_eq!(w1.running, Some(a.attempt));
    assert!(
        w1.revision > w0.revision,
        "{} > {}",
        w1.revision,
        w0.revision
    );

    let started = store
        .start_attempt(a.attempt, 100, 0)
        .await
        .expect("start")
        .expect("current");
    assert!(started.revision > a.job.revision);
    let metric = Metric {
        step: 5,
        epoch: 0.1,
        split: Split::Train,
        loss: 1.0,
        accuracy: None,
        lr: None,
        samples_per_sec: None,
    };
    assert!(
        store
            .insert_metrics(a.attempt, &[metric])
            .await
            .expect("metrics")
    );
    let progressed = store.job(queued.id).await.expect("job");
    assert_eq!(progressed.step, 5);
    assert!(progressed.revision > started.revision);
    let page = store
        .jobs(&JobFilter {
            limit: 10,
            ..JobFilter::default()
        })
        .await
        .expect("list");
    assert_eq!(page.jobs[0], progressed);
    assert!(page.revision >= progressed.revision);

    let done = store
        .finish_attempt(a.attempt, AttemptOutcome::Succeeded, None, Some(100), true)
        .await
        .expect("finish")
        .expect("current");
    assert!(done.revision > progressed.revision);
    assert!(done.revision > page.revision, "changed after the snapshot");
    let w2 = store.worker("w").await.expect("worker");
    assert_eq!(w2.running, None);
    assert!(w2.revision > w1.revision, "the worker stopped running it");

    // Annotating is a change too; reading is not.
    let patch = kiln_proto::protocol::JobPatch {
        notes: Some("n".into()),
        tags: None,
    };
    let noted = store.annotate_job(queued.id, &patch).await.expect("patch");
    assert!(noted.revision > done.revision);
    assert_eq!(
        store.job(queued.id).await.expect("job").revision,
        noted.revision
    );
    // Revisions survive a reopen of the database (they live in it, not in memory).
    drop(store);
    let store = crate::testing::store(dir.path()).await.expect("reopen");
    let w3 = store
        .worker_disconnected("w", "n")
        .await
        .expect("disconnect");
    assert!(w3.revision > noted.revision);
}

#[tokio::test]
async fn an_attempt_can_hold_several_ranks_and_rank_0_is_the_assigned_worker() {
    let (_dir, store) = store().await;
    let job = store.insert_job(&spec(2), None, &[]).await.expect("insert");
    let a = store
        .assign(job.id, "w0")
        .await
        .expect("assign")
        .expect("queued");
    store
        .add_rank(a.attempt, 1, "w1")
        .await
        .expect("add rank")
        .expect("current attempt");
    // A rank is held once.
    assert!(store.add_rank(a.attempt, 1, "w2").await.is_err());
    let attempts = store.attempts(job.id).await.expect("attempts");
    let ranks: Vec<(u32, &str)> = attempts[0]
        .ranks
        .iter()
        .map(|r| (r.rank, r.worker_id.as_str()))
        .collect();
    assert_eq!(ranks, [(0, "w0"), (1, "w1")]);
    assert_eq!(attempts[0].worker_id, "w0", "worker_id stays rank 0's");

    // A finished attempt takes no more ranks; the next attempt starts with its own rank 0.
    store
        .finish_attempt(a.attempt, AttemptOutcome::Failed, Some("lost"), None, true)
        .await
        .expect("finish");
    assert_eq!(
        store.add_rank(a.attempt, 2, "w2").await.expect("query"),
        None
    );
    let b = store
        .assign(job.id, "w2")
        .await
        .expect("assign")
        .expect("requeued");
    let attempts = store.attempts(job.id).await.expect("attempts");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0].ranks.len(), 2);
    assert_eq!(
        attempts[1].ranks,
        [AttemptRank {
            rank: 0,
            worker_id: "w2".into()
        }]
    );
    assert_eq!(attempts[1].attempt, b.attempt.attempt);
}
