//! One real S3 server (SeaweedFS) serves the model and receives the prediction log, the
//! review markers and the reviewed samples; retention deletes expired log objects there.
//! Alone in its test binary because it sets the AWS_* environment of the process.

mod common;

use common::*;
use flywheel_inference_server::serving::*;
use flywheel_storage::Location;
use flywheel_test_support::seaweed;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_serves_the_model_and_stores_log_reviews_and_feedback() {
    let weed = tokio::task::spawn_blocking(seaweed::Seaweed::start).await.unwrap();
    let w = std::sync::Arc::new(weed);
    let w2 = w.clone();
    tokio::task::spawn_blocking(move || w2.create_bucket("flywheel")).await.unwrap();
    for (k, v) in w.env() {
        // SAFETY: set before any other thread of this test binary reads the environment.
        unsafe { std::env::set_var(k, v) };
    }

    let model = std::fs::read(models_dir().join("colour_classifier.onnx")).unwrap();
    let bucket = Location::open("s3://flywheel").unwrap();
    bucket.put("models/colour.onnx", model.clone()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let token = "s3-review-token";
    std::fs::write(dir.path().join("token"), token).unwrap();
    let mut champion = classifier("colour", "colour_classifier.onnx", "v1");
    champion.uri = "s3://flywheel/models/colour.onnx".into();
    let mut cfg = config(champion);
    cfg.prediction_log = Some(PredictionLogConfig {
        uri: "s3://flywheel/log".into(),
        sample_rate: 1.0,
        retention_days: 30,
        flush_records: 4,
        flush_interval_ms: 20,
    });
    cfg.feedback_dataset =
        Some(FeedbackDatasetConfig { uri: "s3://flywheel/feedback".into(), format: None, labels: vec![] });
    cfg.auth.token_file = Some(dir.path().join("token").display().to_string());
    let s = TestServer::start_in(dir, &cfg).await;
    assert!(s.dir.path().join("cache/sha256").join(&cfg.champion.sha256).exists(), "model cached by digest");

    let red = png(20, 20, [255, 0, 0], None);
    let r: Value = s.client.post(s.url("/v1/predict")).body(red.clone()).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["predictions"][0]["shapes"][0]["label"], "red");
    let id = r["predictions"][0]["id"].as_str().unwrap().to_string();

    wait_until("prediction logged to S3", || async {
        let r = s.client.get(s.url("/v1/review/items")).bearer_auth(token).send().await.unwrap();
        r.json::<Value>().await.unwrap()["total"] == 1
    })
    .await;
    let img = s.client.get(s.url(&format!("/v1/review/items/{id}/image"))).bearer_auth(token).send().await.unwrap();
    assert_eq!(img.bytes().await.unwrap().as_ref(), red.as_slice());

    let submit = || {
        s.client
            .post(s.url(&format!("/v1/review/items/{id}")))
            .bearer_auth(token)
            .json(&json!({"decision": "accept"}))
            .send()
    };
    assert_eq!(submit().await.unwrap().status(), 200);
    assert_eq!(submit().await.unwrap().status(), 409);

    let log = Location::open("s3://flywheel/log").unwrap();
    let names: Vec<String> = log.list("").await.unwrap().into_iter().map(|(p, _)| p).collect();
    assert!(names.iter().any(|n| n.starts_with("images/") && n.ends_with(&format!("{id}.png"))), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("records/") && n.ends_with(".jsonl")), "{names:?}");
    assert!(names.contains(&format!("reviews/{id}.json")), "{names:?}");
    let feedback = Location::open("s3://flywheel/feedback").unwrap();
    assert_eq!(feedback.get(&format!("red/{id}.png")).await.unwrap().as_ref(), red.as_slice());

    // Create-only puts are honoured by the store, so a second writer cannot re-review.
    assert!(!log.put_if_absent(&format!("reviews/{id}.json"), bytes::Bytes::from_static(b"{}")).await.unwrap());

    // Retention: three days later with a one-day retention, images and records are gone,
    // reviews stay.
    let later = chrono::Utc::now() + chrono::Days::new(3);
    let deleted = flywheel_inference_server::predlog::delete_expired(&log, 1, later).await.unwrap();
    assert!(deleted >= 2);
    let names: Vec<String> = log.list("").await.unwrap().into_iter().map(|(p, _)| p).collect();
    assert_eq!(names, vec![format!("reviews/{id}.json")]);
}
