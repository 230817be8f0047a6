//! The loop's fault cases on the local cluster: a training run that fails, and corrupt models.
//! (An API server restart mid-loop is in api_restart.rs: it needs a cluster of its own.)

use flywheel_api::{FlywheelDeployment, ModelVersion, condition};
use flywheel_demo::flywheel_loop::{CHAMPION, DEPLOYMENT, SHADOW};
use flywheel_demo::{FlywheelLoop, Platform, assets, quickstart};
use flywheel_e2e::{TestNamespace, shared_cluster};
use kube::api::{Patch, PatchParams};
use serde_json::json;

mod common;

/// The quickstart with a trigger of 5 reviews and no cooldown.
fn quick_trigger(file: &str, yaml: String) -> String {
    if file != "05-data-pipeline.yaml" {
        return yaml;
    }
    yaml.replace("reviewedSamples: 20", "reviewedSamples: 5").replace("cooldown: 10m", "cooldown: 1s")
}

async fn serving_loop(prefix: &str, edit: fn(&str, String) -> String) -> (TestNamespace, FlywheelLoop) {
    let ns = TestNamespace::new(shared_cluster(), prefix).await.unwrap();
    let platform = Platform::new(ns.cluster.clone(), &ns.name, common::bin_dir()).await.unwrap();
    platform.install_operator().await.unwrap();
    let samples = common::assets(&platform, 30);
    let mut fw = FlywheelLoop::new(platform, samples);
    quickstart::apply(&fw.platform, edit).await.unwrap();
    fw.wait_model_ready(CHAMPION, 120).await.unwrap();
    fw.wait_serving(CHAMPION).await.unwrap();
    (ns, fw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_training_run_promotes_nothing_and_the_next_trigger_retries() {
    let (_ns, mut fw) = serving_loop("fault-train", quick_trigger).await;
    fw.wait_profiled().await.unwrap();
    // A training image is damaged in storage: the trainer must fail, loudly.
    let bucket = common::bucket(&fw.platform);
    bucket.put("datasets/shapes-train/images/000000.png", b"not a png".to_vec()).await.unwrap();

    fw.send_traffic(12).await.unwrap();
    assert_eq!(fw.review(5, 60, |_| true).await.unwrap().len(), 5);
    let p = fw.wait_run_finished(1).await.unwrap();
    let status = p.status.unwrap();
    assert_eq!(status.run_history[0].outcome, "Failed", "{:?}", status.run_history);
    let c = condition::find(&status.conditions, "TrainingSucceeded").expect("TrainingSucceeded condition").clone();
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "TrainingFailed"));
    assert!(c.message.contains("shapes-train-1"), "{}", c.message);
    assert!(
        fw.platform.api::<ModelVersion>().get_opt("shapes-r1").await.unwrap().is_none(),
        "a failed run registers nothing"
    );
    let d: FlywheelDeployment = fw.platform.api().get(DEPLOYMENT).await.unwrap();
    let st = d.status.unwrap();
    assert_eq!((st.champion.as_deref(), st.shadow.as_deref()), (Some(CHAMPION), Some(SHADOW)));
    assert!(st.promotion_history.iter().all(|p| p.reason == "Spec"), "no promotion: {:?}", st.promotion_history);

    // Repaired data; the next trigger (5 more reviews) runs again and succeeds.
    let s3_env = fw.platform.s3_env();
    let bin = fw.platform.bin_dir.clone();
    tokio::task::spawn_blocking(move || assets::upload_models_and_training_data(&bin, &s3_env)).await.unwrap().unwrap();
    fw.send_traffic(10).await.unwrap();
    assert_eq!(fw.review(5, 60, |_| true).await.unwrap().len(), 5);
    let p = fw.wait_run_finished(2).await.unwrap();
    let run = p.status.unwrap().run_history.into_iter().find(|r| r.number == 2).unwrap();
    assert_eq!((run.outcome.as_str(), run.model_version.as_deref()), ("Succeeded", Some("shapes-r2")), "{run:?}");
    fw.wait_model_ready("shapes-r2", 120).await.unwrap();
    fw.wait_shadow("shapes-r2").await.unwrap();
    assert_eq!(fw.training_jobs().await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_model_fails_and_the_champion_keeps_serving() {
    let (_ns, fw) = serving_loop("fault-model", |_, y| y).await;
    let bucket = common::bucket(&fw.platform);
    let good = bucket.get("models/shapes-detector/v1/model.onnx").await.unwrap();
    let (good_sha, _) = bucket.sha256("models/shapes-detector/v1/model.onnx").await.unwrap();
    let truncated = good.slice(..good.len() / 2);
    bucket.put("models/shapes-detector/v3/model.onnx", truncated.clone()).await.unwrap();
    bucket.put("models/shapes-detector/v4/model.onnx", truncated).await.unwrap();
    let mv = |name: &str, version: &str, sha: Option<&str>| {
        let sha = sha.map(|s| format!("\n    sha256: {s}")).unwrap_or_default();
        format!(
            "apiVersion: flywheel.dev/v1alpha1\nkind: ModelVersion\nmetadata: {{name: {name}}}\nspec:\n  model: shapes-detector\n  version: {version}\n  task: detection\n  labels: [circle, square, triangle]\n  artifact:\n    uri: s3://flywheel-demo/models/shapes-detector/{version}/model.onnx{sha}\n    credentials: {{secretName: flywheel-storage}}\n  input: {{width: 64, height: 64, resize: letterbox}}\n  output: {{decoder: yolo}}\n"
        )
    };
    let deployments = fw.platform.api::<FlywheelDeployment>();
    let set_champion = |name: &'static str| {
        let deployments = deployments.clone();
        async move {
            deployments
                .patch(
                    DEPLOYMENT,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"champion": {"modelVersion": name}}})),
                )
                .await
                .unwrap();
        }
    };
    let png = common::first_sample_png(&fw.platform);
    let still_serving_v1 = || async {
        let st = fw.serving().unwrap().status().await.unwrap();
        assert_eq!(st["champion"]["version"], CHAMPION, "{st}");
        fw.serving().unwrap().predict(&png).await.expect("the old champion still answers");
    };

    // 1. The file does not match its digest: the ModelVersion fails; the Deployment refuses it.
    flywheel_e2e::apply_yaml(
        &fw.platform.client,
        Some(&fw.platform.namespace),
        &mv("shapes-detector-v3", "v3", Some(&good_sha)),
    )
    .await
    .unwrap();
    let failed = |m: Option<&ModelVersion>| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| condition::find(&s.conditions, "Ready").is_some_and(|c| c.reason == "DigestMismatch"))
    };
    fw.platform.wait_for::<ModelVersion>("shapes-detector-v3", failed, 60).await.unwrap();
    set_champion("shapes-detector-v3").await;
    let refused = |d: Option<&FlywheelDeployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            condition::find(&s.conditions, "ChampionReady")
                .is_some_and(|c| c.status == "False" && c.message.contains("shapes-detector-v3"))
        })
    };
    let d = fw.platform.wait_for::<FlywheelDeployment>(DEPLOYMENT, refused, 60).await.unwrap().unwrap();
    assert_eq!(d.status.unwrap().champion.as_deref(), Some(CHAMPION));
    still_serving_v1().await;

    // 2. No digest to check and not a model: the verification Job cannot load it, so it fails
    //    before any Pod sees it; the Deployment refuses it and the old champion keeps serving.
    flywheel_e2e::apply_yaml(&fw.platform.client, Some(&fw.platform.namespace), &mv("shapes-detector-v4", "v4", None))
        .await
        .unwrap();
    let unloadable = |m: Option<&ModelVersion>| {
        m.and_then(|m| m.status.as_ref())
            .is_some_and(|s| condition::find(&s.conditions, "Ready").is_some_and(|c| c.reason == "VerificationFailed"))
    };
    let v4 = fw.platform.wait_for::<ModelVersion>("shapes-detector-v4", unloadable, 120).await.unwrap().unwrap();
    let status = v4.status.unwrap();
    let ready = condition::find(&status.conditions, "Ready").unwrap();
    assert!(ready.message.contains("invalid model"), "{}", ready.message);
    assert!(status.digest.is_some() && status.verification.is_some_and(|v| !v.passed));
    set_champion("shapes-detector-v4").await;
    let refused_v4 = |d: Option<&FlywheelDeployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            condition::find(&s.conditions, "ChampionReady")
                .is_some_and(|c| c.status == "False" && c.message.contains("shapes-detector-v4"))
        })
    };
    let d = fw.platform.wait_for::<FlywheelDeployment>(DEPLOYMENT, refused_v4, 60).await.unwrap().unwrap();
    assert_eq!(d.status.unwrap().champion.as_deref(), Some(CHAMPION));
    still_serving_v1().await;
}
