//! The review store: an in-memory index of logged predictions (rebuilt from the log at start)
//! with their review state. A review writes the sample into the feedback dataset (idempotent)
//! and then creates `reviews/<id>.json` with a create-only put: the marker is the single point
//! where TO_REVIEW becomes REVIEWED, so a review is applied at most once, and a failure before
//! it leaves the prediction TO_REVIEW to be submitted again (never lost).
//!
//! The index's lock is only ever held for in-memory work: a review claims its id, writes
//! without the lock, and then marks the item; a second decision on a claimed or reviewed id is
//! a 409. The index holds what the log holds: records older than the log's retention leave it
//! when retention deletes their files. Quality figures are computed off the lock (`quality`).

mod quality;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use flywheel_storage::{Location, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::ServerError;
use crate::feedback::{FeedbackWriter, Sample};
use crate::metrics::Metrics;
use crate::predlog::WrittenRx;
use crate::record::{PredictionRecord, Shape};
use crate::serving::Task;
use flywheel_types::prediction::review_path;
use flywheel_vision::review_order::{disagree, ground_truth, lowest_confidence};
pub use quality::{Pair, Quality, Served, export_quality};

/// Most shapes one review may hold (a correction's work is bounded, and so is the lock it holds).
pub use flywheel_vision::review_order::MAX_REVIEW_SHAPES;

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
    /// The prediction log's retention; 0 keeps records forever.
    retention_days: u32,
    items: Mutex<HashMap<String, Item>>,
    /// Ids whose review is being written (held without the index lock).
    claims: std::sync::Mutex<HashSet<String>>,
    /// Bumped after every change to the reviewed samples.
    generation: AtomicU64,
    quality: quality::QualityCache,
}

/// Releases a review claim however the review ends.
struct Claim<'a> {
    store: &'a ReviewStore,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.store.claims.lock().expect("claims lock").remove(&self.id);
    }
}

impl ReviewStore {
    /// Loads records and reviews already in the log.
    pub async fn open(
        log: Location,
        task: Task,
        labels: Vec<String>,
        feedback: Option<FeedbackWriter>,
        retention_days: u32,
    ) -> Result<Arc<Self>, StorageError> {
        let store = Arc::new(Self {
            log: log.clone(),
            task,
            labels,
            feedback,
            retention_days,
            items: Mutex::new(HashMap::new()),
            claims: Default::default(),
            generation: AtomicU64::new(0),
            quality: Default::default(),
        });
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
        store.prune(Utc::now()).await;
        Ok(store)
    }

    /// Adds every batch the prediction log reports written, until the log stops, and drops
    /// expired records hourly, as the log's retention deletes their files.
    pub fn listen(self: &Arc<Self>, mut written: WrittenRx) {
        let store = self.clone();
        tokio::spawn(async move {
            let mut hourly = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                tokio::select! {
                    records = written.recv() => match records {
                        Some(records) => store.add(records).await,
                        None => return,
                    },
                    _ = hourly.tick() => {
                        store.prune(Utc::now()).await;
                    }
                }
            }
        });
    }

    /// Drops the items whose records are older than the log's retention (their image is gone
    /// or about to be); returns how many.
    pub async fn prune(&self, now: DateTime<Utc>) -> usize {
        if self.retention_days == 0 {
            return 0;
        }
        let cutoff = crate::predlog::retention_cutoff(self.retention_days, now);
        let mut items = self.items.lock().await;
        let before = items.len();
        items.retain(|_, i| i.record.time.date_naive() >= cutoff);
        let pruned = before - items.len();
        drop(items);
        if pruned > 0 {
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        pruned
    }

    /// Items in the index.
    pub async fn items(&self) -> usize {
        self.items.lock().await.len()
    }

    /// Adds freshly logged records (only those with an image can be reviewed).
    pub async fn add(&self, records: impl IntoIterator<Item = PredictionRecord>) {
        let mut items = self.items.lock().await;
        for record in records.into_iter().filter(|r| r.image.is_some()) {
            let disagreement =
                record.shadow.as_ref().is_some_and(|s| disagree(self.task, &record.champion.shapes, &s.shapes));
            let min_confidence = lowest_confidence(&record.champion.shapes);
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
        // Check and claim under the index lock, write without it: listing, scraping and other
        // reviews go on meanwhile, and a second decision on this id is refused, not queued.
        let (claim, shapes, path, width, height) = {
            let items = self.items.lock().await;
            let item = items.get(id).ok_or_else(|| ServerError::NotFound(format!("no prediction {id:?} to review")))?;
            if item.status == ReviewStatus::Reviewed {
                return Err(ServerError::Conflict(format!("prediction {id:?} was already reviewed")));
            }
            let shapes = self.ground_truth(item, &sub)?;
            if !self.claims.lock().expect("claims lock").insert(id.to_string()) {
                return Err(ServerError::Conflict(format!("a review of prediction {id:?} is being stored")));
            }
            let claim = Claim { store: self, id: id.to_string() };
            let path = item.record.image.clone().expect("reviewable items have images");
            (claim, shapes, path, item.record.width, item.record.height)
        };
        let image = self.log.get(&path).await.map_err(|e| match e {
            StorageError::NotFound { .. } => ServerError::Conflict(format!("image of {id:?} is no longer retained")),
            e => e.into(),
        })?;
        let ext = if path.ends_with(".png") { "png" } else { "jpg" };
        let sample = Sample { id, ext, image, width, height, shapes: &shapes };
        feedback.write(&sample).await?;
        let review = Review { id: id.to_string(), decision: sub.decision, shapes, time: Utc::now() };
        let body = Bytes::from(serde_json::to_vec(&review).expect("json"));
        if !self.log.put_if_absent(&review_path(id), body).await? {
            return Err(ServerError::Conflict(format!("prediction {id:?} was already reviewed")));
        }
        // The item may have expired meanwhile; the review is stored either way.
        if let Some(item) = self.items.lock().await.get_mut(id) {
            item.status = ReviewStatus::Reviewed;
            item.review = Some(review.clone());
        }
        drop(claim);
        self.generation.fetch_add(1, Ordering::SeqCst);
        metrics.reviews.inc();
        Ok(review)
    }

    fn ground_truth(&self, item: &Item, sub: &ReviewSubmission) -> Result<Vec<Shape>, ServerError> {
        if sub.shapes.as_ref().is_some_and(|s| s.len() > MAX_REVIEW_SHAPES) {
            return Err(ServerError::bad_request(format!("a review holds at most {MAX_REVIEW_SHAPES} shapes")));
        }
        let corrected = match (sub.decision, &sub.shapes) {
            (Decision::Accept, Some(_)) => {
                return Err(ServerError::bad_request("an accepted review takes no shapes; use decision \"correct\""));
            }
            (Decision::Accept, None) => None,
            (Decision::Correct, Some(s)) => Some(s.as_slice()),
            (Decision::Correct, None) => return Err(ServerError::bad_request("a correction needs shapes")),
        };
        let size = (item.record.width, item.record.height);
        ground_truth(self.task, &self.labels, size, &item.record.champion.shapes, corrected)
            .map_err(ServerError::bad_request)
    }
}

impl ReviewStore {
    /// Quality of `pair` covering every review applied before the call (the promotion gate's
    /// figure). Computed on a snapshot off the index lock, at most one computation at a time;
    /// callers that arrive meanwhile reuse its result when it is recent enough.
    pub async fn quality(&self, pair: &Pair) -> Quality {
        let wanted = self.generation.load(Ordering::SeqCst);
        if let Some(q) = self.quality.fresh(pair, wanted) {
            return q;
        }
        let _computing = self.quality.computing.lock().await;
        if let Some(q) = self.quality.fresh(pair, wanted) {
            return q;
        }
        // Read before the snapshot: a review applied during it bumps past this generation, so
        // the result is never taken for newer than it is.
        let generation = self.generation.load(Ordering::SeqCst);
        let scored = quality::select(self.items.lock().await.values(), pair);
        let (task, with_shadow) = (self.task, pair.shadow.is_some());
        let q = tokio::task::spawn_blocking(move || quality::quality(task, &scored, with_shadow))
            .await
            .expect("quality computation");
        self.quality.store(pair.clone(), generation, q.clone());
        q
    }

    /// The latest figure for `pair` without waiting for reviews that arrived since (for
    /// `/metrics`, which must answer at once during a review burst); a stale figure starts a
    /// recomputation in the background. Only the first call for new models waits.
    pub async fn latest_quality(self: &Arc<Self>, pair: &Pair) -> Quality {
        match self.quality.any(pair) {
            Some((q, generation)) => {
                // One refresh at a time: while one runs, later scrapes keep the figure they have.
                let idle = self.quality.computing.try_lock().is_ok();
                if generation < self.generation.load(Ordering::SeqCst) && idle {
                    let (store, pair) = (self.clone(), pair.clone());
                    tokio::spawn(async move { store.quality(&pair).await });
                }
                q
            }
            None => self.quality(pair).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::ModelOutput;

    fn record(days_ago: i64) -> PredictionRecord {
        let shapes = vec![Shape { label: "cat".into(), class_id: 0, confidence: 0.9, bbox: None }];
        PredictionRecord {
            id: uuid::Uuid::new_v4().to_string(),
            time: Utc::now() - chrono::Duration::days(days_ago),
            deployment: "d".into(),
            task: Task::Classification,
            image: Some("images/x.png".into()),
            width: 8,
            height: 8,
            champion: ModelOutput { model: "m".into(), version: "v1".into(), shapes, latency_ms: 1.0 },
            shadow: None,
        }
    }

    #[tokio::test]
    async fn records_past_the_log_retention_leave_the_index() {
        let dir = tempfile::tempdir().unwrap();
        let log = Location::open(&dir.path().display().to_string()).unwrap();
        let store = ReviewStore::open(log, Task::Classification, vec!["cat".into()], None, 30).await.unwrap();
        store.add([record(0), record(29), record(31), record(400)]).await;
        assert_eq!(store.prune(Utc::now()).await, 2);
        assert_eq!(store.items().await, 2);
        // Without retention nothing expires.
        let log = Location::open(&dir.path().display().to_string()).unwrap();
        let forever = ReviewStore::open(log, Task::Classification, vec![], None, 0).await.unwrap();
        forever.add([record(400)]).await;
        assert_eq!((forever.prune(Utc::now()).await, forever.items().await), (0, 1));
    }
}
