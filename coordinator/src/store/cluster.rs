//! What several coordinators on one PostgreSQL database share besides jobs and workers (see
//! `crate::cluster`): their heartbeats, the scheduling lease, and the bus between them
//! (LISTEN/NOTIFY, with long messages stored in `bus_payloads`).

use sqlx::postgres::{PgConnection, PgListener};
use sqlx::{Connection, Row};
use tracing::{info, warn};

use super::{Store, StoreResult, now_ms};

/// The NOTIFY channel of the bus.
pub const BUS_CHANNEL: &str = "kiln_bus";
/// NOTIFY takes payloads shorter than 8000 bytes; longer ones go through `bus_payloads`.
const NOTIFY_MAX: usize = 7900;
/// The session advisory lock (PostgreSQL) held by the coordinator that schedules.
const SCHEDULER_LOCK: i64 = 0x6b69_6c6e_7363; // "kilnsc"

impl Store {
    /// Coordinator `node` is alive (its row is created at the first call).
    pub async fn node_heartbeat(&self, node: &str, addr: &str, started_ms: i64) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO coordinators (node, addr, started_ms, heartbeat_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (node) DO UPDATE SET heartbeat_ms = excluded.heartbeat_ms",
        )
        .bind(node)
        .bind(addr)
        .bind(started_ms)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Coordinator `node` stopped (a graceful shutdown).
    pub async fn forget_node(&self, node: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM coordinators WHERE node = $1")
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The coordinators heard from since `since_ms`.
    pub async fn alive_nodes(&self, since_ms: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query("SELECT node FROM coordinators WHERE heartbeat_ms >= $1")
            .bind(since_ms)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("node")?)).collect()
    }

    /// Workers whose coordinator has not been heard from since `since_ms` (it died with
    /// their sockets): disconnected. Returns their ids. Also forgets coordinators silent for
    /// an hour.
    pub async fn disconnect_orphans(&self, since_ms: i64) -> StoreResult<Vec<String>> {
        let rows = sqlx::query(
            "UPDATE workers SET connected = 0, node = NULL WHERE connected = 1 AND \
             (node IS NULL OR node NOT IN \
             (SELECT node FROM coordinators WHERE heartbeat_ms >= $1)) RETURNING id",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        sqlx::query("DELETE FROM coordinators WHERE heartbeat_ms < $1")
            .bind(since_ms - 3_600_000)
            .execute(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    /// Send `payload` to every coordinator listening on the bus (this one included), after
    /// everything this coordinator committed before.
    pub async fn notify_bus(&self, payload: &str) -> StoreResult<()> {
        if payload.len() <= NOTIFY_MAX {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(BUS_CHANNEL)
                .bind(payload)
                .execute(&self.pool)
                .await?;
        } else {
            sqlx::query(
                "WITH r AS (INSERT INTO bus_payloads (payload, created_ms) VALUES ($2, $3) \
                 RETURNING id) SELECT pg_notify($1, '@' || CAST(r.id AS TEXT)) FROM r",
            )
            .bind(BUS_CHANNEL)
            .bind(payload)
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// What a notification `@ID` stands for (`None` once swept).
    pub async fn bus_payload(&self, id: i64) -> StoreResult<Option<String>> {
        let row = sqlx::query("SELECT payload FROM bus_payloads WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("payload")).transpose()?)
    }

    /// Forget stored bus messages older than `before_ms`.
    pub async fn sweep_bus(&self, before_ms: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM bus_payloads WHERE created_ms < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// A listener on the bus channel (it reconnects by itself; notifications sent while it was
/// reconnecting are lost).
pub async fn bus_listener(url: &str) -> anyhow::Result<PgListener> {
    let mut listener = PgListener::connect(url)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on the database: {e}"))?;
    listener.listen(BUS_CHANNEL).await?;
    Ok(listener)
}

/// The scheduling lease: a session advisory lock on a connection of its own. PostgreSQL
/// releases it when that connection ends, so a coordinator that dies (even by SIGKILL: its
/// socket closes) hands it on at once; one cut off from the database loses it when its
/// connection fails.
pub struct Lease {
    url: String,
    conn: Option<PgConnection>,
    held: bool,
}

impl Lease {
    pub fn new(url: &str) -> Lease {
        Lease {
            url: url.to_string(),
            conn: None,
            held: false,
        }
    }

    /// Whether this coordinator holds the lease now: checks the held lease's connection, or
    /// tries to take a free one.
    pub async fn hold(&mut self) -> bool {
        match self.try_hold().await {
            Ok(held) => {
                if held && !self.held {
                    info!("this coordinator schedules now (it holds the scheduling lease)");
                }
                self.held = held;
            }
            Err(e) => {
                if self.held {
                    warn!(error = %e, "lost the scheduling lease: its database connection failed");
                }
                self.held = false;
                self.conn = None;
            }
        }
        self.held
    }

    async fn try_hold(&mut self) -> Result<bool, sqlx::Error> {
        if self.conn.is_none() {
            self.conn = Some(PgConnection::connect(&self.url).await?);
        }
        let conn = self.conn.as_mut().expect("connected above");
        if self.held {
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            return Ok(true);
        }
        let row = sqlx::query("SELECT pg_try_advisory_lock($1)")
            .bind(SCHEDULER_LOCK)
            .fetch_one(&mut *conn)
            .await?;
        row.try_get::<bool, _>(0)
    }

    /// Give the lease back (a graceful shutdown), so another coordinator takes it at once.
    pub async fn release(&mut self) {
        self.held = false;
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }
}
