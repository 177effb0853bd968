//! CSV tabular data: a header row, one label column chosen by name, every other column numeric.
//! Features are standardised (zero mean, unit variance per column).

use super::{DataError, DataInfo, DataSource, Dataset, Inputs, Standardisation, Targets, Task};
use kiln_proto::spec::CsvTask;

pub(super) fn load(
    source: &dyn DataSource,
    path: &str,
    label_column: &str,
    task: CsvTask,
) -> Result<(Dataset, DataInfo), DataError> {
    let bytes = source.read(path)?.ok_or_else(|| DataError::NotFound {
        path: path.to_string(),
        tried: path.to_string(),
    })?;
    let err = |message: String| DataError::Csv {
        path: path.to_string(),
        message,
    };
    // An empty file has no header row: say so, rather than list its (no) columns.
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(err(
            "the file is empty; a CSV dataset needs a header row and at least 2 data rows"
                .to_string(),
        ));
    }
    let mut reader = ::csv::ReaderBuilder::new()
        .trim(::csv::Trim::All)
        .from_reader(bytes.as_slice());
    let headers = reader
        .headers()
        .map_err(|e| err(format!("cannot read the header row: {e}")))?
        .clone();
    let label_index = headers
        .iter()
        .position(|h| h == label_column)
        .ok_or_else(|| {
            err(format!(
                "dataset.label_column = {label_column:?} is not a column; the columns are: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })?;
    let width = headers.len() - 1;
    if width == 0 {
        return Err(err(format!(
            "the only column is the label {label_column:?}; at least one feature column is needed"
        )));
    }
    let mut features: Vec<f32> = Vec::new();
    let mut raw_labels: Vec<String> = Vec::new();
    for (row, record) in reader.records().enumerate() {
        let line = row + 2; // 1-based, after the header
        let record = record.map_err(|e| err(format!("line {line}: {e}")))?;
        for (col, field) in record.iter().enumerate() {
            if col == label_index {
                raw_labels.push(field.to_string());
                continue;
            }
            let value: f32 = field.parse().map_err(|_| {
                err(format!(
                    "line {line}, column {:?}: {field:?} is not a number",
                    headers.get(col).unwrap_or("?")
                ))
            })?;
            if !value.is_finite() {
                return Err(err(format!(
                    "line {line}, column {:?}: {field:?} is not a finite number",
                    headers.get(col).unwrap_or("?")
                )));
            }
            features.push(value);
        }
    }
    let n = raw_labels.len();
    if n < 2 {
        return Err(err(format!("{n} data rows; at least 2 are needed")));
    }
    let standardisation = standardise(&mut features, width);
    let (targets, outputs, labels, task) = match task {
        CsvTask::Classification => {
            let mut classes = raw_labels.clone();
            classes.sort();
            classes.dedup();
            if classes.len() < 2 {
                return Err(err(format!(
                    "label column {label_column:?} has {} distinct value(s); classification needs at least 2",
                    classes.len()
                )));
            }
            let ids = raw_labels
                .iter()
                .map(|l| classes.binary_search(l).unwrap_or(0) as u32)
                .collect();
            let k = classes.len();
            (Targets::Class(ids), k, classes, Task::Classification)
        }
        CsvTask::Regression => {
            let mut values = Vec::with_capacity(n);
            for (i, l) in raw_labels.iter().enumerate() {
                let v: f32 = l.parse().ok().filter(|v: &f32| v.is_finite()).ok_or_else(|| {
                    err(format!(
                        "line {}, label column {label_column:?}: {l:?} is not a number (task = regression)",
                        i + 2
                    ))
                })?;
                values.push(v);
            }
            (Targets::Value(values), 1, vec![], Task::Regression)
        }
    };
    Ok((
        Dataset {
            inputs: Inputs::Dense {
                values: features,
                shape: vec![width],
            },
            targets,
        },
        DataInfo {
            input_shape: vec![width],
            outputs,
            task,
            labels,
            columns: headers
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != label_index)
                .map(|(_, h)| h.to_string())
                .collect(),
            standardise: Some(standardisation),
        },
    ))
}

/// Standardise each column in place; returns the means and deviations it used.
fn standardise(values: &mut [f32], width: usize) -> Standardisation {
    let n = values.len() / width;
    let mut stats = Standardisation {
        mean: Vec::with_capacity(width),
        std: Vec::with_capacity(width),
    };
    for c in 0..width {
        let mean = (0..n).map(|r| values[r * width + c] as f64).sum::<f64>() / n as f64;
        let var = (0..n)
            .map(|r| (values[r * width + c] as f64 - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        let std = var.sqrt().max(1e-8);
        for r in 0..n {
            let v = &mut values[r * width + c];
            *v = ((*v as f64 - mean) / std) as f32;
        }
        stats.mean.push(mean);
        stats.std.push(std);
    }
    stats
}
