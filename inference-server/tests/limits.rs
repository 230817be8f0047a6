//! Requests that would make the server decode or hold far more than they send are refused
//! before the work: a batch of small files that declare huge images, an OIP request with more
//! items than any batch, a review with tens of thousands of boxes.

mod common;

use base64::Engine;
use common::*;
use serde_json::{Value, json};

async fn error_of(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    (status, body["error"].as_str().unwrap_or_default().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_pixels_and_oip_batches_are_bounded_per_request() {
    let s = TestServer::start(&config(classifier("colour", "colour_classifier.onnx", "v1"))).await;
    // Each PNG is a few hundred KB but declares 8192 x 8192 pixels (200 MB decoded).
    let bomb = base64::engine::general_purpose::STANDARD.encode(png(8192, 8192, [0, 0, 0], None));
    let r = s.client.post(s.url("/v1/predict")).json(&json!({"images": [bomb.clone(), bomb]})).send().await.unwrap();
    let (status, err) = error_of(r).await;
    assert_eq!(status, 413, "{err}");
    assert!(err.contains("pixels"), "{err}");
    // The server still answers, quickly.
    let t0 = std::time::Instant::now();
    assert_eq!(s.client.get(s.url("/v2/health/live")).send().await.unwrap().status(), 200);
    assert!(t0.elapsed() < std::time::Duration::from_secs(1));

    let n = 65;
    let req = json!({"inputs": [{"name": "images", "shape": [n, 3, 64, 64], "datatype": "FP32", "data": vec![0.0f32; n * 3 * 64 * 64]}]});
    let (status, err) =
        error_of(s.client.post(s.url("/v2/models/colour/infer")).json(&req).send().await.unwrap()).await;
    assert_eq!(status, 413, "{err}");
    assert!(err.contains("at most 64 items"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_axum_writes_itself_are_json_too() {
    let s = TestServer::start(&config(classifier("colour", "colour_classifier.onnx", "v1"))).await;
    let r = s.client.post(s.url("/v2/health/live")).send().await.unwrap();
    assert!(r.headers().contains_key("allow"));
    let (status, err) = error_of(r).await;
    assert_eq!((status, err.as_str()), (405, "method not allowed"));
    // %FF is not UTF-8: axum's own rejection, now in the documented shape.
    let (status, err) = error_of(s.client.get(s.url("/v2/models/%FF")).send().await.unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert!(!err.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_failed_at_the_first_apply_is_retried_and_reported_until_it_works() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.json");
    let mut cfg = config(classifier("colour", "colour_classifier.onnx", "v1"));
    cfg.reference_statistics_uri = Some(format!("file://{}", reference.display()));
    let s = TestServer::start_in(dir, &cfg).await;
    let status = || async { s.client.get(s.url("/status")).send().await.unwrap().json::<Value>().await.unwrap() };
    // The champion serves; the missing reference statistics are reported.
    let st = status().await;
    assert_eq!(st["driftMonitoring"], false);
    assert!(st["reload"]["errors"][0].as_str().unwrap().contains("reference statistics"), "{st}");
    // The profiling Job writes them later: the next retry picks them up, nothing else changed.
    let stats =
        json!({"version": 1, "sampleCount": 2, "features": [{"name": "brightness", "sortedValues": [0.1, 0.2]}]});
    std::fs::write(&reference, stats.to_string()).unwrap();
    wait_until("the reference statistics are loaded", || async {
        let st = status().await;
        st["driftMonitoring"] == true && st["reload"]["errors"].as_array().is_some_and(|e| e.is_empty())
    })
    .await;
}
