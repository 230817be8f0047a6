//! ModelVersion: one immutable, verified model artifact in the registry.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CredentialsRef, OBJECT_NAME_PATTERN, ObjectName, StorageUri, Task};

/// The model contract the spec carries, shared with the serving config and the pre-processing.
pub use flywheel_types::model::{
    BoxFormat, ChannelOrder, ClassScores, Decoder, InputSpec, Layout, OutputSpec, ResizeMode,
};

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
    /// Class names, in the order of the model's output indices; each once.
    #[schemars(length(min = 1), inner(length(min = 1)), extend("x-kubernetes-list-type" = "set"))]
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

/// Lineage of a retrained model.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The ModelVersion this one was fine-tuned from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub parent: Option<ObjectName>,
    /// DatasetVersions it was trained and evaluated on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        inner(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub dataset_versions: Vec<ObjectName>,
    /// The DataPipeline that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub pipeline: Option<ObjectName>,
    /// The training Job that produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
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
    /// `ArtifactVerified`, `Verified` and `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// SHA-256 of the artifact as read from storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Artifact size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// What the verification Job found: signature, op histogram, parameter count and probe
    /// latency, or why the model cannot serve. Kept while the digest and the contract stay the
    /// same, so a spec change elsewhere does not verify again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification: Option<flywheel_types::verification::Verification>,
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
    /// The verification Job loaded the model and ran a probe through it and its decoder.
    pub const VERIFIED: &str = "Verified";
    pub const READY: &str = "Ready";
}
