//! Against a real S3 server (SeaweedFS): generate a dataset and a model into a bucket, profile
//! and train reading from it, and find the outputs there.

use std::process::Command;

use crate::common::seaweed::Seaweed;
use crate::common::*;
use flywheel_api::common::StorageUri;
use flywheel_api::dataset_version::DatasetVersionSpec;
use flywheel_api::model_version::ModelVersionSpec;
use flywheel_api::serving::ReferenceStatistics;
use flywheel_api::training::{NamedDataset, NamedModel, ProfileRequest, TrainResult};
use object_store::aws::AmazonS3Builder;
use object_store::{ObjectStoreExt, path::Path};

fn trainer(s3: &Seaweed, args: &[&str], request: Option<String>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(s3.env());
    if let Some(r) = request {
        cmd.env("FLYWHEEL_REQUEST", r);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "flywheel-trainer {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn datasets_and_outputs_on_s3() {
    let s3 = Seaweed::start();
    s3.create_bucket("flywheel");
    let ds: DatasetVersionSpec = serde_json::from_str(&trainer(
        &s3,
        &[
            "generate",
            "dataset",
            "--task",
            "detection",
            "--format",
            "yolo",
            "--count",
            "40",
            "--out",
            "s3://flywheel/datasets/shapes",
        ],
        None,
    ))
    .unwrap();
    assert_eq!(ds.uri.as_str(), "s3://flywheel/datasets/shapes");
    let model: ModelVersionSpec = serde_json::from_str(&trainer(
        &s3,
        &["generate", "model", "--task", "detection", "--out", "s3://flywheel/models/base/model.onnx"],
        None,
    ))
    .unwrap();
    assert_eq!(model.artifact.uri.as_str(), "s3://flywheel/models/base/model.onnx");

    let dataset = NamedDataset { name: "shapes".into(), spec: ds };
    let profile = ProfileRequest {
        dataset: dataset.clone(),
        output_uri: StorageUri("s3://flywheel/datasets/shapes/profile".into()),
    };
    trainer(&s3, &["profile"], Some(serde_json::to_string(&profile).unwrap()));

    let dir = tempfile::tempdir().unwrap();
    let mut req = request(NamedModel { name: "base".into(), spec: model }, vec![dataset], dir.path(), 2, 0.02);
    req.output_uri = StorageUri("s3://flywheel/runs/1".into());
    req.max_regression = 1.0;
    let printed: TrainResult =
        serde_json::from_str(&trainer(&s3, &["train"], Some(serde_json::to_string(&req).unwrap()))).unwrap();

    let store = AmazonS3Builder::new()
        .with_endpoint(s3.endpoint())
        .with_allow_http(true)
        .with_bucket_name("flywheel")
        .with_region("us-east-1")
        .with_access_key_id("flywheel")
        .with_secret_access_key("flywheel-secret")
        .build()
        .unwrap();
    let get = |p: &'static str| {
        let store = &store;
        async move { store.get(&Path::from(p)).await.unwrap().bytes().await.unwrap() }
    };
    let stats: ReferenceStatistics =
        serde_json::from_slice(&get("datasets/shapes/profile/reference-statistics.json").await).unwrap();
    assert_eq!(stats.sample_count, 40);
    let result: TrainResult = serde_json::from_slice(&get("runs/1/result.json").await).unwrap();
    assert_eq!((&result.sha256, &result.model_uri), (&printed.sha256, &printed.model_uri));
    assert_eq!(result.model_uri.as_str(), "s3://flywheel/runs/1/model.onnx");
    let model_bytes = get("runs/1/model.onnx").await;
    assert_eq!(flywheel_trainer::model::sha256_hex(&model_bytes), result.sha256);
    for f in ["runs/1/metrics.json", "runs/1/progress.json"] {
        serde_json::from_slice::<serde_json::Value>(&get(f).await).unwrap();
    }
}
