//! A run's tags and notes on its job page: add and remove tags, write notes. Saved with
//! `PATCH /api/jobs/{id}`; the coordinator's answer (and any newer job event) is what shows.

use kiln_proto::protocol::{JobId, JobInfo, JobPatch, check_tag};
use leptos::prelude::*;
use leptos::task::spawn_local;

use leptos_router::components::A;

use crate::app::api;
use crate::live::take_newer;

#[component]
pub fn Annotations(id: JobId, job: RwSignal<Option<JobInfo>>) -> impl IntoView {
    let tags =
        Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.tags.clone()).unwrap_or_default()));
    let saved_notes =
        Memo::new(move |_| job.with(|j| j.as_ref().map(|j| j.notes.clone()).unwrap_or_default()));
    let new_tag = RwSignal::new(String::new());
    let tag_error = RwSignal::new(None::<String>);
    // The notes being written; `None` while not editing (then the saved notes show).
    let draft = RwSignal::new(None::<String>);
    let notes_error = RwSignal::new(None::<String>);
    let saving = RwSignal::new(false);
    // Only entering or leaving edit mode re-renders; typing must not re-create the textarea.
    let editing = Memo::new(move |_| draft.with(Option::is_some));

    let save = move |patch: JobPatch, done: Box<dyn FnOnce(Result<(), String>)>| {
        saving.set(true);
        spawn_local(async move {
            let result = api::patch::<_, JobInfo>(&format!("/api/jobs/{id}"), &patch).await;
            let _ = saving.try_set(false);
            match result {
                Ok(j) => {
                    // A newer event may have come first (`live::take_newer`).
                    let _ = job.try_update(|shown| take_newer(shown, j));
                    done(Ok(()));
                }
                Err(e) => done(Err(e.to_string())),
            }
        });
    };
    let add_tag = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let tag = new_tag.get_untracked().trim().to_string();
        if let Err(allowed) = check_tag(&tag) {
            tag_error.set(Some(format!("tag {tag:?}: {allowed}")));
            return;
        }
        tag_error.set(None);
        let mut list = tags.get_untracked();
        if list.contains(&tag) {
            new_tag.set(String::new());
            return;
        }
        list.push(tag);
        save(
            JobPatch {
                notes: None,
                tags: Some(list),
            },
            // The page may be gone by the answer: `try_set` on what it owned.
            Box::new(move |r| {
                let _ = match r {
                    Ok(()) => new_tag.try_set(String::new()).map(drop),
                    Err(e) => tag_error.try_set(Some(e)).map(drop),
                };
            }),
        );
    };
    let remove_tag = move |tag: String| {
        let list = tags
            .get_untracked()
            .into_iter()
            .filter(|t| *t != tag)
            .collect();
        save(
            JobPatch {
                notes: None,
                tags: Some(list),
            },
            Box::new(move |r| {
                let _ = tag_error.try_set(r.err());
            }),
        );
    };
    let save_notes = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(text) = draft.get_untracked() else {
            return;
        };
        save(
            JobPatch {
                notes: Some(text),
                tags: None,
            },
            Box::new(move |r| {
                if r.is_ok() {
                    let _ = draft.try_set(None);
                }
                let _ = notes_error.try_set(r.err());
            }),
        );
    };

    view! {
        <section class="annotations">
            <div class="tag-row">
                <span class="label">"Tags"</span>
                <span class="tags">
                    {move || tags.get().into_iter().map(|t| {
                        let name = t.clone();
                        let href = format!("/?tag={}", api::enc(&t));
                        let label = format!("remove tag {t}");
                        view! {
                            <span class="tag-chip">
                                <A href=href attr:class="tag">{t}</A>
                                <button class="link" aria-label=label
                                    on:click=move |_| remove_tag(name.clone())>"×"</button>
                            </span>
                        }
                    }).collect_view()}
                </span>
                <form class="add-tag" on:submit=add_tag>
                    <label for="add-tag" class="sr-only">"Add a tag"</label>
                    <input id="add-tag" placeholder="add a tag" maxlength="32"
                        aria-invalid=move || tag_error.get().is_some().then_some("true")
                        aria-describedby="add-tag-error"
                        prop:value=move || new_tag.get()
                        on:input=move |ev| new_tag.set(event_target_value(&ev))/>
                    <button type="submit" disabled=move || saving.get()>"Add"</button>
                </form>
            </div>
            <p id="add-tag-error" class="field-error" role="alert">{move || tag_error.get()}</p>
            {move || match editing.get() {
                false => view! {
                    <div class="notes">
                        <span class="label">"Notes"</span>
                        {move || {
                            let n = saved_notes.get();
                            if n.is_empty() {
                                view! { <p class="muted notes-text">"None."</p> }.into_any()
                            } else {
                                view! { <p class="notes-text">{n}</p> }.into_any()
                            }
                        }}
                        <button class="link" on:click=move |_| draft.set(Some(saved_notes.get_untracked()))>
                            "Edit notes"
                        </button>
                    </div>
                }.into_any(),
                true => view! {
                    <form class="notes" on:submit=save_notes>
                        <label for="notes">"Notes"</label>
                        <textarea id="notes" rows="4" maxlength="10000"
                            aria-describedby="notes-error"
                            prop:value=move || draft.get().unwrap_or_default()
                            on:input=move |ev| draft.set(Some(event_target_value(&ev)))></textarea>
                        <div class="notes-actions">
                            <button type="submit" disabled=move || saving.get()>"Save notes"</button>
                            <button type="button" class="link" on:click=move |_| {
                                draft.set(None);
                                notes_error.set(None);
                            }>"Cancel"</button>
                        </div>
                        <p id="notes-error" class="field-error" role="alert">{move || notes_error.get()}</p>
                    </form>
                }.into_any(),
            }}
        </section>
    }
}
