//! Verification at registration on the local cluster: a ModelVersion is Ready only after its
//! verification Job (the real inference server binary, `verify`) loaded the model and ran a
//! probe through it and its decoder. A model whose outputs do not fit its decoder, one whose
//! output name is wrong and one with an op the runtime lacks are Failed with the reason before
//! any inference pod loads them, and the champion keeps serving. The result is kept per digest
//! and contract: an edit elsewhere in the spec runs no second Job.

use flywheel_e2e::generate;
use std::path::Path;

use flywheel_api::{FlywheelDeployment, ModelVersion};
use flywheel_e2e::{TestNamespace, install_crds, shared_cluster, start_operator, test_settings, workspace_root};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use serde_json::{Value, json};

/// A classifier ending in Hardmax, an op the runtime does not implement, written by the onnx
/// package as an exporter would.
fn hardmax_classifier(path: &Path) -> String {
    let script = r#"
import sys, hashlib, numpy as np, onnx
from onnx import TensorProto, helper, numpy_helper
nodes = [helper.make_node("GlobalAveragePool", ["images"], ["gap"]),
         helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
         helper.make_node("Gemm", ["flat", "w", "b"], ["raw"], transB=1),
         helper.make_node("Hardmax", ["raw"], ["scores"], axis=1)]
inits = [numpy_helper.from_array(np.eye(3, dtype=np.float32), "w"), numpy_helper.from_array(np.zeros(3, np.float32), "b")]
g = helper.make_graph(nodes, "hardmax", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
                      [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 3])], initializer=inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
onnx.checker.check_model(m); onnx.save(m, sys.argv[1])
"#;
    let out = std::process::Command::new(flywheel_test_support::venv_bin("python"))
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    format!("file://{}", path.display())
}

fn model_version(name: &str, spec: &Value) -> String {
    json!({"apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": name}, "spec": spec})
        .to_string()
}

fn condition(mv: &ModelVersion, type_: &str) -> Option<(String, String, String)> {
    let status = mv.status.as_ref()?;
    flywheel_api::condition::find(&status.conditions, type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until `name`'s Ready condition is `status` and returns the object.
async fn ready_is(ns: &TestNamespace, name: &str, status: &str) -> ModelVersion {
    // Verifying (Ready False) comes first; wait past it.
    let want = status.to_string();
    let done = move |m: Option<&ModelVersion>| {
        m.and_then(|m| condition(m, "Ready")).is_some_and(|c| c.0 == want && c.1 != "Verifying")
    };
    ns.wait_for::<ModelVersion>(name, done, 180).await.unwrap().unwrap()
}

async fn serving_champion(ns: &TestNamespace) -> String {
    let cm = ns.api::<ConfigMap>().get("shapes-serving").await.unwrap();
    let yaml = cm.data.unwrap().into_values().next().unwrap();
    let config: Value = serde_yaml::from_str(&yaml).unwrap();
    config["champion"]["version"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_are_ready_only_once_verified_and_a_model_that_cannot_serve_never_reaches_a_pod() {
    let cluster = shared_cluster();
    let client = cluster.client().await;
    install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");
    let ns = TestNamespace::new(cluster, "verify").await.unwrap();
    let operator = start_operator(client.clone(), test_settings(&ns.name));
    let dir = tempfile::tempdir().unwrap();
    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.path().display());

    // A real generated detector: verified, then Ready, with what the Job found.
    let good = generate(&["model", "--task", "detection", "--out", &uri("good.onnx")]);
    ns.apply_yaml(&model_version("good", &good)).await.unwrap();
    let mv = ready_is(&ns, "good", "True").await;
    let v = mv.status.as_ref().unwrap().verification.clone().expect("a verification report");
    assert!(v.passed, "{v:?}");
    assert_eq!(Some(v.digest.as_str()), mv.status.as_ref().unwrap().digest.as_deref());
    assert!(v.ops.get("Conv").copied().unwrap_or(0) > 0 && v.parameters > 0, "{v:?}");
    assert!(v.probe_latency_ms.is_some_and(|ms| ms > 0.0), "{v:?}");
    assert_eq!(v.inputs[0].shape[1..], [3, 64, 64]);
    assert_eq!(condition(&mv, "Verified").unwrap().0, "True");

    ns.apply_yaml("apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shapes}\nspec: {champion: {modelVersion: good}, replicas: 1}\n")
        .await
        .unwrap();
    ns.wait_for::<FlywheelDeployment>(
        "shapes",
        |d| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| flywheel_api::condition::find(&s.conditions, "ModelsLoaded"))
                .is_some_and(|c| c.status == "True")
        },
        180,
    )
    .await
    .unwrap();

    // Models that cannot serve: each Failed, naming what does not fit.
    let mut wrong_classes = good.clone();
    wrong_classes["labels"] = json!(["circle", "square", "triangle", "star"]);
    // A YOLOv8 head ([N, 4 + C, A]) declared as YOLOv5's ([N, A, 5 + C], objectness).
    let mut wrong_layout = good.clone();
    wrong_layout["output"] = json!({"decoder": "yolo", "objectness": true});
    let mut missing_output = good.clone();
    missing_output["output"] = json!({"decoder": "boxesScores", "boxesOutput": "boxes", "scoresOutput": "scores"});
    let hardmax = json!({
        "model": "colours", "version": "v1", "task": "classification", "labels": ["red", "green", "blue"],
        "artifact": {"uri": hardmax_classifier(&dir.path().join("hardmax.onnx"))},
        "input": {"width": 64, "height": 64}, "output": {"decoder": "logits"},
    });
    for (name, spec) in [
        ("wrong-classes", &wrong_classes),
        ("wrong-layout", &wrong_layout),
        ("missing-output", &missing_output),
        ("hardmax", &hardmax),
    ] {
        ns.apply_yaml(&model_version(name, spec)).await.unwrap();
    }
    let expect = [
        ("wrong-classes", vec!["not a YOLO output for 4 classes", "fit 3 labels"]),
        ("wrong-layout", vec!["not a YOLO output for 3 classes"]),
        ("missing-output", vec!["output.boxesOutput names output \"boxes\""]),
        ("hardmax", vec!["op 'Hardmax'", "does not implement"]),
    ];
    for (name, needles) in expect {
        let settled = |m: Option<&ModelVersion>| {
            m.and_then(|m| condition(m, "Ready")).is_some_and(|c| c.0 == "False" && c.1 != "Verifying")
        };
        let mv = ns.wait_for::<ModelVersion>(name, settled, 180).await.unwrap().unwrap();
        let (status, reason, message) = condition(&mv, "Ready").unwrap();
        assert_eq!((status.as_str(), reason.as_str()), ("False", "VerificationFailed"), "{name}: {message}");
        for needle in needles {
            assert!(message.contains(needle), "{name}: {message:?} lacks {needle:?}");
        }
        assert_eq!(mv.status.as_ref().unwrap().phase, Some(flywheel_api::model_version::ModelPhase::Failed));
    }

    // Pointing the Deployment at a model that failed changes nothing that serves.
    ns.apply_yaml("apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shapes}\nspec: {champion: {modelVersion: wrong-classes}, replicas: 1}\n")
        .await
        .unwrap();
    ns.wait_for::<FlywheelDeployment>(
        "shapes",
        |d| {
            d.and_then(|d| d.status.as_ref())
                .and_then(|s| flywheel_api::condition::find(&s.conditions, "ChampionReady"))
                .is_some_and(|c| c.status == "False" && c.message.contains("VerificationFailed"))
        },
        60,
    )
    .await
    .unwrap();
    assert_eq!(serving_champion(&ns).await, "good");

    // An edit outside the contract keeps the result: no second Job.
    let mut renamed = good.clone();
    renamed["version"] = json!("v1-renamed");
    ns.apply_yaml(&model_version("good", &renamed)).await.unwrap();
    ns.wait_for::<ModelVersion>(
        "good",
        |m| m.is_some_and(|m| m.status.as_ref().is_some_and(|s| s.observed_generation == m.metadata.generation)),
        60,
    )
    .await
    .unwrap();
    let mv = ready_is(&ns, "good", "True").await;
    assert_eq!(condition(&mv, "Ready").unwrap().1, "Verified");
    let jobs = ns.api::<Job>().list(&ListParams::default().labels("flywheel.dev/model-version=good")).await.unwrap();
    assert_eq!(jobs.items.len(), 1, "one verification Job for one digest and contract");
    operator.abort();
}
