//! A small causal transformer language model over characters.

use burn::module::Module;
use burn::nn::attention::generate_autoregressive_mask;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use super::{StepOutput, TrainModel};
use crate::data::{Dataset, Inputs, Targets};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharLmConfig {
    /// Number of distinct characters.
    pub vocab: usize,
    /// Context length.
    pub context: usize,
    pub d_model: usize,
    pub heads: usize,
    pub layers: usize,
    pub d_ff: usize,
    pub dropout: f64,
}

/// Token + position embeddings → pre-norm transformer encoder with a causal mask → layer norm →
/// linear head over the vocabulary.
#[derive(Module, Debug)]
pub struct CharLm {
    tokens: Embedding,
    positions: Embedding,
    encoder: TransformerEncoder,
    norm: LayerNorm,
    head: Linear,
}

impl CharLm {
    /// # Shapes
    /// - input: `[batch, seq]` token ids, `seq ≤ context`
    /// - output: `[batch, seq, vocab]` logits for the next character at each position
    pub fn forward(&self, tokens: Tensor<2, Int>) -> Tensor<3> {
        let [batch, seq] = tokens.dims();
        let device = tokens.device();
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .repeat_dim(0, batch);
        let x = self.tokens.forward(tokens) + self.positions.forward(positions); // [batch, seq, d_model]
        let mask = generate_autoregressive_mask(batch, seq, &device);
        let x = self
            .encoder
            .forward(TransformerEncoderInput::new(x).mask_attn(mask));
        self.head.forward(self.norm.forward(x))
    }
}

impl TrainModel for CharLm {
    type Config = CharLmConfig;

    fn init(c: &CharLmConfig, device: &Device) -> Self {
        CharLm {
            tokens: EmbeddingConfig::new(c.vocab, c.d_model).init(device),
            positions: EmbeddingConfig::new(c.context, c.d_model).init(device),
            encoder: TransformerEncoderConfig::new(c.d_model, c.d_ff, c.heads, c.layers)
                .with_dropout(c.dropout)
                .with_norm_first(true)
                .init(device),
            norm: LayerNormConfig::new(c.d_model).init(device),
            head: LinearConfig::new(c.d_model, c.vocab).init(device),
        }
    }

    fn logits(&self, inputs: &Inputs, device: &Device) -> Tensor<2> {
        let (values, len) = match inputs {
            Inputs::Tokens { values, len } => (values.clone(), *len),
            Inputs::Dense { values, .. } => (
                values.iter().map(|&v| v as u32).collect(),
                values.len().max(1),
            ),
        };
        let n = values.len() / len.max(1);
        let ids: Vec<i64> = values.iter().map(|&t| t as i64).collect();
        let logits = self.forward(Tensor::<2, Int>::from_data(
            TensorData::new(ids, [n, len]),
            device,
        ));
        let [_, _, vocab] = logits.dims();
        // The next character after each window: the last position's logits.
        logits
            .slice([0..n, len - 1..len, 0..vocab])
            .reshape([n, vocab])
    }

    fn forward_batch(&self, batch: &Dataset, device: &Device) -> StepOutput {
        let (Inputs::Tokens { values, len }, Targets::Tokens { values: next, .. }) =
            (&batch.inputs, &batch.targets)
        else {
            unreachable!("charlm batches are token windows, checked by ModelConfig::new")
        };
        let n = values.len() / len;
        let ids = |v: &[u32]| v.iter().map(|&t| t as i64).collect::<Vec<_>>();
        let inputs = Tensor::<2, Int>::from_data(TensorData::new(ids(values), [n, *len]), device);
        let targets = Tensor::<1, Int>::from_data(TensorData::new(ids(next), [n * len]), device);
        let logits = self.forward(inputs); // [n, len, vocab]
        let [_, _, vocab] = logits.dims();
        let logits = logits.reshape([n * len, vocab]);
        let loss = CrossEntropyLossConfig::new()
            .init(device)
            .forward(logits.clone(), targets.clone());
        let correct = logits
            .argmax(1)
            .reshape([n * len])
            .equal(targets)
            .int()
            .sum();
        StepOutput {
            loss,
            correct: Some(correct),
            predictions: n * len,
        }
    }
}
