//! What the loop tests share: generated assets, and reading the object store directly.

#![allow(dead_code)]

use std::path::PathBuf;

use flywheel_demo::Platform;
use flywheel_demo::assets::{self, BUCKET, Sample};
use flywheel_demo::flywheel_loop::DEPLOYMENT;
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;

pub fn bin_dir() -> PathBuf {
    flywheel_e2e::cluster::default_bin_dir().expect("the directory of the workspace binaries")
}

/// Uploads the quickstart's models and training data; returns `n` production samples.
pub fn assets(platform: &Platform, n: usize) -> Vec<Sample> {
    assets::upload_models_and_training_data(&platform.bin_dir, &platform.s3_env()).unwrap();
    assets::production_samples(&platform.bin_dir, platform.work.path(), n).unwrap()
}

pub fn bucket(platform: &Platform) -> flywheel_storage::Location {
    flywheel_storage::Location::open_with(&format!("s3://{BUCKET}/"), platform.s3_env()).unwrap()
}

/// Every prediction-log record the inference Pod wrote (JSON lines under records/).
pub async fn logged_records(platform: &Platform) -> Vec<serde_json::Value> {
    let logs = bucket(platform).join("prediction-logs/shapes/records");
    let mut records = Vec::new();
    for (key, _) in logs.list("").await.unwrap() {
        let data = logs.get(&key).await.unwrap();
        for line in String::from_utf8_lossy(&data).lines().filter(|l| !l.trim().is_empty()) {
            records.push(serde_json::from_str(line).unwrap());
        }
    }
    records
}

pub async fn read_json(platform: &Platform, key: &str) -> serde_json::Value {
    let data = bucket(platform).get(key).await.unwrap_or_else(|e| panic!("reading {key}: {e}"));
    serde_json::from_slice(&data).unwrap()
}

pub async fn inference_pod_uid(platform: &Platform) -> Vec<String> {
    let pods: kube::Api<Pod> = platform.api();
    let list =
        pods.list(&ListParams::default().labels(&format!("flywheel.dev/deployment={DEPLOYMENT}"))).await.unwrap();
    list.items.into_iter().filter_map(|p| p.metadata.uid).collect()
}

/// The PNG of the first production sample (written by `assets`).
pub fn first_sample_png(platform: &Platform) -> Vec<u8> {
    std::fs::read(platform.work.path().join("production/images/000000.png")).unwrap()
}
