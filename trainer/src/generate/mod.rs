//! The synthetic dataset and model generator used by the tests and the demo (no downloads).

mod datasets;
mod domains;
mod images;
mod models;
pub mod onnx_builder;
mod shifts;

pub use datasets::{DatasetOptions, write_dataset};
pub use domains::{Domain, SHIFT_NAMES, Shift};
pub use images::DEFAULT_LABELS;
pub use models::{DETECTOR_STRIDE, INPUT_NAME, classifier, detector};
pub use onnx_builder::GraphBuilder;

use flywheel_api::common::{StorageUri, Task};
use flywheel_api::model_version::{Artifact, Decoder, InputSpec, ModelFormat, ModelVersionSpec, OutputSpec};

/// The ModelVersion spec of a generated model stored at `uri`.
pub fn model_spec(task: Task, labels: &[String], size: u32, uri: &str, sha256: &str) -> ModelVersionSpec {
    ModelVersionSpec {
        model: format!("synthetic-shapes-{}", task.as_str()),
        version: "v1".to_string(),
        task,
        labels: labels.to_vec(),
        artifact: Artifact {
            uri: StorageUri(uri.to_string()),
            sha256: Some(sha256.to_string()),
            format: ModelFormat::Onnx,
            credentials: None,
        },
        input: InputSpec {
            channels: 3,
            layout: Default::default(),
            mean: vec![0.0, 0.0, 0.0],
            std: vec![1.0, 1.0, 1.0],
            resize: Default::default(),
            ..InputSpec::new(size, size)
        },
        output: OutputSpec {
            decoder: if task == Task::Detection { Decoder::Yolo } else { Decoder::Logits },
            ..Default::default()
        },
        provenance: None,
        metrics: Default::default(),
    }
}
