//! The whole flywheel on the local cluster, as the README demo runs it, asserting every
//! transition: the operator from the Helm chart, the quickstart on a real S3 server, traffic,
//! reviews, one retraining Job, the new model as shadow, and the promotion gate.

use flywheel_api::deployment::Role;
use flywheel_api::{DataPipeline, FlywheelDeployment, ModelVersion};
use flywheel_demo::flywheel_loop::{CHAMPION, DEPLOYMENT, FEEDBACK, PIPELINE, SHADOW, TRAIN};
use flywheel_demo::serving::has_metric;
use flywheel_demo::{FlywheelLoop, Platform, quickstart};
use flywheel_e2e::{TestNamespace, shared_cluster};
use flywheel_types::dataset::coco;
use serde_json::json;

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_loop_from_traffic_to_a_gated_promotion() {
    let ns = TestNamespace::new(shared_cluster(), "loop").await.unwrap();
    let platform = Platform::new(ns.cluster.clone(), &ns.name, common::bin_dir()).await.unwrap();
    let operator = platform.install_operator().await.unwrap();
    assert_eq!(operator.spec.as_ref().unwrap().service_account_name.as_deref(), Some("flywheel"));
    let samples = common::assets(&platform, 60);
    let mut fw = FlywheelLoop::new(platform, samples);
    quickstart::apply(&fw.platform, |_, y| y).await.unwrap();

    // Serving: the champion answers, the shadow is loaded beside it.
    fw.wait_model_ready(CHAMPION, 120).await.unwrap();
    fw.wait_serving(CHAMPION).await.unwrap();
    fw.wait_shadow(SHADOW).await.unwrap();

    // Profiling: reference statistics reach the pipeline and the Pod.
    let p = fw.wait_profiled().await.unwrap();
    let stats = p.status.unwrap().reference_statistics_uri.unwrap();
    assert!(stats.starts_with("s3://flywheel-demo/runs/"), "{stats}");

    // Predictions: the 0.4 threshold applies to every shape returned.
    let predictions = fw.send_traffic(30).await.unwrap();
    assert_eq!(predictions.len(), 30);
    assert!(predictions.iter().flat_map(|p| &p.shapes).all(|s| s.confidence >= 0.4));
    let metrics = fw.serving().unwrap().metrics().await.unwrap();
    for name in ["flywheel_drift_ks", "flywheel_outlier_score", "flywheel_predictions_total"] {
        assert!(has_metric(&metrics, name), "{name} missing from /metrics");
    }

    // Shadow predictions are logged: records in the object store carry the shadow's output.
    // (The log writer flushes about every second.)
    flywheel_e2e::wait::eventually("a logged record with the shadow's output", 30, || async {
        let logged = common::logged_records(&fw.platform).await;
        logged
            .iter()
            .any(|r| r["shadow"]["version"] == SHADOW)
            .then_some(())
            .ok_or(format!("{} records, none from {SHADOW}", logged.len()))
    })
    .await
    .unwrap();

    // Reviews land in the feedback DatasetVersion; the 20th starts exactly one training Job.
    let reviewed = fw.review(20, 60, |_| true).await.unwrap();
    assert_eq!(reviewed.len(), 20);
    let feedback = fw.wait_feedback_count(20).await.unwrap();
    assert_eq!(feedback.status.unwrap().reviewed_count, Some(20));
    // One annotation object per review, never a rewritten shared file.
    let feedback_root = common::bucket(&fw.platform).join("datasets/shapes-feedback");
    let samples = feedback_root.get_all(coco::SAMPLES_DIR).await.unwrap();
    assert_eq!(samples.len(), 20);
    let index = feedback_root.get_opt(coco::ANNOTATIONS_FILE).await.unwrap();
    assert_eq!(coco::assemble(index.as_deref(), &samples).unwrap().images.len(), 20);
    let run = fw.wait_run_finished(1).await.unwrap();
    let history = run.status.unwrap().run_history;
    assert_eq!((history[0].outcome.as_str(), history[0].reviewed_at_trigger), ("Succeeded", 20), "{history:?}");
    assert_eq!(fw.training_jobs().await.unwrap().len(), 1);

    // The new ModelVersion: Ready, with provenance.
    let trained = history[0].model_version.clone().expect("run 1 registered a model");
    assert_eq!(trained, "shapes-r1");
    let mv: ModelVersion = fw.wait_model_ready(&trained, 120).await.unwrap();
    let prov = mv.spec.provenance.clone().expect("provenance");
    assert_eq!(prov.parent.as_deref(), Some(CHAMPION));
    assert_eq!(prov.job.as_deref(), Some("shapes-train-1"));
    // The run trained on the feedback frozen when it started, never on the growing dataset.
    let frozen = format!("{FEEDBACK}-r1");
    for ds in [TRAIN, frozen.as_str()] {
        assert!(prov.dataset_versions.iter().any(|d| d == ds), "{ds} missing from {prov:?}");
    }
    assert_eq!(prov.hyperparameters.get("epochs").map(String::as_str), Some("6"), "{prov:?}");
    assert!(mv.spec.metrics.get("mAP50").is_some_and(|m| *m > 0.1), "{:?}", mv.spec.metrics);

    // Placement per policy (shadow), recorded in the Deployment's history.
    let d = fw.wait_shadow(&trained).await.unwrap();
    let promoted = d.status.unwrap().promotion_history;
    let last = promoted.last().unwrap();
    assert_eq!(
        (last.reason.as_str(), last.model_version.as_deref(), last.previous.as_deref()),
        ("ContinuousDeployment", Some("shapes-r1"), Some(SHADOW))
    );

    // The gate: on 20 samples both scored, the better shadow becomes champion. (The figures
    // are asserted from the promotion record: the pods' /status and the Deployment's summary
    // move on to the new pair as soon as the promotion lands.)
    fw.review_shadow_samples(&trained, 20).await.unwrap();
    let d: FlywheelDeployment = fw.wait_champion(&trained, 120).await.unwrap();
    let status = d.status.unwrap();
    let gate = status.promotion_history.iter().rev().find(|p| p.role == Role::Champion).unwrap();
    assert_eq!(
        (gate.reason.as_str(), gate.model_version.as_deref(), gate.previous.as_deref()),
        ("PromotionGate", Some("shapes-r1"), Some(CHAMPION))
    );
    // "shadow 0.658 beats champion 0.000 by at least 0.020 on 20 reviewed samples"
    let figures: Vec<f64> = gate.message.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    let [shadow, champion, margin, samples] = figures[..] else { panic!("gate message: {}", gate.message) };
    assert!(shadow >= champion + margin && margin == 0.02 && samples >= 20.0, "{}", gate.message);

    // The cooldown holds: once the pipeline has counted the 20 reviews since the run (the
    // feedback dataset is recounted every few seconds), still one Job.
    let counted = |p: Option<&DataPipeline>| {
        p.and_then(|p| p.status.as_ref()).and_then(|s| s.reviewed_since_last_training).unwrap_or(0) >= 20
    };
    fw.platform.wait_for::<DataPipeline>(PIPELINE, counted, 60).await.unwrap();
    assert_eq!(fw.training_jobs().await.unwrap().len(), 1);

    // The threshold hot-swaps: raised to 0.9, weaker shapes disappear without a Pod restart.
    let before = common::inference_pod_uid(&fw.platform).await;
    fw.platform
        .api::<FlywheelDeployment>()
        .patch(
            DEPLOYMENT,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"confidenceThreshold": 0.9}})),
        )
        .await
        .unwrap();
    let client = fw.serving().unwrap().clone();
    let png = common::first_sample_png(&fw.platform);
    flywheel_e2e::wait::eventually("predictions filtered at 0.9", 60, || {
        let (client, png) = (client.clone(), png.clone());
        async move {
            let p = client.predict(&png).await.map_err(|e| e.to_string())?;
            p.shapes.iter().all(|s| s.confidence >= 0.9).then_some(()).ok_or_else(|| format!("{:?}", p.shapes))
        }
    })
    .await
    .unwrap();
    assert_eq!(common::inference_pod_uid(&fw.platform).await, before, "the threshold change restarted the Pod");
}
