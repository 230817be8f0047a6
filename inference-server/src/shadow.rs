//! The shadow runner: consumes a bounded queue filled after the champion answered, runs the
//! shadow on the same input, records its metrics and completes the log records.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;

use crate::backend::TensorF32;
use crate::models::LoadedModel;
use crate::pipeline::{self, ImageInput, ImagePrediction};
use crate::predlog::{LogItem, ModelOutput};
use crate::preprocess::InverseTransform;
use crate::state::{AppState, Serving};

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

/// Starts the runner for one `Serving` snapshot; it ends when the snapshot's sender is dropped.
pub fn start(
    state: Arc<AppState>,
    serving: std::sync::Weak<Serving>,
    shadow: Arc<LoadedModel>,
    rx: mpsc::Receiver<ShadowJob>,
) {
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|j| (j, rx)) });
    tokio::spawn(stream.for_each_concurrent(CONCURRENCY, move |job| {
        let (state, serving, shadow) = (state.clone(), serving.clone(), shadow.clone());
        async move {
            let Some(serving) = serving.upgrade() else { return };
            run(&state, &serving, &shadow, job).await;
        }
    }));
}

async fn run(state: &Arc<AppState>, serving: &Arc<Serving>, shadow: &Arc<LoadedModel>, mut job: ShadowJob) {
    let threshold = serving.config.confidence_threshold;
    let prepared = match &job.input {
        ShadowInput::Tensor(t, invs) => Ok((t.clone(), invs.clone())),
        ShadowInput::Images(images) => pipeline::images_to_batch(shadow, images),
    };
    let result = match prepared {
        Ok((tensor, invs)) => pipeline::run_and_decode(shadow, tensor, &invs, threshold).await.map(|r| (r, invs)),
        Err(e) => Err(e),
    };
    match result {
        Ok(((shapes, latency), invs)) => {
            state.metrics.shadow_runs.inc();
            let preds: Vec<ImagePrediction> = shapes
                .iter()
                .zip(&invs)
                .map(|(s, inv)| ImagePrediction {
                    id: String::new(),
                    width: inv.width,
                    height: inv.height,
                    shapes: s.clone(),
                })
                .collect();
            pipeline::observe(state, serving, "shadow", shadow, latency, &preds);
            for (rec, s) in job.records.iter_mut().zip(shapes) {
                if let Some(r) = rec {
                    r.record.shadow = Some(ModelOutput {
                        model: shadow.spec.name.clone(),
                        version: shadow.spec.version.clone(),
                        shapes: s,
                        latency_ms: latency * 1e3,
                    });
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, model = %shadow.spec.name, "shadow inference failed"),
    }
    pipeline::submit_logs(state, serving, job.records);
}
