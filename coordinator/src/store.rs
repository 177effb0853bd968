//! The store: the only module that talks SQL.
//!
//! SQLite through sqlx today (one file, WAL, foreign keys on); the rest of the coordinator sees
//! plain Kiln types and [`StoreError`], so another database can be added here later. Every job
//! state transition is one transaction; a batch of metrics is one transaction.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use kiln_proto::metric::Split;
use kiln_proto::protocol::{AttemptInfo, JobState};

mod artifacts;
mod datasets;
mod jobs;
mod series;
mod shares;
mod workers;

pub use datasets::NewBlob;
pub use jobs::{Assignment, CancelOutcome, JobFilter, QueuedJob, RunningAttempt};
pub use series::MetricRange;
pub use workers::TokenKind;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "kiln.db";

/// What can go wrong in the store. `NotFound` and `Conflict` are the caller's fault; the rest
/// are the server's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A field of the caller's input is wrong (e.g. `dataset.path` names no stored dataset).
    #[error("{0}")]
    Invalid(kiln_proto::spec::FieldError),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("corrupt row in the database: {0}")]
    Corrupt(String),
    /// Files that had to move with a transaction could not.
    #[error("{0}")]
    Files(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A handle to the database (a connection pool); cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Open (creating if missing) `data_dir/kiln.db` and run the migrations. `data_dir` must
    /// be absolute (the caller canonicalizes it).
    pub async fn open(data_dir: &Path) -> anyhow::Result<Store> {
        anyhow::ensure!(
            data_dir.is_absolute(),
            "the data directory must be an absolute path, got {}",
            data_dir.display()
        );
        let path: PathBuf = data_dir.join(DB_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database {}: {e}", path.display()))?;
        Ok(Store { pool })
    }

    /// Close every connection (waits for running queries).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn split_str(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

pub(crate) fn parse_split(s: &str) -> Result<Split, String> {
    match s {
        "train" => Ok(Split::Train),
        "val" => Ok(Split::Val),
        "test" => Ok(Split::Test),
        other => Err(format!(
            "unknown split `{other}`; allowed: train, val, test"
        )),
    }
}

fn parse_state(s: &str) -> StoreResult<JobState> {
    JobState::from_str(s).map_err(StoreError::Corrupt)
}

fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} = {v} is out of range")))
}

fn to_u64(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} = {v} is out of range")))
}

/// Steps are u64 on the wire and INTEGER (i64) in SQLite; steps past i64::MAX are clamped.
fn from_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn attempt_from_row(row: &sqlx::sqlite::SqliteRow) -> StoreResult<AttemptInfo> {
    Ok(AttemptInfo {
        job_id: row.try_get("job_id")?,
        attempt: to_u32(row.try_get("attempt")?, "attempts.attempt")?,
        worker_id: row.try_get("worker_id")?,
        state: parse_state(row.try_get::<&str, _>("state")?)?,
        started_ms: row.try_get("started_ms")?,
        finished_ms: row.try_get("finished_ms")?,
        resumed_from_step: row
            .try_get::<Option<i64>, _>("resumed_from_step")?
            .map(|s| to_u64(s, "attempts.resumed_from_step"))
            .transpose()?,
        error: row.try_get("error")?,
        ranks: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
