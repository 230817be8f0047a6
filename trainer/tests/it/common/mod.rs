//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

pub use flywheel_test_support::{seaweed, venv_bin};

use std::path::Path;

use flywheel_api::common::StorageUri;
use flywheel_api::common::Task;
use flywheel_api::data_pipeline::{Hyperparameters, Optimizer, TrainLayers};
use flywheel_api::dataset_version::DatasetFormat;
use flywheel_api::training::{NamedDataset, NamedModel, TrainRequest};
use flywheel_storage::Location;
use flywheel_trainer::generate::{self, DatasetOptions};
use flywheel_trainer::model::sha256_hex;

pub const BIN: &str = env!("CARGO_BIN_EXE_flywheel-trainer");

pub fn file_uri(p: &Path) -> String {
    format!("file://{}", p.display())
}

pub async fn dataset(
    dir: &Path,
    name: &str,
    task: Task,
    format: DatasetFormat,
    count: usize,
    seed: u64,
) -> NamedDataset {
    let mut opts = DatasetOptions::new(task, format, count);
    opts.seed = seed;
    let spec = generate::write_dataset(&Location::open(&file_uri(&dir.join(name))).unwrap(), &opts).await.unwrap();
    NamedDataset { name: name.to_string(), spec }
}

pub fn model(dir: &Path, task: Task, seed: u64) -> NamedModel {
    let labels: Vec<String> = generate::DEFAULT_LABELS.iter().map(|s| s.to_string()).collect();
    let bytes = match task {
        Task::Classification => generate::classifier(labels.len(), 64, seed),
        Task::Detection => generate::detector(labels.len(), 64, seed),
    }
    .unwrap();
    let path = dir.join(format!("base-{}.onnx", task.as_str()));
    std::fs::write(&path, &bytes).unwrap();
    NamedModel {
        name: "base".into(),
        spec: generate::model_spec(task, &labels, 64, &file_uri(&path), &sha256_hex(&bytes)),
    }
}

pub fn request(model: NamedModel, train: Vec<NamedDataset>, out: &Path, epochs: u32, lr: f64) -> TrainRequest {
    TrainRequest {
        base_model: model,
        train,
        eval: None,
        hyperparameters: Hyperparameters {
            epochs,
            learning_rate: lr,
            batch_size: 8,
            optimizer: Optimizer::Adamw,
            train_layers: TrainLayers::Head,
        },
        output_uri: StorageUri(file_uri(out)),
        max_regression: 0.05,
    }
}
