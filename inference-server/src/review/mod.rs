//! The review store: an in-memory index of logged predictions (rebuilt from the log at start)
//! with their review state. A review writes the sample into the feedback dataset (idempotent)
//! and then creates `reviews/<id>.json` with a create-only put: the marker is the single point
//! where TO_REVIEW becomes REVIEWED, so a review is applied at most once, and a failure before
//! it leaves the prediction TO_REVIEW to be submitted again (never lost).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flywheel_storage::{Location, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::ServerError;
use crate::feedback::{FeedbackWriter, Sample};
use crate::metrics::{Metrics, RoleLabel};
use crate::predlog::WrittenRx;
use crate::record::{ModelOutput, PredictionRecord, Shape};
use crate::serving::Task;
use flywheel_types::prediction::review_path;
use flywheel_vision::iou;

/// Most shapes one review may hold (a correction's work is bounded, and so is the lock it holds).
pub const MAX_REVIEW_SHAPES: usize = 1000;

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReviewStatus {
    ToReview,
    Reviewed,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accept,
    Correct,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub id: String,
    pub decision: Decision,
    /// The ground truth: the champion's shapes when accepted, the reviewer's when corrected.
    pub shapes: Vec<Shape>,
    pub time: DateTime<Utc>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewSubmission {
    pub decision: Decision,
    #[serde(default)]
    pub shapes: Option<Vec<Shape>>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Item {
    pub status: ReviewStatus,
    /// Champion and shadow disagree on this image.
    pub disagreement: bool,
    /// Lowest champion confidence (0 when the champion found nothing).
    pub min_confidence: f32,
    #[serde(flatten)]
    pub record: PredictionRecord,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub review: Option<Review>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// toReview (default), reviewed or all.
    pub status: Option<String>,
    /// Only predictions with a champion shape of this label.
    pub label: Option<String>,
    /// Only predictions whose lowest confidence is at most this.
    pub max_confidence: Option<f32>,
    /// Only predictions where champion and shadow disagree.
    pub disagreement: Option<bool>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

pub struct ReviewStore {
    pub log: Location,
    pub task: Task,
    pub labels: Vec<String>,
    feedback: Option<FeedbackWriter>,
    items: Mutex<HashMap<String, Item>>,
}

impl ReviewStore {
    /// Loads records and reviews already in the log.
    pub async fn open(
        log: Location,
        task: Task,
        labels: Vec<String>,
        feedback: Option<FeedbackWriter>,
    ) -> Result<Arc<Self>, StorageError> {
        let store = Arc::new(Self { log: log.clone(), task, labels, feedback, items: Mutex::new(HashMap::new()) });
        let records = crate::predlog::read_all(&log).await?;
        store.add(records).await;
        let mut items = store.items.lock().await;
        for (path, _) in log.list("reviews").await? {
            let data = log.get(&path).await?;
            if let Ok(r) = serde_json::from_slice::<Review>(&data)
                && let Some(item) = items.get_mut(&r.id)
            {
                item.status = ReviewStatus::Reviewed;
                item.review = Some(r);
            }
        }
        drop(items);
        Ok(store)
    }

    /// Adds every batch the prediction log reports written, until the log stops.
    pub fn listen(self: &Arc<Self>, mut written: WrittenRx) {
        let store = self.clone();
        tokio::spawn(async move {
            while let Some(records) = written.recv().await {
                store.add(records).await;
            }
        });
    }

    /// Adds freshly logged records (only those with an image can be reviewed).
    pub async fn add(&self, records: impl IntoIterator<Item = PredictionRecord>) {
        let mut items = self.items.lock().await;
        for record in records.into_iter().filter(|r| r.image.is_some()) {
            let disagreement =
                record.shadow.as_ref().is_some_and(|s| disagree(self.task, &record.champion.shapes, &s.shapes));
            let min_confidence = record
                .champion
                .shapes
                .iter()
                .map(|s| s.confidence)
                .fold(None, |m: Option<f32>, c| Some(m.map_or(c, |m| m.min(c))))
                .unwrap_or(0.0);
            items.entry(record.id.clone()).or_insert(Item {
                status: ReviewStatus::ToReview,
                disagreement,
                min_confidence,
                record,
                review: None,
            });
        }
    }

    pub async fn list(&self, q: &ListQuery) -> Result<(Vec<Item>, usize), ServerError> {
        let status = match q.status.as_deref() {
            None | Some("toReview") | Some("TO_REVIEW") => Some(ReviewStatus::ToReview),
            Some("reviewed") | Some("REVIEWED") => Some(ReviewStatus::Reviewed),
            Some("all") => None,
            Some(s) => {
                return Err(ServerError::bad_request(format!("status must be toReview, reviewed or all, not {s:?}")));
            }
        };
        let limit = q.limit.unwrap_or(50);
        if limit == 0 || limit > 1000 {
            return Err(ServerError::bad_request("limit must be between 1 and 1000"));
        }
        let items = self.items.lock().await;
        let mut hits: Vec<&Item> = items
            .values()
            .filter(|i| status.is_none_or(|s| i.status == s))
            .filter(|i| q.label.as_ref().is_none_or(|l| i.record.champion.shapes.iter().any(|s| &s.label == l)))
            .filter(|i| q.max_confidence.is_none_or(|m| i.min_confidence <= m))
            .filter(|i| q.disagreement.is_none_or(|d| i.disagreement == d))
            .collect();
        // Most useful first: disagreements, then least confident, then newest.
        hits.sort_by(|a, b| {
            b.disagreement
                .cmp(&a.disagreement)
                .then(a.min_confidence.total_cmp(&b.min_confidence))
                .then(b.record.time.cmp(&a.record.time))
                .then(a.record.id.cmp(&b.record.id))
        });
        let total = hits.len();
        let page = hits.into_iter().skip(q.offset.unwrap_or(0)).take(limit).cloned().collect();
        Ok((page, total))
    }

    pub async fn get(&self, id: &str) -> Result<Item, ServerError> {
        self.items
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| ServerError::NotFound(format!("no prediction {id:?} to review")))
    }

    pub async fn image(&self, id: &str) -> Result<(Bytes, &'static str), ServerError> {
        let item = self.get(id).await?;
        let path = item.record.image.as_deref().expect("reviewable items have images");
        let data = self.log.get(path).await.map_err(|e| match e {
            StorageError::NotFound { .. } => ServerError::NotFound(format!("image of {id:?} is no longer retained")),
            e => e.into(),
        })?;
        let mime = if path.ends_with(".png") { "image/png" } else { "image/jpeg" };
        Ok((data, mime))
    }

    pub async fn submit(&self, id: &str, sub: ReviewSubmission, metrics: &Metrics) -> Result<Review, ServerError> {
        let feedback = self.feedback.as_ref().ok_or_else(|| {
            ServerError::Conflict("this deployment has no feedback dataset configured; reviews cannot be stored".into())
        })?;
        // Holding the lock across the writes serialises reviews: a second submission of the
        // same id waits and then sees REVIEWED.
        let mut items = self.items.lock().await;
        let item = items.get(id).ok_or_else(|| ServerError::NotFound(format!("no prediction {id:?} to review")))?;
        if item.status == ReviewStatus::Reviewed {
            return Err(ServerError::Conflict(format!("prediction {id:?} was already reviewed")));
        }
        let shapes = self.ground_truth(item, &sub)?;
        let path = item.record.image.clone().expect("reviewable items have images");
        let image = self.log.get(&path).await.map_err(|e| match e {
            StorageError::NotFound { .. } => ServerError::Conflict(format!("image of {id:?} is no longer retained")),
            e => e.into(),
        })?;
        let ext = if path.ends_with(".png") { "png" } else { "jpg" };
        let sample = Sample { id, ext, image, width: item.record.width, height: item.record.height, shapes: &shapes };
        feedback.write(&sample).await?;
        let review = Review { id: id.to_string(), decision: sub.decision, shapes, time: Utc::now() };
        let body = Bytes::from(serde_json::to_vec(&review).expect("json"));
        if !self.log.put_if_absent(&review_path(id), body).await? {
            return Err(ServerError::Conflict(format!("prediction {id:?} was already reviewed")));
        }
        let item = items.get_mut(id).expect("checked above");
        item.status = ReviewStatus::Reviewed;
        item.review = Some(review.clone());
        metrics.reviews.inc();
        Ok(review)
    }

    fn ground_truth(&self, item: &Item, sub: &ReviewSubmission) -> Result<Vec<Shape>, ServerError> {
        if sub.shapes.as_ref().is_some_and(|s| s.len() > MAX_REVIEW_SHAPES) {
            return Err(ServerError::bad_request(format!("a review holds at most {MAX_REVIEW_SHAPES} shapes")));
        }
        let mut shapes = match sub.decision {
            Decision::Accept => {
                if sub.shapes.is_some() {
                    return Err(ServerError::bad_request(
                        "an accepted review takes no shapes; use decision \"correct\"",
                    ));
                }
                item.record.champion.shapes.clone()
            }
            Decision::Correct => {
                sub.shapes.clone().ok_or_else(|| ServerError::bad_request("a correction needs shapes"))?
            }
        };
        if self.task == Task::Classification {
            shapes.truncate(1);
            if shapes.is_empty() {
                return Err(ServerError::bad_request("a classification review needs one label"));
            }
        }
        let (w, h) = (item.record.width as f32, item.record.height as f32);
        for s in &mut shapes {
            if !self.labels.is_empty() {
                s.class_id = self.labels.iter().position(|l| l == &s.label).ok_or_else(|| {
                    ServerError::bad_request(format!("unknown label {:?}; known labels: {:?}", s.label, self.labels))
                })?;
            }
            s.confidence = 1.0;
            match (self.task, s.bbox) {
                (Task::Detection, None) => {
                    return Err(ServerError::bad_request("detection shapes need a box [x1, y1, x2, y2]"));
                }
                (Task::Detection, Some(b)) => {
                    let ok = b.iter().all(|v| v.is_finite())
                        && b[0] >= 0.0
                        && b[1] >= 0.0
                        && b[0] < b[2]
                        && b[1] < b[3]
                        && b[2] <= w + 0.5
                        && b[3] <= h + 0.5;
                    if !ok {
                        return Err(ServerError::bad_request(format!(
                            "box {b:?} is not inside the {w}x{h} image with x1<x2, y1<y2"
                        )));
                    }
                }
                (Task::Classification, _) => s.bbox = None,
            }
        }
        Ok(shapes)
    }
}

fn disagree(task: Task, a: &[Shape], b: &[Shape]) -> bool {
    match task {
        Task::Classification => a.first().map(|s| &s.label) != b.first().map(|s| &s.label),
        Task::Detection => {
            a.len() != b.len()
                || a.iter().any(|x| {
                    !b.iter().any(|y| {
                        y.label == x.label && matches!((x.bbox, y.bbox), (Some(p), Some(q)) if iou(&p, &q) >= 0.5)
                    })
                })
        }
    }
}

/// A served model as prediction records name it.
#[derive(Clone, Copy, Debug)]
pub struct Served<'a> {
    pub model: &'a str,
    pub version: &'a str,
}

impl Served<'_> {
    fn made(&self, out: &ModelOutput) -> bool {
        out.model == self.model && out.version == self.version
    }
}

/// Champion and shadow quality on the same reviewed samples.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Quality {
    /// `mAP50` (detection) or `accuracy` (classification).
    pub metric: &'static str,
    /// Reviewed samples both scores are computed on.
    pub reviewed_samples: usize,
    /// None until a sample is scored, never 0 for "unknown".
    pub champion: Option<f64>,
    pub shadow: Option<f64>,
}

impl ReviewStore {
    /// Quality of the models served now. Only reviewed samples that the current champion
    /// (and, with a shadow, the current shadow) predicted count: a comparison must not mix in
    /// predictions of a model that is no longer served, or a freshly deployed shadow would
    /// inherit its predecessor's score.
    pub async fn quality(&self, champion: Served<'_>, shadow: Option<Served<'_>>) -> Quality {
        let items = self.items.lock().await;
        quality(self.task, items.values(), champion, shadow)
    }
}

/// Pure: the scores over `items` (see [`ReviewStore::quality`]).
pub fn quality<'a>(
    task: Task,
    items: impl Iterator<Item = &'a Item>,
    champion: Served<'_>,
    shadow: Option<Served<'_>>,
) -> Quality {
    let scored: Vec<(&Item, &Review)> = items
        .filter_map(|i| Some((i, i.review.as_ref()?)))
        .filter(|(i, _)| champion.made(&i.record.champion))
        .filter(|(i, _)| match shadow {
            Some(s) => i.record.shadow.as_ref().is_some_and(|o| s.made(o)),
            None => true,
        })
        .collect();
    let score = |pred: &dyn Fn(&Item) -> Option<&[Shape]>| {
        let pairs: Vec<(&[Shape], &[Shape])> =
            scored.iter().filter_map(|(i, r)| Some((pred(i)?, r.shapes.as_slice()))).collect();
        match task {
            Task::Classification => crate::quality::accuracy(&pairs),
            Task::Detection => crate::quality::map50(&pairs),
        }
    };
    Quality {
        metric: match task {
            Task::Classification => "accuracy",
            Task::Detection => "mAP50",
        },
        reviewed_samples: scored.len(),
        champion: score(&|i: &Item| Some(i.record.champion.shapes.as_slice())),
        shadow: shadow.and_then(|_| score(&|i: &Item| i.record.shadow.as_ref().map(|o| o.shapes.as_slice()))),
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
    use super::*;

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

    const V1: Served = Served { model: "m", version: "v1" };
    const V2: Served = Served { model: "m", version: "v2" };
    const V3: Served = Served { model: "m", version: "v3" };

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
        let q = quality(Task::Classification, items.iter(), V1, Some(V3));
        assert_eq!(q, Quality { metric: "accuracy", reviewed_samples: 1, champion: Some(1.0), shadow: Some(0.0) });
        let q = quality(Task::Classification, items.iter(), V1, Some(V2));
        assert_eq!((q.reviewed_samples, q.champion, q.shadow), (2, Some(0.5), Some(1.0)));
    }

    #[test]
    fn without_a_shadow_every_champion_sample_counts_and_a_new_champion_starts_empty() {
        let items = [item("v1", "cat", None, "cat"), item("v1", "cat", Some(("v2", "dog")), "dog")];
        let q = quality(Task::Classification, items.iter(), V1, None);
        assert_eq!((q.reviewed_samples, q.champion, q.shadow), (2, Some(0.5), None));
        let q = quality(Task::Classification, items.iter(), V2, None);
        assert_eq!((q.reviewed_samples, q.champion, q.shadow), (0, None, None));
    }
}
