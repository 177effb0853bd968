//! "Try it" on a finished run: its final model (`model.json`, `model.bpk`) runs in this page's
//! trainer (a Web Worker): draw a digit and see the class probabilities, or check the model
//! on its dataset's test images here in the browser.

use kiln_proto::dataset::DatasetRef;
use kiln_proto::protocol::JobId;
use kiln_proto::spec::JobSpec;
use kiln_proto::trainer::{FromTrainer, PredictInput, ToTrainer, f32_bytes, f32_values, softmax};
use leptos::html::Canvas;
use leptos::prelude::*;
use leptos::task::spawn_local;
use wasm_bindgen::JsCast;

use super::ErrorLine;
use crate::app::api;
use crate::app::trainer::Trainer;
use crate::play::mnist_digit;

/// What "Try it" can do with a model: an MNIST-shaped image model takes a drawing.
fn takes_digits(model: &serde_json::Value) -> bool {
    match model["kind"].as_str() {
        Some("mlp") => model["input"] == 784 && model["outputs"] == 10,
        Some("cnn") => model["input"] == serde_json::json!([1, 28, 28]) && model["outputs"] == 10,
        _ => false,
    }
}

#[component]
pub fn TryIt(id: JobId, spec: JobSpec) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let model = RwSignal::new(None::<serde_json::Value>);
    let weights = StoredValue::new(None::<Vec<u8>>);
    let probabilities = RwSignal::new(Vec::<f32>::new());
    let infer_ms = RwSignal::new(None::<f64>);
    let checked = RwSignal::new(None::<(usize, usize, f64)>);
    let test_classes = RwSignal::new(String::new());
    let test_logits = RwSignal::new(String::new());
    let busy = RwSignal::new(false);
    let trainer = StoredValue::new_local(None::<Trainer>);
    on_cleanup(move || trainer.set_value(None));

    let on_message = move |message: FromTrainer, parts: Vec<Vec<u8>>| match message {
        FromTrainer::Predicted {
            rows,
            outputs,
            labels,
            ms,
        } => {
            let logits = parts.first().map(|b| f32_values(b)).unwrap_or_default();
            let _ = busy.try_set(false);
            if rows == 1 {
                let _ = probabilities.try_set(softmax(&logits));
                let _ = infer_ms.try_set(Some(ms));
            } else {
                let classes: Vec<usize> = logits.chunks(outputs.max(1)).map(argmax).collect();
                let right = classes
                    .iter()
                    .zip(&labels)
                    .filter(|(c, l)| **c == **l as usize)
                    .count();
                let _ = checked.try_set(Some((right, rows, ms)));
                let _ = test_classes.try_set(
                    classes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                );
                let _ = test_logits.try_set(
                    logits
                        .iter()
                        .map(|v| format!("{v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                );
            }
        }
        FromTrainer::Failed { error: e } => {
            let _ = busy.try_set(false);
            let _ = error.try_set(Some(e));
        }
        _ => {}
    };
    let send = move |input: PredictInput, payload: Vec<u8>| {
        let (Some(m), Some(w)) = (model.get_untracked(), weights.get_value()) else {
            return;
        };
        if trainer.with_value(Option::is_none) {
            match Trainer::spawn(on_message) {
                Ok(t) => trainer.set_value(Some(t)),
                Err(e) => {
                    error.set(Some(e));
                    return;
                }
            }
        }
        busy.set(true);
        trainer.with_value(|t| {
            if let Some(t) = t {
                t.send(
                    &ToTrainer::Predict {
                        model: m,
                        key: format!("job-{id}"),
                        input,
                    },
                    vec![w, payload],
                );
            }
        });
    };

    let open = move |_| {
        error.set(None);
        spawn_local(async move {
            let json = api::get_bytes(&format!("/api/jobs/{id}/artifacts/model.json")).await;
            let bpk = api::get_bytes(&format!("/api/jobs/{id}/artifacts/model.bpk")).await;
            match (json, bpk) {
                (Ok(j), Ok(b)) => match serde_json::from_slice::<serde_json::Value>(&j) {
                    Ok(m) if takes_digits(&m) => {
                        weights.set_value(Some(b));
                        let _ = model.try_set(Some(m));
                    }
                    Ok(m) => {
                        let _ = error.try_set(Some(format!(
                            "Try it runs MNIST-shaped image models for now; this is a {} model",
                            m["kind"].as_str().unwrap_or("different")
                        )));
                    }
                    Err(e) => {
                        let _ = error.try_set(Some(format!("model.json does not parse: {e}")));
                    }
                },
                (Err(e), _) | (_, Err(e)) => {
                    let _ = error.try_set(Some(format!("cannot fetch the final model: {e}")));
                }
            }
        });
    };

    let canvas = NodeRef::<Canvas>::new();
    let drawing = StoredValue::new(false);
    let context = move || {
        canvas
            .get_untracked()
            .and_then(|c| c.get_context("2d").ok().flatten())
            .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())
    };
    let point = move |ev: &leptos::ev::PointerEvent| (ev.offset_x() as f64, ev.offset_y() as f64);
    let down = move |ev: leptos::ev::PointerEvent| {
        drawing.set_value(true);
        if let Some(ctx) = context() {
            let (x, y) = point(&ev);
            ctx.set_line_width(22.0);
            ctx.set_line_cap("round");
            ctx.set_line_join("round");
            ctx.begin_path();
            ctx.move_to(x, y);
            ctx.line_to(x + 0.1, y + 0.1);
            ctx.stroke();
        }
    };
    let moved = move |ev: leptos::ev::PointerEvent| {
        if !drawing.get_value() {
            return;
        }
        if let Some(ctx) = context() {
            let (x, y) = point(&ev);
            ctx.line_to(x, y);
            ctx.stroke();
        }
    };
    let up = move |_| {
        if !drawing.get_value() {
            return;
        }
        drawing.set_value(false);
        let Some(ctx) = context() else { return };
        let Ok(image) = ctx.get_image_data(0.0, 0.0, 280.0, 280.0) else {
            return;
        };
        let rgba = image.data().0;
        let alpha: Vec<u8> = rgba.chunks_exact(4).map(|p| p[3]).collect();
        if let Some(pixels) = mnist_digit(&alpha, 280, 280) {
            send(
                PredictInput::Rows {
                    rows: 1,
                    shape: vec![1, 28, 28],
                },
                f32_bytes(&pixels),
            );
        }
    };
    let clear = move |_| {
        if let Some(ctx) = context() {
            ctx.clear_rect(0.0, 0.0, 280.0, 280.0);
        }
        probabilities.set(Vec::new());
    };
    let dataset = StoredValue::new(match DatasetRef::of(&spec.dataset) {
        Some(Ok(DatasetRef::Pinned(d))) => Some(format!("sha256:{}", d.hex())),
        Some(Ok(DatasetRef::Named(n))) => Some(n),
        _ => None,
    });
    let check = move |_| {
        let Some(dataset) = dataset.get_value() else {
            error.set(Some(
                "this run's data is not stored on the coordinator: the test set cannot be fetched"
                    .into(),
            ));
            return;
        };
        busy.set(true);
        spawn_local(async move {
            match api::get_bytes(&format!("/api/datasets/{dataset}/content")).await {
                Ok(tar) => send(PredictInput::IdxTest, tar),
                Err(e) => {
                    let _ = busy.try_set(false);
                    let _ = error.try_set(Some(format!("cannot fetch the dataset: {e}")));
                }
            }
        });
    };

    view! {
        <section class="try-it" data-test-classes=move || test_classes.get() data-test-logits=move || test_logits.get()>
            <h2>"Try it"</h2>
            {move || model.get().is_none().then(|| view! {
                <button id="try-it" on:click=open>"Try the final model in this browser"</button>
            })}
            <ErrorLine error/>
            {move || model.get().is_some().then(|| view! {
                <div class="try-digit">
                    <canvas node_ref=canvas width="280" height="280" class="draw" aria-label="Draw a digit"
                        on:pointerdown=down on:pointermove=moved on:pointerup=up on:pointerleave=up></canvas>
                    <div>
                        <p class="muted small">"Draw a digit; the model runs in this tab."</p>
                        <ol class="probabilities" start="0">
                            {move || {
                                let p = probabilities.get();
                                let best = (!p.is_empty()).then(|| argmax(&p));
                                p.iter().enumerate().map(|(class, v)| view! {
                                    <li class:best=best == Some(class) data-class=class.to_string() data-p=format!("{v}")>
                                        <span class="class">{class.to_string()}</span>
                                        <span class="bar" style=format!("width: {:.1}%", v * 100.0)></span>
                                        <span class="value">{format!("{:.1} %", v * 100.0)}</span>
                                    </li>
                                }).collect_view()
                            }}
                        </ol>
                        {move || infer_ms.get().map(|ms| view! { <p class="muted small">{format!("{ms:.2} ms in the model")}</p> })}
                        <button on:click=clear>"Clear"</button>
                        <button id="try-test-set" on:click=check disabled=move || busy.get()>"Check the test set here"</button>
                        {move || checked.get().map(|(right, n, ms)| view! {
                            <p class="try-checked">{format!("In this browser: {right} of {n} test images right ({:.1} %), {ms:.0} ms", right as f64 * 100.0 / n.max(1) as f64)}</p>
                        })}
                    </div>
                </div>
            })}
        </section>
    }
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap_or(0)
}
