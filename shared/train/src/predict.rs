//! Running a trained model: its outputs for host inputs, natively (`kiln predict`) and in a
//! browser ("Try it"), from the files every run ends with (`model.json`, `model.bpk`).

use burn::tensor::Device;

use crate::data::Inputs;
use crate::model::{CharLm, Cnn, Mlp, ModelConfig, TrainModel};
use crate::train::{TrainError, load_weights};
pub use kiln_proto::trainer::softmax;

/// A model built from its configuration and loaded with its weights, on a device.
pub enum Loaded {
    Mlp(Mlp),
    Cnn(Cnn),
    Charlm(CharLm),
}

impl Loaded {
    /// Build the model `config` describes on `device` and load `weights` (burnpack) into it; an
    /// error says when the weights are not this model's.
    pub fn new(
        config: &ModelConfig,
        weights: &[u8],
        device: &Device,
    ) -> Result<Loaded, TrainError> {
        Ok(match config {
            ModelConfig::Mlp(c) => Loaded::Mlp(load_weights(Mlp::init(c, device), weights)?),
            ModelConfig::Cnn(c) => Loaded::Cnn(load_weights(Cnn::init(c, device), weights)?),
            ModelConfig::Charlm(c) => {
                Loaded::Charlm(load_weights(CharLm::init(c, device), weights)?)
            }
        })
    }

    /// The model's outputs for `inputs` (`[examples, outputs]`, row-major) and the number of
    /// outputs per example; one asynchronous read, so it runs on WebGPU too.
    pub async fn logits(
        &self,
        inputs: &Inputs,
        device: &Device,
    ) -> Result<(Vec<f32>, usize), TrainError> {
        let out = match self {
            Loaded::Mlp(m) => m.logits(inputs, device),
            Loaded::Cnn(m) => m.logits(inputs, device),
            Loaded::Charlm(m) => m.logits(inputs, device),
        };
        let [_, outputs] = out.dims();
        let values = out
            .into_data_async()
            .await
            .map_err(|e| TrainError::device("reading predictions", &format!("{e:?}")))?
            .try_into_vec::<f32>()
            .map_err(|e| TrainError::device("reading predictions", &format!("{e:?}")))?;
        Ok((values, outputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{MemorySource, load};
    use crate::train::{TrainEvent, TrainRun, train};
    use kiln_proto::JobSpec;

    #[test]
    fn a_trained_model_predicts_what_training_measured() {
        // Train the MLP a little on synthetic blobs, then run the final weights: their
        // accuracy on the validation split is the loop's own.
        let spec = JobSpec::from_toml_str(
            r#"
name = "p"
seed = 5
[model]
kind = "mlp"
hidden = [16]
[dataset]
kind = "synthetic"
examples = 256
features = 8
classes = 3
validation_fraction = 0.25
[optimizer]
lr = 0.02
[training]
batch_size = 16
epochs = 3
"#,
        )
        .expect("spec");
        let _serial = crate::serial();
        let data = load(&spec.dataset, spec.seed, &MemorySource::default()).expect("data");
        let valid = data.valid.clone().expect("a validation split");
        let mut val_accuracy = None;
        let mut on_event = |e: TrainEvent| {
            if let TrainEvent::Metric(m) = e
                && m.split == kiln_proto::metric::Split::Val
            {
                val_accuracy = m.accuracy;
            }
        };
        let device = Device::flex();
        let summary = pollster::block_on(train(TrainRun::new(
            spec,
            data,
            device.clone(),
            &mut on_event,
        )))
        .expect("trains");
        let weights = summary.weights.expect("weights");
        let model = Loaded::new(&summary.model, &weights, &device).expect("loads");
        let (logits, outputs) =
            pollster::block_on(model.logits(&valid.inputs, &device)).expect("predicts");
        assert_eq!(outputs, 3);
        let crate::data::Targets::Class(labels) = &valid.targets else {
            panic!("class targets")
        };
        let correct = logits
            .chunks(outputs)
            .zip(labels)
            .filter(|(row, label)| {
                let best = row
                    .iter()
                    .enumerate()
                    .max_by(|a, b| a.1.total_cmp(b.1))
                    .map(|(i, _)| i);
                best == Some(**label as usize)
            })
            .count();
        let accuracy = correct as f64 / labels.len() as f64;
        assert!(
            (accuracy - val_accuracy.expect("val accuracy")).abs() < 1e-9,
            "{accuracy} vs {val_accuracy:?}"
        );
        let p = softmax(&logits[..outputs]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{p:?}");
        // Weights of another model are refused with a message.
        let other = ModelConfig::Mlp(crate::model::MlpConfig {
            input: 8,
            hidden: vec![4],
            outputs: 3,
            activation: kiln_proto::spec::Activation::Relu,
            dropout: 0.0,
            regression: false,
        });
        let err = Loaded::new(&other, &weights, &device)
            .err()
            .expect("another model's weights");
        assert!(err.to_string().contains("do not fit the model"), "{err}");
    }
}
