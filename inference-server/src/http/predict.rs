//! `POST /v1/predict`: PNG/JPEG bytes in (one image as the body, or a batch as
//! `{"images": ["<base64>", ...]}`), shapes out, with the confidence threshold applied.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, header};
use base64::Engine;
use serde::Deserialize;

use crate::error::ServerError;
use crate::predictor::Predictor;
use crate::preprocess::{ImageInput, decode_image};
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
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let predictor = Predictor::admit(&state, &headers)?;
    let body = body?;
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
    // Decoding is CPU work proportional to the image size: keep big images off the I/O threads.
    let large = raw.iter().map(Bytes::len).sum::<usize>() > 256 * 1024;
    let decode_all = move || -> Result<Vec<ImageInput>, ServerError> {
        raw.into_iter()
            .enumerate()
            .map(|(i, bytes)| {
                let decoded = decode_image(&bytes).map_err(|e| match e {
                    ServerError::BadRequest(m) if is_json => ServerError::BadRequest(format!("images[{i}]: {m}")),
                    e => e,
                })?;
                Ok(ImageInput { bytes, decoded })
            })
            .collect()
    };
    let images = if large {
        tokio::task::spawn_blocking(decode_all).await.map_err(|e| ServerError::Internal(e.to_string()))??
    } else {
        decode_all()?
    };
    let preds = predictor.predict_images(images).await?;
    let serving = &predictor.serving;
    Ok(Json(serde_json::json!({
        "model": serving.champion.spec.name,
        "modelVersion": serving.champion.spec.version,
        "task": serving.champion.spec.task,
        "predictions": preds,
    })))
}
