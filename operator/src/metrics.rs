//! The operator's Prometheus metrics: reconciles, their duration and errors, by kind.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub kind: String,
    pub error: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    reconciles: Family<KindLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    duration: Family<KindLabel, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("flywheel_operator");
        let reconciles = Family::<KindLabel, Counter>::default();
        let errors = Family::<ErrorLabel, Counter>::default();
        let duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        });
        registry.register("reconciles", "Reconciliations started", reconciles.clone());
        registry.register("reconcile_errors", "Reconciliations that failed, by error", errors.clone());
        registry.register("reconcile_duration_seconds", "Time spent in one reconciliation", duration.clone());
        Self { registry: Arc::new(registry), reconciles, errors, duration }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile(&self, kind: &str) -> ReconcileTimer {
        let label = KindLabel { kind: kind.to_string() };
        self.reconciles.get_or_create(&label).inc();
        ReconcileTimer { start: Instant::now(), histogram: self.duration.get_or_create(&label).clone() }
    }

    pub fn error(&self, kind: &str, error: &crate::Error) {
        self.errors
            .get_or_create(&ErrorLabel { kind: kind.to_string(), error: error.metric_label().to_string() })
            .inc();
    }

    /// The text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String");
        out
    }
}

pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
