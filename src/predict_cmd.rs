//! `kiln predict`: run a trained model (a run folder's `model.json` and `model.bpk`, or a
//! job's artifacts downloaded) on images of an IDX folder, one JSON line per image.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use kiln_proto::spec::DatasetSpec;
use kiln_train::data::{self, FsSource, Targets};
use kiln_train::model::ModelConfig;
use kiln_train::predict::{Loaded, softmax};

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Folder with `model.json` and `model.bpk` (a run folder, or a job's artifacts).
    pub model: PathBuf,
    /// IDX folder whose test images (`t10k-*`) to predict.
    #[arg(long)]
    pub idx: PathBuf,
    /// Predict the training images instead of the test images.
    #[arg(long)]
    pub train_split: bool,
}

pub fn run(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let read = |name: &str| {
        let path = args.model.join(name);
        std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let config: ModelConfig = serde_json::from_slice(&read("model.json")?)
        .with_context(|| format!("{}: not a model.json", args.model.display()))?;
    let weights = read("model.bpk")?;
    let spec = DatasetSpec::Idx {
        path: args.idx.display().to_string(),
        validation_fraction: 0.0,
        limit: None,
    };
    let splits = data::load(&spec, 0, &FsSource)?;
    let set = if args.train_split {
        splits.train
    } else {
        splits
            .test
            .with_context(|| format!("{} has no test images (t10k-*)", args.idx.display()))?
    };
    let device = kiln_train::device::resolve(kiln_proto::spec::DeviceRequest::Cpu)?.device;
    let model = Loaded::new(&config, &weights, &device)?;
    let (logits, outputs) = pollster::block_on(model.logits(&set.inputs, &device))?;
    let labels = match &set.targets {
        Targets::Class(l) => l.clone(),
        _ => Vec::new(),
    };
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for (i, row) in logits.chunks(outputs.max(1)).enumerate() {
        let class = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(c, _)| c);
        let line = serde_json::json!({
            "index": i,
            "label": labels.get(i),
            "class": class,
            "logits": row,
            "probabilities": softmax(row),
        });
        // A reader that stopped (`| head`) is not an error.
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}
