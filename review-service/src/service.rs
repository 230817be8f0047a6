//! The service: the store, the prediction log it ingests, and the feedback dataset it writes
//! reviewed samples into. Decisions are validated here and stored exactly once by the store;
//! samples are written afterwards by `write_pending`, each marked written only after its
//! objects were put, so a crash or a failed put leaves it to the next pass (the writes are
//! idempotent per prediction id, so a sample written twice is still one sample).

use std::time::Duration;

use chrono::Utc;
use flywheel_storage::feedback::{FeedbackError, FeedbackWriter, Sample};
use flywheel_storage::{Location, StorageError};
use flywheel_types::Task;
use flywheel_types::prediction::Shape;
use flywheel_vision::review_order::ground_truth;
use serde::{Deserialize, Serialize};

use crate::ingest::{IngestError, Ingested, ingest};
use crate::quality::{ModelRef, PairQuality, QualityCache};
use crate::store::{Decision, Review, Store, StoreError, Totals};

/// Most reviews one writer pass takes (the rest go to the next pass).
const WRITE_BATCH: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Feedback(#[from] FeedbackError),
}

/// A reviewer's decision as the API takes it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Submission {
    pub decision: Decision,
    #[serde(default)]
    pub shapes: Option<Vec<Shape>>,
}

/// What one writer pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub written: usize,
    /// Reviews whose sample could not be written this pass (left unwritten, retried next pass).
    pub failed: usize,
}

/// The pair the newest prediction names: what the Deployment serves now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Serving {
    pub champion: ModelRef,
    pub shadow: Option<ModelRef>,
}

/// What `/status` and `/metrics` show.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub task: Task,
    pub totals: Totals,
    pub quality: Vec<PairQuality>,
    pub serving: Option<Serving>,
}

impl Status {
    /// The figures of the pair serving now.
    pub fn serving_quality(&self) -> Option<&PairQuality> {
        let serving = self.serving.as_ref()?;
        self.quality.iter().find(|q| q.champion_model == serving.champion && q.shadow_model == serving.shadow)
    }
}

pub struct Service {
    pub store: Store,
    pub log: Location,
    pub feedback: FeedbackWriter,
    pub task: Task,
    pub labels: Vec<String>,
    quality: QualityCache,
}

impl Service {
    pub fn new(store: Store, log: Location, feedback: FeedbackWriter, task: Task, labels: Vec<String>) -> Self {
        Self { store, log, feedback, task, labels, quality: QualityCache::default() }
    }

    /// One ingestion pass over the prediction log.
    pub async fn ingest_once(&self) -> Result<Ingested, IngestError> {
        ingest(&self.store, &self.log).await
    }

    /// Ingests the log every `every`, forever (a failed pass is logged and retried).
    pub async fn ingest_loop(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.ingest_once().await {
                Ok(i) if i.objects > 0 => tracing::info!(objects = i.objects, predictions = i.predictions, "ingested"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "ingesting the prediction log failed; retrying"),
            }
        }
    }

    /// Writes pending samples every `every`, forever (failures stay pending for the next pass).
    pub async fn write_loop(&self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.write_pending().await {
                Ok(w) if w.written + w.failed > 0 => {
                    tracing::info!(written = w.written, failed = w.failed, "wrote reviewed samples")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "writing reviewed samples failed; retrying"),
            }
        }
    }

    /// The totals, the quality figures per (champion, shadow) pair over every review, and the
    /// pair serving now.
    pub async fn status(&self) -> Result<Status, StoreError> {
        let totals = self.store.totals().await?;
        let quality = self.quality.current(&self.store, self.task, totals.reviewed).await?;
        let serving = self.store.serving_pair().await?.map(|(model, version, shadow)| Serving {
            champion: ModelRef { model, version },
            shadow: shadow.map(|(model, version)| ModelRef { model, version }),
        });
        Ok(Status { task: self.task, totals, quality, serving })
    }

    /// Validates and stores a decision (exactly once: a second one is `AlreadyReviewed`).
    pub async fn decide(&self, id: &str, sub: Submission) -> Result<Vec<Shape>, ServiceError> {
        if sub.shapes.as_ref().is_some_and(|s| s.len() > flywheel_vision::review_order::MAX_REVIEW_SHAPES) {
            return Err(ServiceError::BadRequest(format!(
                "a review holds at most {} shapes",
                flywheel_vision::review_order::MAX_REVIEW_SHAPES
            )));
        }
        let corrected = match (sub.decision, &sub.shapes) {
            (Decision::Accept, Some(_)) => {
                return Err(ServiceError::BadRequest(
                    "an accepted review takes no shapes; use decision \"correct\"".into(),
                ));
            }
            (Decision::Accept, None) => None,
            (Decision::Correct, Some(s)) => Some(s.as_slice()),
            (Decision::Correct, None) => return Err(ServiceError::BadRequest("a correction needs shapes".into())),
        };
        let item = self.store.get(id).await?;
        if item.reviewed {
            return Err(StoreError::AlreadyReviewed(id.to_string()).into());
        }
        let r = &item.record;
        let shapes = ground_truth(self.task, &self.labels, (r.width, r.height), &r.champion.shapes, corrected)
            .map_err(ServiceError::BadRequest)?;
        self.store.decide(id, sub.decision, &shapes, Utc::now().timestamp_millis()).await?;
        Ok(shapes)
    }

    /// Writes every stored review whose sample is not in the feedback dataset yet; each is
    /// marked written only after its objects were put. A failure leaves the review unwritten.
    pub async fn write_pending(&self) -> Result<Written, StoreError> {
        let mut done = Written::default();
        for review in self.store.unwritten(WRITE_BATCH).await? {
            match self.write_one(&review).await {
                Ok(()) => {
                    self.store.mark_written(&review.id).await?;
                    done.written += 1;
                }
                Err(e) => {
                    tracing::warn!(id = %review.id, error = %e, "cannot write a reviewed sample; it stays pending");
                    done.failed += 1;
                }
            }
        }
        Ok(done)
    }

    async fn write_one(&self, review: &Review) -> Result<(), ServiceError> {
        let path = review
            .record
            .image
            .as_deref()
            .ok_or_else(|| ServiceError::BadRequest(format!("prediction {:?} has no logged image", review.id)))?;
        let image = self.log.get(path).await?;
        let ext = if path.ends_with(".png") { "png" } else { "jpg" };
        let sample = Sample {
            id: &review.id,
            ext,
            image,
            width: review.record.width,
            height: review.record.height,
            shapes: &review.shapes,
        };
        self.feedback.write(&sample).await?;
        Ok(())
    }
}
