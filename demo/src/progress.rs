//! Step-by-step progress on stderr: every step prints when it starts and how long it took, so a
//! user (or a CI log) always sees where the loop is and what it is waiting for.

use std::time::Instant;

pub struct Progress {
    start: Instant,
    step: usize,
    total: usize,
}

impl Progress {
    pub fn new(total: usize) -> Self {
        Self { start: Instant::now(), step: 0, total }
    }

    fn stamp(&self) -> String {
        format!("[{:>6.1}s]", self.start.elapsed().as_secs_f64())
    }

    /// A new numbered step; returns its start so [`Progress::done`] can report its duration.
    pub fn step(&mut self, what: &str) -> Instant {
        self.step += 1;
        eprintln!("{} ({}/{}) {what} ...", self.stamp(), self.step, self.total);
        Instant::now()
    }

    /// A detail line under the current step.
    pub fn info(&self, what: impl AsRef<str>) {
        eprintln!("{}        {}", self.stamp(), what.as_ref());
    }

    pub fn done(&self, started: Instant, what: impl AsRef<str>) {
        eprintln!("{}        done in {:.1}s: {}", self.stamp(), started.elapsed().as_secs_f64(), what.as_ref());
    }
}
