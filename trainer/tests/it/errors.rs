//! User-caused dataset errors fail with a message naming the file, and leave no result.

use crate::common::*;
use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;

async fn train_error(req: &flywheel_api::training::TrainRequest) -> String {
    let err = flywheel_trainer::train::run(req).await.expect_err("training must fail").to_string();
    let out = std::path::Path::new(req.output_uri.as_str().trim_start_matches("file://"));
    assert!(!out.join("result.json").exists() && !out.join("model.onnx").exists(), "a failed run wrote outputs");
    err
}

#[tokio::test]
async fn a_missing_image_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "coco", Task::Detection, DatasetFormat::Coco, 20, 5).await;
    let missing = dir.path().join("coco/images/000007.png");
    std::fs::remove_file(&missing).unwrap();
    let req = request(model(dir.path(), Task::Detection, 1), vec![ds], &dir.path().join("run"), 1, 0.01);
    let err = train_error(&req).await;
    assert!(err.contains(&format!("{}", missing.display())) && err.contains("missing"), "{err}");
    assert!(err.contains("annotations.json"), "{err}");
}

#[tokio::test]
async fn a_bad_yolo_line_is_named_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "yolo", Task::Detection, DatasetFormat::Yolo, 20, 6).await;
    let bad = dir.path().join("yolo/labels/000003.txt");
    std::fs::write(&bad, "0 0.5 0.5 0.2 0.2\n1 0.5 oops 0.2 0.2\n").unwrap();
    let req = request(model(dir.path(), Task::Detection, 1), vec![ds], &dir.path().join("run"), 1, 0.01);
    let err = train_error(&req).await;
    assert!(err.contains(&format!("{}", bad.display())) && err.contains("line 2") && err.contains("oops"), "{err}");
}

#[tokio::test]
async fn an_unknown_yolo_class_and_a_corrupt_coco_file_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "yolo", Task::Detection, DatasetFormat::Yolo, 10, 7).await;
    std::fs::write(dir.path().join("yolo/labels/000001.txt"), "7 0.5 0.5 0.2 0.2\n").unwrap();
    let req = request(model(dir.path(), Task::Detection, 1), vec![ds], &dir.path().join("run"), 1, 0.01);
    let err = train_error(&req).await;
    assert!(err.contains("labels/000001.txt") && err.contains("class id 7"), "{err}");

    let coco = dataset(dir.path(), "coco", Task::Detection, DatasetFormat::Coco, 10, 8).await;
    let file = dir.path().join("coco/annotations.json");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    let req = request(model(dir.path(), Task::Detection, 1), vec![coco], &dir.path().join("run2"), 1, 0.01);
    let err = train_error(&req).await;
    assert!(err.contains(&format!("{}", file.display())), "{err}");
}

#[tokio::test]
async fn an_undecodable_image_fails_the_binary_with_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "folders", Task::Classification, DatasetFormat::Imagefolder, 12, 9).await;
    let broken = dir.path().join("folders/square/000004.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let out = dir.path().join("run");
    let req = request(model(dir.path(), Task::Classification, 1), vec![ds], &out, 1, 0.01);
    let request_file = dir.path().join("request.json");
    std::fs::write(&request_file, serde_json::to_vec(&req).unwrap()).unwrap();
    let run = std::process::Command::new(BIN).args(["train", "--request"]).arg(&request_file).output().unwrap();
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains(&format!("{}", broken.display())) && stderr.contains("cannot decode image"), "{stderr}");
    assert!(!out.join("result.json").exists());
}

#[tokio::test]
async fn a_yolo_box_past_the_left_edge_is_refused_like_one_past_the_right() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "yolo", Task::Detection, DatasetFormat::Yolo, 20, 11).await;
    let bad = dir.path().join("yolo/labels/000002.txt");
    // Centre 0.05, width 0.3: the box starts at x = -0.1.
    std::fs::write(&bad, "0 0.05 0.5 0.3 0.2\n").unwrap();
    let req = request(model(dir.path(), Task::Detection, 1), vec![ds], &dir.path().join("run"), 1, 0.01);
    let err = train_error(&req).await;
    assert!(err.contains(&format!("{}", bad.display())) && err.contains("extends beyond"), "{err}");
}
