//! `POST /v1/predict`: PNG/JPEG bytes in (one image as the body, or a batch as
//! `{"images": ["<base64>", ...]}`), shapes out, with the confidence threshold applied.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use base64::Engine;
use serde::Deserialize;

use crate::error::ServerError;
use crate::predictor::Predictor;
use crate::preprocess::{ImageInput, MAX_REQUEST_PIXELS, decode_image, image_pixels};
use crate::state::AppState;

/// Images per request at most.
pub const MAX_IMAGES: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Batch {
    images: Vec<String>,
}

pub async fn predict(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<serde_json::Value>, ServerError> {
    let predictor = Predictor::admit(&state, &headers)?;
    let body = super::read_body(body).await?;
    if body.is_empty() {
        return Err(ServerError::bad_request("empty body: send PNG/JPEG bytes or {\"images\": [base64...]}"));
    }
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let raw: Vec<Bytes> = if is_json {
        let batch: Batch =
            serde_json::from_slice(&body).map_err(|e| ServerError::bad_request(format!("invalid JSON batch: {e}")))?;
        if batch.images.is_empty() || batch.images.len() > MAX_IMAGES {
            return Err(ServerError::bad_request(format!("a batch holds 1 to {MAX_IMAGES} images")));
        }
        batch
            .images
            .iter()
            .enumerate()
            .map(|(i, s)| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map(Bytes::from)
                    .map_err(|e| ServerError::bad_request(format!("images[{i}] is not base64: {e}")))
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![body]
    };
    let name = move |i: usize, m: String| if is_json { format!("images[{i}]: {m}") } else { m };
    // Pixels are what decoding costs: bounded per request (413) and over the server (429),
    // read from the headers before anything is decoded.
    let mut pixels = 0u64;
    for (i, bytes) in raw.iter().enumerate() {
        pixels += image_pixels(bytes).map_err(|e| match e {
            ServerError::BadRequest(m) => ServerError::BadRequest(name(i, m)),
            ServerError::UnsupportedMediaType(m) => ServerError::UnsupportedMediaType(name(i, m)),
            e => e,
        })?;
    }
    if pixels > MAX_REQUEST_PIXELS {
        return Err(ServerError::PayloadTooLarge(format!(
            "the images hold {pixels} pixels; a request may decode at most {MAX_REQUEST_PIXELS}"
        )));
    }
    let _budget = state.decode_budget(pixels)?;
    // Decoding and resizing are CPU work: never on the I/O threads, which answer liveness.
    let decode_all = move || -> Result<Vec<ImageInput>, ServerError> {
        raw.into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let decoded = decode_image(&bytes).map_err(|e| match e {
                    ServerError::BadRequest(m) => ServerError::BadRequest(name(i, m)),
                    e => e,
                })?;
                Ok(ImageInput { bytes, decoded })
            })
            .collect()
    };
    let images = tokio::task::spawn_blocking(decode_all).await.map_err(|e| ServerError::Internal(e.to_string()))??;
    let preds = predictor.predict_images(images).await?;
    let serving = &predictor.serving;
    Ok(Json(serde_json::json!({
        "model": serving.champion.spec.name,
        "modelVersion": serving.champion.spec.version,
        "task": serving.champion.spec.task,
        "predictions": preds,
    })))
}
