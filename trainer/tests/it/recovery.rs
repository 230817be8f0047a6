//! A good model drifts and the trainer brings it back: a model fine-tuned on the source domain
//! is retrained on the old data replayed with reviewed samples of a shifted domain (a feedback
//! DatasetVersion). The run is judged on the newest feedback, reports the old data's metric
//! separately, and writes per-epoch progress.

use std::path::Path;

use flywheel_api::common::Task;
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::{NamedDataset, NamedModel, TrainResult};
use flywheel_storage::Location;
use flywheel_trainer::generate::{DatasetOptions, Domain, write_dataset};
use flywheel_trainer::train::report::{MetricsReport, Progress};
use flywheel_trainer::train::{self, TrainOptions};

use crate::common::{file_uri, model, request};

async fn dataset(dir: &Path, name: &str, task: Task, domain: &str, count: usize, seed: u64) -> NamedDataset {
    let format = if task == Task::Detection { DatasetFormat::Coco } else { DatasetFormat::Imagefolder };
    let mut opts = DatasetOptions::new(task, format, count);
    opts.seed = seed;
    opts.domain = Domain::parse(domain, 1.0).unwrap();
    let spec = write_dataset(&Location::open(&file_uri(&dir.join(name))).unwrap(), &opts).await.unwrap();
    NamedDataset { name: name.into(), spec }
}

fn trained(base: &NamedModel, result: &TrainResult, name: &str) -> NamedModel {
    let mut spec = base.spec.clone();
    spec.artifact.uri = result.model_uri.clone();
    spec.artifact.sha256 = Some(result.sha256.clone());
    NamedModel { name: name.into(), spec }
}

/// Trains a source model, then retrains it on source + `feedback` reviewed samples of `domain`;
/// returns the retraining result and the run directory.
async fn drift_and_recover(
    dir: &Path,
    task: Task,
    domain: &str,
    (source_count, feedback_count): (usize, usize),
    (source_epochs, recover_epochs, lr): (u32, u32, f64),
) -> (TrainResult, std::path::PathBuf) {
    let source = dataset(dir, "source", task, "source", source_count, 51).await;
    let base = model(dir, task, 1);
    let good =
        train::run(&request(base.clone(), vec![source.clone()], &dir.join("good"), source_epochs, lr)).await.unwrap();
    let good = trained(&base, &good, "good");
    let mut feedback = dataset(dir, "feedback", task, domain, feedback_count, 52).await;
    feedback.spec.feedback = true;
    let out = dir.join("recover");
    let req = request(good, vec![source, feedback], &out, recover_epochs, lr);
    let result = train::run_with(&req, &TrainOptions::default()).await.unwrap();
    (result, out)
}

fn check_report(out: &Path, result: &TrainResult, metric: &str, feedback_eval: u64) {
    let keys: Vec<&String> = result.metrics.keys().collect();
    let (fb, old) = (format!("{metric}_feedback"), format!("{metric}_old"));
    assert_eq!(keys, [metric, fb.as_str(), old.as_str()], "{result:?}");
    assert_eq!(result.metrics[metric], result.metrics[&fb], "the newest feedback judges the run");
    let report: MetricsReport = serde_json::from_slice(&std::fs::read(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(report.judged_on, "feedback");
    assert_eq!(report.samples["evalFeedback"], feedback_eval);
    let progress: Progress = serde_json::from_slice(&std::fs::read(out.join("progress.json")).unwrap()).unwrap();
    assert_eq!((progress.state.as_str(), progress.judged_on.as_str()), ("finished", "feedback"));
    assert_eq!(progress.epoch as usize, progress.history.len());
    assert!(progress.best_epoch >= 1 && progress.best_epoch <= progress.epoch);
    assert!(progress.images_per_second.unwrap() > 0.0 && progress.eta_seconds == Some(0.0));
    assert!(progress.history.iter().all(|e| e.metrics.contains_key(&fb) && e.learning_rate > 0.0));
}

#[tokio::test]
async fn a_classifier_drifted_to_a_warm_cast_recovers_on_reviewed_samples_without_forgetting() {
    let dir = tempfile::tempdir().unwrap();
    let (result, out) = drift_and_recover(dir.path(), Task::Classification, "warm", (120, 50), (3, 5, 0.05)).await;
    let (b, m) = (&result.base_metrics, &result.metrics);
    eprintln!("classifier, warm feedback: base {b:?} -> {m:?}");
    // 50 feedback samples: the newest 10 judge; 96 + 40 train; 24 old samples evaluate.
    assert_eq!((result.train_samples, result.eval_samples), (136, 34));
    assert!(b["accuracy_old"] >= 0.8, "the source model is good on source data: {b:?}");
    assert!(b["accuracy_feedback"] <= b["accuracy_old"] - 0.2, "the warm cast hurts: {b:?}");
    assert!(m["accuracy_feedback"] >= b["accuracy_feedback"] + 0.2, "{b:?} -> {m:?}");
    // 24 old samples: one is 0.042. Without replay the source accuracy falls by far more.
    assert!(m["accuracy_old"] >= b["accuracy_old"] - 0.15, "replay keeps the source domain: {b:?} -> {m:?}");
    check_report(&out, &result, "accuracy", 10);
}

#[tokio::test]
async fn a_detector_drifted_to_small_objects_recovers_on_reviewed_samples() {
    let dir = tempfile::tempdir().unwrap();
    let (result, out) = drift_and_recover(dir.path(), Task::Detection, "small", (160, 60), (8, 6, 0.02)).await;
    let (b, m) = (&result.base_metrics, &result.metrics);
    eprintln!("detector, small-object feedback: base {b:?} -> {m:?}");
    assert!(b["mAP50_feedback"] <= b["mAP50_old"] - 0.2, "small objects hurt: {b:?}");
    assert!(m["mAP50_feedback"] >= b["mAP50_feedback"] + 0.2, "{b:?} -> {m:?}");
    assert!(m["mAP50_old"] >= b["mAP50_old"] - 0.05, "replay keeps the source domain: {b:?} -> {m:?}");
    check_report(&out, &result, "mAP50", 12);
}
