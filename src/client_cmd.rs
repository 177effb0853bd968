//! Commands against a running coordinator: submit, import, jobs, job, logs, cancel, live control
//! (pause, resume, checkpoint, set-lr) and forks, workers, sweep, share links, tags and notes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_client::{Client, JobFilter, MetricQuery};
use kiln_proto::metric::Split;
use kiln_proto::protocol::{ControlAction, ForkJob, JobId, JobInfo, JobPatch, JobState, SubmitJob};
use kiln_proto::spec::JobSpec;

use crate::train_cmd::read_spec;

#[derive(Args, Debug)]
pub struct Remote {
    /// Coordinator URL.
    #[arg(
        long,
        env = "KILN_SERVER",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    pub server: String,
    /// API token.
    #[arg(long, env = "KILN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RemoteCommand {
    /// Submit a job spec; --follow shows live progress (Ctrl-C detaches, the job keeps running).
    /// A relative `dataset.path` that exists here is uploaded to the coordinator (once per
    /// content) and the job pinned to its digest; --no-upload leaves it to the worker's
    /// --data-root.
    Submit {
        spec: PathBuf,
        #[arg(long, short)]
        follow: bool,
        /// Do not upload a local dataset: the worker reads `dataset.path` under its --data-root.
        #[arg(long)]
        no_upload: bool,
        /// Train on this many workers together (data-parallel; sets `distributed.workers`,
        /// and `distributed.min_workers` if the spec has none).
        #[arg(long, value_name = "N")]
        workers: Option<u32>,
        /// Tag the job (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Put a run folder of `kiln train --out` on the coordinator as a job: its curve, spec,
    /// final model and newest checkpoint, to see and share it beside the others. A relative
    /// `dataset.path` that exists here is uploaded, as by `submit`.
    Import {
        dir: PathBuf,
        /// Queue it to go on training on a worker from its newest checkpoint.
        #[arg(long = "continue")]
        continue_on_worker: bool,
        /// Do not upload a local dataset.
        #[arg(long)]
        no_upload: bool,
        /// Tag the job (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    Jobs {
        #[arg(long)]
        state: Option<JobState>,
        #[arg(long)]
        group: Option<String>,
        /// Only jobs with this tag.
        #[arg(long)]
        tag: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one job: state, progress, attempts, latest metrics, artifacts.
    Job {
        id: JobId,
        #[arg(long)]
        json: bool,
    },
    /// Print a job's logs; -f keeps following.
    Logs {
        id: JobId,
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancel a queued or running job.
    Cancel { id: JobId },
    /// Re-queue a failed or cancelled job; it resumes from its last checkpoint.
    Retry { id: JobId },
    /// Hold a running job between two steps (its model stays in memory: a resume goes on
    /// exactly as without the pause); a queued job starts paused.
    Pause { id: JobId },
    /// Let a paused job train on.
    Resume { id: JobId },
    /// Ask a running job for a checkpoint now (to fork from, or resume from).
    Checkpoint { id: JobId },
    /// Train a running job on with another base learning rate from its next step (the spec's
    /// schedule still shapes it; a resume from an earlier checkpoint makes the same change).
    SetLr { id: JobId, lr: f64 },
    /// A new job that starts from one of the job's checkpoints, with its spec or changes to it.
    Fork {
        id: JobId,
        /// The checkpoint's step (default: the newest).
        #[arg(long)]
        step: Option<u64>,
        /// Another spec file (its model and dataset must be the job's).
        #[arg(long, conflicts_with_all = ["lr", "max_steps"])]
        spec: Option<PathBuf>,
        /// The job's spec with this learning rate (`optimizer.lr`).
        #[arg(long)]
        lr: Option<f64>,
        /// The job's spec with this step limit (`training.max_steps`).
        #[arg(long)]
        max_steps: Option<u64>,
        /// Tag the new job (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Create a read-only link to a job (no login needed to open it); prints its URL.
    Share {
        id: JobId,
        /// Let the link open the run's stored training data too, so whoever holds it can
        /// re-run the run in a browser (by default the data stays private).
        #[arg(long)]
        with_data: bool,
        #[arg(long)]
        json: bool,
    },
    /// List a job's share links, revoked ones included.
    Shares {
        id: JobId,
        #[arg(long)]
        json: bool,
    },
    /// Add tags to a job (or take them off with --remove); prints the job's tags.
    Tag {
        id: JobId,
        tags: Vec<String>,
        /// Tags to take off.
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Set a job's notes ("-" reads them from standard input, "" clears them).
    Note { id: JobId, text: String },
    /// Revoke a share link (its id from `kiln shares`).
    Unshare { share_id: i64 },
    /// List workers.
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// Datasets stored on the coordinator: push, ls, show, rm.
    #[command(subcommand)]
    Data(crate::data_cmd::DataCommand),
    /// API tokens with scopes (read, submit, admin, worker): create, ls, revoke (admin).
    #[command(subcommand)]
    Token(crate::token_cmd::TokenCommand),
    /// What admin, submit and read tokens changed, newest last (admin).
    Audit {
        /// How many of the newest entries.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One job per combination of the grid, grouped: `--grid optimizer.lr=1e-3,3e-3`.
    Sweep {
        spec: PathBuf,
        #[arg(long = "grid", required = true)]
        grid: Vec<String>,
        /// Tag every job of the sweep (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// Do not upload a local dataset (see `kiln submit`).
        #[arg(long)]
        no_upload: bool,
        #[arg(long)]
        json: bool,
    },
}

/// Ask for a live change and say what was asked; the job's log says when it took effect.
async fn control(client: &Client, id: JobId, action: ControlAction) -> anyhow::Result<()> {
    let job = client.control(id, action).await?;
    let held = if job.paused { ", paused" } else { "" };
    println!(
        "job {}: {} asked ({}{held}; `kiln logs {}` says when it takes effect)",
        job.id,
        action.describe(),
        job.state.as_str(),
        job.id
    );
    Ok(())
}

fn client(remote: &Remote) -> anyhow::Result<Client> {
    let token = remote
        .token
        .clone()
        .context("no API token: pass --token or set KILN_TOKEN (kiln up prints the admin token)")?;
    Client::new(&remote.server, Some(token)).context("bad --server URL")
}

pub fn run(remote: Remote, command: RemoteCommand) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let client = client(&remote)?;
        match command {
            RemoteCommand::Submit {
                spec,
                follow,
                no_upload,
                workers,
                tags,
                json,
            } => {
                let mut spec = read_spec(&spec)?;
                if let Some(n) = workers {
                    spec.distributed.workers = n;
                    if let Err(errors) = spec.validate() {
                        anyhow::bail!(
                            "--workers {n}: {}",
                            errors
                                .iter()
                                .map(|e| e.to_string())
                                .collect::<Vec<_>>()
                                .join("; ")
                        );
                    }
                }
                if !no_upload {
                    crate::data_cmd::upload_local_dataset(&client, &mut spec).await?;
                }
                let job = client
                    .submit(&SubmitJob {
                        spec,
                        group: None,
                        tags,
                    })
                    .await
                    .context("submitting")?;
                if json {
                    println!("{}", serde_json::to_string(&job)?);
                } else {
                    println!("submitted job {} ({})", job.id, job.name);
                }
                if follow {
                    return follow_job(&client, job.id).await;
                }
            }
            RemoteCommand::Import {
                dir,
                continue_on_worker,
                no_upload,
                tags,
                json,
            } => {
                let (mut run, files) = crate::import_cmd::read_run(&dir, tags, continue_on_worker)?;
                if !no_upload {
                    crate::data_cmd::upload_local_dataset(&client, &mut run.spec).await?;
                }
                let job = client
                    .import_run(&run, files)
                    .await
                    .context("importing the run")?;
                if json {
                    println!("{}", serde_json::to_string(&job)?);
                } else {
                    println!(
                        "imported {} as job {} ({}, step {})",
                        dir.display(),
                        job.id,
                        job.state.as_str(),
                        job.step
                    );
                }
            }
            RemoteCommand::Jobs {
                state,
                group,
                tag,
                limit,
                json,
            } => {
                let page = client
                    .jobs(&JobFilter {
                        state,
                        group,
                        tag,
                        limit: Some(limit),
                        ..JobFilter::default()
                    })
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&page)?);
                } else {
                    println!(
                        "{:>5}  {:<24} {:<10} {:>13}  {:<20} AGE",
                        "ID", "NAME", "STATE", "PROGRESS", "WORKER"
                    );
                    for j in &page.jobs {
                        let mut worker = j.worker_id.clone().unwrap_or_else(|| "-".into());
                        // A data-parallel job: every rank's worker, rank order.
                        if j.spec.distributed.workers > 1 && j.worker_id.is_some() {
                            let attempts = client.attempts(j.id).await?;
                            if let Some(last) = attempts.last()
                                && last.ranks.len() > 1
                            {
                                worker = last
                                    .ranks
                                    .iter()
                                    .map(|r| r.worker_id.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",");
                            }
                        }
                        println!(
                            "{:>5}  {:<24} {:<10} {:>13}  {:<20} {}",
                            j.id,
                            truncate(&j.name, 24),
                            j.state.as_str(),
                            format!("{}/{}", j.step, j.total_steps),
                            truncate(&worker, 20),
                            age(j.created_ms)
                        );
                    }
                    println!("{} of {} jobs", page.jobs.len(), page.total);
                }
            }
            RemoteCommand::Job { id, json } => {
                let job = client.job(id).await?;
                let attempts = client.attempts(id).await?;
                let artifacts = client.artifacts(id).await?;
                let metrics = client
                    .metrics(id, &MetricQuery { max_points: Some(200), ..MetricQuery::default() })
                    .await?;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&serde_json::json!({
                            "job": job, "attempts": attempts, "artifacts": artifacts, "metrics": metrics,
                        }))?
                    );
                } else {
                    println!("job {}: {} [{}]", job.id, job.name, job.state.as_str());
                    let held = if job.paused { " (paused)" } else { "" };
                    println!("  progress  {}/{} steps{held}", job.step, job.total_steps);
                    if let Some(f) = job.forked_from {
                        println!("  forked    from job {} at step {}", f.job_id, f.step);
                    }
                    if !job.lr_changes.is_empty() {
                        let changes: Vec<String> = job
                            .lr_changes
                            .iter()
                            .map(|c| format!("{} from step {}", c.lr, c.step + 1))
                            .collect();
                        println!("  lr set    {}", changes.join(", "));
                    }
                    let ranks = attempts.last().map_or(0, |a| a.ranks.len());
                    if let Some(w) = &job.worker_id {
                        match attempts.last() {
                            Some(a) if ranks > 1 => {
                                let workers: Vec<String> = a
                                    .ranks
                                    .iter()
                                    .map(|r| format!("{} (rank {})", r.worker_id, r.rank))
                                    .collect();
                                println!("  workers   {}", workers.join(", "));
                            }
                            _ => println!("  worker    {w}"),
                        }
                    }
                    let d = &job.spec.distributed;
                    if d.workers > 1 {
                        let ranks = (ranks > 0).then_some(ranks);
                        println!("  parallel  {}", d.describe(job.spec.training.batch_size, ranks));
                    }
                    if let Some(Ok(kiln_proto::dataset::DatasetRef::Pinned(digest))) =
                        kiln_proto::dataset::DatasetRef::of(&job.spec.dataset)
                    {
                        let name = job.dataset_name.as_deref().map(|n| format!("kiln:{n} = ")).unwrap_or_default();
                        println!("  dataset   {name}{digest}");
                    } else if let Some(path) = job.spec.dataset.path() {
                        println!("  dataset   {path} (on the worker)");
                    }
                    if let Some(e) = &job.error {
                        println!("  error     {e}");
                    }
                    if !job.tags.is_empty() {
                        println!("  tags      {}", job.tags.join(", "));
                    }
                    for (i, line) in job.notes.lines().enumerate() {
                        println!("  {:<9} {line}", if i == 0 { "notes" } else { "" });
                    }
                    for split in [Split::Train, Split::Val, Split::Test] {
                        if let Some(m) = metrics.iter().rev().find(|p| p.metric.split == split) {
                            println!(
                                "  {:<9} step {} loss {:.4}{}",
                                format!("{split:?}").to_lowercase(),
                                m.metric.step,
                                m.metric.loss,
                                m.metric.accuracy.map(|a| format!(" accuracy {a:.4}")).unwrap_or_default()
                            );
                        }
                    }
                    for a in &attempts {
                        let on = if a.ranks.len() > 1 {
                            a.ranks.iter().map(|r| r.worker_id.as_str()).collect::<Vec<_>>().join(", ")
                        } else {
                            a.worker_id.clone()
                        };
                        println!(
                            "  attempt {} on {}: {}{}",
                            a.attempt,
                            on,
                            a.state.as_str(),
                            a.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
                        );
                    }
                    for a in &artifacts {
                        println!("  artifact  {} ({} bytes)", a.name, a.size);
                    }
                }
            }
            RemoteCommand::Logs { id, follow } => {
                let mut after = 0;
                loop {
                    for entry in client.logs(id, after, Some(1000)).await? {
                        println!("{}", entry.line.text);
                        after = after.max(entry.seq);
                    }
                    if !follow || client.job(id).await?.state.is_terminal() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            RemoteCommand::Tag { id, tags, remove } => {
                let mut now = client.job(id).await?.tags;
                now.retain(|t| !remove.contains(t));
                now.extend(tags);
                let job = client
                    .annotate(
                        id,
                        &JobPatch {
                            notes: None,
                            tags: Some(now),
                        },
                    )
                    .await?;
                println!("job {} tags: {}", job.id, job.tags.join(", "));
            }
            RemoteCommand::Note { id, text } => {
                let notes = if text == "-" {
                    std::io::read_to_string(std::io::stdin()).context("reading notes from stdin")?
                } else {
                    text
                };
                let job = client
                    .annotate(
                        id,
                        &JobPatch {
                            notes: Some(notes),
                            tags: None,
                        },
                    )
                    .await?;
                println!("job {} notes: {} bytes", job.id, job.notes.len());
            }
            RemoteCommand::Cancel { id } => {
                let job = client.cancel(id).await?;
                println!("job {}: {}", job.id, job.state.as_str());
            }
            RemoteCommand::Pause { id } => control(&client, id, ControlAction::Pause).await?,
            RemoteCommand::Resume { id } => control(&client, id, ControlAction::Resume).await?,
            RemoteCommand::Checkpoint { id } => {
                control(&client, id, ControlAction::Checkpoint).await?
            }
            RemoteCommand::SetLr { id, lr } => {
                control(&client, id, ControlAction::SetLr { lr }).await?
            }
            RemoteCommand::Fork {
                id,
                step,
                spec,
                lr,
                max_steps,
                tags,
                json,
            } => {
                let spec = match spec {
                    Some(path) => Some(read_spec(&path)?),
                    None if lr.is_some() || max_steps.is_some() => {
                        let mut spec = client.job(id).await?.spec;
                        if let Some(lr) = lr {
                            spec.optimizer.lr = lr;
                        }
                        if max_steps.is_some() {
                            spec.training.max_steps = max_steps;
                        }
                        Some(spec)
                    }
                    None => None,
                };
                let job = client.fork(id, &ForkJob { step, spec, tags }).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&job)?);
                } else {
                    let from = job.forked_from.map_or(0, |f| f.step);
                    println!("job {} forked from job {id} at step {from}: {}", job.id, job.state.as_str());
                }
            }
            RemoteCommand::Retry { id } => {
                let job = client.retry(id).await?;
                println!("job {}: {} (attempt {} next)", job.id, job.state.as_str(), job.attempts + 1);
            }
            RemoteCommand::Share {
                id,
                with_data,
                json,
            } => {
                let new = client
                    .create_share(id, &kiln_proto::protocol::CreateShare { with_data })
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&new)?);
                } else {
                    println!("{}{}", client.base_url(), new.path);
                }
            }
            RemoteCommand::Shares { id, json } => {
                let shares = client.shares(id).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&shares)?);
                } else {
                    println!("{:>5}  {:<8} {:<10} REVOKED", "ID", "HINT", "CREATED");
                    for s in &shares {
                        println!(
                            "{:>5}  {:<8} {:<10} {}",
                            s.id,
                            format!("…{}", s.hint),
                            format!("{} ago", age(s.created_ms)),
                            s.revoked_ms.map(|r| format!("{} ago", age(r))).unwrap_or_else(|| "-".into())
                        );
                    }
                }
            }
            RemoteCommand::Unshare { share_id } => {
                let share = client.revoke_share(share_id).await?;
                println!("share link {} of job {} revoked (…{})", share.id, share.job_id, share.hint);
            }
            RemoteCommand::Workers { json } => {
                let workers = client.workers().await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&workers)?);
                } else {
                    println!("{:<28} {:<10} {:<16} RUNNING", "ID", "STATUS", "DEVICES");
                    for w in &workers {
                        let status = match (w.connected, w.draining) {
                            (false, _) => "offline",
                            (true, true) => "draining",
                            (true, false) => "online",
                        };
                        let devices: Vec<_> = w.capabilities.devices.iter().map(|d| d.as_str()).collect();
                        println!(
                            "{:<28} {:<10} {:<16} {}",
                            truncate(&w.id, 28),
                            status,
                            devices.join(","),
                            w.running.map(|r| format!("job {}", r.job_id)).unwrap_or_else(|| "-".into())
                        );
                    }
                }
            }
            RemoteCommand::Data(command) => crate::data_cmd::run(&client, command).await?,
            RemoteCommand::Token(command) => crate::token_cmd::run(&client, command).await?,
            RemoteCommand::Audit { limit, json } => {
                crate::token_cmd::audit(&client, limit, json).await?
            }
            RemoteCommand::Sweep {
                spec,
                grid,
                tags,
                no_upload,
                json,
            } => {
                let mut base = read_spec(&spec)?;
                if !no_upload {
                    crate::data_cmd::upload_local_dataset(&client, &mut base).await?;
                }
                let specs = expand_grid(&base, &grid)?;
                let group = format!("{}-sweep-{}", base.name, chrono_stamp());
                let mut jobs = Vec::new();
                for spec in specs {
                    jobs.push(client.submit(&SubmitJob { spec, group: Some(group.clone()), tags: tags.clone() }).await?);
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&jobs)?);
                } else {
                    println!("sweep group {group}: {} jobs", jobs.len());
                    for j in &jobs {
                        println!("  job {:>5}  {}", j.id, j.name);
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `--grid a.b=1,2 --grid c=x,y` → one spec per combination, each validated
/// (`kiln_proto::sweep`, which the dashboard's sweep form uses too).
pub fn expand_grid(base: &JobSpec, grid: &[String]) -> anyhow::Result<Vec<JobSpec>> {
    let axes = grid
        .iter()
        .map(|g| {
            g.parse::<kiln_proto::sweep::Axis>()
                .map_err(|e| anyhow::anyhow!("--grid {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    kiln_proto::sweep::expand(base, &axes).map_err(|e| anyhow::anyhow!("--grid: {e}"))
}

fn chrono_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs:x}")
}

pub(crate) fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// This machine's clock, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How long ago `then_ms` was, by this machine's clock ("5m").
pub(crate) fn age(then_ms: i64) -> String {
    kiln_proto::fmt::age(then_ms, now_ms())
}

/// Live progress until the job ends; Ctrl-C detaches (the job keeps running).
async fn follow_job(client: &Client, id: JobId) -> anyhow::Result<ExitCode> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} job {prefix} [{elapsed_precise}] {bar:30} {pos}/{len}  {msg}",
        )
        .expect("valid template"),
    );
    bar.set_prefix(id.to_string());
    let mut last_step = 0;
    let detach = tokio::signal::ctrl_c();
    tokio::pin!(detach);
    let job: JobInfo = loop {
        let job = client.job(id).await?;
        bar.set_length(job.total_steps);
        bar.set_position(job.step);
        let points = client
            .metrics(
                id,
                &MetricQuery {
                    from_step: Some(last_step + 1),
                    max_points: Some(1000),
                    ..MetricQuery::default()
                },
            )
            .await?;
        for p in points {
            last_step = last_step.max(p.metric.step);
            match p.metric.split {
                Split::Train => bar.set_message(format!(
                    "loss {:.4}{}",
                    p.metric.loss,
                    p.metric
                        .accuracy
                        .map(|a| format!("  acc {a:.3}"))
                        .unwrap_or_default()
                )),
                split => bar.println(format!(
                    "step {:>6} {:<5} loss {:.4}{}",
                    p.metric.step,
                    format!("{split:?}").to_lowercase(),
                    p.metric.loss,
                    p.metric
                        .accuracy
                        .map(|a| format!("  accuracy {a:.4}"))
                        .unwrap_or_default()
                )),
            }
        }
        if job.state.is_terminal() {
            break job;
        }
        tokio::select! {
            _ = &mut detach => {
                bar.abandon();
                println!("detached; job {id} keeps running (kiln job {id})");
                return Ok(ExitCode::SUCCESS);
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    };
    bar.finish_and_clear();
    println!(
        "job {} {}{}",
        job.id,
        job.state.as_str(),
        job.error.map(|e| format!(": {e}")).unwrap_or_default()
    );
    Ok(if job.state == JobState::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
