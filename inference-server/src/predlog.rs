//! The prediction log: sampled records (and their input images) written in batches by a
//! background task, never on a request's critical path. The layout under the log URI is
//! `flywheel_types::prediction`'s. Every object is written with one atomic put. Records and
//! images older than the retention period are deleted; reviews are kept (they are small and
//! make review exactly-once).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use flywheel_storage::{Location, StorageError};
use flywheel_types::prediction::records_path;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::record::{LogItem, PredictionRecord};
use crate::serving::PredictionLogConfig;

/// Queue between request handlers and the writer; beyond it records are dropped and counted.
pub const QUEUE: usize = 4096;

/// Receives every batch of records once it is in the log (the review index listens).
pub type WrittenTx = mpsc::UnboundedSender<Vec<PredictionRecord>>;
pub type WrittenRx = mpsc::UnboundedReceiver<Vec<PredictionRecord>>;

pub struct PredictionLog {
    pub config: PredictionLogConfig,
    pub location: Location,
    tx: mpsc::Sender<Msg>,
    metrics: Arc<Metrics>,
}

/// What the writer receives: records, or a request to write everything queued before it now.
enum Msg {
    Item(Box<LogItem>),
    Flush(oneshot::Sender<()>),
}

impl PredictionLog {
    pub fn start(
        config: PredictionLogConfig,
        location: Location,
        metrics: Arc<Metrics>,
        written: Option<WrittenTx>,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let log = Arc::new(Self { config: config.clone(), location: location.clone(), tx, metrics: metrics.clone() });
        tokio::spawn(writer(config.clone(), location.clone(), rx, metrics.clone(), written));
        if config.retention_days > 0 {
            tokio::spawn(retention(config.retention_days, location, Arc::downgrade(&log), metrics));
        }
        log
    }

    /// Whether this prediction is sampled into the log.
    pub fn sampled(&self) -> bool {
        self.config.sample_rate >= 1.0 || rand::random::<f64>() < self.config.sample_rate
    }

    /// Queues items for the writer (`None`s are items that were not sampled).
    pub fn submit(&self, items: impl IntoIterator<Item = Option<LogItem>>) {
        for item in items.into_iter().flatten() {
            if self.tx.try_send(Msg::Item(Box::new(item))).is_err() {
                self.metrics.log_dropped.inc();
            }
        }
    }

    /// Writes every record queued so far (a shutdown's last step); returns once they are in
    /// storage or their write failed (counted and logged like any other).
    pub async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(Msg::Flush(ack)).await.is_ok() {
            let _ = done.await;
        }
    }
}

async fn writer(
    config: PredictionLogConfig,
    loc: Location,
    mut rx: mpsc::Receiver<Msg>,
    metrics: Arc<Metrics>,
    written: Option<WrittenTx>,
) {
    let max = config.flush_records.max(1);
    let interval = Duration::from_millis(config.flush_interval_ms.max(1));
    loop {
        let first = match rx.recv().await {
            None => return,
            Some(Msg::Flush(ack)) => {
                let _ = ack.send(());
                continue;
            }
            Some(Msg::Item(item)) => *item,
        };
        let mut batch = vec![first];
        let mut acks = Vec::new();
        let deadline = tokio::time::Instant::now() + interval;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(Msg::Item(item))) => batch.push(*item),
                Ok(Some(Msg::Flush(ack))) => {
                    acks.push(ack);
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
        match write_batch(&loc, &batch).await {
            Ok(()) => {
                metrics.log_records.inc_by(batch.len() as u64);
                if let Some(tx) = &written {
                    let _ = tx.send(batch.into_iter().map(|i| i.record).collect());
                }
            }
            Err(e) => {
                metrics.log_errors.inc();
                tracing::warn!(error = %e, records = batch.len(), uri = %flywheel_storage::redact(loc.uri()), "prediction log write failed");
            }
        }
        for ack in acks {
            let _ = ack.send(());
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
    let name = records_path(Utc::now(), &uuid::Uuid::new_v4().simple().to_string());
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
async fn retention(days: u32, loc: Location, alive: std::sync::Weak<PredictionLog>, metrics: Arc<Metrics>) {
    loop {
        if alive.upgrade().is_none() {
            return;
        }
        if let Err(e) = delete_expired(&loc, days, Utc::now()).await {
            metrics.log_errors.inc();
            tracing::warn!(error = %e, "prediction log retention failed");
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// The first day a retention of `days` keeps at `now`.
pub fn retention_cutoff(days: u32, now: DateTime<Utc>) -> NaiveDate {
    now.date_naive() - chrono::Days::new(days as u64)
}

pub async fn delete_expired(loc: &Location, days: u32, now: DateTime<Utc>) -> Result<usize, StorageError> {
    let cutoff = retention_cutoff(days, now);
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
