//! One module per page; small pieces several pages use live here.

use kiln_proto::protocol::JobState;
use leptos::prelude::*;
use leptos_router::components::A;

pub mod annotate;
pub mod compare;
pub mod control;
pub mod datasets;
pub mod job;
pub mod jobs;
pub mod login;
pub mod new_job;
pub mod play;
pub mod share;
pub mod sweep;
pub mod try_it;
pub mod workers;

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <section class="notfound">
            <h1>"Page not found"</h1>
            <p>"There is nothing at this address. " <A href="/">"Back to the jobs"</A></p>
        </section>
    }
}

#[component]
pub fn StateBadge(state: JobState) -> impl IntoView {
    view! { <span class=format!("badge {}", state.as_str())>{state.as_str()}</span> }
}

/// An error line, shown when there is one.
#[component]
pub fn ErrorLine(error: RwSignal<Option<String>>) -> impl IntoView {
    move || {
        error
            .get()
            .map(|e| view! { <p class="error" role="alert">{e}</p> })
    }
}

/// A progress bar with its percentage as text.
#[component]
pub fn Progress(step: u64, total: u64) -> impl IntoView {
    match crate::runs::progress(step, total) {
        Some(pct) => view! {
            <span class="progress" title=format!("step {step} of {total}")>
                <progress max="100" value=pct aria-label=format!("{pct:.0}% done")></progress>
                <span class="pct">{format!("{pct:.0}%")}</span>
            </span>
        }
        .into_any(),
        None => view! { <span class="muted">"—"</span> }.into_any(),
    }
}
