//! The module's entry points, called by `worker.js` in a dedicated Web Worker.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Function, Promise, Uint8Array};
use kiln_proto::spec::JobSpec;
use kiln_proto::trainer::{FromTrainer, ToTrainer};
use kiln_train::data::{self, MemorySource};
use kiln_train::device::resolve_browser;
use kiln_train::train::{
    BetweenSteps, CancelToken, Checkpoint, Outcome, TrainEvent, TrainRun, train,
};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_time::Instant;

use crate::{files, lend, predict};

/// How long the loop may run before it lets the worker's event loop in (a stop message).
const YIELD_EVERY_MS: u128 = 10;

thread_local! {
    /// The run in progress: at most one per trainer.
    static RUNNING: RefCell<Option<CancelToken>> = const { RefCell::new(None) };
}

#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
}

/// Sends messages back to the page: `emit(json, parts)` with `parts` an array of `Uint8Array`s.
pub(crate) struct Emitter(Function);

impl Emitter {
    pub(crate) fn send(&self, message: &FromTrainer, parts: Vec<Vec<u8>>) {
        let array = Array::new();
        for p in parts {
            array.push(&Uint8Array::from(p.as_slice()));
        }
        let _ = self
            .0
            .call2(&JsValue::NULL, &message.to_json().into(), &array);
    }
}

/// Handle one message of the page (`kiln_proto::trainer::ToTrainer` as JSON, with its binary
/// parts). `tick()` returns a promise that settles on the worker's next event-loop turn.
#[wasm_bindgen]
pub async fn handle(json: String, parts: Array, emit: Function, tick: Function) {
    let emit = Emitter(emit);
    match serde_json::from_str::<ToTrainer>(&json) {
        Ok(ToTrainer::Lend {
            server,
            token,
            worker_id,
            name,
            no_gpu,
        }) => lend::start(server, token, worker_id, name, no_gpu, Rc::new(emit), tick),
        Ok(ToTrainer::Unlend) => lend::stop(),
        Ok(ToTrainer::Predict { model, key, input }) => {
            let parts = parts.iter().map(|p| Uint8Array::new(&p).to_vec()).collect();
            if let Err(error) = predict::predict(model, key, input, parts, &emit).await {
                emit.send(&FromTrainer::Failed { error }, vec![]);
            }
        }
        Ok(ToTrainer::Stop) => RUNNING.with(|r| {
            if let Some(cancel) = r.borrow().as_ref() {
                cancel.cancel();
            }
        }),
        Ok(ToTrainer::Train {
            spec,
            files,
            device,
            resume,
            no_gpu,
        }) => {
            if RUNNING.with(|r| r.borrow().is_some()) {
                emit.send(
                    &FromTrainer::Failed {
                        error: "this tab is already training: stop that run first".into(),
                    },
                    vec![],
                );
                return;
            }
            let cancel = CancelToken::default();
            RUNNING.with(|r| *r.borrow_mut() = Some(cancel.clone()));
            let parts: Vec<Vec<u8>> = parts.iter().map(|p| Uint8Array::new(&p).to_vec()).collect();
            let result = run(
                *spec, files, device, no_gpu, resume, parts, cancel, &emit, tick,
            )
            .await;
            RUNNING.with(|r| *r.borrow_mut() = None);
            if let Err(error) = result {
                emit.send(&FromTrainer::Failed { error }, vec![]);
            }
        }
        Err(e) => emit.send(
            &FromTrainer::Failed {
                error: format!("not a trainer message: {e}"),
            },
            vec![],
        ),
    }
}

/// Refuse, before anything is allocated, a model whose training would not fit in a tab.
pub(crate) fn fits_in_a_tab(spec: &JobSpec, splits: &data::Splits) -> Result<(), String> {
    use kiln_proto::trainer::{MAX_TRAINING_BYTES, training_bytes};
    let config = kiln_train::model::ModelConfig::new(&spec.model, &splits.info)
        .map_err(|e| e.to_string())?;
    let parameters = config.parameters();
    let bytes = training_bytes(parameters);
    if bytes > MAX_TRAINING_BYTES {
        return Err(format!(
            "the model has {parameters} parameters: training it takes about {:.1} GiB (weights, \
             gradients and Adam's moments), more than a browser tab can hold ({} GiB): make it \
             smaller, or train it on a worker",
            bytes as f64 / (1u64 << 30) as f64,
            MAX_TRAINING_BYTES >> 30
        ));
    }
    Ok(())
}

/// The loop's `between_steps` in a browser: every [`YIELD_EVERY_MS`] it awaits `tick()`, a
/// turn of the worker's event loop. On the CPU every device read completes at once, so the
/// loop would otherwise never let a stop message (or the lending socket) in.
pub(crate) fn pacer(tick: Function) -> impl FnMut() -> BetweenSteps {
    let since = Rc::new(Cell::new(Instant::now()));
    move || -> BetweenSteps {
        if since.get().elapsed().as_millis() < YIELD_EVERY_MS {
            return Box::pin(async {});
        }
        let since = since.clone();
        let next = tick.call0(&JsValue::NULL).ok().map(Promise::from);
        Box::pin(async move {
            if let Some(p) = next {
                let _ = JsFuture::from(p).await;
            }
            since.set(Instant::now());
        })
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one message's fields and the worker's two callbacks"
)]
async fn run(
    spec: JobSpec,
    names: Vec<String>,
    device: kiln_proto::spec::DeviceRequest,
    no_gpu: Option<String>,
    resume: bool,
    mut parts: Vec<Vec<u8>>,
    cancel: CancelToken,
    emit: &Emitter,
    tick: Function,
) -> Result<(), String> {
    if let Err(errors) = spec.validate() {
        let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "the spec has {} problem(s): {}",
            list.len(),
            list.join("; ")
        ));
    }
    if parts.len() != names.len() + usize::from(resume) {
        return Err(format!(
            "the message announced {} file(s){} but carried {} part(s)",
            names.len(),
            if resume { " and a checkpoint" } else { "" },
            parts.len()
        ));
    }
    let checkpoint = if resume {
        let bytes = parts.pop().unwrap_or_default();
        Some(Checkpoint::decode(&bytes).map_err(|e| format!("cannot resume: {e}"))?)
    } else {
        None
    };
    let unpacked =
        files::unpack(names.into_iter().zip(parts).collect()).map_err(|e| e.to_string())?;
    let source = unpacked
        .into_iter()
        .fold(MemorySource::default(), |s, (path, bytes)| {
            s.with(&path, bytes)
        });

    let resolved = resolve_browser(device, no_gpu.as_deref()).await;
    emit.send(
        &FromTrainer::Device {
            kind: resolved.kind,
            description: resolved.description.clone(),
        },
        vec![],
    );
    let splits = data::load_for_model(&spec.dataset, &spec.model, spec.seed, &source)
        .map_err(|e| e.to_string())?;
    fits_in_a_tab(&spec, &splits)?;
    let train_examples = splits.train.len();

    let mut last_checkpoint = None::<Checkpoint>;
    let mut on_event = |event: TrainEvent| match event {
        TrainEvent::Started {
            total_steps,
            start_step,
            parameters,
            ..
        } => emit.send(
            &FromTrainer::Started {
                total_steps,
                start_step,
                parameters,
                train_examples,
            },
            vec![],
        ),
        TrainEvent::Metric(metric) => emit.send(&FromTrainer::Metric { metric }, vec![]),
        TrainEvent::Checkpoint(c) => last_checkpoint = Some(*c),
        // The page says itself what a WebGPU checkpoint lacks.
        TrainEvent::RankRates { .. } | TrainEvent::Note(_) => {}
        // The playground pauses through `between_steps` and sets no `run.control`.
        TrainEvent::Controlled { .. } => {}
    };
    let mut pause = pacer(tick);
    let mut run = TrainRun::new(spec.clone(), splits, resolved.device.clone(), &mut on_event);
    run.resume = checkpoint;
    run.cancel = cancel;
    run.between_steps = Some(&mut pause);
    run.final_checkpoint = true;
    let summary = train(run).await.map_err(|e| e.to_string())?;

    let report = summary.report(&spec.name, resolved.kind.as_str());
    let model = serde_json::to_value(&summary.model).unwrap_or_default();
    let data = serde_json::to_value(&summary.data).unwrap_or_default();
    let mut parts = Vec::new();
    let weights = summary.weights.is_some();
    parts.extend(summary.weights);
    let checkpoint = last_checkpoint.is_some();
    parts.extend(last_checkpoint.map(|c| c.encode()));
    emit.send(
        &FromTrainer::Finished {
            outcome: match summary.outcome {
                Outcome::Completed => "completed",
                Outcome::Cancelled => "cancelled",
            }
            .into(),
            steps: summary.steps,
            summary: report,
            model,
            data,
            weights,
            checkpoint,
        },
        parts,
    );
    Ok(())
}
