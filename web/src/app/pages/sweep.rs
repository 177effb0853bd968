//! The sweep form: a base spec (TOML, from a preset) and grid axes, one job per combination,
//! grouped. Expansion is `kiln_proto::sweep`, the same as `kiln sweep --grid`.

use kiln_proto::JobSpec;
use kiln_proto::protocol::{JobInfo, SubmitJob};
use kiln_proto::sweep::{Axis, expand};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;

use super::ErrorLine;
use crate::app::api;
use crate::form::PRESETS;

fn plan(base: &str, grid: &str) -> Result<Vec<JobSpec>, String> {
    let base = JobSpec::from_toml_str(base).map_err(|e| format!("base spec: {e}"))?;
    let axes: Vec<Axis> = grid
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.parse::<Axis>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("grid: {e}"))?;
    if axes.is_empty() {
        return Err("grid: add at least one line like optimizer.lr=1e-3,3e-3".into());
    }
    expand(&base, &axes).map_err(|e| format!("grid: {e}"))
}

#[component]
pub fn SweepPage() -> impl IntoView {
    let navigate = use_navigate();
    let base = RwSignal::new(
        PRESETS
            .iter()
            .find(|p| p.0 == "synthetic")
            .map(|p| p.2)
            .unwrap_or_default()
            .to_string(),
    );
    let grid = RwSignal::new("optimizer.lr=0.001,0.003\ntraining.batch_size=32,64".to_string());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let preview = Memo::new(move |_| plan(&base.get(), &grid.get()));

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let specs = match preview.get_untracked() {
            Ok(s) => s,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        let stamp = format!("{:x}", api::now_ms() / 1000);
        let group = format!(
            "{}-sweep-{stamp}",
            specs[0].name.split('-').next().unwrap_or("sweep")
        );
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            for spec in specs {
                if let Err(e) = api::post::<_, JobInfo>(
                    "/api/jobs",
                    &SubmitJob {
                        spec,
                        group: Some(group.clone()),
                        tags: Vec::new(),
                    },
                )
                .await
                {
                    let _ = error.try_set(Some(format!(
                        "submitting failed part-way (group {group}): {e}"
                    )));
                    let _ = busy.try_set(false);
                    return;
                }
            }
            navigate(&format!("/?group={}", api::enc(&group)), Default::default());
        });
    };

    view! {
        <section class="sweep">
            <h1>"Sweep"</h1>
            <form on:submit=submit>
                <div class="presets">
                    <label for="sweep-preset">"Base spec from"</label>
                    <select id="sweep-preset" on:change=move |ev| {
                        let id = event_target_value(&ev);
                        if let Some(p) = PRESETS.iter().find(|p| p.0 == id) { base.set(p.2.to_string()); }
                    }>
                        {PRESETS.iter().map(|(id, label, _)| view! { <option value=*id selected=*id == "synthetic">{*label}</option> }).collect_view()}
                    </select>
                </div>
                <div class="columns">
                    <div class="field">
                        <label for="sweep-base">"Base spec (TOML)"</label>
                        <textarea id="sweep-base" rows="22" spellcheck="false"
                            prop:value=move || base.get() on:input=move |ev| base.set(event_target_value(&ev))></textarea>
                    </div>
                    <div class="field">
                        <label for="sweep-grid">"Grid: one field=value,value per line"</label>
                        <textarea id="sweep-grid" rows="6" spellcheck="false"
                            prop:value=move || grid.get() on:input=move |ev| grid.set(event_target_value(&ev))></textarea>
                        <div class="field-error" role="alert">{move || preview.get().err().unwrap_or_default()}</div>
                        <h2>"Jobs"</h2>
                        <ul class="plan">{move || preview.get().ok().map(|specs| specs.iter().map(|s| view! { <li>{s.name.clone()}</li> }).collect_view())}</ul>
                    </div>
                </div>
                <ErrorLine error/>
                <button type="submit" class="primary" disabled=move || busy.get() || preview.get().is_err()>
                    {move || format!("Submit {} jobs", preview.get().map(|s| s.len()).unwrap_or(0))}
                </button>
            </form>
        </section>
    }
}
