//! The jobs list: state, progress, worker, age, tags; filters in the URL; live over
//! `/ws/events`.

use std::collections::{BTreeSet, HashMap};

use kiln_proto::protocol::{JobInfo, JobPage, JobState, ServerEvent, WorkerInfo};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::components::A;
use leptos_router::hooks::{use_navigate, use_query_map};
use leptos_router::params::ParamsMap;

use super::{ErrorLine, Progress, StateBadge};
use crate::app::{api, events};
use crate::live::LiveList;
use crate::runs::age;

const PAGE: usize = 50;

#[component]
pub fn JobsPage() -> impl IntoView {
    let query = use_query_map();
    let navigate = use_navigate();
    let filter = move || query.with(filter_of);
    // Fetched pages and live events both update the list; the newer copy of a job wins.
    let jobs = RwSignal::new(LiveList::<JobInfo>::default());
    let total = RwSignal::new(0u64);
    let workers = RwSignal::new(HashMap::<String, String>::new());
    let error = RwSignal::new(None::<String>);
    let selected = RwSignal::new(BTreeSet::<i64>::new());
    let now = RwSignal::new(api::now_ms());
    let limit = RwSignal::new(PAGE);

    let load = move || {
        let f = filter();
        let limit = limit.get_untracked();
        spawn_local(async move {
            let mut url = format!("/api/jobs?limit={limit}");
            for (k, v) in f.pairs() {
                url.push_str(&format!("&{k}={}", api::enc(v)));
            }
            match api::get::<JobPage>(&url).await {
                Ok(page) => {
                    let _ = jobs
                        .try_update(|l| l.snapshot(page.jobs, Some(page.revision), newest_first));
                    let _ = total.try_set(page.total);
                    let _ = error.try_set(None);
                }
                Err(e) => {
                    let _ = error.try_set(Some(e.to_string()));
                }
            }
            if let Ok(list) = api::get::<Vec<WorkerInfo>>("/api/workers").await {
                let _ = workers.try_set(list.into_iter().map(|w| (w.id, w.name)).collect());
            }
        });
    };
    Effect::new(move |_| {
        filter();
        limit.get();
        load();
    });

    let listener = events::listen(move |event| match event {
        ServerEvent::Job { job } => {
            let matches = query.with_untracked(filter_of).matches(job);
            let _ = jobs.try_update(|list| list.event(job.clone(), matches, newest_first));
            let _ = now.try_set(api::now_ms());
        }
        // A worker that joined after the names were fetched: name it, not its id.
        ServerEvent::Worker { worker } => {
            let known = workers.with_untracked(|m| m.get(&worker.id) == Some(&worker.name));
            if !known {
                let _ = workers.try_update(|m| {
                    m.insert(worker.id.clone(), worker.name.clone());
                });
            }
        }
        ServerEvent::Welcome { .. } => load(),
        _ => {}
    });
    let ticker = set_interval_with_handle(
        move || now.set(api::now_ms()),
        std::time::Duration::from_secs(5),
    );
    on_cleanup(move || {
        events::unlisten(listener);
        if let Ok(t) = ticker {
            t.clear();
        }
    });

    let set_query = {
        let navigate = navigate.clone();
        move |key: &'static str, value: String| {
            let mut pairs: Vec<(String, String)> = query.with_untracked(|q| {
                filter_of(q)
                    .pairs()
                    .into_iter()
                    .filter(|(k, _)| *k != key)
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            });
            if !value.is_empty() {
                pairs.push((key.to_string(), value));
            }
            let qs: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", api::enc(v)))
                .collect();
            let url = if qs.is_empty() {
                "/".to_string()
            } else {
                format!("/?{}", qs.join("&"))
            };
            crate::app::nav::replace(&navigate, &url);
        }
    };
    let set_state = set_query.clone();
    let set_name = set_query.clone();
    let clear_tag = set_query.clone();
    let compare = {
        let navigate = navigate.clone();
        move |_| {
            let ids: Vec<String> = selected
                .get_untracked()
                .iter()
                .map(i64::to_string)
                .collect();
            navigate(
                &format!("/compare?ids={}", ids.join(",")),
                Default::default(),
            );
        }
    };

    view! {
        <section>
            <div class="title-row">
                <h1>"Jobs"</h1>
                <A href="/new" attr:class="button">"New job"</A>
            </div>
            <div class="filters" role="search">
                <label for="filter-state">"State"</label>
                <select id="filter-state"
                    prop:value=move || filter().state
                    on:change=move |ev| set_state("state", event_target_value(&ev))>
                    <option value="">"all"</option>
                    {JobState::ALL.iter().map(|s| view! { <option value=s.as_str()>{s.as_str()}</option> }).collect_view()}
                </select>
                <label for="filter-name">"Name"</label>
                <input id="filter-name" type="search" placeholder="part of the name"
                    prop:value=move || filter().name
                    on:change=move |ev| set_name("name", event_target_value(&ev))/>
                {move || {
                    let group = filter().group;
                    (!group.is_empty()).then(|| view! { <span class="chip">"group " {group}</span> })
                }}
                {move || {
                    let tag = filter().tag;
                    let clear_tag = clear_tag.clone();
                    (!tag.is_empty()).then(|| view! {
                        <span class="chip tag-filter">"tag " {tag.clone()}
                            <button class="link" aria-label=format!("stop filtering by tag {tag}")
                                on:click=move |_| clear_tag("tag", String::new())>"×"</button>
                        </span>
                    })
                }}
                <button on:click=compare disabled=move || selected.with(|s| s.len() < 2)
                    title="Tick two or more runs">
                    {move || format!("Compare selected ({})", selected.with(BTreeSet::len))}
                </button>
            </div>
            <ErrorLine error/>
            <table class="jobs">
                <thead><tr>
                    <th><span class="sr-only">"Select"</span></th>
                    <th>"ID"</th><th>"Name"</th><th>"State"</th><th>"Progress"</th>
                    <th class="wide">"Worker"</th><th>"Age"</th>
                </tr></thead>
                <tbody>
                    // Keyed by id: a row is made once and its live cells update in place, so a
                    // running job's updates never re-create the checkbox or links under the mouse.
                    <For each=move || jobs.with(|l| l.rows().to_vec()) key=|j| j.id let:job>
                        {
                            let id = job.id;
                            let live = move |f: fn(&JobInfo) -> Option<String>| move || {
                                jobs.with(|l| l.get(&id).and_then(f))
                            };
                            let state = Memo::new(move |_| {
                                jobs.with(|l| l.get(&id).map(|j| j.state))
                            });
                            let step = Memo::new(move |_| {
                                jobs.with(|l| l.get(&id).map(|j| (j.step, j.total_steps)))
                            });
                            let paused = Memo::new(move |_| {
                                jobs.with(|l| l.get(&id).is_some_and(|j| j.paused))
                            });
                            let tags = Memo::new(move |_| {
                                jobs.with(|l| l.get(&id).map(|j| j.tags.clone()).unwrap_or_default())
                            });
                            let worker_id = live(|j| j.worker_id.clone());
                            // The name once the workers list has arrived; the id until then.
                            let worker = move || match worker_id() {
                                Some(w) => workers.with(|m| m.get(&w).cloned()).unwrap_or(w),
                                None => "—".to_string(),
                            };
                            view! {
                                <tr data-job-id=id data-state=move || state.get().map(JobState::as_str)>
                                    <td><input type="checkbox" aria-label=format!("select job {id}")
                                        prop:checked=move || selected.with(|s| s.contains(&id))
                                        on:change=move |ev| {
                                            let on = event_target_checked(&ev);
                                            selected.update(|s| { if on { s.insert(id); } else { s.remove(&id); } });
                                        }/></td>
                                    <td><A href=format!("/jobs/{id}")>{format!("#{id}")}</A></td>
                                    <td><A href=format!("/jobs/{id}")>{job.name.clone()}</A>
                                        {job.group.clone().map(|g| view! { <span class="muted small">" · " {g}</span> })}
                                        <Tags tags/></td>
                                    <td>{move || state.get().map(|s| view! { <StateBadge state=s/> })}
                                        {move || paused.get().then(|| view! { " "<span class="badge paused">"paused"</span> })}</td>
                                    <td>{move || step.get().map(|(s, t)| view! { <Progress step=s total=t/> })}</td>
                                    <td class="wide">{worker}</td>
                                    <td>{move || age(job.created_ms, now.get())}</td>
                                </tr>
                            }
                        }
                    </For>
                </tbody>
            </table>
            {move || (jobs.with(|l| l.rows().is_empty()) && error.with(Option::is_none)).then(|| view! {
                <p class="empty">"No jobs yet. " <A href="/new">"Submit one"</A> " or run "
                    <code>"kiln submit examples/mnist-mlp.toml"</code>"."</p>
            })}
            {move || (total.get() as usize > jobs.with(|l| l.rows().len())).then(|| view! {
                <button class="more" on:click=move |_| limit.update(|l| *l += PAGE)>
                    {format!("Show more ({} of {})", jobs.with(|l| l.rows().len()), total.get())}
                </button>
            })}
        </section>
    }
}

/// The list's order, newest job first: where a job not shown yet goes.
fn newest_first(rows: &[JobInfo], job: &JobInfo) -> usize {
    rows.partition_point(|j| j.id > job.id)
}

/// The list's filters, from `/?state=&name=&group=&tag=`; empty when absent.
#[derive(Debug, Clone, PartialEq)]
struct Filter {
    state: String,
    name: String,
    group: String,
    tag: String,
}

impl Filter {
    /// The filters that are set, as query pairs.
    fn pairs(&self) -> Vec<(&'static str, &String)> {
        [
            ("state", &self.state),
            ("name", &self.name),
            ("group", &self.group),
            ("tag", &self.tag),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .collect()
    }

    /// Whether `job` belongs in the list (for live events; the coordinator filters fetches).
    fn matches(&self, job: &JobInfo) -> bool {
        (self.state.is_empty() || job.state.as_str() == self.state)
            && (self.name.is_empty() || job.name.contains(&self.name))
            && (self.group.is_empty() || job.group.as_deref() == Some(self.group.as_str()))
            && (self.tag.is_empty() || job.tags.contains(&self.tag))
    }
}

fn filter_of(q: &ParamsMap) -> Filter {
    let get = |k: &str| q.get(k).unwrap_or_default();
    Filter {
        state: get("state"),
        name: get("name"),
        group: get("group"),
        tag: get("tag"),
    }
}

/// A job's tags, each a link to the list filtered by it.
#[component]
pub fn Tags(#[prop(into)] tags: Signal<Vec<String>>) -> impl IntoView {
    view! {
        <span class="tags">
            {move || tags.get().into_iter().map(|t| view! {
                <A href=format!("/?tag={}", api::enc(&t)) attr:class="tag">{t}</A>
            }).collect_view()}
        </span>
    }
}
