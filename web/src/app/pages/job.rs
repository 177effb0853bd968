//! One run: live charts, final metrics, log tail, spec, artifacts, attempts, share links;
//! cancel and retry; live control and forks (`control`). `?from=&to=` in the URL is the zoomed
//! step range.

use kiln_proto::downsample::downsample;
use kiln_proto::protocol::{
    ArtifactInfo, AttemptInfo, CreateShare, JobId, JobInfo, JobState, LogEntry, MetricPoint,
    NewShare, ServerEvent, ShareInfo, WorkerInfo, controlled_step,
};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use super::annotate::Annotations;
use super::control::LiveControl;
use super::try_it::TryIt;
use super::{ErrorLine, Progress, StateBadge};
use crate::app::chart::{Chart, ChartControls, ChartView};
use crate::app::{api, events};
use crate::datasets::{JobDataset, job_dataset};
use crate::live::take_newer;
use crate::runs::{Quantity, age, final_values, fmt_value, merge_live, series};

/// Points asked of the coordinator per view (it downsamples with LTTB).
pub const FETCH_POINTS: usize = 2000;
/// Points a live chart keeps before downsampling again.
const LIVE_BUDGET: usize = 4000;
const LOG_TAIL: usize = 300;

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.with(|p| p.get("id").and_then(|s| s.parse::<JobId>().ok()));
    move || match id() {
        Some(id) => view! { <JobView id/> }.into_any(),
        None => view! { <super::NotFound/> }.into_any(),
    }
}

fn metrics_url(base: &str, range: Option<(f64, f64)>) -> String {
    let mut url = format!("{base}?max_points={FETCH_POINTS}");
    if let Some((a, b)) = range {
        url.push_str(&format!(
            "&from_step={}&to_step={}",
            a.max(0.0) as u64,
            b.max(0.0) as u64
        ));
    }
    url
}

/// The zoom range from `?from=&to=`.
pub fn zoom_from_query(q: &leptos_router::params::ParamsMap) -> Option<(f64, f64)> {
    let from = q.get("from")?.parse::<f64>().ok()?;
    let to = q.get("to")?.parse::<f64>().ok()?;
    (from < to).then_some((from, to))
}

/// Charts of one run; `detail` holds a re-fetch of the zoomed range at full resolution.
#[component]
pub fn RunCharts(
    points: RwSignal<Vec<MetricPoint>>,
    detail: RwSignal<Option<Vec<MetricPoint>>>,
    zoom: RwSignal<Option<(f64, f64)>>,
    /// Smoothing of loss, accuracy and samples/s (the learning rate is a schedule, not a
    /// noisy measurement, and is always drawn as it is); a log-scale loss.
    view: ChartView,
    /// Steps where a live control took effect, marked on every chart.
    #[prop(optional)]
    marks: Option<Signal<Vec<f64>>>,
) -> impl IntoView {
    let marks = marks.unwrap_or_else(|| Signal::stored(Vec::new()));
    let charts = Quantity::ALL.map(|q| {
        let smoothing = Signal::derive(move || {
            if q == Quantity::Lr {
                0.0
            } else {
                view.smoothing.get()
            }
        });
        let log_y = Signal::derive(move || q == Quantity::Loss && view.log_loss.get());
        let s = Signal::derive(move || {
            let range = zoom.get();
            match (range, detail.get()) {
                (Some(r), Some(d)) => series(&d, q, Some(r)),
                _ => points.with(|p| series(p, q, range)),
            }
        });
        view! { <div class=format!("chart-{}", q.slug())><Chart title=q.label() series=s zoom smoothing log_y marks/></div> }
    });
    let from = RwSignal::new(String::new());
    let to = RwSignal::new(String::new());
    Effect::new(move |_| {
        let z = zoom.get();
        from.set(z.map(|z| format!("{}", z.0)).unwrap_or_default());
        to.set(z.map(|z| format!("{}", z.1)).unwrap_or_default());
    });
    let apply = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let (a, b) = (
            from.get_untracked().parse::<f64>(),
            to.get_untracked().parse::<f64>(),
        );
        if let (Ok(a), Ok(b)) = (a, b)
            && a < b
        {
            zoom.set(Some((a, b)));
        }
    };
    view! {
        <form class="zoom" on:submit=apply aria-label="Step range">
            <label for="zoom-from">"Steps from"</label>
            <input id="zoom-from" type="number" min="0" prop:value=move || from.get()
                on:input=move |ev| from.set(event_target_value(&ev))/>
            <label for="zoom-to">"to"</label>
            <input id="zoom-to" type="number" min="0" prop:value=move || to.get()
                on:input=move |ev| to.set(event_target_value(&ev))/>
            <button type="submit">"Zoom"</button>
            <button type="button" on:click=move |_| zoom.set(None) disabled=move || zoom.get().is_none()>
                "Reset zoom"
            </button>
            <span class="muted small">"or drag across a chart; double-click resets"</span>
        </form>
        <ChartControls view/>
        <div class="charts">{charts.into_iter().collect_view()}</div>
    }
}

/// "Final accuracy: test 0.95 · val 0.94" and the same for loss.
#[component]
pub fn FinalMetrics(points: RwSignal<Vec<MetricPoint>>) -> impl IntoView {
    let line = move |q: Quantity| {
        points.with(|p| {
            final_values(p, q)
                .into_iter()
                .map(|(split, v)| format!("{split} {}", fmt_value(v)))
                .collect::<Vec<_>>()
                .join(" · ")
        })
    };
    let accuracy =
        move || points.with(|p| final_values(p, Quantity::Accuracy).first().map(|(_, v)| *v));
    view! {
        <dl class="finals" data-final-accuracy=move || accuracy().map(fmt_value).unwrap_or_default()>
            <div><dt>"Final accuracy"</dt><dd class="final-accuracy">{move || {
                let l = line(Quantity::Accuracy);
                if l.is_empty() { "—".to_string() } else { l }
            }}</dd></div>
            <div><dt>"Final loss"</dt><dd>{move || {
                let l = line(Quantity::Loss);
                if l.is_empty() { "—".to_string() } else { l }
            }}</dd></div>
        </dl>
    }
}

#[component]
fn JobView(id: JobId) -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let job = RwSignal::new(None::<JobInfo>);
    let error = RwSignal::new(None::<String>);
    let action_error = RwSignal::new(None::<String>);
    let points = RwSignal::new(Vec::<MetricPoint>::new());
    let detail = RwSignal::new(None::<Vec<MetricPoint>>);
    let logs = RwSignal::new(Vec::<LogEntry>::new());
    let attempts = RwSignal::new(Vec::<AttemptInfo>::new());
    let artifacts = RwSignal::new(Vec::<ArtifactInfo>::new());
    // "Try it" once the run succeeded with a final model (a memo: the job's live events must
    // not re-create it).
    let try_ready = Memo::new(move |_| {
        job.with(|j| j.as_ref().is_some_and(|j| j.state == JobState::Succeeded))
            && artifacts.with(|a| a.iter().any(|a| a.name == "model.bpk"))
    });
    let shares = RwSignal::new(Vec::<ShareInfo>::new());
    let worker_names = RwSignal::new(std::collections::HashMap::<String, String>::new());
    let new_link = RwSignal::new(None::<String>);
    // Whether the next link shares the run's training data too (off: the data stays private).
    let share_data = RwSignal::new(false);
    let zoom = RwSignal::new(query.with_untracked(zoom_from_query));
    let chart_view = query.with_untracked(ChartView::from_query);
    let now = RwSignal::new(api::now_ms());
    // Where live controls took effect, as the log (its tail) says: marks on the charts.
    let control_marks = Memo::new(move |_| {
        logs.with(|l| {
            l.iter()
                .filter_map(|e| controlled_step(&e.line.text).map(|s| s as f64))
                .collect::<Vec<f64>>()
        })
    });

    let load_side = move || {
        spawn_local(async move {
            if let Ok(a) = api::get::<Vec<AttemptInfo>>(&format!("/api/jobs/{id}/attempts")).await {
                let _ = attempts.try_set(a);
            }
            if let Ok(a) = api::get::<Vec<ArtifactInfo>>(&format!("/api/jobs/{id}/artifacts")).await
            {
                let _ = artifacts.try_set(a);
            }
            if let Ok(s) = api::get::<Vec<ShareInfo>>(&format!("/api/jobs/{id}/shares")).await {
                let _ = shares.try_set(s);
            }
            if let Ok(w) = api::get::<Vec<WorkerInfo>>("/api/workers").await {
                let _ = worker_names.try_set(w.into_iter().map(|w| (w.id, w.name)).collect());
            }
        });
    };
    // Fetches, action answers and live events race: whichever copy of the job is newer by
    // the coordinator's revision is shown (`live::take_newer`), whatever arrives last.
    let load = move || {
        spawn_local(async move {
            let job_url = format!("/api/jobs/{id}");
            let url = metrics_url(&format!("/api/jobs/{id}/metrics"), None);
            let (j, p) = futures::join!(
                api::get::<JobInfo>(&job_url),
                api::get::<Vec<MetricPoint>>(&url)
            );
            match j {
                Ok(j) => {
                    let _ = job.try_update(|shown| take_newer(shown, j));
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                    return;
                }
            }
            // The fetched history, plus what arrived live beyond it meanwhile.
            if let Ok(mut p) = p {
                let _ = points.try_update(|held| {
                    let last = p.last().map(|x| x.metric.step);
                    let newer: Vec<MetricPoint> = held
                        .iter()
                        .filter(|x| last.is_none_or(|l| x.metric.step > l))
                        .cloned()
                        .collect();
                    merge_live(&mut p, &newer);
                    *held = p;
                });
            }
            if let Ok(mut l) =
                api::get::<Vec<LogEntry>>(&format!("/api/jobs/{id}/logs?limit=10000")).await
            {
                let cut = l.len().saturating_sub(LOG_TAIL);
                l.drain(..cut);
                let _ = logs.try_set(l);
            }
        });
        load_side();
    };
    load();

    // Zoomed: fetch the range at full resolution.
    Effect::new(move |_| {
        let range = zoom.get();
        detail.set(None);
        if let Some((a, b)) = range {
            spawn_local(async move {
                let url = metrics_url(&format!("/api/jobs/{id}/metrics"), Some((a, b)));
                if let Ok(p) = api::get::<Vec<MetricPoint>>(&url).await
                    && zoom.try_get_untracked().flatten() == Some((a, b))
                {
                    let _ = detail.try_set(Some(p));
                }
            });
        }
    });
    // Zoom and how the charts are drawn live in the URL.
    Effect::new(move |_| {
        let url = chart_view.url(&match zoom.get() {
            Some((a, b)) => format!("/jobs/{id}?from={a}&to={b}"),
            None => format!("/jobs/{id}"),
        });
        if crate::app::nav::here().as_deref() != Some(url.as_str()) {
            crate::app::nav::replace(&navigate, &url);
        }
    });

    events::subscribe(id);
    let listener = events::listen(move |event| match event {
        ServerEvent::Job { job: j } if j.id == id => {
            let ended = j.state.is_terminal();
            let taken = job.try_update(|shown| take_newer(shown, j.clone()));
            let _ = now.try_set(api::now_ms());
            if ended && taken == Some(true) {
                load_side();
            }
        }
        ServerEvent::Metrics {
            job_id,
            points: new,
        } if *job_id == id => {
            let _ = points.try_update(|p| {
                merge_live(p, new);
                if p.len() > LIVE_BUDGET {
                    *p = downsample(std::mem::take(p), FETCH_POINTS);
                }
            });
        }
        ServerEvent::Logs { job_id, lines } if *job_id == id => {
            let _ = logs.try_update(|l| {
                let mut seq = l.last().map(|e| e.seq).unwrap_or(0);
                l.extend(lines.iter().map(|line| {
                    seq += 1;
                    LogEntry {
                        seq,
                        line: line.clone(),
                    }
                }));
                let cut = l.len().saturating_sub(LOG_TAIL);
                l.drain(..cut);
            });
        }
        // A worker that joined after the names were fetched: name it, not its id.
        ServerEvent::Worker { worker } => {
            let known = worker_names.with_untracked(|m| m.get(&worker.id) == Some(&worker.name));
            if !known {
                let _ = worker_names.try_update(|m| {
                    m.insert(worker.id.clone(), worker.name.clone());
                });
            }
        }
        // (Re)connected: what a live job did meanwhile was not streamed. An ended job has
        // nothing to catch up on.
        ServerEvent::Welcome { .. }
            if job.with_untracked(|j| j.as_ref().is_none_or(|j| !j.state.is_terminal())) =>
        {
            load()
        }
        _ => {}
    });
    on_cleanup(move || {
        events::unlisten(listener);
        events::unsubscribe(id);
    });

    let act = move |what: &'static str| {
        action_error.set(None);
        // A cancel can end the job (and its event arrive) before this answer, which still
        // says running: the answer is shown only if it is newer than what is shown.
        spawn_local(async move {
            match api::post_empty::<JobInfo>(&format!("/api/jobs/{id}/{what}")).await {
                Ok(j) => {
                    let _ = job.try_update(|shown| take_newer(shown, j));
                }
                Err(e) => {
                    let _ = action_error.try_set(Some(format!("{what} failed: {e}")));
                }
            }
        });
    };
    let share = move |_| {
        action_error.set(None);
        spawn_local(async move {
            let options = CreateShare {
                with_data: share_data.get_untracked(),
            };
            match api::post::<_, NewShare>(&format!("/api/jobs/{id}/shares"), &options).await {
                Ok(s) => {
                    let origin = web_sys::window()
                        .and_then(|w| w.location().origin().ok())
                        .unwrap_or_default();
                    let _ = new_link.try_set(Some(format!("{origin}{}", s.path)));
                    let _ = shares.try_update(|l| l.insert(0, s.share));
                }
                Err(e) => {
                    let _ = action_error.try_set(Some(format!("share failed: {e}")));
                }
            }
        });
    };
    let revoke = move |share_id: i64| {
        spawn_local(async move {
            match api::delete::<ShareInfo>(&format!("/api/shares/{share_id}")).await {
                Ok(s) => {
                    let _ = shares.try_update(|l| {
                        if let Some(x) = l.iter_mut().find(|x| x.id == s.id) {
                            *x = s;
                        }
                    });
                }
                Err(e) => {
                    let _ = action_error.try_set(Some(format!("revoke failed: {e}")));
                }
            }
        });
    };

    let worker_name = move |id: Option<String>| match id {
        Some(id) => worker_names.with(|m| m.get(&id).cloned()).unwrap_or(id),
        None => "—".to_string(),
    };
    // A data-parallel attempt: every rank's worker, rank order.
    let ranks_of = move |a: &AttemptInfo| {
        (a.ranks.len() > 1).then(|| {
            a.ranks
                .iter()
                .map(|r| {
                    format!(
                        "{} (rank {})",
                        worker_name(Some(r.worker_id.clone())),
                        r.rank
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
    };
    let rank_workers = move || attempts.with(|a| a.last().and_then(ranks_of));
    let parallel = move || {
        let world = attempts.with(|a| a.last().map(|a| a.ranks.len()));
        job.with(|j| {
            let j = j.as_ref()?;
            let d = &j.spec.distributed;
            (d.workers > 1).then(|| d.describe(j.spec.training.batch_size, world))
        })
    };
    // Every rank's own throughput, as rank 0 last logged it (a slow rank stands out).
    let rank_rates = move || {
        logs.with(|l| {
            l.iter().rev().find_map(|e| {
                let (_, rates) = e.line.text.split_once("samples/s by rank at step ")?;
                let (_, rates) = rates.split_once(": ")?;
                Some(rates.to_string())
            })
        })
    };
    // Which transport the ranks chose, as the job's log says.
    let transport = move || {
        logs.with(|l| {
            l.iter().rev().find_map(|e| {
                let (_, t) = e.line.text.split_once("(transport: ")?;
                Some(t.trim_end_matches(')').to_string())
            })
        })
    };
    // The header re-renders only what changed: a running job updates several times a second,
    // and re-creating the buttons each time would swallow clicks on them.
    let state = Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.state)));
    let title = Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.name.clone())));
    let field = move |f: fn(&JobInfo) -> String| {
        move || job.with(|j| j.as_ref().map(f).unwrap_or_default())
    };
    let step = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref()
                .map(|j| (j.step, j.total_steps))
                .unwrap_or_default()
        })
    });
    let dataset = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref()
                .and_then(|j| job_dataset(j.spec.dataset.path(), j.dataset_name.as_deref()))
        })
    });
    let header = move || {
        title.get().map(|name| view! {
            <div class="title-row">
                <h1><span class="muted">{format!("#{id} ")}</span>{name}</h1>
                {move || state.get().map(|s| view! { <StateBadge state=s/> })}
                <span class="spacer"></span>
                {move || state.get().filter(|s| !s.is_terminal()).map(|_| view! {
                    <button class="danger" on:click=move |_| act("cancel")>"Cancel"</button>
                })}
                {move || state.get().filter(|s| matches!(s, JobState::Failed | JobState::Cancelled)).map(|_| view! {
                    <button on:click=move |_| act("retry")>"Retry"</button>
                })}
                <button on:click=share>"Share"</button>
                <label class="inline small" title="Whoever has the link can then download the run's stored dataset and re-run the run in their browser">
                    <input type="checkbox" id="share-with-data" prop:checked=move || share_data.get()
                        on:change=move |ev| share_data.set(event_target_checked(&ev))/>
                    "with its training data"
                </label>
                <A href=format!("/new?from={id}") attr:class="button">"New job like this"</A>
                <A href=format!("/compare?ids={id}") attr:class="button">"Compare…"</A>
            </div>
            <dl class="facts">
                <div><dt>"Progress"</dt><dd>{move || { let (s, t) = step.get(); view! { <Progress step=s total=t/> } }}
                    <span class="small muted">{move || { let (s, t) = step.get(); format!(" step {s} / {t}") }}</span></dd></div>
                {move || match rank_workers() {
                    Some(workers) => view! { <div><dt>"Workers"</dt><dd class="ranks">{workers}</dd></div> }.into_any(),
                    None => view! { <div><dt>"Worker"</dt><dd>{move || worker_name(job.with(|j| j.as_ref().and_then(|j| j.worker_id.clone())))}</dd></div> }.into_any(),
                }}
                {move || parallel().map(|p| view! { <div><dt>"Data-parallel"</dt><dd class="parallel">{p}</dd></div> })}
                {move || transport().map(|t| view! { <div><dt>"Transport"</dt><dd class="transport">{t}</dd></div> })}
                {move || rank_rates().map(|r| view! { <div><dt>"Samples/s by rank"</dt><dd class="rank-rates">{r}</dd></div> })}
                {move || dataset.get().map(|d| view! {
                    <div><dt>"Dataset"</dt><dd class="dataset">{match d {
                        JobDataset::Stored { label, href, reference } => view! {
                            <A href=href attr:title=reference.clone() attr:data-reference=reference>{label}</A>
                        }.into_any(),
                        JobDataset::Local(path) => view! {
                            <code>{path}</code>" "<span class="muted small">"(on the worker)"</span>
                        }.into_any(),
                    }}</dd></div>
                })}
                <div><dt>"Device"</dt><dd>{field(|j| j.spec.device.as_str().to_string())}</dd></div>
                <div><dt>"Submitted"</dt><dd>{move || job.with(|j| j.as_ref().map(|j| j.created_ms)).map(|t| format!("{} ago", age(t, now.get())))}</dd></div>
                <div><dt>"Attempts"</dt><dd>{field(|j| format!("{} of {}", j.attempts, j.max_attempts))}</dd></div>
                {move || job.with(|j| j.as_ref().and_then(|j| j.group.clone())).map(|g| view! {
                    <div><dt>"Group"</dt><dd><A href=format!("/?group={}", api::enc(&g))>{g.clone()}</A></dd></div>
                })}
            </dl>
            {move || job.with(|j| j.as_ref().and_then(|j| j.error.clone())).map(|e| view! { <p class="error" role="alert">{e}</p> })}
        })
    };

    view! {
        <section class="job">
            <ErrorLine error/>
            {header}
            <ErrorLine error=action_error/>
            {move || new_link.get().map(|link| view! {
                <div class="share-new" role="status">
                    <label for="share-link">"Read-only link (anyone with it can see this run):"</label>
                    <input id="share-link" readonly prop:value=link.clone()/>
                    <button on:click=move |_| {
                        if let Some(w) = web_sys::window() {
                            let _ = w.navigator().clipboard().write_text(&link);
                        }
                    }>"Copy"</button>
                </div>
            })}
            {move || title.get().is_some().then(|| view! { <LiveControl id job/> })}
            {move || title.get().is_some().then(|| view! { <Annotations id job/> })}
            <FinalMetrics points/>
            <RunCharts points detail zoom view=chart_view marks=Signal::from(control_marks)/>
            <div class="columns">
                <section>
                    <h2>"Log"</h2>
                    <pre class="log" aria-label="Log tail" tabindex="0">{move || logs.with(|l| {
                        l.iter().map(|e| e.line.text.as_str()).collect::<Vec<_>>().join("\n")
                    })}</pre>
                </section>
                <section>
                    <h2>"Spec"</h2>
                    <pre class="spec" tabindex="0">{move || job.with(|j| j.as_ref().map(|j| j.spec.to_toml_string()).unwrap_or_default())}</pre>
                </section>
            </div>
            <div class="columns">
                <section>
                    <h2>"Artifacts"</h2>
                    <ul class="artifacts">
                        <For each=move || artifacts.get() key=|a| a.name.clone() let:a>
                            {
                                let name = a.name.clone();
                                view! { <li>
                                    <button class="link" on:click=move |_| {
                                        let name = name.clone();
                                        spawn_local(async move {
                                            let file = name.rsplit('/').next().unwrap_or(&name).to_string();
                                            if let Err(e) = api::download(&format!("/api/jobs/{id}/artifacts/{name}"), &file).await {
                                                let _ = action_error.try_set(Some(e.to_string()));
                                            }
                                        });
                                    }>{a.name.clone()}</button>
                                    <span class="muted small">{format!(" {:.1} KB", a.size as f64 / 1024.0)}</span>
                                </li> }
                            }
                        </For>
                    </ul>
                    {move || artifacts.with(Vec::is_empty).then(|| view! { <p class="muted">"None yet."</p> })}
                    {move || artifacts.with(|a| a.iter().any(|a| kiln_proto::artifact::checkpoint_step(&a.name).is_some())).then(|| view! {
                        <p><A href=format!("/play?from={id}") attr:id="continue-in-browser">"Continue in this browser"</A>
                            <span class="muted small">" — its newest checkpoint resumes in the playground"</span></p>
                    })}
                </section>
                <section>
                    <h2>"Attempts"</h2>
                    <table class="attempts">
                        <thead><tr><th>"#"</th><th>"Worker"</th><th>"State"</th><th>"Resumed at"</th><th>"Error"</th></tr></thead>
                        <tbody>
                            <For each=move || attempts.get() key=|a| (a.attempt, a.state) let:a>
                                <tr>
                                    <td>{a.attempt}</td>
                                    <td title=a.worker_id.clone()>{
                                        let a = a.clone();
                                        move || ranks_of(&a).unwrap_or_else(|| worker_name(Some(a.worker_id.clone())))
                                    }</td>
                                    <td><StateBadge state=a.state/></td>
                                    <td>{a.resumed_from_step.map(|s| format!("step {s}")).unwrap_or_else(|| "—".into())}</td>
                                    <td>{a.error.clone().unwrap_or_default()}</td>
                                </tr>
                            </For>
                        </tbody>
                    </table>
                </section>
            </div>
            {move || try_ready.get().then(|| job.with_untracked(|j| j.as_ref().map(|j| view! {
                <TryIt id spec=j.spec.clone()/>
            })))}
            <section>
                <h2>"Share links"</h2>
                <table class="shares">
                    <thead><tr><th>"Link"</th><th>"Created"</th><th>"Status"</th><th>"Data"</th><th><span class="sr-only">"Actions"</span></th></tr></thead>
                    <tbody>
                        <For each=move || shares.get() key=|s| (s.id, s.revoked_ms) let:s>
                            {
                                let sid = s.id;
                                view! { <tr data-share-id=sid>
                                    <td><code>{format!("/s/…{}", s.hint)}</code></td>
                                    <td>{move || format!("{} ago", age(s.created_ms, now.get()))}</td>
                                    <td>{if s.revoked_ms.is_some() { "revoked" } else { "active" }}</td>
                                    <td>{if s.with_data { "shared (re-runnable)" } else { "private" }}</td>
                                    <td>{s.revoked_ms.is_none().then(|| view! {
                                        <button class="danger" aria-label=format!("revoke link ending {}", s.hint)
                                            on:click=move |_| revoke(sid)>"Revoke"</button>
                                    })}</td>
                                </tr> }
                            }
                        </For>
                    </tbody>
                </table>
                {move || shares.with(Vec::is_empty).then(|| view! { <p class="muted">"No links yet: “Share” makes one."</p> })}
            </section>
        </section>
    }
}
