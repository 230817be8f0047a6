//! The quality figures the promotion gate reads: for every (champion, shadow) pair of model
//! versions that predicted reviewed samples, both models' scores on exactly those samples, over
//! every replica's predictions (the store holds them all). Computed by
//! `flywheel_vision::reviewed`, the inference server's definition, and cached until the next
//! review (reviews are never removed, so their count says whether the figures are current).

use std::collections::BTreeMap;

use flywheel_types::Task;
use flywheel_types::prediction::{PredictionRecord, Shape};
use flywheel_vision::reviewed::{Quality, Scored, quality};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::store::{Store, StoreError};

/// A model version as prediction records name it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ModelRef {
    pub model: String,
    pub version: String,
}

/// The figures of one (champion, shadow) pair.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PairQuality {
    pub champion_model: ModelRef,
    /// None: the samples the champion predicted alone.
    pub shadow_model: Option<ModelRef>,
    #[serde(flatten)]
    pub quality: Quality,
}

/// Pure: the figures per pair, pairs in order.
pub fn by_pair(task: Task, reviewed: &[(PredictionRecord, Vec<Shape>)]) -> Vec<PairQuality> {
    let mut groups: BTreeMap<(ModelRef, Option<ModelRef>), Vec<Scored>> = BTreeMap::new();
    for (record, truth) in reviewed {
        let of = |m: &flywheel_types::prediction::ModelOutput| ModelRef {
            model: m.model.clone(),
            version: m.version.clone(),
        };
        groups.entry((of(&record.champion), record.shadow.as_ref().map(of))).or_default().push(Scored {
            champion: record.champion.shapes.clone(),
            shadow: record.shadow.as_ref().map(|s| s.shapes.clone()),
            truth: truth.clone(),
        });
    }
    groups
        .into_iter()
        .map(|((champion_model, shadow_model), scored)| PairQuality {
            quality: quality(task, &scored, shadow_model.is_some()),
            champion_model,
            shadow_model,
        })
        .collect()
}

/// The last figures and the review count they cover.
#[derive(Default)]
pub struct QualityCache {
    latest: Mutex<Option<(i64, Vec<PairQuality>)>>,
}

impl QualityCache {
    /// The figures for the store's current reviews (computed at most once per new review; one
    /// computation at a time, off the async workers).
    pub async fn current(&self, store: &Store, task: Task, reviews: i64) -> Result<Vec<PairQuality>, StoreError> {
        let mut latest = self.latest.lock().await;
        if let Some((n, figures)) = latest.as_ref()
            && *n == reviews
        {
            return Ok(figures.clone());
        }
        let reviewed = store.reviewed().await?;
        let n = reviewed.len() as i64;
        let figures = tokio::task::spawn_blocking(move || by_pair(task, &reviewed)).await.expect("quality computation");
        *latest = Some((n, figures.clone()));
        Ok(figures)
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use flywheel_types::prediction::ModelOutput;

    use super::*;

    fn label(l: &str) -> Vec<Shape> {
        vec![Shape { label: l.into(), class_id: 0, confidence: 0.9, bbox: None }]
    }

    fn out(version: &str, l: &str) -> ModelOutput {
        ModelOutput { model: "m".into(), version: version.into(), shapes: label(l), latency_ms: 1.0 }
    }

    fn reviewed(c: &str, cl: &str, s: Option<(&str, &str)>, truth: &str) -> (PredictionRecord, Vec<Shape>) {
        let record = PredictionRecord {
            id: format!("{c}-{cl}-{s:?}-{truth}"),
            time: Utc::now(),
            deployment: "d".into(),
            task: Task::Classification,
            image: Some("x.png".into()),
            width: 8,
            height: 8,
            champion: out(c, cl),
            shadow: s.map(|(v, l)| out(v, l)),
        };
        (record, label(truth))
    }

    #[test]
    fn each_pair_is_scored_on_its_own_samples() {
        let figures = by_pair(
            Task::Classification,
            &[
                reviewed("v1", "cat", Some(("v2", "cat")), "cat"),
                reviewed("v1", "dog", Some(("v2", "cat")), "cat"),
                reviewed("v1", "cat", Some(("v3", "dog")), "cat"),
                reviewed("v1", "cat", None, "dog"),
            ],
        );
        let find = |s: Option<&str>| {
            figures
                .iter()
                .find(|f| f.shadow_model.as_ref().map(|m| m.version.as_str()) == s)
                .map(|f| (f.quality.reviewed_samples, f.quality.champion, f.quality.shadow))
        };
        assert_eq!(figures.len(), 3);
        assert_eq!(find(Some("v2")), Some((2, Some(0.5), Some(1.0))));
        assert_eq!(find(Some("v3")), Some((1, Some(1.0), Some(0.0))));
        assert_eq!(find(None), Some((1, Some(0.0), None)));
        let json = serde_json::to_value(&figures[0]).unwrap();
        assert_eq!(json["championModel"]["version"], "v1");
        assert_eq!(json["metric"], "accuracy");
    }
}
