//! Workers: who is connected, with which devices, running what; drain one.

use kiln_proto::protocol::{ServerEvent, WorkerInfo};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;

use super::ErrorLine;
use crate::app::trainer::{self, LendState};
use crate::app::{api, events};
use crate::live::LiveList;
use crate::runs::age;

#[component]
pub fn WorkersPage() -> impl IntoView {
    // Fetched lists and live events both update the page; the newer copy of a worker wins.
    let workers = RwSignal::new(LiveList::<WorkerInfo>::default());
    let error = RwSignal::new(None::<String>);
    let now = RwSignal::new(api::now_ms());
    let load = move || {
        spawn_local(async move {
            match api::get::<Vec<WorkerInfo>>("/api/workers").await {
                Ok(w) => {
                    // Workers are never deleted: nothing leaves the list.
                    let _ = workers.try_update(|l| l.snapshot(w, None, append));
                    let _ = now.try_set(api::now_ms());
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                }
            }
        });
    };
    load();
    let listener = events::listen(move |event| match event {
        ServerEvent::Worker { worker } => {
            let _ = workers.try_update(|list| list.event(worker.clone(), true, append));
            let _ = now.try_set(api::now_ms());
        }
        ServerEvent::Welcome { .. } => load(),
        _ => {}
    });
    on_cleanup(move || events::unlisten(listener));
    let drain = move |id: String| {
        spawn_local(async move {
            match api::post_empty::<WorkerInfo>(&format!("/api/workers/{}/drain", api::enc(&id)))
                .await
            {
                Ok(w) => {
                    let _ = workers.try_update(|l| l.event(w, true, append));
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                }
            }
        });
    };
    view! {
        <section>
            <h1>"Workers"</h1>
            <LendPanel/>
            <ErrorLine error/>
            <table class="workers">
                <thead><tr><th>"Name"</th><th>"Status"</th><th>"Devices"</th><th class="wide">"Cores / memory"</th>
                    <th>"Running"</th><th class="wide">"Last seen"</th><th><span class="sr-only">"Actions"</span></th></tr></thead>
                <tbody>
                    <For each=move || workers.with(|l| l.rows().to_vec()) key=|w| (w.id.clone(), w.revision) let:w>
                        {
                            let status = match (w.connected, w.draining) {
                                (false, _) => "offline",
                                (true, true) => "draining",
                                (true, false) => "online",
                            };
                            let devices = if w.capabilities.device_names.is_empty() {
                                w.capabilities.devices.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
                            } else {
                                w.capabilities.device_names.join(", ")
                            };
                            let id = w.id.clone();
                            view! {
                                <tr>
                                    <td title=w.id.clone()>{w.name.clone()}</td>
                                    <td><span class=format!("badge {status}")>{status}</span></td>
                                    <td>{devices}</td>
                                    <td class="wide">{format!("{} cores, {:.1} GiB", w.capabilities.cores, w.capabilities.memory_mb as f64 / 1024.0)}</td>
                                    <td>{w.running.map(|r| view! { <A href=format!("/jobs/{}", r.job_id)>{format!("job #{}", r.job_id)}</A> })}</td>
                                    <td class="wide">{move || format!("{} ago", age(w.last_seen_ms, now.get()))}</td>
                                    <td>{(w.connected && !w.draining).then(|| view! {
                                        <button aria-label=format!("drain {}", w.name) on:click=move |_| drain(id.clone())>"Drain"</button>
                                    })}</td>
                                </tr>
                            }
                        }
                    </For>
                </tbody>
            </table>
            {move || workers.with(|l| l.rows().is_empty()).then(|| view! {
                <p class="empty">"No workers yet. Start one with "<code>"kiln worker --server URL --token TOKEN"</code>"."</p>
            })}
        </section>
    }
}

/// Where a worker not shown yet goes: last (the coordinator lists connected workers first).
fn append(rows: &[WorkerInfo], _: &WorkerInfo) -> usize {
    rows.len()
}

/// "Lend this tab": this browser tab becomes a worker for `device = "webgpu"` jobs (WebGPU
/// where the browser has it, else its CPU), until stopped or closed.
#[component]
fn LendPanel() -> impl IntoView {
    let state = RwSignal::new(LendState::default());
    let now = trainer::watch_lending(move |s| {
        let _ = state.try_set(s.clone());
    });
    state.set(now);
    on_cleanup(trainer::unwatch_lending);
    let toggle = move |_| {
        if state.get_untracked().lending {
            trainer::unlend();
        } else if let Some(token) = api::token()
            && let Err(e) = trainer::lend(token)
        {
            state.update(|s| s.note = e);
        }
    };
    let line = move || {
        let s = state.get();
        let job = s.job.map(|j| match s.step {
            Some(step) => format!(" · running job #{j}, step {step}"),
            None => format!(" · running job #{j}"),
        });
        match (s.lending, s.connected) {
            (false, _) => format!("Not lent. {}", s.note),
            (true, false) => format!("Lending: {}", s.note),
            (true, true) => format!("Lent: connected as a worker{}", job.unwrap_or_default()),
        }
    };
    view! {
        <div class="lend">
            <button id="lend-tab" class:primary=move || !state.get().lending on:click=toggle>
                {move || if state.get().lending { "Stop lending" } else { "Lend this tab" }}
            </button>
            <span class="lend-status" role="status"
                data-lending=move || state.get().lending.to_string()
                data-connected=move || state.get().connected.to_string()
                data-job=move || state.get().job.map(|j| j.to_string()).unwrap_or_default()>
                {line}
            </span>
            <small class="help">"runs jobs submitted with device = \"webgpu\" in this tab (its GPU through \
                WebGPU, or its CPU); keep the tab open while it is lent"</small>
        </div>
    }
}
