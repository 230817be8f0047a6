//! The prediction service both HTTP front ends call (`/v1/predict` with images, OIP with
//! tensors): admission (a model is loaded, the token when inference needs one, a concurrency
//! permit or 429), the champion run on the request path, and then one step after the champion
//! answered that hands metrics, drift, the shadow and the prediction log off without waiting.

use std::sync::Arc;

use axum::http::HeaderMap;
use tokio::sync::OwnedSemaphorePermit;

use crate::backend::TensorF32;
use crate::batcher::InFlight;
use crate::error::ServerError;
use crate::models::LoadedModel;
use crate::preprocess::{ImageInput, ImageStats, InverseTransform};
use crate::record::{ImagePrediction, LogItem, ModelOutput, PredictionRecord, image_ext, image_path};
use crate::shadow::{ShadowInput, ShadowJob};
use crate::state::{AppState, Serving};

/// Which served model a tensor request addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Champion,
    Shadow,
}

/// One admitted request: the serving snapshot it runs against for its whole life, and the
/// permit and in-flight mark it holds until it is answered.
pub struct Predictor {
    state: Arc<AppState>,
    pub serving: Arc<Serving>,
    _permit: OwnedSemaphorePermit,
    _in_flight: InFlight,
}

impl Predictor {
    pub fn admit(state: &Arc<AppState>, headers: &HeaderMap) -> Result<Self, ServerError> {
        let serving = state.current()?;
        if serving.config.auth.require_for_inference {
            serving.token.check(headers)?;
        }
        let permit = serving.limiter.clone().try_acquire_owned().map_err(|_| ServerError::Overloaded)?;
        Ok(Self { state: state.clone(), serving, _permit: permit, _in_flight: InFlight::enter(&state.in_flight) })
    }

    /// Images in, the champion's shapes out (above the confidence threshold).
    pub async fn predict_images(&self, images: Vec<ImageInput>) -> Result<Vec<ImagePrediction>, ServerError> {
        let champion = &self.serving.champion;
        let (images, tensor, invs) = prepare_off_runtime(champion.clone(), images).await?;
        let shadow_tensor = self.shadow_takes_champion_input().then(|| tensor.clone());
        let predicted = champion.predict(tensor, &invs, self.serving.config.confidence_threshold).await?;
        let preds: Vec<ImagePrediction> = images
            .iter()
            .zip(predicted.shapes)
            .map(|(img, shapes)| ImagePrediction {
                id: uuid::Uuid::now_v7().to_string(),
                width: img.decoded.rgb.width(),
                height: img.decoded.rgb.height(),
                shapes,
            })
            .collect();
        let images = Arc::new(images);
        let shadow = match shadow_tensor {
            Some(t) => ShadowInput::Tensor(t, invs),
            None => ShadowInput::Images(images.clone()),
        };
        let answered = Answered { preds, latency: predicted.latency, shadow: Some(shadow), images: Some(images) };
        Ok(self.after_champion(answered))
    }

    /// A tensor in the model's input layout in, the model's raw outputs out. A champion
    /// request is decoded (tensor pixels are the image's) for metrics, the shadow and the log.
    pub async fn infer_tensor(
        &self,
        model: &LoadedModel,
        role: Role,
        tensor: TensorF32,
    ) -> Result<Vec<TensorF32>, ServerError> {
        let n = tensor.shape.first().copied().unwrap_or(1);
        let shadow_tensor = (role == Role::Champion && self.shadow_takes_champion_input()).then(|| tensor.clone());
        let t0 = std::time::Instant::now();
        let outs = model.infer(tensor).await?;
        let latency = t0.elapsed().as_secs_f64();
        if role == Role::Champion {
            let invs = vec![InverseTransform::identity(model.spec.input.width, model.spec.input.height); n];
            match model.decode(&outs, &invs, self.serving.config.confidence_threshold) {
                Ok(shapes) => {
                    let preds = shapes
                        .into_iter()
                        .zip(&invs)
                        .map(|(shapes, inv)| ImagePrediction {
                            id: uuid::Uuid::now_v7().to_string(),
                            width: inv.width,
                            height: inv.height,
                            shapes,
                        })
                        .collect();
                    let shadow = shadow_tensor.map(|t| ShadowInput::Tensor(t, invs));
                    self.after_champion(Answered { preds, latency, shadow, images: None });
                }
                // The raw outputs are the answer; only monitoring misses this request.
                Err(e) => tracing::debug!(error = %e, "tensor request outputs not decodable for monitoring"),
            }
        }
        Ok(outs)
    }

    fn shadow_takes_champion_input(&self) -> bool {
        self.serving.shadow.as_ref().is_some_and(|s| s.spec.input == self.serving.champion.spec.input)
    }

    /// Metrics, drift, the shadow and the log for what the champion answered; returns the
    /// predictions for the response.
    fn after_champion(&self, a: Answered) -> Vec<ImagePrediction> {
        let (state, serving) = (&self.state, &self.serving);
        state.metrics.observe_run("champion", &serving.champion.spec.version, a.latency, &a.preds);
        if let Some(images) = &a.images {
            observe_drift(state, images, &a.preds);
        }
        let records = log_items(serving, &a);
        let sampled = serving.shadow.is_some()
            && (serving.config.shadow_sample_rate >= 1.0 || rand::random::<f64>() < serving.config.shadow_sample_rate);
        let records = match (sampled, &serving.shadow_tx, a.shadow) {
            (true, Some(queue), Some(input)) => match queue.try_send(ShadowJob { input, records }) {
                Ok(()) => return a.preds,
                Err(job) => {
                    state.metrics.shadow_dropped.inc();
                    job.records
                }
            },
            _ => records,
        };
        if let Some(log) = &serving.log {
            log.submit(records);
        }
        a.preds
    }
}

/// `model.prepare(images)` (resizing is CPU work) on a blocking thread, never on the I/O threads
/// that answer liveness; hands the images back.
async fn prepare_off_runtime(
    model: Arc<LoadedModel>,
    images: Vec<ImageInput>,
) -> Result<(Vec<ImageInput>, TensorF32, Vec<InverseTransform>), ServerError> {
    let (images, prepared) = tokio::task::spawn_blocking(move || {
        let prepared = model.prepare(&images);
        (images, prepared)
    })
    .await
    .map_err(|e| ServerError::Internal(format!("pre-processing stopped: {e}")))?;
    let (tensor, invs) = prepared?;
    Ok((images, tensor, invs))
}

/// The champion's answer to one request, as the step after it consumes it.
struct Answered {
    preds: Vec<ImagePrediction>,
    latency: f64,
    /// What the shadow would run on; None when it cannot take this request's input.
    shadow: Option<ShadowInput>,
    /// The request's images (image requests only), for drift and the log.
    images: Option<Arc<Vec<ImageInput>>>,
}

/// One log item per prediction, `None` where the log did not sample it.
fn log_items(serving: &Serving, a: &Answered) -> Vec<Option<LogItem>> {
    let Some(log) = &serving.log else { return a.preds.iter().map(|_| None).collect() };
    let champion = &serving.champion.spec;
    let now = chrono::Utc::now();
    a.preds
        .iter()
        .enumerate()
        .map(|(k, p)| {
            if !log.sampled() {
                return None;
            }
            let image = a.images.as_ref().map(|images| &images[k]);
            Some(LogItem {
                record: PredictionRecord {
                    id: p.id.clone(),
                    time: now,
                    deployment: serving.config.deployment.clone(),
                    task: champion.task,
                    image: image.map(|img| image_path(&p.id, now, image_ext(img.decoded.format))),
                    width: p.width,
                    height: p.height,
                    champion: ModelOutput {
                        model: champion.name.clone(),
                        version: champion.version.clone(),
                        shapes: p.shapes.clone(),
                        latency_ms: a.latency * 1e3,
                    },
                    shadow: None,
                },
                image: image.map(|img| img.bytes.clone()),
            })
        })
        .collect()
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
