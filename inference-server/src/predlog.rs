//! The prediction log: sampled records (and their input images) written in batches by a
//! background task, never on a request's critical path. Layout under the log URI:
//!   images/YYYY-MM-DD/<id>.<png|jpg>     the input image, written before its record
//!   records/YYYY-MM-DD/<time>-<uuid>.jsonl  one JSON record per line, one object per batch
//!   reviews/<id>.json                    the review of a prediction (created exactly once)
//! Every object is written with one atomic put. Records and images older than the retention
//! period are deleted; reviews are kept (they are small and make review exactly-once).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use flywheel_storage::{Location, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::postprocess::Shape;
use crate::review::ReviewStore;
use crate::serving::PredictionLogConfig;

/// Queue between request handlers and the writer; beyond it records are dropped and counted.
pub const QUEUE: usize = 4096;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelOutput {
    pub model: String,
    pub version: String,
    pub shapes: Vec<Shape>,
    pub latency_ms: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PredictionRecord {
    pub id: String,
    pub time: DateTime<Utc>,
    pub deployment: String,
    pub task: crate::serving::Task,
    /// Image path relative to the log root; absent for tensor (OIP) requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub width: u32,
    pub height: u32,
    pub champion: ModelOutput,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelOutput>,
}

pub struct LogItem {
    pub record: PredictionRecord,
    pub image: Option<Bytes>,
}

pub struct PredictionLog {
    pub config: PredictionLogConfig,
    pub location: Location,
    tx: mpsc::Sender<LogItem>,
}

pub fn image_ext(format: image::ImageFormat) -> &'static str {
    if format == image::ImageFormat::Png { "png" } else { "jpg" }
}

pub fn image_rel_path(id: &str, time: DateTime<Utc>, ext: &str) -> String {
    format!("images/{}/{id}.{ext}", time.format("%Y-%m-%d"))
}

impl PredictionLog {
    pub fn start(
        config: PredictionLogConfig,
        location: Location,
        state_metrics: Arc<crate::state::AppState>,
        reviews: Option<Arc<ReviewStore>>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = Arc::new(Self { config: config.clone(), location: location.clone(), tx });
        tokio::spawn(writer(config.clone(), location.clone(), rx, state_metrics.clone(), reviews));
        if config.retention_days > 0 {
            tokio::spawn(retention(config.retention_days, location, Arc::downgrade(&log), state_metrics));
        }
        log
    }

    /// Whether this prediction is sampled into the log.
    pub fn sampled(&self) -> bool {
        self.config.sample_rate >= 1.0 || rand::random::<f64>() < self.config.sample_rate
    }

    pub fn submit(&self, item: LogItem, metrics: &Metrics) {
        if self.tx.try_send(item).is_err() {
            metrics.log_dropped.inc();
        }
    }
}

async fn writer(
    config: PredictionLogConfig,
    loc: Location,
    mut rx: mpsc::Receiver<LogItem>,
    state: Arc<crate::state::AppState>,
    reviews: Option<Arc<ReviewStore>>,
) {
    let max = config.flush_records.max(1);
    let interval = Duration::from_millis(config.flush_interval_ms.max(1));
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + interval;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(item)) => batch.push(item),
                Ok(None) | Err(_) => break,
            }
        }
        match write_batch(&loc, &batch).await {
            Ok(()) => {
                state.metrics.log_records.inc_by(batch.len() as u64);
                if let Some(r) = &reviews {
                    r.add(batch.into_iter().map(|i| i.record)).await;
                }
            }
            Err(e) => {
                state.metrics.log_errors.inc();
                tracing::warn!(error = %e, records = batch.len(), uri = %loc.uri(), "prediction log write failed");
            }
        }
    }
}

/// Images first, then the records that point at them, so a record never names a missing image.
async fn write_batch(loc: &Location, batch: &[LogItem]) -> Result<(), StorageError> {
    let puts = batch.iter().filter_map(|i| {
        let path = i.record.image.as_ref()?;
        let data = i.image.clone()?;
        Some(loc.put(path, data))
    });
    futures::future::try_join_all(puts).await?;
    let mut body = Vec::new();
    for i in batch {
        serde_json::to_writer(&mut body, &i.record).expect("records serialise");
        body.push(b'\n');
    }
    let now = Utc::now();
    let name = format!(
        "records/{}/{}-{}.jsonl",
        now.format("%Y-%m-%d"),
        now.format("%H%M%S%.6f"),
        uuid::Uuid::new_v4().simple()
    );
    loc.put(&name, Bytes::from(body)).await
}

/// Reads every record of the log (used at start-up to rebuild the review index).
pub async fn read_all(loc: &Location) -> Result<Vec<PredictionRecord>, StorageError> {
    let mut out = Vec::new();
    for (path, _) in loc.list("records").await? {
        let data = loc.get(&path).await?;
        for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            match serde_json::from_slice::<PredictionRecord>(line) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(path, error = %e, "skipping unreadable prediction record"),
            }
        }
    }
    Ok(out)
}

/// Deletes images/ and records/ day folders older than the retention period, hourly.
async fn retention(
    days: u32,
    loc: Location,
    alive: std::sync::Weak<PredictionLog>,
    state: Arc<crate::state::AppState>,
) {
    loop {
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(e) = delete_expired(&loc, days, Utc::now()).await {
            state.metrics.log_errors.inc();
            tracing::warn!(error = %e, "prediction log retention failed");
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

pub async fn delete_expired(loc: &Location, days: u32, now: DateTime<Utc>) -> Result<usize, StorageError> {
    let cutoff = now.date_naive() - chrono::Days::new(days as u64);
    let mut deleted = 0;
    for prefix in ["images", "records"] {
        for (path, _) in loc.list(prefix).await? {
            let day = path.split('/').nth(1).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            if matches!(day, Some(d) if d < cutoff) {
                loc.delete(&path).await?;
                deleted += 1;
            }
        }
    }
    Ok(deleted)
}
