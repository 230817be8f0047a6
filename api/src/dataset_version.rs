//! DatasetVersion: a labelled image collection in object storage.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{CredentialsRef, OBJECT_NAME_PATTERN, ObjectName, StorageUri, Task};

/// A versioned dataset in COCO, YOLO or ImageFolder layout. Feedback datasets receive
/// human-reviewed production predictions.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "flywheel.dev",
    version = "v1alpha1",
    kind = "DatasetVersion",
    namespaced,
    status = "DatasetVersionStatus",
    shortname = "dsv",
    category = "flywheel",
    derive = "PartialEq",
    doc = "A versioned image dataset (COCO, YOLO or ImageFolder layout) at a storage URI.",
    printcolumn(name = "Format", type_ = "string", json_path = ".spec.format"),
    printcolumn(name = "Task", type_ = "string", json_path = ".spec.task"),
    printcolumn(name = "Samples", type_ = "integer", json_path = ".status.sampleCount"),
    printcolumn(name = "Reviewed", type_ = "integer", json_path = ".status.reviewedCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DatasetVersionSpec {
    /// Root of the dataset (s3://, gs://, az://, http(s)://, file:// or pvc://).
    pub uri: StorageUri,
    /// On-storage layout: `coco` (annotations.json + images/), `yolo` (images/ + labels/*.txt)
    /// or `imagefolder` (one directory per label).
    pub format: DatasetFormat,
    /// `classification` or `detection`.
    pub task: Task,
    /// Class names, each once; for COCO and YOLO the order gives the class indices.
    #[schemars(length(min = 1), inner(length(min = 1)), extend("x-kubernetes-list-type" = "set"))]
    pub labels: Vec<String>,
    /// The DatasetVersion this one extends, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = OBJECT_NAME_PATTERN))]
    pub parent: Option<ObjectName>,
    /// True for a dataset of human-reviewed production predictions: the one a feedback loop
    /// writes into, or a frozen version of it (`manifest`).
    #[serde(default)]
    pub feedback: bool,
    /// A frozen version: the path, below `uri`, of the manifest listing the objects this
    /// version holds with their SHA-256 digests. Readers see only those objects and refuse one
    /// that changed; once its spec changes, the operator refuses it (`FrozenVersionChanged`).
    /// The DataPipeline freezes the reviewed samples of
    /// its feedback dataset into `<feedback>-r<N>` when training run N starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub manifest: Option<String>,
    /// Secret with credentials for the dataset's store; omit to use the pod's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<CredentialsRef>,
}

/// Dataset layouts, shared with the trainer and the inference server.
pub use flywheel_types::dataset::DatasetFormat;

/// Observed state of a DatasetVersion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatasetVersionStatus {
    /// Number of images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_count: Option<u64>,
    /// Number of annotations (detection) or images (classification) per label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub label_distribution: BTreeMap<String, u64>,
    /// Human-reviewed samples (feedback datasets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_count: Option<u64>,
    /// Reference statistics for drift and outlier metrics, once profiled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_statistics: Option<ReferenceStatisticsStatus>,
    /// `Ready` (the dataset was read) and `ReferenceStatisticsReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::condition::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where a dataset's reference statistics live.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceStatisticsStatus {
    /// URI of the statistics file written by the profiling Job.
    pub uri: StorageUri,
    /// The profiling Job that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// Condition types of a DatasetVersion.
pub mod conditions {
    pub const READY: &str = "Ready";
    pub const REFERENCE_STATISTICS_READY: &str = "ReferenceStatisticsReady";
}
