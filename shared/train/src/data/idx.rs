//! IDX files (the MNIST format): big-endian magic `0x0000 TT DD` (type, number of dims), then
//! `DD` big-endian u32 sizes, then the data. Gzip-compressed files are recognised by their
//! magic bytes.

use std::io::Read;

use super::{DataError, DataSource, Dataset, Inputs, Targets};

/// A parsed IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Largest file we accept after decompression (MNIST train images are 47 MB).
const MAX_BYTES: u64 = 1 << 31;

fn gunzip_if_needed(path: &str, bytes: Vec<u8>) -> Result<Vec<u8>, DataError> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .take(MAX_BYTES)
            .read_to_end(&mut out)
            .map_err(|e| DataError::Idx {
                path: path.to_string(),
                message: format!("gzip data is corrupt or truncated: {e}"),
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parse IDX bytes (raw or gzip). Only unsigned-byte data (type 0x08) is supported.
pub fn parse_idx(path: &str, bytes: Vec<u8>) -> Result<IdxArray, DataError> {
    let bytes = gunzip_if_needed(path, bytes)?;
    let err = |message: String| DataError::Idx {
        path: path.to_string(),
        message,
    };
    if bytes.len() < 4 {
        return Err(err(format!(
            "file is {} bytes, shorter than the 4-byte header",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(format!(
            "wrong magic number {:02x}{:02x}{:02x}{:02x}: expected 0000 08 NN (unsigned bytes, NN dimensions)",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(err(format!(
            "element type 0x{:02x} is not supported; only 0x08 (unsigned byte) is",
            bytes[2]
        )));
    }
    let ndims = bytes[3] as usize;
    if !(1..=4).contains(&ndims) {
        return Err(err(format!("{ndims} dimensions; allowed: 1 to 4")));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(err(format!(
            "truncated header: {} bytes, need {header} for {ndims} dimensions",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            let b = &bytes[4 + 4 * i..8 + 4 * i];
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| (n as u64) <= MAX_BYTES)
        .ok_or_else(|| err(format!("dimensions {dims:?} are too large")))?;
    let actual = bytes.len() - header;
    if actual != expected {
        return Err(err(format!(
            "dimensions {dims:?} need {expected} data bytes, the file has {actual}{}",
            if actual < expected {
                " (truncated)"
            } else {
                ""
            }
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

fn read_idx(source: &dyn DataSource, dir: &str, stem: &str) -> Result<Option<IdxArray>, DataError> {
    let base = format!("{}/{stem}", dir.trim_end_matches('/'));
    for candidate in [format!("{base}.gz"), base.clone()] {
        if let Some(bytes) = source.read(&candidate)? {
            return parse_idx(&candidate, bytes).map(Some);
        }
    }
    Ok(None)
}

fn pair(source: &dyn DataSource, dir: &str, prefix: &str) -> Result<Option<Dataset>, DataError> {
    let images_stem = format!("{prefix}-images-idx3-ubyte");
    let labels_stem = format!("{prefix}-labels-idx1-ubyte");
    let images = read_idx(source, dir, &images_stem)?;
    let labels = read_idx(source, dir, &labels_stem)?;
    let (images, labels) = match (images, labels) {
        (None, None) => return Ok(None),
        (Some(_), None) | (None, Some(_)) => {
            let missing = if labels_is_missing(source, dir, &labels_stem)? {
                &labels_stem
            } else {
                &images_stem
            };
            return Err(DataError::NotFound {
                path: format!("{dir}/{missing}"),
                tried: format!("{missing}.gz, {missing}"),
            });
        }
        (Some(i), Some(l)) => (i, l),
    };
    let path = format!("{dir}/{images_stem}");
    if images.dims.len() != 3 {
        return Err(DataError::Idx {
            path,
            message: format!(
                "images must have 3 dimensions [count, rows, cols], got {:?}",
                images.dims
            ),
        });
    }
    if labels.dims.len() != 1 || labels.dims[0] != images.dims[0] {
        return Err(DataError::Idx {
            path: format!("{dir}/{labels_stem}"),
            message: format!(
                "{} labels for {} images",
                labels.dims.first().copied().unwrap_or(0),
                images.dims[0]
            ),
        });
    }
    let values = images.data.iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Some(Dataset {
        inputs: Inputs::Dense {
            values,
            shape: vec![1, images.dims[1], images.dims[2]],
        },
        targets: Targets::Class(labels.data.iter().map(|&l| l as u32).collect()),
    }))
}

fn labels_is_missing(source: &dyn DataSource, dir: &str, stem: &str) -> Result<bool, DataError> {
    Ok(read_idx(source, dir, stem)?.is_none())
}

/// Load `train-*` (required) and `t10k-*` (optional) from a directory.
pub(super) fn load_dir(
    source: &dyn DataSource,
    dir: &str,
) -> Result<(Dataset, Option<Dataset>), DataError> {
    let train = pair(source, dir, "train")?.ok_or_else(|| DataError::NotFound {
        path: format!("{dir}/train-images-idx3-ubyte"),
        tried: "train-images-idx3-ubyte.gz, train-images-idx3-ubyte (and the labels beside it)"
            .to_string(),
    })?;
    let test = pair(source, dir, "t10k")?;
    Ok((train, test))
}

pub(super) fn max_class(data: &Dataset) -> usize {
    match &data.targets {
        Targets::Class(v) => v.iter().copied().max().unwrap_or(0) as usize,
        _ => 0,
    }
}
