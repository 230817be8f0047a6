//! Champion and shadow quality on reviewed samples, as the promotion gate and `/metrics` read
//! it. Computing it is O(reviewed boxes), so it is never done under the review index's lock and
//! never more than once per change: each applied review bumps a generation, one computation at a
//! time works on a snapshot of the reviewed samples, and its result is kept until the next
//! review or a change of the served models.

use std::sync::Mutex;

use super::Item;
use crate::metrics::{Metrics, RoleLabel};
pub use flywheel_vision::reviewed::{Quality, Scored, quality};

use crate::record::ModelOutput;
use crate::serving::Task;

/// A served model as prediction records name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub model: String,
    pub version: String,
}

impl Served {
    pub fn new(model: &str, version: &str) -> Self {
        Self { model: model.into(), version: version.into() }
    }

    fn made(&self, out: &ModelOutput) -> bool {
        out.model == self.model && out.version == self.version
    }
}

/// The models a quality figure compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pair {
    pub champion: Served,
    pub shadow: Option<Served>,
}

/// The reviewed samples that count for `pair`: only those the current champion (and, with a
/// shadow, the current shadow) predicted. A comparison must not mix in predictions of a model
/// that is no longer served, or a freshly deployed shadow would inherit its predecessor's score.
pub fn select<'a>(items: impl Iterator<Item = &'a Item>, pair: &Pair) -> Vec<Scored> {
    items
        .filter_map(|i| Some((i, i.review.as_ref()?)))
        .filter(|(i, _)| pair.champion.made(&i.record.champion))
        .filter(|(i, _)| match &pair.shadow {
            Some(s) => i.record.shadow.as_ref().is_some_and(|o| s.made(o)),
            None => true,
        })
        .map(|(i, r)| Scored {
            champion: i.record.champion.shapes.clone(),
            shadow: i.record.shadow.as_ref().map(|o| o.shapes.clone()),
            truth: r.shapes.clone(),
        })
        .collect()
}

/// The last computed figure: for which models, and up to which review generation.
#[derive(Debug)]
struct Cached {
    pair: Pair,
    generation: u64,
    quality: Quality,
}

/// The latest figure and the lock that lets one computation run at a time.
#[derive(Debug, Default)]
pub struct QualityCache {
    latest: Mutex<Option<Cached>>,
    /// Held while computing: concurrent callers wait and then reuse the result.
    pub(super) computing: tokio::sync::Mutex<()>,
}

impl QualityCache {
    /// The figure for `pair`, if one was computed at `generation` or later.
    pub fn fresh(&self, pair: &Pair, generation: u64) -> Option<Quality> {
        let latest = self.latest.lock().expect("quality cache lock");
        latest.as_ref().filter(|c| &c.pair == pair && c.generation >= generation).map(|c| c.quality.clone())
    }

    /// The figure for `pair` at whatever generation it was computed, and that generation.
    pub fn any(&self, pair: &Pair) -> Option<(Quality, u64)> {
        let latest = self.latest.lock().expect("quality cache lock");
        latest.as_ref().filter(|c| &c.pair == pair).map(|c| (c.quality.clone(), c.generation))
    }

    pub fn store(&self, pair: Pair, generation: u64, quality: Quality) {
        *self.latest.lock().expect("quality cache lock") = Some(Cached { pair, generation, quality });
    }
}

/// Sets the reviewed-quality gauges from `q`; a role without a score loses its series.
pub fn export_quality(q: &Quality, task: Task, metrics: &Metrics) {
    metrics.reviewed_samples.set(q.reviewed_samples as i64);
    let family = match task {
        Task::Classification => &metrics.reviewed_accuracy,
        Task::Detection => &metrics.reviewed_map50,
    };
    for (role, value) in [("champion", q.champion), ("shadow", q.shadow)] {
        let label = RoleLabel { role: role.into() };
        match value {
            Some(v) => {
                family.get_or_create(&label).set(v);
            }
            None => {
                family.remove(&label);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::record::{PredictionRecord, Shape};
    use crate::review::{Decision, Review, ReviewStatus};

    fn label(l: &str) -> Vec<Shape> {
        vec![Shape { label: l.into(), class_id: 0, confidence: 0.9, bbox: None }]
    }

    fn out(version: &str, l: &str) -> ModelOutput {
        ModelOutput { model: "m".into(), version: version.into(), shapes: label(l), latency_ms: 1.0 }
    }

    /// A reviewed classification item: champion `c` said `cl`, shadow `s` said `sl`, truth `truth`.
    fn item(c: &str, cl: &str, s: Option<(&str, &str)>, truth: &str) -> Item {
        let record = PredictionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            time: Utc::now(),
            deployment: "d".into(),
            task: Task::Classification,
            image: Some("x.png".into()),
            width: 8,
            height: 8,
            champion: out(c, cl),
            shadow: s.map(|(v, l)| out(v, l)),
        };
        let review =
            Review { id: record.id.clone(), decision: Decision::Correct, shapes: label(truth), time: Utc::now() };
        Item { status: ReviewStatus::Reviewed, disagreement: false, min_confidence: 0.9, record, review: Some(review) }
    }

    fn pair(champion: &str, shadow: Option<&str>) -> Pair {
        Pair { champion: Served::new("m", champion), shadow: shadow.map(|s| Served::new("m", s)) }
    }

    fn score(items: &[Item], p: &Pair) -> Quality {
        quality(Task::Classification, &select(items.iter(), p), p.shadow.is_some())
    }

    #[test]
    fn a_new_shadow_is_scored_only_on_its_own_predictions() {
        let items = [
            // The previous shadow v2 was right twice.
            item("v1", "cat", Some(("v2", "cat")), "cat"),
            item("v1", "dog", Some(("v2", "cat")), "cat"),
            // The current shadow v3 was wrong once, on a sample where the champion was right.
            item("v1", "cat", Some(("v3", "dog")), "cat"),
            // Not reviewed: never counts.
            Item { review: None, status: ReviewStatus::ToReview, ..item("v1", "cat", Some(("v3", "cat")), "cat") },
        ];
        let q = score(&items, &pair("v1", Some("v3")));
        assert_eq!(
            q,
            Quality { metric: "accuracy".into(), reviewed_samples: 1, champion: Some(1.0), shadow: Some(0.0) }
        );
        let q = score(&items, &pair("v1", Some("v2")));
        assert_eq!((q.reviewed_samples, q.champion, q.shadow), (2, Some(0.5), Some(1.0)));
    }

    #[test]
    fn without_a_shadow_every_champion_sample_counts_and_a_new_champion_starts_empty() {
        let items = [item("v1", "cat", None, "cat"), item("v1", "cat", Some(("v2", "dog")), "dog")];
        let q = score(&items, &pair("v1", None));
        assert_eq!((q.reviewed_samples, q.champion, q.shadow), (2, Some(0.5), None));
        let q = score(&items, &pair("v2", None));
        assert_eq!((q.reviewed_samples, q.champion, q.shadow), (0, None, None));
    }

    #[test]
    fn the_cache_answers_only_for_the_same_models_and_a_recent_enough_generation() {
        let cache = QualityCache::default();
        let q = Quality { metric: "accuracy".into(), reviewed_samples: 3, champion: Some(0.5), shadow: None };
        cache.store(pair("v1", None), 7, q.clone());
        assert_eq!(cache.fresh(&pair("v1", None), 7), Some(q.clone()));
        assert_eq!(cache.fresh(&pair("v1", None), 8), None);
        assert_eq!(cache.fresh(&pair("v1", Some("v2")), 1), None);
        assert_eq!(cache.any(&pair("v1", None)), Some((q, 7)));
        assert_eq!(cache.any(&pair("v2", None)), None);
    }
}
