//! The model corpus through the whole product on the local cluster: each real export (nudenet's
//! Ultralytics YOLOv8n, alone, with NMS inside the graph and quantized to int8 by
//! onnxruntime.quantization (static QDQ and dynamic), the `onnx` wheel's light ResNet-50,
//! Inception v2 and ShuffleNet) and each
//! model in an exporter's layout (a classifier ending in Softmax, YOLOv5 with objectness, a raw
//! YOLOX grid, SSD-style boxes + scores) is registered as a ModelVersion (verified by its Job),
//! served by a Deployment's pod, and answers OIP v2 with onnxruntime's raw outputs (within 1e-4
//! of each output's range) and `POST /v1/predict` with the shapes of an independent reference
//! decoder at the same threshold. The models, images and expectations are written by
//! inference-server/tests/python/ (cached by script version).

mod common;

use std::path::PathBuf;

use flywheel_api::{FlywheelDeployment, ModelVersion, condition};
use flywheel_e2e::{TestNamespace, install_crds, shared_cluster, start_operator, test_settings, workspace_root};
use flywheel_test_support::models::{
    NUDENET_LABELS, assert_raw_outputs_match, assert_shapes_match, generated, png_tensor,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use serde_json::{Value, json};

/// One model of the corpus and how to check it.
struct Entry {
    /// Object names (ModelVersion and Deployment).
    name: &'static str,
    dir: PathBuf,
    file: &'static str,
    /// The ModelVersion spec without its artifact.
    spec: Value,
    threshold: f64,
    /// (image file, key in expected.json).
    images: Vec<(String, &'static str)>,
    /// Compare `/v1/predict` shapes too (the light classifiers' 1,000 random-weight classes
    /// have no meaningful top classes).
    shapes: bool,
    /// Pixel tolerance of boxes.
    box_tolerance: f64,
    /// Raw outputs (relative to each output's range) and confidences: float models agree to
    /// summation order; an int8 model may land one quantum away where a value sits on a
    /// rounding boundary (see docs/runtime.md).
    tolerance: (f64, f64),
}

const FLOAT: (f64, f64) = (1e-4, 1e-4);
const INT8: (f64, f64) = (2e-2, 2e-2);

fn corpus() -> Vec<Entry> {
    let layouts = generated(&["export_layouts.py"], "server-export-layouts", "expected.json");
    let real = generated(&["real_models.py", "export_layouts.py"], "server-real-models", "expected.json");
    let nms =
        generated(&["nms_models.py", "real_models.py", "export_layouts.py"], "server-nms-models", "expected.json");
    let small = json!({"width": 64, "height": 64, "mean": [], "std": []});
    let images64: Vec<(String, &str)> =
        ["red_square", "red_and_blue", "reddish", "bluish"].into_iter().map(|i| (format!("{i}.png"), i)).collect();
    let layout = |name, file, task: &str, output: Value| Entry {
        name,
        dir: layouts.clone(),
        file,
        spec: json!({"model": name, "version": "v1", "task": task, "labels": ["red", "blue"], "input": small, "output": output}),
        threshold: 0.3,
        images: images64.clone(),
        shapes: true,
        box_tolerance: 1e-3,
        tolerance: FLOAT,
    };
    let photos = |side: u32| -> Vec<(String, &'static str)> {
        ["astronaut", "coffee"].into_iter().map(|p| (format!("{p}_{side}.png"), p)).collect()
    };
    let classes: Vec<String> = (0..1000).map(|i| format!("class_{i}")).collect();
    let light = |name, file| Entry {
        name,
        dir: real.clone(),
        file,
        spec: json!({"model": name, "version": "v1", "task": "classification", "labels": classes,
            "input": {"width": 224, "height": 224, "mean": [], "std": []}, "output": {"decoder": "logits"}}),
        threshold: 0.25,
        images: photos(224),
        shapes: false,
        box_tolerance: 0.0,
        tolerance: FLOAT,
    };
    let yolov8n = |name, file, tolerance, box_tolerance| Entry {
        name,
        dir: real.clone(),
        file,
        spec: json!({"model": name, "version": "v1", "task": "detection", "labels": NUDENET_LABELS,
            "input": {"width": 320, "height": 320, "mean": [], "std": [], "resize": "letterbox"},
            "output": {"decoder": "yolo"}}),
        threshold: 0.25,
        images: photos(320),
        shapes: true,
        box_tolerance,
        tolerance,
    };
    vec![
        layout(
            "softmax-classifier",
            "softmax_classifier.onnx",
            "classification",
            json!({"decoder": "logits", "topK": 2}),
        ),
        layout("yolov5", "yolov5.onnx", "detection", json!({"decoder": "yolo"})),
        layout("yolox", "yolox.onnx", "detection", json!({"decoder": "yolo", "strides": [8, 16, 32]})),
        layout("ssd", "ssd.onnx", "detection", json!({"decoder": "boxesScores", "normalizedBoxes": true})),
        yolov8n("yolov8n", "320n.onnx", FLOAT, 1e-2),
        yolov8n("yolov8n-int8-qdq", "320n_qdq.onnx", INT8, 1.5),
        yolov8n("yolov8n-int8-dynamic", "320n_dynamic.onnx", INT8, 1.5),
        Entry {
            name: "yolov8n-nms",
            dir: nms,
            file: "320n_nms.onnx",
            spec: json!({"model": "yolov8n-nms", "version": "v1", "task": "detection", "labels": NUDENET_LABELS,
                "input": {"width": 320, "height": 320, "mean": [], "std": [], "resize": "letterbox"},
                "output": {"decoder": "boxesScores", "boxesOutput": "det_boxes", "scoresOutput": "det_scores",
                    "labelsOutput": "det_classes"}}),
            threshold: 0.25,
            images: photos(320),
            shapes: true,
            box_tolerance: 1e-2,
            tolerance: FLOAT,
        },
        light("resnet50", "light_resnet50.onnx"),
        light("inception-v2", "light_inception_v2.onnx"),
        light("shufflenet", "light_shufflenet.onnx"),
    ]
}

fn is_true(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], type_: &str) -> bool {
    condition::find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_of_the_corpus_serves_through_a_deployment_as_onnxruntime_and_the_reference_decoder_say() {
    let cluster = shared_cluster();
    let client = cluster.client().await;
    install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");
    let ns = TestNamespace::new(cluster, "corpus").await.unwrap();
    let operator = start_operator(client.clone(), test_settings(&ns.name));
    let corpus = corpus();

    for e in &corpus {
        let mut spec = e.spec.clone();
        spec["artifact"] = json!({"uri": format!("file://{}", e.dir.join(e.file).display())});
        let mv = json!({"apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": e.name}, "spec": spec});
        let deployment = json!({"apiVersion": "flywheel.dev/v1alpha1", "kind": "Deployment", "metadata": {"name": e.name},
            "spec": {"champion": {"modelVersion": e.name}, "replicas": 1, "confidenceThreshold": e.threshold}});
        ns.apply_yaml(&format!("{mv}\n---\n{deployment}")).await.unwrap();
    }

    let http = reqwest::Client::new();
    for e in &corpus {
        let verified = |m: Option<&ModelVersion>| {
            m.and_then(|m| m.status.as_ref()).is_some_and(|s| is_true(&s.conditions, "Ready"))
        };
        let mv = ns.wait_for::<ModelVersion>(e.name, verified, 240).await.unwrap().unwrap();
        let report = mv.status.unwrap().verification.expect("verified");
        let loaded = |d: Option<&FlywheelDeployment>| {
            d.and_then(|d| d.status.as_ref()).is_some_and(|s| is_true(&s.conditions, "ModelsLoaded"))
        };
        ns.wait_for::<FlywheelDeployment>(e.name, loaded, 240).await.unwrap();
        let pods = ns
            .api::<Pod>()
            .list(&ListParams::default().labels(&format!("flywheel.dev/deployment={}", e.name)))
            .await
            .unwrap();
        let ip = pods.items.iter().map(common::pod_ip).find(|ip| !ip.is_empty()).expect("a pod with an IP");
        let base = format!("http://{ip}:8080");
        let expected: Value = serde_json::from_slice(&std::fs::read(e.dir.join("expected.json")).unwrap()).unwrap();
        let want = &expected[e.file.trim_end_matches(".onnx")];
        let input = want.get("input").and_then(Value::as_str).unwrap_or("images");
        let mut worst = 0.0f64;
        for (image, key) in &e.images {
            let png = std::fs::read(e.dir.join(image)).unwrap();
            let what = format!("{} {key}", e.name);
            let (data, w, h) = png_tensor(&png);
            let req = json!({"inputs": [{"name": input, "shape": [1, 3, h, w], "datatype": "FP32", "data": data}]});
            let r = http.post(format!("{base}/v2/models/{}/infer", e.name)).json(&req).send().await.unwrap();
            assert_eq!(r.status(), 200, "{what}");
            let body: Value = r.json().await.unwrap();
            worst = worst.max(assert_raw_outputs_match(&body, &want[*key]["raw"], e.tolerance.0, &what));
            if e.shapes {
                let r: Value =
                    http.post(format!("{base}/v1/predict")).body(png).send().await.unwrap().json().await.unwrap();
                assert_shapes_match(
                    &r["predictions"][0]["shapes"],
                    &want[*key]["shapes"],
                    e.tolerance.1,
                    e.box_tolerance,
                    &what,
                );
            }
        }
        eprintln!(
            "{:<18} {:>2} ops types {:>9} params, probe {:>6.1} ms; max diff vs onnxruntime {worst:.1e} of the output range",
            e.name,
            report.ops.len(),
            report.parameters,
            report.probe_latency_ms.unwrap_or_default()
        );
    }
    operator.abort();
}
