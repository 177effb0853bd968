//! `/s/<token>`: a run shared read-only. Opens without a token and shows that run — charts,
//! spec, final metrics — and nothing else; a revoked or unknown link shows a not-found page.

use kiln_proto::protocol::{JobInfo, MetricPoint, SharedRun};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::{use_navigate, use_params_map, use_query_map};

use super::StateBadge;
use super::job::{FETCH_POINTS, FinalMetrics, RunCharts};
use crate::app::api;
use crate::app::chart::ChartView;

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
                        <h2>"Spec"</h2>
                        <pre class="spec" tabindex="0">{move || job.with(|j| j.as_ref().map(|j| j.spec.to_toml_string()).unwrap_or_default())}</pre>
                    </section>
                }.into_any(),
            }}
        </main>
    }
}
