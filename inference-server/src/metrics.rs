//! Prometheus metrics (prometheus-client, text exposition at /metrics).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets, linear_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::record::{ImagePrediction, Shape};

/// Side of the box-centre heat-map grid.
pub const GRID: usize = 8;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleVersion {
    pub role: String,
    pub model_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabel {
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleClass {
    pub role: String,
    pub class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cell {
    pub row: String,
    pub col: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabel {
    pub feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointCode {
    pub endpoint: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelInfo {
    pub role: String,
    pub model: String,
    pub model_version: String,
    pub sha256: String,
}

type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}
fn confidence_histogram() -> Histogram {
    Histogram::new(linear_buckets(0.1, 0.1, 10))
}

pub struct Metrics {
    pub registry: Registry,
    pub request_duration: HistFamily<RoleVersion>,
    pub http_requests: Family<EndpointCode, Counter>,
    pub predictions: Family<RoleVersion, Counter>,
    pub shapes: Family<RoleClass, Counter>,
    pub confidence: HistFamily<RoleLabel>,
    pub box_centres: Family<Cell, Counter>,
    pub batch_size: Histogram,
    pub rejected: Counter,
    pub shadow_dropped: Counter,
    pub shadow_runs: Counter,
    pub model_load_failures: Family<RoleLabel, Counter>,
    pub model_info: Family<ModelInfo, Gauge>,
    pub drift_ks: Family<FeatureLabel, FloatGauge>,
    pub outlier_score: FloatGauge,
    pub outlier_distance: Histogram,
    pub reviewed_accuracy: Family<RoleLabel, FloatGauge>,
    pub reviewed_map50: Family<RoleLabel, FloatGauge>,
    pub reviewed_samples: Gauge,
    pub log_records: Counter,
    pub log_dropped: Counter,
    pub log_errors: Counter,
    pub reviews: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("flywheel");
        let m = Self {
            request_duration: HistFamily::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
            predictions: Family::default(),
            shapes: Family::default(),
            confidence: HistFamily::new_with_constructor(confidence_histogram),
            box_centres: Family::default(),
            batch_size: Histogram::new(exponential_buckets(1.0, 2.0, 8)),
            rejected: Counter::default(),
            shadow_dropped: Counter::default(),
            shadow_runs: Counter::default(),
            model_load_failures: Family::default(),
            model_info: Family::default(),
            drift_ks: Family::default(),
            outlier_score: FloatGauge::default(),
            outlier_distance: Histogram::new(linear_buckets(0.5, 0.5, 12)),
            reviewed_accuracy: Family::default(),
            reviewed_map50: Family::default(),
            reviewed_samples: Gauge::default(),
            log_records: Counter::default(),
            log_dropped: Counter::default(),
            log_errors: Counter::default(),
            reviews: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "inference_duration_seconds",
            "Model latency per request (queue + batch run + decode) by role and model version",
            m.request_duration.clone(),
        );
        r.register("http_requests", "HTTP requests by endpoint and status code", m.http_requests.clone());
        r.register("predictions", "Images predicted by role and model version", m.predictions.clone());
        r.register("shapes", "Shapes (classes or boxes) above the threshold by role and class", m.shapes.clone());
        r.register("confidence", "Confidence of returned shapes by role", m.confidence.clone());
        r.register(
            "box_centres",
            "Champion box centres on an 8x8 grid over the image (row, col)",
            m.box_centres.clone(),
        );
        r.register("batch_size", "Items per champion request", m.batch_size.clone());
        r.register("rejected_requests", "Requests answered 429 because the server was overloaded", m.rejected.clone());
        r.register("shadow_dropped", "Shadow runs dropped because the shadow queue was full", m.shadow_dropped.clone());
        r.register("shadow_runs", "Shadow runs completed", m.shadow_runs.clone());
        r.register(
            "model_load_failures",
            "Models that failed to fetch, verify, load or warm up",
            m.model_load_failures.clone(),
        );
        r.register("model_info", "Models currently served (value 1)", m.model_info.clone());
        r.register(
            "drift_ks",
            "Kolmogorov-Smirnov statistic of live values vs the training reference",
            m.drift_ks.clone(),
        );
        r.register(
            "outlier_score",
            "Mean Mahalanobis distance of recent inputs' image statistics from the reference",
            m.outlier_score.clone(),
        );
        r.register(
            "outlier_distance",
            "Mahalanobis distance of each input from the reference",
            m.outlier_distance.clone(),
        );
        r.register(
            "reviewed_accuracy",
            "Top-1 accuracy on reviewed samples (classification) by role",
            m.reviewed_accuracy.clone(),
        );
        r.register("reviewed_map50", "mAP@0.5 on reviewed samples (detection) by role", m.reviewed_map50.clone());
        r.register(
            "reviewed_samples",
            "Reviewed samples the quality metrics are computed on",
            m.reviewed_samples.clone(),
        );
        r.register("prediction_log_records", "Prediction records written to the log", m.log_records.clone());
        r.register(
            "prediction_log_dropped",
            "Prediction records dropped because the log queue was full",
            m.log_dropped.clone(),
        );
        r.register("prediction_log_errors", "Failed prediction-log writes", m.log_errors.clone());
        r.register("reviews", "Reviews applied", m.reviews.clone());
        // Present at 0 from the start, so `increase()` alerts see the first failure.
        for role in ["champion", "shadow"] {
            let _ = m.model_load_failures.get_or_create(&RoleLabel { role: role.into() });
        }
        Self { registry, ..m }
    }

    /// Records one model run of `role` (`champion` or `shadow`): its latency, the images it
    /// answered and their shapes.
    pub fn observe_run(&self, role: &str, model_version: &str, latency: f64, preds: &[ImagePrediction]) {
        let labels = RoleVersion { role: role.into(), model_version: model_version.into() };
        self.request_duration.get_or_create(&labels).observe(latency);
        self.predictions.get_or_create(&labels).inc_by(preds.len() as u64);
        if role == "champion" {
            self.batch_size.observe(preds.len() as f64);
        }
        for p in preds {
            self.observe_shapes(role, &p.shapes, p.width, p.height);
        }
    }

    /// Records the shapes of one image for the given role.
    fn observe_shapes(&self, role: &str, shapes: &[Shape], width: u32, height: u32) {
        for s in shapes {
            self.shapes.get_or_create(&RoleClass { role: role.into(), class: s.label.clone() }).inc();
            self.confidence.get_or_create(&RoleLabel { role: role.into() }).observe(s.confidence as f64);
            if role == "champion"
                && let Some(b) = s.bbox
            {
                let cx = ((b[0] + b[2]) / 2.0 / width.max(1) as f32 * GRID as f32) as usize;
                let cy = ((b[1] + b[3]) / 2.0 / height.max(1) as f32 * GRID as f32) as usize;
                let cell = Cell { row: cy.min(GRID - 1).to_string(), col: cx.min(GRID - 1).to_string() };
                self.box_centres.get_or_create(&cell).inc();
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("encoding to a String");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Converts OpenMetrics text to the Prometheus 0.0.4 text format: counters' HELP/TYPE lines
/// name the `_total` series, and the `# EOF` terminator is dropped.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE ", "# UNIT "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        if line.starts_with("# UNIT ") {
            continue;
        }
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_renamed_for_prometheus_text() {
        let om = "# HELP a Things.\n# TYPE a counter\na_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n# EOF\n";
        let t = super::to_prometheus_text(om);
        assert_eq!(t, "# HELP a_total Things.\n# TYPE a_total counter\na_total 3\n# HELP g G.\n# TYPE g gauge\ng 1\n");
    }
}
