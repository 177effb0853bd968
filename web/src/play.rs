//! The playground's pure parts (tested natively): presets that train in a tab on the data
//! the coordinator serves, and what a run's data is as the in-browser trainer sees it.

use kiln_proto::JobSpec;
use kiln_proto::artifact::checkpoint_name;
use kiln_proto::dataset::{DatasetKind, DatasetRef};
use kiln_proto::protocol::{ImportRun, JobState, MetricPoint};
use kiln_proto::spec::{DatasetSpec, DeviceRequest};
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

/// What happens to a tab's run that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveAs {
    /// Kept as it ended, as a run in the jobs list.
    Run,
    /// Continued on a worker from its checkpoint (`state = queued`).
    ContinueOnWorker,
}

/// How a tab's run ended and where it trained.
#[derive(Debug, Clone, PartialEq)]
pub struct TabRun<'a> {
    /// The spec as the user gave it (before [`plan`] renamed its data for the trainer).
    pub spec: &'a JobSpec,
    pub points: &'a [MetricPoint],
    pub completed: bool,
    pub step: u64,
    pub total_steps: u64,
    /// `cpu` or `webgpu`: the device the tab trained on.
    pub device: &'a str,
    pub started_ms: i64,
    pub finished_ms: i64,
}

/// The run as `POST /api/jobs/import` takes it. Continued on a worker, a `webgpu` spec asks
/// for `auto` (a `webgpu` job would go to a tab again), and the run must have stopped early
/// (a completed run has no steps left).
pub fn import_run(run: &TabRun<'_>, save: SaveAs) -> Result<ImportRun, String> {
    let mut spec = run.spec.clone();
    let state = match save {
        SaveAs::Run if run.completed => JobState::Succeeded,
        SaveAs::Run => JobState::Cancelled,
        SaveAs::ContinueOnWorker if run.completed => {
            return Err(
                "the run is complete: raise training.epochs or training.max_steps and \
                        resume it here, or train it again on a worker"
                    .into(),
            );
        }
        SaveAs::ContinueOnWorker => {
            if spec.device == DeviceRequest::Webgpu {
                spec.device = DeviceRequest::Auto;
            }
            JobState::Queued
        }
    };
    let step = run
        .points
        .iter()
        .map(|p| p.metric.step)
        .max()
        .unwrap_or(0)
        .max(run.step);
    Ok(ImportRun {
        spec,
        tags: vec!["playground".into()],
        state,
        step,
        total_steps: run.total_steps.max(step),
        trained_on: format!("browser tab ({})", run.device),
        started_ms: run.started_ms,
        finished_ms: run.finished_ms.max(run.started_ms),
        metrics: run.points.iter().map(|p| p.metric.clone()).collect(),
    })
}

/// The files of a tab's run, named as a worker names them.
pub fn import_files(
    weights: Option<Vec<u8>>,
    model: &serde_json::Value,
    summary: &serde_json::Value,
    data: &serde_json::Value,
    checkpoint: Option<(u64, Vec<u8>)>,
) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    if let Some(w) = weights {
        files.push(("model.bpk".to_string(), w));
    }
    for (name, value) in [
        ("model.json", model),
        ("summary.json", summary),
        ("data.json", data),
    ] {
        if !value.is_null() {
            files.push((name.to_string(), value.to_string().into_bytes()));
        }
    }
    if let Some((step, bytes)) = checkpoint {
        files.push((checkpoint_name(step), bytes));
    }
    files
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

    fn points(steps: &[u64]) -> Vec<MetricPoint> {
        steps
            .iter()
            .map(|&step| MetricPoint {
                attempt: 1,
                metric: kiln_proto::metric::Metric {
                    step,
                    epoch: 0.0,
                    split: kiln_proto::metric::Split::Train,
                    loss: 1.0,
                    accuracy: None,
                    lr: None,
                    samples_per_sec: None,
                },
            })
            .collect()
    }

    #[test]
    fn a_tab_run_is_saved_or_continued_on_a_worker() {
        let mut spec = preset_spec("mnist-mlp").expect("preset");
        spec.device = DeviceRequest::Webgpu;
        let p = points(&[5, 10, 15]);
        let run = TabRun {
            spec: &spec,
            points: &p,
            completed: false,
            step: 12,
            total_steps: 93,
            device: "webgpu",
            started_ms: 1000,
            finished_ms: 900,
        };
        let saved = import_run(&run, SaveAs::Run).expect("save");
        assert_eq!(saved.state, JobState::Cancelled, "stopped early");
        assert_eq!(saved.step, 15, "the last metric's step counts");
        assert_eq!(saved.spec.device, DeviceRequest::Webgpu, "kept as it ran");
        assert_eq!(saved.spec.dataset.path(), Some("kiln:mnist-subset"));
        assert_eq!(saved.trained_on, "browser tab (webgpu)");
        assert_eq!((saved.started_ms, saved.finished_ms), (1000, 1000));
        assert_eq!(saved.metrics.len(), 3);
        let go_on = import_run(&run, SaveAs::ContinueOnWorker).expect("continue");
        assert_eq!(go_on.state, JobState::Queued);
        assert_eq!(
            go_on.spec.device,
            DeviceRequest::Auto,
            "a machine may take it"
        );
        let done = TabRun {
            completed: true,
            ..run
        };
        assert_eq!(
            import_run(&done, SaveAs::Run).expect("save").state,
            JobState::Succeeded
        );
        let err = import_run(&done, SaveAs::ContinueOnWorker).expect_err("nothing left");
        assert!(err.contains("raise training.epochs"), "{err}");

        let files = import_files(
            Some(vec![1]),
            &serde_json::json!({"kind": "mlp"}),
            &serde_json::Value::Null,
            &serde_json::json!({"labels": []}),
            Some((15, vec![2])),
        );
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["model.bpk", "model.json", "data.json", &checkpoint_name(15)]
        );
    }

    #[test]
    fn files_are_checked_before_they_are_read() {
        assert_eq!(check_file("Iris.CSV", 10), Ok(DatasetKind::Csv));
        assert_eq!(check_file("book.txt", 10), Ok(DatasetKind::Text));
        let err = check_file("huge.csv", 1 << 30).expect_err("1 GiB");
        assert!(err.contains("huge.csv is 1073741824 bytes"), "{err}");
        assert!(err.contains("at most 268435456 bytes (256 MiB)"), "{err}");
    }
}

/// A digit drawn on a canvas as MNIST's 28 × 28 input (values in 0..=1, ink bright):
/// `ink` is the canvas's alpha channel, `width × height`. Like MNIST's own preparation, the
/// ink's bounding box is scaled to fit 20 × 20 (averaging the pixels each output pixel
/// covers) and placed so its centre of mass is at the centre. `None` when nothing is drawn.
pub fn mnist_digit(ink: &[u8], width: usize, height: usize) -> Option<Vec<f32>> {
    let at = |x: usize, y: usize| ink.get(y * width + x).copied().unwrap_or(0);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..height {
        for x in 0..width {
            if at(x, y) > 0 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    if x0 > x1 {
        return None;
    }
    let side = (x1 - x0 + 1).max(y1 - y0 + 1) as f64;
    let scale = 20.0 / side;
    let (w, h) = (
        ((x1 - x0 + 1) as f64 * scale).ceil() as usize,
        ((y1 - y0 + 1) as f64 * scale).ceil() as usize,
    );
    // Box-filter the bounding box down to w × h.
    let mut small = vec![0f32; w * h];
    for (i, v) in small.iter_mut().enumerate() {
        let (sx, sy) = (i % w, i / w);
        let (ax, bx) = (
            x0 + (sx as f64 / scale) as usize,
            x0 + (((sx + 1) as f64 / scale) as usize).max(1),
        );
        let (ay, by) = (
            y0 + (sy as f64 / scale) as usize,
            y0 + (((sy + 1) as f64 / scale) as usize).max(1),
        );
        let (mut sum, mut n) = (0f32, 0f32);
        for y in ay..by.min(y1 + 1).max(ay + 1) {
            for x in ax..bx.min(x1 + 1).max(ax + 1) {
                sum += f32::from(at(x, y)) / 255.0;
                n += 1.0;
            }
        }
        *v = if n > 0.0 { sum / n } else { 0.0 };
    }
    // Centre of mass to the middle of 28 × 28.
    let total: f32 = small.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    let cx = small
        .iter()
        .enumerate()
        .map(|(i, v)| (i % w) as f32 * v)
        .sum::<f32>()
        / total;
    let cy = small
        .iter()
        .enumerate()
        .map(|(i, v)| (i / w) as f32 * v)
        .sum::<f32>()
        / total;
    let (ox, oy) = ((13.5 - cx).round() as i64, (13.5 - cy).round() as i64);
    let mut out = vec![0f32; 28 * 28];
    for (i, v) in small.iter().enumerate() {
        let (x, y) = ((i % w) as i64 + ox, (i / w) as i64 + oy);
        if (0..28).contains(&x) && (0..28).contains(&y) {
            out[(y * 28 + x) as usize] = v.min(1.0);
        }
    }
    Some(out)
}

#[cfg(test)]
mod digit_tests {
    use super::mnist_digit;

    #[test]
    fn a_drawn_stroke_becomes_a_centred_20_pixel_digit() {
        assert_eq!(mnist_digit(&[0; 100 * 100], 100, 100), None);
        // A vertical bar in the top-left corner of a 100 × 100 canvas ("1").
        let mut ink = vec![0u8; 100 * 100];
        for y in 5..45 {
            for x in 10..16 {
                ink[y * 100 + x] = 255;
            }
        }
        let d = mnist_digit(&ink, 100, 100).expect("ink");
        assert_eq!(d.len(), 784);
        let rows: Vec<usize> = (0..28)
            .filter(|y| d[y * 28..y * 28 + 28].iter().any(|&v| v > 0.0))
            .collect();
        let cols: Vec<usize> = (0..28)
            .filter(|x| (0..28).any(|y| d[y * 28 + x] > 0.0))
            .collect();
        // 40 px tall scaled to 20 rows, centred: rows 4..24; 6 px wide → 3 columns near 14.
        assert_eq!((rows[0], *rows.last().expect("rows")), (4, 23), "{rows:?}");
        assert!(cols.len() == 3 && cols.contains(&13), "{cols:?}");
        assert!(d.iter().all(|&v| (0.0..=1.0).contains(&v)));
        assert!(d.iter().any(|&v| v > 0.99), "solid ink stays bright");
    }
}
