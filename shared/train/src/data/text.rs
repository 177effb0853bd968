//! Plain UTF-8 text for `charlm`: the vocabulary is the set of characters in the file.

use super::{DataError, DataInfo, DataSource, Dataset, Inputs, Targets, Task};

pub(super) fn load(source: &dyn DataSource, path: &str) -> Result<(Dataset, DataInfo), DataError> {
    let bytes = source.read(path)?.ok_or_else(|| DataError::NotFound {
        path: path.to_string(),
        tried: path.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|e| DataError::Text {
        path: path.to_string(),
        message: format!("not UTF-8 text ({e})"),
    })?;
    if text.trim().is_empty() {
        return Err(DataError::Text {
            path: path.to_string(),
            message: "the text file is empty; charlm needs some text to learn from".to_string(),
        });
    }
    let mut vocab: Vec<char> = text.chars().collect();
    vocab.sort_unstable();
    vocab.dedup();
    let tokens: Vec<u32> = text
        .chars()
        .map(|c| vocab.binary_search(&c).unwrap_or(0) as u32)
        .collect();
    let len = tokens.len();
    Ok((
        Dataset {
            inputs: Inputs::Tokens {
                values: tokens.clone(),
                len,
            },
            targets: Targets::Tokens {
                values: tokens,
                len,
            },
        },
        DataInfo {
            input_shape: vec![len],
            outputs: vocab.len(),
            task: Task::Language,
            labels: vocab.iter().map(|c| c.to_string()).collect(),
            columns: vec![],
            standardise: None,
        },
    ))
}

/// Non-overlapping windows of `context + 1` tokens; the tail `fraction` of the text is validation.
pub(super) fn windows(
    tokens: &[u32],
    context: usize,
    fraction: f64,
) -> Result<(Dataset, Option<Dataset>), DataError> {
    let n = tokens.len();
    let need = context + 1;
    let n_valid_tokens = ((n as f64) * fraction) as usize;
    let n_train_tokens = n - n_valid_tokens;
    if n_train_tokens < need {
        return Err(DataError::Invalid(format!(
            "the text has {n} characters ({n_train_tokens} for training); model.context = {context} needs at least {need}"
        )));
    }
    let cut = |part: &[u32]| -> Option<Dataset> {
        if part.len() < need {
            return None;
        }
        let count = (part.len() - 1) / context;
        let mut inputs = Vec::with_capacity(count * context);
        let mut targets = Vec::with_capacity(count * context);
        for w in 0..count {
            let start = w * context;
            inputs.extend_from_slice(&part[start..start + context]);
            targets.extend_from_slice(&part[start + 1..start + 1 + context]);
        }
        Some(Dataset {
            inputs: Inputs::Tokens {
                values: inputs,
                len: context,
            },
            targets: Targets::Tokens {
                values: targets,
                len: context,
            },
        })
    };
    let train = cut(&tokens[..n_train_tokens])
        .ok_or_else(|| DataError::Invalid("not enough text for one training window".to_string()))?;
    let valid = cut(&tokens[n_train_tokens..]);
    Ok((train, valid))
}
