//! "Try it"'s pure parts (tested natively): which input a finished run's model takes — a drawn
//! digit, a row of its CSV's columns, a text prompt — from its `model.json` and `data.json`,
//! and how that input becomes the model's.

use kiln_proto::dataset::{DataInfo, Standardisation, Task};

/// What a run's model takes in "Try it".
#[derive(Debug, Clone, PartialEq)]
pub enum TryKind {
    /// An MNIST-shaped image model (mlp with 784 inputs or cnn with `[1, 28, 28]`, 10 classes).
    Digits,
    /// A CSV model: one value per column, standardised as the training file was.
    Row {
        columns: Vec<String>,
        stats: Standardisation,
        /// Class names; empty for a regression.
        classes: Vec<String>,
    },
    /// A character language model: a prompt, continued one sampled character at a time.
    Text { vocab: Vec<char>, context: usize },
}

/// The input a model takes, or why "Try it" cannot run it. `data` is the run's `data.json`,
/// absent for runs from before it existed.
pub fn try_kind(model: &serde_json::Value, data: Option<&DataInfo>) -> Result<TryKind, String> {
    let kind = model["kind"].as_str().unwrap_or("unknown");
    let digits = match kind {
        "mlp" => model["input"] == 784 && model["outputs"] == 10,
        "cnn" => model["input"] == serde_json::json!([1, 28, 28]) && model["outputs"] == 10,
        _ => false,
    };
    if digits {
        return Ok(TryKind::Digits);
    }
    let Some(data) = data else {
        return Err(format!(
            "this {kind} model's run has no data.json (runs from before Kiln kept it): train it \
             again to try it here"
        ));
    };
    match (kind, data.task, &data.standardise) {
        ("mlp", Task::Classification | Task::Regression, Some(stats))
            if !data.columns.is_empty() && stats.mean.len() == data.columns.len() =>
        {
            Ok(TryKind::Row {
                columns: data.columns.clone(),
                stats: stats.clone(),
                classes: if data.task == Task::Classification {
                    data.labels.clone()
                } else {
                    Vec::new()
                },
            })
        }
        ("charlm", Task::Language, _) => {
            let vocab: Vec<char> = data
                .labels
                .iter()
                .filter_map(|l| {
                    let mut chars = l.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) => Some(c),
                        _ => None,
                    }
                })
                .collect();
            let context = model["context"].as_u64().unwrap_or(0) as usize;
            if vocab.len() != data.labels.len() || vocab.is_empty() || context == 0 {
                return Err("this language model's data.json has no usable vocabulary".into());
            }
            Ok(TryKind::Text { vocab, context })
        }
        _ => Err(format!(
            "Try it takes image models of MNIST's shape, CSV models and character language \
             models; this is a {kind} model of a {:?} task",
            data.task
        )),
    }
}

/// A row typed into the page (one text per column) as the model's input: numbers,
/// standardised; the error names the column and the value.
pub fn row_input(
    texts: &[String],
    columns: &[String],
    stats: &Standardisation,
) -> Result<Vec<f32>, String> {
    let mut row = Vec::with_capacity(texts.len());
    for (text, column) in texts.iter().zip(columns) {
        let value: f64 = text
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("{column}: {text:?} is not a number"))?;
        row.push(value);
    }
    stats
        .apply(&row)
        .ok_or_else(|| format!("{} values for {} columns", row.len(), columns.len()))
}

/// The token ids of the prompt's last `context` characters; a character outside the
/// vocabulary is named.
pub fn prompt_ids(prompt: &str, vocab: &[char], context: usize) -> Result<Vec<f32>, String> {
    let chars: Vec<char> = prompt.chars().collect();
    if chars.is_empty() {
        return Err("type a prompt of at least one character".into());
    }
    chars[chars.len().saturating_sub(context)..]
        .iter()
        .map(|c| {
            vocab
                .binary_search(c)
                .map(|i| i as f32)
                .map_err(|_| format!("{c:?} is not in the model's vocabulary"))
        })
        .collect()
}

/// A class drawn from `logits` at `temperature` (0: the most likely), with `u` uniform in
/// `[0, 1)`.
pub fn sample(logits: &[f32], temperature: f32, u: f64) -> usize {
    if temperature <= 0.0 {
        return logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map_or(0, |(i, _)| i);
    }
    let scaled: Vec<f32> = logits.iter().map(|l| l / temperature).collect();
    let p = kiln_proto::trainer::softmax(&scaled);
    let mut acc = 0.0f64;
    for (i, q) in p.iter().enumerate() {
        acc += f64::from(*q);
        if u < acc {
            return i;
        }
    }
    p.len().saturating_sub(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv_info(task: Task) -> DataInfo {
        DataInfo {
            input_shape: vec![2],
            outputs: if task == Task::Classification { 2 } else { 1 },
            task,
            labels: if task == Task::Classification {
                vec!["a".into(), "b".into()]
            } else {
                vec![]
            },
            columns: vec!["x".into(), "y".into()],
            standardise: Some(Standardisation {
                mean: vec![1000.0, 0.0],
                std: vec![10.0, 2.0],
            }),
        }
    }

    #[test]
    fn each_model_gets_its_input() {
        let digits = serde_json::json!({"kind": "cnn", "input": [1, 28, 28], "outputs": 10});
        assert_eq!(try_kind(&digits, None), Ok(TryKind::Digits));
        let mlp = serde_json::json!({"kind": "mlp", "input": 2, "outputs": 2});
        let err = try_kind(&mlp, None).expect_err("no data.json");
        assert!(err.contains("no data.json"), "{err}");
        match try_kind(&mlp, Some(&csv_info(Task::Classification))) {
            Ok(TryKind::Row {
                columns, classes, ..
            }) => {
                assert_eq!(columns, ["x", "y"]);
                assert_eq!(classes, ["a", "b"]);
            }
            other => panic!("{other:?}"),
        }
        match try_kind(&mlp, Some(&csv_info(Task::Regression))) {
            Ok(TryKind::Row { classes, .. }) => assert!(classes.is_empty()),
            other => panic!("{other:?}"),
        }
        let lm = serde_json::json!({"kind": "charlm", "context": 8, "vocab": 3});
        let text = DataInfo {
            input_shape: vec![8],
            outputs: 3,
            task: Task::Language,
            labels: vec![" ".into(), "a".into(), "b".into()],
            columns: vec![],
            standardise: None,
        };
        assert_eq!(
            try_kind(&lm, Some(&text)),
            Ok(TryKind::Text {
                vocab: vec![' ', 'a', 'b'],
                context: 8
            })
        );
        // A synthetic-blobs MLP has no columns to type into.
        let blobs = DataInfo {
            columns: vec![],
            standardise: None,
            ..csv_info(Task::Classification)
        };
        assert!(try_kind(&mlp, Some(&blobs)).is_err());
    }

    #[test]
    fn a_typed_row_is_standardised_and_checked() {
        let info = csv_info(Task::Classification);
        let stats = info.standardise.expect("stats");
        assert_eq!(
            row_input(&["1010".into(), " -4 ".into()], &info.columns, &stats),
            Ok(vec![1.0, -2.0])
        );
        assert_eq!(
            row_input(&["1010".into(), "four".into()], &info.columns, &stats),
            Err("y: \"four\" is not a number".into())
        );
        assert!(row_input(&["inf".into(), "1".into()], &info.columns, &stats).is_err());
    }

    #[test]
    fn prompts_become_ids_and_samples_follow_the_logits() {
        let vocab = [' ', 'a', 'b'];
        assert_eq!(prompt_ids("ab a", &vocab, 3), Ok(vec![2.0, 0.0, 1.0]));
        assert_eq!(
            prompt_ids("abc", &vocab, 8),
            Err("'c' is not in the model's vocabulary".into())
        );
        assert!(prompt_ids("", &vocab, 8).is_err());
        let logits = [0.0, 5.0, 1.0];
        assert_eq!(sample(&logits, 0.0, 0.99), 1, "temperature 0 is the argmax");
        assert_eq!(sample(&logits, 1.0, 0.0), 0, "u = 0 takes the first class");
        assert_eq!(sample(&logits, 1.0, 0.5), 1, "most of the mass is class 1");
        assert_eq!(sample(&logits, 1.0, 0.999_999), 2);
    }
}
