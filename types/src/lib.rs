//! Flywheel's shared vocabulary, free of Kubernetes: the types every component reads and writes
//! (the operator, the inference server, the trainer, the tests). `flywheel-api` wraps them in the
//! custom resources; the server and the trainer use them without linking kube.
//!
//! - [`dataset`]: the COCO, YOLO and ImageFolder layouts, read, counted and written as plain
//!   code over paths and bytes.
//! - [`model`]: the model contract (task, input spec, output spec), one definition shared by the
//!   ModelVersion CRD, the serving config and the pre-processing in `flywheel-vision`.
//! - [`prediction`]: what a served model predicted (shapes, log records), written by the
//!   inference server and read by review and quality code.
//! - [`serving`]: the serving config the operator renders for the inference server, and the
//!   reference statistics the trainer writes for drift monitoring.
//! - [`verification`]: what the verification Job found about a ModelVersion's artifact.
//!
//! This crate must not depend on kube, k8s-openapi or candle.

pub mod dataset;
pub mod model;
pub mod prediction;
pub mod serving;
pub mod verification;

pub use model::{BoxFormat, ChannelOrder, ClassScores, Decoder, InputSpec, Layout, OutputSpec, ResizeMode, Task};

#[cfg(test)]
mod tests;
