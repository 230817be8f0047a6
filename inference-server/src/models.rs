//! Loaded models: fetch → verify → build backend → check shapes → warm up → ready to swap in;
//! and running one: images → batch tensor → batcher → outputs → shapes per image.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{BackendError, ModelBackend, TensorF32, split_rows};
use crate::batcher::Batcher;
use crate::error::ServerError;
use crate::postprocess::OutputPlan;
use crate::preprocess::{ImageInput, InverseTransform, to_tensor};
use crate::record::Shape;
use crate::serving::{BatchingConfig, ServedModel};

/// Builds a backend from ONNX bytes (the runtime in production).
pub type BackendFactory = Arc<dyn Fn(&[u8]) -> Result<Arc<dyn ModelBackend>, BackendError> + Send + Sync>;

pub struct LoadedModel {
    pub spec: ServedModel,
    pub backend: Arc<dyn ModelBackend>,
    /// How its outputs become shapes, resolved against the model at load.
    pub outputs: OutputPlan,
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
        flywheel_vision::batch_shape(&self.spec.input, n)
    }

    /// Runs one request's tensor through the batcher.
    pub async fn infer(&self, input: TensorF32) -> Result<Vec<TensorF32>, ServerError> {
        Ok(self.batcher.infer(input).await?)
    }

    /// The batch tensor of `images` in this model's input layout, with each image's way back
    /// from input pixels to its own.
    pub fn prepare(&self, images: &[ImageInput]) -> Result<(TensorF32, Vec<InverseTransform>), ServerError> {
        let mut data = Vec::new();
        let mut invs = Vec::with_capacity(images.len());
        for img in images {
            let (t, inv) = to_tensor(&img.decoded.rgb, &self.spec.input)?;
            data.extend_from_slice(&t);
            invs.push(inv);
        }
        Ok((TensorF32::new(self.input_shape(images.len()), data)?, invs))
    }

    /// Runs a prepared batch and decodes every item (one `invs` entry per item).
    pub async fn predict(
        &self,
        tensor: TensorF32,
        invs: &[InverseTransform],
        threshold: f32,
    ) -> Result<Predicted, ServerError> {
        let t0 = Instant::now();
        let outs = self.infer(tensor).await?;
        let latency = t0.elapsed().as_secs_f64();
        Ok(Predicted { shapes: self.decode(&outs, invs, threshold)?, latency })
    }

    /// Decodes a batch's outputs into each item's shapes.
    pub fn decode(
        &self,
        outs: &[TensorF32],
        invs: &[InverseTransform],
        threshold: f32,
    ) -> Result<Vec<Vec<Shape>>, ServerError> {
        let items = split_rows(outs, &vec![1; invs.len()])?;
        items.iter().zip(invs).map(|(o, inv)| self.outputs.decode(o, threshold, inv)).collect()
    }
}

/// One model run's answer: shapes per item and the run's latency in seconds.
pub struct Predicted {
    pub shapes: Vec<Vec<Shape>>,
    pub latency: f64,
}

/// Fetches, verifies, loads and warms a model. Errors are messages for logs and /status.
pub async fn load(
    spec: &ServedModel,
    cache_dir: &Path,
    factory: &BackendFactory,
    batching: &BatchingConfig,
    demand: Arc<std::sync::atomic::AtomicUsize>,
) -> Result<LoadedModel, String> {
    let backend = build_backend(spec, cache_dir, factory).await?;
    let probe = plan(spec, backend)?;
    warm_up(&probe).await?;
    let batcher = Batcher::spawn(
        &spec.name,
        probe.backend.clone(),
        batching.max_batch_size,
        Duration::from_micros(batching.max_wait_micros),
        batching.max_concurrent_requests.max(1),
        demand,
    );
    Ok(LoadedModel { batcher, ..probe })
}

/// Fetches the artifact (checking its sha256) and builds the backend: an op the runtime does not
/// implement fails here, naming the node and the op.
pub async fn build_backend(
    spec: &ServedModel,
    cache_dir: &Path,
    factory: &BackendFactory,
) -> Result<Arc<dyn ModelBackend>, String> {
    let bytes = crate::fetch::fetch_verified(&spec.uri, &spec.sha256, cache_dir).await?;
    let f = factory.clone();
    tokio::task::spawn_blocking(move || f(&bytes))
        .await
        .map_err(|e| format!("loader panicked: {e}"))?
        .map_err(|e| format!("loading {}: {e}", flywheel_storage::redact(&spec.uri)))
}

/// Resolves the output spec and checks the input spec against the model: a model that cannot
/// serve with this contract fails here, naming the output or dimension. The result runs one
/// item at a time (for the warm-up and verification probes).
pub fn plan(spec: &ServedModel, backend: Arc<dyn ModelBackend>) -> Result<LoadedModel, String> {
    let outputs = OutputPlan::new(&spec.output, &spec.input, &spec.labels, backend.outputs(), |i| backend.output_op(i))
        .map_err(|e| format!("the output spec does not fit the model: {e}"))?;
    let probe = LoadedModel {
        spec: spec.clone(),
        backend: backend.clone(),
        outputs,
        batcher: Batcher::spawn(&spec.name, backend, 1, Duration::ZERO, 1, Default::default()),
        loaded_at: chrono::Utc::now(),
    };
    check_input(&probe)?;
    Ok(probe)
}

/// One real run through the model and the decoder proves the shapes line up before the model
/// may replace the one serving.
pub async fn warm_up(m: &LoadedModel) -> Result<(), String> {
    let shape = m.input_shape(1);
    let zeros = TensorF32::new(shape.clone(), vec![0.0; shape.iter().product()]).map_err(|e| e.to_string())?;
    let b = m.backend.clone();
    let outs = tokio::task::spawn_blocking(move || b.run(&zeros))
        .await
        .map_err(|e| format!("warm-up panicked: {e}"))?
        .map_err(|e| format!("warm-up run failed: {e}"))?;
    let inv = InverseTransform::identity(m.spec.input.width, m.spec.input.height);
    m.outputs
        .decode(&outs, f32::INFINITY, &inv)
        .map_err(|e| format!("the outputs do not fit the {:?} decoder: {}", m.spec.output.decoder, e.detail()))?;
    Ok(())
}

fn check_input(m: &LoadedModel) -> Result<(), String> {
    let info = m.backend.input();
    let want = m.input_shape(1);
    let dims = |s: &[Option<usize>]| {
        let d: Vec<String> = s.iter().map(|d| d.map_or("?".to_string(), |n| n.to_string())).collect();
        format!("[{}]", d.join(", "))
    };
    let spec = &m.spec.input;
    let described = format!(
        "the input spec describes {want:?} ({:?}, {} channels, {}x{})",
        spec.layout, spec.channels, spec.width, spec.height
    );
    if info.shape.len() != want.len() {
        return Err(format!(
            "model input {:?} has rank {} ({}); {described}",
            info.name,
            info.shape.len(),
            dims(&info.shape)
        ));
    }
    for (k, (have, wanted)) in info.shape.iter().zip(&want).enumerate().skip(1) {
        if let Some(h) = have
            && h != wanted
        {
            return Err(format!(
                "model input {:?} is {} but {described}: dimension {k} is {h}, not {wanted}; set input.layout, \
                 input.channels, input.width and input.height to the graph's",
                info.name,
                dims(&info.shape)
            ));
        }
    }
    Ok(())
}
