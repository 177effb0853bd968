//! Dataset files: `data_dir/datasets/<sha256 hex>`, content-addressed. An upload streams into
//! `data_dir/datasets/.incoming/` while it is hashed, is checked against the digest the client
//! announced and read for a preview, and only then is renamed into place and recorded. A
//! reader never sees a partial or unchecked file. The wire types and name rules are
//! `kiln_proto::dataset`.

use std::io::Read;
use std::path::{Path, PathBuf};

use futures_util::Stream;
use sha2::{Digest as _, Sha256};
use tokio::sync::Mutex;

use kiln_proto::dataset::{DatasetKind, DatasetPreview, Digest};

use crate::artifact::{WriteError, write_file};

pub mod preview;
use preview::PREVIEW_BYTES;

/// Why an upload was not stored.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("the dataset is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the upload was interrupted: {0}")]
    Body(String),
    #[error(
        "the uploaded bytes have the digest {actual}, not the {expected} the request announced \
         (corrupted on the way?); nothing was stored"
    )]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("not a valid {kind} dataset: {message}")]
    Content { kind: &'static str, message: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// An upload that arrived complete and matches its digest, not yet in place.
#[derive(Debug)]
pub struct Received {
    tmp: PathBuf,
    pub size: u64,
}

/// The dataset folder, `data_dir/datasets`.
#[derive(Debug)]
pub struct DatasetDir {
    root: PathBuf,
    /// Held while a file is put in place and recorded, or deleted and unrecorded, so a delete
    /// never removes a file that an upload just recorded again.
    pub lock: Mutex<()>,
}

impl DatasetDir {
    pub fn new(root: PathBuf) -> DatasetDir {
        DatasetDir {
            root,
            lock: Mutex::new(()),
        }
    }

    /// Where a stored dataset's bytes are.
    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join(digest.hex())
    }

    fn incoming(&self) -> PathBuf {
        self.root.join(".incoming")
    }

    /// Remove what interrupted uploads left behind (at start).
    pub async fn clean_incoming(&self) {
        let _ = tokio::fs::remove_dir_all(self.incoming()).await;
    }

    /// Stream `body` to a temporary file (at most `limit` bytes), hashing it; the digest must
    /// be `expected`. Nothing is left behind on error.
    pub async fn receive<S, B, E>(
        &self,
        body: S,
        expected: &Digest,
        limit: u64,
    ) -> Result<Received, UploadError>
    where
        S: Stream<Item = Result<B, E>>,
        B: AsRef<[u8]>,
        E: std::fmt::Display,
    {
        let dir = self.incoming();
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| UploadError::Io {
                path: dir.clone(),
                source,
            })?;
        let tmp = dir.join(format!("{:016x}.tmp", rand::random::<u64>()));
        match write_hashed(&tmp, body, limit).await {
            Ok((size, actual)) if actual == *expected => Ok(Received { tmp, size }),
            Ok((_, actual)) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(UploadError::DigestMismatch {
                    expected: expected.clone(),
                    actual,
                })
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Read a received upload for its preview; a file that is not of `kind` is refused (and
    /// removed).
    pub async fn preview(
        &self,
        received: &Received,
        kind: DatasetKind,
    ) -> Result<DatasetPreview, UploadError> {
        let path = received.tmp.clone();
        let result = tokio::task::spawn_blocking(move || preview(&path, kind))
            .await
            .unwrap_or_else(|e| Err(format!("the preview task failed: {e}")));
        result.map_err(|message| {
            let _ = std::fs::remove_file(&received.tmp);
            UploadError::Content {
                kind: kind.as_str(),
                message,
            }
        })
    }

    /// Move a received upload into place (the caller holds [`DatasetDir::lock`]).
    pub async fn commit(&self, received: Received, digest: &Digest) -> Result<(), UploadError> {
        let dest = self.path(digest);
        if let Err(source) = tokio::fs::rename(&received.tmp, &dest).await {
            let _ = tokio::fs::remove_file(&received.tmp).await;
            return Err(UploadError::Io { path: dest, source });
        }
        Ok(())
    }

    /// Drop a received upload that is not needed (already stored).
    pub async fn discard(&self, received: Received) {
        let _ = tokio::fs::remove_file(&received.tmp).await;
    }

    /// Remove a stored file (the caller holds [`DatasetDir::lock`]).
    pub async fn remove(&self, digest: &Digest) {
        let path = self.path(digest);
        if let Err(e) = tokio::fs::remove_file(&path).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove a deleted dataset's file");
        }
    }
}

async fn write_hashed<S, B, E>(
    path: &Path,
    body: S,
    limit: u64,
) -> Result<(u64, Digest), UploadError>
where
    S: Stream<Item = Result<B, E>>,
    B: AsRef<[u8]>,
    E: std::fmt::Display,
{
    let mut hasher = Sha256::new();
    let size = write_file(path, body, limit, |bytes| hasher.update(bytes))
        .await
        .map_err(|e| match e {
            WriteError::TooLarge { limit } => UploadError::TooLarge { limit },
            WriteError::Body(message) => UploadError::Body(message),
            WriteError::Io { path, source } => UploadError::Io { path, source },
        })?;
    Ok((size, Digest::from_bytes(&hasher.finalize().into())))
}

/// The preview of a file of `kind`, or why it is not one.
pub fn preview(path: &Path, kind: DatasetKind) -> Result<DatasetPreview, String> {
    match kind {
        DatasetKind::Csv => preview::csv(&head(path)?),
        DatasetKind::Text => preview::text(&head(path)?),
        DatasetKind::Idx => {
            preview::idx(std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?)
        }
    }
}

/// The first [`PREVIEW_BYTES`] of a file.
fn head(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let mut bytes = Vec::new();
    file.take(PREVIEW_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_previews_show_the_header_and_first_rows() {
        let mut csv = String::from("a,b,label\n");
        for i in 0..20 {
            csv.push_str(&format!("{i},{},{}\n", i * 2, i % 3));
        }
        let DatasetPreview::Csv { columns, rows } = preview::csv(csv.as_bytes()).unwrap() else {
            panic!("not a CSV preview");
        };
        assert_eq!(columns, ["a", "b", "label"]);
        assert_eq!(rows.len(), preview::PREVIEW_ROWS);
        assert_eq!(rows[1], ["1", "2", "1"]);
        let err = preview::csv(b"  \n").unwrap_err();
        assert!(err.contains("the file is empty"), "{err}");
        let err = preview::csv(b"a,b\n\xff\xfe,1\n").unwrap_err();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    #[test]
    fn text_previews_forgive_a_cut_character() {
        let text = "héllo wörld ".repeat(100);
        let bytes = &text.as_bytes()[..text.len() - 1];
        let DatasetPreview::Text { head } = preview::text(&bytes[..2]).unwrap() else {
            panic!("not a text preview");
        };
        assert_eq!(head, "h");
        let DatasetPreview::Text { head } = preview::text(bytes).unwrap() else {
            panic!("not a text preview");
        };
        assert_eq!(head.chars().count(), preview::PREVIEW_CHARS);
    }

    fn tar_of(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, bytes.as_slice())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn idx_previews_read_every_files_shape() {
        let dir = tempfile::tempdir().unwrap();
        let images = [
            &[0u8, 0, 8, 3][..],
            &2u32.to_be_bytes(),
            &28u32.to_be_bytes(),
            &28u32.to_be_bytes(),
            &[0; 2 * 28 * 28],
        ]
        .concat();
        let labels = [&[0u8, 0, 8, 1][..], &2u32.to_be_bytes(), &[3, 4]].concat();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &labels).unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(
            &path,
            tar_of(&[
                ("train-images-idx3-ubyte", images),
                ("train-labels-idx1-ubyte.gz", gz.finish().unwrap()),
            ]),
        )
        .unwrap();
        let DatasetPreview::Idx { files } = preview(&path, DatasetKind::Idx).unwrap() else {
            panic!("not an IDX preview");
        };
        assert_eq!(files[0].shape, [2, 28, 28]);
        assert_eq!(files[1].name, "train-labels-idx1-ubyte.gz");
        assert_eq!(files[1].shape, [2]);

        std::fs::write(&path, tar_of(&[("x", b"hello world".to_vec())])).unwrap();
        let err = preview(&path, DatasetKind::Idx).unwrap_err();
        assert!(err.contains("entry `x`: not an IDX file"), "{err}");
        std::fs::write(&path, b"a,b\n1,2\n").unwrap();
        assert!(preview(&path, DatasetKind::Idx).is_err());
    }
}
