//! Metrics as they travel: in `metrics.jsonl`, over the wire, into the store.

use serde::{Deserialize, Serialize};

/// Which part of the data a metric was measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

/// One measurement. Train metrics average the steps since the previous one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub step: u64,
    /// Fractional epoch, e.g. 1.5 = halfway through the second pass.
    pub epoch: f64,
    pub split: Split,
    pub loss: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lr: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_per_sec: Option<f64>,
}
