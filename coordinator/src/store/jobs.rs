//! Jobs and attempts: submission, listing and every state transition (one transaction each).

use sqlx::{AnyConnection, Row};

use kiln_proto::JobSpec;
use kiln_proto::protocol::{
    AttemptInfo, AttemptOutcome, AttemptRank, AttemptRef, ForkOrigin, ImportRun, JobId, JobInfo,
    JobPage, JobPatch, JobState,
};
use kiln_proto::spec::DeviceRequest;

use super::{
    Backend, Sql, Store, StoreError, StoreResult, attempt_from_row, from_u64, now_ms, parse_state,
    to_u32, to_u64,
};

const JOB_COLUMNS: &str = "id, name, spec_json, state, priority, \"group\", created_ms, started_ms, \
     finished_ms, attempts, max_attempts, worker_id, step, total_steps, error, notes, tags, revision, dataset_name, \
     paused, lr_changes, forked_from_job, forked_from_step";

/// `GET /api/jobs` filters, already checked.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub state: Option<JobState>,
    pub group: Option<String>,
    /// Substring of the job name.
    pub name: Option<String>,
    /// A tag the job has.
    pub tag: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// A queued job as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    pub id: JobId,
    pub device: DeviceRequest,
    /// Workers an attempt may start with (`distributed.min_workers ..= workers`).
    pub min_workers: u32,
    pub max_workers: u32,
    /// Milliseconds in the queue after which free workers are held for it.
    pub gang_wait_ms: u64,
    pub created_ms: i64,
    /// Paused, or with learning rates set live (see `plan::Want::needs_control`).
    pub needs_control: bool,
}

/// One rank of an attempt the database believes is running (an attempt of N workers is N
/// rows).
#[derive(Debug, Clone)]
pub struct RunningAttempt {
    pub attempt: AttemptRef,
    pub rank: u32,
    pub worker_id: String,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Assignment {
    pub attempt: AttemptRef,
    pub spec: JobSpec,
    /// Newest checkpoint artifact of the job, if any.
    pub resume: Option<String>,
    pub job: JobInfo,
}

/// What `cancel` did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled(JobInfo),
    /// The job is running: its worker must be told; the job ends when the worker reports.
    Requested {
        job: JobInfo,
        attempt: AttemptRef,
        worker_id: String,
    },
}

fn job_from_row(row: &sqlx::any::AnyRow) -> StoreResult<JobInfo> {
    let id: i64 = row.try_get("id")?;
    let spec_json: &str = row.try_get("spec_json")?;
    let spec: JobSpec = serde_json::from_str(spec_json)
        .map_err(|e| StoreError::Corrupt(format!("spec of job {id}: {e}")))?;
    Ok(JobInfo {
        id,
        name: row.try_get("name")?,
        state: parse_state(row.try_get::<&str, _>("state")?)?,
        priority: row.try_get("priority")?,
        group: row.try_get("group")?,
        created_ms: row.try_get("created_ms")?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        attempts: to_u32(row.try_get("attempts")?, "jobs.attempts")?,
        max_attempts: to_u32(row.try_get("max_attempts")?, "jobs.max_attempts")?,
        worker_id: row.try_get("worker_id")?,
        step: to_u64(row.try_get("step")?, "jobs.step")?,
        total_steps: to_u64(row.try_get("total_steps")?, "jobs.total_steps")?,
        error: row.try_get("error")?,
        spec,
        notes: row.try_get("notes")?,
        tags: serde_json::from_str(row.try_get("tags")?)
            .map_err(|e| StoreError::Corrupt(format!("tags of job {id}: {e}")))?,
        revision: to_u64(row.try_get("revision")?, "jobs.revision")?,
        dataset_name: row.try_get("dataset_name")?,
        paused: row.try_get::<i64, _>("paused")? != 0,
        lr_changes: serde_json::from_str(row.try_get("lr_changes")?)
            .map_err(|e| StoreError::Corrupt(format!("lr_changes of job {id}: {e}")))?,
        forked_from: match (
            row.try_get::<Option<i64>, _>("forked_from_job")?,
            row.try_get::<Option<i64>, _>("forked_from_step")?,
        ) {
            (Some(job_id), Some(step)) => Some(ForkOrigin {
                job_id,
                step: to_u64(step, "jobs.forked_from_step")?,
            }),
            _ => None,
        },
    })
}

/// `jobs.tags`: a JSON array of strings.
fn tags_json(tags: &[String]) -> StoreResult<String> {
    serde_json::to_string(tags)
        .map_err(|e| StoreError::Corrupt(format!("cannot serialize the tags: {e}")))
}

pub(super) async fn load_job(conn: &mut AnyConnection, id: JobId) -> StoreResult<JobInfo> {
    let row = sqlx::query(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("job {id} does not exist")))?;
    job_from_row(&row)
}

/// The job row plus the flag that is not part of [`JobInfo`].
async fn load_job_for_update(conn: &mut AnyConnection, id: JobId) -> StoreResult<(JobInfo, bool)> {
    let job = load_job(conn, id).await?;
    let cancel: i64 = sqlx::query_scalar("SELECT cancel_requested FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((job, cancel != 0))
}

/// Insert a queued job (the spec already validated, `tags` normalized), its stored dataset
/// pinned to its digest in the caller's transaction, so a job never refers to data that is
/// gone. Returns its id.
pub(super) async fn insert_queued(
    conn: &mut AnyConnection,
    spec: &JobSpec,
    group: Option<&str>,
    tags: &[String],
) -> StoreResult<JobId> {
    let tags_json = tags_json(tags)?;
    let mut spec = spec.clone();
    let pinned = super::datasets::pin(&mut *conn, &mut spec).await?;
    let (digest, dataset_name) = match pinned {
        Some((digest, name)) => (Some(digest.hex().to_string()), name),
        None => (None, None),
    };
    let spec_json = serde_json::to_string(&spec)
        .map_err(|e| StoreError::Corrupt(format!("cannot serialize the spec: {e}")))?;
    Ok(sqlx::query_scalar(
        "INSERT INTO jobs (name, spec_json, state, priority, device, \"group\", created_ms, \
         max_attempts, tags, dataset_digest, dataset_name) \
         VALUES ($1, $2, 'queued', $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&spec.name)
    .bind(spec_json)
    .bind(spec.priority)
    .bind(spec.device.as_str())
    .bind(group)
    .bind(now_ms())
    .bind(i64::from(spec.max_attempts))
    .bind(tags_json)
    .bind(digest)
    .bind(dataset_name)
    .fetch_one(&mut *conn)
    .await?)
}

impl Store {
    /// A new queued job; the spec is already validated, `tags` already normalized
    /// (`JobPatch::normalized`). A stored dataset (`kiln:NAME`, `kiln:sha256:…`) is pinned to
    /// its digest in the same transaction that a delete of the dataset takes, so a job never
    /// refers to data that is gone.
    pub async fn insert_job(
        &self,
        spec: &JobSpec,
        group: Option<&str>,
        tags: &[String],
    ) -> StoreResult<JobInfo> {
        let mut tx = self.write().await?;
        let id = insert_queued(&mut tx, spec, group, tags).await?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// A run trained outside the coordinator (already checked by the route), in one
    /// transaction: the job (its dataset pinned as by [`Store::insert_job`]) in `run.state`,
    /// its attempt 1 on `run.trained_on` with `run.metrics`, and the artifact rows of `files`
    /// (name, size). `place(job_id)` moves those files into place before the commit; if it
    /// fails, nothing is stored.
    pub async fn import_job(
        &self,
        run: &ImportRun,
        tags: &[String],
        files: &[(String, u64)],
        place: impl FnOnce(JobId) -> Result<(), String>,
    ) -> StoreResult<JobInfo> {
        let mut tx = self.write().await?;
        let id = insert_queued(&mut tx, &run.spec, None, tags).await?;
        // Attempt 1 is the run as it trained; a job continued on a worker stays queued, and
        // its attempt 2 resumes from the newest checkpoint (as after any attempt).
        let attempt_state = match run.state {
            JobState::Queued => JobState::Cancelled,
            other => other,
        };
        let finished = run.state.is_terminal().then_some(run.finished_ms);
        sqlx::query(
            "UPDATE jobs SET state = $1, attempts = 1, worker_id = $2, started_ms = $3, \
             finished_ms = $4, step = $5, total_steps = $6 WHERE id = $7",
        )
        .bind(run.state.as_str())
        .bind((run.state != JobState::Queued).then_some(run.trained_on.as_str()))
        .bind(run.started_ms)
        .bind(finished)
        .bind(from_u64(run.step))
        .bind(from_u64(run.total_steps))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempts (job_id, attempt, worker_id, state, started_ms, finished_ms) \
             VALUES ($1, 1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(&run.trained_on)
        .bind(attempt_state.as_str())
        .bind(run.started_ms)
        .bind(run.finished_ms)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO attempt_ranks (job_id, attempt, rank, worker_id) VALUES ($1, 1, 0, $2)",
        )
        .bind(id)
        .bind(&run.trained_on)
        .execute(&mut *tx)
        .await?;
        let attempt = AttemptRef {
            job_id: id,
            attempt: 1,
        };
        super::series::insert_metric_rows(&mut tx, attempt, &run.metrics).await?;
        let now = now_ms();
        for (name, size) in files {
            sqlx::query(
                "INSERT INTO artifacts (job_id, name, size, created_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(id)
            .bind(name)
            .bind(from_u64(*size))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        place(id).map_err(StoreError::Files)?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    pub async fn job(&self, id: JobId) -> StoreResult<JobInfo> {
        let mut conn = self.pool.acquire().await?;
        load_job(&mut conn, id).await
    }

    /// Newest first.
    pub async fn jobs(&self, filter: &JobFilter) -> StoreResult<JobPage> {
        fn push_where(q: &mut Sql, filter: &JobFilter, backend: Backend) {
            q.push(" WHERE 1 = 1");
            if let Some(state) = filter.state {
                q.push(" AND state = ").bind(state.as_str().to_string());
            }
            if let Some(group) = &filter.group {
                q.push(" AND \"group\" = ").bind(group.clone());
            }
            if let Some(name) = &filter.name {
                let needle = q.next_placeholder();
                q.push(" AND ")
                    .push(&backend.contains("name", &needle))
                    .bind_only(name.clone());
            }
            if let Some(tag) = &filter.tag {
                let value = q.next_placeholder();
                q.push(" AND ")
                    .push(&backend.json_array_has("jobs.tags", &value))
                    .bind_only(tag.clone());
            }
        }
        // One read transaction: the count, the rows and the revision are one snapshot.
        let mut tx = self.snapshot().await?;
        let revision: i64 = sqlx::query_scalar("SELECT value FROM revision_counter WHERE id = 1")
            .fetch_one(&mut *tx)
            .await?;
        let mut count = Sql::new("SELECT COUNT(*) FROM jobs");
        push_where(&mut count, filter, self.backend);
        let (text, args) = count.parts()?;
        let total: i64 = sqlx::query_scalar_with(&text, args)
            .fetch_one(&mut *tx)
            .await?;

        let mut list = Sql::new(format!("SELECT {JOB_COLUMNS} FROM jobs"));
        push_where(&mut list, filter, self.backend);
        list.push(" ORDER BY id DESC LIMIT ")
            .bind(i64::from(filter.limit))
            .push(" OFFSET ")
            .bind(from_u64(filter.offset));
        let (text, args) = list.parts()?;
        let rows = sqlx::query_with(&text, args).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let jobs = rows
            .iter()
            .map(job_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(JobPage {
            jobs,
            total: to_u64(total, "count")?,
            revision: to_u64(revision, "revision_counter.value")?,
        })
    }

    /// Set a job's notes and/or tags (a patch already normalized); the job as it is now.
    pub async fn annotate_job(&self, id: JobId, patch: &JobPatch) -> StoreResult<JobInfo> {
        let mut tx = self.write().await?;
        load_job(&mut tx, id).await?;
        let tags = patch.tags.as_deref().map(tags_json).transpose()?;
        // NULL keeps the column as it is.
        sqlx::query(
            "UPDATE jobs SET notes = COALESCE($1, notes), tags = COALESCE($2, tags) WHERE id = $3",
        )
        .bind(patch.notes.as_deref())
        .bind(tags)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }

    /// How many jobs are in each state (every state listed, zeros included).
    pub async fn count_jobs_by_state(&self) -> StoreResult<Vec<(JobState, u64)>> {
        let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        let mut counts: Vec<(JobState, u64)> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        for row in rows {
            let state = parse_state(row.try_get::<&str, _>("state")?)?;
            let n = to_u64(row.try_get("n")?, "count")?;
            if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
                slot.1 = n;
            }
        }
        Ok(counts)
    }

    pub async fn attempts(&self, job_id: JobId) -> StoreResult<Vec<AttemptInfo>> {
        self.job(job_id).await?;
        let rows = sqlx::query(
            "SELECT job_id, attempt, worker_id, state, started_ms, finished_ms, \
             resumed_from_step, error FROM attempts WHERE job_id = $1 ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        let mut attempts = rows
            .iter()
            .map(attempt_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let ranks = sqlx::query(
            "SELECT attempt, rank, worker_id FROM attempt_ranks WHERE job_id = $1 \
             ORDER BY attempt, rank",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        for row in &ranks {
            let attempt = to_u32(row.try_get("attempt")?, "attempt_ranks.attempt")?;
            let rank = AttemptRank {
                rank: to_u32(row.try_get("rank")?, "attempt_ranks.rank")?,
                worker_id: row.try_get("worker_id")?,
            };
            if let Some(a) = attempts.iter_mut().find(|a| a.attempt == attempt) {
                a.ranks.push(rank);
            }
        }
        Ok(attempts)
    }

    /// Record `worker_id` as replica `rank` of a running attempt (rank 0 is the worker that
    /// `assign` gave the attempt to). `None` if the attempt is not current.
    pub async fn add_rank(
        &self,
        attempt: AttemptRef,
        rank: u32,
        worker_id: &str,
    ) -> StoreResult<Option<()>> {
        let done = sqlx::query(
            "INSERT INTO attempt_ranks (job_id, attempt, rank, worker_id) \
             SELECT id, attempts, $1, $2 FROM jobs \
             WHERE id = $3 AND state = 'running' AND attempts = $4",
        )
        .bind(i64::from(rank))
        .bind(worker_id)
        .bind(attempt.job_id)
        .bind(i64::from(attempt.attempt))
        .execute(&self.pool)
        .await?;
        Ok((done.rows_affected() > 0).then_some(()))
    }

    /// Queued jobs in scheduling order: priority (higher first), then FIFO.
    pub async fn queued_jobs(&self) -> StoreResult<Vec<QueuedJob>> {
        let rows = sqlx::query(
            "SELECT id, device, spec_json, created_ms, paused, lr_changes FROM jobs \
             WHERE state = 'queued' \
             ORDER BY priority DESC, id ASC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let device: &str = row.try_get("device")?;
                let spec: &str = row.try_get("spec_json")?;
                let spec: JobSpec = serde_json::from_str(spec)
                    .map_err(|e| StoreError::Corrupt(format!("jobs.spec_json: {e}")))?;
                let d = &spec.distributed;
                Ok(QueuedJob {
                    id: row.try_get("id")?,
                    device: device.parse().map_err(StoreError::Corrupt)?,
                    min_workers: d.min().clamp(1, d.workers.max(1)),
                    max_workers: d.workers.max(1),
                    gang_wait_ms: d.gang_wait_s.saturating_mul(1000),
                    created_ms: row.try_get("created_ms")?,
                    needs_control: row.try_get::<i64, _>("paused")? != 0
                        || row.try_get::<&str, _>("lr_changes")? != "[]",
                })
            })
            .collect()
    }

    /// Every rank of every running attempt, in job then rank order.
    pub async fn running_attempts(&self) -> StoreResult<Vec<RunningAttempt>> {
        let rows = sqlx::query(
            "SELECT j.id, j.attempts, r.rank, r.worker_id FROM jobs j \
             JOIN attempt_ranks r ON r.job_id = j.id AND r.attempt = j.attempts \
             WHERE j.state = 'running' ORDER BY j.id, r.rank",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(RunningAttempt {
                    attempt: AttemptRef {
                        job_id: row.try_get("id")?,
                        attempt: to_u32(row.try_get("attempts")?, "jobs.attempts")?,
                    },
                    rank: to_u32(row.try_get("rank")?, "attempt_ranks.rank")?,
                    worker_id: row.try_get("worker_id")?,
                })
            })
            .collect()
    }

    /// The workers of an attempt, in rank order (one for a one-worker attempt).
    pub async fn attempt_workers(&self, attempt: AttemptRef) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT worker_id FROM attempt_ranks WHERE job_id = $1 AND attempt = $2 ORDER BY rank",
        )
        .bind(attempt.job_id)
        .bind(i64::from(attempt.attempt))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok(row.try_get("worker_id")?))
            .collect()
    }

    /// Start the next attempt of a queued job on one worker. `None` if the job is no longer
    /// queued (cancelled in between).
    pub async fn assign(&self, job_id: JobId, worker_id: &str) -> StoreResult<Option<Assignment>> {
        self.assign_ranks(job_id, &[worker_id.to_string()]).await
    }

    /// Start the next attempt of a queued job on `workers` (rank order; rank 0 first), all in
    /// one transaction. `None` if the job is no longer queued (cancelled in between).
    pub async fn assign_ranks(
        &self,
        job_id: JobId,
        workers: &[String],
    ) -> StoreResult<Option<Assignment>> {
        let Some(worker_id) = workers.first() else {
            return Err(StoreError::Conflict(format!(
                "job {job_id} cannot start on no worker"
            )));
        };
        let worker_id = worker_id.as_str();
        let mut tx = self.write().await?;
        let job = load_job(&mut tx, job_id).await?;
        if job.state != JobState::Queued {
            return Ok(None);
        }
        let resume = super::artifacts::newest_checkpoint(&mut tx, job_id).await?;
        let attempt = job.attempts + 1;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO attempts (job_id, attempt, worker_id, state, started_ms, \
             resumed_from_step, resume_artifact) VALUES ($1, $2, $3, 'running', $4, $5, $6)",
        )
        .bind(job_id)
        .bind(i64::from(attempt))
        .bind(worker_id)
        .bind(now)
        .bind(resume.as_ref().map(|(_, step)| from_u64(*step)))
        .bind(resume.as_ref().map(|(name, _)| name.clone()))
        .execute(&mut *tx)
        .await?;
        for (rank, worker) in workers.iter().enumerate() {
            sqlx::query(
                "INSERT INTO attempt_ranks (job_id, attempt, rank, worker_id) \
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(job_id)
            .bind(i64::from(attempt))
            .bind(rank as i64)
            .bind(worker)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "UPDATE jobs SET state = 'running', attempts = $1, worker_id = $2, \
             started_ms = COALESCE(started_ms, $3), step = $4 WHERE id = $5",
        )
        .bind(i64::from(attempt))
        .bind(worker_id)
        .bind(now)
        .bind(
            resume
                .as_ref()
                .map_or(from_u64(job.step), |(_, s)| from_u64(*s)),
        )
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
        let job = load_job(&mut tx, job_id).await?;
        tx.commit().await?;
        Ok(Some(Assignment {
            attempt: AttemptRef { job_id, attempt },
            spec: job.spec.clone(),
            resume: resume.map(|(name, _)| name),
            job,
        }))
    }

    /// Whether `attempt` is the job's current, running attempt.
    pub async fn is_current(&self, attempt: AttemptRef) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE id = $1 AND state = 'running' AND attempts = $2",
        )
        .bind(attempt.job_id)
        .bind(i64::from(attempt.attempt))
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// The worker's loop started. `None` if the attempt is not current.
    pub async fn start_attempt(
        &self,
        attempt: AttemptRef,
        total_steps: u64,
        start_step: u64,
    ) -> StoreResult<Option<JobInfo>> {
        let mut tx = self.write().await?;
        let done = sqlx::query(
            "UPDATE jobs SET total_steps = $1, step = $2 \
             WHERE id = $3 AND state = 'running' AND attempts = $4",
        )
        .bind(from_u64(total_steps))
        .bind(from_u64(start_step))
        .bind(attempt.job_id)
        .bind(i64::from(attempt.attempt))
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(None);
        }
        let job = load_job(&mut tx, attempt.job_id).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// The attempt ended on its worker. `None` if the attempt is not current (a late message
    /// from an attempt already declared lost).
    ///
    /// A failure is retried while attempts are left, unless it is not `retryable` (invalid
    /// data or spec, a diverging loss, out of memory: the same every time): then the job fails
    /// at once and its error starts with "not retried: ".
    pub async fn finish_attempt(
        &self,
        attempt: AttemptRef,
        outcome: AttemptOutcome,
        error: Option<&str>,
        steps: Option<u64>,
        retryable: bool,
    ) -> StoreResult<Option<JobInfo>> {
        let mut tx = self.write().await?;
        let (job, cancel_requested) = load_job_for_update(&mut tx, attempt.job_id).await?;
        if job.state != JobState::Running || job.attempts != attempt.attempt {
            return Ok(None);
        }
        let now = now_ms();
        let attempt_state = match outcome {
            AttemptOutcome::Succeeded => JobState::Succeeded,
            AttemptOutcome::Failed => JobState::Failed,
            AttemptOutcome::Cancelled => JobState::Cancelled,
        };
        sqlx::query(
            "UPDATE attempts SET state = $1, finished_ms = $2, error = $3 \
             WHERE job_id = $4 AND attempt = $5",
        )
        .bind(attempt_state.as_str())
        .bind(now)
        .bind(error)
        .bind(attempt.job_id)
        .bind(i64::from(attempt.attempt))
        .execute(&mut *tx)
        .await?;
        let next = match outcome {
            AttemptOutcome::Succeeded => JobState::Succeeded,
            AttemptOutcome::Cancelled => JobState::Cancelled,
            AttemptOutcome::Failed if cancel_requested => JobState::Cancelled,
            AttemptOutcome::Failed if retryable && job.attempts < job.max_attempts => {
                JobState::Queued
            }
            AttemptOutcome::Failed => JobState::Failed,
        };
        let job_error = match (next, retryable) {
            (JobState::Failed, false) => Some(format!(
                "not retried: {}",
                error.unwrap_or("the worker gave no reason")
            )),
            _ => error.map(str::to_string),
        };
        let finished = next.is_terminal().then_some(now);
        let step = steps.map_or(from_u64(job.step), from_u64);
        sqlx::query(
            "UPDATE jobs SET state = $1, finished_ms = $2, \
             step = CASE WHEN step > $3 THEN step ELSE $3 END, error = $4, \
             worker_id = CASE WHEN $5 = 'queued' THEN NULL ELSE worker_id END, \
             paused = CASE WHEN $6 = 'queued' THEN paused ELSE 0 END WHERE id = $7",
        )
        .bind(next.as_str())
        .bind(finished)
        .bind(step)
        .bind(job_error)
        .bind(next.as_str())
        .bind(next.as_str())
        .bind(attempt.job_id)
        .execute(&mut *tx)
        .await?;
        let job = load_job(&mut tx, attempt.job_id).await?;
        tx.commit().await?;
        Ok(Some(job))
    }

    /// Cancel a queued job at once, or mark a running one for cancellation.
    pub async fn cancel_job(&self, id: JobId) -> StoreResult<CancelOutcome> {
        let mut tx = self.write().await?;
        let job = load_job(&mut tx, id).await?;
        let outcome = match job.state {
            JobState::Queued => {
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', finished_ms = $1, paused = 0 \
                     WHERE id = $2",
                )
                .bind(now_ms())
                .bind(id)
                .execute(&mut *tx)
                .await?;
                CancelOutcome::Cancelled(load_job(&mut tx, id).await?)
            }
            JobState::Running => {
                sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                CancelOutcome::Requested {
                    attempt: AttemptRef {
                        job_id: id,
                        attempt: job.attempts,
                    },
                    worker_id: job.worker_id.clone().unwrap_or_default(),
                    job,
                }
            }
            state => {
                return Err(StoreError::Conflict(format!(
                    "job {id} is already {}; only queued or running jobs can be cancelled",
                    state.as_str()
                )));
            }
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// Re-queue a failed or cancelled job with `spec.max_attempts` more attempts.
    pub async fn retry_job(&self, id: JobId) -> StoreResult<JobInfo> {
        let mut tx = self.write().await?;
        let job = load_job(&mut tx, id).await?;
        if !matches!(job.state, JobState::Failed | JobState::Cancelled) {
            return Err(StoreError::Conflict(format!(
                "job {id} is {}; only failed or cancelled jobs can be retried",
                job.state.as_str()
            )));
        }
        super::datasets::check_still_stored(&mut tx, id).await?;
        let max_attempts = job.attempts.saturating_add(job.spec.max_attempts);
        sqlx::query(
            "UPDATE jobs SET state = 'queued', max_attempts = $1, error = NULL, finished_ms = NULL, \
             worker_id = NULL, cancel_requested = 0 WHERE id = $2",
        )
        .bind(i64::from(max_attempts))
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let job = load_job(&mut tx, id).await?;
        tx.commit().await?;
        Ok(job)
    }
}
