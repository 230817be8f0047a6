//! Flywheel's shared vocabulary, free of Kubernetes: the types every component reads and writes
//! (the operator, the inference server, the trainer, the tests). `flywheel-api` wraps them in the
//! custom resources; the server and the trainer use them without linking kube.
//!
//! - [`model`]: the model contract (task, input spec, output spec), one definition shared by the
//!   ModelVersion CRD, the serving config and the pre-processing in `flywheel-vision`.
//! - [`serving`]: the serving config the operator renders for the inference server, and the
//!   reference statistics the trainer writes for drift monitoring.
//!
//! This crate must not depend on kube, k8s-openapi or candle.

pub mod model;
pub mod serving;

pub use model::{Decoder, InputSpec, Layout, OutputSpec, ResizeMode, Task};

#[cfg(test)]
mod tests;
