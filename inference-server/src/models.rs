//! Loaded models: fetch → verify → build backend → check shapes → warm up → ready to swap in.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::backend::{BackendError, ModelBackend, TensorF32};
use crate::batcher::Batcher;
use crate::error::ServerError;
use crate::postprocess;
use crate::preprocess::InverseTransform;
use crate::serving::{BatchingConfig, Layout, ServedModel};

/// Builds a backend from ONNX bytes (the runtime in production).
pub type BackendFactory = Arc<dyn Fn(&[u8]) -> Result<Arc<dyn ModelBackend>, BackendError> + Send + Sync>;

pub struct LoadedModel {
    pub spec: ServedModel,
    pub backend: Arc<dyn ModelBackend>,
    pub batcher: Batcher,
    pub loaded_at: chrono::DateTime<chrono::Utc>,
}

impl LoadedModel {
    /// True when `other` describes the same artifact and pre/post-processing (no reload needed).
    pub fn serves(&self, other: &ServedModel) -> bool {
        &self.spec == other
    }

    /// The input shape for a batch of `n` images.
    pub fn input_shape(&self, n: usize) -> Vec<usize> {
        let i = &self.spec.input;
        let (c, h, w) = (i.channels as usize, i.height as usize, i.width as usize);
        match i.layout {
            Layout::Nchw => vec![n, c, h, w],
            Layout::Nhwc => vec![n, h, w, c],
        }
    }

    pub async fn infer(&self, input: TensorF32) -> Result<Vec<TensorF32>, ServerError> {
        self.batcher.infer(input).await
    }
}

/// Fetches, verifies, loads and warms a model. Errors are messages for logs and /status.
pub async fn load(
    spec: &ServedModel,
    cache_dir: &Path,
    factory: &BackendFactory,
    batching: &BatchingConfig,
    demand: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<LoadedModel, String> {
    let bytes = crate::fetch::fetch_verified(&spec.uri, &spec.sha256, cache_dir).await?;
    let f = factory.clone();
    let backend = tokio::task::spawn_blocking(move || f(&bytes))
        .await
        .map_err(|e| format!("loader panicked: {e}"))?
        .map_err(|e| format!("loading {}: {e}", spec.uri))?;
    let probe = LoadedModel {
        spec: spec.clone(),
        backend: backend.clone(),
        batcher: Batcher::spawn(&spec.name, backend.clone(), 1, Duration::ZERO, 1, Default::default()),
        loaded_at: chrono::Utc::now(),
    };
    check_input(&probe)?;
    // Warm-up: one real run through the model and the decoder proves the shapes line up
    // before the model may replace the one serving.
    let shape = probe.input_shape(1);
    let zeros = TensorF32::new(shape.clone(), vec![0.0; shape.iter().product()]).map_err(|e| e.to_string())?;
    let b = backend.clone();
    let outs = tokio::task::spawn_blocking(move || b.run(&zeros))
        .await
        .map_err(|e| format!("warm-up panicked: {e}"))?
        .map_err(|e| format!("warm-up run failed: {e}"))?;
    let inv = InverseTransform {
        scale_x: 1.0,
        scale_y: 1.0,
        pad_x: 0.0,
        pad_y: 0.0,
        width: spec.input.width,
        height: spec.input.height,
    };
    postprocess::decode(&spec.output, &outs, &spec.labels, f32::INFINITY, &inv)
        .map_err(|e| format!("outputs do not fit the {:?} decoder: {e}", spec.output))?;
    let batcher = Batcher::spawn(
        &spec.name,
        backend.clone(),
        batching.max_batch_size,
        Duration::from_micros(batching.max_wait_micros),
        batching.max_concurrent_requests.max(1),
        demand,
    );
    Ok(LoadedModel { batcher, ..probe })
}

fn check_input(m: &LoadedModel) -> Result<(), String> {
    let info = m.backend.input();
    let want = m.input_shape(1);
    if info.shape.len() != want.len() {
        return Err(format!(
            "model input {:?} has rank {}, the serving config describes {:?}",
            info.name,
            info.shape.len(),
            want
        ));
    }
    for (k, (have, want)) in info.shape.iter().zip(&want).enumerate().skip(1) {
        if let Some(h) = have
            && h != want
        {
            return Err(format!(
                "model input {:?} has shape {:?}, the serving config describes {:?} (dimension {k})",
                info.name, info.shape, want
            ));
        }
    }
    Ok(())
}
