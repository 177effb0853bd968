//! Datasets kept by the coordinator: addressed by the SHA-256 of their bytes, named by people.
//!
//! A job's `dataset.path` is one of
//! - `kiln:NAME`: the newest version of a stored dataset; the coordinator pins it to a digest
//!   when the job is submitted, so the job always trains on the same bytes;
//! - `kiln:sha256:<64 hex>`: one version, pinned;
//! - anything else: a path on the worker, relative to its `--data-root` (as before).
//!
//! A dataset's bytes are one file: a CSV file, a text file, or — for an IDX folder (MNIST) — a
//! tar archive of the folder's IDX files (`kiln data push DIR` makes it). Workers fetch a
//! dataset by digest, check the digest and keep it in a cache.

use serde::{Deserialize, Serialize};

use crate::spec::DatasetSpec;

/// The scheme of stored datasets in `dataset.path`.
pub const SCHEME: &str = "kiln:";
const PINNED: &str = "kiln:sha256:";
const MAX_NAME_LEN: usize = 128;

/// What a valid dataset name looks like, for error messages.
pub const NAME_RULE: &str = "1 to 128 characters from letters, digits, '.', '_' and '-', \
     not starting with '.' or '-', and not `sha256`";

/// A SHA-256 digest as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// Parse 64 hex digits (either case; kept lowercase).
    pub fn parse(hex: &str) -> Result<Digest, String> {
        if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Digest(hex.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{hex}` is not a SHA-256 digest: expected 64 hex digits"
            ))
        }
    }

    /// From the 32 bytes of a finished hash.
    pub fn from_bytes(bytes: &[u8; 32]) -> Digest {
        let mut s = String::with_capacity(64);
        for b in bytes {
            s.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            s.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Digest(s)
    }

    pub fn hex(&self) -> &str {
        &self.0
    }

    /// The first 12 hex digits, for people.
    pub fn short(&self) -> &str {
        &self.0[..12]
    }

    /// `kiln:sha256:<hex>`, the pinned reference.
    pub fn reference(&self) -> String {
        format!("{PINNED}{}", self.0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

impl TryFrom<String> for Digest {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Digest::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

/// Check a dataset name (a path segment of the REST API, so no separators).
pub fn check_name(name: &str) -> Result<(), String> {
    // Like an artifact's name; not `-…` (it would read as a CLI flag) and not `sha256`.
    let ok = crate::artifact::is_plain_name(name, MAX_NAME_LEN)
        && !name.starts_with('-')
        && name != "sha256";
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid dataset name `{name}`: allowed are {NAME_RULE}"
        ))
    }
}

/// A name made from a file or folder name: characters outside the rule become `-`.
pub fn name_from_file(file_name: &str) -> String {
    let mut name: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(MAX_NAME_LEN)
        .collect();
    while name.starts_with(['.', '-']) {
        name.remove(0);
    }
    if name.is_empty() || name == "sha256" {
        name.insert_str(0, "data-");
    }
    name
}

/// What a `dataset.path` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatasetRef {
    /// `kiln:NAME`: the newest version of a stored dataset.
    Named(String),
    /// `kiln:sha256:<hex>`.
    Pinned(Digest),
    /// A path on the machine that trains.
    Local(String),
}

impl DatasetRef {
    /// Parse a `dataset.path`; an error says what is wrong with a `kiln:` reference.
    pub fn parse(path: &str) -> Result<DatasetRef, String> {
        if let Some(hex) = path.strip_prefix(PINNED) {
            return Digest::parse(hex).map(DatasetRef::Pinned);
        }
        match path.strip_prefix(SCHEME) {
            Some(name) => {
                check_name(name)?;
                Ok(DatasetRef::Named(name.to_string()))
            }
            None => Ok(DatasetRef::Local(path.to_string())),
        }
    }

    /// The reference of a spec's dataset (`None` for synthetic data).
    pub fn of(spec: &DatasetSpec) -> Option<Result<DatasetRef, String>> {
        spec.path().map(DatasetRef::parse)
    }
}

/// How a dataset's bytes are read: the `kind` of the `dataset` table that uses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatasetKind {
    /// A tar archive of an IDX folder (`train-images-idx3-ubyte[.gz]`, …).
    Idx,
    /// A CSV file with a header row.
    Csv,
    /// A UTF-8 text file.
    Text,
}

impl DatasetKind {
    pub const ALLOWED: &'static str = "idx, csv, text";

    pub fn as_str(self) -> &'static str {
        match self {
            DatasetKind::Idx => "idx",
            DatasetKind::Csv => "csv",
            DatasetKind::Text => "text",
        }
    }

    /// The kind a spec's `dataset.kind` reads (`None` for synthetic data).
    pub fn of(spec: &DatasetSpec) -> Option<DatasetKind> {
        match spec {
            DatasetSpec::Idx { .. } => Some(DatasetKind::Idx),
            DatasetSpec::Csv { .. } => Some(DatasetKind::Csv),
            DatasetSpec::Text { .. } => Some(DatasetKind::Text),
            DatasetSpec::Synthetic { .. } => None,
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "idx" => Ok(DatasetKind::Idx),
            "csv" => Ok(DatasetKind::Csv),
            "text" => Ok(DatasetKind::Text),
            other => Err(format!(
                "unknown dataset kind `{other}`; allowed: {}",
                DatasetKind::ALLOWED
            )),
        }
    }
}

/// A short look into a dataset, made by the coordinator when it is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DatasetPreview {
    /// The header and the first rows.
    Csv {
        columns: Vec<String>,
        rows: Vec<Vec<String>>,
    },
    /// The first characters.
    Text { head: String },
    /// Each IDX file of the folder with its shape (e.g. `[60000, 28, 28]`).
    Idx { files: Vec<IdxFile> },
}

/// One file of an IDX folder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdxFile {
    pub name: String,
    pub shape: Vec<u32>,
}

/// A stored dataset version as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetInfo {
    pub name: String,
    pub digest: Digest,
    pub kind: DatasetKind,
    /// Bytes of the stored file.
    pub size: u64,
    /// When this version got the name.
    pub created_ms: i64,
    /// 1 for a name's first version, counting up.
    pub version: u32,
    /// How many versions the name has (only in `GET /api/datasets`, the newest of each name).
    #[serde(default)]
    pub versions: u32,
    pub preview: DatasetPreview,
}

/// `POST /api/datasets/{name}/versions`: give an already-stored dataset a (new version of a)
/// name, without sending its bytes again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NameDataset {
    pub digest: Digest,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn references_parse() {
        assert_eq!(
            DatasetRef::parse("kiln:iris"),
            Ok(DatasetRef::Named("iris".into()))
        );
        assert_eq!(
            DatasetRef::parse(&format!("kiln:sha256:{}", HEX.to_uppercase())),
            Ok(DatasetRef::Pinned(Digest(HEX.into())))
        );
        assert_eq!(
            DatasetRef::parse("data/iris.csv"),
            Ok(DatasetRef::Local("data/iris.csv".into()))
        );
        for bad in [
            "kiln:",
            "kiln:a/b",
            "kiln:sha256:abc",
            "kiln:../x",
            "kiln:sha256",
        ] {
            let err = DatasetRef::parse(bad).expect_err(bad);
            assert!(
                err.contains("dataset name") || err.contains("SHA-256"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn digests_round_trip_and_print() {
        let d = Digest::parse(HEX).unwrap();
        assert_eq!(d.reference(), format!("kiln:sha256:{HEX}"));
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(d.short(), &HEX[..12]);
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>("\"xyz\"").is_err());
        let mut bytes = [0u8; 32];
        bytes[0] = 0xab;
        bytes[31] = 0x01;
        let d = Digest::from_bytes(&bytes);
        assert!(d.hex().starts_with("ab00") && d.hex().ends_with("0001"));
    }

    #[test]
    fn names_from_files_follow_the_rule() {
        for (file, name) in [
            ("iris.csv", "iris.csv"),
            ("my data (1).csv", "my-data--1-.csv"),
            (".hidden", "hidden"),
            ("sha256", "data-sha256"),
            ("…", "-"),
        ] {
            let made = name_from_file(file);
            if name != "-" {
                assert_eq!(made, name);
            }
            check_name(&made).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
}

/// What a model needs to know about its data: kept with a run's final model as `data.json`, so
/// the model can be run on new inputs (a language model's vocabulary, a CSV's feature columns,
/// classes and standardisation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataInfo {
    /// One example's input shape.
    pub input_shape: Vec<usize>,
    /// Number of classes (classification), 1 (regression) or the vocabulary size (text).
    pub outputs: usize,
    pub task: Task,
    /// Class names (CSV classification) or the characters of the vocabulary (text).
    #[serde(default)]
    pub labels: Vec<String>,
    /// CSV: the feature columns, in input order (the label column left out).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    /// CSV: how each feature was standardised, so a new row can be prepared the same way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standardise: Option<Standardisation>,
}

/// Per-feature mean and standard deviation of the training file: a raw value `x` becomes
/// `(x - mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standardisation {
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
}

impl Standardisation {
    /// A raw row as the model takes it; `None` when its width is not the model's.
    pub fn apply(&self, row: &[f64]) -> Option<Vec<f32>> {
        (row.len() == self.mean.len()).then(|| {
            row.iter()
                .zip(self.mean.iter().zip(&self.std))
                .map(|(x, (m, s))| ((x - m) / s) as f32)
                .collect()
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classification,
    Regression,
    Language,
}
