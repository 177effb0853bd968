//! Live control of jobs (pause, resume, learning rates set live) and forks.

use sqlx::AnyConnection;

use kiln_proto::JobSpec;
use kiln_proto::protocol::{
    AttemptRef, ControlAction, JobId, JobInfo, JobState, LogLine, LrChange,
};

use super::jobs::{insert_queued, load_job};
use super::{Store, StoreError, StoreResult, from_u64, now_ms};

/// A job that may be controlled, and who runs it.
#[derive(Debug, Clone)]
pub struct ControlTarget {
    pub job: JobInfo,
    /// The running attempt; `None` for a queued job.
    pub attempt: Option<AttemptRef>,
    /// The running attempt's workers by rank (empty for a queued job).
    pub ranks: Vec<String>,
}

async fn target(conn: &mut AnyConnection, id: JobId) -> StoreResult<ControlTarget> {
    let job = load_job(conn, id).await?;
    match job.state {
        JobState::Queued => Ok(ControlTarget {
            job,
            attempt: None,
            ranks: Vec::new(),
        }),
        JobState::Running => {
            let attempt = AttemptRef {
                job_id: id,
                attempt: job.attempts,
            };
            let ranks: Vec<String> = sqlx::query_scalar(
                "SELECT worker_id FROM attempt_ranks WHERE job_id = $1 AND attempt = $2 \
                 ORDER BY rank",
            )
            .bind(id)
            .bind(i64::from(attempt.attempt))
            .fetch_all(&mut *conn)
            .await?;
            Ok(ControlTarget {
                job,
                attempt: Some(attempt),
                ranks,
            })
        }
        other => Err(StoreError::Conflict(format!(
            "job {id} is {}: only a queued or running job can be controlled",
            other.as_str()
        ))),
    }
}

fn lr_changes_json(changes: &[LrChange]) -> StoreResult<String> {
    serde_json::to_string(changes)
        .map_err(|e| StoreError::Corrupt(format!("cannot serialize lr_changes: {e}")))
}

impl Store {
    /// The job as a control finds it: queued or running (anything else is a conflict).
    pub async fn control_target(&self, id: JobId) -> StoreResult<ControlTarget> {
        let mut conn = self.pool.acquire().await?;
        target(&mut conn, id).await
    }

    /// Pause or resume a queued or running job: what an attempt assigned later starts with.
    pub async fn set_paused(&self, id: JobId, paused: bool) -> StoreResult<ControlTarget> {
        let mut tx = self.write().await?;
        target(&mut tx, id).await?;
        sqlx::query("UPDATE jobs SET paused = $1 WHERE id = $2")
            .bind(i64::from(paused))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let t = target(&mut tx, id).await?;
        tx.commit().await?;
        Ok(t)
    }

    /// The worker of the current `attempt` says `control` took effect after `step` steps:
    /// the job's step, a line in the job's log, and a learning rate is kept to replay on a later attempt
    /// (replacing changes after `step`, which belonged to the timeline it replaces). `None`
    /// when the attempt is no longer current.
    pub async fn controlled(
        &self,
        attempt: AttemptRef,
        step: u64,
        control: ControlAction,
    ) -> StoreResult<Option<(JobInfo, LogLine)>> {
        let mut tx = self.write().await?;
        let job = load_job(&mut tx, attempt.job_id).await?;
        if job.state != JobState::Running || job.attempts != attempt.attempt {
            return Ok(None);
        }
        // The worker's step is exact: metrics come only every `log_every` steps.
        sqlx::query(
            "UPDATE jobs SET step = CASE WHEN step > $1 THEN step ELSE $1 END WHERE id = $2",
        )
        .bind(from_u64(step))
        .bind(attempt.job_id)
        .execute(&mut *tx)
        .await?;
        if let ControlAction::SetLr { lr } = control {
            let mut changes = job.lr_changes.clone();
            changes.retain(|c| c.step < step);
            changes.push(LrChange { step, lr });
            sqlx::query("UPDATE jobs SET lr_changes = $1 WHERE id = $2")
                .bind(lr_changes_json(&changes)?)
                .bind(attempt.job_id)
                .execute(&mut *tx)
                .await?;
        }
        let text = control.log_line(step);
        let line = LogLine {
            ts_ms: now_ms(),
            text,
        };
        sqlx::query("INSERT INTO logs (job_id, attempt, ts_ms, text) VALUES ($1, $2, $3, $4)")
            .bind(attempt.job_id)
            .bind(i64::from(attempt.attempt))
            .bind(line.ts_ms)
            .bind(line.text.clone())
            .execute(&mut *tx)
            .await?;
        let job = load_job(&mut tx, attempt.job_id).await?;
        tx.commit().await?;
        Ok(Some((job, line)))
    }

    /// The announced checkpoints of a job (the ones an attempt may resume from), by step.
    pub async fn checkpoints(&self, job_id: JobId) -> StoreResult<Vec<(String, u64)>> {
        let mut conn = self.pool.acquire().await?;
        load_job(&mut conn, job_id).await?;
        let mut list = super::artifacts::announced_checkpoints(&mut conn, job_id).await?;
        list.sort_by_key(|(_, step)| *step);
        Ok(list)
    }

    /// A queued job that starts from `from`'s checkpoint `artifact` (after `step` steps) with
    /// `spec` (already checked), its dataset pinned as by [`Store::insert_job`]: the job row,
    /// its origin and live learning rates, and the checkpoint as its own (announced)
    /// artifact, whose file `place(new_id)` puts in place before the commit.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call site: the fork route's checked parts"
    )]
    pub async fn fork_job(
        &self,
        from: JobId,
        step: u64,
        artifact: &str,
        size: u64,
        spec: &JobSpec,
        tags: &[String],
        lr_changes: &[LrChange],
        place: impl FnOnce(JobId) -> Result<(), String>,
    ) -> StoreResult<JobInfo> {
        let mut tx = self.write().await?;
        load_job(&mut tx, from).await?;
        let id = insert_queued(&mut tx, spec, None, tags).await?;
        sqlx::query(
            "UPDATE jobs SET forked_from_job = $1, forked_from_step = $2, step = $3, \
             lr_changes = $4 WHERE id = $5",
        )
        .bind(from)
        .bind(from_u64(step))
        .bind(from_u64(step))
        .bind(lr_changes_json(lr_changes)?)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO artifacts (job_id, name, size, created_ms, announced) \
             VALUES ($1, $2, $3, $4, 1)",
        )
        .bind(id)
        .bind(artifact)
        .bind(from_u64(size))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        place(id).map_err(StoreError::Files)?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }
}
