//! kiln-trainer: Kiln's training core as its own wasm module, loaded only by the pages that
//! train (the playground, a lent tab), and run in a dedicated Web Worker (`worker.js`) so the
//! page never freezes. The dashboard bundle stays Burn-free.
//!
//! The page and the trainer speak `kiln_proto::trainer`'s messages. Natively this crate is
//! only its pure part ([`files`]), tested without a browser.

pub mod files;

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(target_arch = "wasm32")]
mod lend;
#[cfg(target_arch = "wasm32")]
mod predict;
