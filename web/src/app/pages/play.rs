//! The playground (`/play`): train a model in this tab with the same spec form, the same
//! training core (the `kiln-trainer` wasm module in a Web Worker: WebGPU when the browser has
//! it, else the CPU) and the same charts as a job; stop and resume.

use std::collections::BTreeMap;

use kiln_proto::JobSpec;
use kiln_proto::artifact::checkpoint_step;
use kiln_proto::metric::Split;
use kiln_proto::protocol::{ArtifactInfo, JobId, JobInfo, MetricPoint};
use kiln_proto::spec::DeviceRequest;
use kiln_proto::trainer::{FromTrainer, ToTrainer};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;
use wasm_bindgen::JsCast;

use super::ErrorLine;
use super::job::{FinalMetrics, RunCharts};
use super::new_job::{SpecFields, checked_spec, stored_datasets};
use crate::app::api;
use crate::app::chart::ChartView;
use crate::app::trainer::Trainer;
use crate::form::values_from_spec;
use crate::play::{self, DataPlan, HIDDEN_FIELDS, PLAY_PRESETS, SaveAs};
use crate::runs::{merge_live, train_values};

/// Where the page is; `data-state` on the status line says it for tests.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Idle,
    Loading(String),
    Training,
    Stopped,
    Done,
    Failed(String),
}

impl Status {
    fn slug(&self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Loading(_) => "loading",
            Status::Training => "training",
            Status::Stopped => "stopped",
            Status::Done => "done",
            Status::Failed(_) => "failed",
        }
    }
}

/// What a run was started with, to resume it as it was.
#[derive(Clone)]
struct Started {
    spec: JobSpec,
    /// The spec as the form gave it (its data as the coordinator names it), to save the run.
    original: JobSpec,
    files: Vec<String>,
    parts: Vec<Vec<u8>>,
    device: DeviceRequest,
    /// The user's own file, when the run trains on one (uploaded as a dataset to save it).
    dropped: Option<String>,
}

/// What a run left when it ended: what "Save as a run" and "Continue on a worker" send.
#[derive(Clone)]
struct Ended {
    completed: bool,
    steps: u64,
    weights: Option<Vec<u8>>,
    model: serde_json::Value,
    summary: serde_json::Value,
    data: serde_json::Value,
    checkpoint: Option<Vec<u8>>,
    finished_ms: i64,
}

#[component]
pub fn PlayPage() -> impl IntoView {
    let query = use_query_map();
    let start = query
        .with_untracked(|q| q.get("preset"))
        .filter(|p| PLAY_PRESETS.iter().any(|(id, _)| id == p))
        .unwrap_or_else(|| "mnist-mlp".into());
    let preset = RwSignal::new(start.clone());
    let values = RwSignal::new(
        play::preset_spec(&start)
            .map(|s| values_from_spec(&s))
            .unwrap_or_default(),
    );
    let errors = RwSignal::new(BTreeMap::<String, Vec<String>>::new());
    let error = RwSignal::new(None::<String>);
    let device = RwSignal::new("auto".to_string());
    let status = RwSignal::new(Status::Idle);
    let device_line = RwSignal::new(None::<String>);
    let progress = RwSignal::new((0u64, 0u64));
    // The step the current run started at (0, or where a resumed run goes on).
    let start_step = RwSignal::new(0u64);
    let about = RwSignal::new(None::<String>);
    let points = RwSignal::new(Vec::<MetricPoint>::new());
    let detail = RwSignal::new(None::<Vec<MetricPoint>>);
    let zoom = RwSignal::new(None::<(f64, f64)>);
    let view = ChartView::from_query(&query.get_untracked());
    let checkpoint = StoredValue::new(None::<Vec<u8>>);
    let has_checkpoint = RwSignal::new(false);
    let started = StoredValue::new(None::<Started>);
    let chosen = StoredValue::new_local(None::<web_sys::File>);
    let chosen_name = RwSignal::new(None::<String>);
    let trainer = StoredValue::new_local(None::<Trainer>);
    let device_kind = RwSignal::new(String::new());
    let started_ms = StoredValue::new(0i64);
    let ended = StoredValue::new(None::<Ended>);
    // The job a finished run was saved as, and how; or why it could not be.
    let saved = RwSignal::new(None::<(JobId, SaveAs)>);
    let saving = RwSignal::new(false);
    let save_error = RwSignal::new(None::<String>);

    let (stored, stored_error) = stored_datasets();

    // "Continue in this browser": a job's newest checkpoint, resumed here (`?from=<job>`).
    let handoff = RwSignal::new(None::<(JobId, String, u64)>);
    if let Some(from) = query
        .with_untracked(|q| q.get("from"))
        .and_then(|f| f.parse::<JobId>().ok())
    {
        spawn_local(async move {
            let job = api::get::<JobInfo>(&format!("/api/jobs/{from}")).await;
            let artifacts =
                api::get::<Vec<ArtifactInfo>>(&format!("/api/jobs/{from}/artifacts")).await;
            let metrics = api::get::<Vec<MetricPoint>>(&format!("/api/jobs/{from}/metrics")).await;
            match (job, artifacts) {
                (Ok(job), Ok(artifacts)) => {
                    let newest = artifacts
                        .iter()
                        .filter_map(|a| checkpoint_step(&a.name).map(|s| (s, a.name.clone())))
                        .max();
                    let _ = values.try_set(values_from_spec(&job.spec));
                    let _ = preset.try_set(String::new());
                    let _ = device.try_set("cpu".into());
                    match newest {
                        Some((step, name)) => {
                            let _ = handoff.try_set(Some((from, name, step)));
                            if let Ok(m) = metrics {
                                let _ = points.try_set(m);
                            }
                        }
                        None => {
                            let _ = error.try_set(Some(format!(
                                "job {from} has no checkpoint to continue from (set training.checkpoint_every)"
                            )));
                        }
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ = error.try_set(Some(format!("cannot load job {from}: {e}")));
                }
            }
        });
    }

    let start_step_signal = start_step;
    // Metrics received but not yet charted (see the `Metric` arm).
    let pending = StoredValue::new(Vec::<MetricPoint>::new());
    let flush_scheduled = StoredValue::new(false);
    // When the first metric of the page's first run arrived (ms since navigation start): the
    // time from opening the page to training, for the browser benchmark.
    let first_metric_ms = RwSignal::new(None::<f64>);
    let on_message = move |message: FromTrainer, mut parts: Vec<Vec<u8>>| match message {
        FromTrainer::Ready | FromTrainer::Lending { .. } | FromTrainer::Predicted { .. } => {}
        FromTrainer::Device { description, kind } => {
            let _ = device_line.try_set(Some(description));
            let _ = device_kind.try_set(kind.to_string());
        }
        FromTrainer::Started {
            total_steps,
            start_step,
            parameters,
            train_examples,
        } => {
            let _ = progress.try_set((start_step, total_steps));
            let _ = start_step_signal.try_set(start_step);
            let _ = about.try_set(Some(format!(
                "{parameters} parameters · {train_examples} training examples · {total_steps} steps"
            )));
            let _ = status.try_set(Status::Training);
        }
        FromTrainer::Metric { metric } => {
            // Charts redraw at most every 100 ms, however fast the trainer reports: the main
            // thread stays free for the user.
            pending.update_value(|p| {
                p.push(MetricPoint {
                    attempt: 1,
                    metric: metric.clone(),
                })
            });
            if !flush_scheduled.get_value() {
                flush_scheduled.set_value(true);
                spawn_local(async move {
                    gloo_timers::future::TimeoutFuture::new(100).await;
                    flush_scheduled.set_value(false);
                    let batch = pending.try_update_value(std::mem::take).unwrap_or_default();
                    let _ = points.try_update(|p| merge_live(p, &batch));
                });
            }
            if first_metric_ms.get_untracked().is_none() {
                let now = web_sys::window()
                    .and_then(|w| w.performance())
                    .map(|p| p.now());
                let _ = first_metric_ms.try_set(now);
            }
            if metric.split == Split::Train {
                progress.update(|p| p.0 = metric.step);
            }
        }
        FromTrainer::Finished {
            outcome,
            steps,
            checkpoint: sent_checkpoint,
            weights,
            model,
            summary,
            data,
        } => {
            let batch = pending.try_update_value(std::mem::take).unwrap_or_default();
            points.update(|p| merge_live(p, &batch));
            // Parts: the weights, then the checkpoint.
            let ckpt = sent_checkpoint.then(|| parts.pop()).flatten();
            let weights = weights.then(|| parts.pop()).flatten();
            let _ = has_checkpoint.try_set(ckpt.is_some());
            checkpoint.set_value(ckpt.clone());
            ended.set_value(Some(Ended {
                completed: outcome == "completed",
                steps,
                weights,
                model,
                summary,
                data,
                checkpoint: ckpt,
                finished_ms: api::now_ms(),
            }));
            progress.update(|p| p.0 = steps);
            let _ = status.try_set(if outcome == "completed" {
                Status::Done
            } else {
                Status::Stopped
            });
        }
        FromTrainer::Failed { error } => {
            let _ = status.try_set(Status::Failed(error));
        }
    };

    // The trainer starts with the first run and stays for the next ones (the module loads
    // once); leaving the page terminates it.
    let ensure_trainer = move || -> Result<(), String> {
        if trainer.with_value(|t| t.is_some()) {
            return Ok(());
        }
        let t = Trainer::spawn(on_message)?;
        trainer.set_value(Some(t));
        Ok(())
    };
    on_cleanup(move || trainer.set_value(None));

    let send = move |s: Started, resume: Option<Vec<u8>>| {
        if let Err(e) = ensure_trainer() {
            status.set(Status::Failed(e));
            return;
        }
        let mut parts = s.parts.clone();
        let resuming = resume.is_some();
        parts.extend(resume);
        if !resuming {
            points.set(Vec::new());
            zoom.set(None);
            started_ms.set_value(api::now_ms());
        }
        saved.set(None);
        save_error.set(None);
        ended.set_value(None);
        status.set(Status::Loading(if resuming {
            "resuming…".into()
        } else {
            "loading the trainer…".into()
        }));
        trainer.with_value(|t| {
            if let Some(t) = t {
                t.send(
                    &ToTrainer::Train {
                        spec: Box::new(s.spec.clone()),
                        files: s.files.clone(),
                        device: s.device,
                        resume: resuming,
                        no_gpu: None,
                    },
                    parts,
                );
            }
        });
        started.set_value(Some(s));
    };

    let train = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Some(original) = checked_spec(values, None, errors, error) else {
            return;
        };
        let (spec, data) = match play::plan(&original, chosen_name.get_untracked().as_deref()) {
            Ok(p) => p,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        let device = match device.get_untracked().as_str() {
            "webgpu" => DeviceRequest::Webgpu,
            "cpu" => DeviceRequest::Cpu,
            _ => DeviceRequest::Auto,
        };
        status.set(Status::Loading("fetching the data…".into()));
        let data_kind = data.clone();
        spawn_local(async move {
            let fetched = match data {
                DataPlan::None => Ok(vec![]),
                DataPlan::Stored { url, file } => api::get_bytes(&url)
                    .await
                    .map(|b| vec![(file, b)])
                    .map_err(|e| format!("cannot fetch the dataset: {e}")),
                DataPlan::Dropped { file } => match chosen.with_value(|f| f.clone()) {
                    Some(f) => read_file(&f).await.map(|b| vec![(file, b)]),
                    None => Err("choose the file again".to_string()),
                },
            };
            match fetched {
                Ok(files) => {
                    let (files, parts) = files.into_iter().unzip();
                    let dropped = match &data_kind {
                        DataPlan::Dropped { file } => Some(file.clone()),
                        _ => None,
                    };
                    send(
                        Started {
                            spec,
                            original,
                            files,
                            parts,
                            device,
                            dropped,
                        },
                        None,
                    );
                }
                Err(e) => {
                    let _ = status.try_set(Status::Failed(e));
                }
            }
        });
    };

    let stop = move |_| {
        trainer.with_value(|t| {
            if let Some(t) = t {
                t.send(&ToTrainer::Stop, vec![]);
            }
        });
    };
    let resume = move |_| {
        if let (Some(s), Some(c)) = (started.get_value(), checkpoint.get_value()) {
            send(s, Some(c));
        }
    };

    let continue_here = move |_| {
        let Some((from, name, _)) = handoff.get_untracked() else {
            return;
        };
        error.set(None);
        let Some(original) = checked_spec(values, None, errors, error) else {
            return;
        };
        let (spec, data) = match play::plan(&original, None) {
            Ok(p) => p,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        status.set(Status::Loading(
            "fetching the checkpoint and the data…".into(),
        ));
        spawn_local(async move {
            let ckpt = api::get_bytes(&format!("/api/jobs/{from}/artifacts/{name}")).await;
            let files = match data {
                DataPlan::Stored { url, file } => {
                    api::get_bytes(&url).await.map(|b| vec![(file, b)])
                }
                DataPlan::None => Ok(vec![]),
                DataPlan::Dropped { .. } => Ok(vec![]),
            };
            match (ckpt, files) {
                (Ok(ckpt), Ok(files)) => {
                    let (files, parts) = files.into_iter().unzip();
                    // The CPU module: Burn loads the optimizer state on its default device.
                    started_ms.set_value(api::now_ms());
                    send(
                        Started {
                            spec,
                            original,
                            files,
                            parts,
                            device: DeviceRequest::Cpu,
                            dropped: None,
                        },
                        Some(ckpt),
                    );
                }
                (Err(e), _) | (_, Err(e)) => {
                    let _ =
                        status.try_set(Status::Failed(format!("cannot continue job {from}: {e}")));
                }
            }
        });
    };

    // "Save as a run" / "Continue on a worker": the ended run goes to the coordinator.
    let save = move |how: SaveAs| {
        let (Some(s), Some(end)) = (started.get_value(), ended.get_value()) else {
            return;
        };
        saving.set(true);
        save_error.set(None);
        let all_points = points.get_untracked();
        let device_used = device_kind.get_untracked();
        let (_, total) = progress.get_untracked();
        spawn_local(async move {
            let outcome = async {
                let mut spec = s.original.clone();
                // The user's own file travels as a stored dataset, so the job can be re-run,
                // shared and continued like any other.
                if let Some(file) = &s.dropped {
                    let bytes = s
                        .files
                        .iter()
                        .position(|f| f == file)
                        .and_then(|i| s.parts.get(i))
                        .ok_or("the file is no longer here: train again")?;
                    let digest = store_dataset(file, &spec, bytes).await?;
                    spec.dataset
                        .set_path(format!("kiln:sha256:{}", digest.hex()));
                }
                let run = play::import_run(
                    &play::TabRun {
                        spec: &spec,
                        points: &all_points,
                        completed: end.completed,
                        step: end.steps,
                        total_steps: total,
                        device: if device_used.is_empty() {
                            "cpu"
                        } else {
                            &device_used
                        },
                        started_ms: started_ms.get_value(),
                        finished_ms: end.finished_ms,
                    },
                    how,
                )?;
                let files = play::import_files(
                    end.weights.clone(),
                    &end.model,
                    &end.summary,
                    &end.data,
                    end.checkpoint.clone().map(|c| (end.steps, c)),
                );
                api::import_run(&run, files)
                    .await
                    .map_err(|e| e.to_string())
            }
            .await;
            let _ = saving.try_set(false);
            match outcome {
                Ok(job) => {
                    let _ = saved.try_set(Some((job.id, how)));
                    if how == SaveAs::ContinueOnWorker {
                        api::go(&format!("/jobs/{}", job.id));
                    }
                }
                Err(e) => {
                    let _ = save_error.try_set(Some(e));
                }
            }
        });
    };

    let choose_file = move |ev: leptos::ev::Event| {
        let input = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok());
        let Some(file) = input.and_then(|i| i.files()).and_then(|l| l.get(0)) else {
            return;
        };
        let name = file.name();
        match play::check_file(&name, file.size() as u64) {
            Ok(kind) => {
                values.update(|v| {
                    v.insert("dataset.kind".into(), kind.as_str().into());
                    v.insert("dataset.path".into(), name.clone());
                });
                errors.update(|e| {
                    e.remove("dataset.path");
                    e.remove("dataset.kind");
                });
                chosen.set_value(Some(file));
                chosen_name.set(Some(name));
                error.set(None);
            }
            Err(e) => {
                chosen.set_value(None);
                chosen_name.set(None);
                error.set(Some(e));
            }
        }
    };

    let busy = move || matches!(status.get(), Status::Loading(_) | Status::Training);
    let ended_here = move || matches!(status.get(), Status::Done | Status::Stopped);
    let can_continue_on_worker =
        move || status.get() == Status::Stopped && has_checkpoint.get() && !saving.get();
    let can_resume = move || status.get() == Status::Stopped && has_checkpoint.get();
    let status_text = move || match status.get() {
        Status::Idle => "Not started.".to_string(),
        Status::Loading(what) => what,
        Status::Training => {
            let (step, total) = progress.get();
            format!("Training: step {step} of {total}")
        }
        Status::Stopped if has_checkpoint.get() && device_kind.get() == "webgpu" => format!(
            "Stopped at step {}. Resume continues from there with the same weights; the \
             optimizer's state starts afresh (Burn reads it only synchronously, which WebGPU does \
             not allow — train on the CPU to keep it).",
            progress.get().0
        ),
        Status::Stopped if has_checkpoint.get() => format!(
            "Stopped at step {}. Resume continues from there.",
            progress.get().0
        ),
        Status::Stopped => format!("Stopped at step {}.", progress.get().0),
        Status::Done => format!("Done: {} steps.", progress.get().0),
        Status::Failed(e) => format!("Failed: {e}"),
    };

    let train_rates = move || points.with(|p| train_values(p, |m| m.samples_per_sec));
    let train_losses = move || points.with(|p| train_values(p, |m| Some(m.loss)));

    view! {
        // The training losses, for tests and benchmarks (the chart's canvas holds no values).
        <section class="play" data-train-losses=train_losses data-train-rates=train_rates
            data-first-metric-ms=move || first_metric_ms.get().map(|ms| format!("{ms:.1}")).unwrap_or_default()>
            <h1>"Playground"</h1>
            <p class="muted">"Trains in this tab — the same model code and training loop as a worker, \
                compiled to WebAssembly and run in a Web Worker, so the page stays responsive."</p>
            <div class="presets">
                <label for="preset">"Start from"</label>
                <select id="preset" prop:value=move || preset.get() on:change=move |ev| {
                    let p = event_target_value(&ev);
                    if let Some(s) = play::preset_spec(&p) {
                        values.set(values_from_spec(&s));
                        errors.set(Default::default());
                        chosen_name.set(None);
                        chosen.set_value(None);
                    }
                    preset.set(p);
                }>
                    {PLAY_PRESETS.iter().map(|(id, label)| view! { <option value=*id>{*label}</option> }).collect_view()}
                </select>
                <label for="play-device">"Device"</label>
                <select id="play-device" prop:value=move || device.get()
                    on:change=move |ev| device.set(event_target_value(&ev))>
                    <option value="auto">"auto (WebGPU if this browser has it, else the CPU)"</option>
                    <option value="webgpu">"webgpu"</option>
                    <option value="cpu">"cpu (WebAssembly)"</option>
                </select>
            </div>
            {move || handoff.get().map(|(from, _, step)| view! {
                <p class="handoff">
                    {format!("Job #{from}'s newest checkpoint is at step {step}: continue it here, on this tab's CPU \
                        (raise training.epochs or max_steps to train further). ")}
                    <button type="button" id="play-continue" class="primary" on:click=continue_here
                        disabled=busy>"Continue in this browser"</button>
                </p>
            })}
            <form on:submit=train novalidate>
                <SpecFields values errors stored stored_error hidden=HIDDEN_FIELDS/>
                <fieldset><legend>"Your own data"</legend>
                    <div class="field" data-field="play.file">
                        <label for="play-file">"A CSV or text file"</label>
                        <input id="play-file" type="file" accept=".csv,.txt,.md,text/*" on:change=choose_file/>
                        <small class="help">"read in this tab only; sets the dataset's kind and path (for a CSV, set its label column)"</small>
                    </div>
                </fieldset>
                <ErrorLine error/>
                <div class="actions">
                    <button type="submit" class="primary" disabled=busy>"Train in this tab"</button>
                    <button type="button" id="play-stop" on:click=stop disabled=move || !busy()>"Stop"</button>
                    <button type="button" id="play-resume" on:click=resume disabled=move || !can_resume()>"Resume"</button>
                </div>
            </form>
            {move || ended_here().then(|| view! {
                <div class="play-save actions">
                    <button type="button" id="play-save" on:click=move |_| save(SaveAs::Run)
                        disabled=move || saving.get() || saved.get().is_some()>"Save as a run"</button>
                    <button type="button" id="play-continue-worker" on:click=move |_| save(SaveAs::ContinueOnWorker)
                        disabled=move || !can_continue_on_worker()
                        title="Submit a job that resumes this run's checkpoint on a worker, at its step">"Continue on a worker"</button>
                    {move || saved.get().map(|(id, _)| view! {
                        <span class="play-saved" data-job=id.to_string()>
                            "Saved as "<a href=format!("/jobs/{id}")>{format!("run #{id}")}</a>
                        </span>
                    })}
                    {move || saving.get().then(|| view! { <span class="muted">"saving…"</span> })}
                </div>
                <ErrorLine error=save_error/>
            })}
            <p class="play-status" role="status" data-state=move || status.get().slug()
                data-step=move || progress.get().0.to_string()
                data-start-step=move || start_step.get().to_string()>{status_text}</p>
            {move || device_line.get().map(|d| view! { <p class="play-device">"Device: "{d}</p> })}
            {move || about.get().map(|a| view! { <p class="muted small">{a}</p> })}
            <FinalMetrics points/>
            <RunCharts points detail zoom view/>
        </section>
    }
}

/// A file the user chose, read whole (its size was checked when it was chosen).
async fn read_file(file: &web_sys::File) -> Result<Vec<u8>, String> {
    let buffer = wasm_bindgen_futures::JsFuture::from(file.array_buffer())
        .await
        .map_err(|e| format!("cannot read {}: {e:?}", file.name()))?;
    Ok(js_sys::Uint8Array::new(&buffer).to_vec())
}

/// Store the user's file as a dataset (named after it; a new version if the name exists) and
/// return its digest.
async fn store_dataset(
    file: &str,
    spec: &JobSpec,
    bytes: &[u8],
) -> Result<kiln_proto::dataset::Digest, String> {
    use kiln_proto::dataset::{DatasetKind, name_from_file};
    let mut hasher = crate::datasets::Hasher::default();
    hasher.update(bytes);
    let digest = hasher.finish();
    let kind = DatasetKind::of(&spec.dataset).unwrap_or(DatasetKind::Text);
    let url = crate::datasets::upload_url(&name_from_file(file), kind, &digest)?;
    let parts = js_sys::Array::of1(&js_sys::Uint8Array::from(bytes));
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts)
        .map_err(|_| "cannot hold the file for the upload".to_string())?;
    crate::app::upload::put(&url, &blob, |_, _| {})
        .await
        .map_err(|e| format!("cannot store {file} as a dataset: {e}"))?;
    Ok(digest)
}
