//! "Try it": run a trained model in the page's trainer (the CPU module: small and quick to
//! load), keeping the last model built.

use std::cell::RefCell;

use kiln_proto::spec::DatasetSpec;
use kiln_proto::trainer::{FromTrainer, PredictInput, f32_bytes, f32_values};
use kiln_train::data::{self, Inputs, MemorySource, Targets};
use kiln_train::device::resolve_browser;
use kiln_train::model::ModelConfig;
use kiln_train::predict::Loaded;
use web_time::Instant;

use crate::browser::Emitter;
use crate::files;

thread_local! {
    static MODEL: RefCell<Option<(String, Loaded)>> = const { RefCell::new(None) };
}

pub async fn predict(
    model: serde_json::Value,
    key: String,
    input: PredictInput,
    mut parts: Vec<Vec<u8>>,
    emit: &Emitter,
) -> Result<(), String> {
    if parts.len() != 2 {
        return Err(format!(
            "a prediction carries the weights and the input: got {} part(s)",
            parts.len()
        ));
    }
    let payload = parts.pop().unwrap_or_default();
    let weights = parts.pop().unwrap_or_default();
    let config: ModelConfig = serde_json::from_value(model)
        .map_err(|e| format!("model.json does not describe a Kiln model: {e}"))?;
    let device = resolve_browser(kiln_proto::spec::DeviceRequest::Cpu, None)
        .await
        .device;
    let cached = MODEL.with(|m| m.borrow().as_ref().is_some_and(|(k, _)| *k == key));
    if !cached {
        let loaded = Loaded::new(&config, &weights, &device).map_err(|e| e.to_string())?;
        MODEL.with(|m| *m.borrow_mut() = Some((key.clone(), loaded)));
    }
    let (inputs, labels) = match input {
        PredictInput::Rows { rows, shape } => {
            let values = f32_values(&payload);
            let width: usize = shape.iter().product();
            if values.len() != rows * width {
                return Err(format!(
                    "{} input values for {rows} row(s) of shape {shape:?}",
                    values.len()
                ));
            }
            match &config {
                // A language model reads token ids: whole numbers below its vocabulary, at
                // most its context long (a bad id would fail inside Burn's embedding).
                ModelConfig::Charlm(c) => {
                    if width == 0 || width > c.context {
                        return Err(format!(
                            "a prompt of {width} characters: this model reads 1 to {}",
                            c.context
                        ));
                    }
                    let ids = values
                        .iter()
                        .map(|&v| {
                            (v.fract() == 0.0 && v >= 0.0 && (v as usize) < c.vocab)
                                .then_some(v as u32)
                                .ok_or_else(|| {
                                    format!(
                                        "token id {v} is not in 0..{} (the vocabulary)",
                                        c.vocab
                                    )
                                })
                        })
                        .collect::<Result<Vec<u32>, String>>()?;
                    (
                        Inputs::Tokens {
                            values: ids,
                            len: width,
                        },
                        Vec::new(),
                    )
                }
                ModelConfig::Mlp(c) if width != c.input => {
                    return Err(format!(
                        "rows of {width} values: this model takes {}",
                        c.input
                    ));
                }
                ModelConfig::Cnn(c) if width != c.input.iter().product::<usize>() => {
                    return Err(format!(
                        "rows of shape {shape:?}: this model takes {:?}",
                        c.input
                    ));
                }
                _ => (Inputs::Dense { values, shape }, Vec::new()),
            }
        }
        PredictInput::IdxTest => {
            let unpacked =
                files::unpack(vec![("data.tar".into(), payload)]).map_err(|e| e.to_string())?;
            let source = unpacked
                .into_iter()
                .fold(MemorySource::default(), |s, (p, b)| s.with(&p, b));
            let spec = DatasetSpec::Idx {
                path: "data".into(),
                validation_fraction: 0.0,
                limit: None,
            };
            let splits = data::load(&spec, 0, &source).map_err(|e| e.to_string())?;
            let test = splits
                .test
                .ok_or("this dataset has no test images (t10k-*)")?;
            let labels = match test.targets {
                Targets::Class(l) => l,
                _ => Vec::new(),
            };
            (test.inputs, labels)
        }
    };
    // Out of the cache while it runs (a future cannot hold the thread-local's borrow).
    let Some((key, loaded)) = MODEL.with(|m| m.borrow_mut().take()) else {
        return Err("no model loaded".into());
    };
    let started = Instant::now();
    let result = loaded.logits(&inputs, &device).await;
    MODEL.with(|m| *m.borrow_mut() = Some((key, loaded)));
    let (logits, outputs) = result.map_err(|e| e.to_string())?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    emit.send(
        &FromTrainer::Predicted {
            rows: logits.len() / outputs.max(1),
            outputs,
            labels,
            ms,
        },
        vec![f32_bytes(&logits)],
    );
    Ok(())
}
