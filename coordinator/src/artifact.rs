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
        create_dir(&dir).await?;
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

/// A folder for files that belong to no job yet (an import being received), under the
/// artifact folder so that [`Staging::place`] is a rename. Removed when dropped unless placed.
#[derive(Debug)]
pub struct Staging {
    dir: PathBuf,
    root: PathBuf,
    placed: bool,
}

impl ArtifactDir {
    pub async fn staging(&self) -> Result<Staging, WriteError> {
        let dir = self
            .root
            .join(format!(".import-{:016x}", rand::random::<u64>()));
        create_dir(&dir).await?;
        Ok(Staging {
            dir,
            root: self.root.clone(),
            placed: false,
        })
    }
}

impl Staging {
    /// Where the file `name` (checked with [`kiln_proto::artifact::check_name`]) is received.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Move every file into job `job_id`'s artifact folder (renames, in one file system).
    pub fn place(&mut self, job_id: JobId) -> Result<(), String> {
        let dest = self.root.join(job_id.to_string());
        let moved = (|| {
            std::fs::create_dir_all(&dest)?;
            for entry in std::fs::read_dir(&self.dir)? {
                let entry = entry?;
                std::fs::rename(entry.path(), dest.join(entry.file_name()))?;
            }
            std::fs::remove_dir(&self.dir)
        })();
        moved.map_err(|e| format!("cannot move the imported files to {}: {e}", dest.display()))?;
        self.placed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.placed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

async fn create_dir(dir: &Path) -> Result<(), WriteError> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|source| WriteError::Io {
            path: dir.to_path_buf(),
            source,
        })
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
