//! Metrics and logs: append-only series of a job.

use futures_util::TryStreamExt;
use sqlx::{QueryBuilder, Row, Sqlite};

use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{AttemptRef, JobId, LogEntry, LogLine, MetricPoint};

use super::{Store, StoreError, StoreResult, from_u64, parse_split, split_str, to_u32, to_u64};

/// Rows per multi-row INSERT: 9 binds each, well under SQLite's 32766 bind limit.
const METRIC_ROWS_PER_INSERT: usize = 500;
const LOG_ROWS_PER_INSERT: usize = 1000;

/// `GET /api/jobs/{id}/metrics` filters, already checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricRange {
    pub split: Option<Split>,
    pub from_step: Option<u64>,
    pub to_step: Option<u64>,
}

async fn current_in_tx(
    conn: &mut sqlx::SqliteConnection,
    attempt: AttemptRef,
) -> StoreResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE id = ? AND state = 'running' AND attempts = ?",
    )
    .bind(attempt.job_id)
    .bind(i64::from(attempt.attempt))
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Append `points` as `attempt`'s, in multi-row INSERTs, inside the caller's transaction.
pub(super) async fn insert_metric_rows(
    conn: &mut sqlx::SqliteConnection,
    attempt: AttemptRef,
    points: &[Metric],
) -> StoreResult<()> {
    for chunk in points.chunks(METRIC_ROWS_PER_INSERT) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO metrics (job_id, attempt, step, split, loss, accuracy, lr, \
                 samples_per_sec, epoch) ",
        );
        q.push_values(chunk, |mut row, m| {
            row.push_bind(attempt.job_id)
                .push_bind(i64::from(attempt.attempt))
                .push_bind(from_u64(m.step))
                .push_bind(split_str(m.split))
                .push_bind(m.loss)
                .push_bind(m.accuracy)
                .push_bind(m.lr)
                .push_bind(m.samples_per_sec)
                .push_bind(m.epoch);
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

impl Store {
    /// Append a batch of metrics in one transaction and advance the job's step. Returns
    /// `false` (and stores nothing) if the attempt is not the job's current running one.
    pub async fn insert_metrics(
        &self,
        attempt: AttemptRef,
        points: &[Metric],
    ) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if !current_in_tx(&mut tx, attempt).await? {
            return Ok(false);
        }
        insert_metric_rows(&mut tx, attempt, points).await?;
        if let Some(max_step) = points.iter().map(|m| m.step).max() {
            sqlx::query("UPDATE jobs SET step = MAX(step, ?) WHERE id = ?")
                .bind(from_u64(max_step))
                .bind(attempt.job_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Metrics of a job ordered by step (then arrival), every attempt included.
    pub async fn metrics(
        &self,
        job_id: JobId,
        range: MetricRange,
    ) -> StoreResult<Vec<MetricPoint>> {
        self.job(job_id).await?;
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT attempt, step, split, loss, accuracy, lr, samples_per_sec, epoch \
             FROM metrics WHERE job_id = ",
        );
        q.push_bind(job_id);
        if let Some(split) = range.split {
            q.push(" AND split = ").push_bind(split_str(split));
        }
        if let Some(from) = range.from_step {
            q.push(" AND step >= ").push_bind(from_u64(from));
        }
        if let Some(to) = range.to_step {
            q.push(" AND step <= ").push_bind(from_u64(to));
        }
        q.push(" ORDER BY step, rowid");
        // Positional tuples, streamed: a chart overview of a 10⁵-point run reads every row, and
        // per-row column lookups by name plus a buffered `Vec<SqliteRow>` cost ≈ 20 % more.
        type Row = (
            i64,
            i64,
            String,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            Option<f64>,
            f64,
        );
        let mut rows = q.build_query_as::<Row>().fetch(&self.pool);
        let mut out = Vec::new();
        while let Some((attempt, step, split, loss, accuracy, lr, samples_per_sec, epoch)) =
            rows.try_next().await?
        {
            out.push(MetricPoint {
                attempt: to_u32(attempt, "metrics.attempt")?,
                metric: Metric {
                    step: to_u64(step, "metrics.step")?,
                    epoch,
                    split: parse_split(&split).map_err(StoreError::Corrupt)?,
                    loss: loss.unwrap_or(f64::NAN),
                    accuracy,
                    lr,
                    samples_per_sec,
                },
            });
        }
        Ok(out)
    }

    /// Append log lines in one transaction. Returns `false` (and stores nothing) if the
    /// attempt is not current.
    pub async fn insert_logs(&self, attempt: AttemptRef, lines: &[LogLine]) -> StoreResult<bool> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        if !current_in_tx(&mut tx, attempt).await? {
            return Ok(false);
        }
        for chunk in lines.chunks(LOG_ROWS_PER_INSERT) {
            let mut q =
                QueryBuilder::<Sqlite>::new("INSERT INTO logs (job_id, attempt, ts_ms, text) ");
            q.push_values(chunk, |mut row, line| {
                row.push_bind(attempt.job_id)
                    .push_bind(i64::from(attempt.attempt))
                    .push_bind(line.ts_ms)
                    .push_bind(line.text.clone());
            });
            q.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Log lines of a job with `seq > after`, oldest first.
    pub async fn logs(&self, job_id: JobId, after: i64, limit: u32) -> StoreResult<Vec<LogEntry>> {
        self.job(job_id).await?;
        let rows = sqlx::query(
            "SELECT seq, ts_ms, text FROM logs WHERE job_id = ? AND seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(job_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(LogEntry {
                    seq: row.try_get("seq")?,
                    line: LogLine {
                        ts_ms: row.try_get("ts_ms")?,
                        text: row.try_get("text")?,
                    },
                })
            })
            .collect()
    }
}
