//! For test suites (the coordinator's own and the workspace's end-to-end tests): which
//! database a test's coordinator keeps its data in. Not part of the coordinator's API.
//!
//! With `KILN_TEST_POSTGRES` set to the URL of a PostgreSQL server whose user may create
//! databases (`scripts/test` starts one), every test runs on PostgreSQL, each in a database of
//! its own; unset, on SQLite in the test's data directory.

use std::path::Path;

use anyhow::Context;
use sha2::{Digest, Sha256};
use sqlx::{Connection, Executor};

use crate::store::{Store, redact};

/// The environment variable that selects PostgreSQL for the tests.
pub const POSTGRES_ENV: &str = "KILN_TEST_POSTGRES";

/// The PostgreSQL URL for the test whose data directory is `dir` (a database created at first
/// use, the same on later calls, so a restarted coordinator finds its data), or `None` (SQLite)
/// when [`POSTGRES_ENV`] is unset.
pub async fn database_for(dir: &Path) -> anyhow::Result<Option<String>> {
    let Ok(server) = std::env::var(POSTGRES_ENV) else {
        return Ok(None);
    };
    let digest = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let name = format!("kiln_test_{}", &hex::encode(digest)[..20]);
    let mut admin = sqlx::postgres::PgConnection::connect(&server)
        .await
        .with_context(|| format!("{POSTGRES_ENV}: cannot connect to {}", redact(&server)))?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut admin)
        .await?;
    if exists.is_none() {
        // The name is ours (hex digits): no quoting needed.
        admin
            .execute(format!("CREATE DATABASE {name} TEMPLATE template0").as_str())
            .await
            .with_context(|| format!("cannot create the test database {name}"))?;
    }
    admin.close().await?;
    let mut url =
        url::Url::parse(&server).with_context(|| format!("{POSTGRES_ENV} is not a URL"))?;
    url.set_path(&name);
    Ok(Some(url.to_string()))
}

/// The store a test with data directory `dir` uses (see [`database_for`]).
pub async fn store(dir: &Path) -> anyhow::Result<Store> {
    match database_for(dir).await? {
        Some(url) => Store::connect(&url).await,
        None => Store::open(dir).await,
    }
}
