//! "Try it" on a finished run: its final model (`model.json`, `model.bpk`, with `data.json`)
//! runs in this page's trainer (a Web Worker): draw a digit and see the class probabilities, or
//! check the model on its dataset's test images here in the browser; type a row of a CSV
//! model's columns; or give a character language model a prompt and let it write.

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
use crate::try_it::{TryKind, prompt_ids, row_input, sample, try_kind};

/// Characters "Generate" writes.
const GENERATE: usize = 200;

#[component]
pub fn TryIt(id: JobId, spec: JobSpec) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let model = RwSignal::new(None::<serde_json::Value>);
    let kind = RwSignal::new(None::<TryKind>);
    // A CSV model's row as typed, one text per column.
    let row = RwSignal::new(Vec::<String>::new());
    let value = RwSignal::new(None::<f32>);
    // A language model's prompt, what it wrote after it, and the sampling temperature.
    let prompt = RwSignal::new(String::new());
    let written = RwSignal::new(String::new());
    // The prompt the shown text continues.
    let used_prompt = RwSignal::new(String::new());
    let temperature = RwSignal::new("0.8".to_string());
    let generating = RwSignal::new(false);
    // While a generation runs, each prediction's logits go to it rather than to the page.
    let replies = StoredValue::new_local(None::<futures::channel::mpsc::UnboundedSender<Vec<f32>>>);
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
                let waiting = replies.with_value(|r| r.clone());
                if let Some(tx) = waiting {
                    let _ = tx.unbounded_send(logits.clone());
                }
                let _ = value.try_set(logits.first().copied());
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
            // A generation waiting for this prediction ends.
            replies.set_value(None);
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
            // Runs from before `data.json` have none; digit models do not need it.
            let data = api::get_bytes(&format!("/api/jobs/{id}/artifacts/data.json"))
                .await
                .ok()
                .and_then(|d| serde_json::from_slice::<kiln_proto::dataset::DataInfo>(&d).ok());
            match (json, bpk) {
                (Ok(j), Ok(b)) => match serde_json::from_slice::<serde_json::Value>(&j) {
                    Ok(m) => match try_kind(&m, data.as_ref()) {
                        Ok(k) => {
                            match &k {
                                TryKind::Row { stats, .. } => {
                                    let _ = row.try_set(
                                        stats.mean.iter().map(|v| format!("{v:.4}")).collect(),
                                    );
                                }
                                TryKind::Text { vocab, .. } => {
                                    let start = if "The "
                                        .chars()
                                        .all(|c| vocab.binary_search(&c).is_ok())
                                    {
                                        "The ".to_string()
                                    } else {
                                        vocab.iter().take(1).collect()
                                    };
                                    let _ = prompt.try_set(start);
                                }
                                TryKind::Digits => {}
                            }
                            weights.set_value(Some(b));
                            let _ = kind.try_set(Some(k));
                            let _ = model.try_set(Some(m));
                        }
                        Err(e) => {
                            let _ = error.try_set(Some(e));
                        }
                    },
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

    let predict_row = move |_| {
        error.set(None);
        let Some(TryKind::Row { columns, stats, .. }) = kind.get_untracked() else {
            return;
        };
        match row_input(&row.get_untracked(), &columns, &stats) {
            Ok(input) => send(
                PredictInput::Rows {
                    rows: 1,
                    shape: vec![columns.len()],
                },
                f32_bytes(&input),
            ),
            Err(e) => error.set(Some(e)),
        }
    };
    let generate = move |_| {
        error.set(None);
        let Some(TryKind::Text { vocab, context }) = kind.get_untracked() else {
            return;
        };
        let t = match temperature.get_untracked().trim().parse::<f32>() {
            Ok(t) if (0.0..=5.0).contains(&t) => t,
            _ => {
                error.set(Some(format!(
                    "temperature: {:?} is not a number from 0 to 5",
                    temperature.get_untracked()
                )));
                return;
            }
        };
        let start = prompt.get_untracked();
        if let Err(e) = prompt_ids(&start, &vocab, context) {
            error.set(Some(e));
            return;
        }
        written.set(String::new());
        used_prompt.set(start.clone());
        generating.set(true);
        spawn_local(async move {
            use futures::StreamExt;
            let (tx, mut rx) = futures::channel::mpsc::unbounded();
            replies.set_value(Some(tx));
            let mut text = start;
            for _ in 0..GENERATE {
                if !generating.get_untracked() {
                    break;
                }
                let ids = match prompt_ids(&text, &vocab, context) {
                    Ok(ids) => ids,
                    Err(e) => {
                        let _ = error.try_set(Some(e));
                        break;
                    }
                };
                send(
                    PredictInput::Rows {
                        rows: 1,
                        shape: vec![ids.len()],
                    },
                    f32_bytes(&ids),
                );
                let Some(logits) = rx.next().await else { break };
                let next = vocab[sample(&logits, t, js_sys::Math::random()).min(vocab.len() - 1)];
                text.push(next);
                if written.try_update(|w| w.push(next)).is_none() {
                    break; // the page is gone
                }
            }
            replies.set_value(None);
            let _ = generating.try_set(false);
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
        infer_ms.set(None);
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
            {move || (kind.get() == Some(TryKind::Digits)).then(|| view! {
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
            {move || match kind.get() {
                Some(TryKind::Row { columns, classes, .. }) => Some(view! {
                    <div class="try-row">
                        <p class="muted small">"Type a row (standardised as the training file was); the model runs in this tab."</p>
                        <div class="fields">
                            {columns.iter().enumerate().map(|(i, c)| view! {
                                <label class="field">{c.clone()}
                                    <input type="text" inputmode="decimal" data-column=c.clone()
                                        prop:value=move || row.with(|r| r.get(i).cloned().unwrap_or_default())
                                        on:input=move |ev| row.update(|r| if let Some(v) = r.get_mut(i) { *v = event_target_value(&ev) })/>
                                </label>
                            }).collect_view()}
                        </div>
                        <button id="try-predict-row" class="primary" on:click=predict_row disabled=move || busy.get()>"Predict"</button>
                        {if classes.is_empty() {
                            view! { <p class="try-value" data-value=move || value.get().map(|v| v.to_string()).unwrap_or_default()>
                                {move || value.get().map(|v| format!("Predicted value: {v:.4}")).unwrap_or_default()}
                            </p> }.into_any()
                        } else {
                            view! { <ol class="probabilities">
                                {move || {
                                    let p = probabilities.get();
                                    let best = (!p.is_empty()).then(|| argmax(&p));
                                    p.iter().zip(&classes).enumerate().map(|(i, (v, name))| view! {
                                        <li class:best=best == Some(i) data-class=name.clone() data-p=format!("{v}")>
                                            <span class="class">{name.clone()}</span>
                                            <span class="bar" style=format!("width: {:.1}%", v * 100.0)></span>
                                            <span class="value">{format!("{:.1} %", v * 100.0)}</span>
                                        </li>
                                    }).collect_view()
                                }}
                            </ol> }.into_any()
                        }}
                    </div>
                }.into_any()),
                Some(TryKind::Text { context, .. }) => Some(view! {
                    <div class="try-text">
                        <p class="muted small">{format!("A prompt; the model continues it one sampled character at a time, reading the last {context} characters, in this tab.")}</p>
                        <textarea id="try-prompt" rows="3" prop:value=move || prompt.get()
                            on:input=move |ev| prompt.set(event_target_value(&ev))></textarea>
                        <div class="actions">
                            <label class="inline">"Temperature"
                                <input id="try-temperature" type="text" inputmode="decimal" size="4" prop:value=move || temperature.get()
                                    on:input=move |ev| temperature.set(event_target_value(&ev))/>
                            </label>
                            <button id="try-generate" class="primary" on:click=generate disabled=move || generating.get()>{format!("Write {GENERATE} characters")}</button>
                            <button on:click=move |_| generating.set(false) disabled=move || !generating.get()>"Stop"</button>
                        </div>
                        <pre class="try-written" data-state=move || if generating.get() { "writing" } else { "idle" }
                            data-written=move || written.get()>
                            <span class="muted">{move || used_prompt.get()}</span>{move || written.get()}
                        </pre>
                    </div>
                }.into_any()),
                _ => None,
            }}
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
