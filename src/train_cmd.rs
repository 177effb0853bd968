//! `kiln train`: run a job spec locally and write a run folder.
//!
//! Run folder: `spec.toml`, `model.json` (resolved model config), `metrics.jsonl` (one JSON
//! object per metric), `checkpoints/step-NNNNNNNN.ckpt`, and at the end `model.bpk`,
//! `model.safetensors` and `summary.json`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_proto::metric::{Metric, Split};
use kiln_proto::spec::{DeviceRequest, JobSpec};
use kiln_train::driver::{self, RunError, RunOptions, RunReport, RunSink, RunStarted};
use kiln_train::train::{CancelToken, Checkpoint, Outcome};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Job spec (TOML, or JSON if it ends in .json).
    pub spec: PathBuf,
    /// Stop after N steps in total.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Device: auto, cpu, wgpu or cuda (overrides the spec).
    #[arg(long)]
    pub device: Option<DeviceRequest>,
    /// Read the dataset from DIR instead of the spec's dataset.path.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Run folder (default: runs/<name>, or runs/<name>-N if that exists).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Resume from the newest checkpoint in the run folder.
    #[arg(long)]
    pub resume: bool,
    /// Print metrics as JSON lines instead of a progress bar.
    #[arg(long)]
    pub json: bool,
}

pub fn read_spec(path: &Path) -> anyhow::Result<JobSpec> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read job spec {}", path.display()))?;
    let parsed = if path.extension().is_some_and(|e| e == "json") {
        JobSpec::from_json_str(&text)
    } else {
        JobSpec::from_toml_str(&text)
    };
    parsed.with_context(|| format!("invalid job spec {}", path.display()))
}

fn run_folder(args: &TrainArgs, spec: &JobSpec) -> anyhow::Result<PathBuf> {
    if let Some(out) = &args.out {
        return Ok(out.clone());
    }
    let base = PathBuf::from("runs").join(&spec.name);
    if args.resume || !base.exists() {
        return Ok(base);
    }
    (2..10_000)
        .map(|n| PathBuf::from("runs").join(format!("{}-{n}", spec.name)))
        .find(|p| !p.exists())
        .context("no free run folder name under runs/")
}

fn latest_checkpoint(dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let dir = dir.join("checkpoints");
    if !dir.exists() {
        return Ok(None);
    }
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    files.sort();
    Ok(files.pop())
}

pub fn run(args: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut spec = read_spec(&args.spec)?;
    if let Some(dir) = &args.data_dir {
        if spec.dataset.path().is_none() {
            bail!(
                "--data-dir given, but dataset.kind = {} reads no files",
                spec.dataset.kind()
            );
        }
        let path = if matches!(spec.dataset, kiln_proto::spec::DatasetSpec::Idx { .. }) {
            dir.clone()
        } else {
            // A file dataset: keep its file name, take it from DIR.
            let name = Path::new(spec.dataset.path().unwrap_or_default())
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default();
            dir.join(name)
        };
        spec.dataset.set_path(path.to_string_lossy().into_owned());
    }
    if let Some(d) = args.device {
        spec.device = d;
    }
    let out = run_folder(&args, &spec)?;
    let resume = if args.resume {
        let path = latest_checkpoint(&out)?
            .with_context(|| format!("--resume: no checkpoint in {}/checkpoints", out.display()))?;
        let bytes = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let ckpt = Checkpoint::decode(&bytes)
            .with_context(|| format!("cannot resume from {}", path.display()))?;
        eprintln!(
            "resuming from {} (step {})",
            path.display(),
            ckpt.state.step
        );
        Some(ckpt)
    } else {
        None
    };
    fs::create_dir_all(out.join("checkpoints"))
        .with_context(|| format!("cannot create run folder {}", out.display()))?;
    fs::write(out.join("spec.toml"), spec.to_toml_string()).context("writing spec.toml")?;

    let cancel = CancelToken::default();
    {
        let cancel = cancel.clone();
        // Ctrl-C stops between steps and writes a checkpoint to resume from.
        let _ = ctrlc::set_handler(move || cancel.cancel());
    }
    let metrics_file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out.join("metrics.jsonl"))
        .context("opening metrics.jsonl")?;
    let bar = if args.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(0)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:32} {pos}/{len} steps  {msg}",
        )
        .expect("valid template"),
    );
    let mut folder = RunFolder {
        spec: &spec,
        out: &out,
        metrics_file,
        bar: &bar,
        json: args.json,
        io_error: None,
    };
    let options = RunOptions {
        device: None,
        max_steps: args.max_steps,
        resume,
        cancel,
        ..RunOptions::default()
    };
    if spec.distributed.workers > 1 {
        eprintln!(
            "note: distributed.workers = {} applies on a coordinator (`kiln submit`); \
             `kiln train` trains alone with batch {} per step",
            spec.distributed.workers, spec.training.batch_size
        );
    }
    let result = driver::run(&spec, options, &mut folder);
    bar.finish_and_clear();
    if let Some(e) = folder.io_error {
        return Err(e.context(format!("writing to run folder {}", out.display())));
    }
    let report = match result {
        Ok(report) => report,
        Err(RunError::Device(e)) => return Err(e.into()),
        Err(RunError::Data(e)) => {
            return Err(anyhow::Error::new(e).context(format!(
                "loading dataset {}",
                spec.dataset.path().unwrap_or("(synthetic)")
            )));
        }
        Err(RunError::Train(e)) => {
            return Err(anyhow::Error::new(e).context("training failed"));
        }
    };
    let summary = &report.summary;
    let acc = |m: &Option<Metric>| {
        m.as_ref()
            .and_then(|m| m.accuracy)
            .map(|a| format!("{a:.4}"))
            .unwrap_or_else(|| "-".into())
    };
    eprintln!(
        "{} after {} steps: {:.0} samples/s, val accuracy {}, test accuracy {} | {}",
        if summary.outcome == Outcome::Completed {
            "done"
        } else {
            "cancelled (resume with --resume)"
        },
        summary.steps,
        summary.train_samples_per_sec,
        acc(&summary.last_val),
        acc(&summary.test),
        out.display()
    );
    Ok(if summary.outcome == Outcome::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(130)
    })
}

/// The run folder as a [`RunSink`]: metrics, checkpoints and final files on disk, the
/// progress bar (or JSON lines) on the terminal. The first write error is kept and reported
/// once the run is over.
struct RunFolder<'a> {
    spec: &'a JobSpec,
    out: &'a Path,
    metrics_file: fs::File,
    bar: &'a ProgressBar,
    json: bool,
    io_error: Option<anyhow::Error>,
}

impl RunFolder<'_> {
    fn keep(&mut self, result: anyhow::Result<()>) {
        if let Err(e) = result
            && self.io_error.is_none()
        {
            self.io_error = Some(e);
        }
    }
}

impl RunSink for RunFolder<'_> {
    /// The driver's progress lines are for workers' logs; the header says it all here.
    fn log(&mut self, _line: &str) {}

    fn started(&mut self, s: &RunStarted) {
        eprintln!(
            "kiln train: {} | {} on {} | {} training examples{} | run folder {}",
            self.spec.name,
            self.spec.model.kind(),
            s.device_description,
            s.train_examples,
            s.valid_examples
                .map(|v| format!(", {v} validation"))
                .unwrap_or_default(),
            self.out.display()
        );
        self.bar.set_length(s.total_steps);
        self.bar.set_position(s.start_step);
        self.bar
            .println(format!("model: {} parameters", s.parameters));
        let result = serde_json::to_string_pretty(&s.model)
            .map_err(anyhow::Error::from)
            .and_then(|json| {
                fs::write(self.out.join("model.json"), json).context("writing model.json")
            });
        self.keep(result);
    }

    fn metric(&mut self, m: &Metric) {
        let result = (|| -> anyhow::Result<()> {
            let line = serde_json::to_string(m)?;
            writeln!(self.metrics_file, "{line}")?;
            if self.json {
                println!("{line}");
            }
            Ok(())
        })();
        self.keep(result);
        match m.split {
            Split::Train => {
                self.bar.set_position(m.step);
                self.bar.set_message(format!(
                    "loss {:.4}{}  {:.0} samples/s",
                    m.loss,
                    m.accuracy
                        .map(|a| format!("  acc {a:.3}"))
                        .unwrap_or_default(),
                    m.samples_per_sec.unwrap_or(0.0)
                ));
            }
            split => self.bar.println(format!(
                "step {:>6} {:<5} loss {:.4}{}",
                m.step,
                format!("{split:?}").to_lowercase(),
                m.loss,
                m.accuracy
                    .map(|a| format!("  accuracy {a:.4}"))
                    .unwrap_or_default()
            )),
        }
    }

    fn checkpoint(&mut self, step: u64, bytes: Vec<u8>) {
        let path = self
            .out
            .join("checkpoints")
            .join(format!("step-{step:08}.ckpt"));
        let result = write_atomic(&path, &bytes);
        self.keep(result);
    }

    fn warning(&mut self, text: &str) {
        self.keep(Err(anyhow::anyhow!("{text}")));
    }

    fn finished(&mut self, report: &RunReport) {
        for file in &report.files {
            let result = fs::write(self.out.join(file.name), &file.bytes)
                .with_context(|| format!("writing {}", file.name));
            self.keep(result);
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
