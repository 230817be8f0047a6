//! `trainLayers: head` on real and exporter-layout models: the heads found in the graph are the
//! detect head's box and class convolutions of nudenet's YOLOv8n export (not its fixed DFL
//! convolution), and the per-cell convolutions of the YOLOv5, YOLOX and SSD layouts; the
//! YOLOv8n fine-tunes on generated data to a better mAP.

use std::path::PathBuf;

use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::model_version::ResizeMode;
use flywheel_api::training::{NamedDataset, NamedModel};
use flywheel_storage::Location;
use flywheel_test_support::models::{NUDENET_LABELS, generated};
use flywheel_trainer::generate::{self, DatasetOptions};
use flywheel_trainer::heads::head_params;
use flywheel_trainer::model::sha256_hex;
use flywheel_trainer::train::{self, TrainOptions};

use crate::common::{file_uri, request};

fn nudenet() -> PathBuf {
    generated(&["real_models.py", "export_layouts.py"], "server-real-models", "expected.json").join("320n.onnx")
}

#[test]
fn the_yolov8n_heads_are_the_box_and_class_convolutions_not_the_dfl() {
    let bytes = std::fs::read(nudenet()).unwrap();
    let mut names = head_params(&bytes, 1).unwrap();
    names.sort();
    let mut want: Vec<String> = Vec::new();
    for branch in ["cv2", "cv3"] {
        for scale in 0..3 {
            for p in ["bias", "weight"] {
                want.push(format!("model.22.{branch}.{scale}.2.{p}"));
            }
        }
    }
    want.sort();
    assert_eq!(names, want);
    // One level deeper: the 3x3 convolutions before them (12 more tensors).
    let deeper = head_params(&bytes, 2).unwrap();
    assert_eq!(deeper.len(), 24, "{deeper:?}");
    assert!(deeper.iter().all(|n| !n.contains("dfl")), "{deeper:?}");
    assert!(deeper.iter().any(|n| n.starts_with("model.22.cv3.1.1.")), "{deeper:?}");
}

#[test]
fn exporter_layouts_train_their_per_cell_convolutions() {
    let dir = generated(&["export_layouts.py"], "server-export-layouts", "expected.json");
    let heads = |name: &str| {
        let mut h = head_params(&std::fs::read(dir.join(format!("{name}.onnx"))).unwrap(), 1).unwrap();
        h.sort();
        h
    };
    let per_cell = ["cls_b", "cls_w", "obj_b", "obj_w", "zero_b", "zero_w"];
    assert_eq!(heads("yolov5"), per_cell);
    assert_eq!(heads("yolox"), per_cell);
    // SSD's objectness convolution feeds no output: only class scores and the box tie-in.
    assert_eq!(heads("ssd"), ["cls_b", "cls_w", "zero_b", "zero_w"]);
    assert_eq!(heads("softmax_classifier"), ["b", "w"]);
}

#[tokio::test]
async fn nudenets_yolov8n_fine_tunes_its_heads_to_a_better_map_on_generated_data() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(nudenet()).unwrap();
    let labels: Vec<String> = NUDENET_LABELS.iter().map(|s| s.to_string()).collect();
    // Three of its classes, drawn as the generator's circles, squares and triangles.
    let drawn = vec!["FACE_FEMALE".to_string(), "FACE_MALE".to_string(), "FEET_COVERED".to_string()];
    let mut opts = DatasetOptions::new(Task::Detection, DatasetFormat::Coco, 48);
    (opts.size, opts.labels, opts.seed) = (320, drawn, 61);
    let spec =
        generate::write_dataset(&Location::open(&file_uri(&dir.path().join("shapes"))).unwrap(), &opts).await.unwrap();
    let mut model_spec =
        generate::model_spec(Task::Detection, &labels, 320, &file_uri(&nudenet()), &sha256_hex(&bytes));
    model_spec.input.resize = ResizeMode::Letterbox;
    let base = NamedModel { name: "nudenet-320n".into(), spec: model_spec };
    let out = dir.path().join("run");
    let mut req = request(base, vec![NamedDataset { name: "shapes".into(), spec }], &out, 4, 0.01);
    req.hyperparameters.batch_size = 8;
    let result = train::run_with(&req, &TrainOptions::default()).await.unwrap();
    let (b, m) = (result.base_metrics["mAP50"], result.metrics["mAP50"]);
    eprintln!("nudenet YOLOv8n on generated shapes: mAP50 {b:.3} -> {m:.3}");
    assert!(m >= b + 0.1, "mAP50 {b} -> {m}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    let trained = report["trainedParameters"].as_array().unwrap();
    assert_eq!(trained.len(), 12);
    assert!(trained.iter().all(|n| !n.as_str().unwrap().contains("dfl")));
}
