//! Review API (bearer-token protected) and the review page.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{Html, IntoResponse, Response};

use crate::error::ServerError;
use crate::review::{ListQuery, ReviewStore, ReviewSubmission};
use crate::state::AppState;

const PAGE: &str = include_str!("review.html");

fn store(state: &AppState, headers: &HeaderMap) -> Result<Arc<ReviewStore>, ServerError> {
    let serving = state.current()?;
    serving.token.check(headers)?;
    serving
        .reviews
        .clone()
        .ok_or_else(|| ServerError::NotFound("review is not enabled: the serving config has no prediction log".into()))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let store = store(&state, &headers)?;
    let Query(q) = q.map_err(|e| ServerError::bad_request(e.body_text()))?;
    let (items, total) = store.list(&q).await?;
    let offset = q.offset.unwrap_or(0);
    let next = (offset + items.len() < total).then_some(offset + items.len());
    Ok(Json(serde_json::json!({ "items": items, "total": total, "nextOffset": next })))
}

pub async fn get_item(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let store = store(&state, &headers)?;
    let item = store.get(&id).await?;
    Ok(Json(serde_json::to_value(item).expect("json")))
}

pub async fn image(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ServerError> {
    let store = store(&state, &headers)?;
    let (data, mime): (Bytes, &str) = store.image(&id).await?;
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "private, no-store")], data).into_response())
}

pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<ReviewSubmission>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let store = store(&state, &headers)?;
    let Json(sub) = body.map_err(|e| ServerError::bad_request(e.body_text()))?;
    let review = store.submit(&id, sub, &state.metrics).await?;
    Ok(Json(serde_json::json!({ "status": "REVIEWED", "review": review })))
}

/// The page holds no data; it calls the API with the token the reviewer enters (kept in
/// sessionStorage, or given in the URL fragment, which browsers never send to the server).
pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
