//! Real exported models that ship inside PyPI packages, on real photos that ship inside PyPI
//! packages (tests/python/real_models.py): nudenet's Ultralytics YOLOv8n export on scikit-image's
//! astronaut (a face) and coffee (none), and the `onnx` wheel's light ResNet-50, Inception v2 and
//! ShuffleNet. Served through OIP (raw outputs against onnxruntime's within 1e-4) and
//! `/v1/predict` (the detector's shapes against the reference decoder's).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use flywheel_inference_server::fetch::sha256_hex;
use flywheel_inference_server::serving::*;
use flywheel_test_support::models::{NUDENET_LABELS, assert_raw_outputs_match, assert_shapes_match};
use serde_json::{Value, json};

fn real_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| generated(&["real_models.py", "export_layouts.py"], "server-real-models", "expected.json"))
}

fn expected() -> Value {
    serde_json::from_slice(&std::fs::read(real_dir().join("expected.json")).unwrap()).unwrap()
}

fn served(
    name: &str,
    size: u32,
    task: Task,
    labels: Vec<String>,
    output: OutputSpec,
    resize: ResizeMode,
) -> ServedModel {
    let path = real_dir().join(format!("{name}.onnx"));
    ServedModel {
        name: name.replace('_', "-"),
        version: "v1".into(),
        uri: format!("file://{}", path.display()),
        sha256: sha256_hex(&std::fs::read(&path).unwrap()),
        task,
        labels,
        input: InputSpec { mean: vec![], std: vec![], resize, ..InputSpec::new(size, size) },
        output,
    }
}

/// Serves `model` and checks every photo's raw outputs (and, when given, its shapes).
/// How close to onnxruntime: raw outputs (relative to each output's range), confidences, box
/// corners (pixels).
#[derive(Clone, Copy)]
struct Tolerance {
    raw: f64,
    confidence: f64,
    boxes: f64,
}

/// A float model: the same arithmetic as onnxruntime up to summation order.
const FLOAT: Tolerance = Tolerance { raw: 1e-4, confidence: 1e-4, boxes: 1e-2 };

async fn check(file: &str, model: ServedModel, size: u32, compare_shapes: bool, tol: Tolerance) {
    let want = &expected()[file];
    let name = model.name.clone();
    let mut cfg = config(model);
    cfg.confidence_threshold = 0.25;
    let s = TestServer::start(&cfg).await;
    for photo in ["astronaut", "coffee"] {
        let png = std::fs::read(real_dir().join(format!("{photo}_{size}.png"))).unwrap();
        let (data, side, _) = png_tensor(&png);
        let input = want["input"].as_str().unwrap();
        let req = json!({"inputs": [{"name": input, "shape": [1, 3, side, side], "datatype": "FP32", "data": data}]});
        let r = s.client.post(s.url(&format!("/v2/models/{name}/infer"))).json(&req).send().await.unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!(status, 200, "{file} {photo}: {body}");
        let worst = assert_raw_outputs_match(&body, &want[photo]["raw"], tol.raw, &format!("{file} {photo}"));
        eprintln!("{file} {photo}: max diff vs onnxruntime {worst:.2e} of each output's range");
        if !compare_shapes {
            continue;
        }
        let r: Value = s.client.post(s.url("/v1/predict")).body(png).send().await.unwrap().json().await.unwrap();
        // Boxes within 0.01 pixel of the reference decoder's.
        assert_shapes_match(
            &r["predictions"][0]["shapes"],
            &want[photo]["shapes"],
            tol.confidence,
            tol.boxes,
            &format!("{file} {photo}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nudenets_yolov8n_export_finds_the_astronauts_face() {
    let labels: Vec<String> = NUDENET_LABELS.iter().map(|s| s.to_string()).collect();
    let output = OutputSpec { decoder: Decoder::Yolo, ..Default::default() };
    check("320n", served("320n", 320, Task::Detection, labels, output, ResizeMode::Letterbox), 320, true, FLOAT).await;
    let face = &expected()["320n"]["astronaut"]["shapes"][0];
    assert_eq!(face["label"], "FACE_FEMALE", "the reference itself must see the face: {face}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_onnx_wheels_light_classifiers_match_onnxruntime() {
    let labels: Vec<String> = (0..1000).map(|i| format!("class_{i}")).collect();
    for name in ["light_resnet50", "light_inception_v2", "light_shufflenet"] {
        let model = served(name, 224, Task::Classification, labels.clone(), OutputSpec::default(), ResizeMode::Stretch);
        check(name, model, 224, false, FLOAT).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn int8_variants_of_the_yolov8n_find_what_onnxruntime_finds() {
    let labels: Vec<String> = NUDENET_LABELS.iter().map(|s| s.to_string()).collect();
    // The runtime does onnxruntime's arithmetic wherever a value is quantized next (QDQ
    // convolutions as integer ones, requantization in f32, MLAS's sigmoid), and the outputs agree
    // to about 1e-7 of their range. A last-bit difference anywhere before a quantizer would
    // instead move an activation by a whole quantum, and in this network such flips compound into
    // boxes pixels away: 7 with an exactly rounded sigmoid, 22 with the QDQ graph's float
    // convolutions as written (onnxruntime's own unoptimized session is 6 pixels from its default).
    let int8 = Tolerance { raw: 2e-2, confidence: 2e-2, boxes: 1.5 };
    for name in ["320n_dynamic", "320n_qdq"] {
        let output = OutputSpec { decoder: Decoder::Yolo, ..Default::default() };
        let model = served(name, 320, Task::Detection, labels.clone(), output, ResizeMode::Letterbox);
        check(name, model, 320, true, int8).await;
    }
}
