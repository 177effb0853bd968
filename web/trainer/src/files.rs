//! What the page's files become for the training core's `MemorySource`.

use std::io::Read;

/// Why the files a page sent cannot be trained on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FilesError {
    #[error("{name}: not a readable tar archive of IDX files: {message}")]
    Tar { name: String, message: String },
    #[error(
        "the dataset is {size} bytes; a browser tab trains on at most {max} bytes (train it on a worker)"
    )]
    TooLarge { size: u64, max: u64 },
}

/// The files of a run from the parts the page sent. A `NAME.tar` — a stored IDX dataset, as
/// the coordinator keeps it — becomes the files inside it under `NAME/` (so `dataset.path =
/// "NAME"` finds `NAME/train-images-idx3-ubyte.gz`); any other file stays as it is.
pub fn unpack(files: Vec<(String, Vec<u8>)>) -> Result<Vec<(String, Vec<u8>)>, FilesError> {
    let size: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    let max = kiln_proto::trainer::MAX_DATASET_BYTES;
    if size > max {
        return Err(FilesError::TooLarge { size, max });
    }
    let mut out = Vec::new();
    for (name, bytes) in files {
        let Some(stem) = name.strip_suffix(".tar") else {
            out.push((name, bytes));
            continue;
        };
        let tar_error = |message: String| FilesError::Tar {
            name: name.clone(),
            message,
        };
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries = archive.entries().map_err(|e| tar_error(e.to_string()))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| tar_error(e.to_string()))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let path = entry.path().map_err(|e| tar_error(e.to_string()))?;
            // Only the file's name: an archive cannot place files elsewhere.
            let Some(file) = path
                .file_name()
                .and_then(|f| f.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let mut content = Vec::new();
            entry
                .read_to_end(&mut content)
                .map_err(|e| tar_error(e.to_string()))?;
            out.push((format!("{stem}/{file}"), content));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, name, *bytes)
                .expect("append");
        }
        builder.into_inner().expect("tar")
    }

    #[test]
    fn a_tar_becomes_its_files_under_its_stem_and_other_files_stay() {
        let tar = tar_of(&[
            ("train-images-idx3-ubyte.gz", b"images"),
            ("sub/train-labels-idx1-ubyte.gz", b"labels"),
        ]);
        let files = unpack(vec![
            ("data.tar".into(), tar),
            ("notes.csv".into(), b"a,b\n".to_vec()),
        ])
        .expect("unpacks");
        assert_eq!(
            files,
            vec![
                ("data/train-images-idx3-ubyte.gz".into(), b"images".to_vec()),
                ("data/train-labels-idx1-ubyte.gz".into(), b"labels".to_vec()),
                ("notes.csv".into(), b"a,b\n".to_vec()),
            ]
        );
    }

    #[test]
    fn a_broken_tar_and_too_many_bytes_are_named() {
        let err = unpack(vec![("data.tar".into(), vec![7; 700])]).expect_err("not a tar");
        assert!(
            matches!(&err, FilesError::Tar { name, .. } if name == "data.tar"),
            "{err}"
        );
        let max = kiln_proto::trainer::MAX_DATASET_BYTES;
        let err = unpack(vec![("big.csv".into(), vec![0; max as usize + 1])]).expect_err("too big");
        assert_eq!(err, FilesError::TooLarge { size: max + 1, max });
        assert!(err.to_string().contains("train it on a worker"));
    }
}
