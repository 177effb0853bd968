//! Downsampling metric series for charts: Largest-Triangle-Three-Buckets on (step, loss), per
//! split, always keeping each split's first and last point.
//!
//! Written here rather than taken from a crate: the crates on offer work on their own point
//! type, and LTTB is a short, well-known algorithm (Steinarsson 2013).

use crate::metric::Split;
use crate::protocol::MetricPoint;

/// Keep at most about `max_points` points (each split gets a share proportional to its size,
/// at least 2), ordered by step as the input was. `points` must be ordered by step.
pub fn downsample(points: Vec<MetricPoint>, max_points: usize) -> Vec<MetricPoint> {
    if points.len() <= max_points {
        return points;
    }
    let total = points.len();
    let mut by_split: Vec<(Split, Vec<MetricPoint>)> = Vec::new();
    for p in points {
        match by_split.iter_mut().find(|(s, _)| *s == p.metric.split) {
            Some((_, list)) => list.push(p),
            None => by_split.push((p.metric.split, vec![p])),
        }
    }
    let mut out: Vec<MetricPoint> = Vec::with_capacity(max_points);
    for (_, series) in by_split {
        let share = (max_points * series.len() / total).max(2);
        out.extend(lttb(series, share));
    }
    // Stable: equal steps keep their split order.
    out.sort_by_key(|p| p.metric.step);
    out
}

fn xy(p: &MetricPoint) -> (f64, f64) {
    let y = if p.metric.loss.is_finite() {
        p.metric.loss
    } else {
        0.0
    };
    (p.metric.step as f64, y)
}

/// Largest-Triangle-Three-Buckets: `threshold` points out of `series` (ordered by x).
fn lttb(series: Vec<MetricPoint>, threshold: usize) -> Vec<MetricPoint> {
    let n = series.len();
    if threshold >= n || threshold < 3 {
        if threshold >= n {
            return series;
        }
        // First and last only.
        let mut series = series;
        let last = series.pop();
        series.truncate(1);
        series.extend(last);
        return series;
    }
    let bucket = (n - 2) as f64 / (threshold - 2) as f64;
    let mut keep = Vec::with_capacity(threshold);
    keep.push(0usize);
    let mut a = 0usize;
    for i in 0..threshold - 2 {
        // Average of the next bucket: the third triangle corner.
        let next_start = ((i + 1) as f64 * bucket) as usize + 1;
        let next_end = ((((i + 2) as f64 * bucket) as usize) + 1).clamp(next_start + 1, n);
        let next = &series[next_start..next_end];
        let (sx, sy) = next
            .iter()
            .map(xy)
            .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
        let (ax, ay) = (sx / next.len() as f64, sy / next.len() as f64);
        // The point of this bucket making the largest triangle with `a` and that average.
        let start = (i as f64 * bucket) as usize + 1;
        let end = (((i + 1) as f64 * bucket) as usize + 1).clamp(start + 1, n - 1);
        let (px, py) = xy(&series[a]);
        let mut best = start;
        let mut best_area = -1.0;
        for (j, p) in series.iter().enumerate().take(end).skip(start) {
            let (x, y) = xy(p);
            let area = ((px - ax) * (y - py) - (px - x) * (ay - py)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        keep.push(best);
        a = best;
    }
    keep.push(n - 1);
    let mut keep = keep.into_iter().peekable();
    series
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| {
            if keep.peek() == Some(&i) {
                while keep.peek() == Some(&i) {
                    keep.next();
                }
                Some(p)
            } else {
                None
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metric::Metric;

    fn point(step: u64, split: Split, loss: f64) -> MetricPoint {
        MetricPoint {
            attempt: 1,
            metric: Metric {
                step,
                epoch: 0.0,
                split,
                loss,
                accuracy: None,
                lr: None,
                samples_per_sec: None,
            },
        }
    }

    #[test]
    fn a_long_run_is_kept_within_budget() {
        let points: Vec<_> = (0..100_000)
            .map(|i| point(i, Split::Train, 1.0 / (1.0 + i as f64)))
            .collect();
        let kept = downsample(points, 2_000);
        assert!(kept.len() <= 2_000 && kept.len() > 1_000, "{}", kept.len());
        assert_eq!(kept.first().map(|p| p.metric.step), Some(0));
        assert_eq!(kept.last().map(|p| p.metric.step), Some(99_999));
    }

    #[test]
    fn small_series_is_untouched() {
        let pts: Vec<_> = (0..10).map(|s| point(s, Split::Train, 1.0)).collect();
        assert_eq!(downsample(pts.clone(), 10), pts);
    }

    #[test]
    fn keeps_first_last_and_spikes_per_split() {
        let mut pts = Vec::new();
        for s in 0..10_000u64 {
            let loss = if s == 5000 {
                100.0
            } else {
                1.0 / (s + 1) as f64
            };
            pts.push(point(s, Split::Train, loss));
            if s % 100 == 0 {
                pts.push(point(s, Split::Val, 2.0));
            }
        }
        pts.push(point(9_999, Split::Val, 2.0));
        let out = downsample(pts, 500);
        assert!(out.len() <= 500, "{}", out.len());
        let train: Vec<_> = out
            .iter()
            .filter(|p| p.metric.split == Split::Train)
            .collect();
        let val: Vec<_> = out
            .iter()
            .filter(|p| p.metric.split == Split::Val)
            .collect();
        assert_eq!(train.first().map(|p| p.metric.step), Some(0));
        assert_eq!(train.last().map(|p| p.metric.step), Some(9_999));
        assert!(train.iter().any(|p| p.metric.step == 5000), "spike kept");
        assert_eq!(val.first().map(|p| p.metric.step), Some(0));
        assert_eq!(val.last().map(|p| p.metric.step), Some(9_999));
        assert!(out.windows(2).all(|w| w[0].metric.step <= w[1].metric.step));
    }

    #[test]
    fn exact_budget() {
        for n in [3usize, 4, 7, 100, 1001] {
            for t in [2usize, 3, 5, 50] {
                let pts: Vec<_> = (0..n as u64)
                    .map(|s| point(s, Split::Train, s as f64))
                    .collect();
                let out = lttb(pts, t);
                assert_eq!(out.len(), t.min(n), "n={n} t={t}");
                assert_eq!(out[0].metric.step, 0);
                assert_eq!(out[out.len() - 1].metric.step, n as u64 - 1);
            }
        }
    }
}
