//! Read-only share links of a job. Only the SHA-256 of a token is stored.

use sqlx::Row;

use kiln_proto::protocol::{JobId, ShareInfo};

use super::{Store, StoreError, StoreResult, now_ms};

const SHARE_COLUMNS: &str = "id, job_id, hint, created_ms, revoked_ms, with_data";

fn share_from_row(row: &sqlx::any::AnyRow) -> StoreResult<ShareInfo> {
    Ok(ShareInfo {
        id: row.try_get("id")?,
        job_id: row.try_get("job_id")?,
        hint: row.try_get("hint")?,
        created_ms: row.try_get("created_ms")?,
        revoked_ms: row.try_get("revoked_ms")?,
        with_data: row.try_get::<i64, _>("with_data")? != 0,
    })
}

impl Store {
    /// A new, active link to the job (`NotFound` if the job does not exist); `with_data`: it
    /// opens the run's stored dataset too.
    pub async fn create_share(
        &self,
        job_id: JobId,
        token_hash: &str,
        hint: &str,
        with_data: bool,
    ) -> StoreResult<ShareInfo> {
        let mut tx = self.write().await?;
        super::jobs::load_job(&mut tx, job_id).await?;
        let row = sqlx::query(&format!(
            "INSERT INTO shares (job_id, token_hash, hint, created_ms, with_data) \
             VALUES ($1, $2, $3, $4, $5) RETURNING {SHARE_COLUMNS}"
        ))
        .bind(job_id)
        .bind(token_hash)
        .bind(hint)
        .bind(now_ms())
        .bind(i64::from(with_data))
        .fetch_one(&mut *tx)
        .await?;
        let share = share_from_row(&row)?;
        tx.commit().await?;
        Ok(share)
    }

    /// Every link of the job, revoked ones included, newest first.
    pub async fn shares(&self, job_id: JobId) -> StoreResult<Vec<ShareInfo>> {
        self.job(job_id).await?;
        let rows = sqlx::query(&format!(
            "SELECT {SHARE_COLUMNS} FROM shares WHERE job_id = $1 ORDER BY id DESC"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(share_from_row).collect()
    }

    /// Revoke a link; revoking again keeps the first `revoked_ms`.
    pub async fn revoke_share(&self, id: i64) -> StoreResult<ShareInfo> {
        let row = sqlx::query(&format!(
            "UPDATE shares SET revoked_ms = COALESCE(revoked_ms, $1) WHERE id = $2 \
             RETURNING {SHARE_COLUMNS}"
        ))
        .bind(now_ms())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("share link {id} does not exist")))?;
        share_from_row(&row)
    }

    /// The job an active (not revoked) link with this token hash shows, and whether it
    /// shares the job's data; `None` for no such link.
    pub async fn shared_job(&self, token_hash: &str) -> StoreResult<Option<(JobId, bool)>> {
        let row = sqlx::query(
            "SELECT job_id, with_data FROM shares WHERE token_hash = $1 AND revoked_ms IS NULL",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("job_id")?, r.try_get::<i64, _>("with_data")? != 0)))
            .transpose()
    }
}
