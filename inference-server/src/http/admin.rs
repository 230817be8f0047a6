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
    crate::pipeline::refresh_drift_gauges(&state);
    let text = state.metrics.encode();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::to_prometheus_text(&text))
    }
}

pub async fn status(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let reload = state.status.lock().expect("status lock").clone();
    let serving = state.serving.load_full();
    let model = |m: &crate::models::LoadedModel| {
        serde_json::json!({
            "name": m.spec.name, "version": m.spec.version, "sha256": m.spec.sha256,
            "uri": m.spec.uri, "task": m.spec.task, "loadedAt": m.loaded_at,
        })
    };
    Json(serde_json::json!({
        "ready": serving.is_some(),
        "deployment": serving.as_ref().map(|s| s.config.deployment.clone()),
        "champion": serving.as_ref().map(|s| model(&s.champion)),
        "shadow": serving.as_ref().and_then(|s| s.shadow.as_ref().map(|m| model(m))),
        "confidenceThreshold": serving.as_ref().map(|s| s.config.confidence_threshold),
        "driftMonitoring": state.drift.lock().expect("drift lock").is_some(),
        "quality": serving.as_ref().map(|s| quality(&state.metrics, s.config.champion.task)),
        "reload": reload,
    }))
}

/// Champion and shadow quality on reviewed samples (mAP@0.5 or accuracy), as the operator's
/// promotion gate reads it. A role without a score yet is null, never 0.
fn quality(metrics: &crate::metrics::Metrics, task: crate::serving::ServingTask) -> serde_json::Value {
    let (name, family) = match task {
        crate::serving::ServingTask::Detection => ("mAP50", &metrics.reviewed_map50),
        crate::serving::ServingTask::Classification => ("accuracy", &metrics.reviewed_accuracy),
    };
    let score = |role: &str| family.get(&crate::metrics::RoleLabel { role: role.into() }).map(|g| g.get());
    serde_json::json!({
        "metric": name,
        "reviewedSamples": metrics.reviewed_samples.get(),
        "champion": score("champion"),
        "shadow": score("shadow"),
    })
}

pub async fn not_found() -> ServerError {
    ServerError::NotFound("no such endpoint".into())
}
