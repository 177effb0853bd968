//! The pure parts of the datasets pages, the job page's dataset line and the new-job form's
//! dataset picker: an upload's defaults and URL, hashing a file slice by slice, percentages,
//! and how a job's `dataset.path` reads. Tested natively; the app (wasm32) drives them.

use kiln_proto::dataset::{DatasetInfo, DatasetKind, DatasetRef, Digest, SCHEME, check_name};
use sha2::{Digest as _, Sha256};

use crate::form::FormValues;

/// How much of a file is read (and held) at a time while hashing it in the browser.
pub const HASH_SLICE: u64 = 4 << 20;

/// What the browser can upload: a single file. IDX folders go through the CLI.
pub const UPLOAD_KINDS: [DatasetKind; 2] = [DatasetKind::Csv, DatasetKind::Text];

/// The kind a file most likely is: `csv` for `*.csv` (any case), otherwise `text`.
pub fn default_kind(file_name: &str) -> DatasetKind {
    let csv = file_name
        .rsplit_once('.')
        .is_some_and(|(_, ext)| ext.eq_ignore_ascii_case("csv"));
    if csv {
        DatasetKind::Csv
    } else {
        DatasetKind::Text
    }
}

/// The `PUT` that uploads a file as the newest version of `name`; the name is checked first
/// (a valid name needs no escaping in a path).
pub fn upload_url(name: &str, kind: DatasetKind, digest: &Digest) -> Result<String, String> {
    check_name(name)?;
    Ok(format!(
        "/api/datasets/{name}?kind={}&sha256={}",
        kind.as_str(),
        digest.hex()
    ))
}

/// The `[start, end)` byte ranges a file of `size` bytes is read in, `slice` bytes at a time.
pub fn slices(size: u64, slice: u64) -> impl Iterator<Item = (u64, u64)> {
    let slice = slice.max(1);
    (0..size.div_ceil(slice)).map(move |i| (i * slice, ((i + 1) * slice).min(size)))
}

/// SHA-256 fed slice by slice: memory stays at one slice, whatever the file's size.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    bytes: u64,
}

impl Hasher {
    pub fn update(&mut self, slice: &[u8]) {
        self.sha.update(slice);
        self.bytes += slice.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn finish(self) -> Digest {
        Digest::from_bytes(&self.sha.finalize().into())
    }
}

/// `done` of `total` as a whole percentage, 0 to 100 (an empty total is done).
pub fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    (done.min(total) as f64 * 100.0 / total as f64).floor() as u8
}

/// What an upload's success status means for people: 201 stored, 200 the bytes were there.
pub fn upload_outcome(status: u16, info: &DatasetInfo) -> String {
    let what = format!("`{}` version {} ({})", info.name, info.version, info.digest);
    if status == 200 {
        format!("{what}: already stored, nothing new uploaded")
    } else {
        format!("{what}: uploaded")
    }
}

/// An IDX file's shape for people: `[60000, 28, 28]` → "60000 × 28 × 28".
pub fn shape(dims: &[u32]) -> String {
    if dims.is_empty() {
        return "scalar".into();
    }
    dims.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(" × ")
}

/// `kiln:NAME`, how a spec refers to a stored dataset's newest version.
pub fn named_reference(name: &str) -> String {
    format!("{SCHEME}{name}")
}

/// How the job page shows the dataset a job trained on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobDataset {
    /// A stored dataset, pinned by the coordinator.
    Stored {
        /// "kiln:NAME · sha256:<short>" (or "kiln:sha256:<short>…" when no name has it now).
        label: String,
        /// The dataset page of exactly this version.
        href: String,
        /// The full pinned reference, `kiln:sha256:<hex>`.
        reference: String,
    },
    /// A path on the worker.
    Local(String),
}

/// The dataset line of a job: `path` is its `dataset.path` (`None`: synthetic data, no line),
/// `name` the name its stored dataset goes by.
pub fn job_dataset(path: Option<&str>, name: Option<&str>) -> Option<JobDataset> {
    let path = path?;
    Some(match DatasetRef::parse(path) {
        Ok(DatasetRef::Pinned(digest)) => JobDataset::Stored {
            label: match name {
                Some(name) => format!("{} · sha256:{}", named_reference(name), digest.short()),
                None => format!("{SCHEME}sha256:{}…", digest.short()),
            },
            href: format!("/datasets/sha256:{}", digest.hex()),
            reference: digest.reference(),
        },
        // A spec as submitted (the coordinator pins `kiln:NAME`) or one it could not read.
        Ok(DatasetRef::Named(_)) | Ok(DatasetRef::Local(_)) | Err(_) => {
            JobDataset::Local(path.to_string())
        }
    })
}

/// Choose a stored dataset in the new-job form: its kind, and `kiln:NAME` as the path.
pub fn pick(values: &mut FormValues, info: &DatasetInfo) {
    values.insert("dataset.kind".into(), info.kind.as_str().into());
    values.insert("dataset.path".into(), named_reference(&info.name));
}

/// The stored dataset the form's `dataset.path` names, if it is one of `list` (the picker
/// shows it chosen; a path typed by hand that names none shows "none").
pub fn picked<'a>(values: &FormValues, list: &'a [DatasetInfo]) -> Option<&'a DatasetInfo> {
    let path = values.get("dataset.path")?;
    let name = path.strip_prefix(SCHEME)?;
    list.iter().find(|d| d.name == name)
}

#[cfg(test)]
mod tests {
    use kiln_proto::dataset::DatasetPreview;

    use super::*;

    fn info(name: &str, kind: DatasetKind) -> DatasetInfo {
        DatasetInfo {
            name: name.into(),
            digest: Digest::parse(&"ab".repeat(32)).unwrap(),
            kind,
            size: 10,
            created_ms: 0,
            version: 2,
            versions: 2,
            preview: DatasetPreview::Text { head: "hi".into() },
        }
    }

    #[test]
    fn csv_files_default_to_csv_and_the_rest_to_text() {
        assert_eq!(default_kind("iris.csv"), DatasetKind::Csv);
        assert_eq!(default_kind("IRIS.CSV"), DatasetKind::Csv);
        assert_eq!(default_kind("tiny.txt"), DatasetKind::Text);
        assert_eq!(default_kind("csv"), DatasetKind::Text);
        assert_eq!(default_kind("notes.csv.gz"), DatasetKind::Text);
    }

    #[test]
    fn the_upload_url_carries_kind_and_digest_and_refuses_a_bad_name() {
        let d = Digest::parse(&"0f".repeat(32)).unwrap();
        assert_eq!(
            upload_url("iris.csv", DatasetKind::Csv, &d).unwrap(),
            format!("/api/datasets/iris.csv?kind=csv&sha256={}", "0f".repeat(32))
        );
        let err = upload_url("my data", DatasetKind::Text, &d).unwrap_err();
        assert!(err.contains("`my data`"), "{err}");
        assert!(upload_url("", DatasetKind::Text, &d).is_err());
    }

    #[test]
    fn slices_cover_the_file_once() {
        assert_eq!(slices(0, 4).count(), 0);
        assert_eq!(slices(4, 4).collect::<Vec<_>>(), [(0, 4)]);
        assert_eq!(slices(10, 4).collect::<Vec<_>>(), [(0, 4), (4, 8), (8, 10)]);
        assert_eq!(slices(3, 0).count(), 3, "a zero slice is one byte");
    }

    #[test]
    fn hashing_in_slices_is_the_sha256_of_the_whole() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = Hasher::default();
        for (a, b) in slices(data.len() as u64, 999) {
            h.update(&data[a as usize..b as usize]);
        }
        assert_eq!(h.bytes(), 10_000);
        let whole = Digest::from_bytes(&Sha256::digest(&data).into());
        assert_eq!(h.finish(), whole);
        // The known vector for "abc".
        let mut h = Hasher::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(
            h.finish().hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn percentages_are_whole_and_bounded() {
        assert_eq!(percent(0, 200), 0);
        assert_eq!(percent(199, 200), 99);
        assert_eq!(percent(200, 200), 100);
        assert_eq!(percent(300, 200), 100);
        assert_eq!(percent(0, 0), 100);
    }

    #[test]
    fn shapes_read_as_products() {
        assert_eq!(shape(&[60000, 28, 28]), "60000 × 28 × 28");
        assert_eq!(shape(&[10]), "10");
        assert_eq!(shape(&[]), "scalar");
    }

    #[test]
    fn an_upload_says_whether_the_bytes_were_new() {
        let i = info("iris", DatasetKind::Csv);
        assert!(upload_outcome(201, &i).ends_with("uploaded"));
        assert!(upload_outcome(200, &i).contains("already stored"));
        assert!(upload_outcome(200, &i).contains("`iris` version 2"));
    }

    #[test]
    fn a_job_shows_its_stored_dataset_by_name_and_digest_or_its_worker_path() {
        let hex = "ab".repeat(32);
        let path = format!("kiln:sha256:{hex}");
        assert_eq!(
            job_dataset(Some(&path), Some("iris")),
            Some(JobDataset::Stored {
                label: "kiln:iris · sha256:abababababab".into(),
                href: format!("/datasets/sha256:{hex}"),
                reference: path.clone(),
            })
        );
        let Some(JobDataset::Stored { label, .. }) = job_dataset(Some(&path), None) else {
            panic!("a pinned path is a stored dataset");
        };
        assert_eq!(label, "kiln:sha256:abababababab…");
        assert_eq!(
            job_dataset(Some("data/mnist"), None),
            Some(JobDataset::Local("data/mnist".into()))
        );
        assert_eq!(job_dataset(None, None), None);
    }

    #[test]
    fn picking_a_stored_dataset_sets_kind_and_path_and_is_shown_picked() {
        let list = [
            info("iris", DatasetKind::Csv),
            info("poems", DatasetKind::Text),
        ];
        let mut v = FormValues::new();
        v.insert("dataset.kind".into(), "idx".into());
        v.insert("dataset.path".into(), "data/mnist".into());
        assert_eq!(picked(&v, &list), None);
        pick(&mut v, &list[1]);
        assert_eq!(v["dataset.kind"], "text");
        assert_eq!(v["dataset.path"], "kiln:poems");
        assert_eq!(picked(&v, &list).map(|d| d.name.as_str()), Some("poems"));
        // Edited by hand to a name not in the list: nothing is shown picked.
        v.insert("dataset.path".into(), "kiln:other".into());
        assert_eq!(picked(&v, &list), None);
    }
}
