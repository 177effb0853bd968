//! The store: the only module that talks SQL.
//!
//! SQLite (one file in the data directory, WAL, foreign keys on) by default, or PostgreSQL
//! (`kiln serve --database postgres://…`), through sqlx's `Any` driver: one set of queries,
//! written with `$N` placeholders (both take them), and [`Backend`] for the few places where
//! the SQL differs. The rest of the coordinator sees plain Kiln types and [`StoreError`].
//! Every job state transition is one transaction; a batch of metrics is one transaction.
//! Write transactions are serialized on both backends (SQLite's `BEGIN IMMEDIATE`; a
//! transaction-scoped advisory lock on PostgreSQL), so two coordinators on one PostgreSQL
//! database see the same single-writer order that one SQLite file gives.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::any::{AnyArguments, AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyPool, Arguments, ConnectOptions, Encode, Executor, Row, Transaction, Type};

use kiln_proto::metric::Split;
use kiln_proto::protocol::{AttemptInfo, JobState};

mod artifacts;
pub mod cluster;
mod control;
mod datasets;
mod jobs;
mod series;
mod shares;
mod tokens;
mod workers;

pub use control::ControlTarget;
pub use datasets::NewBlob;
pub use jobs::{Assignment, CancelOutcome, JobFilter, QueuedJob, RunningAttempt};
pub use series::MetricRange;
pub use tokens::{BOOTSTRAP_ADMIN, BOOTSTRAP_WORKERS, StoredToken};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "kiln.db";

/// The advisory lock key (PostgreSQL) that serializes the store's write transactions.
const WRITE_LOCK: i64 = 0x6b69_6c6e_7772; // "kilnwr"

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

/// The database server behind a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The column that keeps the arrival order of metric points (SQLite's implicit `rowid`;
    /// an identity column on PostgreSQL).
    fn arrival(self) -> &'static str {
        match self {
            Backend::Sqlite => "rowid",
            Backend::Postgres => "seq",
        }
    }

    /// `haystack` contains `needle` (a placeholder), without LIKE's wildcards.
    fn contains(self, haystack: &str, needle: &str) -> String {
        match self {
            Backend::Sqlite => format!("instr({haystack}, {needle}) > 0"),
            Backend::Postgres => format!("strpos({haystack}, {needle}) > 0"),
        }
    }

    /// The JSON array of strings in `column` has the element `value` (a placeholder).
    fn json_array_has(self, column: &str, value: &str) -> String {
        match self {
            Backend::Sqlite => {
                format!("EXISTS (SELECT 1 FROM json_each({column}) WHERE value = {value})")
            }
            Backend::Postgres => format!(
                "EXISTS (SELECT 1 FROM json_array_elements_text({column}::json) AS t(value) \
                 WHERE value = {value})"
            ),
        }
    }
}

/// A handle to the database (a connection pool); cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
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
        sqlx::any::install_default_drivers();
        let path: PathBuf = data_dir.join(DB_FILE);
        // `Any` connects by URL; SQLite's options build it (the path percent-encoded). The
        // pragmas a URL cannot carry are set on each new connection.
        let url = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .to_url_lossy();
        let options = AnyConnectOptions::from_url(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                    )
                    .await?;
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", path.display()))?;
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database {}: {e}", path.display()))?;
        Ok(Store {
            pool,
            backend: Backend::Sqlite,
        })
    }

    /// Connect to the PostgreSQL database at `url` (`postgres://user:password@host/db`; TLS
    /// with `?sslmode=require`) and run the migrations. Several coordinators may share it.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        anyhow::ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--database must be a postgres:// or postgresql:// URL, got `{shown}` (without it \
             the coordinator keeps SQLite in its data directory)"
        );
        let options = AnyConnectOptions::from_str(url)
            .map_err(|e| anyhow::anyhow!("cannot read the database URL `{shown}`: {e}"))?;
        let pool = AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to the database {shown}: {e}"))?;
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot migrate the database {shown}: {e}"))?;
        Ok(Store {
            pool,
            backend: Backend::Postgres,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Close every connection (waits for running queries).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A write transaction: one at a time, whichever coordinator asks.
    async fn write(&self) -> StoreResult<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                Ok(tx)
            }
        }
    }

    /// A read-only transaction whose statements see one snapshot.
    async fn snapshot(&self) -> StoreResult<Transaction<'static, Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin().await?,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
        })
    }
}

/// A database URL with its password hidden, for messages and logs.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => "(not a URL)".to_string(),
    }
}

/// A statement put together piece by piece, with `$N` placeholders (which SQLite and
/// PostgreSQL both take; sqlx's `QueryBuilder<Any>` writes `?`, which PostgreSQL does not).
pub(crate) struct Sql {
    text: String,
    args: AnyArguments<'static>,
    binds: usize,
    /// The first value that could not be encoded (none of the store's types fails).
    error: Option<sqlx::error::BoxDynError>,
}

impl Sql {
    pub(crate) fn new(text: impl Into<String>) -> Sql {
        Sql {
            text: text.into(),
            args: AnyArguments::default(),
            binds: 0,
            error: None,
        }
    }

    pub(crate) fn push(&mut self, text: &str) -> &mut Sql {
        self.text.push_str(text);
        self
    }

    /// Append a placeholder for `value`.
    pub(crate) fn bind<T>(&mut self, value: T) -> &mut Sql
    where
        T: 'static + Encode<'static, Any> + Type<Any>,
    {
        self.binds += 1;
        let _ = write!(self.text, "${}", self.binds);
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self
    }

    /// The placeholder the next [`Sql::bind`] will write (for SQL made around it).
    pub(crate) fn next_placeholder(&self) -> String {
        format!("${}", self.binds + 1)
    }

    /// Bind `value` without writing its placeholder (see [`Sql::next_placeholder`]).
    pub(crate) fn bind_only<T>(&mut self, value: T) -> &mut Sql
    where
        T: 'static + Encode<'static, Any> + Type<Any>,
    {
        self.binds += 1;
        if let Err(e) = self.args.add(value)
            && self.error.is_none()
        {
            self.error = Some(e);
        }
        self
    }

    /// The text and its arguments, for `sqlx::query_with` and friends.
    pub(crate) fn parts(self) -> StoreResult<(String, AnyArguments<'static>)> {
        match self.error {
            Some(e) => Err(StoreError::Db(sqlx::Error::Encode(e))),
            None => Ok((self.text, self.args)),
        }
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

/// Steps are u64 on the wire and 64-bit signed integers in the database; steps past i64::MAX
/// are clamped.
fn from_u64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn attempt_from_row(row: &sqlx::any::AnyRow) -> StoreResult<AttemptInfo> {
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
