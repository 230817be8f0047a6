//! The review API, on the same paths and with the same JSON as the inference server's, so its
//! review page works unchanged against the service. Bearer-token protected (the token is read
//! from a file, re-read every few seconds so a rotated Secret applies without a restart);
//! errors are `{"error": ...}`: 400 bad input, 401 no or wrong token, 404 unknown prediction,
//! 409 a second decision, 503 the database cannot be reached.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use flywheel_storage::StorageError;
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::service::{Service, ServiceError, Submission};
use crate::store::{Filter, Item, StoreError};

/// The inference server's review page (it calls the API paths below).
const PAGE: &str = include_str!("../../inference-server/src/http/review.html");

/// An API error: a status and the message of `{"error": ...}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.0.is_server_error() {
            tracing::warn!(status = %self.0, error = %self.1, "request failed");
        }
        let mut resp = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::AlreadyReviewed(_) => StatusCode::CONFLICT,
            StoreError::Database(_) | StoreError::Migrate(_) => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Corrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::BadRequest(m) => ApiError(StatusCode::BAD_REQUEST, m),
            ServiceError::Store(e) => e.into(),
            e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// When the token file was read, and the token it held.
type Cached = (Instant, Option<String>);

/// The bearer token, from a file re-read at most every two seconds.
#[derive(Clone, Default)]
pub struct Token {
    path: Option<PathBuf>,
    cache: Arc<Mutex<Option<Cached>>>,
}

impl Token {
    pub fn from_file(path: Option<PathBuf>) -> Self {
        Self { path, cache: Default::default() }
    }

    fn current(&self) -> Option<String> {
        let path = self.path.as_ref()?;
        let mut cache = self.cache.lock().expect("token cache");
        if let Some((at, tok)) = cache.as_ref()
            && at.elapsed() < Duration::from_secs(2)
        {
            return tok.clone();
        }
        let tok = std::fs::read_to_string(path).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        *cache = Some((Instant::now(), tok.clone()));
        tok
    }

    pub fn check(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.to_string());
        let expected = self
            .current()
            .ok_or_else(|| unauthorized("the review service has no bearer token configured (--token-file)"))?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .ok_or_else(|| unauthorized("missing bearer token"))?;
        if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(unauthorized("wrong bearer token"))
        }
    }
}

#[derive(Clone)]
struct AppState {
    service: Arc<Service>,
    token: Token,
}

pub fn router(service: Arc<Service>, token: Token) -> Router {
    Router::new()
        .route("/v1/review/items", get(list))
        .route("/v1/review/items/{id}", get(get_item).post(submit))
        .route("/v1/review/items/{id}/image", get(image))
        .route("/review", get(page))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(AppState { service, token })
}

/// The JSON of an item, as the inference server's API shows it.
async fn item_json(service: &Service, item: Item) -> Result<Value, ApiError> {
    let review = if item.reviewed {
        service.store.review(&item.record.id).await?.map(|(decision, shapes, time_ms)| {
            json!({
                "id": item.record.id,
                "decision": decision,
                "shapes": shapes,
                "time": Utc.timestamp_millis_opt(time_ms).single().unwrap_or_default(),
            })
        })
    } else {
        None
    };
    let mut v = serde_json::to_value(&item.record).expect("a record serialises");
    let obj = v.as_object_mut().expect("a record is an object");
    obj.insert("status".into(), json!(if item.reviewed { "REVIEWED" } else { "TO_REVIEW" }));
    obj.insert("disagreement".into(), json!(item.disagreement));
    obj.insert("minConfidence".into(), json!(item.min_confidence));
    if let Some(r) = review {
        obj.insert("review".into(), r);
    }
    Ok(v)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    label: Option<String>,
    max_confidence: Option<f32>,
    disagreement: Option<bool>,
    limit: Option<i64>,
    offset: Option<i64>,
}

async fn list(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    s.token.check(&headers)?;
    let Query(q) = q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let reviewed = match q.status.as_deref() {
        None | Some("toReview") | Some("TO_REVIEW") => Some(false),
        Some("reviewed") | Some("REVIEWED") => Some(true),
        Some("all") => None,
        Some(other) => {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("status must be toReview, reviewed or all, not {other:?}"),
            ));
        }
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError(StatusCode::BAD_REQUEST, "limit must be between 1 and 1000".into()));
    }
    let offset = q.offset.unwrap_or(0);
    if offset < 0 {
        return Err(ApiError(StatusCode::BAD_REQUEST, "offset must not be negative".into()));
    }
    let filter = Filter { reviewed, label: q.label, max_confidence: q.max_confidence, disagreement: q.disagreement };
    let (items, total) = s.service.store.list(&filter, limit, offset).await?;
    let n = items.len() as i64;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        out.push(item_json(&s.service, item).await?);
    }
    let next = (offset + n < total).then_some(offset + n);
    Ok(Json(json!({ "items": out, "total": total, "nextOffset": next })))
}

async fn get_item(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    s.token.check(&headers)?;
    let item = s.service.store.get(&id).await?;
    Ok(Json(item_json(&s.service, item).await?))
}

async fn image(State(s): State<AppState>, headers: HeaderMap, Path(id): Path<String>) -> Result<Response, ApiError> {
    s.token.check(&headers)?;
    let item = s.service.store.get(&id).await?;
    let path = item.record.image.clone().unwrap_or_default();
    let data = s.service.log.get(&path).await.map_err(|e| match e {
        StorageError::NotFound { .. } => {
            ApiError(StatusCode::NOT_FOUND, format!("image of {id:?} is no longer retained"))
        }
        e => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })?;
    let mime = if path.ends_with(".png") { "image/png" } else { "image/jpeg" };
    Ok(([(header::CONTENT_TYPE, mime), (header::CACHE_CONTROL, "private, no-store")], data).into_response())
}

async fn submit(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Submission>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    s.token.check(&headers)?;
    let Json(sub) = body.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let decision = sub.decision;
    let shapes = s.service.decide(&id, sub).await?;
    Ok(Json(json!({
        "status": "REVIEWED",
        "review": { "id": id, "decision": decision, "shapes": shapes, "time": Utc::now() },
    })))
}

/// The totals and the quality figures per (champion, shadow) pair; the operator's promotion
/// gate reads them here.
async fn status(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let st = s.service.status().await?;
    Ok(Json(json!({ "totals": st.totals, "quality": st.quality, "serving": st.serving })))
}

async fn metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    let st = s.service.status().await?;
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], crate::metrics::render(&st)).into_response())
}

/// The page holds no data; it calls the API with the token the reviewer enters.
async fn page() -> Html<&'static str> {
    Html(PAGE)
}
