//! Open Inference Protocol v2 handlers (KServe / Triton compatible).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::oip_codec::{self, HEADER_LENGTH, InferResponse, OutputTensor};
use crate::backend::TensorF32;
use crate::error::ServerError;
use crate::models::LoadedModel;
use crate::predictor::{Predictor, Role};
use crate::state::{AppState, Serving};

pub async fn live() -> Json<serde_json::Value> {
    Json(json!({ "live": true }))
}

pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let ready = state.serving.load().is_some();
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(json!({ "ready": ready }))).into_response()
}

pub async fn server_metadata() -> Json<serde_json::Value> {
    Json(json!({
        "name": "flywheel-inference-server",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"],
    }))
}

/// Resolves a model name (champion, shadow, or the deployment name as an alias of the champion).
fn resolve(serving: &Serving, name: &str, version: Option<&str>) -> Result<(Arc<LoadedModel>, Role), ServerError> {
    let (model, role) = if name == serving.champion.spec.name || name == serving.config.deployment {
        (serving.champion.clone(), Role::Champion)
    } else if let Some(s) = serving.shadow.as_ref().filter(|s| s.spec.name == name) {
        (s.clone(), Role::Shadow)
    } else {
        return Err(ServerError::NotFound(format!("unknown model {name:?}")));
    };
    if let Some(v) = version
        && v != model.spec.version
    {
        return Err(ServerError::NotFound(format!(
            "model {name:?} has no version {v:?} (serving {:?})",
            model.spec.version
        )));
    }
    Ok((model, role))
}

fn metadata(model: &LoadedModel) -> serde_json::Value {
    let dims = |s: &[Option<usize>]| s.iter().map(|d| d.map(|v| v as i64).unwrap_or(-1)).collect::<Vec<_>>();
    let tensor =
        |t: &crate::backend::TensorInfo| json!({"name": t.name, "datatype": t.datatype, "shape": dims(&t.shape)});
    json!({
        "name": model.spec.name,
        "versions": [model.spec.version],
        "platform": "onnx",
        "inputs": [tensor(model.backend.input())],
        "outputs": model.backend.outputs().iter().map(tensor).collect::<Vec<_>>(),
    })
}

pub async fn model_metadata(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let s = state.current()?;
    Ok(Json(metadata(&resolve(&s, &name, None)?.0)))
}

pub async fn model_metadata_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let s = state.current()?;
    Ok(Json(metadata(&resolve(&s, &name, Some(&version))?.0)))
}

pub async fn model_ready(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let s = state.current()?;
    resolve(&s, &name, None)?;
    Ok(Json(json!({"name": name, "ready": true})))
}

pub async fn model_ready_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ServerError> {
    let s = state.current()?;
    resolve(&s, &name, Some(&version))?;
    Ok(Json(json!({"name": name, "ready": true})))
}

pub async fn infer(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ServerError> {
    run_infer(state, name, None, headers, body).await
}

pub async fn infer_version(
    State(state): State<Arc<AppState>>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ServerError> {
    run_infer(state, name, Some(version), headers, body).await
}

async fn run_infer(
    state: Arc<AppState>,
    name: String,
    version: Option<String>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ServerError> {
    let predictor = Predictor::admit(&state, &headers)?;
    let (model, role) = resolve(&predictor.serving, &name, version.as_deref())?;
    let body = super::read_body(body).await?;
    let header_len = match headers.get(HEADER_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| ServerError::bad_request("Inference-Header-Content-Length must be a byte count"))?,
        ),
    };
    let req = oip_codec::parse_request(&body, header_len)?;
    let max_batch = super::predict::MAX_IMAGES.max(predictor.serving.config.batching.max_batch_size);
    let tensor = input_tensor(&model, req.inputs, max_batch)?;

    // Which outputs, and which of them binary.
    let all_binary =
        req.parameters.as_ref().and_then(|p| p.get("binary_data_output")).and_then(|v| v.as_bool()).unwrap_or(false);
    let infos = model.backend.outputs().to_vec();
    let wanted: Vec<(usize, bool)> = match &req.outputs {
        None => (0..infos.len()).map(|i| (i, all_binary)).collect(),
        Some(list) => list
            .iter()
            .map(|o| {
                let i = infos
                    .iter()
                    .position(|t| t.name == o.name)
                    .ok_or_else(|| ServerError::bad_request(format!("unknown output {:?}", o.name)))?;
                let b = o
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("binary_data"))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(all_binary);
                Ok((i, b))
            })
            .collect::<Result<_, ServerError>>()?,
    };

    let outs = predictor.infer_tensor(&model, role, tensor).await?;

    let mut tensors = Vec::with_capacity(wanted.len());
    let mut data = Vec::with_capacity(wanted.len());
    let mut binary = Vec::with_capacity(wanted.len());
    for &(i, b) in &wanted {
        let out = outs.get(i).ok_or_else(|| ServerError::Backend(format!("model returned {} outputs", outs.len())))?;
        tensors.push(OutputTensor {
            name: infos[i].name.clone(),
            datatype: "FP32",
            shape: out.shape.clone(),
            parameters: None,
            data: None,
        });
        data.push(out.data.clone());
        binary.push(b);
    }
    let resp = InferResponse {
        model_name: model.spec.name.clone(),
        model_version: model.spec.version.clone(),
        id: req.id,
        outputs: tensors,
    };
    let (body, header) = oip_codec::encode_response(resp, data, &binary);
    let mut r = body.into_response();
    match header {
        Some(len) => {
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            r.headers_mut().insert(HEADER_LENGTH, HeaderValue::from(len));
        }
        None => {
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
    }
    Ok(r)
}

/// Validates the single image input against the model and builds the batch tensor.
/// `max_batch` bounds what one request may ask of the server (merging into model batches is
/// the batcher's business).
fn input_tensor(
    model: &LoadedModel,
    inputs: Vec<oip_codec::InferInput>,
    max_batch: usize,
) -> Result<TensorF32, ServerError> {
    let info = model.backend.input();
    let [input]: [oip_codec::InferInput; 1] = inputs.try_into().map_err(|v: Vec<_>| {
        ServerError::bad_request(format!("the model takes exactly one input ({:?}), got {}", info.name, v.len()))
    })?;
    if input.name != info.name {
        return Err(ServerError::bad_request(format!(
            "unknown input {:?}; the model's input is {:?}",
            input.name, info.name
        )));
    }
    let shape: Vec<usize> =
        input.shape.iter().map(|&d| usize::try_from(d).ok().filter(|&d| d > 0)).collect::<Option<_>>().ok_or_else(
            || ServerError::bad_request(format!("shape {:?} must have positive dimensions", input.shape)),
        )?;
    let expected = model.input_shape(shape.first().copied().unwrap_or(0));
    if shape.len() != expected.len() || shape[1..] != expected[1..] {
        return Err(ServerError::bad_request(format!(
            "input shape {:?} does not match the model's [-1, {:?}]",
            shape,
            &expected[1..]
        )));
    }
    if shape[0] > max_batch {
        return Err(ServerError::PayloadTooLarge(format!(
            "a request holds at most {max_batch} items; this one holds {}",
            shape[0]
        )));
    }
    if shape[0] > model.backend.max_batch() {
        return Err(ServerError::bad_request(format!(
            "batch {} exceeds the model's maximum {}",
            shape[0],
            model.backend.max_batch()
        )));
    }
    let data = input.data.map(|d| d.0).unwrap_or_default();
    TensorF32::new(shape, data).map_err(|e| ServerError::bad_request(e.to_string()))
}
