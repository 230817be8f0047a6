//! The HTTP surface: OIP v2, /v1/predict, review API and page, /metrics, /status.

mod admin;
mod oip;
pub mod oip_codec;
mod predict;
mod review;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::metrics::EndpointCode;
use crate::state::AppState;

/// Largest request body (a batch of images or a large tensor).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Reads a request body of at most [`MAX_BODY`] bytes (inference handlers read it only after
/// admission, so a rejected request never buffers its upload).
pub async fn read_body(body: axum::body::Body) -> Result<bytes::Bytes, crate::error::ServerError> {
    axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            || e.to_string().contains("length limit");
        if too_large {
            crate::error::ServerError::PayloadTooLarge(format!("the body is larger than {MAX_BODY} bytes"))
        } else {
            crate::error::ServerError::bad_request(format!("reading the body: {e}"))
        }
    })
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(oip::server_metadata))
        .route("/v2/health/live", get(oip::live))
        .route("/v2/health/ready", get(oip::ready))
        .route("/v2/models/{name}", get(oip::model_metadata))
        .route("/v2/models/{name}/versions/{version}", get(oip::model_metadata_version))
        .route("/v2/models/{name}/ready", get(oip::model_ready))
        .route("/v2/models/{name}/versions/{version}/ready", get(oip::model_ready_version))
        .route("/v2/models/{name}/infer", post(oip::infer))
        .route("/v2/models/{name}/versions/{version}/infer", post(oip::infer_version))
        .route("/v1/predict", post(predict::predict))
        .merge(
            Router::new()
                .route("/v1/review/items", get(review::list))
                .route("/v1/review/items/{id}", get(review::get_item).post(review::submit))
                .route("/v1/review/items/{id}/image", get(review::image))
                .route("/review", get(review::page))
                .route_layer(middleware::from_fn_with_state(state.clone(), review::to_review_service)),
        )
        .route("/metrics", get(admin::metrics))
        .route("/status", get(admin::status))
        .fallback(admin::not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

/// Every error answer is `{"error": "..."}`, including those axum writes itself (405 with an
/// empty body, a path that is not UTF-8 as text/plain); their headers (e.g. `Allow`) stay.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_lowercase() } else { text };
    let mut json = (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    for (name, value) in &parts.headers {
        if name != axum::http::header::CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
            json.headers_mut().insert(name, value.clone());
        }
    }
    json
}

/// Counts requests by route template (never the raw path, which may hold ids) and status.
async fn count_requests(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let endpoint =
        req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let resp = next.run(req).await;
    let code = resp.status();
    if code == axum::http::StatusCode::TOO_MANY_REQUESTS {
        state.metrics.rejected.inc();
    }
    state.metrics.http_requests.get_or_create(&EndpointCode { endpoint, code: code.as_u16().to_string() }).inc();
    resp
}
