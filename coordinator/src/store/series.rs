//! Metrics and logs: append-only series of a job.

use futures_util::TryStreamExt;
use sqlx::Row;

use kiln_proto::metric::{Metric, Split};
use kiln_proto::protocol::{AttemptRef, JobId, LogEntry, LogLine, MetricPoint};

use super::{
    Sql, Store, StoreError, StoreResult, from_u64, parse_split, split_str, to_u32, to_u64,
};

/// Rows per multi-row INSERT: 9 binds each, well under SQLite's 32766 and PostgreSQL's 65535
/// bind limits.
const METRIC_ROWS_PER_INSERT: usize = 500;
const LOG_ROWS_PER_INSERT: usize = 1000;

/// `GET /api/jobs/{id}/metrics` filters, already checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricRange {
    pub split: Option<Split>,
    pub from_step: Option<u64>,
    pub to_step: Option<u64>,
}

async fn current_in_tx(conn: &mut sqlx::AnyConnection, attempt: AttemptRef) -> StoreResult<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM jobs WHERE id = $1 AND state = 'running' AND attempts = $2",
    )
    .bind(attempt.job_id)
    .bind(i64::from(attempt.attempt))
    .fetch_one(&mut *conn)
    .await?;
    Ok(n > 0)
}

/// Append `points` as `attempt`'s, in multi-row INSERTs, inside the caller's transaction.
pub(super) async fn insert_metric_rows(
    conn: &mut sqlx::AnyConnection,
    attempt: AttemptRef,
    points: &[Metric],
) -> StoreResult<()> {
    for chunk in points.chunks(METRIC_ROWS_PER_INSERT) {
        let mut q = Sql::new(
            "INSERT INTO metrics (job_id, attempt, step, split, loss, accuracy, lr, \
                 samples_per_sec, epoch) VALUES ",
        );
        for (i, m) in chunk.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" })
                .bind(attempt.job_id)
                .push(", ")
                .bind(i64::from(attempt.attempt))
                .push(", ")
                .bind(from_u64(m.step))
                .push(", ")
                .bind(split_str(m.split))
                .push(", ")
                // A non-finite loss is stored as NULL (SQLite does so with NaN by itself).
                .bind(m.loss.is_finite().then_some(m.loss))
                .push(", ")
                .bind(m.accuracy)
                .push(", ")
                .bind(m.lr)
                .push(", ")
                .bind(m.samples_per_sec)
                .push(", ")
                .bind(m.epoch)
                .push(")");
        }
        let (text, args) = q.parts()?;
        // Not a prepared statement kept for reuse: sqlx 0.8's `Any` sends a NULL `f64` as a
        // `float4` to PostgreSQL, and a statement prepared with that type then refuses the
        // next batch's `float8` values in the same column.
        sqlx::query_with(&text, args)
            .persistent(false)
            .execute(&mut *conn)
            .await?;
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
        let mut tx = self.write().await?;
        if !current_in_tx(&mut tx, attempt).await? {
            return Ok(false);
        }
        insert_metric_rows(&mut tx, attempt, points).await?;
        if let Some(max_step) = points.iter().map(|m| m.step).max() {
            sqlx::query(
                "UPDATE jobs SET step = CASE WHEN step > $1 THEN step ELSE $1 END WHERE id = $2",
            )
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
        let mut q = Sql::new(
            "SELECT attempt, step, split, loss, accuracy, lr, samples_per_sec, epoch \
             FROM metrics WHERE job_id = ",
        );
        q.bind(job_id);
        if let Some(split) = range.split {
            q.push(" AND split = ").bind(split_str(split));
        }
        if let Some(from) = range.from_step {
            q.push(" AND step >= ").bind(from_u64(from));
        }
        if let Some(to) = range.to_step {
            q.push(" AND step <= ").bind(from_u64(to));
        }
        q.push(" ORDER BY step, ").push(self.backend.arrival());
        // Positional tuples, streamed: a chart overview of a 10⁵-point run reads every row, and
        // per-row column lookups by name plus a buffered `Vec<AnyRow>` cost ≈ 20 % more.
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
        let (text, args) = q.parts()?;
        let mut rows = sqlx::query_as_with::<_, Row, _>(&text, args).fetch(&self.pool);
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
        let mut tx = self.write().await?;
        if !current_in_tx(&mut tx, attempt).await? {
            return Ok(false);
        }
        for chunk in lines.chunks(LOG_ROWS_PER_INSERT) {
            let mut q = Sql::new("INSERT INTO logs (job_id, attempt, ts_ms, text) VALUES ");
            for (i, line) in chunk.iter().enumerate() {
                q.push(if i == 0 { "(" } else { ", (" })
                    .bind(attempt.job_id)
                    .push(", ")
                    .bind(i64::from(attempt.attempt))
                    .push(", ")
                    .bind(line.ts_ms)
                    .push(", ")
                    .bind(line.text.clone())
                    .push(")");
            }
            let (text, args) = q.parts()?;
            sqlx::query_with(&text, args).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Log lines of a job with `seq > after`, oldest first.
    pub async fn logs(&self, job_id: JobId, after: i64, limit: u32) -> StoreResult<Vec<LogEntry>> {
        self.job(job_id).await?;
        let rows = sqlx::query(
            "SELECT seq, ts_ms, text FROM logs WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
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
