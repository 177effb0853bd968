//! Artifact files: `data_dir/artifacts/<job_id>/<name>`, written to a temporary file and
//! renamed into place, so a reader never sees half a file. The name rules are
//! `kiln_proto::artifact`.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use kiln_proto::protocol::JobId;

/// Why an upload (an artifact's or a dataset's) failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the upload is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The artifact folder, `data_dir/artifacts`.
#[derive(Debug, Clone)]
pub struct ArtifactDir {
    root: PathBuf,
}

impl ArtifactDir {
    pub fn new(root: PathBuf) -> ArtifactDir {
        ArtifactDir { root }
    }

    /// Where an artifact lives. `name` must have passed [`kiln_proto::artifact::check_name`].
    pub fn path(&self, job_id: JobId, name: &str) -> PathBuf {
        self.root.join(job_id.to_string()).join(name)
    }

    /// Stream `body` into the artifact's file; at most `limit` bytes. Returns the size.
    pub async fn write<S, B, E>(
        &self,
        job_id: JobId,
        name: &str,
        body: S,
        limit: usize,
    ) -> Result<u64, WriteError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let dir = self.root.join(job_id.to_string());
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| WriteError::Io {
                path: dir.clone(),
                source,
            })?;
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
        let result = write_file(&tmp, body, limit as u64, |_| {}).await;
        let size = match result {
            Ok(size) => size,
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let dest = dir.join(name);
        if let Err(source) = tokio::fs::rename(&tmp, &dest).await {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(WriteError::Io { path: dest, source });
        }
        Ok(size)
    }
}

/// Stream `body` into a new file at `path`, at most `limit` bytes, handing every chunk to
/// `observe` as well (datasets hash it). Flushed and synced; returns the size. On error the
/// caller removes the partial file.
pub async fn write_file<S, B, E>(
    path: &Path,
    body: S,
    limit: u64,
    mut observe: impl FnMut(&[u8]),
) -> Result<u64, WriteError>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::create(path).await.map_err(io)?;
    let mut size: u64 = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
        let bytes = chunk.as_ref();
        size = size.saturating_add(bytes.len() as u64);
        if size > limit {
            return Err(WriteError::TooLarge { limit });
        }
        observe(bytes);
        file.write_all(bytes).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(size)
}
