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

/// Where a run is on its learning-rate schedule. The schedule counts steps of the world size
/// the run started at; a run resumed at another world size (an elastic data-parallel job that
/// lost a rank) advances it by `world / started_world` per step, so the rate goes on from where
/// it was instead of jumping when the remaining steps are recomputed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleClock {
    /// Position, in steps of `started_world`.
    pub at: f64,
    /// The run's end on the same clock.
    pub total: f64,
    /// Clock steps per optimizer step at this world size.
    pub rate: f64,
    /// The world size the schedule's steps are counted in.
    pub started_world: usize,
}

impl ScheduleClock {
    /// At clock position `at` (step `step` of the loop, `total_steps` in all) for a run at
    /// `world` whose schedule counts steps of `started_world`.
    pub fn new(at: f64, started_world: usize, world: usize, step: u64, total_steps: u64) -> Self {
        let started_world = started_world.max(1);
        let rate = world.max(1) as f64 / started_world as f64;
        ScheduleClock {
            at,
            total: at + total_steps.saturating_sub(step) as f64 * rate,
            rate,
            started_world,
        }
    }

    pub fn learning_rate(&self, schedule: &ScheduleSpec, peak: f64) -> f64 {
        learning_rate(
            schedule,
            peak,
            self.at.round() as u64,
            self.total.round() as u64,
        )
    }

    /// One optimizer step taken.
    pub fn tick(&mut self) {
        self.at += self.rate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clock_at_the_same_world_is_the_step() {
        let cos = ScheduleSpec::Cosine {
            warmup_steps: 0,
            min_lr: 0.0,
        };
        let mut c = ScheduleClock::new(30.0, 2, 2, 30, 100);
        assert_eq!(c.total, 100.0);
        assert_eq!(
            c.learning_rate(&cos, 1.0),
            learning_rate(&cos, 1.0, 30, 100)
        );
        c.tick();
        assert_eq!(c.at, 31.0);
    }

    #[test]
    fn a_resume_at_half_the_world_goes_on_from_the_same_rate() {
        let cos = ScheduleSpec::Cosine {
            warmup_steps: 0,
            min_lr: 0.0,
        };
        // Two ranks were at step 50 of 100; one goes on alone: 100 steps of half the size.
        let before = learning_rate(&cos, 1.0, 50, 100);
        let mut c = ScheduleClock::new(50.0, 2, 1, 50, 150);
        assert_eq!(c.total, 100.0);
        assert_eq!(c.learning_rate(&cos, 1.0), before);
        // Two steps alone advance the schedule as one step of the pair did.
        c.tick();
        c.tick();
        assert_eq!(
            c.learning_rate(&cos, 1.0),
            learning_rate(&cos, 1.0, 51, 100)
        );
        // Recomputing from the loop's own step instead would jump back up.
        assert!(learning_rate(&cos, 1.0, 50, 150) > before + 0.1);
    }

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
