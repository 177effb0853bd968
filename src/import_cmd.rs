//! `kiln import RUN_DIR`: a run folder that `kiln train` wrote becomes a job on the coordinator
//! (`POST /api/jobs/import`), with its curve, spec, final model and newest checkpoint — to see
//! it in the dashboard beside the others, share it, or (`--continue`) go on training it on a
//! worker from that checkpoint.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::{Context, bail};
use kiln_proto::artifact::checkpoint_name;
use kiln_proto::metric::Metric;
use kiln_proto::protocol::{ImportRun, JobState, MAX_TRAINED_ON_LEN};

use crate::train_cmd::read_spec;

/// Files as they travel: artifact name and bytes.
type Files = Vec<(String, Vec<u8>)>;

/// The files of a run folder that travel, under the names a worker gives them.
const FILES: [&str; 5] = [
    "model.bpk",
    "model.safetensors",
    "model.json",
    "data.json",
    "summary.json",
];

/// A file's modification time in ms since the Unix epoch.
fn modified_ms(path: &Path) -> anyhow::Result<i64> {
    let t = fs::metadata(path)
        .and_then(|m| m.modified())
        .with_context(|| format!("reading the time of {}", path.display()))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0))
}

/// The newest `checkpoints/step-NNNNNNNN.ckpt` of a run folder, with its step.
fn newest_checkpoint(dir: &Path) -> anyhow::Result<Option<(u64, PathBuf)>> {
    let folder = dir.join("checkpoints");
    if !folder.is_dir() {
        return Ok(None);
    }
    let mut newest = None;
    for entry in fs::read_dir(&folder).with_context(|| format!("reading {}", folder.display()))? {
        let path = entry?.path();
        let step = path.file_name().and_then(|n| n.to_str()).and_then(|n| {
            n.strip_prefix("step-")?
                .strip_suffix(".ckpt")?
                .parse::<u64>()
                .ok()
        });
        if let Some(step) = step
            && newest.as_ref().is_none_or(|(s, _)| step > *s)
        {
            newest = Some((step, path));
        }
    }
    Ok(newest)
}

/// The run in `dir` as the coordinator imports it, and its files. `continue_on_worker`: queue
/// it to go on from its newest checkpoint (which it must have).
pub fn read_run(
    dir: &Path,
    tags: Vec<String>,
    continue_on_worker: bool,
) -> anyhow::Result<(ImportRun, Files)> {
    let spec_path = dir.join("spec.toml");
    if !spec_path.is_file() {
        bail!(
            "{} has no spec.toml: it is not a run folder of `kiln train --out`",
            dir.display()
        );
    }
    let spec = read_spec(&spec_path)?;
    let summary_path = dir.join("summary.json");
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(&summary_path).with_context(|| {
            format!(
                "reading {} (a run that is still training, or failed, has none)",
                summary_path.display()
            )
        })?)
        .with_context(|| format!("{} is not JSON", summary_path.display()))?;
    let metrics_path = dir.join("metrics.jsonl");
    let text = fs::read_to_string(&metrics_path)
        .with_context(|| format!("reading {}", metrics_path.display()))?;
    let metrics = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str::<Metric>(l)
                .with_context(|| format!("{} line {}: not a metric", metrics_path.display(), i + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let steps = summary["steps"]
        .as_u64()
        .with_context(|| format!("{}: no `steps`", summary_path.display()))?;
    let step = metrics.iter().map(|m| m.step).max().unwrap_or(0).max(steps);
    let completed = summary["outcome"] == "completed";
    let checkpoint = newest_checkpoint(dir)?;
    let state = match (continue_on_worker, completed, &checkpoint) {
        (true, _, None) => bail!(
            "--continue: {} has no checkpoints/step-*.ckpt to go on from (train with \
             training.checkpoint_every)",
            dir.display()
        ),
        (true, _, Some(_)) => JobState::Queued,
        (false, true, _) => JobState::Succeeded,
        (false, false, _) => JobState::Cancelled,
    };
    let device = summary["device"].as_str().unwrap_or("?");
    let mut trained_on = format!("kiln train ({device})");
    trained_on.truncate(MAX_TRAINED_ON_LEN);
    let mut files = Vec::new();
    for name in FILES {
        let path = dir.join(name);
        if path.is_file() {
            files.push((
                name.to_string(),
                fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
            ));
        }
    }
    if let Some((ckpt_step, path)) = &checkpoint {
        files.push((
            checkpoint_name(*ckpt_step),
            fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        ));
    }
    let run = ImportRun {
        spec,
        tags,
        state,
        step,
        total_steps: step,
        trained_on,
        started_ms: modified_ms(&spec_path)?,
        finished_ms: modified_ms(&summary_path)?,
        metrics,
    };
    Ok((run, files))
}
