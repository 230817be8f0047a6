//! `/metrics` in the Prometheus text format: the review totals and the quality figures, read
//! from the database at scrape time (the figures are cached per review count).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::quality::PairQuality;
use crate::store::Totals;

type Labels = Vec<(String, String)>;

/// The exposition of `totals` and `quality`.
pub fn render(totals: &Totals, quality: &[PairQuality]) -> String {
    let mut registry = Registry::with_prefix("flywheel_review");
    for (name, help, value) in [
        ("predictions", "Logged predictions ingested for review", totals.predictions),
        ("reviewed", "Predictions reviewed (each decision stored once)", totals.reviewed),
        ("written", "Reviewed samples written into the feedback dataset", totals.written),
        (
            "pending_writes",
            "Reviewed samples not yet written into the feedback dataset",
            totals.reviewed - totals.written,
        ),
    ] {
        let gauge = Gauge::<i64>::default();
        gauge.set(value);
        registry.register(name, help, gauge);
    }
    let score = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let samples = Family::<Labels, Gauge<i64>>::default();
    for q in quality {
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
    registry.register("quality", "Score (mAP50 or accuracy) of a model on the reviewed samples of its pair", score);
    registry.register("quality_samples", "Reviewed samples a pair's scores are computed on", samples);
    let mut out = String::new();
    encode(&mut out, &registry).expect("encoding to a String");
    out
}

#[cfg(test)]
mod tests {
    use flywheel_vision::reviewed::Quality;

    use super::*;
    use crate::quality::ModelRef;

    #[test]
    fn totals_and_scores_are_exported() {
        let m = |v: &str| ModelRef { model: "det".into(), version: v.into() };
        let q = PairQuality {
            champion_model: m("v1"),
            shadow_model: Some(m("v2")),
            quality: Quality { metric: "mAP50".into(), reviewed_samples: 7, champion: Some(0.5), shadow: None },
        };
        let text = render(&Totals { predictions: 10, reviewed: 7, written: 5 }, &[q]);
        assert!(text.contains("flywheel_review_pending_writes 2"), "{text}");
        assert!(text.contains("role=\"champion\"} 0.5"), "{text}");
        assert!(!text.contains("role=\"shadow\""), "{text}");
        assert!(text.contains("flywheel_review_quality_samples{champion_model=\"det\",champion_version=\"v1\",shadow_model=\"det\",shadow_version=\"v2\"} 7"), "{text}");
    }
}
