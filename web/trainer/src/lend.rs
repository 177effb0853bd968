//! "Lend this tab": the tab as a worker. The same protocol logic as `kiln worker`
//! (`kiln_proto::worker_session`, sans-IO) driven by the browser's WebSocket, `fetch` and
//! timers from inside the Web Worker — so heartbeats keep going while the tab is hidden —
//! and the same training core for the jobs it is assigned.
//!
//! The browser APIs are bound here by hand (a few `extern` items) rather than through
//! `web-sys`: a web-sys feature set of its own would make Cargo rebuild wgpu and Burn for
//! this module.

use std::cell::RefCell;
use std::collections::{HashSet, VecDeque};
use std::rc::Rc;

use js_sys::{Function, Object, Promise, Reflect, Uint8Array};
use kiln_proto::dataset::{DatasetKind, DatasetRef};
use kiln_proto::protocol::{
    AttemptOutcome, AttemptRef, Capabilities, CloseReason, CoordinatorMessage, LogLine,
};
use kiln_proto::spec::{DeviceRequest, JobSpec};
use kiln_proto::trainer::FromTrainer;
use kiln_proto::worker_session::{Action, Artifact, Input, JobEvent, SessionConfig, WorkerSession};
use kiln_train::data::{self, MemorySource};
use kiln_train::device::resolve_browser;
use kiln_train::train::{CancelToken, Checkpoint, Outcome, TrainEvent, TrainRun, train};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{JsFuture, spawn_local};

use crate::browser::{Emitter, pacer};
use crate::files;

#[wasm_bindgen]
extern "C" {
    type WebSocket;
    #[wasm_bindgen(constructor, catch)]
    fn new(url: &str) -> Result<WebSocket, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn send(this: &WebSocket, data: &str) -> Result<(), JsValue>;
    #[wasm_bindgen(method)]
    fn close(this: &WebSocket);
    #[wasm_bindgen(method, getter, js_name = readyState)]
    fn ready_state(this: &WebSocket) -> u16;
    #[wasm_bindgen(method, setter)]
    fn set_onopen(this: &WebSocket, f: Option<&Function>);
    #[wasm_bindgen(method, setter)]
    fn set_onmessage(this: &WebSocket, f: Option<&Function>);
    #[wasm_bindgen(method, setter)]
    fn set_onclose(this: &WebSocket, f: Option<&Function>);

    #[wasm_bindgen(js_name = fetch)]
    fn js_fetch(url: &str, init: &JsValue) -> Promise;
    type Response;
    #[wasm_bindgen(method, getter)]
    fn ok(this: &Response) -> bool;
    #[wasm_bindgen(method, getter)]
    fn status(this: &Response) -> u16;
    #[wasm_bindgen(method, js_name = arrayBuffer)]
    fn array_buffer(this: &Response) -> Promise;
    #[wasm_bindgen(method)]
    fn text(this: &Response) -> Promise;

    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(f: &Function, ms: i32) -> i32;
    #[wasm_bindgen(js_name = clearTimeout)]
    fn clear_timeout(id: i32);
}

const OPEN: u16 = 1;

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// One lending tab.
struct Lender {
    session: WorkerSession,
    /// The coordinator's HTTP origin, and its `/ws/worker` URL with the token.
    http: String,
    ws_url: String,
    token: String,
    socket: Option<WebSocket>,
    socket_handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The previous socket's handlers: one of them may be running when they are replaced
    /// (a close handler reconnects), so they are dropped one connection later.
    old_handlers: Vec<Closure<dyn FnMut(JsValue)>>,
    /// The pending `setTimeout`, and the one closure every timeout calls (kept for the
    /// lender's life: the running timeout schedules the next).
    timer: Option<i32>,
    on_timer: Option<Closure<dyn FnMut()>>,
    job: Option<(AttemptRef, CancelToken)>,
    aborted: HashSet<AttemptRef>,
    uploads: VecDeque<(u64, AttemptRef, Vec<Artifact>)>,
    uploading: bool,
    emit: Rc<Emitter>,
    tick: Function,
    no_gpu: Option<String>,
    step: Option<u64>,
    note: String,
    stopped: bool,
}

type Shared = Rc<RefCell<Lender>>;

thread_local! {
    static LENDER: RefCell<Option<Shared>> = const { RefCell::new(None) };
}

/// Start lending (a second `lend` replaces the first).
pub fn start(
    server: String,
    token: String,
    worker_id: String,
    name: String,
    no_gpu: Option<String>,
    emit: Rc<Emitter>,
    tick: Function,
) {
    stop();
    let device_name = match &no_gpu {
        Some(why) => format!("cpu in wasm ({why})"),
        None => "webgpu (this browser's GPU adapter)".to_string(),
    };
    let capabilities = Capabilities {
        devices: vec![DeviceRequest::Webgpu],
        device_names: vec![device_name],
        memory_mb: 0,
        cores: 1,
        kiln_version: env!("CARGO_PKG_VERSION").to_string(),
        peer_addr: None,
        browser: true,
        control: false,
    };
    let session = WorkerSession::new(SessionConfig {
        worker_id,
        name,
        capabilities,
        max_backoff_ms: 5_000,
        seed: now_ms(),
    });
    let http = server.trim_end_matches('/').to_string();
    let ws_base = http
        .strip_prefix("https://")
        .map(|rest| format!("wss://{rest}"))
        .or_else(|| {
            http.strip_prefix("http://")
                .map(|rest| format!("ws://{rest}"))
        })
        .unwrap_or_else(|| http.clone());
    let ws_url = format!(
        "{ws_base}/ws/worker?access_token={}",
        js_sys::encode_uri_component(&token)
    );
    let lender = Rc::new(RefCell::new(Lender {
        session,
        http,
        ws_url,
        token,
        socket: None,
        socket_handlers: Vec::new(),
        old_handlers: Vec::new(),
        timer: None,
        on_timer: None,
        job: None,
        aborted: HashSet::new(),
        uploads: VecDeque::new(),
        uploading: false,
        emit,
        tick,
        no_gpu,
        step: None,
        note: "connecting…".into(),
        stopped: false,
    }));
    let weak = Rc::downgrade(&lender);
    lender.borrow_mut().on_timer = Some(Closure::<dyn FnMut()>::new(move || {
        if let Some(lender) = weak.upgrade() {
            lender.borrow_mut().timer = None;
            input(&lender, Input::Tick);
        }
    }));
    LENDER.with(|l| *l.borrow_mut() = Some(lender.clone()));
    drive(&lender);
}

/// Stop lending: cancel the job, close the socket, forget the session.
pub fn stop() {
    let Some(lender) = LENDER.with(|l| l.borrow_mut().take()) else {
        return;
    };
    let mut l = lender.borrow_mut();
    l.stopped = true;
    if let Some((_, cancel)) = &l.job {
        cancel.cancel();
    }
    if let Some(ws) = l.socket.take() {
        ws.set_onclose(None);
        ws.close();
    }
    if let Some(id) = l.timer.take() {
        clear_timeout(id);
    }
    l.note = "stopped lending".into();
    report(&l);
}

fn report(l: &Lender) {
    l.emit.send(
        &FromTrainer::Lending {
            connected: l.session.is_connected() && !l.stopped,
            job: l.job.as_ref().map(|(a, _)| a.job_id),
            step: l.step,
            note: l.note.clone(),
            stopped: l.stopped,
        },
        vec![],
    );
}

/// Feed an input to the session, then do what it asks.
fn input(lender: &Shared, input: Input) {
    {
        let mut l = lender.borrow_mut();
        if l.stopped {
            return;
        }
        l.session.handle(now_ms(), input);
    }
    drive(lender);
}

/// Perform the session's actions and write what it has to send, until it has nothing more;
/// then sleep until its next deadline.
fn drive(lender: &Shared) {
    loop {
        let action = lender.borrow_mut().session.poll_action();
        if let Some(action) = action {
            perform(lender, action);
            continue;
        }
        let text = {
            let l = lender.borrow();
            match (&l.socket, l.session.poll_transmit()) {
                (Some(ws), Some(message)) if ws.ready_state() == OPEN => {
                    serde_json::to_string(message).ok()
                }
                _ => None,
            }
        };
        let Some(text) = text else { break };
        let sent = lender
            .borrow()
            .socket
            .as_ref()
            .is_some_and(|ws| ws.send(&text).is_ok());
        let now = now_ms();
        let mut l = lender.borrow_mut();
        if sent {
            l.session.handle(now, Input::Sent);
        } else {
            l.socket = None;
            l.session.handle(now, Input::Disconnected { reason: None });
        }
    }
    schedule(lender);
    report(&lender.borrow());
}

fn schedule(lender: &Shared) {
    let mut l = lender.borrow_mut();
    if let Some(id) = l.timer.take() {
        clear_timeout(id);
    }
    if l.stopped {
        return;
    }
    let Some(at) = l.session.poll_timeout() else {
        return;
    };
    let wait = at.saturating_sub(now_ms()).min(i32::MAX as u64) as i32;
    let id = l
        .on_timer
        .as_ref()
        .map(|f| set_timeout(f.as_ref().unchecked_ref(), wait));
    l.timer = id;
}

fn perform(lender: &Shared, action: Action) {
    match action {
        Action::Connect => connect(lender),
        Action::StartJob {
            attempt,
            spec,
            resume,
            group: _,
            // A tab does not offer live control (`Capabilities::control`), so the coordinator
            // neither assigns it a paused job or one with live learning rates nor controls it.
            lr_changes: _,
            controls: _,
        } => {
            let lender = lender.clone();
            spawn_local(async move { run_job(lender, attempt, spec, resume).await });
        }
        Action::ControlJob { .. } => {}
        Action::CancelJob { attempt } => {
            if let Some((a, cancel)) = &lender.borrow().job
                && *a == attempt
            {
                cancel.cancel();
            }
        }
        Action::DownloadResume { attempt, artifact } => {
            let lender = lender.clone();
            spawn_local(async move {
                let (http, token) = {
                    let l = lender.borrow();
                    (l.http.clone(), l.token.clone())
                };
                let url = format!(
                    "{http}/api/jobs/{}/artifacts/{}",
                    attempt.job_id,
                    js_sys::encode_uri_component(&artifact)
                );
                let result = get_bytes(&url, &token).await;
                if lender.borrow_mut().aborted.remove(&attempt) {
                    return;
                }
                let answer = match result {
                    Ok(bytes) => Input::ResumeDownloaded { attempt, bytes },
                    Err(error) => Input::ResumeFailed { attempt, error },
                };
                input(&lender, answer);
            });
        }
        Action::AbortDownload { attempt } => {
            lender.borrow_mut().aborted.insert(attempt);
        }
        Action::Upload {
            id,
            attempt,
            artifacts,
        } => {
            let start = {
                let mut l = lender.borrow_mut();
                l.uploads.push_back((id, attempt, artifacts));
                !std::mem::replace(&mut l.uploading, true)
            };
            if start {
                let lender = lender.clone();
                spawn_local(async move { upload_loop(lender).await });
            }
        }
        Action::Warn(message) => lender.borrow_mut().note = message,
        Action::Fatal(fatal) => {
            let mut l = lender.borrow_mut();
            l.note = format!("the coordinator refused this tab: {fatal}");
            l.stopped = true;
            if let Some(ws) = l.socket.take() {
                ws.close();
            }
        }
    }
}

fn connect(lender: &Shared) {
    let url = lender.borrow().ws_url.clone();
    let ws = match WebSocket::new(&url) {
        Ok(ws) => ws,
        Err(_) => {
            lender
                .borrow_mut()
                .session
                .handle(now_ms(), Input::ConnectFailed);
            return;
        }
    };
    let weak = Rc::downgrade(lender);
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(lender) = weak.upgrade() {
            lender.borrow_mut().note = "connected".into();
            input(&lender, Input::Connected);
        }
    });
    let weak = Rc::downgrade(lender);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        let Some(lender) = weak.upgrade() else { return };
        let text = Reflect::get(&event, &"data".into())
            .ok()
            .and_then(|d| d.as_string())
            .unwrap_or_default();
        match serde_json::from_str::<CoordinatorMessage>(&text) {
            Ok(message) => input(&lender, Input::Frame(message)),
            Err(e) => lender.borrow_mut().note = format!("ignored a message: {e}"),
        }
    });
    let weak = Rc::downgrade(lender);
    let on_close = Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
        let Some(lender) = weak.upgrade() else { return };
        let reason = Reflect::get(&event, &"reason".into())
            .ok()
            .and_then(|r| r.as_string())
            .and_then(|r| serde_json::from_str::<CloseReason>(&r).ok());
        {
            let mut l = lender.borrow_mut();
            l.socket = None;
            l.note = "disconnected from the coordinator; reconnecting".into();
        }
        input(&lender, Input::Disconnected { reason });
    });
    ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
    let mut l = lender.borrow_mut();
    if let Some(old) = l.socket.replace(ws) {
        old.set_onclose(None);
        old.close();
    }
    l.old_handlers = std::mem::replace(&mut l.socket_handlers, vec![on_open, on_message, on_close]);
}

/// The coordinator's bytes at `url`, with the token.
async fn get_bytes(url: &str, token: &str) -> Result<Vec<u8>, String> {
    let response = request("GET", url, token, None).await?;
    let buffer = JsFuture::from(response.array_buffer())
        .await
        .map_err(|e| format!("reading {url}: {e:?}"))?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

async fn request(
    method: &str,
    url: &str,
    token: &str,
    body: Option<&[u8]>,
) -> Result<Response, String> {
    let init = Object::new();
    let headers = Object::new();
    let _ = Reflect::set(
        &headers,
        &"Authorization".into(),
        &format!("Bearer {token}").into(),
    );
    let _ = Reflect::set(&init, &"method".into(), &method.into());
    let _ = Reflect::set(&init, &"headers".into(), &headers);
    if let Some(body) = body {
        let _ = Reflect::set(&init, &"body".into(), &Uint8Array::from(body));
    }
    let response: Response = JsFuture::from(js_fetch(url, &init))
        .await
        .map_err(|e| format!("{method} {url}: {e:?}"))?
        .unchecked_into();
    if response.ok() {
        return Ok(response);
    }
    let status = response.status();
    let text = JsFuture::from(response.text())
        .await
        .ok()
        .and_then(|t| t.as_string())
        .unwrap_or_default();
    Err(format!("{method} {url}: HTTP {status}: {text}"))
}

/// Store the queued uploads one after another, in order, three tries each.
async fn upload_loop(lender: Shared) {
    loop {
        let next = lender.borrow_mut().uploads.pop_front();
        let Some((id, attempt, artifacts)) = next else {
            lender.borrow_mut().uploading = false;
            return;
        };
        let (http, token) = {
            let l = lender.borrow();
            (l.http.clone(), l.token.clone())
        };
        let mut ok = true;
        for artifact in &artifacts {
            let url = format!(
                "{http}/api/jobs/{}/artifacts/{}",
                attempt.job_id,
                js_sys::encode_uri_component(&artifact.name)
            );
            let mut stored = false;
            for _ in 0..3 {
                match request("PUT", &url, &token, Some(&artifact.bytes)).await {
                    Ok(_) => {
                        stored = true;
                        break;
                    }
                    Err(e) => lender.borrow_mut().note = format!("upload failed: {e}"),
                }
            }
            if !stored {
                ok = false;
                break;
            }
        }
        let answer = if ok {
            Input::Uploaded { id }
        } else {
            Input::UploadFailed { id }
        };
        input(&lender, answer);
    }
}

fn job_event(lender: &Shared, attempt: AttemptRef, event: JobEvent) {
    input(lender, Input::Job { attempt, event });
}

fn log(lender: &Shared, attempt: AttemptRef, text: String) {
    job_event(
        lender,
        attempt,
        JobEvent::Log(LogLine {
            ts_ms: now_ms() as i64,
            text,
        }),
    );
}

/// The files of a job's data: a stored dataset (the coordinator pinned `kiln:NAME` to
/// `kiln:sha256:<hex>` at submission) fetched with the token; synthetic data needs none.
async fn job_files(lender: &Shared, spec: &mut JobSpec) -> Result<Vec<(String, Vec<u8>)>, String> {
    let Some(reference) = DatasetRef::of(&spec.dataset) else {
        return Ok(Vec::new());
    };
    let reference = reference.map_err(|e| format!("dataset.path: {e}"))?;
    let stored = match reference {
        DatasetRef::Pinned(digest) => format!("sha256:{}", digest.hex()),
        DatasetRef::Named(name) => name,
        DatasetRef::Local(path) => {
            return Err(format!(
                "dataset.path {path:?} is a path on a machine, which a browser tab cannot \
                 read: store the data on the coordinator (`kiln data push`, or let `kiln \
                 submit` upload it) and name it kiln:NAME"
            ));
        }
    };
    let kind = DatasetKind::of(&spec.dataset).unwrap_or(DatasetKind::Text);
    let (file, path) = kiln_proto::trainer::stored_layout(kind);
    let (http, token) = {
        let l = lender.borrow();
        (l.http.clone(), l.token.clone())
    };
    let bytes = get_bytes(&format!("{http}/api/datasets/{stored}/content"), &token).await?;
    spec.dataset.set_path(path.to_string());
    Ok(vec![(file.to_string(), bytes)])
}

async fn run_job(lender: Shared, attempt: AttemptRef, spec: JobSpec, resume: Option<Vec<u8>>) {
    let mut data_spec = spec.clone();
    let files = match job_files(&lender, &mut data_spec).await {
        Ok(f) => f,
        Err(error) => {
            input(&lender, Input::StartFailed { attempt, error });
            return;
        }
    };
    let source = match files::unpack(files) {
        Ok(files) => files
            .into_iter()
            .fold(MemorySource::default(), |s, (path, bytes)| {
                s.with(&path, bytes)
            }),
        Err(e) => {
            input(
                &lender,
                Input::StartFailed {
                    attempt,
                    error: e.to_string(),
                },
            );
            return;
        }
    };
    let checkpoint = match resume.map(|b| Checkpoint::decode(&b)).transpose() {
        Ok(c) => c,
        Err(e) => {
            finish_failed(&lender, attempt, format!("cannot resume: {e}"), false);
            return;
        }
    };
    let cancel = CancelToken::default();
    let (no_gpu, tick) = {
        let mut l = lender.borrow_mut();
        l.job = Some((attempt, cancel.clone()));
        l.step = None;
        l.note = format!("running job {}", attempt.job_id);
        (l.no_gpu.clone(), l.tick.clone())
    };
    let resolved = resolve_browser(spec.device, no_gpu.as_deref()).await;
    log(
        &lender,
        attempt,
        format!("training in a browser tab on {}", resolved.description),
    );
    let splits = match data::load_for_model(&data_spec.dataset, &spec.model, spec.seed, &source) {
        Ok(s) => s,
        Err(e) => {
            finish_failed(&lender, attempt, e.to_string(), false);
            return;
        }
    };
    if let Err(e) = crate::browser::fits_in_a_tab(&spec, &splits) {
        finish_failed(&lender, attempt, e, false);
        return;
    }
    let description = resolved.description.clone();
    let events = lender.clone();
    let mut on_event = move |event: TrainEvent| match event {
        TrainEvent::Started {
            total_steps,
            start_step,
            ..
        } => job_event(
            &events,
            attempt,
            JobEvent::Started {
                device: description.clone(),
                total_steps,
                start_step,
            },
        ),
        TrainEvent::Metric(metric) => {
            events.borrow_mut().step = Some(metric.step);
            job_event(&events, attempt, JobEvent::Metric(metric));
        }
        TrainEvent::Checkpoint(c) => job_event(
            &events,
            attempt,
            JobEvent::Checkpoint {
                step: c.state.step,
                bytes: c.encode(),
            },
        ),
        // A tab takes no live control (`Capabilities::control` is false): no `run.control`.
        TrainEvent::RankRates { .. } | TrainEvent::Controlled { .. } => {}
        TrainEvent::Note(line) => log(&events, attempt, line),
    };
    let mut pause = pacer(tick);
    let mut run = TrainRun::new(
        data_spec.clone(),
        splits,
        resolved.device.clone(),
        &mut on_event,
    );
    run.resume = checkpoint;
    run.cancel = cancel;
    run.between_steps = Some(&mut pause);
    let result = train(run).await;
    lender.borrow_mut().job = None;
    match result {
        Ok(summary) => {
            let mut artifacts = Vec::new();
            if let Some(weights) = &summary.weights {
                artifacts.push(Artifact {
                    name: "model.bpk".into(),
                    bytes: weights.clone(),
                });
            }
            if let Ok(json) = serde_json::to_vec_pretty(&summary.model) {
                artifacts.push(Artifact {
                    name: "model.json".into(),
                    bytes: json,
                });
            }
            if summary.weights.is_some()
                && let Ok(json) = serde_json::to_vec_pretty(&summary.data)
            {
                artifacts.push(Artifact {
                    name: "data.json".into(),
                    bytes: json,
                });
            }
            if let Ok(json) =
                serde_json::to_vec_pretty(&summary.report(&spec.name, resolved.kind.as_str()))
            {
                artifacts.push(Artifact {
                    name: "summary.json".into(),
                    bytes: json,
                });
            }
            let outcome = match summary.outcome {
                Outcome::Completed => AttemptOutcome::Succeeded,
                Outcome::Cancelled => AttemptOutcome::Cancelled,
            };
            job_event(
                &lender,
                attempt,
                JobEvent::Finished {
                    outcome,
                    error: None,
                    retryable: None,
                    steps: summary.steps,
                    artifacts,
                    ts_ms: now_ms() as i64,
                },
            );
        }
        Err(e) => finish_failed(&lender, attempt, e.to_string(), e.is_retryable()),
    }
}

fn finish_failed(lender: &Shared, attempt: AttemptRef, error: String, retryable: bool) {
    lender.borrow_mut().job = None;
    job_event(
        lender,
        attempt,
        JobEvent::Finished {
            outcome: AttemptOutcome::Failed,
            error: Some(error),
            retryable: Some(retryable),
            steps: 0,
            artifacts: Vec::new(),
            ts_ms: now_ms() as i64,
        },
    );
}
