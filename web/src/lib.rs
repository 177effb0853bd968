//! kiln-web: Kiln's dashboard, a Leptos app rendered in the browser.
//!
//! The pure parts — the new-job form ([`form`]), what pages compute from runs ([`runs`]) and the
//! datasets pages' uploads and references ([`datasets`]), the playground's presets and data
//! ([`play`]) and what "Try it" feeds a finished model ([`try_it`]) —
//! compile everywhere and are tested natively. The app itself (`app`, pages, charts, the API
//! and `/ws/events` clients) exists only on `wasm32`; `scripts/build-web` builds it with
//! `wasm-bindgen --target web` into `web/dist`, which the coordinator serves at `/`.

pub mod datasets;
pub mod form;
pub mod live;
pub mod play;
pub mod runs;
pub mod try_it;

#[cfg(target_arch = "wasm32")]
mod app;
