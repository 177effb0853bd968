//! Keeping the URL in step with the view, so every page reloads to what it shows.

use leptos_router::NavigateOptions;

/// Replace the current history entry with `url` (filters, zoom, chosen runs), without
/// scrolling: the back button then leaves the page instead of undoing each filter change.
pub fn replace(navigate: &impl Fn(&str, NavigateOptions), url: &str) {
    navigate(
        url,
        NavigateOptions {
            replace: true,
            scroll: false,
            ..Default::default()
        },
    );
}

/// The current path and query, as the router sees them.
pub fn here() -> Option<String> {
    let location = web_sys::window()?.location();
    Some(format!(
        "{}{}",
        location.pathname().ok()?,
        location.search().ok()?
    ))
}
