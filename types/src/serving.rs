//! The serving configuration and the reference statistics of a deployment.
//!
//! `ServingConfig` is the contract between the operator and the inference server: the operator
//! renders it (YAML or JSON, camelCase) into the ConfigMap it mounts into every inference pod,
//! and the server reloads whenever the mounted file changes. `ReferenceStatistics` is the
//! contract between the trainer's `profile` command (which writes it next to a dataset) and the
//! server (which compares live traffic with it to export drift and outlier metrics).
//!
//! The models it names use the model contract of [`crate::model`] (task, input spec), the same
//! types as the ModelVersion custom resource, so the operator copies them across unchanged.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::dataset::DatasetFormat;
pub use crate::model::{
    BoxFormat, ChannelOrder, ClassScores, Decoder, InputSpec, Layout, OutputSpec, ResizeMode, Task,
};

/// File name the operator uses for the serving config inside the mounted ConfigMap.
pub const SERVING_CONFIG_FILE: &str = "serving.yaml";

/// Everything one inference pod needs to serve a Deployment.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServingConfig {
    /// Name of the flywheel Deployment this pod serves (used in metrics and logs).
    pub deployment: String,
    /// The model whose answer is returned to clients.
    pub champion: ServedModel,
    /// An optional challenger that runs on the same inputs off the response path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ServedModel>,
    /// Shapes (boxes or classes) below this confidence are dropped from answers.
    #[serde(default = "default_confidence_threshold")]
    pub confidence_threshold: f32,
    /// Fraction (0..=1) of requests also sent to the shadow.
    #[serde(default = "one")]
    pub shadow_sample_rate: f64,
    /// Where predictions are logged for review; no logging when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_log: Option<PredictionLogConfig>,
    /// Where reviewed samples are written; the review API refuses submissions when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_dataset: Option<FeedbackDatasetConfig>,
    /// The review service that owns this Deployment's reviews: the server keeps no review index,
    /// writes no samples and redirects its review API and page there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_service: Option<ReviewServiceConfig>,
    /// URI of a `ReferenceStatistics` JSON document; drift/outlier metrics appear once it loads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_statistics_uri: Option<String>,
    #[serde(default)]
    pub batching: BatchingConfig,
    #[serde(default)]
    pub auth: AuthConfig,
}

/// One model as the server loads it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServedModel {
    /// Model name as exposed by the Open Inference Protocol (`/v2/models/{name}`).
    pub name: String,
    /// Version string (usually the ModelVersion's name or its version field).
    pub version: String,
    /// Artifact location: file://, s3://, gs://, az:// (or abfs://), http(s)://.
    pub uri: String,
    /// Hex sha256 of the artifact; the server refuses a file whose digest differs.
    pub sha256: String,
    pub task: Task,
    /// Class names, index = class id.
    #[serde(default)]
    pub labels: Vec<String>,
    pub input: InputSpec,
    /// The ModelVersion's output contract, as the CRD states it.
    pub output: OutputSpec,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PredictionLogConfig {
    /// Directory-like URI (file://, s3://, ...) that receives images, records and reviews.
    pub uri: String,
    /// Fraction (0..=1) of predictions logged.
    #[serde(default = "one")]
    pub sample_rate: f64,
    /// Logged images and records older than this are deleted; 0 keeps them forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Records are flushed when this many are pending or `flushIntervalMs` passed.
    #[serde(default = "default_flush_records")]
    pub flush_records: usize,
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewServiceConfig {
    /// Base URL of the review service (`http://<pipeline>-review.<namespace>.svc:8090`).
    pub url: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FeedbackDatasetConfig {
    /// Directory-like URI of the feedback DatasetVersion.
    pub uri: String,
    /// The DatasetVersion's layout: coco or yolo (detection), imagefolder (classification);
    /// when absent, coco for detection and imagefolder for classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DatasetFormat>,
    /// The DatasetVersion's labels (YOLO class ids index them); the champion's when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchingConfig {
    /// Largest batch sent to the model (capped by the model's own batch dimension).
    #[serde(default = "default_max_batch")]
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company, in microseconds.
    #[serde(default = "default_max_wait_us")]
    pub max_wait_micros: u64,
    /// Requests in flight beyond this get 429 Too Many Requests.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent_requests: usize,
    /// Shadow requests waiting beyond this are dropped (and counted).
    #[serde(default = "default_shadow_queue")]
    pub shadow_queue_capacity: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch_size: default_max_batch(),
            max_wait_micros: default_max_wait_us(),
            max_concurrent_requests: default_max_concurrent(),
            shadow_queue_capacity: default_shadow_queue(),
        }
    }
}

/// Bearer-token authentication. Review endpoints always need a token when one is configured;
/// without a token file they are refused (a review writes training data).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthConfig {
    /// File holding the token (a mounted Secret key); re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// Also require the token on inference endpoints.
    #[serde(default)]
    pub require_for_inference: bool,
}

/// Statistics of the training data that live traffic is compared with.
///
/// Written by the trainer's `profile` command as JSON. Feature names the server monitors:
/// `brightness` (mean luma 0..1), `contrast` (luma standard deviation), `meanRed`, `meanGreen`,
/// `meanBlue` (0..1), `confidence` (top class / box confidence of the model on the dataset) and
/// `boxArea` (box area as a fraction of the image, detection only). Unknown names are ignored;
/// missing ones are simply not monitored.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceStatistics {
    /// Format version, currently 1.
    pub version: u32,
    /// Number of images profiled.
    pub sample_count: u64,
    /// Per-feature empirical distributions for the Kolmogorov-Smirnov statistic.
    pub features: Vec<FeatureDistribution>,
    /// Multivariate summary of image statistics for the Mahalanobis outlier score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_statistics: Option<MultivariateReference>,
}

/// Ascending values of one feature: either every sample or evenly spaced quantiles
/// (e.g. 1001 of them); both are read as an empirical distribution.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FeatureDistribution {
    pub name: String,
    pub sorted_values: Vec<f64>,
}

/// Mean and covariance of the feature vector named by `features` (in that order).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MultivariateReference {
    pub features: Vec<String>,
    pub mean: Vec<f64>,
    /// Row-major covariance matrix, features x features.
    pub covariance: Vec<Vec<f64>>,
}

impl ServingConfig {
    /// Reads YAML or JSON (JSON is YAML).
    pub fn from_yaml(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text)
    }
}

fn default_confidence_threshold() -> f32 {
    0.25
}
fn one() -> f64 {
    1.0
}
fn default_retention_days() -> u32 {
    30
}
fn default_flush_records() -> usize {
    64
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_max_batch() -> usize {
    16
}
fn default_max_wait_us() -> u64 {
    500
}
fn default_max_concurrent() -> usize {
    512
}
fn default_shadow_queue() -> usize {
    256
}
