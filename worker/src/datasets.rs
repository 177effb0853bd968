//! The worker's dataset cache: stored datasets fetched from the coordinator by digest, kept in
//! `--cache-dir` up to `--cache-max-bytes` (the least recently used go first).
//!
//! Layout: `<dir>/<hex>` is the dataset's bytes; for an IDX folder (a tar archive) the files
//! are unpacked beside it into `<dir>/<hex>.d/`. A download goes to `<dir>/.incoming/` and is
//! renamed into place only once its digest is right. `<dir>/<hex>.ok` records the size and
//! modification time the file had when its digest was last checked, and its own modification
//! time is the last use (eviction order). A use trusts the file only while its size and
//! modification time are still those (like git's index); otherwise the file is hashed again,
//! and a damaged one is downloaded again, never trained on.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use sha2::{Digest as _, Sha256};

use kiln_client::{Client, ClientError};
use kiln_proto::dataset::{DatasetKind, Digest};
use kiln_proto::fmt::bytes as fmt_bytes;
use kiln_train::train::CancelToken;

/// Why a dataset could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot download dataset {digest}: {source}")]
    Download {
        digest: Digest,
        #[source]
        source: ClientError,
    },
    #[error(
        "dataset {expected} arrived with the digest {actual}: corrupted on the way; not trained on"
    )]
    Mismatch { expected: Digest, actual: Digest },
    #[error("the dataset cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("dataset {digest} is not a valid IDX archive: {message}")]
    Archive { digest: Digest, message: String },
    #[error("cancelled while fetching the dataset")]
    Cancelled,
}

impl CacheError {
    /// Whether another attempt (maybe on another worker) can end differently: a download that
    /// failed or arrived damaged can; a dataset the coordinator no longer has cannot.
    pub fn is_retryable(&self) -> bool {
        match self {
            CacheError::Download { source, .. } => {
                source.status().is_none_or(|s| s.is_server_error())
            }
            CacheError::Mismatch { .. } | CacheError::Io { .. } => true,
            CacheError::Archive { .. } | CacheError::Cancelled => false,
        }
    }
}

/// How a dataset was made ready (for the job's log and the tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Found in the cache, digest checked.
    Cache,
    /// Downloaded; `replaced` when a damaged cached copy was there before.
    Downloaded { bytes: u64, replaced: bool },
}

/// The cache; one per worker process.
#[derive(Debug, Clone)]
pub struct DatasetCache {
    dir: PathBuf,
    max_bytes: u64,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl DatasetCache {
    pub fn new(dir: PathBuf, max_bytes: u64) -> DatasetCache {
        DatasetCache { dir, max_bytes }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn file(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// `<hex>.ok`: "size mtime_ns" of the file when its digest was last checked.
    fn stamp(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.ok", digest.hex()))
    }

    /// The file is as it was when its digest was last checked.
    fn unchanged(&self, digest: &Digest) -> bool {
        let now = file_stamp(&self.file(digest));
        let then = std::fs::read_to_string(self.stamp(digest)).ok();
        now.is_some() && now == then
    }

    /// Record a checked file (and that it was just used).
    fn mark_checked(&self, digest: &Digest) {
        if let Some(stamp) = file_stamp(&self.file(digest)) {
            let _ = std::fs::write(self.stamp(digest), stamp);
        }
    }

    fn unpacked(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.d", digest.hex()))
    }

    /// Make `digest` ready to train on and return the path a spec's `dataset.path` takes: the
    /// file, or for an IDX archive the folder it unpacks to. Blocking (file I/O, hashing); the
    /// download runs on `runtime`. `log` tells the job's log what happened.
    pub fn get(
        &self,
        runtime: &tokio::runtime::Handle,
        client: &Client,
        digest: &Digest,
        kind: DatasetKind,
        cancel: &CancelToken,
        log: &mut dyn FnMut(String),
    ) -> Result<(PathBuf, Source), CacheError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let file = self.file(digest);
        let mut replaced = false;
        if file.is_file() {
            let started = Instant::now();
            let verdict = if self.unchanged(digest) {
                Ok(digest.clone())
            } else {
                hash_file(&file)
            };
            match verdict {
                Ok(actual) if actual == *digest => {
                    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
                    self.mark_checked(digest);
                    log(format!(
                        "dataset {} ({}) from the cache, checked in {:.0} ms",
                        digest.short(),
                        fmt_bytes(size),
                        started.elapsed().as_secs_f64() * 1e3
                    ));
                    let path = self.ready(digest, kind)?;
                    return Ok((path, Source::Cache));
                }
                Ok(actual) => log(format!(
                    "cached dataset {} is damaged (its digest is now {}); downloading it again",
                    digest.short(),
                    actual.short()
                )),
                Err(e) => log(format!(
                    "cached dataset {} cannot be read ({e}); downloading it again",
                    digest.short()
                )),
            }
            replaced = true;
            self.forget(digest);
        }
        let started = Instant::now();
        let bytes = runtime.block_on(self.download(client, digest, cancel))?;
        let secs = started.elapsed().as_secs_f64();
        log(format!(
            "downloaded dataset {} ({}) in {:.1} s ({}/s)",
            digest.short(),
            fmt_bytes(bytes),
            secs,
            fmt_bytes((bytes as f64 / secs.max(1e-3)) as u64)
        ));
        self.mark_checked(digest);
        let path = self.ready(digest, kind)?;
        self.evict(digest);
        Ok((path, Source::Downloaded { bytes, replaced }))
    }

    /// Download into `.incoming/`, hashing as it arrives; rename into place if right.
    async fn download(
        &self,
        client: &Client,
        digest: &Digest,
        cancel: &CancelToken,
    ) -> Result<u64, CacheError> {
        use std::io::Write;
        let incoming = self.dir.join(".incoming");
        std::fs::create_dir_all(&incoming).map_err(io(&incoming))?;
        let tmp = incoming.join(format!("{}.{}.tmp", digest.hex(), std::process::id()));
        let result = async {
            let failed = |source| CacheError::Download {
                digest: digest.clone(),
                source,
            };
            let mut download = client
                .download_dataset(&digest.to_string())
                .await
                .map_err(failed)?;
            let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io(&tmp))?);
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = download.chunk().await.map_err(failed)? {
                if cancel.is_cancelled() {
                    return Err(CacheError::Cancelled);
                }
                hasher.update(&chunk);
                out.write_all(&chunk).map_err(io(&tmp))?;
                size += chunk.len() as u64;
            }
            out.flush().map_err(io(&tmp))?;
            let actual = Digest::from_bytes(&hasher.finalize().into());
            if actual != *digest {
                return Err(CacheError::Mismatch {
                    expected: digest.clone(),
                    actual,
                });
            }
            let file = self.file(digest);
            std::fs::rename(&tmp, &file).map_err(io(&file))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// The path to train on; an IDX archive is unpacked (once) into its folder.
    fn ready(&self, digest: &Digest, kind: DatasetKind) -> Result<PathBuf, CacheError> {
        let file = self.file(digest);
        if kind != DatasetKind::Idx {
            return Ok(file);
        }
        let dir = self.unpacked(digest);
        if dir.is_dir() {
            return Ok(dir);
        }
        let tmp = self
            .dir
            .join(format!(".{}.{}.d", digest.hex(), std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let unpack = || -> Result<(), String> {
            let reader = std::fs::File::open(&file).map_err(|e| e.to_string())?;
            let mut archive = tar::Archive::new(reader);
            for entry in archive.entries().map_err(|e| e.to_string())? {
                let mut entry = entry.map_err(|e| e.to_string())?;
                if !entry.header().entry_type().is_file() {
                    continue;
                }
                // `unpack_in` refuses paths that would leave the folder.
                if !entry.unpack_in(&tmp).map_err(|e| e.to_string())? {
                    return Err("an entry's path leaves the folder".into());
                }
            }
            Ok(())
        };
        if let Err(message) = unpack() {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(CacheError::Archive {
                digest: digest.clone(),
                message,
            });
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Ok(dir)
    }

    /// Remove a dataset from the cache.
    fn forget(&self, digest: &Digest) {
        let _ = std::fs::remove_file(self.stamp(digest));
        let _ = std::fs::remove_file(self.file(digest));
        let _ = std::fs::remove_dir_all(self.unpacked(digest));
    }

    /// Remove the least recently used datasets until the cache fits its limit; `keep` stays.
    fn evict(&self, keep: &Digest) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut cached: Vec<(SystemTime, u64, Digest)> = entries
            .flatten()
            .filter_map(|e| {
                let digest = Digest::parse(e.file_name().to_str()?).ok()?;
                let mut size = e.metadata().ok()?.len();
                if self.unpacked(&digest).is_dir() {
                    size = size.saturating_mul(2);
                }
                // Last use: the stamp's time (a file without one was never used whole).
                let used = std::fs::metadata(self.stamp(&digest))
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                Some((used, size, digest))
            })
            .collect();
        let mut total: u64 = cached.iter().map(|(_, size, _)| size).sum();
        cached.sort();
        for (_, size, digest) in cached {
            if total <= self.max_bytes {
                break;
            }
            if digest != *keep {
                tracing::info!(%digest, "dataset cache over its limit: removing the least recently used");
                self.forget(&digest);
                total = total.saturating_sub(size);
            }
        }
    }
}

/// "size mtime_ns" of a file, if it exists.
fn file_stamp(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let mtime = meta
        .modified()
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_nanos();
    Some(format!("{} {mtime}", meta.len()))
}

fn hash_file(path: &Path) -> std::io::Result<Digest> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Digest::from_bytes(&hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_removes_the_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DatasetCache::new(dir.path().to_path_buf(), 250);
        let digests: Vec<Digest> = (0..3u8).map(|i| Digest::from_bytes(&[i; 32])).collect();
        let now = SystemTime::now();
        for (i, d) in digests.iter().enumerate() {
            std::fs::write(cache.file(d), vec![0u8; 100]).unwrap();
            cache.mark_checked(d);
            let stamp = std::fs::File::options()
                .write(true)
                .open(cache.stamp(d))
                .unwrap();
            stamp
                .set_modified(now - std::time::Duration::from_secs(100 - i as u64 * 10))
                .unwrap();
        }
        // 300 bytes in a 250-byte cache: the oldest goes, unless it is the one to keep.
        cache.evict(&digests[0]);
        assert!(cache.file(&digests[0]).exists());
        assert!(!cache.file(&digests[1]).exists());
        assert!(!cache.stamp(&digests[1]).exists());
        assert!(cache.file(&digests[2]).exists());
    }

    #[test]
    fn a_changed_file_is_no_longer_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = DatasetCache::new(dir.path().to_path_buf(), u64::MAX);
        let d = Digest::from_bytes(&[7; 32]);
        std::fs::write(cache.file(&d), b"abc").unwrap();
        assert!(!cache.unchanged(&d), "never checked");
        cache.mark_checked(&d);
        assert!(cache.unchanged(&d));
        std::fs::write(cache.file(&d), b"abd").unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(cache.file(&d))
            .unwrap();
        file.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(!cache.unchanged(&d), "rewritten");
    }
}
