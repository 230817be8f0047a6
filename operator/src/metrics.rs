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
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

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

/// A running training run's progress, by pipeline; `what` is `epoch`, `epochs`, `loss`,
/// `metric` (the judged metric's value), `images_per_second` or `eta_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgressLabels {
    pub namespace: String,
    pub pipeline: String,
    pub what: String,
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
    training_progress: Family<ProgressLabels, Gauge<f64, AtomicU64>>,
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
        let training_progress = Family::<ProgressLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "training_progress",
            "The running training run of a pipeline: epoch, epochs, loss, metric (the judged metric), images_per_second, eta_seconds (absent when no run is running)",
            training_progress.clone(),
        );
        Self {
            registry: Arc::new(registry),
            training_progress,
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
        let running = runs.iter().find(|r| r.outcome == "Running").and_then(|r| r.progress.as_ref());
        for (what, value) in progress_values(running) {
            let label = ProgressLabels { namespace: namespace.clone(), pipeline: p.name_any(), what: what.into() };
            match value {
                Some(v) => {
                    self.training_progress.get_or_create(&label).set(v);
                }
                None => {
                    self.training_progress.remove(&label);
                }
            }
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

/// The progress series of a running run (`None`: no run running, every series absent).
fn progress_values(p: Option<&flywheel_api::training::progress::RunProgress>) -> [(&'static str, Option<f64>); 6] {
    [
        ("epoch", p.map(|p| f64::from(p.epoch))),
        ("epochs", p.map(|p| f64::from(p.epochs))),
        ("loss", p.and_then(|p| p.loss)),
        ("metric", p.and_then(|p| p.value)),
        ("images_per_second", p.and_then(|p| p.images_per_second)),
        ("eta_seconds", p.and_then(|p| p.eta_seconds)),
    ]
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

    use flywheel_api::training::progress::RunProgress;

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
            progress: None,
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
    fn a_running_run_exports_its_progress_and_the_series_go_when_it_ends() {
        let m = Metrics::default();
        let mut running = run(4, "Running");
        running.progress = Some(RunProgress {
            state: "training".into(),
            epoch: 2,
            epochs: 6,
            metric: "mAP50".into(),
            value: Some(0.42),
            loss: Some(1.5),
            eta_seconds: Some(30.0),
            ..Default::default()
        });
        m.observe_pipeline(&pipeline("u1"), std::slice::from_ref(&running));
        let text = m.encode();
        let series = |what: &str| {
            format!(r#"flywheel_operator_training_progress{{namespace="ns",pipeline="loop",what="{what}"}}"#)
        };
        assert_eq!(line(&text, &series("epoch")), format!("{} 2.0", series("epoch")));
        assert_eq!(line(&text, &series("metric")), format!("{} 0.42", series("metric")));
        assert!(!text.contains(&series("images_per_second")), "not measured yet: {text}");
        m.observe_pipeline(&pipeline("u1"), &[run(4, "Succeeded")]);
        assert!(!m.encode().contains("training_progress{"), "no run running, no progress");
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
