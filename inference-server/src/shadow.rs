//! The shadow runner: consumes a bounded queue filled after the champion answered, runs the
//! shadow on the same input, records its metrics and completes the log records.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backend::TensorF32;
use crate::metrics::Metrics;
use crate::models::LoadedModel;
use crate::predlog::PredictionLog;
use crate::preprocess::{ImageInput, InverseTransform};
use crate::record::{ImagePrediction, LogItem, ModelOutput};

/// Shadow jobs run at most this many at a time (their model batcher merges them).
const CONCURRENCY: usize = 8;

pub enum ShadowInput {
    /// The champion's input tensor, reusable because both models take the same input.
    Tensor(TensorF32, Vec<InverseTransform>),
    /// The decoded images, preprocessed again for the shadow's own input spec.
    Images(Arc<Vec<ImageInput>>),
}

pub struct ShadowJob {
    pub input: ShadowInput,
    /// One per input item; `None` when that item is not logged.
    pub records: Vec<Option<LogItem>>,
}

/// The sending side of a snapshot's shadow queue; it counts the jobs not finished yet, so a
/// shutdown can wait for them (their log records are completed by the shadow).
#[derive(Clone)]
pub struct ShadowQueue {
    tx: mpsc::Sender<ShadowJob>,
    pending: Arc<AtomicUsize>,
}

impl ShadowQueue {
    /// Queues a job, or hands it back when the queue is full.
    pub fn try_send(&self, job: ShadowJob) -> Result<(), ShadowJob> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.tx.try_send(job).map_err(|e| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            e.into_inner()
        })
    }

    /// Jobs queued or running.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

/// The shadow of one serving snapshot and where its results go.
pub struct ShadowRunner {
    pub model: Arc<LoadedModel>,
    pub threshold: f32,
    pub log: Option<Arc<PredictionLog>>,
    pub metrics: Arc<Metrics>,
}

impl ShadowRunner {
    /// Starts running the jobs of a new queue of `capacity`, until every sender is dropped (the
    /// snapshot was replaced) and the queue is drained.
    pub fn start(self, capacity: usize) -> ShadowQueue {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let pending = Arc::new(AtomicUsize::new(0));
        let runner = Arc::new(self);
        let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) });
        let done = pending.clone();
        tokio::spawn(stream.for_each_concurrent(CONCURRENCY, move |job| {
            let (runner, done) = (runner.clone(), done.clone());
            async move {
                runner.run(job).await;
                done.fetch_sub(1, Ordering::SeqCst);
            }
        }));
        ShadowQueue { tx, pending }
    }

    async fn run(&self, mut job: ShadowJob) {
        let model = &self.model;
        let prepared = match job.input {
            ShadowInput::Tensor(t, invs) => Ok((t, invs)),
            // Resizing is CPU work: on a blocking thread, like the champion's.
            ShadowInput::Images(images) => {
                let model = model.clone();
                tokio::task::spawn_blocking(move || model.prepare(&images))
                    .await
                    .unwrap_or_else(|e| Err(crate::error::ServerError::Internal(e.to_string())))
            }
        };
        let result = match prepared {
            Ok((tensor, invs)) => model.predict(tensor, &invs, self.threshold).await.map(|p| (p, invs)),
            Err(e) => Err(e),
        };
        match result {
            Ok((predicted, invs)) => {
                self.metrics.shadow_runs.inc();
                let preds: Vec<ImagePrediction> = predicted
                    .shapes
                    .iter()
                    .zip(&invs)
                    .map(|(s, inv)| ImagePrediction {
                        id: String::new(),
                        width: inv.width,
                        height: inv.height,
                        shapes: s.clone(),
                    })
                    .collect();
                self.metrics.observe_run("shadow", &model.spec.version, predicted.latency, &preds);
                for (item, shapes) in job.records.iter_mut().zip(predicted.shapes) {
                    if let Some(item) = item {
                        item.record.shadow = Some(ModelOutput {
                            model: model.spec.name.clone(),
                            version: model.spec.version.clone(),
                            shapes,
                            latency_ms: predicted.latency * 1e3,
                        });
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, model = %model.spec.name, "shadow inference failed"),
        }
        if let Some(log) = &self.log {
            log.submit(job.records);
        }
    }
}
