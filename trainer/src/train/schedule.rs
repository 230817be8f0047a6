//! The learning-rate schedule (linear warm-up, then cosine decay) and early stopping.

/// Learning rate per optimiser step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub base: f64,
    pub total_steps: usize,
    pub warmup_steps: usize,
    /// The rate at the last step.
    pub final_lr: f64,
}

impl LrSchedule {
    /// `warmup_fraction` of `total_steps` (at least one step when above 0) warms up.
    pub fn new(base: f64, total_steps: usize, warmup_fraction: f64, final_fraction: f64) -> Self {
        let warmup =
            if warmup_fraction > 0.0 { ((total_steps as f64 * warmup_fraction).ceil() as usize).max(1) } else { 0 };
        Self {
            base,
            total_steps: total_steps.max(1),
            warmup_steps: warmup.min(total_steps),
            final_lr: base * final_fraction,
        }
    }

    /// The rate of step `step` (0-based): `base * (step + 1) / warmup` during the warm-up,
    /// then from `base` down to `final_lr` along half a cosine.
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).saturating_sub(1);
        if span == 0 {
            return self.base;
        }
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.final_lr + (self.base - self.final_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// Tracks the best eval value and says when `patience` epochs in a row brought nothing better.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    patience: u32,
    best: f64,
    since_best: u32,
}

impl EarlyStopping {
    /// `base`: the value to beat before any epoch (the base model's); 0 patience never stops.
    pub fn new(patience: u32, base: f64) -> Self {
        Self { patience, best: if base.is_finite() { base } else { f64::NEG_INFINITY }, since_best: 0 }
    }

    /// Records an epoch's value; true when training should stop.
    pub fn record(&mut self, value: f64) -> bool {
        if value > self.best {
            self.best = value;
            self.since_best = 0;
        } else {
            self.since_best += 1;
        }
        self.patience > 0 && self.since_best >= self.patience
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_is_linear_then_the_cosine_decays_to_the_final_rate() {
        let s = LrSchedule::new(1.0, 100, 0.1, 0.05);
        assert_eq!(s.warmup_steps, 10);
        assert!((s.at(0) - 0.1).abs() < 1e-12);
        assert!((s.at(4) - 0.5).abs() < 1e-12);
        assert!((s.at(9) - 1.0).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        // Half-way through the cosine: the mean of the two ends.
        let mid = 10 + 89 / 2;
        assert!((s.at(mid) - 0.525).abs() < 0.02, "{}", s.at(mid));
        assert!((s.at(99) - 0.05).abs() < 1e-12);
        let rates: Vec<f64> = (10..100).map(|i| s.at(i)).collect();
        assert!(rates.windows(2).all(|w| w[1] <= w[0]));
    }

    #[test]
    fn short_runs_and_no_warm_up() {
        let s = LrSchedule::new(0.5, 1, 0.1, 0.0);
        assert_eq!(s.at(0), 0.5);
        let s = LrSchedule::new(0.5, 10, 0.0, 0.0);
        assert_eq!(s.warmup_steps, 0);
        assert_eq!(s.at(0), 0.5);
        assert_eq!(s.at(9), 0.0);
    }

    #[test]
    fn early_stopping_waits_patience_epochs_without_improvement() {
        let mut e = EarlyStopping::new(2, 0.3);
        assert!(!e.record(0.2)); // worse than the base: 1
        assert!(!e.record(0.4)); // better: reset
        assert!(!e.record(0.4)); // equal is not better: 1
        assert!(e.record(0.35)); // 2
        let mut never = EarlyStopping::new(0, 0.9);
        assert!((0..10).all(|_| !never.record(0.1)));
        let mut nan_base = EarlyStopping::new(1, f64::NAN);
        assert!(!nan_base.record(0.0));
    }
}
