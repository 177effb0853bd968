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
use kiln_train::data::{self, FsSource};
use kiln_train::device;
use kiln_train::train::{self, CancelToken, Checkpoint, Outcome, TrainEvent, TrainRun};

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

    let resolved = device::resolve(spec.device)?;
    let splits = data::load(&spec.dataset, spec.seed, &FsSource).with_context(|| {
        format!(
            "loading dataset {}",
            spec.dataset.path().unwrap_or("(synthetic)")
        )
    })?;
    eprintln!(
        "kiln train: {} | {} on {} | {} training examples{} | run folder {}",
        spec.name,
        spec.model.kind(),
        resolved.description,
        splits.train.len(),
        splits
            .valid
            .as_ref()
            .map(|v| format!(", {} validation", v.len()))
            .unwrap_or_default(),
        out.display()
    );

    let cancel = CancelToken::default();
    {
        let cancel = cancel.clone();
        // Ctrl-C stops between steps and writes a checkpoint to resume from.
        let _ = ctrlc::set_handler(move || cancel.cancel());
    }
    let mut metrics_file = fs::OpenOptions::new()
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
    let mut io_error: Option<anyhow::Error> = None;
    let json = args.json;
    let mut on_event = |event: TrainEvent| {
        let result = (|| -> anyhow::Result<()> {
            match event {
                TrainEvent::Started {
                    total_steps,
                    start_step,
                    parameters,
                    model,
                } => {
                    bar.set_length(total_steps);
                    bar.set_position(start_step);
                    bar.println(format!("model: {} parameters", parameters));
                    fs::write(
                        out.join("model.json"),
                        serde_json::to_string_pretty(&model)?,
                    )?;
                }
                TrainEvent::Metric(m) => {
                    let line = serde_json::to_string(&m)?;
                    writeln!(metrics_file, "{line}")?;
                    if json {
                        println!("{line}");
                    }
                    match m.split {
                        Split::Train => {
                            bar.set_position(m.step);
                            bar.set_message(format!(
                                "loss {:.4}{}  {:.0} samples/s",
                                m.loss,
                                m.accuracy
                                    .map(|a| format!("  acc {a:.3}"))
                                    .unwrap_or_default(),
                                m.samples_per_sec.unwrap_or(0.0)
                            ));
                        }
                        split => bar.println(format!(
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
                TrainEvent::Checkpoint(c) => {
                    let path = out
                        .join("checkpoints")
                        .join(format!("step-{:08}.ckpt", c.state.step));
                    write_atomic(&path, &c.encode())?;
                }
            }
            Ok(())
        })();
        if let Err(e) = result
            && io_error.is_none()
        {
            io_error = Some(e);
        }
    };
    let mut run = TrainRun::new(spec.clone(), splits, resolved.device.clone(), &mut on_event);
    run.resume = resume;
    run.cancel = cancel;
    run.max_steps = args.max_steps;
    let summary = pollster::block_on(train::train(run));
    bar.finish_and_clear();
    if let Some(e) = io_error {
        return Err(e.context(format!("writing to run folder {}", out.display())));
    }
    let summary = summary.context("training failed")?;
    if let Some(weights) = &summary.weights {
        fs::write(out.join("model.bpk"), weights).context("writing model.bpk")?;
        let st = train::export_safetensors(&summary.model, weights)?;
        fs::write(out.join("model.safetensors"), st).context("writing model.safetensors")?;
    }
    let report = summary.report(&spec.name, resolved.kind.as_str());
    fs::write(
        out.join("summary.json"),
        serde_json::to_string_pretty(&report)?,
    )
    .context("writing summary.json")?;
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

fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}
