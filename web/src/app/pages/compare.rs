//! Compare runs: their metrics overlaid, and a table of the hyperparameters that differ.
//! `?ids=3,7` in the URL.

use std::collections::BTreeSet;

use kiln_proto::protocol::{JobId, JobInfo, JobPage, MetricPoint};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::job::FETCH_POINTS;
use super::jobs::Tags;
use super::{ErrorLine, StateBadge};
use crate::app::api;
use crate::app::chart::{Chart, ChartControls, ChartView};
use crate::runs::{Quantity, Series, differing_fields, final_values, fmt_value, series};

/// The line of one run for a quantity: training loss; accuracy on val, else test, else train.
fn run_series(job: &JobInfo, points: &[MetricPoint], q: Quantity) -> Option<Series> {
    run_line(&format!("#{} {}", job.id, job.name), points, q)
}

/// The line of a run labelled `name` for a quantity (see [`run_series`]).
pub fn run_line(name: &str, points: &[MetricPoint], q: Quantity) -> Option<Series> {
    let all = series(points, q, None);
    let order: &[&str] = match q {
        Quantity::Loss => &["train", "val", "test"],
        _ => &["val", "test", "train"],
    };
    let pick = order
        .iter()
        .find_map(|want| all.iter().find(|s| s.label == *want))?;
    Some(Series {
        label: format!("{name} ({})", pick.label),
        points: pick.points.clone(),
    })
}

fn compare_url(ids: &str, view: ChartView) -> String {
    view.url(&if ids.is_empty() {
        "/compare".to_string()
    } else {
        format!("/compare?ids={ids}")
    })
}

#[component]
pub fn ComparePage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let ids = Memo::new(move |_| {
        query.with(|q| {
            q.get("ids")
                .unwrap_or_default()
                .split(',')
                .filter_map(|s| s.trim().parse::<JobId>().ok())
                .collect::<BTreeSet<_>>()
        })
    });
    let runs = RwSignal::new(Vec::<(JobInfo, Vec<MetricPoint>)>::new());
    let recent = RwSignal::new(Vec::<JobInfo>::new());
    let error = RwSignal::new(None::<String>);
    let zoom = RwSignal::new(None::<(f64, f64)>);
    let chart_view = query.with_untracked(ChartView::from_query);

    spawn_local(async move {
        if let Ok(page) = api::get::<JobPage>("/api/jobs?limit=50").await {
            let _ = recent.try_set(page.jobs);
        }
    });
    Effect::new(move |_| {
        let ids = ids.get();
        spawn_local(async move {
            let mut out = Vec::new();
            for id in ids {
                let job = api::get::<JobInfo>(&format!("/api/jobs/{id}")).await;
                let points = api::get::<Vec<MetricPoint>>(&format!(
                    "/api/jobs/{id}/metrics?max_points={FETCH_POINTS}"
                ))
                .await;
                match (job, points) {
                    (Ok(j), Ok(p)) => out.push((j, p)),
                    (Err(e), _) | (_, Err(e)) => {
                        let _ = error.try_set(Some(format!("job {id}: {e}")));
                    }
                }
            }
            let _ = runs.try_set(out);
        });
    });

    let keep_view_nav = navigate.clone();
    let toggle = move |id: JobId, on: bool| {
        let mut set = ids.get_untracked();
        if on {
            set.insert(id);
        } else {
            set.remove(&id);
        }
        let list: Vec<String> = set.iter().map(i64::to_string).collect();
        crate::app::nav::replace(
            &navigate,
            &untrack(|| compare_url(&list.join(","), chart_view)),
        );
    };
    // How the charts are drawn lives in the URL too.
    let keep_view = {
        let navigate = keep_view_nav;
        move || {
            let ids = ids.with_untracked(|s| s.iter().map(i64::to_string).collect::<Vec<_>>());
            let url = compare_url(&ids.join(","), chart_view);
            if crate::app::nav::here().as_deref() != Some(url.as_str()) {
                crate::app::nav::replace(&navigate, &url);
            }
        }
    };
    Effect::new(move |_| keep_view());

    let charts = [Quantity::Loss, Quantity::Accuracy].map(|q| {
        let log_y = Signal::derive(move || q == Quantity::Loss && chart_view.log_loss.get());
        let s = Signal::derive(move || {
            runs.with(|r| r.iter().filter_map(|(j, p)| run_series(j, p, q)).collect::<Vec<_>>())
        });
        view! { <div class=format!("chart-{}", q.slug())><Chart title=q.label() series=s zoom smoothing=chart_view.smoothing log_y/></div> }
    });

    let table = move || {
        runs.with(|r| {
            let specs: Vec<&kiln_proto::JobSpec> = r.iter().map(|(j, _)| &j.spec).collect();
            let diff = if specs.len() >= 2 { differing_fields(&specs) } else { Vec::new() };
            let finals = |q: Quantity| {
                r.iter()
                    .map(|(_, p)| final_values(p, q).first().map(|(s, v)| format!("{} ({s})", fmt_value(*v))).unwrap_or_else(|| "—".into()))
                    .collect::<Vec<_>>()
            };
            let head = r.iter().map(|(j, _)| view! {
                <th><A href=format!("/jobs/{}", j.id)>{format!("#{} {}", j.id, j.name)}</A> " " <StateBadge state=j.state/></th>
            }).collect_view();
            let rows = diff.into_iter().map(|(k, values)| view! {
                <tr class="differs"><th scope="row"><code>{k}</code></th>{values.into_iter().map(|v| view! { <td>{v}</td> }).collect_view()}</tr>
            }).collect_view();
            let final_rows = [("final accuracy", Quantity::Accuracy), ("final loss", Quantity::Loss)].map(|(label, q)| view! {
                <tr><th scope="row">{label}</th>{finals(q).into_iter().map(|v| view! { <td>{v}</td> }).collect_view()}</tr>
            });
            let tag_row = r.iter().any(|(j, _)| !j.tags.is_empty()).then(|| view! {
                <tr class="tags-row"><th scope="row">"tags"</th>{r.iter().map(|(j, _)| view! {
                    <td><Tags tags=j.tags.clone()/></td>
                }).collect_view()}</tr>
            });
            view! {
                <table class="compare">
                    <thead><tr><th>"Field"</th>{head}</tr></thead>
                    <tbody>{final_rows.into_iter().collect_view()}{tag_row}{rows}</tbody>
                </table>
            }
        })
    };

    view! {
        <section class="compare-page">
            <h1>"Compare runs"</h1>
            <ErrorLine error/>
            {move || (ids.with(BTreeSet::len) < 2).then(|| view! { <p class="muted">"Pick two or more runs below."</p> })}
            <ChartControls view=chart_view/>
            <div class="charts two">{charts.into_iter().collect_view()}</div>
            <h2>"Hyperparameters that differ"</h2>
            {table}
            <details class="picker" open=move || ids.with(BTreeSet::len) < 2>
                <summary>"Choose runs"</summary>
                <ul>
                    <For each=move || recent.get() key=|j| j.id let:j>
                        {
                            let id = j.id;
                            let toggle = toggle.clone();
                            view! { <li><label>
                                <input type="checkbox" prop:checked=move || ids.with(|s| s.contains(&id))
                                    on:change=move |ev| toggle(id, event_target_checked(&ev))/>
                                {format!(" #{} {} ({})", j.id, j.name, j.state.as_str())}
                            </label></li> }
                        }
                    </For>
                </ul>
            </details>
        </section>
    }
}
