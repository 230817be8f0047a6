//! Deployment (flywheel.dev): a served model with an optional shadow.
//!
//! Not to be confused with apps/v1 Deployment: in Rust the root type is
//! [`FlywheelDeployment`]; on the command line use `kubectl get deployments.flywheel.dev`
//! or the short name `fwdeploy`.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{OBJECT_NAME_PATTERN, ObjectName, StorageUri};

/// Serves a champion ModelVersion, optionally mirrors traffic to a shadow, and exports
/// monitoring metrics.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "Deployment",
    root = "FlywheelDeployment",
    namespaced,
    status = "DeploymentStatus",
    shortname = "fwdeploy",
    shortname = "fwd",
    category = "flywheel",
    derive = "PartialEq",
    doc = "A Flywheel model deployment: champion, optional shadow and confidence threshold.",
    printcolumn(name = "Champion", type_ = "string", json_path = ".status.champion"),
    printcolumn(name = "Shadow", type_ = "string", json_path = ".status.shadow"),
    printcolumn(name = "Threshold", type_ = "number", json_path = ".spec.confidenceThreshold"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// The model answering requests.
    pub champion: ChampionSpec,
    /// A model that sees a sample of the same inputs off the response path, for comparison.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// Shapes (boxes or classes) with a confidence below this are dropped from responses.
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence_threshold: f64,
    /// Number of inference pods (ignored when autoscaling is set).
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0))]
    pub replicas: i32,
    /// Horizontal pod autoscaling on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
    /// CPU and memory for each inference pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::common::resources_schema")]
    pub resources: Option<ResourceRequirements>,
    /// Where sampled predictions (inputs and outputs) are logged for review.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_log: Option<PredictionLogSpec>,
}

fn default_threshold() -> f64 {
    0.5
}
fn default_replicas() -> i32 {
    1
}

/// The serving model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChampionSpec {
    /// Name of a ModelVersion in the same namespace. It must be Ready.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub model_version: ObjectName,
}

/// The shadow model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSpec {
    /// Name of a ModelVersion in the same namespace, other than the champion.
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub model_version: ObjectName,
    /// Fraction of requests also sent to the shadow.
    #[serde(default = "default_sample_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
}

fn default_sample_rate() -> f64 {
    1.0
}

/// CPU-based autoscaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Autoscaling {
    /// Lower bound of replicas, at most `maxReplicas`.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1))]
    pub min_replicas: i32,
    /// Upper bound of replicas.
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// Target average CPU utilisation in percent of the request (`resources.requests.cpu`,
    /// which autoscaling needs).
    #[serde(default = "default_cpu_target")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization_percentage: i32,
}

fn default_cpu_target() -> i32 {
    70
}

/// Prediction logging.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionLogSpec {
    /// Where predictions are written.
    pub uri: StorageUri,
    /// Fraction of predictions logged.
    #[serde(default = "default_sample_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample_rate: f64,
    /// Logged predictions (with their images) are deleted after this many days.
    #[serde(default = "default_retention_days")]
    #[schemars(range(min = 1))]
    pub retention_days: u32,
}

fn default_retention_days() -> u32 {
    30
}

/// Observed state of a Deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// The ModelVersion being served as champion. Promotions change this, not the spec,
    /// so GitOps tools do not revert them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion: Option<ObjectName>,
    /// The ModelVersion being served as shadow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ObjectName>,
    /// In-cluster URL of the inference Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Pods ready to serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// `Ready`, `ChampionReady`, `ShadowReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Every change of champion or shadow, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub promotion_history: Vec<Promotion>,
    /// Latest monitoring figures from the inference pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSummary>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// One change of the served models.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// When it happened.
    pub time: Time,
    /// `champion` or `shadow`.
    pub role: Role,
    /// The ModelVersion now in that role; absent when the role was emptied (no shadow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_version: Option<ObjectName>,
    /// The ModelVersion it replaced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<ObjectName>,
    /// Why: `Spec`, `ContinuousDeployment`, `PromotionGate`.
    pub reason: String,
    /// Human-readable detail (e.g. the metric comparison behind a gate promotion).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// Serving roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Champion,
    Shadow,
}

/// A digest of the monitoring metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSummary {
    /// When the figures were read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Largest KS drift statistic across monitored features.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_drift: Option<f64>,
    /// Mean outlier score of recent inputs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_score: Option<f64>,
    /// mAP@0.5 or accuracy of the champion on reviewed samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub champion_metric: Option<f64>,
    /// mAP@0.5 or accuracy of the shadow on reviewed samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_metric: Option<f64>,
    /// Reviewed samples the metrics are computed on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_samples: Option<u64>,
}

/// Condition types of a Deployment.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const CHAMPION_READY: &str = "ChampionReady";
    pub const SHADOW_READY: &str = "ShadowReady";
    /// Every ready inference pod loaded the models it was told to serve (a model that fails to
    /// load, e.g. a corrupt file, leaves the previous one serving and this condition False).
    pub const MODELS_LOADED: &str = "ModelsLoaded";
}
