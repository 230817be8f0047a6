//! The contract between the operator and the trainer's Jobs.
//!
//! The operator passes a request as JSON in the `FLYWHEEL_REQUEST` environment variable of
//! the Job's container; the trainer writes its outputs under the request's `outputUri` and
//! finishes by writing `result.json` there atomically. The operator reads that file once the
//! Job has succeeded, so a Job that dies half-way leaves nothing the operator would register.

pub mod progress;

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::StorageUri;
use crate::data_pipeline::Hyperparameters;
use crate::dataset_version::DatasetVersionSpec;
use crate::model_version::ModelVersionSpec;

/// Environment variable holding the request JSON.
pub const REQUEST_ENV: &str = "FLYWHEEL_REQUEST";
/// File name of the result, written last, under the output URI.
pub const RESULT_FILE: &str = "result.json";
/// File name of the trained model under the output URI.
pub const MODEL_FILE: &str = "model.onnx";
/// File name of the reference statistics under a profile's output URI.
pub const REFERENCE_STATISTICS_FILE: &str = "reference-statistics.json";

/// A DatasetVersion as the trainer sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedDataset {
    pub name: String,
    pub spec: DatasetVersionSpec,
}

/// A ModelVersion as the trainer sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedModel {
    pub name: String,
    pub spec: ModelVersionSpec,
}

/// `flywheel-trainer profile`: compute reference statistics of a dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProfileRequest {
    pub dataset: NamedDataset,
    /// Directory URI; the statistics go to `<outputUri>/reference-statistics.json`.
    pub output_uri: StorageUri,
}

/// `flywheel-trainer train`: fine-tune a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainRequest {
    pub base_model: NamedModel,
    /// Datasets merged for training.
    pub train: Vec<NamedDataset>,
    /// Evaluation dataset; absent: a deterministic split of the training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<NamedDataset>,
    pub hyperparameters: Hyperparameters,
    /// Directory URI for `model.onnx`, `metrics.json`, `progress.json` and `result.json`.
    pub output_uri: StorageUri,
    /// Refuse to write a model whose eval metric is below the base model's by more than this.
    #[serde(default = "default_tolerance")]
    pub max_regression: f64,
}

fn default_tolerance() -> f64 {
    0.05
}

/// What a successful `train` wrote, read by the operator to register a ModelVersion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainResult {
    /// URI of the new model file.
    pub model_uri: StorageUri,
    /// SHA-256 of the model file, lowercase hex.
    pub sha256: String,
    pub size_bytes: u64,
    /// Eval metrics of the base model, e.g. `{"mAP50": 0.41}` or `{"accuracy": 0.8}`.
    pub base_metrics: BTreeMap<String, f64>,
    /// Eval metrics of the new model.
    pub metrics: BTreeMap<String, f64>,
    /// Training samples and eval samples used.
    pub train_samples: u64,
    pub eval_samples: u64,
}
