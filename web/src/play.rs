//! The playground's pure parts (tested natively): presets that train in a tab on the data
//! the coordinator serves, and what a run's data is as the in-browser trainer sees it.

use kiln_proto::JobSpec;
use kiln_proto::dataset::{DatasetKind, DatasetRef};
use kiln_proto::spec::DatasetSpec;
use kiln_proto::trainer::MAX_DATASET_BYTES;

use crate::form::PRESETS;

/// The committed MNIST subset, stored by `kiln up` under this name.
pub const MNIST_DATASET: &str = "mnist-subset";
/// The committed text corpus (`data/text/kiln-stories.txt`), stored by `kiln up`.
pub const TEXT_DATASET: &str = "kiln-stories";

/// The presets a tab trains: id and label (specs from `form::PRESETS`).
pub const PLAY_PRESETS: &[(&str, &str)] = &[
    ("mnist-mlp", "MNIST MLP (W1)"),
    ("mnist-cnn", "MNIST CNN (W2)"),
    ("charlm", "Character LM"),
    ("synthetic", "Synthetic blobs"),
];

/// Fields of the New-job form that mean nothing in a tab (the page has its own device
/// choice; there is no queue).
pub const HIDDEN_FIELDS: &[&str] = &["device", "priority"];

/// A preset as the playground starts it: data from the coordinator's stored datasets (the
/// committed subsets), no periodic checkpoints (the trainer keeps one at the end).
pub fn preset_spec(id: &str) -> Option<JobSpec> {
    let (_, _, toml) = PRESETS.iter().find(|(p, _, _)| *p == id)?;
    let mut spec = JobSpec::from_toml_str(toml).ok()?;
    match &spec.dataset {
        DatasetSpec::Idx { .. } => spec.dataset.set_path(format!("kiln:{MNIST_DATASET}")),
        DatasetSpec::Text { .. } => spec.dataset.set_path(format!("kiln:{TEXT_DATASET}")),
        DatasetSpec::Csv { .. } | DatasetSpec::Synthetic { .. } => {}
    }
    spec.training.checkpoint_every = None;
    Some(spec)
}

/// Where a tab's run gets its data.
#[derive(Debug, Clone, PartialEq)]
pub enum DataPlan {
    /// Synthetic: nothing to fetch.
    None,
    /// A stored dataset: fetch `url` (with the token) and hand the bytes over as `file`.
    Stored { url: String, file: String },
    /// The file the user dropped, handed over under its own name.
    Dropped { file: String },
}

/// The spec as the trainer sees it (its `dataset.path` renamed to the file the page hands
/// over) and where the bytes come from. `dropped`: the name of the file the user chose, if
/// any; it is used when `dataset.path` names it.
pub fn plan(spec: &JobSpec, dropped: Option<&str>) -> Result<(JobSpec, DataPlan), String> {
    let mut spec = spec.clone();
    let Some(reference) = DatasetRef::of(&spec.dataset) else {
        return Ok((spec, DataPlan::None));
    };
    let reference = reference.map_err(|e| format!("dataset.path: {e}"))?;
    let kind = DatasetKind::of(&spec.dataset).unwrap_or(DatasetKind::Text);
    match reference {
        DatasetRef::Named(name) => Ok(stored(&mut spec, &name, kind)),
        DatasetRef::Pinned(digest) => {
            Ok(stored(&mut spec, &format!("sha256:{}", digest.hex()), kind))
        }
        DatasetRef::Local(path) if Some(path.as_str()) == dropped => {
            Ok((spec, DataPlan::Dropped { file: path }))
        }
        DatasetRef::Local(path) => Err(format!(
            "dataset.path {path:?} is a path on a worker, which a tab cannot read: choose a \
             stored dataset or a file of your own"
        )),
    }
}

fn stored(spec: &mut JobSpec, name: &str, kind: DatasetKind) -> (JobSpec, DataPlan) {
    let (file, path) = kiln_proto::trainer::stored_layout(kind);
    spec.dataset.set_path(path.to_string());
    let url = format!("/api/datasets/{name}/content");
    (
        spec.clone(),
        DataPlan::Stored {
            url,
            file: file.to_string(),
        },
    )
}

/// A file the user chose, checked before it is read: the spec's dataset kind it suggests
/// (`csv` for `*.csv`, else `text`), or why the tab cannot take it.
pub fn check_file(name: &str, size: u64) -> Result<DatasetKind, String> {
    if size > MAX_DATASET_BYTES {
        return Err(format!(
            "{name} is {size} bytes; a tab trains on at most {MAX_DATASET_BYTES} bytes \
             ({} MiB): upload it on Datasets and train it on a worker",
            MAX_DATASET_BYTES / (1024 * 1024)
        ));
    }
    Ok(if name.to_ascii_lowercase().ends_with(".csv") {
        DatasetKind::Csv
    } else {
        DatasetKind::Text
    })
}

/// Bytes a model of `parameters` takes to train with Adam (weights, gradients, two moments,
/// in f32), and whether a tab takes it.
pub fn training_bytes(parameters: u64) -> u64 {
    parameters.saturating_mul(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_train_on_the_stored_committed_data() {
        for (id, _) in PLAY_PRESETS {
            let spec = preset_spec(id).unwrap_or_else(|| panic!("preset {id}"));
            assert!(spec.validate().is_ok(), "{id}");
            assert_eq!(spec.training.checkpoint_every, None);
            let (trainer_spec, data) = plan(&spec, None).expect("plans");
            match (id, data) {
                (&"mnist-mlp" | &"mnist-cnn", DataPlan::Stored { url, file }) => {
                    assert_eq!(url, "/api/datasets/mnist-subset/content");
                    assert_eq!(file, "data.tar");
                    assert_eq!(trainer_spec.dataset.path(), Some("data"));
                }
                (&"charlm", DataPlan::Stored { url, file }) => {
                    assert_eq!(url, "/api/datasets/kiln-stories/content");
                    assert_eq!(file, "data.txt");
                    assert_eq!(trainer_spec.dataset.path(), Some("data.txt"));
                }
                (&"synthetic", DataPlan::None) => {}
                (id, other) => panic!("{id}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_worker_path_needs_a_dropped_file_of_that_name() {
        let mut spec = preset_spec("mnist-mlp").expect("preset");
        spec.dataset = DatasetSpec::Csv {
            path: "iris.csv".into(),
            label_column: "species".into(),
            task: Default::default(),
            validation_fraction: 0.2,
        };
        let err = plan(&spec, None).expect_err("no file");
        assert!(err.contains("\"iris.csv\" is a path on a worker"), "{err}");
        let (s, data) = plan(&spec, Some("iris.csv")).expect("dropped");
        assert_eq!(
            data,
            DataPlan::Dropped {
                file: "iris.csv".into()
            }
        );
        assert_eq!(s.dataset.path(), Some("iris.csv"));
        spec.dataset.set_path("kiln:sha256:00".into());
        assert!(
            plan(&spec, None)
                .expect_err("bad digest")
                .starts_with("dataset.path: ")
        );
    }

    #[test]
    fn files_are_checked_before_they_are_read() {
        assert_eq!(check_file("Iris.CSV", 10), Ok(DatasetKind::Csv));
        assert_eq!(check_file("book.txt", 10), Ok(DatasetKind::Text));
        let err = check_file("huge.csv", 1 << 30).expect_err("1 GiB");
        assert!(err.contains("huge.csv is 1073741824 bytes"), "{err}");
        assert!(err.contains("at most 268435456 bytes (256 MiB)"), "{err}");
        assert_eq!(training_bytes(101_770), 1_628_320);
    }
}
