//! Artifact names and files: `data_dir/artifacts/<job_id>/<name>`, written to a temporary
//! file and renamed into place, so a reader never sees half a file.

use std::path::{Path, PathBuf};

use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use kiln_proto::protocol::JobId;

const MAX_NAME_LEN: usize = 128;
const CHECKPOINT_PREFIX: &str = "checkpoint-";
const CHECKPOINT_SUFFIX: &str = ".ckpt";

/// What a valid artifact name looks like, for error messages.
pub const NAME_RULE: &str =
    "1 to 128 characters from letters, digits, '.', '_' and '-', not starting with '.'";

/// Check an artifact name: `[A-Za-z0-9._-]{1,128}`, not starting with `.` (so no `..`, no
/// path separators, no hidden or temporary files).
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid artifact name `{name}`: allowed are {NAME_RULE}"
        ))
    }
}

/// `checkpoint-<step, zero-padded to 10>.ckpt`.
pub fn checkpoint_name(step: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{step:010}{CHECKPOINT_SUFFIX}")
}

/// The step of a checkpoint artifact name, `None` for any other name.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(CHECKPOINT_PREFIX)?
        .strip_suffix(CHECKPOINT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the artifact is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
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

    /// Where an artifact lives. `name` must have passed [`check_name`].
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
        let result = write_file(&tmp, body, limit).await;
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

async fn write_file<S, B, E>(path: &Path, body: S, limit: usize) -> Result<u64, WriteError>
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
    let mut size: usize = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| WriteError::Body(e.to_string()))?;
        let bytes = chunk.as_ref();
        size = size.saturating_add(bytes.len());
        if size > limit {
            return Err(WriteError::TooLarge { limit });
        }
        file.write_all(bytes).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    file.sync_all().await.map_err(io)?;
    Ok(size as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let check = |name: &str, ok: bool| assert_eq!(check_name(name).is_ok(), ok, "{name}");
        check("model.bpk", true);
        check("checkpoint-0000000010.ckpt", true);
        check("A_b-c.9", true);
        check(&"x".repeat(128), true);
        check(&"x".repeat(129), false);
        check("", false);
        check(".hidden", false);
        check("..", false);
        check("../x", false);
        check("a/b", false);
        check("a\\b", false);
        check("%2e%2e", false);
        check("naïve", false);
        check("a b", false);
    }

    #[test]
    fn checkpoints() {
        assert_eq!(checkpoint_name(42), "checkpoint-0000000042.ckpt");
        assert_eq!(checkpoint_step("checkpoint-0000000042.ckpt"), Some(42));
        assert_eq!(checkpoint_step("checkpoint-.ckpt"), None);
        assert_eq!(checkpoint_step("checkpoint-12a.ckpt"), None);
        assert_eq!(checkpoint_step("model.bpk"), None);
    }
}
