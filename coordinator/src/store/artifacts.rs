//! Artifact rows (the bytes live in files under `data_dir/artifacts/`, see `crate::artifact`).

use sqlx::{AnyConnection, Row};

use kiln_proto::artifact::checkpoint_step;
use kiln_proto::protocol::{ArtifactInfo, JobId};

use super::{Store, StoreResult, from_u64, now_ms, to_u64};

/// The job's announced checkpoint with the highest step, with that step. A checkpoint whose
/// announcement never came (its worker died between the upload and the notice) is skipped:
/// the metrics before it may be lost with the worker.
pub(super) async fn newest_checkpoint(
    conn: &mut AnyConnection,
    job_id: JobId,
) -> StoreResult<Option<(String, u64)>> {
    Ok(announced_checkpoints(conn, job_id)
        .await?
        .into_iter()
        .max_by_key(|(_, step)| *step))
}

/// The job's announced checkpoints with their steps, in no order.
pub(super) async fn announced_checkpoints(
    conn: &mut AnyConnection,
    job_id: JobId,
) -> StoreResult<Vec<(String, u64)>> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM artifacts WHERE job_id = $1 AND name LIKE 'checkpoint-%.ckpt' \
         AND announced = 1",
    )
    .bind(job_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(names
        .into_iter()
        .filter_map(|name| checkpoint_step(&name).map(|step| (name, step)))
        .collect())
}

fn artifact_from_row(row: &sqlx::any::AnyRow) -> StoreResult<ArtifactInfo> {
    Ok(ArtifactInfo {
        name: row.try_get("name")?,
        size: to_u64(row.try_get("size")?, "artifacts.size")?,
        created_ms: row.try_get("created_ms")?,
    })
}

impl Store {
    /// Record (or replace) an uploaded artifact whose file is already in place. A checkpoint
    /// starts unannounced: it is resumed from once [`Store::announce_checkpoint`] says its
    /// worker's metrics up to it arrived.
    pub async fn upsert_artifact(
        &self,
        job_id: JobId,
        name: &str,
        size: u64,
    ) -> StoreResult<ArtifactInfo> {
        let announced = checkpoint_step(name).is_none();
        let row = sqlx::query(
            "INSERT INTO artifacts (job_id, name, size, created_ms, announced) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (job_id, name) DO UPDATE SET \
             size = excluded.size, created_ms = excluded.created_ms, \
             announced = excluded.announced RETURNING name, size, created_ms",
        )
        .bind(job_id)
        .bind(name)
        .bind(from_u64(size))
        .bind(now_ms())
        .bind(i64::from(announced))
        .fetch_one(&self.pool)
        .await?;
        artifact_from_row(&row)
    }

    /// A worker announced the checkpoint `name` of `job_id` (after the metrics up to its
    /// step, on the same WebSocket): from now on an attempt may resume from it. False when
    /// no such artifact is stored.
    pub async fn announce_checkpoint(&self, job_id: JobId, name: &str) -> StoreResult<bool> {
        let done =
            sqlx::query("UPDATE artifacts SET announced = 1 WHERE job_id = $1 AND name = $2")
                .bind(job_id)
                .bind(name)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn artifacts(&self, job_id: JobId) -> StoreResult<Vec<ArtifactInfo>> {
        self.job(job_id).await?;
        let rows = sqlx::query(
            "SELECT name, size, created_ms FROM artifacts WHERE job_id = $1 ORDER BY name",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(artifact_from_row).collect()
    }

    pub async fn artifact(&self, job_id: JobId, name: &str) -> StoreResult<Option<ArtifactInfo>> {
        let row = sqlx::query(
            "SELECT name, size, created_ms FROM artifacts WHERE job_id = $1 AND name = $2",
        )
        .bind(job_id)
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(artifact_from_row).transpose()
    }

    /// The job's newest checkpoint artifact name, if any.
    pub async fn newest_checkpoint(&self, job_id: JobId) -> StoreResult<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        Ok(newest_checkpoint(&mut conn, job_id)
            .await?
            .map(|(name, _)| name))
    }
}
