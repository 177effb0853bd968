//! Logging in: paste an API token once; it is kept in this browser's `localStorage`.

use kiln_proto::protocol::JobPage;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_query_map;

use crate::app::api;

#[component]
pub fn LoginPage() -> impl IntoView {
    view! { <LoginPrompt/> }
}

/// The login form; after a good token the browser goes to `?next=` (or where it was).
#[component]
pub fn LoginPrompt() -> impl IntoView {
    let query = use_query_map();
    let token = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let log_in = move || {
        let t = token.get_untracked().trim().to_string();
        if t.is_empty() {
            error.set(Some(
                "Paste the API token that `kiln up` or `kiln serve` printed.".into(),
            ));
            return;
        }
        let next = query.with_untracked(|q| q.get("next")).unwrap_or_else(|| {
            let here = web_sys::window().map(|w| w.location());
            let path = here
                .as_ref()
                .and_then(|l| l.pathname().ok())
                .unwrap_or_else(|| "/".into());
            let search = here
                .as_ref()
                .and_then(|l| l.search().ok())
                .unwrap_or_default();
            if path == "/login" {
                "/".into()
            } else {
                format!("{path}{search}")
            }
        });
        busy.set(true);
        spawn_local(async move {
            api::set_token(Some(&t));
            match api::get::<JobPage>("/api/jobs?limit=1").await {
                // Only paths of this site: `//host` would leave it.
                Ok(_) => api::go(if next.starts_with('/') && !next.starts_with("//") {
                    &next
                } else {
                    "/"
                }),
                Err(e) => {
                    api::set_token(None);
                    let _ = error.try_set(Some(match e.status {
                        401 => "That token is not valid for this coordinator (unknown, revoked \
                                or expired)."
                            .into(),
                        403 => "That token cannot open the dashboard (a worker token?): it \
                                needs a read, submit or admin token."
                            .into(),
                        _ => e.to_string(),
                    }));
                    let _ = busy.try_set(false);
                }
            }
        });
    };
    // `kiln up` prints a link `/login#token=…`: the fragment never reaches a server.
    let from_link = web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .and_then(|h| h.strip_prefix("#token=").map(str::to_string));
    if let Some(t) = from_link {
        if let Some(w) = web_sys::window()
            && let Ok(history) = w.history()
        {
            let _ =
                history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some("/login"));
        }
        token.set(t);
        log_in();
    }
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        log_in();
    };
    view! {
        <section class="login">
            <h1>"Log in"</h1>
            <p>"Kiln needs an API token. "<code>"kiln up"</code>" prints one when it first starts; "
               "it is kept in this browser until you log out. Share links work without one."</p>
            <form on:submit=submit>
                <label for="token">"API token"</label>
                <input id="token" name="token" type="password" autocomplete="current-password"
                    placeholder="kiln_…"
                    prop:value=move || token.get()
                    on:input=move |ev| token.set(event_target_value(&ev))/>
                <button type="submit" disabled=move || busy.get()>"Log in"</button>
            </form>
            <super::ErrorLine error/>
        </section>
    }
}
