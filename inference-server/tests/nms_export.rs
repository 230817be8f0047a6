//! A real detector exported with NMS inside the graph (nudenet's YOLOv8n followed by
//! NonMaxSuppression and Gathers, as end-to-end exports end; tests/python/nms_models.py), served
//! with the `boxesScores` decoder and named boxes, scores and labels outputs: OIP answers
//! onnxruntime's outputs and `/v1/predict` its kept detections, for a photo with a face and one
//! with nothing to find (empty outputs).

mod common;

use common::*;
use flywheel_inference_server::fetch::sha256_hex;
use flywheel_inference_server::serving::*;
use flywheel_test_support::models::{NUDENET_LABELS, assert_raw_outputs_match, assert_shapes_match};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_with_nms_inside_the_graph_serves_its_kept_boxes() {
    let dir =
        generated(&["nms_models.py", "real_models.py", "export_layouts.py"], "server-nms-models", "expected.json");
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let want = &expected["320n_nms"];
    let path = dir.join("320n_nms.onnx");
    let model = ServedModel {
        name: "yolov8n-nms".into(),
        version: "v1".into(),
        uri: format!("file://{}", path.display()),
        sha256: sha256_hex(&std::fs::read(&path).unwrap()),
        task: Task::Detection,
        labels: NUDENET_LABELS.iter().map(|s| s.to_string()).collect(),
        input: InputSpec { mean: vec![], std: vec![], resize: ResizeMode::Letterbox, ..InputSpec::new(320, 320) },
        output: OutputSpec {
            decoder: Decoder::BoxesScores,
            boxes_output: Some("det_boxes".into()),
            scores_output: Some("det_scores".into()),
            labels_output: Some("det_classes".into()),
            ..Default::default()
        },
    };
    let mut cfg = config(model);
    cfg.confidence_threshold = 0.25;
    let s = TestServer::start(&cfg).await;
    for photo in ["astronaut", "coffee"] {
        let png = std::fs::read(dir.join(format!("{photo}_320.png"))).unwrap();
        let (data, w, h) = png_tensor(&png);
        let req = json!({"inputs": [{"name": want["input"], "shape": [1, 3, h, w], "datatype": "FP32", "data": data}]});
        let r = s.client.post(s.url("/v2/models/yolov8n-nms/infer")).json(&req).send().await.unwrap();
        assert_eq!(r.status(), 200, "{photo}");
        let body: Value = r.json().await.unwrap();
        assert_raw_outputs_match(&body, &want[photo]["raw"], 1e-4, &format!("nms {photo}"));
        let r: Value = s.client.post(s.url("/v1/predict")).body(png).send().await.unwrap().json().await.unwrap();
        assert_shapes_match(
            &r["predictions"][0]["shapes"],
            &want[photo]["shapes"],
            1e-4,
            1e-2,
            &format!("nms {photo}"),
        );
    }
    assert_eq!(want["astronaut"]["shapes"][0]["label"], "FACE_FEMALE", "the reference itself must see the face");
    assert_eq!(want["coffee"]["shapes"].as_array().unwrap().len(), 0);
}
