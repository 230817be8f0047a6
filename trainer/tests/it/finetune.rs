//! Short fine-tunes of the generated models improve their eval metric, and the run writes
//! model.onnx, metrics.json, progress.json and result.json.

use crate::common::*;
use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::TrainResult;
use flywheel_trainer::model::sha256_hex;
use flywheel_trainer::train::report::{MetricsReport, Progress};

fn check_outputs(out: &std::path::Path, result: &TrainResult, epochs: u32) {
    let on_disk: TrainResult = serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap();
    // JSON floats may come back one ULP off.
    let close = |a: &std::collections::BTreeMap<String, f64>, b: &std::collections::BTreeMap<String, f64>| {
        a.len() == b.len() && a.iter().zip(b).all(|((ka, va), (kb, vb))| ka == kb && (va - vb).abs() < 1e-12)
    };
    assert!(close(&on_disk.metrics, &result.metrics) && close(&on_disk.base_metrics, &result.base_metrics));
    assert_eq!(
        (&on_disk.model_uri, &on_disk.sha256, on_disk.size_bytes),
        (&result.model_uri, &result.sha256, result.size_bytes)
    );
    let model = std::fs::read(out.join("model.onnx")).unwrap();
    assert_eq!(sha256_hex(&model), result.sha256);
    assert_eq!(model.len() as u64, result.size_bytes);
    assert!(result.model_uri.as_str().ends_with("/model.onnx"));
    let metrics: MetricsReport = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert!(close(&metrics.metrics, &result.metrics));
    let progress: Progress = serde_json::from_slice(&std::fs::read(out.join("progress.json")).unwrap()).unwrap();
    assert_eq!(progress.state, "finished");
    assert_eq!(progress.history.len() as u32, epochs);
    assert!(progress.history.iter().all(|e| e.loss.is_finite()));
    flywheel_runtime::Model::from_bytes(&model).expect("the trained model loads");
}

#[tokio::test]
async fn fine_tuning_the_generated_classifier_improves_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "folders", Task::Classification, DatasetFormat::Imagefolder, 150, 11).await;
    let out = dir.path().join("run");
    let mut req = request(model(dir.path(), Task::Classification, 1), vec![ds], &out, 6, 0.1);
    // The detector test uses AdamW; this one covers SGD.
    req.hyperparameters.optimizer = flywheel_api::data_pipeline::Optimizer::Sgd;
    let result = flywheel_trainer::train::run(&req).await.unwrap();
    let (base, new) = (result.base_metrics["accuracy"], result.metrics["accuracy"]);
    eprintln!("classifier accuracy {base:.3} -> {new:.3}");
    assert!(new >= base + 0.2 && new >= 0.6, "accuracy {base} -> {new}");
    assert_eq!((result.train_samples, result.eval_samples), (120, 30));
    check_outputs(&out, &result, 6);
}

#[tokio::test]
async fn fine_tuning_the_generated_detector_on_merged_coco_and_yolo_improves_map() {
    let dir = tempfile::tempdir().unwrap();
    let coco = dataset(dir.path(), "coco", Task::Detection, DatasetFormat::Coco, 120, 21).await;
    let yolo = dataset(dir.path(), "yolo", Task::Detection, DatasetFormat::Yolo, 80, 22).await;
    let out = dir.path().join("run");
    let req = request(model(dir.path(), Task::Detection, 1), vec![coco, yolo], &out, 6, 0.02);
    let result = flywheel_trainer::train::run(&req).await.unwrap();
    let (base, new) = (result.base_metrics["mAP50"], result.metrics["mAP50"]);
    eprintln!("detector mAP50 {base:.3} -> {new:.3}");
    assert!(new >= base + 0.1, "mAP50 {base} -> {new}");
    assert_eq!(result.train_samples + result.eval_samples, 200);
    check_outputs(&out, &result, 6);
    // A retried Job finds the finished run and returns it without training again.
    let mtime = std::fs::metadata(out.join("model.onnx")).unwrap().modified().unwrap();
    let again = flywheel_trainer::train::run(&req).await.unwrap();
    assert_eq!(again.sha256, result.sha256);
    assert_eq!(std::fs::metadata(out.join("model.onnx")).unwrap().modified().unwrap(), mtime);
}

#[tokio::test]
async fn a_model_with_a_fixed_batch_of_one_trains_in_pieces() {
    use flywheel_runtime::proto_types::{ModelProto, tensor_shape_proto::dimension::Value, type_proto};
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "folders", Task::Classification, DatasetFormat::Imagefolder, 60, 12).await;
    let mut base = model(dir.path(), Task::Classification, 1);
    // Make the batch dimension of the input and the output a fixed 1, as many exports have it.
    let path = base.spec.artifact.uri.as_str().trim_start_matches("file://").to_string();
    let mut proto = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    for v in graph.input.iter_mut().chain(graph.output.iter_mut()) {
        let Some(type_proto::Value::TensorType(t)) = v.r#type.as_mut().and_then(|t| t.value.as_mut()) else { panic!() };
        t.shape.as_mut().unwrap().dim[0].value = Some(Value::DimValue(1));
    }
    let bytes = proto.encode_to_vec();
    std::fs::write(&path, &bytes).unwrap();
    base.spec.artifact.sha256 = Some(sha256_hex(&bytes));
    let out = dir.path().join("run");
    let req = request(base, vec![ds], &out, 3, 0.05);
    let result = flywheel_trainer::train::run(&req).await.unwrap();
    assert!(result.metrics["accuracy"] > result.base_metrics["accuracy"], "{result:?}");
}
