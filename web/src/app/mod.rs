//! The Leptos app: routes, layout, and the pieces every page uses.

use leptos::prelude::*;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::path;
use wasm_bindgen::prelude::wasm_bindgen;

mod api;
mod chart;
mod events;
mod nav;
mod pages;
mod trainer;
mod upload;

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(App);
}

#[component]
fn App() -> impl IntoView {
    view! {
        <Router>
            <Routes fallback=|| view! { <Layout><pages::NotFound/></Layout> }>
                <Route path=path!("/") view=|| view! { <Layout><pages::jobs::JobsPage/></Layout> }/>
                <Route path=path!("/jobs/:id") view=|| view! { <Layout><pages::job::JobPage/></Layout> }/>
                <Route path=path!("/new") view=|| view! { <Layout><pages::new_job::NewJobPage/></Layout> }/>
                <Route path=path!("/play") view=|| view! { <Layout><pages::play::PlayPage/></Layout> }/>
                <Route path=path!("/sweep") view=|| view! { <Layout><pages::sweep::SweepPage/></Layout> }/>
                <Route path=path!("/datasets") view=|| view! { <Layout><pages::datasets::DatasetsPage/></Layout> }/>
                <Route path=path!("/datasets/:name") view=|| view! { <Layout><pages::datasets::DatasetPage/></Layout> }/>
                <Route path=path!("/workers") view=|| view! { <Layout><pages::workers::WorkersPage/></Layout> }/>
                <Route path=path!("/compare") view=|| view! { <Layout><pages::compare::ComparePage/></Layout> }/>
                <Route path=path!("/login") view=|| view! { <Layout><pages::login::LoginPage/></Layout> }/>
                <Route path=path!("/s/:token") view=pages::share::SharedRunPage/>
            </Routes>
        </Router>
    }
}

/// Header with navigation. Without a token every page but a share link is the login form
/// (logging in or out reloads the page, so this is decided once).
#[component]
fn Layout(children: Children) -> impl IntoView {
    let logged_in = api::token().is_some();
    let body = if logged_in {
        children().into_any()
    } else {
        view! { <pages::login::LoginPrompt/> }.into_any()
    };
    view! {
        <header class="top">
            <A href="/" attr:class="brand">"Kiln"</A>
            <nav aria-label="Main">
                <A href="/">"Jobs"</A>
                <A href="/new">"New job"</A>
                <A href="/sweep">"Sweep"</A>
                <A href="/play">"Playground"</A>
                <A href="/compare">"Compare"</A>
                <A href="/datasets">"Datasets"</A>
                <A href="/workers">"Workers"</A>
            </nav>
            <span class="spacer"></span>
            {logged_in.then(|| view! {
                <button class="link" on:click=move |_| {
                    api::set_token(None);
                    api::go("/login");
                }>"Log out"</button>
            })}
        </header>
        <main>{body}</main>
    }
}
