//! A job's live control on its page: pause and resume, a checkpoint now and another learning
//! rate (`POST /api/jobs/{id}/control`); and a fork from one of its checkpoints
//! (`POST /api/jobs/{id}/fork`), which opens the new job. What the coordinator answers (and
//! any newer job event) is what shows; the job's log says when the worker did it.

use kiln_proto::artifact::checkpoint_step;
use kiln_proto::protocol::{ArtifactInfo, ControlAction, ForkJob, JobId, JobInfo, JobState, lr_at};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::use_navigate;

use super::ErrorLine;
use crate::app::api;
use crate::live::take_newer;

/// `text` as a number for `field`, or the error to show.
fn number<T: std::str::FromStr>(field: &str, text: &str, allowed: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{field}: got {text:?}, allowed: {allowed}"))
}

#[component]
pub fn LiveControl(id: JobId, job: RwSignal<Option<JobInfo>>) -> impl IntoView {
    let navigate = use_navigate();
    // Memos: a running job changes several times a second, and re-creating the buttons and
    // inputs each time would swallow clicks and typing.
    let state = Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.state)));
    let live = Memo::new(move |_| {
        state
            .get()
            .is_some_and(|s| matches!(s, JobState::Queued | JobState::Running))
    });
    let running = Memo::new(move |_| state.get() == Some(JobState::Running));
    let paused = Memo::new(move |_| job.with(|j| j.as_ref().is_some_and(|j| j.paused)));
    // The base rate the job trains with now: the last one set live, else the spec's.
    let lr_now = Memo::new(move |_| {
        job.with(|j| {
            j.as_ref()
                .map(|j| lr_at(&j.lr_changes, u64::MAX, j.spec.optimizer.lr))
        })
    });
    let origin = Memo::new(move |_| job.with(|j| j.as_ref().and_then(|j| j.forked_from)));
    let error = RwSignal::new(None::<String>);
    let asked = RwSignal::new(None::<String>);
    let lr_draft = RwSignal::new(String::new());

    let control = move |action: ControlAction| {
        error.set(None);
        asked.set(None);
        spawn_local(async move {
            let answer = api::post::<_, JobInfo>(&format!("/api/jobs/{id}/control"), &action).await;
            match answer {
                Ok(j) => {
                    let _ = job.try_update(|shown| take_newer(shown, j));
                    let _ = asked.try_set(Some(format!(
                        "{} asked: the log says when it takes effect",
                        action.describe()
                    )));
                }
                Err(e) => {
                    let _ = error.try_set(Some(format!("{} failed: {e}", action.describe())));
                }
            }
        });
    };
    let set_lr = move |ev: SubmitEvent| {
        ev.prevent_default();
        let parsed = number::<f64>("lr", &lr_draft.get_untracked(), "a number > 0 and <= 10")
            .and_then(|lr| {
                let action = ControlAction::SetLr { lr };
                action
                    .validate()
                    .map(|()| action)
                    .map_err(|e| e.to_string())
            });
        match parsed {
            Ok(action) => {
                lr_draft.set(String::new());
                control(action);
            }
            Err(e) => error.set(Some(e)),
        }
    };

    // The fork form, opened on demand: the job's checkpoints are fetched then.
    let fork_open = RwSignal::new(false);
    let checkpoints = RwSignal::new(None::<Vec<u64>>);
    let fork_step = RwSignal::new(String::new());
    let fork_lr = RwSignal::new(String::new());
    let fork_max = RwSignal::new(String::new());
    let open_fork = move |_| {
        fork_open.set(true);
        error.set(None);
        checkpoints.set(None);
        spawn_local(async move {
            match api::get::<Vec<ArtifactInfo>>(&format!("/api/jobs/{id}/artifacts")).await {
                Ok(list) => {
                    let mut steps: Vec<u64> = list
                        .iter()
                        .filter_map(|a| checkpoint_step(&a.name))
                        .collect();
                    steps.sort_unstable();
                    if let Some(last) = steps.last() {
                        let _ = fork_step.try_set(last.to_string());
                    }
                    let _ = checkpoints.try_set(Some(steps));
                }
                Err(e) => {
                    let _ = error.try_set(Some(format!("cannot list checkpoints: {e}")));
                }
            }
        });
    };
    let fork = move |ev: SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Some(mut spec) = job.with_untracked(|j| j.as_ref().map(|j| j.spec.clone())) else {
            return;
        };
        let request = (|| {
            let step = number::<u64>("step", &fork_step.get_untracked(), "a checkpoint's step")?;
            let lr = fork_lr.get_untracked();
            let max = fork_max.get_untracked();
            let changed = !lr.trim().is_empty() || !max.trim().is_empty();
            if !lr.trim().is_empty() {
                spec.optimizer.lr = number("optimizer.lr", &lr, "a number > 0 and <= 10")?;
            }
            if !max.trim().is_empty() {
                spec.training.max_steps = Some(number(
                    "training.max_steps",
                    &max,
                    "a whole number of steps",
                )?);
            }
            Ok::<_, String>(ForkJob {
                step: Some(step),
                spec: changed.then_some(spec),
                tags: Vec::new(),
            })
        })();
        let request = match request {
            Ok(r) => r,
            Err(e) => {
                error.set(Some(e));
                return;
            }
        };
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::post::<_, JobInfo>(&format!("/api/jobs/{id}/fork"), &request).await {
                Ok(new) => navigate(&format!("/jobs/{}", new.id), Default::default()),
                Err(e) => {
                    let fields: Vec<String> = e.fields.iter().map(|f| f.to_string()).collect();
                    let text = if fields.is_empty() {
                        e.to_string()
                    } else {
                        fields.join("; ")
                    };
                    let _ = error.try_set(Some(format!("fork failed: {text}")));
                }
            }
        });
    };

    view! {
        <div class="live-control" aria-label="Live control">
            {move || live.get().then(|| view! {
                {move || if paused.get() {
                    view! { <button id="resume" on:click=move |_| control(ControlAction::Resume)>"Resume"</button> }.into_any()
                } else {
                    view! { <button id="pause" on:click=move |_| control(ControlAction::Pause)>"Pause"</button> }.into_any()
                }}
                {move || running.get().then(|| view! {
                    <button id="checkpoint-now" on:click=move |_| control(ControlAction::Checkpoint)>"Checkpoint now"</button>
                    <form class="inline" on:submit=set_lr>
                        <label class="inline small" for="live-lr">"Learning rate"</label>
                        <input id="live-lr" size="8" inputmode="decimal"
                            placeholder=move || lr_now.get().map(|lr| lr.to_string()).unwrap_or_default()
                            prop:value=move || lr_draft.get()
                            on:input=move |ev| lr_draft.set(event_target_value(&ev))/>
                        <button type="submit">"Set"</button>
                    </form>
                })}
            })}
            {move || paused.get().then(|| view! { <span class="badge paused">"paused"</span> })}
            <button id="fork-open" on:click=open_fork>"Fork…"</button>
            {move || origin.get().map(|o| view! {
                <span class="small muted forked-from">"forked from "
                    <A href=format!("/jobs/{}", o.job_id)>{format!("#{}", o.job_id)}</A>
                    {format!(" at step {}", o.step)}</span>
            })}
            {move || asked.get().map(|a| view! { <span class="small muted" role="status">{a}</span> })}
        </div>
        <ErrorLine error/>
        {move || {
            // `fork` holds the router's navigate (Clone, not Copy): one per rendering.
            let fork = fork.clone();
            fork_open.get().then(|| view! {
            <form class="fork" on:submit=fork aria-label="Fork">
                {move || match checkpoints.get() {
                    None => view! { <span class="muted small">"Looking for checkpoints…"</span> }.into_any(),
                    Some(steps) if steps.is_empty() => view! {
                        <span class="small">"This job has no checkpoint yet: ask a running job for one (Checkpoint now), or set training.checkpoint_every."</span>
                    }.into_any(),
                    Some(steps) => view! {
                        <label class="inline small">"From the checkpoint at step"
                            <select id="fork-step" on:change=move |ev| fork_step.set(event_target_value(&ev))
                                prop:value=move || fork_step.get()>
                                {steps.into_iter().rev().map(|s| view! { <option value=s.to_string()>{s.to_string()}</option> }).collect_view()}
                            </select>
                        </label>
                        <label class="inline small">"learning rate"
                            <input id="fork-lr" size="8" inputmode="decimal"
                                placeholder=move || job.with(|j| j.as_ref().map(|j| j.spec.optimizer.lr.to_string())).unwrap_or_default()
                                prop:value=move || fork_lr.get()
                                on:input=move |ev| fork_lr.set(event_target_value(&ev))/>
                        </label>
                        <label class="inline small">"max steps"
                            <input id="fork-max-steps" size="8" inputmode="numeric"
                                placeholder=move || job.with(|j| j.as_ref().and_then(|j| j.spec.training.max_steps).map(|m| m.to_string())).unwrap_or_default()
                                prop:value=move || fork_max.get()
                                on:input=move |ev| fork_max.set(event_target_value(&ev))/>
                        </label>
                        <button type="submit" id="fork-submit">"Fork"</button>
                    }.into_any(),
                }}
                <button type="button" on:click=move |_| fork_open.set(false)>"Close"</button>
            </form>
        })}}
    }
}
