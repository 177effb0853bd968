//! `/s/<token>`: a run shared read-only. Opens without a token and shows that run — charts,
//! spec, final metrics — and nothing else; a revoked or unknown link shows a not-found page.

use kiln_proto::protocol::{JobInfo, MetricPoint, SharedRun};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use kiln_proto::dataset::{DatasetKind, DatasetRef};
use kiln_proto::spec::DeviceRequest;
use kiln_proto::trainer::{FromTrainer, ToTrainer, stored_layout};

use super::StateBadge;
use super::compare::run_line;
use super::job::{FETCH_POINTS, FinalMetrics, RunCharts};
use crate::app::api;
use crate::app::chart::{Chart, ChartView};
use crate::app::trainer::Trainer;
use crate::runs::{Quantity, merge_live};

#[derive(Clone, PartialEq)]
enum Load {
    Loading,
    Found,
    Gone,
    Failed(String),
}

#[component]
pub fn SharedRunPage() -> impl IntoView {
    let params = use_params_map();
    let token = params
        .with_untracked(|p| p.get("token"))
        .unwrap_or_default();
    let state = RwSignal::new(Load::Loading);
    let job = RwSignal::new(None::<JobInfo>);
    let with_data = RwSignal::new(false);
    let points = RwSignal::new(Vec::<MetricPoint>::new());
    let detail = RwSignal::new(None::<Vec<MetricPoint>>);
    let zoom = RwSignal::new(None::<(f64, f64)>);
    let chart_view = use_query_map().with_untracked(ChartView::from_query);
    // Kept in the URL, so a shared link can carry the view it was read with.
    let navigate = use_navigate();
    Effect::new(move |_| {
        let Some(here) = crate::app::nav::here() else {
            return;
        };
        let url = chart_view.url(&here);
        if url != here {
            crate::app::nav::replace(&navigate, &url);
        }
    });
    let alive = StoredValue::new(true);
    on_cleanup(move || alive.set_value(false));

    let base = format!("/api/share/{}", api::enc(&token));
    spawn_local(async move {
        // Poll while the run is live: a share link has no event stream.
        loop {
            match api::get_public::<SharedRun>(&base).await {
                Ok(run) => {
                    let live = !run.job.state.is_terminal();
                    if let Ok(p) = api::get_public::<Vec<MetricPoint>>(&format!(
                        "{base}/metrics?max_points={FETCH_POINTS}"
                    ))
                    .await
                    {
                        let _ = points.try_set(p);
                    }
                    let _ = with_data.try_set(run.with_data);
                    let _ = job.try_set(Some(run.job));
                    let _ = state.try_set(Load::Found);
                    if !live {
                        break;
                    }
                }
                Err(e) if e.status == 404 || e.status == 400 => {
                    let _ = state.try_set(Load::Gone);
                    break;
                }
                Err(e) => {
                    let _ = state.try_set(Load::Failed(e.to_string()));
                }
            }
            gloo_timers::future::TimeoutFuture::new(2_000).await;
            if !alive.try_get_value().unwrap_or(false) {
                break;
            }
        }
    });

    view! {
        <header class="top shared">
            <a class="brand" href="/">"Kiln"</a>
            <span class="muted">"shared run (read-only)"</span>
        </header>
        <main>
            {move || match state.get() {
                Load::Loading => view! { <p class="muted">"Loading…"</p> }.into_any(),
                Load::Gone => view! {
                    <section class="notfound" data-share="gone">
                        <h1>"Link not found"</h1>
                        <p>"This share link does not exist or was revoked by the run's owner."</p>
                    </section>
                }.into_any(),
                Load::Failed(e) => view! { <p class="error" role="alert">{e}</p> }.into_any(),
                Load::Found => view! {
                    <section class="job" data-share="run">
                        {move || job.get().map(|j| view! {
                            <div class="title-row">
                                <h1>{j.name.clone()}</h1>
                                <StateBadge state=j.state/>
                            </div>
                            <p class="muted small">{format!("step {} of {}", j.step, j.total_steps)}</p>
                        })}
                        <FinalMetrics points/>
                        <RunCharts points detail zoom view=chart_view/>
                        <ReRun token=token.clone() job points with_data/>
                        <h2>"Spec"</h2>
                        <pre class="spec" tabindex="0">{move || job.with(|j| j.as_ref().map(|j| j.spec.to_toml_string()).unwrap_or_default())}</pre>
                    </section>
                }.into_any(),
            }}
        </main>
    }
}

/// Why a link without the run's data cannot re-run it.
const NO_DATA: &str = "The owner shared this run without its training data, so it cannot \
                       re-run in your browser.";

/// "Re-run in my browser": the shared spec trains in this tab (the trainer module, on the
/// shared run's stored dataset fetched through the link) — nothing is written to the owner's
/// coordinator — and its curve is drawn over the shared one.
#[component]
fn ReRun(
    token: String,
    job: RwSignal<Option<JobInfo>>,
    points: RwSignal<Vec<MetricPoint>>,
    /// Whether the link opens the run's stored data.
    with_data: RwSignal<bool>,
) -> impl IntoView {
    let mine = RwSignal::new(Vec::<MetricPoint>::new());
    let state = RwSignal::new("idle".to_string());
    let note = RwSignal::new(String::new());
    let trainer = StoredValue::new_local(None::<Trainer>);
    on_cleanup(move || trainer.set_value(None));
    let token = StoredValue::new(token);
    let on_message = move |message: FromTrainer, _parts: Vec<Vec<u8>>| match message {
        FromTrainer::Device { description, .. } => {
            let _ = note.try_set(format!("training here on {description}"));
        }
        FromTrainer::Started { .. } => {
            let _ = state.try_set("training".into());
        }
        FromTrainer::Metric { metric } => {
            mine.update(|p| merge_live(p, &[MetricPoint { attempt: 1, metric }]));
        }
        FromTrainer::Finished { outcome, steps, .. } => {
            let _ = state.try_set(
                if outcome == "completed" {
                    "done"
                } else {
                    "stopped"
                }
                .into(),
            );
            let _ = note.try_set(format!("your re-run: {outcome} after {steps} steps"));
        }
        FromTrainer::Failed { error } => {
            let _ = state.try_set("failed".into());
            let _ = note.try_set(error);
        }
        _ => {}
    };
    let start = move |_| {
        let Some(j) = job.get_untracked() else { return };
        let mut spec = j.spec.clone();
        let files_of =
            |spec: &mut kiln_proto::JobSpec| -> Result<Option<(String, String)>, String> {
                match DatasetRef::of(&spec.dataset) {
                None => Ok(None),
                Some(Ok(DatasetRef::Pinned(_))) if !with_data.get_untracked() => Err(
                    NO_DATA.into()),
                Some(Ok(DatasetRef::Pinned(_))) => {
                    let kind = DatasetKind::of(&spec.dataset).unwrap_or(DatasetKind::Text);
                    let (file, path) = stored_layout(kind);
                    spec.dataset.set_path(path.to_string());
                    Ok(Some((file.to_string(), format!("/api/share/{}/dataset", token.get_value()))))
                }
                _ => Err("this run's data is not stored on its coordinator, so it cannot re-run in a browser".into()),
            }
            };
        let fetch = match files_of(&mut spec) {
            Ok(f) => f,
            Err(e) => {
                state.set("failed".into());
                note.set(e);
                return;
            }
        };
        if trainer.with_value(Option::is_none) {
            match Trainer::spawn(on_message) {
                Ok(t) => trainer.set_value(Some(t)),
                Err(e) => {
                    note.set(e);
                    return;
                }
            }
        }
        mine.set(Vec::new());
        state.set("loading".into());
        note.set("fetching the data…".into());
        spawn_local(async move {
            let files = match fetch {
                None => Ok(vec![]),
                Some((file, url)) => api::get_public_bytes(&url).await.map(|b| vec![(file, b)]),
            };
            match files {
                Ok(files) => {
                    let (names, parts): (Vec<String>, Vec<Vec<u8>>) = files.into_iter().unzip();
                    trainer.with_value(|t| {
                        if let Some(t) = t {
                            t.send(
                                &ToTrainer::Train {
                                    spec: Box::new(spec),
                                    files: names,
                                    device: DeviceRequest::Auto,
                                    resume: false,
                                    no_gpu: None,
                                },
                                parts,
                            );
                        }
                    });
                }
                Err(e) => {
                    let _ = state.try_set("failed".into());
                    let _ = note.try_set(format!("cannot fetch the run's data: {e}"));
                }
            }
        });
    };
    let stop = move |_| {
        trainer.with_value(|t| {
            if let Some(t) = t {
                t.send(&ToTrainer::Stop, vec![]);
            }
        })
    };
    // The overlay charts exist once the re-run has points (a memo: not re-created per point).
    let has_mine = Memo::new(move |_| !mine.with(Vec::is_empty));
    let charts = move || {
        let zoom = RwSignal::new(None::<(f64, f64)>);
        [Quantity::Loss, Quantity::Accuracy].map(|q| {
            let s = Signal::derive(move || {
                let shared = points.with(|p| run_line("shared run", p, q));
                let yours = mine.with(|p| run_line("your re-run", p, q));
                shared.into_iter().chain(yours).collect::<Vec<_>>()
            });
            view! { <div class=format!("chart-{}", q.slug())><Chart title=q.label() series=s zoom smoothing=0.0 log_y=false/></div> }
        })
    };
    let losses = move || mine.with(|p| crate::runs::train_values(p, |m| Some(m.loss)));
    let running = move || matches!(state.get().as_str(), "loading" | "training");
    // A run on stored data whose link keeps the data private cannot re-run here.
    let no_data = move || {
        !with_data.get()
            && job.with(|j| {
                j.as_ref().is_some_and(|j| {
                    matches!(
                        DatasetRef::of(&j.spec.dataset),
                        Some(Ok(DatasetRef::Pinned(_)))
                    )
                })
            })
    };
    view! {
        <section class="rerun" data-rerun-state=move || state.get() data-rerun-losses=losses>
            <h2>"Re-run in my browser"</h2>
            <p class="muted small">"Trains this spec in your tab on the run's data; nothing is sent back to the owner."</p>
            <div class="actions">
                <button id="rerun" class="primary" on:click=start disabled=move || running() || no_data()>"Re-run in my browser"</button>
                <button id="rerun-stop" on:click=stop disabled=move || !running()>"Stop"</button>
            </div>
            <p class="rerun-note" role="status">{move || if no_data() && note.with(String::is_empty) { NO_DATA.to_string() } else { note.get() }}</p>
            {move || has_mine.get().then(|| view! { <div class="charts">{charts().into_iter().collect_view()}</div> })}
        </section>
    }
}
