//! Review API (bearer-token protected) and the review page.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};

use crate::error::ServerError;
use crate::review::{ListQuery, ReviewStore, ReviewSubmission};
use crate::state::AppState;

const PAGE: &str = include_str!("review.html");

/// With a review service configured, the review API and page live there: a 308 (method and
/// body kept) to the same path and query on the service.
pub async fn to_review_service(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let target = state.current().ok().and_then(|s| s.config.review_service.as_ref().map(|r| r.url.clone()));
    match target {
        Some(base) => {
            let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
            let location = format!("{}{path}", base.trim_end_matches('/'));
            match HeaderValue::from_str(&location) {
                Ok(location) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response(),
                Err(_) => {
                    ServerError::Internal(format!("review service URL {base:?} is not a valid header")).into_response()
                }
            }
        }
        None => next.run(req).await,
    }
}

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
