//! `/metrics` in the Prometheus text format, read from the database at scrape time (the quality
//! figures are cached per review count):
//! - the figures of the pair serving now under the inference server's names
//!   (`flywheel_reviewed_map50`/`_accuracy{role}`, `flywheel_reviewed_samples`,
//!   `flywheel_reviews_total`), so the shipped dashboard and alert rules read them unchanged;
//! - the totals (`flywheel_review_predictions`, `_reviewed`, `_written`, `_pending_writes`);
//! - every pair's figures (`flywheel_review_quality{champion_version, shadow_version, role}`).

use std::sync::atomic::AtomicU64;

use flywheel_types::Task;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::service::Status;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The exposition of `status`.
pub fn render(status: &Status) -> String {
    let mut registry = Registry::with_prefix("flywheel");
    let totals = &status.totals;
    for (name, help, value) in [
        ("review_predictions", "Logged predictions ingested for review", totals.predictions),
        ("review_reviewed", "Predictions reviewed (each decision stored once)", totals.reviewed),
        ("review_written", "Reviewed samples written into the feedback dataset", totals.written),
        (
            "review_pending_writes",
            "Reviewed samples not yet written into the feedback dataset",
            totals.reviewed - totals.written,
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    // Reviews are never removed: their count only grows, as a counter's must.
    let reviews = Counter::<u64>::default();
    reviews.inc_by(totals.reviewed.max(0) as u64);
    registry.register("reviews", "Reviews applied", reviews);

    let served = Family::<Labels, FloatGauge>::default();
    let served_samples = Gauge::<i64>::default();
    if let Some(q) = status.serving_quality() {
        served_samples.set(q.quality.reviewed_samples as i64);
        for (role, value) in [("champion", q.quality.champion), ("shadow", q.quality.shadow)] {
            if let Some(v) = value {
                served.get_or_create(&vec![("role".to_string(), role.to_string())]).set(v);
            }
        }
    }
    let (name, help) = match status.task {
        Task::Detection => ("reviewed_map50", "mAP@0.5 on reviewed samples (detection) by role"),
        Task::Classification => ("reviewed_accuracy", "Top-1 accuracy on reviewed samples (classification) by role"),
    };
    registry.register(name, help, served);
    registry.register("reviewed_samples", "Reviewed samples the served pair's scores are computed on", served_samples);

    let score = Family::<Labels, FloatGauge>::default();
    let samples = Family::<Labels, Gauge<i64>>::default();
    for q in &status.quality {
        let mut pair = vec![
            ("champion_model".to_string(), q.champion_model.model.clone()),
            ("champion_version".to_string(), q.champion_model.version.clone()),
        ];
        if let Some(s) = &q.shadow_model {
            pair.push(("shadow_model".into(), s.model.clone()));
            pair.push(("shadow_version".into(), s.version.clone()));
        }
        samples.get_or_create(&pair).set(q.quality.reviewed_samples as i64);
        for (role, value) in [("champion", q.quality.champion), ("shadow", q.quality.shadow)] {
            let Some(v) = value else { continue };
            let mut labels = pair.clone();
            labels.push(("metric".into(), q.quality.metric.clone()));
            labels.push(("role".into(), role.into()));
            score.get_or_create(&labels).set(v);
        }
    }
    registry.register(
        "review_quality",
        "Score (mAP50 or accuracy) of a model on the reviewed samples of its pair",
        score,
    );
    registry.register("review_quality_samples", "Reviewed samples a pair's scores are computed on", samples);
    let mut out = String::new();
    encode(&mut out, &registry).expect("encoding to a String");
    out
}

#[cfg(test)]
mod tests {
    use flywheel_vision::reviewed::Quality;

    use super::*;
    use crate::quality::{ModelRef, PairQuality};
    use crate::service::Serving;
    use crate::store::Totals;

    #[test]
    fn totals_every_pair_and_the_served_pair_under_the_servers_names() {
        let m = |v: &str| ModelRef { model: "det".into(), version: v.into() };
        let pair = |shadow: Option<&str>, n, c, s| PairQuality {
            champion_model: m("v1"),
            shadow_model: shadow.map(m),
            quality: Quality { metric: "mAP50".into(), reviewed_samples: n, champion: c, shadow: s },
        };
        let status = Status {
            task: Task::Detection,
            totals: Totals { predictions: 10, reviewed: 9, written: 5 },
            quality: vec![pair(Some("v2"), 7, Some(0.5), Some(0.75)), pair(None, 2, Some(0.25), None)],
            serving: Some(Serving { champion: m("v1"), shadow: Some(m("v2")) }),
        };
        let text = render(&status);
        for line in [
            "flywheel_review_pending_writes 4",
            "flywheel_reviews_total 9",
            "flywheel_reviewed_map50{role=\"champion\"} 0.5",
            "flywheel_reviewed_map50{role=\"shadow\"} 0.75",
            "flywheel_reviewed_samples 7",
            "flywheel_review_quality_samples{champion_model=\"det\",champion_version=\"v1\"} 2",
            "flywheel_review_quality{champion_model=\"det\",champion_version=\"v1\",metric=\"mAP50\",role=\"champion\"} 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        let nothing = render(&Status { serving: None, ..status });
        assert!(
            nothing.contains("flywheel_reviewed_samples 0") && !nothing.contains("flywheel_reviewed_map50{"),
            "{nothing}"
        );
    }
}
