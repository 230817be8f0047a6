//! Models in the output layouts real exporters produce (a classifier ending in Softmax, YOLOv5
//! with objectness, a raw YOLOX grid, SSD-style boxes + scores) served through `/v1/predict` and
//! OIP: the raw outputs agree with onnxruntime within 1e-4 and the shapes are those of an
//! independent reference decoder (tests/python/export_layouts.py) at the same threshold.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use flywheel_inference_server::fetch::sha256_hex;
use flywheel_inference_server::serving::*;
use flywheel_test_support::models::{assert_raw_outputs_match, assert_shapes_match};
use serde_json::{Value, json};

const IMAGES: [&str; 4] = ["red_square", "red_and_blue", "reddish", "bluish"];

/// The models, images and expectations, generated once per version of the script.
fn layouts_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| generated(&["export_layouts.py"], "server-export-layouts", "expected.json"))
}

fn served(file: &str, output: OutputSpec) -> ServedModel {
    let path = layouts_dir().join(file);
    ServedModel {
        name: file.trim_end_matches(".onnx").replace('_', "-"),
        version: "v1".into(),
        uri: format!("file://{}", path.display()),
        sha256: sha256_hex(&std::fs::read(&path).unwrap()),
        task: if output.decoder == Decoder::Logits { Task::Classification } else { Task::Detection },
        labels: vec!["red".into(), "blue".into()],
        input: InputSpec { mean: vec![], std: vec![], ..InputSpec::new(64, 64) },
        output,
    }
}

async fn check(file: &str, output: OutputSpec) {
    let expected: Value = serde_json::from_slice(&std::fs::read(layouts_dir().join("expected.json")).unwrap()).unwrap();
    let model = served(file, output);
    let name = model.name.clone();
    let mut cfg = config(model);
    cfg.confidence_threshold = 0.3;
    let s = TestServer::start(&cfg).await;
    for image in IMAGES {
        let want = &expected[file.trim_end_matches(".onnx")][image];
        let png = std::fs::read(layouts_dir().join(format!("{image}.png"))).unwrap();

        // Raw outputs through OIP against onnxruntime's.
        let req = json!({"inputs": [{"name": "images", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": png_tensor(&png).0}]});
        let r: Value = s
            .client
            .post(s.url(&format!("/v2/models/{name}/infer")))
            .json(&req)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let what = format!("{file} {image}");
        assert_raw_outputs_match(&r, &want["raw"], 1e-4, &what);

        // Decoded shapes against the reference decoder.
        let r: Value = s.client.post(s.url("/v1/predict")).body(png).send().await.unwrap().json().await.unwrap();
        assert_shapes_match(&r["predictions"][0]["shapes"], &want["shapes"], 1e-4, 1e-3, &what);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classifier_ending_in_softmax_keeps_its_probabilities() {
    check("softmax_classifier.onnx", OutputSpec { top_k: Some(2), ..Default::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yolov5_objectness_is_read_from_the_shape() {
    check("yolov5.onnx", OutputSpec { decoder: Decoder::Yolo, ..Default::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_yolox_grid_is_decoded_by_the_server() {
    check("yolox.onnx", OutputSpec { decoder: Decoder::Yolo, strides: vec![8, 16, 32], ..Default::default() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssd_style_boxes_and_scores_by_name() {
    let spec = OutputSpec { decoder: Decoder::BoxesScores, normalized_boxes: true, ..Default::default() };
    check("ssd.onnx", spec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_spec_that_does_not_fit_the_model_keeps_it_from_loading() {
    // A boxesScores spec naming an output the SSD model does not have.
    let bad = OutputSpec { decoder: Decoder::BoxesScores, boxes_output: Some("dets".into()), ..Default::default() };
    let mut cfg = config(served("ssd.onnx", bad));
    cfg.confidence_threshold = 0.3;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("serving.yaml");
    write_config(&config_path, &cfg);
    let running = flywheel_inference_server::server::start(
        flywheel_inference_server::server::Options {
            config: config_path,
            listen: "127.0.0.1:0".parse().unwrap(),
            cache_dir: dir.path().join("cache"),
            poll: std::time::Duration::from_millis(50),
            token_file: None,
            retry: std::time::Duration::from_millis(200),
        },
        flywheel_inference_server::runtime_backend::factory(),
    )
    .await
    .unwrap();
    let status_url = format!("http://{}/status", running.addr);
    let client = reqwest::Client::new();
    wait_until("the load error is reported", || {
        let (c, url) = (client.clone(), status_url.clone());
        async move {
            let st: Value = c.get(url).send().await.unwrap().json().await.unwrap();
            st["reload"]["errors"].as_array().is_some_and(|e| !e.is_empty())
        }
    })
    .await;
    let st: Value = client.get(&status_url).send().await.unwrap().json().await.unwrap();
    let err = st["reload"]["errors"][0].as_str().unwrap();
    assert!(err.contains("\"dets\"") && err.contains("boxes") && err.contains("scores"), "{err}");
    assert_eq!(st["ready"], false);
}
