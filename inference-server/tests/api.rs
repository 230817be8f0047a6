//! End-to-end tests of every API against a real server on a loopback port, serving real
//! ONNX models through the runtime.

mod common;

use std::time::Duration;

use base64::Engine;
use common::*;
use flywheel_inference_server::serving::*;
use serde_json::{Value, json};

const TOKEN: &str = "review-token-123";

fn with_log_and_review(mut cfg: ServingConfig, dir: &std::path::Path) -> ServingConfig {
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    cfg.prediction_log = Some(test_log(dir));
    cfg.feedback_dataset =
        Some(FeedbackDatasetConfig { uri: format!("file://{}/feedback", dir.display()), format: None, labels: vec![] });
    cfg.auth = AuthConfig { token_file: Some(dir.join("token").display().to_string()), require_for_inference: false };
    cfg
}

fn red_tensor_json(n: usize) -> Value {
    let mut data = Vec::with_capacity(n * 3 * 64 * 64);
    for _ in 0..n {
        data.extend(std::iter::repeat_n(1.0f32, 64 * 64));
        data.extend(std::iter::repeat_n(0.0f32, 2 * 64 * 64));
    }
    json!({"id": "req-1", "inputs": [{"name": "images", "shape": [n, 3, 64, 64], "datatype": "FP32", "data": data}]})
}

fn argmax(v: &[f64]) -> usize {
    v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0
}

async fn review_items(s: &TestServer, query: &str) -> Value {
    let r = s.client.get(s.url(&format!("/v1/review/items?{query}"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_oip_predict_shadow_log_and_review() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = with_log_and_review(config(classifier("colour", "colour_classifier.onnx", "v1")), dir.path());
    cfg.shadow = Some(classifier("colour-shadow", "colour_classifier_confused.onnx", "s1"));
    let s = TestServer::start_in(dir, &cfg).await;
    let root = s.dir.path().to_path_buf();

    // Health and metadata.
    assert_eq!(s.get_json("/v2/health/live").await["live"], true);
    assert_eq!(s.get_json("/v2").await["extensions"][0], "binary_tensor_data");
    let meta = s.get_json("/v2/models/colour").await;
    assert_eq!(meta["versions"], json!(["v1"]));
    assert_eq!(meta["inputs"][0], json!({"name": "images", "datatype": "FP32", "shape": [-1, 3, 64, 64]}));
    assert_eq!(s.get_json("/v2/models/colour/versions/v1/ready").await["ready"], true);
    assert_eq!(s.get_json("/v2/models/test-deployment").await["name"], "colour");
    let r = s.client.get(s.url("/v2/models/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("unknown model"));
    assert_eq!(s.client.get(s.url("/v2/models/colour/versions/v9")).send().await.unwrap().status(), 404);

    // OIP infer, JSON, batch of 2.
    let r = s.client.post(s.url("/v2/models/colour/infer")).json(&red_tensor_json(2)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["id"], "req-1");
    assert_eq!(body["model_version"], "v1");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 3]));
    let logits: Vec<f64> = serde_json::from_value(body["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(argmax(&logits[..3]), 0, "red image classified as red: {logits:?}");

    // OIP infer, binary extension both ways, and no Content-Type (as tritonclient sends it).
    let header = json!({"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "parameters": {"binary_data_size": 3 * 64 * 64 * 4}}],
                        "outputs": [{"name": "logits", "parameters": {"binary_data": true}}]})
    .to_string();
    let mut req = header.clone().into_bytes();
    for c in 0..3 {
        for _ in 0..64 * 64 {
            req.extend_from_slice(&(if c == 2 { 1.0f32 } else { 0.0 }).to_le_bytes());
        }
    }
    let r = s
        .client
        .post(s.url("/v2/models/colour/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let hlen: usize = r.headers()["inference-header-content-length"].to_str().unwrap().parse().unwrap();
    let bytes = r.bytes().await.unwrap();
    let h: Value = serde_json::from_slice(&bytes[..hlen]).unwrap();
    assert_eq!(h["outputs"][0]["parameters"]["binary_data_size"], 12);
    let out: Vec<f64> = bytes[hlen..].chunks(4).map(|b| f32::from_le_bytes(b.try_into().unwrap()) as f64).collect();
    assert_eq!(argmax(&out), 2, "blue image classified as blue: {out:?}");

    // /v1/predict: PNG, JPEG, and a base64 batch.
    let red = png(40, 30, [250, 10, 10], None);
    let r: Value = s
        .client
        .post(s.url("/v1/predict"))
        .header("content-type", "image/png")
        .body(red.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["predictions"][0]["shapes"][0]["label"], "red");
    assert_eq!(r["predictions"][0]["width"], 40);
    let r: Value =
        s.client.post(s.url("/v1/predict")).body(jpeg(32, 32, [0, 0, 255])).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["predictions"][0]["shapes"][0]["label"], "blue");
    let b64 = |v: &[u8]| base64::engine::general_purpose::STANDARD.encode(v);
    let batch = json!({"images": [b64(&png(8, 8, [0, 255, 0], None)), b64(&png(8, 8, [255, 0, 0], None))]});
    let r: Value = s.client.post(s.url("/v1/predict")).json(&batch).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["predictions"][0]["shapes"][0]["label"], "green");
    assert_eq!(r["predictions"][1]["shapes"][0]["label"], "red");
    // Threshold: softmax confidences below 0.25 are dropped, so at most the top class of a
    // saturated colour remains.
    assert_eq!(r["predictions"][0]["shapes"].as_array().unwrap().len(), 1);

    // Review: authentication.
    assert_eq!(s.client.get(s.url("/v1/review/items")).send().await.unwrap().status(), 401);
    assert_eq!(s.client.get(s.url("/v1/review/items")).bearer_auth("wrong").send().await.unwrap().status(), 401);

    // The four image predictions reach the log (the two tensor requests are not reviewable).
    wait_until("4 reviewable predictions", || async { review_items(&s, "status=all").await["total"] == 4 }).await;
    // The shadow's answers reach the log too (it calls red "green").
    wait_until("shadow outputs logged", || async {
        let v = review_items(&s, "status=all").await;
        v["items"].as_array().unwrap().iter().all(|i| i["shadow"].is_object())
    })
    .await;
    let list = review_items(&s, "").await;
    let items = list["items"].as_array().unwrap();
    // Disagreements come first: the shadow swaps red and green, so only blue agrees.
    let flags: Vec<bool> = items.iter().map(|i| i["disagreement"].as_bool().unwrap()).collect();
    assert_eq!(flags, vec![true, true, true, false]);
    assert_eq!(items[3]["champion"]["shapes"][0]["label"], "blue");
    let red_logged = items.iter().find(|i| i["champion"]["shapes"][0]["label"] == "red").unwrap();
    assert_eq!(red_logged["shadow"]["shapes"][0]["label"], "green");
    // Filters and paging.
    assert_eq!(review_items(&s, "label=blue").await["total"], 1);
    assert_eq!(review_items(&s, "disagreement=true").await["total"], 3);
    let page = review_items(&s, "limit=3").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 3);
    assert_eq!(page["nextOffset"], 3);
    assert_eq!(review_items(&s, "limit=3&offset=3").await["items"].as_array().unwrap().len(), 1);
    let r = s.client.get(s.url("/v1/review/items?status=bogus")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // Get one with its image: the logged bytes are the bytes sent.
    let red_item = items.iter().find(|i| i["width"] == 40).expect("the 40x30 red image");
    let id = red_item["id"].as_str().unwrap().to_string();
    let img = s.client.get(s.url(&format!("/v1/review/items/{id}/image"))).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(img.headers()["content-type"], "image/png");
    assert_eq!(img.bytes().await.unwrap().as_ref(), red.as_slice());

    // Accept, exactly once.
    let submit = |id: String, body: Value| {
        let (c, url) = (s.client.clone(), s.url(&format!("/v1/review/items/{id}")));
        async move { c.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap() }
    };
    let r = submit(id.clone(), json!({"decision": "accept"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "REVIEWED");
    assert_eq!(submit(id.clone(), json!({"decision": "accept"})).await.status(), 409);
    assert!(root.join(format!("feedback/red/{id}.png")).exists());
    assert!(root.join(format!("log/reviews/{id}.json")).exists());

    // Correct another: unknown labels are refused, a known one is written under its folder.
    let blue_id = review_items(&s, "label=blue").await["items"][0]["id"].as_str().unwrap().to_string();
    let r = submit(
        blue_id.clone(),
        json!({"decision": "correct", "shapes": [{"label": "purple", "classId": 0, "confidence": 1.0}]}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("unknown label"));
    let r = submit(
        blue_id.clone(),
        json!({"decision": "correct", "shapes": [{"label": "green", "classId": 1, "confidence": 1.0}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert!(root.join(format!("feedback/green/{blue_id}.jpg")).exists());
    assert_eq!(submit("no-such-id".into(), json!({"decision": "accept"})).await.status(), 404);
    assert_eq!(review_items(&s, "status=reviewed").await["total"], 2);

    // Metrics.
    let m = s.metrics().await;
    assert!(
        metric_value(&m, "flywheel_inference_duration_seconds_count", &["role=\"champion\"", "model_version=\"v1\""])
            .unwrap()
            >= 5.0
    );
    wait_until("shadow latency", || async {
        metric_value(&s.metrics().await, "flywheel_inference_duration_seconds_count", &["role=\"shadow\""])
            .is_some_and(|v| v >= 4.0)
    })
    .await;
    assert!(metric_value(&m, "flywheel_shapes_total", &["role=\"champion\"", "class=\"red\""]).unwrap() >= 3.0);
    assert_eq!(metric_value(&m, "flywheel_model_info", &["role=\"shadow\"", "model_version=\"s1\""]), Some(1.0));
    // Champion: red accepted (right), blue corrected to green (wrong) → 0.5. The shadow said
    // green for red and blue for blue: wrong twice.
    assert_eq!(metric_value(&m, "flywheel_reviewed_accuracy", &["role=\"champion\""]), Some(0.5));
    assert_eq!(metric_value(&m, "flywheel_reviewed_accuracy", &["role=\"shadow\""]), Some(0.0));
    assert_eq!(metric_value(&m, "flywheel_reviewed_samples", &[]), Some(2.0));
    assert!(
        metric_value(&m, "flywheel_http_requests_total", &["endpoint=\"/v1/predict\"", "code=\"200\""]).unwrap() >= 3.0
    );

    // /status.
    let st = s.get_json("/status").await;
    assert_eq!(st["champion"]["version"], "v1");
    assert_eq!(st["shadow"]["name"], "colour-shadow");
    assert_eq!(st["reload"]["errors"], json!([]));
    // The quality summary the operator's promotion gate reads.
    assert_eq!(st["quality"], json!({"metric": "accuracy", "reviewedSamples": 2, "champion": 0.5, "shadow": 0.0}));

    // A new server on the same log sees the reviews: still exactly once.
    let s2 = TestServer::start(&cfg).await;
    assert_eq!(review_items(&s2, "status=reviewed").await["total"], 2);
    let r = s2
        .client
        .post(s2.url(&format!("/v1/review/items/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({"decision": "accept"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detection_letterbox_boxes_and_coco_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = with_log_and_review(config(detector("squares", "d1")), dir.path());
    let s = TestServer::start_in(dir, &cfg).await;
    let root = s.dir.path().to_path_buf();

    // 128x64 image, letterboxed to 64x64 (scale 0.5, 16 px bands): the red square at
    // (32, 16) size 16 falls exactly on one 8x8 cell of the model.
    let img = png(128, 64, [0, 0, 0], Some((32, 16, 16, [255, 0, 0])));
    let r: Value = s.client.post(s.url("/v1/predict")).body(img).send().await.unwrap().json().await.unwrap();
    let shapes = r["predictions"][0]["shapes"].as_array().unwrap().clone();
    assert_eq!(shapes.len(), 1, "{shapes:?}");
    assert_eq!(shapes[0]["label"], "red");
    let b: Vec<f64> = serde_json::from_value(shapes[0]["box"].clone()).unwrap();
    for (got, want) in b.iter().zip([32.0, 16.0, 48.0, 32.0]) {
        assert!((got - want).abs() < 0.5, "box {b:?}");
    }
    assert!(shapes[0]["confidence"].as_f64().unwrap() > 0.9);

    // An empty image: no shapes; it sorts first for review (lowest confidence).
    let r: Value = s
        .client
        .post(s.url("/v1/predict"))
        .body(png(64, 64, [0, 0, 0], None))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["predictions"][0]["shapes"], json!([]));

    wait_until("2 logged", || async { review_items(&s, "").await["total"] == 2 }).await;
    let items = review_items(&s, "").await;
    assert_eq!(items["items"][0]["minConfidence"], 0.0);
    let square_id = items["items"][1]["id"].as_str().unwrap().to_string();

    // Correct: a box outside the image is refused; a good one goes to COCO.
    let post = |body: Value| {
        let (c, url) = (s.client.clone(), s.url(&format!("/v1/review/items/{square_id}")));
        async move { c.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap() }
    };
    let r = post(json!({"decision": "correct", "shapes": [{"label": "red", "classId": 0, "confidence": 1, "box": [0, 0, 500, 10]}]})).await;
    assert_eq!(r.status(), 400);
    let r = post(json!({"decision": "correct", "shapes": [
        {"label": "red", "classId": 0, "confidence": 1, "box": [32, 16, 48, 32]},
        {"label": "blue", "classId": 1, "confidence": 1, "box": [100, 40, 120, 60]}]}))
    .await;
    assert_eq!(r.status(), 200);
    // The sample's own COCO document, next to its image; no shared index is written.
    assert!(!root.join("feedback/annotations.json").exists());
    let sample = root.join(format!("feedback/annotations/{square_id}.json"));
    let coco: Value = serde_json::from_slice(&std::fs::read(sample).unwrap()).unwrap();
    assert_eq!(coco["images"].as_array().unwrap().len(), 1);
    assert_eq!(coco["images"][0]["width"], 128);
    assert_eq!(coco["annotations"].as_array().unwrap().len(), 2);
    assert_eq!(coco["annotations"][0]["bbox"], json!([32.0, 16.0, 16.0, 16.0]));
    assert_eq!(coco["categories"][0]["name"], "red");
    let file = coco["images"][0]["file_name"].as_str().unwrap();
    assert!(root.join("feedback").join(file).exists());

    let m = s.metrics().await;
    // One of two true boxes found with IoU 1 → AP(red)=1, AP(blue)=0 → mAP 0.5.
    assert_eq!(metric_value(&m, "flywheel_reviewed_map50", &["role=\"champion\""]), Some(0.5));
    // Box centre (40, 24) of 128x64 → row 3, col 2 of the 8x8 grid.
    assert_eq!(metric_value(&m, "flywheel_box_centres_total", &["row=\"3\"", "col=\"2\""]), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_swaps_good_models_and_keeps_serving_on_bad_ones() {
    let cfg = config(classifier("colour", "colour_classifier.onnx", "v1"));
    let s = TestServer::start(&cfg).await;
    let red = png(16, 16, [255, 0, 0], None);
    let predict = || {
        let (c, url, body) = (s.client.clone(), s.url("/v1/predict"), red.clone());
        async move { c.post(url).body(body).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    assert_eq!(predict().await["predictions"][0]["shapes"][0]["label"], "red");

    // Wrong digest: refused, reported, old model keeps serving.
    let mut bad = cfg.clone();
    bad.champion.version = "v2".into();
    bad.champion.sha256 = "0".repeat(64);
    write_config(&s.config_path, &bad);
    wait_until("load failure reported", || async {
        !s.get_json("/status").await["reload"]["errors"].as_array().unwrap().is_empty()
    })
    .await;
    let st = s.get_json("/status").await;
    assert!(st["reload"]["errors"][0].as_str().unwrap().contains("sha256 mismatch"), "{st}");
    assert_eq!(st["champion"]["version"], "v1");
    assert!(
        metric_value(&s.metrics().await, "flywheel_model_load_failures_total", &["role=\"champion\""]).unwrap() >= 1.0
    );
    assert_eq!(predict().await["modelVersion"], "v1");

    // Not an ONNX file (right digest of wrong bytes): refused at load.
    let junk = s.dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a model").unwrap();
    let mut junk_cfg = cfg.clone();
    junk_cfg.champion.version = "v3".into();
    junk_cfg.champion.uri = format!("file://{}", junk.display());
    junk_cfg.champion.sha256 = flywheel_inference_server::fetch::sha256_hex(b"not a model");
    write_config(&s.config_path, &junk_cfg);
    wait_until("junk refused", || async {
        s.get_json("/status").await["reload"]["errors"][0].as_str().is_some_and(|e| e.contains("v3"))
    })
    .await;
    assert_eq!(predict().await["modelVersion"], "v1");

    // Invalid YAML: reported, old config keeps serving.
    std::fs::write(&s.config_path, "deployment: [").unwrap();
    wait_until("yaml error", || async {
        s.get_json("/status").await["reload"]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("invalid serving config"))
    })
    .await;

    // A good new model: swapped in.
    let mut good = cfg.clone();
    good.champion = classifier("colour", "colour_classifier_confused.onnx", "v4");
    write_config(&s.config_path, &good);
    wait_until("v4 serving", || async { s.get_json("/v2/models/colour").await["versions"][0] == "v4" }).await;
    assert_eq!(predict().await["predictions"][0]["shapes"][0]["label"], "green");
    assert_eq!(s.get_json("/status").await["reload"]["errors"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_with_429() {
    let mut champion = classifier("cnn", "cnn64.onnx", "b1");
    champion.labels = vec![];
    champion.output = OutputSpec { decoder: Decoder::Logits, top_k: Some(1), ..Default::default() };
    let mut cfg = config(champion);
    cfg.batching.max_concurrent_requests = 1;
    let s = TestServer::start(&cfg).await;
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(256, 256, [10, 200, 30], None));
    let batch = json!({"images": vec![b64; 32]});
    let mut saw_429 = false;
    for _round in 0..20 {
        let reqs = (0..16).map(|_| s.client.post(s.url("/v1/predict")).json(&batch).send());
        for r in futures::future::join_all(reqs).await {
            let r = r.unwrap();
            match r.status().as_u16() {
                200 => {}
                429 => {
                    assert!(r.json::<Value>().await.unwrap()["error"].as_str().unwrap().contains("overloaded"));
                    saw_429 = true;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        if saw_429 {
            break;
        }
    }
    assert!(saw_429, "16 concurrent requests against a limit of 1 never got 429");
    assert!(metric_value(&s.metrics().await, "flywheel_rejected_requests_total", &[]).unwrap() >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_and_outlier_metrics_against_the_reference() {
    let dir = tempfile::tempdir().unwrap();
    // Reference: dark images (brightness 0..0.2).
    let reference = ReferenceStatistics {
        version: 1,
        sample_count: 200,
        features: vec![FeatureDistribution {
            name: "brightness".into(),
            sorted_values: (0..200).map(|i| i as f64 / 1000.0).collect(),
        }],
        image_statistics: Some(MultivariateReference {
            features: vec!["brightness".into(), "contrast".into()],
            mean: vec![0.1, 0.05],
            covariance: vec![vec![0.003, 0.0], vec![0.0, 0.001]],
        }),
    };
    let path = dir.path().join("reference.json");
    std::fs::write(&path, serde_json::to_vec(&reference).unwrap()).unwrap();
    let mut cfg = config(classifier("colour", "colour_classifier.onnx", "v1"));
    cfg.reference_statistics_uri = Some(format!("file://{}", path.display()));
    let s = TestServer::start_in(dir, &cfg).await;
    // Before enough traffic: no KS sample.
    assert!(metric_value(&s.metrics().await, "flywheel_drift_ks", &["brightness"]).is_none());
    for _ in 0..40 {
        let r = s.client.post(s.url("/v1/predict")).body(png(16, 16, [240, 240, 240], None)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    let m = s.metrics().await;
    assert_eq!(metric_value(&m, "flywheel_drift_ks", &["feature=\"brightness\""]), Some(1.0));
    // (0.94 - 0.1) / sqrt(0.003) ≈ 15.3 standard deviations away.
    let score = metric_value(&m, "flywheel_outlier_score", &[]).unwrap();
    assert!(score > 10.0, "outlier score {score}");
    assert_eq!(s.get_json("/status").await["driftMonitoring"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_can_require_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = with_log_and_review(config(classifier("colour", "colour_classifier.onnx", "v1")), dir.path());
    cfg.auth.require_for_inference = true;
    let s = TestServer::start_in(dir, &cfg).await;
    let img = png(8, 8, [255, 0, 0], None);
    assert_eq!(s.client.post(s.url("/v1/predict")).body(img.clone()).send().await.unwrap().status(), 401);
    assert_eq!(
        s.client.post(s.url("/v2/models/colour/infer")).json(&red_tensor_json(1)).send().await.unwrap().status(),
        401
    );
    let r = s.client.post(s.url("/v1/predict")).bearer_auth(TOKEN).body(img).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = Duration::ZERO;
}

/// With a review service configured the server keeps no review index and writes no sample: its
/// review API and page answer 308 to the same path and query on the service, and predictions
/// are still logged for the service to ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_requests_go_to_the_review_service() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = with_log_and_review(config(classifier("colour", "colour_classifier.onnx", "v1")), dir.path());
    cfg.feedback_dataset = None;
    cfg.review_service = Some(ReviewServiceConfig { url: "http://loop-review.ns.svc:8090/".into() });
    let s = TestServer::start_in(dir, &cfg).await;
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (method, path) in [
        (reqwest::Method::GET, "/v1/review/items?status=all&label=red"),
        (reqwest::Method::POST, "/v1/review/items/abc"),
        (reqwest::Method::GET, "/v1/review/items/abc/image"),
        (reqwest::Method::GET, "/review"),
    ] {
        let r = client.request(method, s.url(path)).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(r.status(), 308, "{path}");
        assert_eq!(r.headers()["location"], format!("http://loop-review.ns.svc:8090{path}").as_str());
    }
    let r = s.client.post(s.url("/v1/predict")).body(png(8, 8, [255, 0, 0], None)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.client.get(s.url("/v2/health/live")).send().await.unwrap().status(), 200);
    assert!(!s.dir.path().join("feedback").exists(), "the server writes no feedback sample");
}
