//! DataPipeline: the loop from production predictions back to a better model.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{OBJECT_NAME_PATTERN, ObjectName, StorageUri};

/// Profiles training data, collects reviewed predictions, retrains at a threshold and
/// places the new model per policy.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "DataPipeline",
    namespaced,
    status = "DataPipelineStatus",
    shortname = "dp",
    category = "flywheel",
    derive = "PartialEq",
    doc = "The data flywheel of a Deployment: feedback collection, retraining and promotion.",
    printcolumn(name = "Deployment", type_ = "string", json_path = ".spec.deployment"),
    printcolumn(name = "Reviewed", type_ = "integer", json_path = ".status.reviewedSinceLastTraining"),
    printcolumn(name = "Trigger", type_ = "integer", json_path = ".spec.continuousTraining.trigger.reviewedSamples"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Last Model", type_ = "string", json_path = ".status.lastModelVersion"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DataPipelineSpec {
    /// Name of the Flywheel Deployment (deployments.flywheel.dev) this pipeline improves.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub deployment: ObjectName,
    /// The dataset the served model was trained on; profiled for drift and outlier metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_data: Option<TrainingData>,
    /// Where reviewed production predictions go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_loop: Option<FeedbackLoop>,
    /// When and how to retrain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous_training: Option<ContinuousTraining>,
    /// What to do with a newly trained model.
    #[serde(default)]
    pub continuous_deployment: ContinuousDeployment,
    /// Where profiling and training Jobs write their outputs (`<outputUri>/<namespace>/<pipeline>/...`).
    /// Defaults to the operator's `--default-output-uri`. Credentials: the feedback dataset's Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_uri: Option<StorageUri>,
}

/// Reference data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingData {
    /// Name of a DatasetVersion in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub dataset_version: ObjectName,
}

/// Human review of production predictions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackLoop {
    /// Collect reviews.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name of the feedback DatasetVersion (with `feedback: true`) reviewed samples are written
    /// to; not the training data.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub dataset_version: ObjectName,
    /// Where the review service (`<pipeline>-review`, the one owner of this loop's reviews) keeps
    /// its state: PostgreSQL from a connection URL in a Secret, or by default SQLite on a
    /// PersistentVolumeClaim `<pipeline>-review-db` the operator creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<ReviewDatabase>,
}

/// A PostgreSQL database for the review service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewDatabase {
    /// Secret holding the connection URL (`postgres://user:password@host:5432/db`), labelled
    /// `flywheel.dev/credentials=true` like every Secret Flywheel reads.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub secret_name: ObjectName,
    /// Key of the URL in the Secret.
    #[serde(default = "default_url_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_url_key() -> String {
    "url".into()
}

fn default_true() -> bool {
    true
}

/// Retraining.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinuousTraining {
    /// Retrain automatically (the trigger counts reviews, so this needs `feedbackLoop`).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// When a run starts.
    pub trigger: Trigger,
    /// ModelVersion to fine-tune; defaults to the Deployment's current champion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub base_model_version: Option<ObjectName>,
    /// Datasets to train and evaluate on; defaults to training data + feedback.
    #[serde(default)]
    pub datasets: TrainingDatasets,
    /// Optimisation settings.
    #[serde(default)]
    pub hyperparameters: Hyperparameters,
    /// CPU and memory of the training Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Your own trainer instead of `flywheel-trainer`: its container image, command, args,
    /// resources (GPU requests included) and extra environment. The Job keeps the request in
    /// `FLYWHEEL_REQUEST`, the storage credentials and the PVC mounts, and the run is registered
    /// from the `result.json` the trainer writes under the request's `outputUri`
    /// (docs/trainer.md, "Bring your own trainer").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer: Option<Trainer>,
}

/// A training container of your own, under the same request → `result.json` contract as the
/// built-in trainer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trainer {
    /// Container image, e.g. `registry.example.com/team/detector-trainer:1.4`.
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Entrypoint (the container's `command`); empty: the image's own entrypoint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub command: Vec<String>,
    /// Arguments (the container's `args`); empty: none (the built-in trainer's `train` is not
    /// passed to your image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub args: Vec<String>,
    /// Requests and limits of the training container, e.g. `limits: {nvidia.com/gpu: 1}`;
    /// replaces `continuousTraining.resources`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Extra environment variables (plain values). `FLYWHEEL_REQUEST` and the storage
    /// credential variables are set by the operator and cannot be overridden.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub env: Vec<TrainerEnvVar>,
}

/// One environment variable of a trainer container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainerEnvVar {
    /// Variable name, e.g. `EPOCH_SCALE`.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[A-Za-z_][A-Za-z0-9_]*$"))]
    pub name: String,
    /// Its value (may be empty).
    pub value: String,
}

/// Retraining trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// Reviewed samples since the last run that start a new run.
    #[schemars(range(min = 1))]
    pub reviewed_samples: u32,
    /// Minimum time between two runs, e.g. `30m`, `1h`, `90s`.
    #[serde(default = "default_cooldown")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(s|m|h))+$"))]
    pub cooldown: String,
}

fn default_cooldown() -> String {
    "0s".to_string()
}

/// Parses a cooldown such as `90s`, `10m`, `1h30m`; Err names what is wrong (an unknown unit,
/// a number without a unit, a duration too long to count).
pub fn parse_cooldown(text: &str) -> Result<std::time::Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    let too_long = || format!("invalid cooldown {text:?}: too long");
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = match number.parse() {
            Ok(n) => n,
            Err(_) if number.is_empty() => {
                return Err(format!("invalid cooldown {text:?}: expected e.g. 30m, 1h, 90s"));
            }
            Err(_) => return Err(too_long()),
        };
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("invalid cooldown {text:?}: unknown unit {c:?} (use s, m or h)")),
        };
        total = n.checked_mul(unit).and_then(|s| total.checked_add(s)).ok_or_else(too_long)?;
    }
    if !number.is_empty() {
        return Err(format!("invalid cooldown {text:?}: a number needs a unit (s, m or h)"));
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Train/eval datasets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingDatasets {
    /// DatasetVersions merged for training, each once. Empty: training data plus the feedback
    /// dataset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        inner(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub train: Vec<ObjectName>,
    /// DatasetVersion to evaluate on, not one of `train`. Empty: a deterministic split of the
    /// training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub eval: Option<ObjectName>,
}

/// Fine-tuning hyperparameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Hyperparameters {
    /// Passes over the training data.
    #[serde(default = "default_epochs")]
    #[schemars(range(min = 1, max = 1000))]
    pub epochs: u32,
    /// Step size, above 0.
    #[serde(default = "default_learning_rate")]
    #[schemars(range(min = 0.0, max = 10.0), extend("exclusiveMinimum" = true))]
    pub learning_rate: f64,
    /// Images per step.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 1024))]
    pub batch_size: u32,
    /// `sgd` or `adamw`.
    #[serde(default)]
    pub optimizer: Optimizer,
    /// `head` (default: the last layers only) or `all`.
    #[serde(default)]
    pub train_layers: TrainLayers,
}

fn default_epochs() -> u32 {
    5
}
fn default_learning_rate() -> f64 {
    0.001
}
fn default_batch_size() -> u32 {
    8
}

impl Default for Hyperparameters {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            learning_rate: default_learning_rate(),
            batch_size: default_batch_size(),
            optimizer: Optimizer::default(),
            train_layers: TrainLayers::default(),
        }
    }
}

impl Hyperparameters {
    /// The hyperparameters as strings, for ModelVersion provenance and Job arguments.
    pub fn to_map(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("epochs".to_string(), self.epochs.to_string()),
            ("learningRate".to_string(), self.learning_rate.to_string()),
            ("batchSize".to_string(), self.batch_size.to_string()),
            ("optimizer".to_string(), self.optimizer.as_str().to_string()),
            ("trainLayers".to_string(), self.train_layers.as_str().to_string()),
        ])
    }
}

/// Optimisers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Optimizer {
    Sgd,
    #[default]
    Adamw,
}

impl Optimizer {
    pub fn as_str(self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Adamw => "adamw",
        }
    }
}

/// Which weights are trained.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TrainLayers {
    #[default]
    Head,
    All,
}

impl TrainLayers {
    pub fn as_str(self) -> &'static str {
        match self {
            TrainLayers::Head => "head",
            TrainLayers::All => "all",
        }
    }
}

/// Placement of new models.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinuousDeployment {
    /// `shadow` (default): the new model becomes the shadow; `champion`: it replaces the
    /// champion; `manual`: it stays in the registry and status names it as a candidate.
    #[serde(default)]
    pub policy: Policy,
    /// Promote a shadow that beats the champion on reviewed data (needs `feedbackLoop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_gate: Option<PromotionGate>,
}

/// Placement policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    #[default]
    Shadow,
    Champion,
    Manual,
}

/// Shadow → champion promotion rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionGate {
    /// Apply the gate.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Reviewed samples both models must have been scored on.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1))]
    pub min_reviewed_samples: u32,
    /// How much the shadow's mAP@0.5 (or accuracy) must exceed the champion's.
    #[serde(default = "default_margin")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub margin: f64,
}

fn default_min_samples() -> u32 {
    50
}
fn default_margin() -> f64 {
    0.02
}

/// Observed state of a DataPipeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataPipelineStatus {
    /// `Collecting`, `Training`, `Promoting`, `WaitingForApproval` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Reviewed samples in the feedback dataset since the last training run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_since_last_training: Option<u64>,
    /// Reviewed samples in the feedback dataset in total.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_total: Option<u64>,
    /// Whether drift and outlier metrics are available (reference statistics computed).
    #[serde(default)]
    pub unsupervised_metrics_available: bool,
    /// Reference statistics of the training data, written by the profiling Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_statistics_uri: Option<String>,
    /// The run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_run: Option<TrainingRun>,
    /// The ModelVersion produced by the last successful run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_model_version: Option<ObjectName>,
    /// A trained ModelVersion waiting for a manual decision (policy `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate_model_version: Option<ObjectName>,
    /// The review service: where reviewers go, its totals and the figures the promotion gate
    /// reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_service: Option<ReviewServiceStatus>,
    /// Finished runs, oldest first (the last 20).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub run_history: Vec<TrainingRun>,
    /// `Ready`, `ProfilingComplete`, `TrainingSucceeded`, `Promoted`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The review service as the operator last read it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewServiceStatus {
    /// In-cluster URL of the review API and page (`<url>/review`).
    pub url: String,
    /// `sqlite` or `postgresql`.
    pub database: String,
    /// Logged predictions ingested from every replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<u64>,
    /// Predictions reviewed (each decision stored once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed: Option<u64>,
    /// Reviewed samples written into the feedback dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<u64>,
    /// Champion and shadow on the reviewed samples both predicted, over all replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quality: Option<ReviewQuality>,
}

/// Champion vs shadow on the same reviewed samples, as the promotion gate compares them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReviewQuality {
    /// `mAP50` (detection) or `accuracy` (classification).
    pub metric: String,
    pub champion_model_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_model_version: Option<String>,
    /// Reviewed samples both scores are computed on.
    pub reviewed_samples: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<f64>,
}

/// One retraining run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrainingRun {
    /// Run number, starting at 1; part of the Job name, so one trigger makes one Job.
    pub number: u32,
    /// Name of the training Job.
    pub job: String,
    /// Reviewed-sample count that triggered the run.
    pub reviewed_at_trigger: u64,
    /// When the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// `Running`, `Succeeded` or `Failed`.
    pub outcome: String,
    /// The ModelVersion it produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<ObjectName>,
    /// Failure reason or summary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// While it runs: epoch, loss, judged metric, throughput and ETA, from its `progress.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<crate::training::progress::RunProgress>,
}

/// Condition types of a DataPipeline.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const PROFILING_COMPLETE: &str = "ProfilingComplete";
    pub const TRAINING_SUCCEEDED: &str = "TrainingSucceeded";
    pub const PROMOTED: &str = "Promoted";
    /// The review service is deployed and its database answers.
    pub const REVIEW_SERVICE_READY: &str = "ReviewServiceReady";
}
