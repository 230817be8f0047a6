//! /metrics, /status and the JSON 404.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;

use crate::error::ServerError;
use crate::state::AppState;

/// OpenMetrics when the scraper asks for it (Prometheus does), else the classic Prometheus
/// text format (what promtool and most tools parse).
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    state.refresh_drift_gauges();
    // The latest figure: a scrape never waits for reviews being scored.
    if let Some(serving) = state.serving.load_full()
        && let Some(reviews) = &serving.reviews
    {
        let q = reviews.latest_quality(&serving.quality_pair()).await;
        crate::review::export_quality(&q, serving.config.champion.task, &state.metrics);
    }
    let text = state.metrics.encode();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
    } else {
        (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
            crate::metrics::to_prometheus_text(&text),
        )
    }
}

pub async fn status(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let reload = state.status.lock().expect("status lock").clone();
    let serving = state.serving.load_full();
    let model = |m: &crate::models::LoadedModel| {
        serde_json::json!({
            "name": m.spec.name, "version": m.spec.version, "sha256": m.spec.sha256,
            "uri": flywheel_storage::redact(&m.spec.uri), "task": m.spec.task, "loadedAt": m.loaded_at,
        })
    };
    Json(serde_json::json!({
        "ready": serving.is_some(),
        "deployment": serving.as_ref().map(|s| s.config.deployment.clone()),
        "champion": serving.as_ref().map(|s| model(&s.champion)),
        "shadow": serving.as_ref().and_then(|s| s.shadow.as_ref().map(|m| model(m))),
        "confidenceThreshold": serving.as_ref().map(|s| s.config.confidence_threshold),
        "driftMonitoring": state.drift.lock().expect("drift lock").is_some(),
        "quality": match &serving {
            Some(s) => quality(s).await,
            None => None,
        },
        "reload": reload,
    }))
}

/// Champion and shadow quality on reviewed samples (mAP@0.5 or accuracy) of the models served
/// now, covering every review applied so far, as the operator's promotion gate reads it. None
/// without a prediction log to review.
async fn quality(serving: &crate::state::Serving) -> Option<crate::review::Quality> {
    Some(serving.reviews.as_ref()?.quality(&serving.quality_pair()).await)
}

pub async fn not_found() -> ServerError {
    ServerError::NotFound("no such endpoint".into())
}
