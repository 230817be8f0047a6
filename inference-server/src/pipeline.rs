//! The prediction path shared by `/v1/predict` and the OIP endpoint: champion inference on
//! the critical path; metrics, drift, shadow and logging handed off without waiting.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::backend::TensorF32;
use crate::error::ServerError;
use crate::metrics::RoleVersion;
use crate::models::LoadedModel;
use crate::postprocess::{self, Shape};
use crate::predlog::{self, LogItem, ModelOutput, PredictionRecord};
use crate::preprocess::{DecodedImage, ImageStats, InverseTransform, to_tensor};
use crate::serving::Task;
use crate::shadow::{ShadowInput, ShadowJob};
use crate::state::{AppState, Serving};

/// One request image: the original bytes (for the log) and the decoded pixels.
pub struct ImageInput {
    pub bytes: Bytes,
    pub decoded: DecodedImage,
}

#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImagePrediction {
    pub id: String,
    pub width: u32,
    pub height: u32,
    pub shapes: Vec<Shape>,
}

/// Builds the batch tensor of `images` for `model`.
pub fn images_to_batch(
    model: &LoadedModel,
    images: &[ImageInput],
) -> Result<(TensorF32, Vec<InverseTransform>), ServerError> {
    let mut data = Vec::new();
    let mut invs = Vec::with_capacity(images.len());
    for img in images {
        let (t, inv) = to_tensor(&img.decoded.rgb, &model.spec.input)?;
        data.extend_from_slice(&t);
        invs.push(inv);
    }
    let tensor =
        TensorF32::new(model.input_shape(images.len()), data).map_err(|e| ServerError::Internal(e.to_string()))?;
    Ok((tensor, invs))
}

/// Splits batch outputs into per-item outputs (each with batch dimension 1).
pub fn split_items(outs: &[TensorF32], n: usize) -> Result<Vec<Vec<TensorF32>>, ServerError> {
    let mut per: Vec<Vec<TensorF32>> = (0..n).map(|_| Vec::with_capacity(outs.len())).collect();
    for o in outs {
        if o.shape.first() != Some(&n) {
            return Err(ServerError::Backend(format!("output shape {:?} lacks the batch dimension {n}", o.shape)));
        }
        let item = o.item_len();
        for (k, slot) in per.iter_mut().enumerate() {
            let mut shape = o.shape.clone();
            shape[0] = 1;
            slot.push(TensorF32 { shape, data: o.data[k * item..(k + 1) * item].to_vec() });
        }
    }
    Ok(per)
}

/// Runs `model` and decodes every item. Returns the shapes and the latency in seconds.
pub async fn run_and_decode(
    model: &LoadedModel,
    tensor: TensorF32,
    invs: &[InverseTransform],
    threshold: f32,
) -> Result<(Vec<Vec<Shape>>, f64), ServerError> {
    let t0 = Instant::now();
    let outs = model.infer(tensor).await?;
    let per = split_items(&outs, invs.len())?;
    let shapes = per
        .iter()
        .zip(invs)
        .map(|(o, inv)| postprocess::decode(&model.spec.output, o, &model.spec.labels, threshold, inv))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((shapes, t0.elapsed().as_secs_f64()))
}

pub async fn predict_images(
    state: &Arc<AppState>,
    serving: &Arc<Serving>,
    images: Vec<ImageInput>,
) -> Result<Vec<ImagePrediction>, ServerError> {
    let champion = serving.champion.clone();
    let (tensor, invs) = images_to_batch(&champion, &images)?;
    let shadow_tensor = serving.shadow.as_ref().filter(|s| s.spec.input == champion.spec.input).map(|_| tensor.clone());
    let threshold = serving.config.confidence_threshold;
    let (shapes, latency) = run_and_decode(&champion, tensor, &invs, threshold).await?;
    let now = chrono::Utc::now();
    let preds: Vec<ImagePrediction> = images
        .iter()
        .zip(&shapes)
        .map(|(img, s)| ImagePrediction {
            id: uuid::Uuid::now_v7().to_string(),
            width: img.decoded.rgb.width(),
            height: img.decoded.rgb.height(),
            shapes: s.clone(),
        })
        .collect();
    observe(state, serving, "champion", &champion, latency, &preds);
    observe_drift(state, &images, &preds);

    let records: Vec<Option<LogItem>> = preds
        .iter()
        .zip(&images)
        .map(|(p, img)| {
            let log = serving.log.as_ref()?;
            if !log.sampled() {
                return None;
            }
            let ext = predlog::image_ext(img.decoded.format);
            Some(LogItem {
                record: PredictionRecord {
                    id: p.id.clone(),
                    time: now,
                    deployment: serving.config.deployment.clone(),
                    task: champion.spec.task,
                    image: Some(predlog::image_rel_path(&p.id, now, ext)),
                    width: p.width,
                    height: p.height,
                    champion: ModelOutput {
                        model: champion.spec.name.clone(),
                        version: champion.spec.version.clone(),
                        shapes: p.shapes.clone(),
                        latency_ms: latency * 1e3,
                    },
                    shadow: None,
                },
                image: Some(img.bytes.clone()),
            })
        })
        .collect();
    let input = match shadow_tensor {
        Some(t) => ShadowInput::Tensor(t, invs),
        None => ShadowInput::Images(Arc::new(images)),
    };
    hand_off(state, serving, input, records);
    Ok(preds)
}

/// Sends work to the shadow (sampled, dropped when its queue is full) or straight to the log.
pub fn hand_off(state: &Arc<AppState>, serving: &Arc<Serving>, input: ShadowInput, records: Vec<Option<LogItem>>) {
    let sampled = serving.shadow.is_some()
        && (serving.config.shadow_sample_rate >= 1.0 || rand::random::<f64>() < serving.config.shadow_sample_rate);
    let records = if let (true, Some(tx)) = (sampled, &serving.shadow_tx) {
        match tx.try_send(ShadowJob { input, records }) {
            Ok(()) => return,
            Err(e) => {
                state.metrics.shadow_dropped.inc();
                e.into_inner().records
            }
        }
    } else {
        records
    };
    submit_logs(state, serving, records);
}

pub fn submit_logs(state: &AppState, serving: &Serving, records: Vec<Option<LogItem>>) {
    if let Some(log) = &serving.log {
        for r in records.into_iter().flatten() {
            log.submit(r, &state.metrics);
        }
    }
}

pub fn observe(
    state: &AppState,
    serving: &Serving,
    role: &str,
    model: &LoadedModel,
    latency: f64,
    preds: &[ImagePrediction],
) {
    let m = &state.metrics;
    let labels = RoleVersion { role: role.into(), model_version: model.spec.version.clone() };
    m.request_duration.get_or_create(&labels).observe(latency);
    m.predictions.get_or_create(&labels).inc_by(preds.len() as u64);
    if role == "champion" {
        m.batch_size.observe(preds.len() as f64);
    }
    for p in preds {
        m.observe_shapes(role, &p.shapes, p.width, p.height);
    }
    let _ = serving;
}

fn observe_drift(state: &AppState, images: &[ImageInput], preds: &[ImagePrediction]) {
    let mut guard = state.drift.lock().expect("drift monitor poisoned");
    let Some(mon) = guard.as_mut() else { return };
    for (img, p) in images.iter().zip(preds) {
        let stats = ImageStats::compute(&img.decoded.rgb);
        let named = stats.named();
        for (name, v) in named {
            mon.observe(name, v);
        }
        if let Some(d) = mon.observe_outlier(&named) {
            state.metrics.outlier_distance.observe(d);
        }
        let area = (p.width as f64 * p.height as f64).max(1.0);
        for s in &p.shapes {
            mon.observe("confidence", s.confidence as f64);
            if let Some(b) = s.bbox {
                mon.observe("boxArea", ((b[2] - b[0]) as f64 * (b[3] - b[1]) as f64) / area);
            }
        }
    }
}

/// Publishes KS and outlier gauges (called before every scrape).
pub fn refresh_drift_gauges(state: &AppState) {
    let guard = state.drift.lock().expect("drift monitor poisoned");
    let Some(mon) = guard.as_ref() else { return };
    for (feature, d) in mon.ks() {
        state.metrics.drift_ks.get_or_create(&crate::metrics::FeatureLabel { feature }).set(d);
    }
    if let Some(s) = mon.mean_outlier_score() {
        state.metrics.outlier_score.set(s);
    }
}

/// The task of the champion (for callers that only need it).
pub fn task_of(serving: &Serving) -> Task {
    serving.champion.spec.task
}
