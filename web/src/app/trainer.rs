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

/// How the lent tab is doing, as its trainer last said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LendState {
    pub lending: bool,
    pub connected: bool,
    pub job: Option<kiln_proto::protocol::JobId>,
    pub step: Option<u64>,
    pub note: String,
}

/// Told of every change of the lending state.
type LendListener = Box<dyn Fn(&LendState)>;

thread_local! {
    /// The trainer of a lent tab: app-wide, so lending goes on while the user moves between
    /// pages (dropping it would stop it).
    static LENT: std::cell::RefCell<Option<Trainer>> = const { std::cell::RefCell::new(None) };
    static LEND_STATE: std::cell::RefCell<LendState> = std::cell::RefCell::new(LendState::default());
    /// The page that shows the state, if one does.
    static LEND_LISTENER: std::cell::RefCell<Option<LendListener>> =
        const { std::cell::RefCell::new(None) };
}

fn set_lend_state(update: impl FnOnce(&mut LendState)) {
    let state = LEND_STATE.with(|s| {
        let mut s = s.borrow_mut();
        update(&mut s);
        s.clone()
    });
    LEND_LISTENER.with(|l| {
        if let Some(listener) = l.borrow().as_ref() {
            listener(&state);
        }
    });
}

/// The lending state now, and `listener` for every change (replacing the last listener).
pub fn watch_lending(listener: impl Fn(&LendState) + 'static) -> LendState {
    LEND_LISTENER.with(|l| *l.borrow_mut() = Some(Box::new(listener)));
    LEND_STATE.with(|s| s.borrow().clone())
}

pub fn unwatch_lending() {
    LEND_LISTENER.with(|l| *l.borrow_mut() = None);
}

/// This tab's worker id: kept in `sessionStorage`, so a reload re-attaches to its job.
fn tab_worker_id() -> String {
    const KEY: &str = "kiln.tab-worker-id";
    let storage = web_sys::window().and_then(|w| w.session_storage().ok().flatten());
    if let Some(id) = storage
        .as_ref()
        .and_then(|s| s.get_item(KEY).ok().flatten())
    {
        return id;
    }
    let id = format!(
        "tab-{:012x}",
        (js_sys::Math::random() * 2f64.powi(48)) as u64
    );
    if let Some(s) = storage {
        let _ = s.set_item(KEY, &id);
    }
    id
}

/// "Lend this tab": run the coordinator's `webgpu` jobs here until [`unlend`].
pub fn lend(token: String) -> Result<(), String> {
    let server = web_sys::window()
        .and_then(|w| w.location().origin().ok())
        .ok_or("no page origin")?;
    let trainer = Trainer::spawn(|message, _| match message {
        FromTrainer::Lending {
            connected,
            job,
            step,
            note,
            stopped,
        } => set_lend_state(|s| {
            *s = LendState {
                lending: !stopped,
                connected,
                job,
                step,
                note,
            }
        }),
        FromTrainer::Failed { error } => set_lend_state(|s| {
            s.lending = false;
            s.connected = false;
            s.note = error;
        }),
        _ => {}
    })?;
    let agent = web_sys::window()
        .and_then(|w| w.navigator().user_agent().ok())
        .unwrap_or_default();
    let browser = ["Firefox", "Edg", "Chrome", "Safari"]
        .into_iter()
        .find(|b| agent.contains(b))
        .map(|b| if b == "Edg" { "Edge" } else { b })
        .unwrap_or("browser");
    trainer.send(
        &ToTrainer::Lend {
            server,
            token,
            worker_id: tab_worker_id(),
            name: format!("{browser} tab"),
            no_gpu: None,
        },
        vec![],
    );
    LENT.with(|l| *l.borrow_mut() = Some(trainer));
    set_lend_state(|s| {
        *s = LendState {
            lending: true,
            note: "loading the trainer…".into(),
            ..LendState::default()
        }
    });
    Ok(())
}

/// Stop lending: the tab's job is cancelled and its socket closed.
pub fn unlend() {
    if let Some(trainer) = LENT.with(|l| l.borrow_mut().take()) {
        trainer.send(&ToTrainer::Unlend, vec![]);
        // Give the worker a moment to close its socket cleanly before it is terminated.
        leptos::task::spawn_local(async move {
            gloo_timers::future::TimeoutFuture::new(500).await;
            drop(trainer);
        });
    }
    set_lend_state(|s| {
        s.lending = false;
        s.connected = false;
        s.job = None;
        s.note = "not lent".into();
    });
}
