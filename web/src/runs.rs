//! What the pages compute from runs, kept free of the DOM so it is tested natively: chart
//! series, the hover lookup, final metrics, the hyperparameters that differ between runs, and
//! human-readable times.

use std::collections::{BTreeMap, BTreeSet};

use kiln_proto::JobSpec;
use kiln_proto::metric::Split;
use kiln_proto::protocol::MetricPoint;

/// The quantities a job page charts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quantity {
    Loss,
    Accuracy,
    Lr,
    SamplesPerSec,
}

impl Quantity {
    pub const ALL: [Quantity; 4] = [
        Quantity::Loss,
        Quantity::Accuracy,
        Quantity::Lr,
        Quantity::SamplesPerSec,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Quantity::Loss => "loss",
            Quantity::Accuracy => "accuracy",
            Quantity::Lr => "learning rate",
            Quantity::SamplesPerSec => "samples/s",
        }
    }

    pub fn slug(self) -> &'static str {
        match self {
            Quantity::Loss => "loss",
            Quantity::Accuracy => "accuracy",
            Quantity::Lr => "lr",
            Quantity::SamplesPerSec => "samples",
        }
    }

    pub fn of(self, p: &MetricPoint) -> Option<f64> {
        let m = &p.metric;
        let v = match self {
            Quantity::Loss => Some(m.loss),
            Quantity::Accuracy => m.accuracy,
            Quantity::Lr => m.lr,
            Quantity::SamplesPerSec => m.samples_per_sec,
        };
        v.filter(|v| v.is_finite())
    }
}

pub fn split_name(s: Split) -> &'static str {
    match s {
        Split::Train => "train",
        Split::Val => "val",
        Split::Test => "test",
    }
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    /// (step, value), ordered by step.
    pub points: Vec<(f64, f64)>,
}

/// One series per split that has values of `q`, within `[from, to]` steps when given.
pub fn series(points: &[MetricPoint], q: Quantity, range: Option<(f64, f64)>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for split in [Split::Train, Split::Val, Split::Test] {
        let pts: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.metric.split == split)
            .filter_map(|p| q.of(p).map(|v| (p.metric.step as f64, v)))
            .filter(|(x, _)| range.is_none_or(|(a, b)| *x >= a && *x <= b))
            .collect();
        if !pts.is_empty() {
            out.push(Series {
                label: split_name(split).to_string(),
                points: pts,
            });
        }
    }
    out
}

/// Append live points, keeping the order by step and dropping points a newer attempt
/// re-reported (a resumed attempt repeats no steps, but a reconnect may resend).
pub fn merge_live(points: &mut Vec<MetricPoint>, new: &[MetricPoint]) {
    for p in new {
        let dup = points.iter().rev().take(64).any(|q| {
            q.metric.step == p.metric.step
                && q.metric.split == p.metric.split
                && q.attempt == p.attempt
        });
        if dup {
            continue;
        }
        let at = points.partition_point(|q| q.metric.step <= p.metric.step);
        points.insert(at, p.clone());
    }
}

/// The most smoothing the control offers: beyond it a curve barely moves.
pub const MAX_SMOOTHING: f64 = 0.99;

/// TensorBoard's smoothing: an exponential moving average with weight `weight` (0 = none,
/// clamped to `[0, MAX_SMOOTHING]`), debiased so the first points are not pulled towards
/// zero. Same steps, smoothed values; it runs over the points given (downsampled ones on a
/// long run, as TensorBoard smooths its sampled points).
pub fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    let w = if weight.is_finite() {
        weight.clamp(0.0, MAX_SMOOTHING)
    } else {
        0.0
    };
    if w == 0.0 {
        return points.to_vec();
    }
    let mut last = 0.0;
    let mut bias = 1.0; // w^n
    points
        .iter()
        .map(|&(x, y)| {
            if !y.is_finite() {
                return (x, y);
            }
            last = last * w + (1.0 - w) * y;
            bias *= w;
            (x, last / (1.0 - bias))
        })
        .collect()
}

/// Points for a log-scale axis: `(x, log10 y)`, leaving out values that are not positive
/// (a log axis has no place for them).
pub fn log10_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    points
        .iter()
        .filter(|(_, y)| *y > 0.0 && y.is_finite())
        .map(|&(x, y)| (x, y.log10()))
        .collect()
}

/// The smoothing weight from a URL's `smooth=` value; `None` if it is not a number.
pub fn parse_smoothing(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(0.0, MAX_SMOOTHING))
}

/// `path?query` with `key` set to `value` (or removed for `None`), other parameters kept in
/// their order. Keys and values are expected URL-safe (numbers and ids).
pub fn with_param(url: &str, key: &str, value: Option<&str>) -> String {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(key))
        .map(str::to_string)
        .collect();
    if let Some(v) = value {
        params.push(format!("{key}={v}"));
    }
    if params.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", params.join("&"))
    }
}

/// Index of the point nearest to `x` (by step) in a series ordered by x.
pub fn nearest(points: &[(f64, f64)], x: f64) -> Option<usize> {
    if points.is_empty() {
        return None;
    }
    let i = points.partition_point(|(px, _)| *px < x);
    let candidates = [i.checked_sub(1), (i < points.len()).then_some(i)];
    candidates.into_iter().flatten().min_by(|a, b| {
        (points[*a].0 - x)
            .abs()
            .total_cmp(&(points[*b].0 - x).abs())
    })
}

/// The last value of each split for a quantity: what "final accuracy" means on a run page.
pub fn final_values(points: &[MetricPoint], q: Quantity) -> Vec<(&'static str, f64)> {
    [Split::Test, Split::Val, Split::Train]
        .into_iter()
        .filter_map(|split| {
            points
                .iter()
                .rev()
                .filter(|p| p.metric.split == split)
                .find_map(|p| q.of(p))
                .map(|v| (split_name(split), v))
        })
        .collect()
}

/// A spec as `dotted.path → value`, e.g. `optimizer.lr → 0.001`.
pub fn flatten_spec(spec: &JobSpec) -> BTreeMap<String, String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            serde_json::Value::Null => {
                out.insert(prefix.to_string(), "—".into());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(v) = serde_json::to_value(spec) {
        walk("", &v, &mut out);
    }
    out
}

/// The fields whose values differ between the specs (missing counts as `—`), without `name`.
pub fn differing_fields(specs: &[&JobSpec]) -> Vec<(String, Vec<String>)> {
    let flat: Vec<BTreeMap<String, String>> = specs.iter().map(|s| flatten_spec(s)).collect();
    let keys: BTreeSet<&String> = flat.iter().flat_map(|m| m.keys()).collect();
    keys.into_iter()
        .filter(|k| k.as_str() != "name")
        .filter_map(|k| {
            let values: Vec<String> = flat
                .iter()
                .map(|m| m.get(k).cloned().unwrap_or_else(|| "—".into()))
                .collect();
            let first = &values[0];
            values
                .iter()
                .any(|v| v != first)
                .then(|| (k.clone(), values))
        })
        .collect()
}

pub use kiln_proto::fmt::age;

/// A value for a table or tooltip: 4 significant digits, no exponent for everyday sizes.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e6).contains(&a) {
        format!("{v:.3e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else {
        let digits = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        format!("{v:.digits$}")
    }
}

/// An axis label: `fmt_value` without trailing zeros ("0.5", "1e-3", not "0.5000", "1.000e-3").
pub fn fmt_tick(v: f64) -> String {
    let text = fmt_value(v);
    let (mantissa, exponent) = match text.split_once('e') {
        Some((m, e)) => (m, Some(e)),
        None => (text.as_str(), None),
    };
    let mantissa = if mantissa.contains('.') {
        mantissa.trim_end_matches('0').trim_end_matches('.')
    } else {
        mantissa
    };
    match exponent {
        Some(e) => format!("{mantissa}e{e}"),
        None => mantissa.to_string(),
    }
}

/// Progress of a job in percent, if its length is known.
pub fn progress(step: u64, total: u64) -> Option<f64> {
    (total > 0).then(|| (step as f64 / total as f64 * 100.0).min(100.0))
}

/// One value of every training point, in order, comma-separated: the playground's and the
/// share page's `data-*` attributes, which tests and benchmarks read (a canvas holds no values).
pub fn train_values(
    points: &[MetricPoint],
    value: impl Fn(&kiln_proto::metric::Metric) -> Option<f64>,
) -> String {
    points
        .iter()
        .filter(|p| p.metric.split == Split::Train)
        .filter_map(|p| value(&p.metric))
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_proto::metric::Metric;

    fn pt(step: u64, split: Split, loss: f64, acc: Option<f64>) -> MetricPoint {
        MetricPoint {
            attempt: 1,
            metric: Metric {
                step,
                epoch: 0.0,
                split,
                loss,
                accuracy: acc,
                lr: Some(1e-3),
                samples_per_sec: None,
            },
        }
    }

    #[test]
    fn series_split_by_split_and_skip_missing_values() {
        let points = vec![
            pt(1, Split::Train, 2.0, None),
            pt(2, Split::Train, 1.0, None),
            pt(2, Split::Val, 1.5, Some(0.5)),
            pt(3, Split::Train, f64::NAN, None),
        ];
        let loss = series(&points, Quantity::Loss, None);
        assert_eq!(loss.len(), 2);
        assert_eq!(loss[0].label, "train");
        assert_eq!(loss[0].points, vec![(1.0, 2.0), (2.0, 1.0)]);
        let acc = series(&points, Quantity::Accuracy, None);
        assert_eq!(acc.len(), 1);
        assert_eq!(acc[0].label, "val");
        let ranged = series(&points, Quantity::Loss, Some((2.0, 2.0)));
        assert_eq!(ranged[0].points, vec![(2.0, 1.0)]);
        assert!(series(&points, Quantity::SamplesPerSec, None).is_empty());
    }

    #[test]
    fn live_points_merge_in_step_order_without_duplicates() {
        let mut points = vec![
            pt(1, Split::Train, 2.0, None),
            pt(3, Split::Train, 1.0, None),
        ];
        merge_live(
            &mut points,
            &[
                pt(2, Split::Train, 1.5, None),
                pt(3, Split::Train, 1.0, None),
            ],
        );
        let steps: Vec<u64> = points.iter().map(|p| p.metric.step).collect();
        assert_eq!(steps, [1, 2, 3]);
    }

    #[test]
    fn nearest_finds_the_closest_step() {
        let s = [(0.0, 1.0), (10.0, 2.0), (20.0, 3.0)];
        assert_eq!(nearest(&s, -5.0), Some(0));
        assert_eq!(nearest(&s, 6.0), Some(1));
        assert_eq!(nearest(&s, 14.0), Some(1));
        assert_eq!(nearest(&s, 99.0), Some(2));
        assert_eq!(nearest(&[], 1.0), None);
    }

    #[test]
    fn final_values_prefer_test_then_val_then_train() {
        let points = vec![
            pt(5, Split::Train, 0.5, Some(0.8)),
            pt(5, Split::Val, 0.6, Some(0.75)),
            pt(9, Split::Train, 0.4, Some(0.85)),
        ];
        assert_eq!(
            final_values(&points, Quantity::Accuracy),
            vec![("val", 0.75), ("train", 0.85)]
        );
    }

    #[test]
    fn differing_fields_lists_only_what_changed() {
        let a =
            JobSpec::from_toml_str(include_str!("../../examples/synthetic.toml")).expect("valid");
        let mut b = a.clone();
        b.name = "other".into();
        b.optimizer.lr = 0.01;
        b.training.batch_size = 128;
        let diff = differing_fields(&[&a, &b]);
        let keys: Vec<&str> = diff.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["optimizer.lr", "training.batch_size"]);
        assert_eq!(diff[0].1, ["0.003", "0.01"]);
        assert!(differing_fields(&[&a, &a.clone()]).is_empty());
        b.training.eval_every = None;
        let unset = differing_fields(&[&a, &b]);
        let eval = unset.iter().find(|(k, _)| k == "training.eval_every");
        assert_eq!(eval.map(|(_, v)| v[1].as_str()), Some("—"));
    }

    #[test]
    fn values_and_progress_read_well() {
        assert_eq!(fmt_value(0.94671), "0.9467");
        assert_eq!(fmt_value(12345.6), "12346");
        assert_eq!(fmt_value(0.0001), "1.000e-4");
        assert_eq!(fmt_value(2.5), "2.500");
        assert_eq!(progress(50, 200), Some(25.0));
        assert_eq!(progress(1, 0), None);
    }

    #[test]
    fn smoothing_is_a_debiased_moving_average() {
        let pts = [(0.0, 1.0), (1.0, 3.0)];
        let out = smooth(&pts, 0.5);
        assert_eq!(
            out[0],
            (0.0, 1.0),
            "the first point is itself, not pulled to 0"
        );
        assert!((out[1].1 - 7.0 / 3.0).abs() < 1e-12, "{out:?}");
        // None is the identity; a constant stays constant at any weight.
        assert_eq!(smooth(&pts, 0.0), pts.to_vec());
        let flat: Vec<_> = (0..500).map(|i| (i as f64, 2.5)).collect();
        assert!(smooth(&flat, 0.99).iter().all(|p| (p.1 - 2.5).abs() < 1e-9));
        // Noise shrinks, steps are kept, and the weight is clamped.
        let noisy: Vec<_> = (0..1000)
            .map(|i| (i as f64, if i % 2 == 0 { 1.0 } else { 3.0 }))
            .collect();
        let out = smooth(&noisy, 0.9);
        assert_eq!(out.len(), noisy.len());
        assert!(out.iter().zip(&noisy).all(|(a, b)| a.0 == b.0));
        assert!(
            out[500..].iter().all(|p| (p.1 - 2.0).abs() < 0.2),
            "{:?}",
            &out[500..503]
        );
        assert_eq!(smooth(&noisy, 5.0), smooth(&noisy, MAX_SMOOTHING));
        assert_eq!(smooth(&noisy, f64::NAN), noisy);
    }

    #[test]
    fn ticks_drop_trailing_zeros() {
        assert_eq!(fmt_tick(0.5), "0.5");
        assert_eq!(fmt_tick(1.0), "1");
        assert_eq!(fmt_tick(0.0011), "0.0011");
        assert_eq!(fmt_tick(0.00095), "9.5e-4");
        assert_eq!(fmt_tick(1e-4), "1e-4");
        assert_eq!(fmt_tick(0.0), "0");
        assert_eq!(fmt_tick(1500.0), "1500");
        assert_eq!(fmt_tick(-2.5), "-2.5");
    }

    #[test]
    fn log_points_leave_out_what_a_log_axis_cannot_show() {
        let pts = [
            (0.0, 100.0),
            (1.0, 0.0),
            (2.0, -1.0),
            (3.0, 0.01),
            (4.0, f64::INFINITY),
        ];
        assert_eq!(log10_points(&pts), vec![(0.0, 2.0), (3.0, -2.0)]);
    }

    #[test]
    fn smoothing_and_url_parameters() {
        assert_eq!(parse_smoothing("0.6"), Some(0.6));
        assert_eq!(parse_smoothing("2"), Some(MAX_SMOOTHING));
        assert_eq!(parse_smoothing("-1"), Some(0.0));
        assert_eq!(parse_smoothing("lots"), None);
        assert_eq!(parse_smoothing("NaN"), None);
        assert_eq!(
            with_param("/jobs/3", "smooth", Some("0.6")),
            "/jobs/3?smooth=0.6"
        );
        assert_eq!(
            with_param("/compare?ids=1,2&smooth=0.3", "smooth", Some("0.9")),
            "/compare?ids=1,2&smooth=0.9"
        );
        assert_eq!(
            with_param("/compare?smooth=0.3&ids=1", "smooth", None),
            "/compare?ids=1"
        );
        assert_eq!(with_param("/s/abc?smooth=0.3", "smooth", None), "/s/abc");
        assert_eq!(
            with_param("/x?smoothing=1", "smooth", None),
            "/x?smoothing=1"
        );
    }

    #[test]
    fn train_values_list_one_value_of_the_training_points() {
        let mut points = vec![
            pt(1, Split::Train, 2.5, None),
            pt(1, Split::Val, 9.0, None),
            pt(2, Split::Train, 1.25, None),
        ];
        points[2].metric.samples_per_sec = Some(300.0);
        assert_eq!(train_values(&points, |m| Some(m.loss)), "2.5,1.25");
        assert_eq!(train_values(&points, |m| m.samples_per_sec), "300");
        assert_eq!(train_values(&[], |m| Some(m.loss)), "");
    }
}
