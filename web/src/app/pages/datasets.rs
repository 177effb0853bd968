//! Datasets the coordinator keeps: the list with an upload form (`/datasets`), and one
//! dataset — its preview, references to copy, versions, delete (`/datasets/:name`, where
//! `:name` is a name or `sha256:<hex>`).

use kiln_proto::dataset::{DatasetInfo, DatasetKind, DatasetPreview, check_name, name_from_file};
use kiln_proto::fmt;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_params_map};
use wasm_bindgen::JsCast;

use super::ErrorLine;
use crate::app::{api, upload};
use crate::datasets::{
    UPLOAD_KINDS, default_kind, named_reference, percent, shape, upload_outcome, upload_url,
};

/// Fetch the list into `list`.
fn refresh(list: RwSignal<Vec<DatasetInfo>>, error: RwSignal<Option<String>>) {
    spawn_local(async move {
        match api::get::<Vec<DatasetInfo>>("/api/datasets").await {
            Ok(l) => {
                let _ = list.try_set(l);
                let _ = error.try_set(None);
            }
            Err(e) => {
                let _ = error.try_set(Some(e.to_string()));
            }
        }
    });
}

#[component]
pub fn DatasetsPage() -> impl IntoView {
    let list = RwSignal::new(Vec::<DatasetInfo>::new());
    let error = RwSignal::new(None::<String>);
    let now = RwSignal::new(api::now_ms());
    refresh(list, error);
    let navigate = use_navigate();
    view! {
        <section class="datasets">
            <h1>"Datasets"</h1>
            <p class="muted small">"Stored by the coordinator, addressed by the SHA-256 of their bytes. A job uses one with "
                <code>"dataset.path = \"kiln:NAME\""</code>"; the coordinator pins it to the digest when the job is submitted."</p>
            <UploadForm list error now/>
            <ErrorLine error/>
            <table class="datasets">
                <thead><tr><th>"Name"</th><th>"Kind"</th><th>"Size"</th><th class="wide">"Versions"</th>
                    <th>"Digest"</th><th class="wide">"Added"</th></tr></thead>
                <tbody>
                    <For each=move || list.get() key=|d| (d.name.clone(), d.digest.clone(), d.version) let:d>
                        {
                            let href = format!("/datasets/{}", d.name);
                            let navigate = navigate.clone();
                            let go = href.clone();
                            let label = d.name.clone();
                            view! {
                                <tr data-dataset=d.name.clone() data-digest=d.digest.hex().to_string() class="clickable"
                                    on:click=move |ev| if !on_link(&ev) { navigate(&go, Default::default()) }>
                                    <td><A href=href>{label}</A></td>
                                    <td>{d.kind.as_str()}</td>
                                    <td>{fmt::bytes(d.size)}</td>
                                    <td class="wide">{d.versions}</td>
                                    <td><code title=d.digest.to_string()>{format!("sha256:{}", d.digest.short())}</code></td>
                                    <td class="wide">{move || format!("{} ago", fmt::age(d.created_ms, now.get()))}</td>
                                </tr>
                            }
                        }
                    </For>
                </tbody>
            </table>
            {move || list.with(Vec::is_empty).then(|| view! {
                <p class="empty">"No datasets yet. Upload a CSV or text file above, or push one with "<code>"kiln data push FILE"</code>"."</p>
            })}
        </section>
    }
}

/// Whether a click landed on a link (which navigates by itself).
fn on_link(ev: &leptos::ev::MouseEvent) -> bool {
    ev.target()
        .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
        .and_then(|e| e.closest("a").ok().flatten())
        .is_some()
}

/// Where an upload is.
#[derive(Debug, Clone, PartialEq)]
enum Stage {
    Idle,
    Hashing(u8),
    Uploading(u8),
    Done(String),
    Failed(String),
}

/// Choose a file, name it, pick its kind; hash it here, then upload it with progress.
#[component]
fn UploadForm(
    list: RwSignal<Vec<DatasetInfo>>,
    error: RwSignal<Option<String>>,
    now: RwSignal<i64>,
) -> impl IntoView {
    let file = RwSignal::new_local(None::<web_sys::File>);
    let name = RwSignal::new(String::new());
    let name_error = RwSignal::new(None::<String>);
    let kind = RwSignal::new(DatasetKind::Csv.as_str().to_string());
    let stage = RwSignal::new(Stage::Idle);
    let busy = move || matches!(stage.get(), Stage::Hashing(_) | Stage::Uploading(_));

    let choose = move |ev: leptos::ev::Event| {
        let chosen = ev
            .target()
            .and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok())
            .and_then(|input| input.files())
            .and_then(|files| files.get(0));
        if let Some(f) = &chosen {
            name.set(name_from_file(&f.name()));
            kind.set(default_kind(&f.name()).as_str().to_string());
            name_error.set(None);
        }
        stage.set(Stage::Idle);
        file.set(chosen);
    };

    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(f) = file.get_untracked() else {
            stage.set(Stage::Failed("Choose a file first.".into()));
            return;
        };
        let n = name.get_untracked().trim().to_string();
        if let Err(e) = check_name(&n) {
            name_error.set(Some(e));
            return;
        }
        let k: DatasetKind = match kind.get_untracked().parse() {
            Ok(k) => k,
            Err(e) => {
                stage.set(Stage::Failed(e));
                return;
            }
        };
        name_error.set(None);
        stage.set(Stage::Hashing(0));
        spawn_local(async move {
            let size = f.size() as u64;
            let digest = match upload::sha256(&f, move |done| {
                let _ = stage.try_set(Stage::Hashing(percent(done, size)));
            })
            .await
            {
                Ok(d) => d,
                Err(e) => {
                    let _ = stage.try_set(Stage::Failed(e.to_string()));
                    return;
                }
            };
            let url = match upload_url(&n, k, &digest) {
                Ok(u) => u,
                Err(e) => {
                    let _ = stage.try_set(Stage::Failed(e));
                    return;
                }
            };
            let _ = stage.try_set(Stage::Uploading(0));
            let answer = upload::put(&url, &f, move |sent, total| {
                let _ = stage.try_set(Stage::Uploading(percent(sent, total)));
            })
            .await;
            let outcome = answer.and_then(|(status, text)| {
                serde_json::from_str::<DatasetInfo>(&text)
                    .map(|info| upload_outcome(status, &info))
                    .map_err(|e| api::ApiError::network(format!("unexpected answer: {e}")))
            });
            match outcome {
                Ok(message) => {
                    let _ = stage.try_set(Stage::Done(message));
                    let _ = now.try_set(api::now_ms());
                    refresh(list, error);
                }
                Err(e) => {
                    let _ = stage.try_set(Stage::Failed(e.to_string()));
                }
            }
        });
    };

    let status = move || match stage.get() {
        Stage::Idle => None,
        Stage::Hashing(p) => Some(
            view! {
                <div class="upload-status" data-stage="hashing" role="status">
                    <progress max="100" value=p aria-label="hashing"></progress>
                    <span>{format!("hashing… {p}%")}</span>
                </div>
            }
            .into_any(),
        ),
        Stage::Uploading(p) => Some(
            view! {
                <div class="upload-status" data-stage="uploading" role="status">
                    <progress max="100" value=p aria-label="uploading"></progress>
                    <span>{format!("uploading… {p}%")}</span>
                </div>
            }
            .into_any(),
        ),
        Stage::Done(message) => Some(
            view! {
                <div class="upload-status" data-stage="done" role="status">
                    <progress max="100" value="100" aria-label="uploaded"></progress>
                    <span>{message}</span>
                </div>
            }
            .into_any(),
        ),
        Stage::Failed(message) => Some(
            view! {
                <div class="upload-status" data-stage="failed">
                    <p class="error" role="alert">{format!("Upload failed: {message}")}</p>
                </div>
            }
            .into_any(),
        ),
    };

    view! {
        <form class="upload" on:submit=submit novalidate aria-label="Upload a dataset">
            <div class="field">
                <label for="upload-file">"File"</label>
                <input id="upload-file" type="file" on:change=choose disabled=busy/>
                <small class="help">"a CSV or text file; push IDX folders with "<code>"kiln data push DIR"</code></small>
            </div>
            <div class="field" class:invalid=move || name_error.get().is_some()>
                <label for="upload-name">"Name"</label>
                <input id="upload-name" type="text" prop:value=move || name.get()
                    on:input=move |ev| { name.set(event_target_value(&ev)); name_error.set(None); }
                    aria-invalid=move || name_error.get().is_some().to_string()
                    aria-describedby="upload-name-error"/>
                <div id="upload-name-error" class="field-error" role="alert">{move || name_error.get()}</div>
            </div>
            <div class="field">
                <label for="upload-kind">"Kind"</label>
                <select id="upload-kind" prop:value=move || kind.get() on:change=move |ev| kind.set(event_target_value(&ev))>
                    {UPLOAD_KINDS.iter().map(|k| view! { <option value=k.as_str()>{k.as_str()}</option> }).collect_view()}
                </select>
            </div>
            <button type="submit" class="primary" disabled=busy>"Upload"</button>
            {status}
        </form>
    }
}

#[component]
pub fn DatasetPage() -> impl IntoView {
    let params = use_params_map();
    move || match params.with(|p| p.get("name")) {
        Some(key) => view! { <DatasetView key/> }.into_any(),
        None => view! { <super::NotFound/> }.into_any(),
    }
}

/// One dataset version; `key` is a name (its newest version) or `sha256:<hex>`.
#[component]
fn DatasetView(key: String) -> impl IntoView {
    let info = RwSignal::new(None::<DatasetInfo>);
    let versions = RwSignal::new(Vec::<DatasetInfo>::new());
    let error = RwSignal::new(None::<String>);
    let action_error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let now = RwSignal::new(api::now_ms());
    let navigate = use_navigate();
    {
        let key = key.clone();
        spawn_local(async move {
            match api::get::<DatasetInfo>(&format!("/api/datasets/{}", api::enc(&key))).await {
                Ok(i) => {
                    let name = i.name.clone();
                    let _ = info.try_set(Some(i));
                    let url = format!("/api/datasets/{}/versions", api::enc(&name));
                    if let Ok(v) = api::get::<Vec<DatasetInfo>>(&url).await {
                        let _ = versions.try_set(v);
                    }
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                }
            }
        });
    }
    let delete = move |name: String| {
        let confirmed = web_sys::window()
            .and_then(|w| {
                w.confirm_with_message(&format!(
                    "Delete every version of dataset `{name}`? Bytes no other name uses are removed."
                ))
                .ok()
            })
            .unwrap_or(false);
        if !confirmed {
            return;
        }
        action_error.set(None);
        busy.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            match api::delete_empty(&format!("/api/datasets/{}", api::enc(&name))).await {
                Ok(()) => navigate("/datasets", Default::default()),
                Err(e) => {
                    let _ = action_error.try_set(Some(format!("Delete failed: {e}")));
                    let _ = busy.try_set(false);
                }
            }
        });
    };

    let body = move || {
        info.get().map(|d| {
            let name = d.name.clone();
            let shown = d.digest.clone();
            let delete = delete.clone();
            let newest = versions.with(|v| v.iter().map(|x| x.version).max());
            view! {
                <div class="title-row">
                    <h1>{d.name.clone()}</h1>
                    <span class="badge">{d.kind.as_str()}</span>
                    <span class="spacer"></span>
                    <button class="danger" disabled=move || busy.get()
                        on:click=move |_| delete(name.clone())>"Delete"</button>
                </div>
                <ErrorLine error=action_error/>
                <dl class="facts">
                    <div><dt>"Size"</dt><dd>{fmt::bytes(d.size)}</dd></div>
                    <div><dt>"Version"</dt><dd>{move || match newest {
                        Some(n) => format!("{} of {n}", d.version),
                        None => d.version.to_string(),
                    }}</dd></div>
                    <div><dt>"Added"</dt><dd>{move || format!("{} ago", fmt::age(d.created_ms, now.get()))}</dd></div>
                    <div><dt>"Digest"</dt><dd><code class="digest">{d.digest.to_string()}</code></dd></div>
                </dl>
                <div class="references">
                    <Reference id="ref-named" label="The newest version (pinned when a job is submitted)"
                        value=named_reference(&d.name)/>
                    <Reference id="ref-pinned" label="Exactly this version" value=d.digest.reference()/>
                </div>
                <h2>"Preview"</h2>
                <Preview preview=d.preview.clone()/>
                <h2>"Versions"</h2>
                <table class="versions">
                    <thead><tr><th>"Version"</th><th>"Digest"</th><th>"Size"</th><th>"Added"</th></tr></thead>
                    <tbody>
                        <For each=move || versions.get() key=|v| v.version let:v>
                            {
                                let current = v.digest == shown;
                                view! {
                                    <tr class:current=current aria-current=current.then_some("true")>
                                        <td>{v.version}</td>
                                        <td><A href=format!("/datasets/sha256:{}", v.digest.hex())>
                                            <code title=v.digest.to_string()>{format!("sha256:{}", v.digest.short())}</code>
                                        </A></td>
                                        <td>{fmt::bytes(v.size)}</td>
                                        <td>{move || format!("{} ago", fmt::age(v.created_ms, now.get()))}</td>
                                    </tr>
                                }
                            }
                        </For>
                    </tbody>
                </table>
            }
        })
    };

    view! {
        <section class="dataset">
            <p class="small"><A href="/datasets">"← All datasets"</A></p>
            <ErrorLine error/>
            {body}
        </section>
    }
}

/// A reference to copy into a spec.
#[component]
fn Reference(id: &'static str, label: &'static str, value: String) -> impl IntoView {
    let copy = value.clone();
    view! {
        <div class="reference">
            <label for=id>{label}</label>
            <input id=id readonly prop:value=value/>
            <button aria-label=format!("copy {label}") on:click=move |_| {
                if let Some(w) = web_sys::window() {
                    let _ = w.navigator().clipboard().write_text(&copy);
                }
            }>"Copy"</button>
        </div>
    }
}

/// What the coordinator read of a dataset when it was stored.
#[component]
fn Preview(preview: DatasetPreview) -> impl IntoView {
    match preview {
        DatasetPreview::Csv { columns, rows } => view! {
            <div class="preview-scroll">
                <table class="preview" data-preview="csv">
                    <thead><tr>{columns.into_iter().map(|c| view! { <th scope="col">{c}</th> }).collect_view()}</tr></thead>
                    <tbody>{rows.into_iter().map(|r| view! {
                        <tr>{r.into_iter().map(|cell| view! { <td>{cell}</td> }).collect_view()}</tr>
                    }).collect_view()}</tbody>
                </table>
            </div>
        }
        .into_any(),
        DatasetPreview::Text { head } => view! {
            <pre class="preview" data-preview="text" tabindex="0">{head}</pre>
        }
        .into_any(),
        DatasetPreview::Idx { files } => view! {
            <table class="preview" data-preview="idx">
                <thead><tr><th>"File"</th><th>"Shape"</th></tr></thead>
                <tbody>{files.into_iter().map(|f| view! {
                    <tr><td><code>{f.name}</code></td><td>{shape(&f.shape)}</td></tr>
                }).collect_view()}</tbody>
            </table>
        }
        .into_any(),
    }
}
