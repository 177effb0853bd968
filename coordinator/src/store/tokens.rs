//! API tokens (stored as SHA-256 hashes only) and the audit log of what they changed.

use sqlx::Row;

use kiln_proto::token::{AuditEntry, TokenInfo, TokenScope};

use super::{Store, StoreError, StoreResult, now_ms, to_u64};

/// The name of the admin token `kiln serve` makes or takes at start (`--admin-token`); a new
/// one replaces it, tokens made with `kiln token create` stay.
pub const BOOTSTRAP_ADMIN: &str = "admin";
/// The name of the worker token `kiln serve --worker-token` takes at start.
pub const BOOTSTRAP_WORKERS: &str = "workers (--worker-token)";

/// A stored token as a request's caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub info: TokenInfo,
    /// Past its `expires_ms`.
    pub expired: bool,
}

fn scope_of(kind: &str) -> StoreResult<TokenScope> {
    kind.parse().map_err(StoreError::Corrupt)
}

fn info_from_row(row: &sqlx::any::AnyRow) -> StoreResult<TokenInfo> {
    Ok(TokenInfo {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scope: scope_of(row.try_get::<&str, _>("kind")?)?,
        created_ms: row.try_get("created_ms")?,
        expires_ms: row.try_get("expires_ms")?,
        worker_id: row.try_get("worker_id")?,
    })
}

const ADMIN_COUNT: &str = "SELECT COUNT(*) FROM tokens WHERE kind = 'admin'";

const TOKEN_COLUMNS: &str = "id, name, kind, created_ms, expires_ms, worker_id";

impl Store {
    /// Store a new token's hash; its listing.
    pub async fn create_token(
        &self,
        hash: &str,
        scope: TokenScope,
        name: &str,
        expires_ms: Option<i64>,
        worker_id: Option<&str>,
    ) -> StoreResult<TokenInfo> {
        let row = sqlx::query(&format!(
            "INSERT INTO tokens (hash, kind, name, created_ms, expires_ms, worker_id) \
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING {TOKEN_COLUMNS}"
        ))
        .bind(hash)
        .bind(scope.as_str())
        .bind(name)
        .bind(now_ms())
        .bind(expires_ms)
        .bind(worker_id)
        .fetch_one(&self.pool)
        .await?;
        info_from_row(&row)
    }

    /// Store a token given at start (`kiln serve --admin-token` or the one it generated;
    /// `--worker-token`), replacing the earlier one of that scope given at start.
    pub async fn put_bootstrap(&self, hash: &str, scope: TokenScope) -> StoreResult<()> {
        let name = match scope {
            TokenScope::Worker => BOOTSTRAP_WORKERS,
            _ => BOOTSTRAP_ADMIN,
        };
        let mut tx = self.write().await?;
        sqlx::query("DELETE FROM tokens WHERE kind = $1 AND name = $2 AND hash != $3")
            .bind(scope.as_str())
            .bind(name)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO tokens (hash, kind, name, created_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hash) DO UPDATE SET kind = excluded.kind, name = excluded.name, \
             expires_ms = NULL, worker_id = NULL",
        )
        .bind(hash)
        .bind(scope.as_str())
        .bind(name)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn has_admin_token(&self) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(ADMIN_COUNT)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// The token whose hash is `hash`, if any.
    pub async fn token_by_hash(&self, hash: &str) -> StoreResult<Option<StoredToken>> {
        let row = sqlx::query(&format!(
            "SELECT {TOKEN_COLUMNS} FROM tokens WHERE hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let info = info_from_row(&row)?;
        let expired = info.expires_ms.is_some_and(|at| at <= now_ms());
        Ok(Some(StoredToken { info, expired }))
    }

    /// Every token, oldest first.
    pub async fn tokens(&self) -> StoreResult<Vec<TokenInfo>> {
        let rows = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(info_from_row).collect()
    }

    /// Revoke (delete) token `id`; its listing as it was. The last admin token is kept: with
    /// none, nobody could make tokens until `kiln serve` restarts.
    pub async fn revoke_token(&self, id: i64) -> StoreResult<TokenInfo> {
        let mut tx = self.write().await?;
        let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("token {id} does not exist")))?;
        let info = info_from_row(&row)?;
        if info.scope == TokenScope::Admin {
            let admins: i64 = sqlx::query_scalar(ADMIN_COUNT).fetch_one(&mut *tx).await?;
            if admins <= 1 {
                return Err(StoreError::Conflict(format!(
                    "token {id} ({}) is the last admin token; make another \
                     (kiln token create --scope admin) before revoking it",
                    info.name
                )));
            }
        }
        sqlx::query("DELETE FROM tokens WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Worker `worker_id` connected with token `token_id`.
    pub async fn set_worker_token(&self, worker_id: &str, token_id: i64) -> StoreResult<()> {
        sqlx::query("UPDATE workers SET token_id = $1 WHERE id = $2 AND (token_id IS NULL OR token_id != $1)")
            .bind(token_id)
            .bind(worker_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Whether worker `worker_id` last connected with token `token_id` and is one of the ranks
    /// of job `job_id`'s current, running attempt: what a worker token may act for.
    pub async fn worker_runs_job(
        &self,
        token_id: i64,
        worker_id: &str,
        job_id: i64,
    ) -> StoreResult<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs j \
             JOIN attempt_ranks r ON r.job_id = j.id AND r.attempt = j.attempts \
             JOIN workers w ON w.id = r.worker_id \
             WHERE j.id = $1 AND j.state = 'running' AND r.worker_id = $2 AND w.token_id = $3",
        )
        .bind(job_id)
        .bind(worker_id)
        .bind(token_id)
        .fetch_one(&self.pool)
        .await?;
        Ok(n > 0)
    }

    /// Record one request that changed something.
    pub async fn insert_audit(&self, entry: &AuditEntry) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO audit_log (ts_ms, token_id, token_name, scope, method, path, status, peer) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(entry.ts_ms)
        .bind(entry.token_id)
        .bind(entry.token_name.clone())
        .bind(entry.scope.as_str())
        .bind(entry.method.clone())
        .bind(entry.path.clone())
        .bind(i64::from(entry.status))
        .bind(entry.peer.clone())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Audit entries with `seq > after`, oldest first, at most `limit`.
    pub async fn audit(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT seq, ts_ms, token_id, token_name, scope, method, path, status, peer \
             FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let status = to_u64(row.try_get("status")?, "audit_log.status")?;
                Ok(AuditEntry {
                    seq: row.try_get("seq")?,
                    ts_ms: row.try_get("ts_ms")?,
                    token_id: row.try_get("token_id")?,
                    token_name: row.try_get("token_name")?,
                    scope: scope_of(row.try_get::<&str, _>("scope")?)?,
                    method: row.try_get("method")?,
                    path: row.try_get("path")?,
                    status: u16::try_from(status)
                        .map_err(|_| StoreError::Corrupt(format!("audit_log.status = {status}")))?,
                    peer: row.try_get("peer")?,
                })
            })
            .collect()
    }
}
