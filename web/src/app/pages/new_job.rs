//! The new-job form: presets, the inputs of `crate::form`, tags, errors at their fields (the
//! same `JobSpec::validate` and tag check the coordinator runs, before anything is sent).

use std::collections::BTreeMap;

use kiln_proto::JobSpec;
use kiln_proto::dataset::{DatasetInfo, DatasetPreview, SCHEME};
use kiln_proto::fmt;
use kiln_proto::protocol::{JobInfo, JobPatch, SubmitJob};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};

use super::ErrorLine;
use crate::app::api;
use crate::datasets::{pick, picked};
use crate::form::{
    FormValues, Input, PRESETS, SECTIONS, errors_by_field, spec_from_values, values_from_spec,
};

fn preset_values(id: &str) -> Option<FormValues> {
    let (_, _, toml) = PRESETS.iter().find(|(p, _, _)| *p == id)?;
    JobSpec::from_toml_str(toml)
        .ok()
        .map(|s| values_from_spec(&s))
}

#[component]
pub fn NewJobPage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let start = query
        .with_untracked(|q| q.get("preset"))
        .unwrap_or_else(|| "synthetic".into());
    let values = RwSignal::new(preset_values(&start).unwrap_or_default());
    let preset = RwSignal::new(start);
    // The run this form was filled from, for the fields the form has no input for.
    let base = RwSignal::new(None::<JobSpec>);
    let errors = RwSignal::new(BTreeMap::<String, Vec<String>>::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let tags = RwSignal::new(String::new());
    let tag_error = RwSignal::new(None::<String>);

    let (stored, stored_error) = stored_datasets();

    // "New job like this": start from an existing run's spec.
    if let Some(from) = query.with_untracked(|q| q.get("from")) {
        spawn_local(async move {
            match api::get::<JobInfo>(&format!("/api/jobs/{}", api::enc(&from))).await {
                Ok(j) => {
                    let _ = values.try_set(values_from_spec(&j.spec));
                    let _ = tags.try_set(j.tags.join(", "));
                    let _ = preset.try_set(String::new());
                    let _ = base.try_set(Some(j.spec));
                }
                Err(e) => {
                    let _ = error.try_set(Some(format!("cannot load job {from}: {e}")));
                }
            }
        });
    }

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        error.set(None);
        let Some(spec) = base.with_untracked(|b| checked_spec(values, b.as_ref(), errors, error))
        else {
            return;
        };
        // Tags: comma- or space-separated, checked as the coordinator checks them.
        let list: Vec<String> = tags
            .get_untracked()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect();
        let tags = match (JobPatch {
            notes: None,
            tags: Some(list),
        })
        .normalized()
        {
            Ok(p) => p.tags.unwrap_or_default(),
            Err(list) => {
                tag_error.set(Some(
                    list.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ));
                return;
            }
        };
        tag_error.set(None);
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::post::<_, JobInfo>(
                "/api/jobs",
                &SubmitJob {
                    spec,
                    group: None,
                    tags,
                },
            )
            .await
            {
                Ok(job) => navigate(&format!("/jobs/{}", job.id), Default::default()),
                Err(e) => {
                    let (tag_fields, spec_fields): (Vec<_>, Vec<_>) = e
                        .fields
                        .iter()
                        .cloned()
                        .partition(|f| f.field.starts_with("tags"));
                    if !tag_fields.is_empty() {
                        let _ = tag_error.try_set(Some(
                            tag_fields
                                .iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join("; "),
                        ));
                    }
                    let _ = errors.try_set(errors_by_field(&spec_fields));
                    let _ = error.try_set(Some(e.to_string()));
                    let _ = busy.try_set(false);
                }
            }
        });
    };

    let sections = view! { <SpecFields values errors stored stored_error hidden=&[]/> };
    let general = move || errors.with(|e| e.get("").cloned().unwrap_or_default());

    view! {
        <section class="new-job">
            <h1>"New job"</h1>
            <div class="presets">
                <label for="preset">"Start from"</label>
                <select id="preset" prop:value=move || preset.get() on:change=move |ev| {
                    let p = event_target_value(&ev);
                    if let Some(v) = preset_values(&p) {
                        values.set(v);
                        errors.set(Default::default());
                        base.set(None);
                    }
                    preset.set(p);
                }>
                    <option value="">"(current values)"</option>
                    {PRESETS.iter().map(|(id, label, _)| view! { <option value=*id>{*label}</option> }).collect_view()}
                </select>
            </div>
            <form on:submit=submit novalidate>
                {sections}
                <fieldset><legend>"Run"</legend>
                    <div class="field" class:invalid=move || tag_error.get().is_some() data-field="tags">
                        <label for="f-tags">"Tags"</label>
                        <input id="f-tags" name="tags" type="text" prop:value=move || tags.get()
                            on:input=move |ev| { tags.set(event_target_value(&ev)); tag_error.set(None); }
                            aria-invalid=move || tag_error.get().is_some().to_string()
                            aria-describedby="f-tags-error"/>
                        <small class="help">"comma-separated, to find the run by later"</small>
                        <div id="f-tags-error" class="field-error" role="alert">{move || tag_error.get()}</div>
                    </div>
                </fieldset>
                <ErrorLine error/>
                {move || {
                    let g = general();
                    (!g.is_empty()).then(|| view! { <ul class="error">{g.into_iter().map(|e| view! { <li>{e}</li> }).collect_view()}</ul> })
                }}
                <button type="submit" class="primary" disabled=move || busy.get()>"Submit job"</button>
            </form>
        </section>
    }
}

/// The form as a spec (the fields without an input from `base`), checked as the coordinator
/// checks it; or its problems shown at their fields and summed up in `error`.
pub fn checked_spec(
    values: RwSignal<FormValues>,
    base: Option<&JobSpec>,
    errors: RwSignal<BTreeMap<String, Vec<String>>>,
    error: RwSignal<Option<String>>,
) -> Option<JobSpec> {
    match values.with_untracked(|v| spec_from_values(v, base)) {
        Ok(spec) => {
            errors.set(Default::default());
            Some(spec)
        }
        Err(list) => {
            errors.set(errors_by_field(&list));
            error.set(Some(format!(
                "The spec has {} problem(s); see the marked fields.",
                list.len()
            )));
            None
        }
    }
}

/// The stored datasets for the form's picker, fetched once (or why they could not be).
pub fn stored_datasets() -> (RwSignal<Vec<DatasetInfo>>, RwSignal<Option<String>>) {
    let stored = RwSignal::new(Vec::<DatasetInfo>::new());
    let stored_error = RwSignal::new(None::<String>);
    spawn_local(async move {
        match api::get::<Vec<DatasetInfo>>("/api/datasets").await {
            Ok(l) => {
                let _ = stored.try_set(l);
            }
            Err(e) => {
                let _ = stored_error.try_set(Some(format!("cannot list stored datasets: {e}")));
            }
        }
    });
    (stored, stored_error)
}

/// The spec's inputs by section (`crate::form::SECTIONS`), with the stored-dataset picker in
/// "Dataset"; errors show at their fields. Used by New job and the playground, which leaves
/// out what does not apply in a tab (`hidden`: field paths).
#[component]
pub fn SpecFields(
    values: RwSignal<FormValues>,
    errors: RwSignal<BTreeMap<String, Vec<String>>>,
    stored: RwSignal<Vec<DatasetInfo>>,
    stored_error: RwSignal<Option<String>>,
    hidden: &'static [&'static str],
) -> impl IntoView {
    SECTIONS.iter().map(|(title, fields)| {
        let inputs = fields.iter().filter(|f| !hidden.contains(&f.path)).map(|f| {
            let path = f.path;
            let id = f.id();
            let err_id = format!("{id}-error");
            let value = move || values.with(|v| v.get(path).cloned().unwrap_or_default());
            let set = move |ev: leptos::ev::Event| {
                let v = event_target_value(&ev);
                values.update(|m| {
                    m.insert(path.to_string(), v);
                });
                errors.update(|e| {
                    e.remove(path);
                });
            };
            let field_errors = move || errors.with(|e| e.get(path).cloned().unwrap_or_default());
            let invalid = move || !field_errors().is_empty();
            let control = match f.input {
                Input::Select(options) => view! {
                    <select id=id.clone() name=path prop:value=value on:change=set
                        aria-invalid=move || invalid().to_string() aria-describedby=err_id.clone()>
                        {options.iter().map(|o| view! { <option value=*o>{*o}</option> }).collect_view()}
                    </select>
                }
                .into_any(),
                Input::Number | Input::Text => view! {
                    <input id=id.clone() name=path type="text"
                        inputmode=if f.input == Input::Number { "decimal" } else { "text" }
                        prop:value=value on:input=set
                        aria-invalid=move || invalid().to_string() aria-describedby=err_id.clone()/>
                }
                .into_any(),
            };
            let field = *f;
            view! {
                <div class="field" class:invalid=invalid data-field=path
                    class:hidden=move || !values.with(|v| field.visible(v))>
                    <label for=id>{f.label}</label>
                    {control}
                    {(!f.help.is_empty()).then(|| view! { <small class="help">{f.help}</small> })}
                    <div id=format!("{}-error", f.id()) class="field-error" role="alert">
                        {move || field_errors().join("; ")}
                    </div>
                </div>
            }
        }).collect_view();
        let picker = (*title == "Dataset")
            .then(|| view! { <StoredPicker values errors stored stored_error/> });
        view! { <fieldset><legend>{*title}</legend>{picker}{inputs}</fieldset> }
    }).collect_view()
}

/// Choose a stored dataset: sets `dataset.kind` to its kind and `dataset.path` to
/// `kiln:NAME` (still editable by hand; a path naming no stored dataset shows "none" here).
#[component]
fn StoredPicker(
    values: RwSignal<FormValues>,
    errors: RwSignal<BTreeMap<String, Vec<String>>>,
    stored: RwSignal<Vec<DatasetInfo>>,
    stored_error: RwSignal<Option<String>>,
) -> impl IntoView {
    let chosen =
        Memo::new(move |_| values.with(|v| stored.with(|l| picked(v, l).map(|d| d.name.clone()))));
    let change = move |ev: leptos::ev::Event| {
        let name = event_target_value(&ev);
        let info = stored.with_untracked(|l| l.iter().find(|d| d.name == name).cloned());
        values.update(|v| match &info {
            Some(d) => pick(v, d),
            // "None": a stored dataset's reference no longer applies.
            None => {
                if v.get("dataset.path").is_some_and(|p| p.starts_with(SCHEME)) {
                    v.insert("dataset.path".into(), String::new());
                }
            }
        });
        errors.update(|e| {
            e.remove("dataset.path");
            e.remove("dataset.kind");
        });
    };
    let help = move || {
        let columns = chosen.get().and_then(|name| {
            stored.with(|l| {
                l.iter()
                    .find(|d| d.name == name)
                    .and_then(|d| match &d.preview {
                        DatasetPreview::Csv { columns, .. } => Some(columns.join(", ")),
                        _ => None,
                    })
            })
        });
        match (stored_error.get(), columns) {
            (Some(e), _) => view! { <span class="error">{e}</span> }.into_any(),
            (None, Some(c)) => view! { <span>"columns: "{c}</span> }.into_any(),
            (None, None) => view! {
                <span>"sets the kind and the path; upload on "<A href="/datasets">"Datasets"</A></span>
            }
            .into_any(),
        }
    };
    view! {
        <div class="field" data-field="dataset.stored">
            <label for="f-dataset-stored">"Stored dataset"</label>
            <select id="f-dataset-stored" on:change=change>
                <option value="" prop:selected=move || chosen.get().is_none()>"(none: a path on the worker)"</option>
                <For each=move || stored.get() key=|d| d.name.clone() let:d>
                    {
                        let name = d.name.clone();
                        view! {
                            <option value=d.name.clone() prop:selected=move || chosen.get().as_deref() == Some(name.as_str())>
                                {format!("{} ({}, {})", d.name, d.kind.as_str(), fmt::bytes(d.size))}
                            </option>
                        }
                    }
                </For>
            </select>
            <small class="help">{help}</small>
        </div>
    }
}
