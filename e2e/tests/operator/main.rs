//! The operator against the local cluster's real API server: children and owner references,
//! conditions for bad references, hot config changes, exactly one training Job per trigger
//! even across an operator restart, and placement of a trained model.

mod frozen;

use flywheel_e2e::generate;
use std::path::Path;

use flywheel_api::condition;
use flywheel_api::training::TrainRequest;
use flywheel_api::{DataPipeline, DatasetVersion, FlywheelDeployment, ModelVersion};
use flywheel_e2e::{TestNamespace, install_crds, shared_cluster, workspace_root};
use flywheel_operator::context::Settings;
use k8s_openapi::api::apps::v1::Deployment as AppsDeployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::ResourceExt;
use kube::api::{ListParams, Patch, PatchParams};

/// The operator's controllers in this process, watching one namespace; abort to "kill" it.
fn start_operator(client: kube::Client, ns: &str, output: &Path) -> tokio::task::JoinHandle<()> {
    let settings = Settings {
        default_output_uri: Some(format!("file://{}", output.display())),
        // Most artifacts here are placeholder bytes: these tests are about the operator's own
        // objects. Verification Jobs have their own tests (e2e/tests/verification.rs).
        verify_models: false,
        ..flywheel_e2e::test_settings(ns)
    };
    flywheel_e2e::start_operator(client, settings)
}

async fn setup(prefix: &str) -> (TestNamespace, kube::Client) {
    // Once per test binary: concurrent first applies of one CRD race to create it.
    static CRDS: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let cluster = shared_cluster();
    let client = cluster.client().await;
    CRDS.get_or_init(|| async {
        install_crds(&client, &workspace_root().join("crds")).await.expect("CRDs install");
    })
    .await;
    (TestNamespace::new(cluster, prefix).await.unwrap(), client)
}

fn model_yaml(name: &str, uri: &str) -> String {
    format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: ModelVersion\nmetadata: {{name: {name}}}
spec:
  model: shapes
  version: {name}
  task: detection
  labels: [circle, square, triangle]
  artifact: {{uri: '{uri}'}}
  input: {{width: 64, height: 64, resize: letterbox}}
  output: {{decoder: yolo}}
"
    )
}

fn condition_is(
    type_: &'static str,
    status: &'static str,
) -> impl Fn(&[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> bool {
    move |conditions| condition::find(conditions, type_).is_some_and(|c| c.status == status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_children_owner_references_and_hot_shadow_change() {
    let (ns, client) = setup("op-children").await;
    let dir = tempfile::tempdir().unwrap();
    for m in ["v1", "v2"] {
        std::fs::write(dir.path().join(format!("{m}.onnx")), format!("model {m}")).unwrap();
    }
    let operator = start_operator(client.clone(), &ns.name, dir.path());
    let uri = |m: &str| format!("file://{}/{m}.onnx", dir.path().display());
    ns.apply_yaml(&format!("{}---\n{}", model_yaml("m-v1", &uri("v1")), model_yaml("m-v2", &uri("v2")))).await.unwrap();
    // replicas: 0 keeps this test about the operator's objects, not the server's pods.
    ns.apply_yaml("apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shapes}\nspec: {champion: {modelVersion: m-v1}, confidenceThreshold: 0.4, replicas: 0}\n")
        .await
        .unwrap();

    let ready = condition_is("ChampionReady", "True");
    let d = ns
        .wait_for::<FlywheelDeployment>(
            "shapes",
            |d| d.and_then(|d| d.status.as_ref()).is_some_and(|s| ready(&s.conditions)),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.status.as_ref().unwrap().champion.as_deref(), Some("m-v1"));
    let uid = d.uid().unwrap();
    let owned_by_d = |refs: Option<&Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
        refs.is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)))
    };
    let cm = ns.wait_for::<ConfigMap>("shapes-serving", |c| c.is_some(), 30).await.unwrap().unwrap();
    let apps = ns.wait_for::<AppsDeployment>("shapes-inference", |a| a.is_some(), 30).await.unwrap().unwrap();
    let svc = ns.wait_for::<Service>("shapes-inference", |s| s.is_some(), 30).await.unwrap().unwrap();
    assert!(owned_by_d(cm.metadata.owner_references.as_ref()));
    assert!(owned_by_d(apps.metadata.owner_references.as_ref()));
    assert!(owned_by_d(svc.metadata.owner_references.as_ref()));
    let config = &cm.data.as_ref().unwrap()["serving.yaml"];
    assert!(config.contains("confidenceThreshold: 0.4") && !config.contains("shadow:"), "{config}");

    // A new shadow changes the ConfigMap only; the pod template (and so the pods) stay.
    let template_before = apps.spec.clone().unwrap().template;
    let generation_before = apps.metadata.generation;
    let patch = serde_json::json!({"spec": {"shadow": {"modelVersion": "m-v2", "sampleRate": 0.5}}});
    ns.api::<FlywheelDeployment>().patch("shapes", &PatchParams::default(), &Patch::Merge(&patch)).await.unwrap();
    let cm = ns
        .wait_for::<ConfigMap>(
            "shapes-serving",
            |c| c.and_then(|c| c.data.as_ref()).is_some_and(|d| d["serving.yaml"].contains("m-v2")),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(cm.data.unwrap()["serving.yaml"].contains("shadowSampleRate: 0.5"));
    let apps = ns.api::<AppsDeployment>().get("shapes-inference").await.unwrap();
    assert_eq!(apps.metadata.generation, generation_before);
    assert_eq!(apps.spec.unwrap().template, template_before);
    let d = ns
        .wait_for::<FlywheelDeployment>(
            "shapes",
            |d| d.and_then(|d| d.status.as_ref()).is_some_and(|s| s.shadow.as_deref() == Some("m-v2")),
            30,
        )
        .await
        .unwrap()
        .unwrap();
    let history = &d.status.unwrap().promotion_history;
    assert!(history.iter().any(|p| p.model_version.as_deref() == Some("m-v2") && p.reason == "Spec"));
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_artifact_and_missing_champion_get_conditions() {
    let (ns, client) = setup("op-missing").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client.clone(), &ns.name, dir.path());
    let missing = format!("file://{}/nowhere.onnx", dir.path().display());
    ns.apply_yaml(&model_yaml("ghost", &missing)).await.unwrap();
    ns.apply_yaml("apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {name: orphan}\nspec: {champion: {modelVersion: nope}, replicas: 0}\n")
        .await
        .unwrap();
    let failed = condition_is("Ready", "False");
    let mv = ns
        .wait_for::<ModelVersion>(
            "ghost",
            |m| m.and_then(|m| m.status.as_ref()).is_some_and(|s| failed(&s.conditions)),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    let ready = condition::find(&mv.status.as_ref().unwrap().conditions, "Ready").unwrap().clone();
    assert_eq!(ready.reason, "ArtifactNotFound");
    assert!(ready.message.contains("nowhere.onnx"), "{}", ready.message);
    let not_ready = condition_is("ChampionReady", "False");
    let d = ns
        .wait_for::<FlywheelDeployment>(
            "orphan",
            |d| d.and_then(|d| d.status.as_ref()).is_some_and(|s| not_ready(&s.conditions)),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    let c = condition::find(&d.status.unwrap().conditions, "ChampionReady").unwrap().clone();
    assert_eq!(c.reason, "ModelVersionNotFound");
    assert!(
        ns.api::<AppsDeployment>().get_opt("orphan-inference").await.unwrap().is_none(),
        "nothing deployed for a missing champion"
    );

    // The model file appears: the ModelVersion recovers without a spec change.
    std::fs::write(dir.path().join("nowhere.onnx"), b"late").unwrap();
    let ok = condition_is("Ready", "True");
    ns.wait_for::<ModelVersion>("ghost", |m| m.and_then(|m| m.status.as_ref()).is_some_and(|s| ok(&s.conditions)), 60)
        .await
        .unwrap();

    // An Event explains the failure.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = ns.api();
    let list = events.list(&ListParams::default()).await.unwrap();
    assert!(list.items.iter().any(|e| e.reason.as_deref() == Some("ArtifactNotFound")), "{:?}", list.items);
    operator.abort();
}

/// Writes a COCO feedback dataset with `n` reviewed samples (what the server's review API writes).
fn write_feedback(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    let images: Vec<_> = (0..n)
        .map(|i| serde_json::json!({"id": i, "file_name": format!("images/{i}.png"), "width": 64, "height": 64}))
        .collect();
    let annotations: Vec<_> =
        (0..n).map(|i| serde_json::json!({"id": i, "image_id": i, "category_id": 0, "bbox": [1, 1, 10, 10]})).collect();
    let coco =
        serde_json::json!({"images": images, "annotations": annotations, "categories": [{"id": 0, "name": "circle"}]});
    let tmp = dir.join(".annotations.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&coco).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("annotations.json")).unwrap();
}

/// The request a training Job's container gets.
async fn job_request(ns: &TestNamespace, job: &str) -> TrainRequest {
    let job = ns.api::<Job>().get(job).await.unwrap();
    let env = job.spec.unwrap().template.spec.unwrap().containers[0].env.clone().unwrap();
    let request = env.iter().find(|e| e.name == "FLYWHEEL_REQUEST").unwrap().value.clone().unwrap();
    serde_json::from_str(&request).unwrap()
}

async fn training_jobs(ns: &TestNamespace) -> Vec<String> {
    let list = ns.api::<Job>().list(&ListParams::default().labels("flywheel.dev/job-kind=trainer")).await.unwrap();
    list.items.iter().map(|j| j.name_any()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_creates_exactly_one_job_even_across_an_operator_restart() {
    let (ns, client) = setup("op-trigger").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("v1.onnx"), b"base").unwrap();
    let feedback = dir.path().join("feedback");
    write_feedback(&feedback, 2);
    let mut operator = start_operator(client.clone(), &ns.name, dir.path());
    ns.apply_yaml(&model_yaml("m-v1", &format!("file://{}/v1.onnx", dir.path().display()))).await.unwrap();
    ns.apply_yaml(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}\nspec: {{champion: {{modelVersion: m-v1}}, replicas: 0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: 'file://{}', format: coco, task: detection, labels: [circle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec:
  deployment: shapes
  feedbackLoop: {{datasetVersion: fb}}
  continuousTraining: {{trigger: {{reviewedSamples: 3}}}}
",
        feedback.display()
    ))
    .await
    .unwrap();
    let reviewed = |n: u64| {
        move |p: Option<&DataPipeline>| p.and_then(|p| p.status.as_ref()).and_then(|s| s.reviewed_total) == Some(n)
    };
    ns.wait_for::<DataPipeline>("loop", reviewed(2), 60).await.unwrap();
    assert!(training_jobs(&ns).await.is_empty(), "2 of 3 reviews must not trigger");

    write_feedback(&feedback, 3);
    ns.wait_for::<Job>("loop-train-1", |j| j.is_some(), 60).await.unwrap();

    // Kill the operator mid-run and start another: it finds run 1 instead of creating run 2.
    operator.abort();
    let _ = operator.await;
    operator = start_operator(client.clone(), &ns.name, dir.path());
    let settled = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| {
            s.current_run.as_ref().is_some_and(|r| r.job == "loop-train-1")
                || s.run_history.iter().any(|r| r.job == "loop-train-1")
        })
    };
    ns.wait_for::<DataPipeline>("loop", settled, 60).await.unwrap();
    assert_eq!(training_jobs(&ns).await, vec!["loop-train-1".to_string()]);
    let dsv = ns.api::<DatasetVersion>().get("fb").await.unwrap();
    assert_eq!(dsv.status.unwrap().reviewed_count, Some(3));
    // The Job's request names the base model and the feedback frozen for run 1.
    let request = job_request(&ns, "loop-train-1").await;
    assert_eq!(request.base_model.name, "m-v1");
    let names: Vec<&str> = request.train.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["fb-r1"]);
    assert_eq!(request.train[0].spec.manifest.as_deref(), Some(".flywheel/manifests/fb-r1.json"));
    operator.abort();
}

/// A generated base model, training data and a feedback dataset holding `reviewed` samples,
/// a Deployment serving the base model, and a DataPipeline with `policy` that triggers at
/// `reviewed` samples. Returns when run 1 has produced and registered its ModelVersion.
async fn trained_once(ns: &TestNamespace, dir: &Path, policy: &str, reviewed: usize) -> ModelVersion {
    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.display());
    let base = generate(&["model", "--task", "detection", "--out", &uri("base.onnx")]);
    generate(&["dataset", "--task", "detection", "--format", "coco", "--count", "48", "--out", &uri("train")]);
    let count = reviewed.to_string();
    generate(&[
        "dataset",
        "--task",
        "detection",
        "--format",
        "coco",
        "--count",
        &count,
        "--seed",
        "7",
        "--out",
        &uri("feedback"),
    ]);
    let base_mv = serde_json::json!({
        "apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "base"}, "spec": base,
    });
    ns.apply_yaml(&serde_json::to_string(&base_mv).unwrap()).await.unwrap();
    ns.apply_yaml(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}\nspec: {{champion: {{modelVersion: base}}, replicas: 0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: train}}
spec: {{uri: '{train}', format: coco, task: detection, labels: [circle, square, triangle]}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: '{feedback}', format: coco, task: detection, labels: [circle, square, triangle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec:
  deployment: shapes
  trainingData: {{datasetVersion: train}}
  feedbackLoop: {{datasetVersion: fb}}
  continuousTraining: {{trigger: {{reviewedSamples: {reviewed}}}, hyperparameters: {{epochs: 2, batchSize: 8}}}}
  continuousDeployment: {{policy: {policy}}}
",
        train = uri("train"),
        feedback = uri("feedback"),
    ))
    .await
    .unwrap();
    let produced = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).and_then(|s| s.last_model_version.clone()).is_some()
    };
    let pipeline = ns.wait_for::<DataPipeline>("loop", produced, 240).await.unwrap().unwrap();
    let status = pipeline.status.unwrap();
    assert_eq!(status.last_model_version.as_deref(), Some("loop-r1"));
    assert_eq!(training_jobs(ns).await, vec!["loop-train-1".to_string()], "exactly one Job for one trigger");
    let ready = condition_is("Ready", "True");
    let mv = ns
        .wait_for::<ModelVersion>(
            "loop-r1",
            |m| m.and_then(|m| m.status.as_ref()).is_some_and(|s| ready(&s.conditions)),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    let provenance = mv.spec.provenance.clone().unwrap();
    assert_eq!(provenance.parent.as_deref(), Some("base"));
    assert_eq!(provenance.job.as_deref(), Some("loop-train-1"));
    assert_eq!(provenance.pipeline.as_deref(), Some("loop"));
    assert_eq!(provenance.dataset_versions, ["train", "fb-r1"], "the training data and run 1's frozen feedback");
    assert!(mv.spec.metrics.contains_key("mAP50"), "{:?}", mv.spec.metrics);
    mv
}

fn served(d: &FlywheelDeployment) -> (Option<String>, Option<String>) {
    let s = d.status.clone().unwrap_or_default();
    (s.champion, s.shadow)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_shadow_deploys_the_trained_model_as_shadow() {
    let (ns, client) = setup("op-shadow").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client, &ns.name, dir.path());
    trained_once(&ns, dir.path(), "shadow", 4).await;
    let d = ns
        .wait_for::<FlywheelDeployment>("shapes", |d| d.is_some_and(|d| served(d).1.as_deref() == Some("loop-r1")), 60)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served(&d).0.as_deref(), Some("base"), "the champion stays");
    let history = d.status.unwrap().promotion_history;
    assert!(
        history.iter().any(|p| p.reason == "ContinuousDeployment" && p.model_version.as_deref() == Some("loop-r1"))
    );
    // The profiling Job ran too: drift and outlier metrics are available to the pods.
    let profiled =
        |p: Option<&DataPipeline>| p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.unsupervised_metrics_available);
    let p = ns.wait_for::<DataPipeline>("loop", profiled, 120).await.unwrap().unwrap();
    let stats = p.status.unwrap().reference_statistics_uri.unwrap();
    assert!(Path::new(stats.trim_start_matches("file://")).exists(), "{stats}");
    let cm = ns
        .wait_for::<ConfigMap>(
            "shapes-serving",
            |c| c.and_then(|c| c.data.as_ref()).is_some_and(|d| d["serving.yaml"].contains("reference-statistics")),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    assert!(cm.data.unwrap()["serving.yaml"].contains("loop-r1"));
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_champion_replaces_the_champion() {
    let (ns, client) = setup("op-champion").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client, &ns.name, dir.path());
    trained_once(&ns, dir.path(), "champion", 4).await;
    let d = ns
        .wait_for::<FlywheelDeployment>("shapes", |d| d.is_some_and(|d| served(d).0.as_deref() == Some("loop-r1")), 60)
        .await
        .unwrap()
        .unwrap();
    let spec_champion = d.spec.champion.model_version.clone();
    assert_eq!(spec_champion, "base", "the promotion lives in status; the spec (Git) is untouched");
    let promotion = d
        .status
        .unwrap()
        .promotion_history
        .into_iter()
        .find(|p| p.model_version.as_deref() == Some("loop-r1"))
        .unwrap();
    assert_eq!(promotion.previous.as_deref(), Some("base"));
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_manual_leaves_a_candidate() {
    let (ns, client) = setup("op-manual").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client, &ns.name, dir.path());
    trained_once(&ns, dir.path(), "manual", 4).await;
    let waiting = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).is_some_and(|s| s.candidate_model_version.as_deref() == Some("loop-r1"))
    };
    let p = ns.wait_for::<DataPipeline>("loop", waiting, 60).await.unwrap().unwrap();
    assert_eq!(p.status.unwrap().phase.as_deref(), Some("WaitingForApproval"));
    let d = ns.api::<FlywheelDeployment>().get("shapes").await.unwrap();
    assert_eq!(served(&d), (Some("base".to_string()), None), "manual changes nothing");
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_with_a_missing_deployment_waits_with_a_condition() {
    let (ns, client) = setup("op-invalid").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client, &ns.name, dir.path());
    ns.apply_yaml(
        "apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {name: lost}\nspec: {deployment: nowhere}\n",
    )
    .await
    .unwrap();
    let invalid = condition_is("Ready", "False");
    let p = ns
        .wait_for::<DataPipeline>(
            "lost",
            |p| p.and_then(|p| p.status.as_ref()).is_some_and(|s| invalid(&s.conditions)),
            60,
        )
        .await
        .unwrap()
        .unwrap();
    let ready = condition::find(&p.status.unwrap().conditions, "Ready").unwrap().clone();
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(ready.message.contains("nowhere"), "{}", ready.message);
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_training_job_sets_a_condition_and_registers_nothing() {
    let (ns, client) = setup("op-fail").await;
    let dir = tempfile::tempdir().unwrap();
    let operator = start_operator(client, &ns.name, dir.path());
    let uri = |leaf: &str| format!("file://{}/{leaf}", dir.path().display());
    let mut base = generate(&["model", "--task", "detection", "--out", &uri("base.onnx")]);
    generate(&["dataset", "--task", "detection", "--format", "coco", "--count", "2", "--out", &uri("feedback")]);
    // The base model's file is not ONNX: the trainer must fail, loudly.
    std::fs::write(dir.path().join("base.onnx"), b"not a model").unwrap();
    base["artifact"].as_object_mut().unwrap().remove("sha256");
    let base_mv = serde_json::json!({"apiVersion": "flywheel.dev/v1alpha1", "kind": "ModelVersion", "metadata": {"name": "base"}, "spec": base});
    ns.apply_yaml(&serde_json::to_string(&base_mv).unwrap()).await.unwrap();
    ns.apply_yaml(&format!(
        "apiVersion: flywheel.dev/v1alpha1\nkind: Deployment\nmetadata: {{name: shapes}}\nspec: {{champion: {{modelVersion: base}}, replicas: 0}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DatasetVersion\nmetadata: {{name: fb}}
spec: {{uri: '{}', format: coco, task: detection, labels: [circle, square, triangle], feedback: true}}
---
apiVersion: flywheel.dev/v1alpha1\nkind: DataPipeline\nmetadata: {{name: loop}}
spec: {{deployment: shapes, feedbackLoop: {{datasetVersion: fb}}, continuousTraining: {{trigger: {{reviewedSamples: 2}}}}}}
",
        uri("feedback")
    ))
    .await
    .unwrap();
    let failed = condition_is("TrainingSucceeded", "False");
    let p = ns
        .wait_for::<DataPipeline>(
            "loop",
            |p| p.and_then(|p| p.status.as_ref()).is_some_and(|s| failed(&s.conditions)),
            180,
        )
        .await
        .unwrap()
        .unwrap();
    let status = p.status.unwrap();
    let c = condition::find(&status.conditions, "TrainingSucceeded").unwrap().clone();
    assert_eq!(c.reason, "TrainingFailed");
    assert!(c.message.contains("loop-train-1"), "{}", c.message);
    assert_eq!(status.run_history.len(), 1);
    assert_eq!(status.run_history[0].outcome, "Failed");
    assert!(status.last_model_version.is_none());
    assert!(ns.api::<ModelVersion>().get_opt("loop-r1").await.unwrap().is_none(), "a failed run registers nothing");
    let d = ns.api::<FlywheelDeployment>().get("shapes").await.unwrap();
    assert!(d.status.unwrap_or_default().promotion_history.iter().all(|p| p.reason == "Spec"), "no promotion");
    // The trainer said why in its log.
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    let pod = pods.list(&ListParams::default().labels("job-name=loop-train-1")).await.unwrap().items.remove(0);
    let log = ns.container_log(&pod.name_any(), "trainer").unwrap_or_default();
    assert!(log.contains("error"), "trainer log: {log}");
    operator.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_release_hands_over() {
    use flywheel_operator::leader::LeaderElector;
    let (ns, client) = setup("op-lease").await;
    let a = LeaderElector::new(client.clone(), &ns.name, "flywheel-operator", "replica-a".into());
    let b = LeaderElector::new(client.clone(), &ns.name, "flywheel-operator", "replica-b".into());
    assert!(a.try_acquire_or_renew().await.unwrap(), "the first replica takes the free lease");
    assert!(!b.try_acquire_or_renew().await.unwrap(), "a held, unexpired lease is not taken");
    assert!(a.try_acquire_or_renew().await.unwrap(), "the holder renews");
    a.release().await;
    assert!(b.try_acquire_or_renew().await.unwrap(), "a released lease is taken at once");
    assert!(!a.try_acquire_or_renew().await.unwrap());
    let lease = ns.api::<k8s_openapi::api::coordination::v1::Lease>().get("flywheel-operator").await.unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    assert_eq!(spec.lease_transitions, Some(1));
}
