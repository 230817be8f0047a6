//! `flywheel-inference-server verify`, as the operator's verification Job runs it: a model that
//! fits its contract passes with its signature, op histogram, parameter count and probe
//! latency; one that does not is a failed result whose message names the output, dimension or
//! op, and the process still exits 0 (the result is known).

mod common;

use std::process::Command;

use common::*;
use flywheel_inference_server::serving::{Decoder, OutputSpec, ServedModel};
use flywheel_types::verification::{Verification, contract_hash};

fn verify(model: &ServedModel) -> Verification {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_flywheel-inference-server"))
        .arg("--cache-dir")
        .arg(cache.path())
        .arg("verify")
        .env("FLYWHEEL_VERIFY_MODEL", serde_json::to_string(model).unwrap())
        .env("RAYON_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "verify exited {:?}: {stdout}{}", out.status, String::from_utf8_lossy(&out.stderr));
    Verification::from_output(&stdout).expect("a report line").expect("a readable report")
}

fn failure(model: &ServedModel) -> String {
    let v = verify(model);
    assert!(!v.passed, "{v:?}");
    assert_eq!((v.digest.as_str(), v.contract.clone()), (model.sha256.as_str(), contract_hash(model)));
    let m = v.message.unwrap();
    eprintln!("{}: {m}", model.name);
    m
}

#[test]
fn a_model_that_fits_its_contract_passes_with_its_signature_and_ops() {
    let model = classifier("colour", "colour_classifier.onnx", "v1");
    let v = verify(&model);
    assert!(v.passed, "{v:?}");
    assert_eq!(v.digest, model.sha256);
    assert_eq!(v.inputs.len(), 1);
    assert_eq!((v.inputs[0].name.as_str(), v.inputs[0].shape.as_slice()), ("images", &[-1, 3, 64, 64][..]));
    assert_eq!((v.outputs[0].name.as_str(), v.outputs[0].shape.as_slice()), ("logits", &[-1, 3][..]));
    let ops: Vec<(&str, u32)> = v.ops.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(ops, [("Flatten", 1), ("Gemm", 1), ("GlobalAveragePool", 1)]);
    // Gemm weights 3x3 and bias 3.
    assert_eq!(v.parameters, 12);
    assert!(v.probe_latency_ms.is_some_and(|ms| ms > 0.0), "{v:?}");
    // top_k 3 at a zero threshold: every class.
    assert_eq!(v.probe_shapes, Some(3));

    let det = verify(&detector("squares", "d1"));
    assert!(det.passed, "{det:?}");
    assert_eq!(det.outputs[0].shape, [-1, 6, 64]);
}

#[test]
fn a_model_that_does_not_fit_fails_naming_what_and_why() {
    // Three labels for a detector whose output holds two class scores per anchor.
    let mut wrong_classes = detector("squares", "d1");
    wrong_classes.labels.push("green".into());
    let m = failure(&wrong_classes);
    assert!(m.contains("decoder") && m.contains('3'), "{m}");

    // A boxes + scores decoder naming outputs the model does not have.
    let mut missing_output = detector("squares", "d1");
    missing_output.output =
        OutputSpec { decoder: Decoder::BoxesScores, boxes_output: Some("boxes".into()), ..Default::default() };
    let m = failure(&missing_output);
    assert!(m.contains("output.boxesOutput") && m.contains("\"boxes\"") && m.contains("output0"), "{m}");

    // An input size the graph does not take.
    let mut wrong_size = classifier("colour", "colour_classifier.onnx", "v1");
    wrong_size.input.width = 32;
    let m = failure(&wrong_size);
    assert!(m.contains("dimension 3"), "{m}");

    // An op the runtime does not implement.
    let m = failure(&classifier("hard", "hardmax_classifier.onnx", "v1"));
    assert!(m.contains("Hardmax"), "{m}");

    // Bytes that are not the registered artifact.
    let mut other_digest = classifier("colour", "colour_classifier.onnx", "v1");
    other_digest.sha256 = "0".repeat(64);
    let m = failure(&other_digest);
    assert!(m.contains("sha256"), "{m}");
}

/// Every ModelVersion under examples/models/ is accepted by verification against a model with
/// its exporter's signature at the example's size and label count (tests/python/example_models.py).
#[test]
fn every_example_model_version_passes_verification() {
    use sha2::Digest;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models");
    let mut paths: Vec<_> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    let mut hasher = sha2::Sha256::new();
    for p in &paths {
        hasher.update(std::fs::read(p).unwrap());
    }
    let hash: String = hasher.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = generated(&["example_models.py"], "server-example-models", &format!("done-{hash}"));
    assert!(paths.len() >= 8, "{paths:?}");
    for p in &paths {
        let doc: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        let spec = &doc["spec"];
        let stem = p.file_stem().unwrap().to_str().unwrap();
        let (uri, sha256) = {
            let path = dir.join(format!("{stem}.onnx"));
            let bytes = std::fs::read(&path).unwrap();
            (format!("file://{}", path.display()), flywheel_inference_server::fetch::sha256_hex(&bytes))
        };
        let model = ServedModel {
            name: spec["model"].as_str().unwrap().into(),
            version: spec["version"].as_str().unwrap().into(),
            uri,
            sha256,
            task: serde_json::from_value(spec["task"].clone()).unwrap(),
            labels: serde_json::from_value(spec["labels"].clone()).unwrap(),
            input: serde_json::from_value(spec["input"].clone()).unwrap(),
            output: serde_json::from_value(spec["output"].clone()).unwrap(),
        };
        let v = verify(&model);
        assert!(v.passed, "examples/models/{stem}.yaml: {:?}", v.message);
        eprintln!("{stem}: {} outputs, probe {:.1} ms", v.outputs.len(), v.probe_latency_ms.unwrap_or_default());
    }
}
