//! Workers as last seen.

use sqlx::Row;

use kiln_proto::protocol::{AttemptRef, Capabilities, WorkerInfo};

use super::{Store, StoreError, StoreResult, now_ms, to_u32, to_u64};

const WORKER_SELECT: &str = "SELECT w.id, w.name, w.capabilities_json, w.connected, w.draining, \
     w.last_seen_ms, w.revision, j.id AS job_id, j.attempts AS attempt FROM workers w \
     LEFT JOIN jobs j ON j.worker_id = w.id AND j.state = 'running'";

fn worker_from_row(row: &sqlx::any::AnyRow) -> StoreResult<WorkerInfo> {
    let id: String = row.try_get("id")?;
    let caps: &str = row.try_get("capabilities_json")?;
    let capabilities: Capabilities = serde_json::from_str(caps)
        .map_err(|e| StoreError::Corrupt(format!("capabilities of worker {id}: {e}")))?;
    let running = match row.try_get::<Option<i64>, _>("job_id")? {
        Some(job_id) => Some(AttemptRef {
            job_id,
            attempt: to_u32(row.try_get("attempt")?, "jobs.attempts")?,
        }),
        None => None,
    };
    Ok(WorkerInfo {
        id,
        name: row.try_get("name")?,
        capabilities,
        connected: row.try_get::<i64, _>("connected")? != 0,
        draining: row.try_get::<i64, _>("draining")? != 0,
        last_seen_ms: row.try_get("last_seen_ms")?,
        running,
        revision: to_u64(row.try_get("revision")?, "workers.revision")?,
    })
}

impl Store {
    /// A worker said hello. It counts as connected (and names its coordinator) only once
    /// [`Store::worker_ready`]: until its running attempts are reconciled no job may be
    /// planned for it, and `connected` is what clients wait on. `keep_draining`: keep an earlier drain (a reconnect with jobs
    /// still running) rather than clearing it (a fresh worker process).
    pub async fn connect_worker(
        &self,
        id: &str,
        name: &str,
        capabilities: &Capabilities,
        keep_draining: bool,
    ) -> StoreResult<WorkerInfo> {
        let caps = serde_json::to_string(capabilities)
            .map_err(|e| StoreError::Corrupt(format!("cannot serialize capabilities: {e}")))?;
        sqlx::query(
            "INSERT INTO workers (id, name, capabilities_json, connected, draining, last_seen_ms) \
             VALUES ($1, $2, $3, 0, 0, $4) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
             capabilities_json = excluded.capabilities_json, connected = 0, node = NULL, \
             draining = CASE WHEN $5 THEN workers.draining ELSE 0 END, last_seen_ms = excluded.last_seen_ms",
        )
        .bind(id)
        .bind(name)
        .bind(caps)
        .bind(now_ms())
        .bind(keep_draining)
        .execute(&self.pool)
        .await?;
        self.worker(id).await
    }

    /// A worker's hello is reconciled on coordinator `node`: its socket is there.
    pub async fn worker_ready(&self, id: &str, node: &str) -> StoreResult<()> {
        sqlx::query("UPDATE workers SET node = $1, connected = 1 WHERE id = $2")
            .bind(node)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The worker's socket on coordinator `node` closed (or it went silent there). Nothing
    /// changes when its row names another node: it reconnected to another coordinator
    /// meanwhile, and that one holds it now.
    pub async fn worker_disconnected(&self, id: &str, node: &str) -> StoreResult<WorkerInfo> {
        sqlx::query(
            "UPDATE workers SET connected = 0, node = NULL, last_seen_ms = $1 \
             WHERE id = $2 AND (node = $3 OR node IS NULL)",
        )
        .bind(now_ms())
        .bind(id)
        .bind(node)
        .execute(&self.pool)
        .await?;
        self.worker(id).await
    }

    /// Mark every worker disconnected (coordinator start, SQLite: the only coordinator).
    pub async fn disconnect_all_workers(&self) -> StoreResult<()> {
        sqlx::query("UPDATE workers SET connected = 0, node = NULL")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn touch_worker(&self, id: &str) -> StoreResult<()> {
        sqlx::query("UPDATE workers SET last_seen_ms = $1 WHERE id = $2")
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn drain_worker(&self, id: &str) -> StoreResult<WorkerInfo> {
        let done = sqlx::query("UPDATE workers SET draining = 1 WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("worker `{id}` is not known")));
        }
        self.worker(id).await
    }

    pub async fn worker(&self, id: &str) -> StoreResult<WorkerInfo> {
        let row = sqlx::query(&format!("{WORKER_SELECT} WHERE w.id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("worker `{id}` is not known")))?;
        worker_from_row(&row)
    }

    /// Connected workers' ids and the node each is connected to (`None` only in rows written
    /// before nodes were recorded).
    pub async fn worker_nodes(&self) -> StoreResult<Vec<(String, Option<String>)>> {
        let rows = sqlx::query("SELECT id, node FROM workers WHERE connected = 1")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("node")?)))
            .collect()
    }

    /// Every known worker, connected first, then by id.
    pub async fn workers(&self) -> StoreResult<Vec<WorkerInfo>> {
        let rows = sqlx::query(&format!("{WORKER_SELECT} ORDER BY w.connected DESC, w.id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(worker_from_row).collect()
    }
}
