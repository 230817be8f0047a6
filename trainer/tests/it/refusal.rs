//! A fine-tune that makes the model worse than its base (beyond the tolerance) is refused: no
//! model or result is written and the error says why.

use crate::common::*;
use flywheel_api::common::{StorageUri, Task};
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::NamedModel;
use flywheel_storage::Location;
use flywheel_trainer::TrainerError;
use flywheel_trainer::generate::{DatasetOptions, write_dataset};
use flywheel_trainer::train::report::Progress;

#[tokio::test]
async fn a_regressing_model_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    // A good base: the generated classifier fine-tuned on correctly labelled shapes.
    let good = dataset(dir.path(), "good", Task::Classification, DatasetFormat::Imagefolder, 90, 51).await;
    let first =
        request(model(dir.path(), Task::Classification, 1), vec![good.clone()], &dir.path().join("run1"), 3, 0.05);
    let base = flywheel_trainer::train::run(&first).await.unwrap();
    assert!(base.metrics["accuracy"] > 0.8, "{:?}", base.metrics);
    let mut spec = first.base_model.spec.clone();
    spec.artifact.uri = base.model_uri.clone();
    spec.artifact.sha256 = Some(base.sha256.clone());

    // Mislabelled training data: every class's images filed under another class's name.
    let mut opts = DatasetOptions::new(Task::Classification, DatasetFormat::Imagefolder, 90);
    opts.seed = 52;
    opts.labels = vec!["square".into(), "triangle".into(), "circle".into()];
    let wrong_spec =
        write_dataset(&Location::open(&file_uri(&dir.path().join("wrong"))).unwrap(), &opts).await.unwrap();
    let wrong = flywheel_api::training::NamedDataset { name: "wrong".into(), spec: wrong_spec };

    let out = dir.path().join("run2");
    let mut req = request(NamedModel { name: "good".into(), spec }, vec![wrong], &out, 3, 0.05);
    req.eval = Some(good);
    req.output_uri = StorageUri(file_uri(&out));
    let err = flywheel_trainer::train::run(&req).await.expect_err("a regression must be refused");
    assert!(matches!(err, TrainerError::Regression { .. }), "{err}");
    assert!(err.to_string().contains("refusing to write the trained model"), "{err}");
    for name in ["model.onnx", "metrics.json", "result.json"] {
        assert!(!out.join(name).exists(), "{name} was written");
    }
    let progress: Progress = serde_json::from_slice(&std::fs::read(out.join("progress.json")).unwrap()).unwrap();
    assert_eq!(progress.state, "rejected");
}

#[tokio::test]
async fn a_model_whose_outputs_the_trainer_cannot_fine_tune_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path(), "coco", Task::Detection, DatasetFormat::Coco, 10, 53).await;
    let mut base = model(dir.path(), Task::Detection, 1);
    base.spec.output.strides = vec![8, 16, 32];
    let out = dir.path().join("run");
    let req = request(base, vec![ds], &out, 1, 0.01);
    let err = flywheel_trainer::train::run(&req).await.expect_err("a raw grid output must be refused");
    assert!(matches!(err, TrainerError::Request(_)), "{err}");
    assert!(err.to_string().contains("cannot be fine-tuned") && err.to_string().contains("raw grids"), "{err}");
    assert!(!out.join("result.json").exists());
}
