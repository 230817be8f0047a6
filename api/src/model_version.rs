//! ModelVersion: one immutable, verified model artifact in the registry.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CredentialsRef, ObjectName, StorageUri, Task};

/// A versioned model: an ONNX artifact plus everything needed to feed it images and read
/// its outputs. Registered by hand or by a DataPipeline's retraining Job.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "ModelVersion",
    namespaced,
    status = "ModelVersionStatus",
    shortname = "mv",
    category = "flywheel",
    derive = "PartialEq",
    doc = "A versioned computer-vision model artifact (ONNX) with its input and output contract.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.task"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionSpec {
    /// Name of the model this is a version of (e.g. `parts-detector`).
    #[schemars(length(min = 1, max = 253))]
    pub model: String,
    /// Version label, unique per model (e.g. `v3` or `2026-11-24.1`).
    #[schemars(length(min = 1, max = 63))]
    pub version: String,
    /// What the model predicts: `classification` or `detection`.
    pub task: Task,
    /// Class names, in the order of the model's output indices.
    #[schemars(length(min = 1))]
    pub labels: Vec<String>,
    /// Where the model file is and how to verify it.
    pub artifact: Artifact,
    /// How an image becomes the model's input tensor.
    pub input: InputSpec,
    /// How the model's output tensors become shapes.
    #[serde(default)]
    pub output: OutputSpec,
    /// Where this version came from (set by retraining; optional for hand-registered models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// Offline evaluation metrics, e.g. `{"mAP50": 0.61}` or `{"accuracy": 0.93}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
}

/// The model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Location of the model file (s3://, gs://, az://, http(s)://, file:// or pvc://).
    pub uri: StorageUri,
    /// Expected SHA-256 of the file, lowercase hex. When set, a mismatch fails the ModelVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: Option<String>,
    /// File format. Only `onnx` is supported.
    #[serde(default)]
    pub format: ModelFormat,
    /// Secret with credentials for the artifact's store; omit to use the pod's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
}

/// Model file formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ModelFormat {
    #[default]
    Onnx,
}

/// Pre-processing: image → tensor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct InputSpec {
    /// Input width in pixels.
    #[schemars(range(min = 1, max = 8192))]
    pub width: u32,
    /// Input height in pixels.
    #[schemars(range(min = 1, max = 8192))]
    pub height: u32,
    /// Colour channels: 3 (RGB) or 1 (grey).
    #[serde(default = "default_channels")]
    #[schemars(range(min = 1, max = 3))]
    pub channels: u32,
    /// Tensor layout: `nchw` (default) or `nhwc`.
    #[serde(default)]
    pub layout: Layout,
    /// Per-channel mean subtracted after scaling pixels to [0, 1].
    #[serde(default = "default_mean")]
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided after subtracting the mean.
    #[serde(default = "default_std")]
    pub std: Vec<f32>,
    /// How images are fitted to width x height: `stretch` (default) or `letterbox`
    /// (keep the aspect ratio, pad with grey).
    #[serde(default)]
    pub resize: ResizeMode,
}

fn default_channels() -> u32 {
    3
}
fn default_mean() -> Vec<f32> {
    vec![0.0, 0.0, 0.0]
}
fn default_std() -> Vec<f32> {
    vec![1.0, 1.0, 1.0]
}

/// Tensor memory layouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Layout {
    #[default]
    Nchw,
    Nhwc,
}

/// Resize modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ResizeMode {
    #[default]
    Stretch,
    Letterbox,
}

/// Post-processing: output tensors → shapes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    /// Output decoder: `logits` (classification), `yolo` ([N, 4 + classes, anchors] or
    /// [N, anchors, 5 + classes]) or `boxesScores` (separate boxes and scores outputs).
    #[serde(default)]
    pub decoder: Decoder,
    /// IoU above which overlapping boxes of one class are suppressed (detection).
    #[serde(default = "default_iou")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub nms_iou_threshold: f64,
    /// Number of classes returned for classification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub top_k: Option<u32>,
}

fn default_iou() -> f64 {
    0.45
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self { decoder: Decoder::default(), nms_iou_threshold: default_iou(), top_k: None }
    }
}

/// Output decoders.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Decoder {
    #[default]
    Logits,
    Yolo,
    BoxesScores,
}

/// Lineage of a retrained model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The ModelVersion this one was fine-tuned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ObjectName>,
    /// DatasetVersions it was trained and evaluated on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dataset_versions: Vec<ObjectName>,
    /// The DataPipeline that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<ObjectName>,
    /// The training Job that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// Hyperparameters of the training run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hyperparameters: BTreeMap<String, String>,
}

/// Observed state of a ModelVersion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelVersionStatus {
    /// `Pending`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ModelPhase>,
    /// `ArtifactVerified` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// SHA-256 of the artifact as read from storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Artifact size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Lifecycle phases of a ModelVersion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ModelPhase {
    Pending,
    Ready,
    Failed,
}

/// Condition types of a ModelVersion.
pub mod conditions {
    pub const ARTIFACT_VERIFIED: &str = "ArtifactVerified";
    pub const READY: &str = "Ready";
}
