//! Reviewed samples land in the feedback DatasetVersion's own layout, and a feedback index that
//! cannot be read stops review with a reason instead of being replaced.

mod common;

use common::*;
use flywheel_inference_server::serving::*;
use flywheel_types::dataset::coco;
use serde_json::{Value, json};

const TOKEN: &str = "feedback-token";

fn reviewed_detector(dir: &std::path::Path, format: DatasetFormat) -> ServingConfig {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    let mut cfg = config(detector("squares", "d1"));
    cfg.prediction_log = Some(test_log(dir));
    cfg.feedback_dataset = Some(FeedbackDatasetConfig {
        uri: format!("file://{}/feedback", dir.display()),
        format: Some(format),
        labels: vec!["red".into(), "blue".into()],
    });
    cfg.auth.token_file = Some(dir.join("token").display().to_string());
    cfg
}

/// Predicts one 128x64 image with a red square and returns its prediction id once reviewable.
async fn one_logged_prediction(s: &TestServer) -> String {
    let img = png(128, 64, [0, 0, 0], Some((32, 16, 16, [255, 0, 0])));
    let r: Value = s.client.post(s.url("/v1/predict")).body(img).send().await.unwrap().json().await.unwrap();
    let id = r["predictions"][0]["id"].as_str().unwrap().to_string();
    let url = s.url(&format!("/v1/review/items/{id}"));
    wait_until("the prediction is reviewable", || {
        let (c, url) = (s.client.clone(), url.clone());
        async move { c.get(url).bearer_auth(TOKEN).send().await.unwrap().status() == 200 }
    })
    .await;
    id
}

async fn correct(s: &TestServer, id: &str) -> reqwest::Response {
    let body = json!({"decision": "correct", "shapes": [
        {"label": "blue", "classId": 1, "confidence": 1, "box": [32, 16, 48, 32]}]});
    s.client.post(s.url(&format!("/v1/review/items/{id}"))).bearer_auth(TOKEN).json(&body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_yolo_feedback_dataset_gets_an_image_and_a_label_file_per_review() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = reviewed_detector(dir.path(), DatasetFormat::Yolo);
    let s = TestServer::start_in(dir, &cfg).await;
    let id = one_logged_prediction(&s).await;
    assert_eq!(correct(&s, &id).await.status(), 200);
    let root = s.dir.path().join("feedback");
    assert!(root.join(format!("images/{id}.png")).exists());
    let label = std::fs::read_to_string(root.join(format!("labels/{id}.txt"))).unwrap();
    // blue is class 1; box centre (40, 24), size 16x16 in a 128x64 image.
    assert_eq!(label, "1 0.312500 0.375000 0.125000 0.250000\n");
    assert!(!root.join("annotations.json").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_coco_index_is_kept_and_review_resumes_once_it_is_repaired_as_per_sample_objects() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = reviewed_detector(dir.path(), DatasetFormat::Coco);
    let index = dir.path().join("feedback/annotations.json");
    std::fs::create_dir_all(index.parent().unwrap()).unwrap();
    let earlier = json!({"images": [{"id": 1, "file_name": "images/earlier.png", "width": 8, "height": 8}],
                         "annotations": [], "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]})
    .to_string();
    let truncated = &earlier[..earlier.len() / 2];
    std::fs::write(&index, truncated).unwrap();
    let s = TestServer::start_in(dir, &cfg).await;
    let id = one_logged_prediction(&s).await;

    let r = correct(&s, &id).await;
    assert_eq!(r.status(), 500);
    let err = r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_string();
    assert!(err.contains("annotations.json") && err.contains("unreadable"), "{err}");
    assert_eq!(std::fs::read_to_string(&index).unwrap(), truncated, "the index must not be replaced");

    // Repaired, the same review goes through as its own objects: the index is not rewritten,
    // and the dataset (index + per-sample documents) holds the earlier sample and the new one.
    std::fs::write(&index, &earlier).unwrap();
    assert_eq!(correct(&s, &id).await.status(), 200);
    assert_eq!(std::fs::read_to_string(&index).unwrap(), earlier);
    let root = index.parent().unwrap();
    let sample = std::fs::read(root.join(format!("annotations/{id}.json"))).unwrap();
    let doc = coco::assemble(Some(earlier.as_bytes()), &[(format!("annotations/{id}.json"), sample)]).unwrap();
    let files: Vec<String> = doc.images.iter().map(|i| i.path()).collect();
    assert_eq!(files, vec!["images/earlier.png".to_string(), format!("images/{id}.png")]);
    assert_eq!(doc.boxes_by_image().unwrap().values().next().unwrap()[0].0, "blue");
    assert!(root.join(format!("images/{id}.png")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_with_more_boxes_than_a_review_may_hold_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = reviewed_detector(dir.path(), DatasetFormat::Coco);
    let s = TestServer::start_in(dir, &cfg).await;
    let id = one_logged_prediction(&s).await;
    let shape = json!({"label": "red", "classId": 0, "confidence": 1, "box": [1, 1, 2, 2]});
    let body = json!({"decision": "correct", "shapes": vec![shape; 1001]});
    let r =
        s.client.post(s.url(&format!("/v1/review/items/{id}"))).bearer_auth(TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let err = r.json::<Value>().await.unwrap()["error"].as_str().unwrap().to_string();
    assert!(err.contains("at most 1000 shapes"), "{err}");
    // The prediction is still there to review properly.
    assert_eq!(correct(&s, &id).await.status(), 200);
}
