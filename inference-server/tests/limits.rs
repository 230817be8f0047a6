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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_answer_during_a_burst_of_the_largest_corrections() {
    const TOKEN: &str = "burst-token";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let mut cfg = config(detector("squares", "d1"));
    cfg.prediction_log = Some(test_log(dir.path()));
    cfg.feedback_dataset = Some(flywheel_inference_server::serving::FeedbackDatasetConfig {
        uri: format!("file://{}/feedback", dir.path().display()),
        format: None,
        labels: vec![],
    });
    cfg.auth.token_file = Some(dir.path().join("token").display().to_string());
    let s = TestServer::start_in(dir, &cfg).await;
    let predictions = 48;
    for i in 0..predictions {
        let img = png(64, 64, [0, 0, 0], Some((4 + i % 40, 8, 16, [255, 0, 0])));
        assert_eq!(s.client.post(s.url("/v1/predict")).body(img).send().await.unwrap().status(), 200);
    }
    let items = || async {
        let r = s.client.get(s.url("/v1/review/items?status=all&limit=1000")).bearer_auth(TOKEN).send().await.unwrap();
        r.json::<Value>().await.unwrap()
    };
    wait_until("every prediction is reviewable", || async { items().await["total"] == predictions }).await;
    let ids: Vec<String> =
        items().await["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_string()).collect();

    // The largest correction a review may hold: 1,000 boxes.
    let max = flywheel_inference_server::review::MAX_REVIEW_SHAPES;
    let shapes: Vec<Value> = (0..max)
        .map(|k| {
            let (x, y) = ((k % 60) as f32, ((k / 60) % 60) as f32);
            json!({"label": if k % 2 == 0 { "red" } else { "blue" }, "classId": k % 2, "confidence": 1.0, "box": [x, y, x + 4.0, y + 4.0]})
        })
        .collect();
    let too_many = [shapes.clone(), vec![shapes[0].clone()]].concat();
    let one_too_many = json!({"decision": "correct", "shapes": too_many});
    let r = s.client.post(s.url(&format!("/v1/review/items/{}", ids[0]))).bearer_auth(TOKEN).json(&one_too_many);
    let (status, err) = error_of(r.send().await.unwrap()).await;
    assert_eq!(status, 400, "{err}");
    assert!(err.contains("at most 1000 shapes"), "{err}");

    // Four reviewers at once, each id decided twice (the second is a 409), while a scraper reads
    // /metrics and the kubelet probes liveness.
    let correction = json!({"decision": "correct", "shapes": shapes});
    let started = std::time::Instant::now();
    let reviewers: Vec<_> = (0..4)
        .map(|r| {
            let (client, base, ids, body) = (s.client.clone(), s.url(""), ids.clone(), correction.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for id in ids.iter().skip(r % 2).step_by(2) {
                    let req = client.post(format!("{base}/v1/review/items/{id}")).bearer_auth(TOKEN).json(&body);
                    let r = req.send().await.unwrap();
                    let code = r.status().as_u16();
                    if code != 200 && code != 409 {
                        panic!("{code}: {}", r.text().await.unwrap());
                    }
                    statuses.push(code);
                }
                statuses
            })
        })
        .collect();
    let (mut scrapes, mut slowest) = (0, std::time::Duration::ZERO);
    while !reviewers.iter().all(|r| r.is_finished()) {
        let t0 = std::time::Instant::now();
        let text = s.metrics().await;
        assert!(text.contains("flywheel_model_info"), "{text}");
        assert_eq!(s.client.get(s.url("/v2/health/live")).send().await.unwrap().status(), 200);
        slowest = slowest.max(t0.elapsed());
        scrapes += 1;
    }
    let burst = started.elapsed();
    let mut statuses = Vec::new();
    for r in reviewers {
        statuses.extend(r.await.unwrap());
    }
    assert_eq!(statuses.iter().filter(|&&c| c == 200).count(), predictions as usize, "{statuses:?}");
    assert!(statuses.iter().all(|&c| c == 200 || c == 409), "{statuses:?}");
    eprintln!("{} reviews of {max} boxes in {burst:?}; {scrapes} scrapes, the slowest {slowest:?}", statuses.len());
    // A scrape never waits for the burst: before, each waited for the review lock.
    assert!(scrapes >= 2 && slowest * 4 < burst, "{scrapes} scrapes, the slowest {slowest:?}, burst {burst:?}");

    // The gate's figure covers every review; the scraped one catches up.
    let st = s.get_json("/status").await;
    assert_eq!(st["quality"]["reviewedSamples"], predictions, "{st}");
    wait_until("the scraped figure covers every review", || async {
        s.metrics().await.contains(&format!("flywheel_reviewed_samples {predictions}"))
    })
    .await;
}
