//! Dataset rows: blobs by digest (the bytes live in `data_dir/datasets/`, see
//! `crate::dataset`) and the versions of each name. Also the pinning of a job's `kiln:`
//! dataset at submission, inside the job's insert transaction.

use sqlx::{AnyConnection, Row};

use kiln_proto::dataset::{DatasetInfo, DatasetKind, DatasetPreview, DatasetRef, Digest};
use kiln_proto::protocol::JobId;
use kiln_proto::spec::{FieldError, JobSpec};

use super::{Store, StoreError, StoreResult, from_u64, now_ms, to_u32, to_u64};

/// A checked, complete upload about to be recorded.
#[derive(Debug, Clone)]
pub struct NewBlob {
    pub digest: Digest,
    pub kind: DatasetKind,
    pub size: u64,
    pub preview: DatasetPreview,
}

/// The columns [`info_from_row`] reads: a version joined with its blob.
const INFO_COLUMNS: &str = "v.name, v.digest, b.kind, b.size, v.created_ms, b.preview, \
     (SELECT COUNT(*) FROM dataset_versions w WHERE w.name = v.name AND w.id <= v.id) AS version, \
     (SELECT COUNT(*) FROM dataset_versions w WHERE w.name = v.name) AS versions";

fn info_from_row(row: &sqlx::any::AnyRow) -> StoreResult<DatasetInfo> {
    let digest: String = row.try_get("digest")?;
    let kind: &str = row.try_get("kind")?;
    let preview: &str = row.try_get("preview")?;
    Ok(DatasetInfo {
        name: row.try_get("name")?,
        digest: Digest::parse(&digest).map_err(StoreError::Corrupt)?,
        kind: kind.parse().map_err(StoreError::Corrupt)?,
        size: to_u64(row.try_get("size")?, "dataset_blobs.size")?,
        created_ms: row.try_get("created_ms")?,
        version: to_u32(row.try_get("version")?, "version")?,
        versions: to_u32(row.try_get("versions")?, "versions")?,
        preview: serde_json::from_str(preview)
            .map_err(|e| StoreError::Corrupt(format!("preview of dataset {digest}: {e}")))?,
    })
}

async fn blob_kind(conn: &mut AnyConnection, digest: &Digest) -> StoreResult<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT kind FROM dataset_blobs WHERE digest = $1")
            .bind(digest.hex())
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// The newest version of `name`.
async fn newest(conn: &mut AnyConnection, name: &str) -> StoreResult<Option<DatasetInfo>> {
    let row = sqlx::query(&format!(
        "SELECT {INFO_COLUMNS} FROM dataset_versions v JOIN dataset_blobs b USING (digest) \
         WHERE v.name = $1 ORDER BY v.id DESC LIMIT 1"
    ))
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?;
    row.as_ref().map(info_from_row).transpose()
}

/// Give `digest` (already stored) the next version of `name`, unless that is already its
/// newest version.
async fn add_version(
    conn: &mut AnyConnection,
    name: &str,
    digest: &Digest,
) -> StoreResult<DatasetInfo> {
    let current = newest(conn, name).await?;
    if current.as_ref().is_none_or(|c| c.digest != *digest) {
        sqlx::query("INSERT INTO dataset_versions (name, digest, created_ms) VALUES ($1, $2, $3)")
            .bind(name)
            .bind(digest.hex())
            .bind(now_ms())
            .execute(&mut *conn)
            .await?;
    }
    newest(conn, name)
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("dataset `{name}` vanished while naming it")))
}

fn path_error(spec: &JobSpec, allowed: String) -> StoreError {
    StoreError::Invalid(FieldError {
        field: "dataset.path".into(),
        value: format!("{:?}", spec.dataset.path().unwrap_or_default()),
        allowed,
    })
}

/// Pin a spec's stored dataset: `kiln:NAME` becomes `kiln:sha256:<digest>` of NAME's newest
/// version; `kiln:sha256:…` must be stored. The dataset's kind must be the one the spec reads.
/// Returns the digest and the name it goes by; `None` for a path on the worker.
pub(super) async fn pin(
    conn: &mut AnyConnection,
    spec: &mut JobSpec,
) -> StoreResult<Option<(Digest, Option<String>)>> {
    let Some(Ok(reference)) = DatasetRef::of(&spec.dataset) else {
        // Synthetic data, or a reference `JobSpec::validate` already refused.
        return Ok(None);
    };
    let (digest, name, kind) = match reference {
        DatasetRef::Local(_) => return Ok(None),
        DatasetRef::Named(name) => match newest(conn, &name).await? {
            Some(info) => (info.digest, Some(name), info.kind.as_str().to_string()),
            None => {
                return Err(path_error(
                    spec,
                    format!(
                        "a dataset stored on this coordinator: none is named `{name}` \
                         (`kiln data ls` lists them; `kiln data push FILE --name {name}` adds it)"
                    ),
                ));
            }
        },
        DatasetRef::Pinned(digest) => match blob_kind(conn, &digest).await? {
            // The name it goes by (its newest naming), for people; the digest is what counts.
            Some(kind) => {
                let name: Option<String> = sqlx::query_scalar(
                    "SELECT name FROM dataset_versions WHERE digest = $1 ORDER BY id DESC LIMIT 1",
                )
                .bind(digest.hex())
                .fetch_optional(&mut *conn)
                .await?;
                (digest, name, kind)
            }
            None => {
                return Err(path_error(
                    spec,
                    format!(
                        "a dataset stored on this coordinator: none has the digest {} \
                         (`kiln data ls` lists them)",
                        digest.short()
                    ),
                ));
            }
        },
    };
    let wanted = DatasetKind::of(&spec.dataset).map(DatasetKind::as_str);
    if wanted != Some(kind.as_str()) {
        return Err(path_error(
            spec,
            format!(
                "a dataset of kind {} (the spec's dataset.kind); this one is stored as {kind}",
                wanted.unwrap_or("?")
            ),
        ));
    }
    spec.dataset.set_path(digest.reference());
    Ok(Some((digest, name)))
}

/// Refuse to queue a job again whose dataset was deleted since.
pub(super) async fn check_still_stored(conn: &mut AnyConnection, job: JobId) -> StoreResult<()> {
    let digest: Option<String> =
        sqlx::query_scalar("SELECT dataset_digest FROM jobs WHERE id = $1")
            .bind(job)
            .fetch_optional(&mut *conn)
            .await?
            .flatten();
    let Some(digest) = digest else {
        return Ok(());
    };
    let digest = Digest::parse(&digest).map_err(StoreError::Corrupt)?;
    if blob_kind(conn, &digest).await?.is_none() {
        return Err(StoreError::Conflict(format!(
            "job {job} trains on dataset {digest}, which has been deleted; push the data again \
             (`kiln data push`) and submit a new job"
        )));
    }
    Ok(())
}

impl Store {
    /// Is a blob with this digest stored (and of which kind)?
    pub async fn dataset_blob_kind(&self, digest: &Digest) -> StoreResult<Option<DatasetKind>> {
        let mut conn = self.pool.acquire().await?;
        blob_kind(&mut conn, digest)
            .await?
            .map(|k| k.parse().map_err(StoreError::Corrupt))
            .transpose()
    }

    /// Record a blob whose file is in place (if it is not recorded yet) and make it the newest
    /// version of `name`. A blob already stored as another kind is a conflict.
    pub async fn add_dataset(&self, name: &str, blob: &NewBlob) -> StoreResult<DatasetInfo> {
        let mut tx = self.write().await?;
        match blob_kind(&mut tx, &blob.digest).await? {
            Some(kind) if kind != blob.kind.as_str() => {
                return Err(StoreError::Conflict(format!(
                    "these bytes are already stored as a {kind} dataset ({}); a dataset has one kind",
                    blob.digest
                )));
            }
            Some(_) => {}
            None => {
                let preview = serde_json::to_string(&blob.preview)
                    .map_err(|e| StoreError::Corrupt(format!("cannot serialize a preview: {e}")))?;
                sqlx::query(
                    "INSERT INTO dataset_blobs (digest, kind, size, preview, created_ms) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(blob.digest.hex())
                .bind(blob.kind.as_str())
                .bind(from_u64(blob.size))
                .bind(preview)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
            }
        }
        let info = add_version(&mut tx, name, &blob.digest).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// Name an already-stored blob (a new version of `name`, unless it is the newest already).
    pub async fn name_dataset(&self, name: &str, digest: &Digest) -> StoreResult<DatasetInfo> {
        let mut tx = self.write().await?;
        if blob_kind(&mut tx, digest).await?.is_none() {
            return Err(StoreError::NotFound(format!(
                "no dataset with the digest {digest} is stored; upload it first"
            )));
        }
        let info = add_version(&mut tx, name, digest).await?;
        tx.commit().await?;
        Ok(info)
    }

    /// The newest version of every name, newest first.
    pub async fn datasets(&self) -> StoreResult<Vec<DatasetInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {INFO_COLUMNS} FROM dataset_versions v JOIN dataset_blobs b USING (digest) \
             WHERE v.id = (SELECT MAX(id) FROM dataset_versions w WHERE w.name = v.name) \
             ORDER BY v.id DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(info_from_row).collect()
    }

    /// A dataset by name (its newest version) or by digest (the newest name it has).
    pub async fn dataset(&self, reference: &str) -> StoreResult<DatasetInfo> {
        let mut conn = self.pool.acquire().await?;
        let row = match reference.strip_prefix("sha256:") {
            Some(hex) => {
                let digest = Digest::parse(hex)
                    .map_err(|e| StoreError::NotFound(format!("no dataset `{reference}`: {e}")))?;
                sqlx::query(&format!(
                    "SELECT {INFO_COLUMNS} FROM dataset_versions v JOIN dataset_blobs b \
                     USING (digest) WHERE v.digest = $1 ORDER BY v.id DESC LIMIT 1"
                ))
                .bind(digest.hex().to_string())
                .fetch_optional(&mut *conn)
                .await?
            }
            None => {
                return newest(&mut conn, reference).await?.ok_or_else(|| {
                    StoreError::NotFound(format!("no dataset is named `{reference}`"))
                });
            }
        };
        row.as_ref()
            .map(info_from_row)
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("no dataset `{reference}` is stored")))
    }

    /// Every version of `name`, newest first.
    pub async fn dataset_versions(&self, name: &str) -> StoreResult<Vec<DatasetInfo>> {
        let rows = sqlx::query(&format!(
            "SELECT {INFO_COLUMNS} FROM dataset_versions v JOIN dataset_blobs b USING (digest) \
             WHERE v.name = $1 ORDER BY v.id DESC"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound(format!(
                "no dataset is named `{name}`"
            )));
        }
        rows.iter().map(info_from_row).collect()
    }

    /// Delete every version of `name`. Returns the digests no name refers to any more, whose
    /// rows are gone and whose files the caller removes. Refused while a queued or running job
    /// trains on one of those.
    pub async fn delete_dataset(&self, name: &str) -> StoreResult<Vec<Digest>> {
        let mut tx = self.write().await?;
        let digests: Vec<String> =
            sqlx::query_scalar("SELECT DISTINCT digest FROM dataset_versions WHERE name = $1")
                .bind(name)
                .fetch_all(&mut *tx)
                .await?;
        if digests.is_empty() {
            return Err(StoreError::NotFound(format!(
                "no dataset is named `{name}`"
            )));
        }
        let mut orphans = Vec::new();
        for digest in digests {
            let other_names: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM dataset_versions WHERE digest = $1 AND name != $2",
            )
            .bind(&digest)
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            if other_names == 0 {
                orphans.push(digest);
            }
        }
        let mut users: Vec<(i64, String)> = Vec::new();
        for digest in &orphans {
            let rows = sqlx::query(
                "SELECT id, state FROM jobs WHERE dataset_digest = $1 \
                 AND state IN ('queued', 'running') ORDER BY id",
            )
            .bind(digest)
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                users.push((row.try_get("id")?, row.try_get("state")?));
            }
        }
        if !users.is_empty() {
            let list = users
                .iter()
                .map(|(id, state)| format!("{id} ({state})"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(StoreError::Conflict(format!(
                "dataset `{name}` is in use by job(s) {list}; cancel them or wait until they \
                 finish, then delete it"
            )));
        }
        sqlx::query("DELETE FROM dataset_versions WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        let mut gone = Vec::new();
        for digest in orphans {
            sqlx::query("DELETE FROM dataset_blobs WHERE digest = $1")
                .bind(&digest)
                .execute(&mut *tx)
                .await?;
            gone.push(Digest::parse(&digest).map_err(StoreError::Corrupt)?);
        }
        tx.commit().await?;
        Ok(gone)
    }
}
