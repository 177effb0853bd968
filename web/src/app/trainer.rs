//! The page's side of the in-browser trainer: a dedicated Web Worker running the
//! `kiln-trainer` wasm module (`/trainer/worker.js`, built by `scripts/build-web`), spoken to
//! with `kiln_proto::trainer`'s messages. Burn stays out of this bundle: the worker loads the
//! trainer module only when a page asks for it.

use js_sys::{Array, Object, Reflect, Uint8Array};
use kiln_proto::trainer::{FromTrainer, ToTrainer};
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use web_sys::{MessageEvent, Worker, WorkerOptions, WorkerType};

/// Where `scripts/build-web` puts the trainer.
pub const WORKER_URL: &str = "/trainer/worker.js";

/// A running trainer; dropping it terminates the worker (and any run in it).
pub struct Trainer {
    worker: Worker,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Trainer {
    /// Start the worker; `on_message` gets every message with its binary parts. A worker
    /// that cannot load arrives as `FromTrainer::Failed`.
    pub fn spawn(
        mut on_message: impl FnMut(FromTrainer, Vec<Vec<u8>>) + 'static,
    ) -> Result<Trainer, String> {
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        let worker = Worker::new_with_options(WORKER_URL, &options)
            .map_err(|e| format!("cannot start the trainer's Web Worker: {e:?}"))?;
        let (tx, rx) = futures::channel::mpsc::unbounded::<(FromTrainer, Vec<Vec<u8>>)>();
        let error_tx = tx.clone();
        let on_message_js = Closure::<dyn FnMut(MessageEvent)>::new(move |event: MessageEvent| {
            let data = event.data();
            let json = Reflect::get(&data, &"json".into())
                .ok()
                .and_then(|j| j.as_string())
                .unwrap_or_default();
            let parts = Reflect::get(&data, &"bytes".into())
                .ok()
                .and_then(|b| b.dyn_into::<Array>().ok())
                .map(|a| a.iter().map(|p| Uint8Array::new(&p).to_vec()).collect())
                .unwrap_or_default();
            let message = serde_json::from_str::<FromTrainer>(&json).unwrap_or_else(|e| {
                FromTrainer::Failed {
                    error: format!("the trainer sent something unexpected ({e}): {json}"),
                }
            });
            let _ = tx.unbounded_send((message, parts));
        });
        worker.set_onmessage(Some(on_message_js.as_ref().unchecked_ref()));
        let on_error_js =
            Closure::<dyn FnMut(web_sys::Event)>::new(move |event: web_sys::Event| {
                let text = Reflect::get(&event, &"message".into())
                    .ok()
                    .and_then(|m| m.as_string())
                    .unwrap_or_else(|| "the trainer's Web Worker failed".into());
                let _ = error_tx.unbounded_send((
                    FromTrainer::Failed {
                        error: format!("the trainer stopped: {text}"),
                    },
                    Vec::new(),
                ));
            });
        worker.set_onerror(Some(on_error_js.as_ref().unchecked_ref()));
        // Messages are handled on the page's task queue, one at a time, in order.
        leptos::task::spawn_local(async move {
            use futures::StreamExt;
            let mut rx = rx;
            while let Some((message, parts)) = rx.next().await {
                on_message(message, parts);
            }
        });
        Ok(Trainer {
            worker,
            _on_message: on_message_js,
            _on_error: on_error_js,
        })
    }

    /// Send a message with its binary parts (transferred, not copied twice).
    pub fn send(&self, message: &ToTrainer, parts: Vec<Vec<u8>>) {
        let bytes = Array::new();
        let transfer = Array::new();
        for p in parts {
            let array = Uint8Array::from(p.as_slice());
            transfer.push(&array.buffer());
            bytes.push(&array);
        }
        let envelope = Object::new();
        let _ = Reflect::set(&envelope, &"json".into(), &message.to_json().into());
        let _ = Reflect::set(&envelope, &"bytes".into(), &bytes);
        let _ = self.worker.post_message_with_transfer(&envelope, &transfer);
    }
}

impl Drop for Trainer {
    fn drop(&mut self) {
        self.worker.terminate();
    }
}
