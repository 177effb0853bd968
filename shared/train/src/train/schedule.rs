//! Learning rate as a pure function of the step, so a resumed run gets the same rates.

use kiln_proto::spec::ScheduleSpec;

/// The learning rate for optimizer step `step` (0-based) of `total` steps.
pub fn learning_rate(schedule: &ScheduleSpec, peak: f64, step: u64, total: u64) -> f64 {
    match *schedule {
        ScheduleSpec::Constant => peak,
        ScheduleSpec::Step { step_size, gamma } => {
            peak * gamma.powi((step / step_size.max(1)).min(i32::MAX as u64) as i32)
        }
        ScheduleSpec::Cosine {
            warmup_steps,
            min_lr,
        } => {
            if step < warmup_steps {
                return peak * (step + 1) as f64 / warmup_steps as f64;
            }
            let span = total.saturating_sub(warmup_steps).max(1) as f64;
            let progress = ((step - warmup_steps) as f64 / span).min(1.0);
            min_lr + 0.5 * (peak - min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let c = ScheduleSpec::Constant;
        assert_eq!(learning_rate(&c, 0.1, 500, 1000), 0.1);
        let s = ScheduleSpec::Step {
            step_size: 10,
            gamma: 0.5,
        };
        assert_eq!(learning_rate(&s, 1.0, 9, 100), 1.0);
        assert_eq!(learning_rate(&s, 1.0, 10, 100), 0.5);
        assert_eq!(learning_rate(&s, 1.0, 25, 100), 0.25);
        let cos = ScheduleSpec::Cosine {
            warmup_steps: 10,
            min_lr: 0.0,
        };
        assert!((learning_rate(&cos, 1.0, 0, 110) - 0.1).abs() < 1e-12);
        assert!((learning_rate(&cos, 1.0, 9, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cos, 1.0, 10, 110) - 1.0).abs() < 1e-12);
        assert!((learning_rate(&cos, 1.0, 60, 110) - 0.5).abs() < 1e-12);
        assert!(learning_rate(&cos, 1.0, 110, 110).abs() < 1e-12);
    }
}
