//! Bring your own trainer: a DataPipeline whose `continuousTraining.trainer` names an image of
//! its own (examples/byo-trainer/trainer.py, run by the venv's Python) trains run 1 under the
//! FLYWHEEL_REQUEST → result.json contract; the operator registers `<pipeline>-r1` from its
//! result, the verification Job loads the new ONNX, and a trainer that exits 1 fails the run
//! with a condition and registers nothing.
//!
//! The process kubelet has no container runtime: this test's cluster maps the image
//! `example/byo-trainer` to a small wrapper script (the image's "binary") that executes the
//! example with the venv's Python, so `command: [byo-trainer]` is the image's entrypoint.

use flywheel_e2e::generate;
use std::path::Path;

use flywheel_api::condition;
use flywheel_api::{DataPipeline, ModelVersion};
use flywheel_e2e::{TestCluster, TestNamespace, install_crds, start_operator, test_settings, workspace_root};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::ListParams;

const IMAGE: &str = "example/byo-trainer:0.1";

/// `example/byo-trainer` → an executable `byo-trainer` that runs the example trainer.
fn wrapper(dir: &Path) -> std::path::PathBuf {
    let python = flywheel_test_support::venv_bin("python");
    assert!(python.is_file(), "{} is missing: run scripts/install-deps.sh (numpy and onnx)", python.display());
    let script = workspace_root().join("examples/byo-trainer/trainer.py");
    let path = dir.join("byo-trainer");
    std::fs::write(&path, format!("#!/bin/sh\nexec '{}' '{}' \"$@\"\n", python.display(), script.display())).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A base ModelVersion, a Deployment serving it, a feedback dataset of 3 reviewed samples and
/// a DataPipeline with the trainer `args` that triggers at 3.
async fn pipeline(ns: &TestNamespace, dir: &Path, base: &serde_json::Value, args: &str) {
    let feedback = format!("file://{}/feedback", dir.display());
    generate(&[
        "dataset",
        "--task",
        "detection",
        "--format",
        "coco",
        "--count",
        "3",
        "--seed",
        "7",
        "--out",
        &feedback,
    ]);
    let base_mv = serde_json::json!({
        "apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "base"}, "spec": base,
    });
    ns.apply_yaml(&serde_json::to_string(&base_mv).unwrap()).await.unwrap();
    ns.apply_yaml(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}\nspec: {{champion: {{modelVersion: base}}, replicas: 0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: '{feedback}', format: coco, task: detection, labels: [circle, square, triangle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec:
  deployment: shapes
  feedbackLoop: {{datasetVersion: fb}}
  continuousTraining:
    trigger: {{reviewedSamples: 3}}
    hyperparameters: {{epochs: 2}}
    trainer:
      image: {IMAGE}
      command: [byo-trainer]
      args: {args}
      resources: {{requests: {{cpu: 100m, memory: 256Mi}}}}
      env: [{{name: BYO_TRAINER_NOTE, value: e2e}}]
  continuousDeployment: {{policy: manual}}
"
    ))
    .await
    .unwrap();
}

fn trainer_log(ns: &TestNamespace, pods: &[Pod]) -> String {
    pods.iter().map(|p| ns.container_log(&p.name_any(), "trainer").unwrap_or_default()).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trainer_of_ones_own_produces_a_registered_verified_model_and_its_failures_are_reported() {
    let tools = tempfile::tempdir().unwrap();
    let mut options = flywheel_e2e::cluster::test_options("byo-trainer");
    options.images.overrides.insert("example/byo-trainer".into(), wrapper(tools.path()));
    let cluster = flywheel_cluster::Cluster::start(options).await.unwrap_or_else(|e| panic!("local cluster: {e}"));
    let tc = TestCluster::from_cluster(&cluster);
    let client = tc.client().await;
    install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");

    // 1. A trainer that works: run 1 → ModelVersion loop-r1, verified like any model.
    let ok = TestNamespace::new(&tc, "byo-ok").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = flywheel_operator::context::Settings {
        default_output_uri: Some(format!("file://{}/out", dir.path().display())),
        ..test_settings(&ok.name)
    };
    let operator = start_operator(client.clone(), settings);
    let base =
        generate(&["model", "--task", "detection", "--out", &format!("file://{}/base.onnx", dir.path().display())]);
    pipeline(&ok, dir.path(), &base, "[--noise, '0.001', --seed, '3']").await;

    let produced = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).and_then(|s| s.last_model_version.clone()).is_some()
    };
    let p = ok.wait_for::<DataPipeline>("loop", produced, 240).await.unwrap().unwrap();
    let status = p.status.unwrap();
    assert_eq!(status.last_model_version.as_deref(), Some("loop-r1"));
    assert_eq!(status.candidate_model_version.as_deref(), Some("loop-r1"), "policy manual names the candidate");

    // The Job ran the trainer's image, command and args with the operator's request.
    let job = ok.api::<Job>().get("loop-train-1").await.unwrap();
    let container = job.spec.unwrap().template.spec.unwrap().containers.remove(0);
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    assert_eq!(container.command.unwrap(), vec!["byo-trainer"]);
    assert_eq!(container.args.unwrap(), vec!["--noise", "0.001", "--seed", "3"]);
    let env = container.env.unwrap();
    assert!(env.iter().any(|e| e.name == "FLYWHEEL_REQUEST"));
    assert!(env.iter().any(|e| e.name == "BYO_TRAINER_NOTE" && e.value.as_deref() == Some("e2e")));

    // Registered from result.json, with provenance, then verified by Flywheel's own Job.
    let verified = |m: Option<&ModelVersion>| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| condition::find(&s.conditions, "Ready").is_some_and(|c| c.status == "True"))
    };
    let mv = ok.wait_for::<ModelVersion>("loop-r1", verified, 180).await.unwrap().unwrap();
    let output = dir.path().join(format!("out/{}/loop/runs/1", ok.name));
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(output.join("result.json")).unwrap()).unwrap();
    assert_eq!(mv.spec.artifact.uri.as_str(), format!("file://{}/model.onnx", output.display()));
    assert_eq!(mv.spec.artifact.sha256.as_deref(), result["sha256"].as_str());
    assert_ne!(mv.spec.artifact.sha256, base["artifact"]["sha256"].as_str().map(String::from), "weights changed");
    assert!(mv.spec.metrics.get("meanAbsWeightChange").is_some_and(|c| *c > 0.0), "{:?}", mv.spec.metrics);
    assert_eq!(result["trainSamples"], 3);
    let provenance = mv.spec.provenance.clone().unwrap();
    assert_eq!(
        (provenance.parent.as_deref(), provenance.job.as_deref(), provenance.pipeline.as_deref()),
        (Some("base"), Some("loop-train-1"), Some("loop"))
    );
    assert!(mv.status.unwrap().verification.is_some(), "the verification Job checked the trainer's ONNX");
    operator.abort();

    // 2. A trainer that fails (the base model is not ONNX): exit 1, no result.json, the run is
    // Failed with a condition naming the Job, nothing is registered, the log says why.
    let bad = TestNamespace::new(&tc, "byo-fail").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = flywheel_operator::context::Settings {
        default_output_uri: Some(format!("file://{}/out", dir.path().display())),
        // The base model is not ONNX on purpose: only the trainer may find out.
        verify_models: false,
        ..test_settings(&bad.name)
    };
    let operator = start_operator(client.clone(), settings);
    let mut base =
        generate(&["model", "--task", "detection", "--out", &format!("file://{}/base.onnx", dir.path().display())]);
    std::fs::write(dir.path().join("base.onnx"), b"not a model").unwrap();
    base["artifact"].as_object_mut().unwrap().remove("sha256");
    pipeline(&bad, dir.path(), &base, "[--noise, '0.001']").await;
    let failed = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref())
            .is_some_and(|s| condition::find(&s.conditions, "TrainingSucceeded").is_some_and(|c| c.status == "False"))
    };
    let p = bad.wait_for::<DataPipeline>("loop", failed, 180).await.unwrap().unwrap();
    let status = p.status.unwrap();
    let c = condition::find(&status.conditions, "TrainingSucceeded").unwrap().clone();
    assert_eq!(c.reason, "TrainingFailed");
    assert!(c.message.contains("loop-train-1"), "{}", c.message);
    assert_eq!(status.run_history[0].outcome, "Failed");
    assert!(bad.api::<ModelVersion>().get_opt("loop-r1").await.unwrap().is_none(), "a failed run registers nothing");
    assert!(!dir.path().join(format!("out/{}/loop/runs/1/result.json", bad.name)).exists());
    let pods = bad.api::<Pod>().list(&ListParams::default().labels("job-name=loop-train-1")).await.unwrap().items;
    let log = trainer_log(&bad, &pods);
    assert!(log.contains("error: the base model is not ONNX"), "trainer log: {log}");
    operator.abort();
    drop(bad);
    drop(ok);
    drop(cluster);
}
