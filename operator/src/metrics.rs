//! The operator's Prometheus metrics: reconciles, their duration and errors, by kind; training
//! runs by pipeline and result; promotions by Deployment and role.
//!
//! The training and promotion series carry the `namespace` of the object they describe, so a
//! scraper must keep the operator's own labels (`honor_labels: true`, `honorLabels: true` in a
//! ServiceMonitor); see docs/monitoring.md.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use flywheel_api::data_pipeline::TrainingRun;
use flywheel_api::deployment::Role;
use flywheel_api::{DataPipeline, FlywheelDeployment};
use kube::ResourceExt;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrainingRunLabels {
    pub namespace: String,
    pub pipeline: String,
    pub deployment: String,
    /// `succeeded` or `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PromotionLabels {
    pub namespace: String,
    pub deployment: String,
    /// The role the model was promoted to: `shadow` or `champion`.
    pub to: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    reconciles: Family<KindLabel, Counter>,
    errors: Family<ErrorLabel, Counter>,
    duration: Family<KindLabel, Histogram>,
    training_runs: Family<TrainingRunLabels, Counter>,
    promotions: Family<PromotionLabels, Counter>,
    child_applies: Family<KindLabel, Counter>,
    /// Finished runs already counted, by (pipeline uid, run number): runs are re-read from
    /// their Jobs on every reconcile, and each must count once.
    counted_runs: Arc<Mutex<HashSet<(String, u32)>>>,
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
        let training_runs = Family::<TrainingRunLabels, Counter>::default();
        let promotions = Family::<PromotionLabels, Counter>::default();
        registry.register(
            "training_runs",
            "Training runs that finished, by pipeline and result",
            training_runs.clone(),
        );
        registry.register(
            "promotions",
            "Models the operator promoted (continuous deployment or promotion gate), by role",
            promotions.clone(),
        );
        let child_applies = Family::<KindLabel, Counter>::default();
        registry.register(
            "child_applies",
            "Server-side applies of Deployments' children, by kind (children unchanged since the last apply are skipped)",
            child_applies.clone(),
        );
        Self {
            registry: Arc::new(registry),
            reconciles,
            errors,
            duration,
            training_runs,
            promotions,
            child_applies,
            counted_runs: Arc::default(),
        }
    }
}

impl Metrics {
    /// Counts a reconcile and returns a guard that records its duration when dropped.
    pub fn reconcile(&self, kind: &str) -> ReconcileTimer {
        let label = KindLabel { kind: kind.to_string() };
        self.reconciles.get_or_create(&label).inc();
        ReconcileTimer { start: Instant::now(), histogram: self.duration.get_or_create(&label).clone() }
    }

    /// Counts a server-side apply of a Deployment's child of `kind`.
    pub fn child_applied(&self, kind: &str) {
        self.child_applies.get_or_create(&KindLabel { kind: kind.to_string() }).inc();
    }

    pub fn error(&self, kind: &str, error: &crate::Error) {
        self.errors
            .get_or_create(&ErrorLabel { kind: kind.to_string(), error: error.metric_label().to_string() })
            .inc();
    }

    /// Records a DataPipeline's runs: creates its series at 0 (so dashboards and `increase()`
    /// alerts see them before the first run) and counts each finished run once.
    pub fn observe_pipeline(&self, p: &DataPipeline, runs: &[TrainingRun]) {
        let namespace = p.namespace().unwrap_or_default();
        let labels = |result: &str| TrainingRunLabels {
            namespace: namespace.clone(),
            pipeline: p.name_any(),
            deployment: p.spec.deployment.clone(),
            result: result.into(),
        };
        let succeeded = self.training_runs.get_or_create(&labels("succeeded")).clone();
        let failed = self.training_runs.get_or_create(&labels("failed")).clone();
        for to in ["shadow", "champion"] {
            let _ = self.promotions.get_or_create(&PromotionLabels {
                namespace: namespace.clone(),
                deployment: p.spec.deployment.clone(),
                to: to.into(),
            });
        }
        let uid = p.uid().unwrap_or_default();
        let mut counted = self.counted_runs.lock().expect("counted runs lock");
        for run in runs {
            let counter = match run.outcome.as_str() {
                "Succeeded" => &succeeded,
                "Failed" => &failed,
                _ => continue,
            };
            if counted.insert((uid.clone(), run.number)) {
                counter.inc();
            }
        }
    }

    /// Counts a promotion of `model` to `role`; emptying a role (`None`) is not a promotion.
    pub fn promoted(&self, d: &FlywheelDeployment, role: Role, model: Option<&str>) {
        if model.is_none() {
            return;
        }
        let to = match role {
            Role::Champion => "champion",
            Role::Shadow => "shadow",
        };
        self.promotions
            .get_or_create(&PromotionLabels {
                namespace: d.namespace().unwrap_or_default(),
                deployment: d.name_any(),
                to: to.into(),
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(uid: &str) -> DataPipeline {
        let mut p: DataPipeline = serde_json::from_value(serde_json::json!({
            "apiVersion": "flywheel.dev/v1alpha1", "kind": "DataPipeline",
            "metadata": {"name": "loop", "namespace": "ns", "uid": uid},
            "spec": {"deployment": "shapes"},
        }))
        .unwrap();
        p.metadata.uid = Some(uid.into());
        p
    }

    fn run(number: u32, outcome: &str) -> TrainingRun {
        TrainingRun {
            number,
            job: format!("loop-train-{number}"),
            reviewed_at_trigger: 0,
            started: None,
            finished: None,
            outcome: outcome.into(),
            model_version: None,
            message: String::new(),
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    #[test]
    fn pipeline_series_start_at_zero_and_each_run_counts_once() {
        let m = Metrics::default();
        m.observe_pipeline(&pipeline("u1"), &[run(1, "Running")]);
        let text = m.encode();
        let succeeded = r#"flywheel_operator_training_runs_total{namespace="ns",pipeline="loop",deployment="shapes",result="succeeded"}"#;
        let failed = r#"flywheel_operator_training_runs_total{namespace="ns",pipeline="loop",deployment="shapes",result="failed"}"#;
        assert_eq!(line(&text, succeeded), format!("{succeeded} 0"));
        assert_eq!(line(&text, failed), format!("{failed} 0"));
        for to in ["shadow", "champion"] {
            let promo =
                format!(r#"flywheel_operator_promotions_total{{namespace="ns",deployment="shapes",to="{to}"}}"#);
            assert_eq!(line(&text, &promo), format!("{promo} 0"));
        }
        // Every reconcile re-reads the same runs: each finished run counts once.
        for _ in 0..3 {
            m.observe_pipeline(&pipeline("u1"), &[run(1, "Failed"), run(2, "Succeeded"), run(3, "Running")]);
        }
        let text = m.encode();
        assert_eq!(line(&text, succeeded), format!("{succeeded} 1"));
        assert_eq!(line(&text, failed), format!("{failed} 1"));
        // A re-created pipeline (new uid) starts its run numbers again.
        m.observe_pipeline(&pipeline("u2"), &[run(1, "Succeeded")]);
        assert_eq!(line(&m.encode(), succeeded), format!("{succeeded} 2"));
    }

    #[test]
    fn promotions_count_by_role_and_emptying_a_role_is_not_one() {
        let m = Metrics::default();
        let d: FlywheelDeployment = serde_json::from_value(serde_json::json!({
            "apiVersion": "flywheel.dev/v1alpha1", "kind": "Deployment",
            "metadata": {"name": "shapes", "namespace": "ns"},
            "spec": {"champion": {"modelVersion": "m1"}},
        }))
        .unwrap();
        m.promoted(&d, Role::Champion, Some("m2"));
        m.promoted(&d, Role::Shadow, None);
        let text = m.encode();
        assert!(
            text.contains(r#"flywheel_operator_promotions_total{namespace="ns",deployment="shapes",to="champion"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"to="shadow""#), "{text}");
    }
}
